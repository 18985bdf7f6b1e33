"""fer_hf: facial-expression recognition on FER2013 with the Hugging Face stack.

import fer_hf
dd = fer_hf.load_fer_dataset("../shared/fer2013")      # DatasetDict train/validation[/test]
loaded = fer_hf.load_default_model()                   # the bundled CNN (classifies a 48x48 face crop), offline
result = fer_hf.analyze("photo.jpg")                   # photos, arrays, lists, videos, cameras -> faces + labels
result.to_pandas()                                     # one row per face

The light install (`pip install fer_hf`, no torch) has the ONNX runtime and the exports shipped in the wheel:
from fer_hf.exports.runtime import OnnxClassifier, resolve_export
probs = OnnxClassifier(resolve_export("default")).classify(gray_48x48_faces)   # or: python -m fer_hf.runtime photo.jpg
"""

from __future__ import annotations

__version__ = "0.1.0"

# Heavy imports (torch, transformers) wait until first use: `python -m fer_hf.data --help` stays fast, and
# `import fer_hf` works in the light install, which has no torch.
_LAZY = {
    "load_fer_dataset": "fer_hf.data.dataset",
    "FER_LABELS": "fer_hf.labels",
    "load_classifier": "fer_hf.models.loading",
    "load_default_model": "fer_hf.models.loading",
    "build_model": "fer_hf.models",
    "analyze": "fer_hf.inference.analysis",
    "Analyzer": "fer_hf.inference.analysis",
    "Analysis": "fer_hf.inference.analysis",
    "resolve_device": "fer_hf.devices",
    "OnnxClassifier": "fer_hf.runtime",  # torch-free
}
# What `pip install fer_hf` leaves out and `pip install "fer_hf[train]"` adds (the names a missing import reports).
_TRAIN_ONLY = {"torch", "torchvision", "transformers", "datasets", "accelerate", "evaluate", "peft", "timm",
               "safetensors", "sklearn", "scipy", "matplotlib", "yaml", "pandas", "pyarrow", "tqdm"}  # fmt: skip


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        try:
            module = importlib.import_module(_LAZY[name])
        except ModuleNotFoundError as err:
            if (err.name or "").split(".")[0] not in _TRAIN_ONLY:
                raise
            raise ModuleNotFoundError(
                f"fer_hf.{name} needs {err.name}, which the light install (pip install fer_hf) leaves out: "
                "pip install 'fer_hf[train]'",
                name=err.name,
            ) from err
        return getattr(module, name)
    raise AttributeError(f"module 'fer_hf' has no attribute {name!r}")


__all__ = [*_LAZY, "__version__"]
