"""Knowledge distillation: a teacher's probabilities on the training faces, computed once and cached by content.

The teacher (any MODEL: the bundled `ensemble`, a run folder, a Hub id) sees each training face and its mirror with
its own evaluation preprocessing; the (N, 2, K) log-probabilities are saved under `distill.cache_dir` in a file named
by a hash of the teacher's weights and config and of the faces, so a second run with the same teacher and data (or a
resumed run) reads them back instead of recomputing. The collator hands each face's row to the loss, matched to the
mirror the augmentation drew (`BatchTransform.last_flip`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from fer_hf.data.decode import FerTensorDataset
from fer_hf.evaluation.inputs import eval_transform_for
from fer_hf.logs import get_logger
from fer_hf.models.loading import LoadedModel, load_classifier

CACHE_VERSION = 1


class DistillationLoss(nn.Module):
    """(1 - alpha) * base(logits, labels) + alpha * T^2 * KL(softmax(teacher / T) || softmax(logits / T)).

    teacher: (B, K) log-probabilities; without it (evaluation) the loss is the base loss alone. The T^2 keeps the
    soft term's gradients on the scale of the hard term's (Hinton et al., 2015).
    """

    def __init__(self, base: nn.Module, temperature: float, alpha: float):
        super().__init__()
        self.base, self.temperature, self.alpha = base, float(temperature), float(alpha)

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        teacher: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hard = self.base(logits, labels) if targets is None else self.base(logits, labels, targets=targets)
        if teacher is None:
            return hard
        t = self.temperature
        soft = F.kl_div(
            F.log_softmax(logits.float() / t, dim=-1),
            F.log_softmax(teacher.float() / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        return (1.0 - self.alpha) * hard + self.alpha * (t * t) * soft


logger = get_logger(__name__)


def _fingerprint(loaded: LoadedModel, faces: FerTensorDataset) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    digest.update(json.dumps(loaded.model.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(loaded.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digest.update(faces.images.contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


@torch.no_grad()
def compute_teacher_logprobs(loaded: LoadedModel, faces: FerTensorDataset, batch_size: int = 256) -> torch.Tensor:
    """(N, 2, K) log-probabilities of each face (index 0) and its mirror (index 1)."""
    transform = eval_transform_for(loaded)
    model = loaded.model.eval()
    device = next(model.parameters()).device
    rows = []
    for pixels in tqdm(faces.images.split(batch_size), desc="teacher", mininterval=5):
        x = transform(pixels).to(device)  # (B, C, S, S)
        views = [model(pixel_values=v).logits.float().log_softmax(-1).cpu() for v in (x, x.flip(-1))]
        rows.append(torch.stack(views, dim=1))  # (B, 2, K)
    return torch.cat(rows)


def teacher_logprobs(
    teacher: str, faces: FerTensorDataset, label_names: list[str], cache_dir: str | Path, batch_size: int = 256
) -> torch.Tensor:
    """The teacher's (N, 2, K) log-probabilities for `faces`, from the cache when it has them."""
    loaded = load_classifier(teacher)
    if loaded.label_names != list(label_names):
        raise ValueError(
            f"distill.teacher {teacher}: predicts {loaded.label_names}, but this run's classes are {list(label_names)}"
        )
    path = Path(cache_dir) / f"teacher-{_fingerprint(loaded, faces)}.safetensors"
    if path.is_file():
        cached = load_file(str(path))["logprobs"]
        if cached.shape == (len(faces), 2, len(label_names)):
            logger.info("distill: teacher probabilities read from %s", path)
            return cached
    logprobs = compute_teacher_logprobs(loaded, faces, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:  # written whole, then renamed: a cut-short write never looks like a cache entry
        save_file(
            {"logprobs": logprobs.contiguous()}, tmp, metadata={"teacher": str(teacher), "faces": str(len(faces))}
        )
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    logger.info("distill: teacher probabilities cached in %s", path)
    return logprobs


def teacher_accuracy(logprobs: torch.Tensor, labels: torch.Tensor) -> float:
    """How often the teacher (single view) agrees with the training labels: a sanity line for the log."""
    return float((logprobs[:, 0].argmax(-1) == labels).float().mean())
