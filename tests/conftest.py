"""Shared fixtures: the real FER2013 in ../shared (never downloaded), and small real subsets of it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Tests run offline: nothing may reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# --backend auto exports each model to ONNX on first use (seconds each): every tiny model a test saves would be
# exported once. The suite runs torch unless a test asks for a backend (tests/test_backend.py covers auto and onnx);
# exports made on first use go to a temporary cache, never the user's ~/.cache.
os.environ.setdefault("FER_HF_BACKEND", "torch")
os.environ.setdefault("FER_HF_CACHE", tempfile.mkdtemp(prefix="fer_hf_test_cache_"))

REPO = Path(__file__).resolve().parents[1]
TORCH_THREADS = __import__("torch").get_num_threads()  # torch's own choice, before any test changed it
# The real FER2013 splits: ../shared/fer2013 beside the clone, or the folder FER_HF_SHARED_FER names.
SHARED_FER = Path(os.environ.get("FER_HF_SHARED_FER") or REPO.parent / "shared" / "fer2013")
# Set by .ci/run: there, a missing copy fails the tests that need it instead of skipping them.
REQUIRE_SHARED = "FER_HF_REQUIRE_SHARED"


@pytest.fixture(autouse=True)
def _torch_threads_as_they_were():
    """Inference on the CPU lowers torch's threads for the rest of its process (fer_hf.devices.fit_torch_threads):
    right for a command, but in the test process it would slow every later test and make its logits differ in the
    last bits from a fresh process's. Each test starts with torch's own count (a session fixture may have lowered
    it before the test began)."""
    import torch

    torch.set_num_threads(TORCH_THREADS)
    yield
    torch.set_num_threads(TORCH_THREADS)


@pytest.fixture(scope="session")
def shared_fer() -> Path:
    if not (SHARED_FER / "train.parquet").is_file():
        reason = f"needs the real FER2013 parquet files (train.parquet, validation.parquet) in {SHARED_FER}"
        if os.environ.get(REQUIRE_SHARED, "") not in ("", "0"):
            pytest.fail(reason)
        pytest.skip(reason)
    return SHARED_FER


@pytest.fixture(scope="session")
def fer_dd(shared_fer):
    """The real FER2013 Training + PublicTest splits as a DatasetDict."""
    from fer_hf.data.dataset import load_fer_dataset

    return load_fer_dataset(shared_fer)


@pytest.fixture(scope="session")
def bundled_dd():
    """The package's bundled real sample (40 train / 10 validation faces per class)."""
    from fer_hf.data.dataset import load_fer_dataset

    return load_fer_dataset("bundled")
