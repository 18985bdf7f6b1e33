"""fer_hf."""
