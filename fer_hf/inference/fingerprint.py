"""What ties an ONNX export to the torch weights it came from: a sha256 of the weights as loaded, the config and the
image processor, written into every export and used as the backend cache's key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fer_hf.exports.runtime import EXPORT_KEY

if TYPE_CHECKING:
    from fer_hf.models.loading import LoadedModel

# Part of every fingerprint: raising it orphans the cached exports when what an export holds changes.
EXPORT_FORMAT = 2  # 2: the config is hashed without _name_or_path


def model_fingerprint(loaded: LoadedModel) -> str:
    """sha256 of what an export is made from: the weights as loaded, the config and the image processor. The cache's
    key, and written into every export's block, so an export made from other weights (a retrained bundled model, an
    old `make dist`) is never taken for this model's."""
    digest = hashlib.sha256(f"fer_hf export format {EXPORT_FORMAT}\n".encode())
    # The config without where it was loaded from: the same weights installed elsewhere (a wheel's site-packages, another
    # clone) are the same model, and `make dist`'s shipped exports must match them there.
    config = {k: v for k, v in loaded.model.config.to_dict().items() if k != "_name_or_path"}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(loaded.image_processor.to_json_string().encode())
    for name, tensor in sorted(loaded.model.state_dict().items()):
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def export_fingerprint(folder: Path) -> str | None:
    """The fingerprint an export folder was written with (None: an older export, or not an export)."""
    try:
        return json.loads((folder / "config.json").read_text())[EXPORT_KEY].get("fingerprint")
    except (OSError, ValueError, KeyError, AttributeError):
        return None
