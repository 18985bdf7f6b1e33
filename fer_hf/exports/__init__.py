"""ONNX exports as a format: read and run without torch (`runtime`). Writing them is `fer_hf.inference.exporting`."""
