"""fer_hf: facial-expression recognition on FER2013 with the Hugging Face stack.

import fer_hf
dd = fer_hf.load_fer_dataset("../shared/fer2013")      # DatasetDict train/validation[/test]
loaded = fer_hf.load_default_model()                   # the bundled CNN (classifies a 48x48 face crop), offline
result = fer_hf.analyze("photo.jpg")                   # photos, arrays, lists, videos, cameras -> faces + labels
result.to_pandas()                                     # one row per face
"""

from __future__ import annotations

__version__ = "0.1.0"

# Heavy imports (torch, transformers) wait until first use: `python -m fer_hf.data --help` stays fast.
_LAZY = {
    "load_fer_dataset": "fer_hf.data",
    "FER_LABELS": "fer_hf.labels",
    "load_classifier": "fer_hf.loading",
    "load_default_model": "fer_hf.loading",
    "build_model": "fer_hf.models",
    "analyze": "fer_hf.analysis",
    "Analyzer": "fer_hf.analysis",
    "Analysis": "fer_hf.analysis",
    "resolve_device": "fer_hf.devices",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fer_hf' has no attribute {name!r}")


__all__ = [*_LAZY, "__version__"]
