"""The inference backend of a loaded model: onnxruntime through an export of exactly its weights (shipped in the
wheel, or exported once and cached by fingerprint), or torch with its threads fitted to the cores it shares."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

import fer_hf.models.hub_code  # noqa: F401  (registers the package's model classes with the Auto classes)
from fer_hf.devices import fit_torch_threads
from fer_hf.exports.runtime import (
    SHIPPED_DIR,
    has_cuda_provider,
    is_export,
)
from fer_hf.inference.fingerprint import export_fingerprint, model_fingerprint
from fer_hf.models.loading import BUNDLED_MODELS, LoadedModel, ModelLoadError, OnnxImageClassifier

log = logging.getLogger(__name__)


BACKENDS = ("auto", "onnx", "torch")


BACKEND_ENV = "FER_HF_BACKEND"  # the backend when none is given (the app reads it too); "auto" when unset


BACKEND_HELP = (
    "inference backend: auto (onnxruntime through the model's ONNX export, shipped or exported once and cached, "
    "else torch), onnx or torch"
)


CACHE_ENV = "FER_HF_CACHE"  # the cache folder; ~/.cache/fer_hf when unset (exports go to its onnx/ subfolder)


_warned: set[str] = set()  # models whose fallback to torch was already reported (once per process)


class BackendError(ModelLoadError):
    """A --backend that cannot be honoured: not a backend name, onnx for a model without a usable export, torch for
    a model that is only an ONNX export."""


def default_backend() -> str:
    return os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"


def cache_root() -> Path:
    """Where exports made on first use are kept: $FER_HF_CACHE/onnx, else ~/.cache/fer_hf/onnx."""
    base = os.environ.get(CACHE_ENV, "").strip()
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "fer_hf") / "onnx"


def find_export(loaded: LoadedModel, fingerprint: str) -> Path | None:
    """An export of exactly these weights: the one shipped in the wheel (`make dist`), else a cached one."""
    candidates = [cache_root() / fingerprint[:32]]
    bundled = [name for name, entry in BUNDLED_MODELS.items() if str(entry.path) == str(loaded.source)]
    candidates[:0] = [SHIPPED_DIR / name for name in bundled]
    for folder in candidates:
        if is_export(folder) and export_fingerprint(folder) == fingerprint:  # a folder renamed in whole: complete
            return folder
    return None


def inference_model(
    loaded: LoadedModel, backend: str | None = None, device: str = "cpu"
) -> tuple[str, torch.nn.Module]:
    """(backend used, the model that classifies) for `loaded` on a resolved `device`.

    auto: onnxruntime when it is installed and an export of these weights is shipped or can be made (once, then
    cached), on CUDA when onnxruntime has that provider; torch otherwise, with one warning naming why. Also torch
    for a GPU that only torch can use (torch there beats onnxruntime on the CPU). onnx: the same, but a model that
    cannot run through onnxruntime is a BackendError. torch: the torch model as loaded. Where torch runs on the CPU
    its threads are fitted to the cores (`fer_hf.devices.fit_torch_threads`). `loaded.model` stays the torch model
    either way: explanations and training need it. None: $FER_HF_BACKEND, else auto (an export folder then runs as
    the export it is, where an explicit torch is refused)."""
    name = (backend or default_backend()).strip().lower()
    if name not in BACKENDS:
        raise BackendError(f"--backend {backend!r} is not a backend; expected one of {', '.join(BACKENDS)}")
    if hasattr(loaded.model, "runtime"):  # a fer_hf.export folder: there is no torch model to run
        if backend is not None and name == "torch":  # asked for; $FER_HF_BACKEND only prefers where there is a choice
            raise BackendError(
                f"--backend torch: {loaded.source} is an ONNX export, run only by onnxruntime; give the torch model "
                "it was exported from, or --backend auto"
            )
        return "onnx", loaded.model
    if name == "torch" or (
        name == "auto" and device != "cpu" and not (device.startswith("cuda") and has_cuda_provider())
    ):
        return "torch", _torch_side(loaded, device)
    try:
        folder = export_for(loaded)
        model = OnnxImageClassifier(folder, loaded.model.config, device=device)
    except (ImportError, ValueError, OSError) as err:
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        if name == "onnx":
            raise BackendError(
                f"--backend onnx: {loaded.source} cannot run through onnxruntime ({reason}); use --backend torch or auto"
            ) from None
        if str(loaded.source) not in _warned:
            _warned.add(str(loaded.source))
            log.warning("%s runs through torch, not onnxruntime: %s", loaded.source, reason)
        return "torch", _torch_side(loaded, device)
    return "onnx", model


def _torch_side(loaded: LoadedModel, device: str) -> torch.nn.Module:
    if device == "cpu":
        fit_torch_threads()
    return loaded.model


def export_for(loaded: LoadedModel) -> Path:
    """The folder of an export of these weights: shipped, cached, or exported now into the cache. ImportError when
    onnxruntime (or, to export, onnx/onnxscript) is missing; ExportError when the model cannot be exported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ImportError("onnxruntime is not installed: pip install onnxruntime") from err
    fingerprint = model_fingerprint(loaded)
    found = find_export(loaded, fingerprint)
    if found is not None:
        return found
    from fer_hf.inference.exporting import (
        cached_export,  # the exporter's imports (onnx, the evaluation side) only when needed
    )

    return cached_export(loaded, fingerprint, cache_root())
