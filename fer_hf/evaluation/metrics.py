"""One metric module for training, evaluation and comparison: accuracy, macro/weighted F1, per-class
precision/recall/F1/support, top-2 accuracy and the confusion matrix, from logits and labels; calibration (expected
calibration error over 15 confidence bins, negative log-likelihood of the labels); and, on faces with FER+ votes,
agreement with the raters' distribution (mean KL divergence from it to the model's, NLL of the votes).

`fer_hf/fer_metric/fer_metric.py` wraps the same function as an `evaluate` module that loads offline
(`evaluate.load(fer_hf.evaluation.metrics.METRIC_PATH)`); `compute_fer_metrics` is what everything calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

METRIC_PATH = str(Path(__file__).parents[1] / "fer_metric" / "fer_metric.py")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


ECE_BINS = 15  # Guo et al. 2017's choice; what `fer_hf.calibrate` reports before and after


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, list]:
    """Per equal-width confidence bin: mean confidence, accuracy and face count (empty bins: count 0)."""
    confidence, correct = probs.max(axis=-1), (probs.argmax(axis=-1) == labels).astype(np.float64)
    which = np.clip((confidence * bins).astype(int), 0, bins - 1)  # (N,) bin of each face; 1.0 in the last
    counts = np.bincount(which, minlength=bins)
    safe = np.maximum(counts, 1)
    return {
        "confidence": (np.bincount(which, confidence, bins) / safe).tolist(),
        "accuracy": (np.bincount(which, correct, bins) / safe).tolist(),
        "count": counts.tolist(),
    }


def calibration_metrics(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, float]:
    """ece: sum over bins of |accuracy - confidence| weighted by the bin's share of faces; nll: mean -log p(label)."""
    table = reliability(probs, labels, bins)
    counts = np.asarray(table["count"], dtype=np.float64)
    gaps = np.abs(np.asarray(table["accuracy"]) - np.asarray(table["confidence"]))
    nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean()
    return {"ece": float((gaps * counts).sum() / counts.sum()), "nll": float(nll), "reliability": table}


def rater_metrics(probs: np.ndarray, raters: np.ndarray) -> dict[str, float]:
    """probs (N, K) against the raters' distributions (N, K) (`fer_hf.data.ferplus.raters_distribution`), over faces
    whose raters chose at least one of the K classes: kl_raters = mean KL(raters || model), nll_raters = mean
    cross-entropy of the votes under the model (= KL + the raters' own entropy)."""
    rows = raters.sum(axis=-1) > 0
    p, q = raters[rows], np.clip(probs[rows], 1e-12, None)
    cross = -(p * np.log(q)).sum(axis=-1)
    entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=-1)
    return {"kl_raters": float((cross - entropy).mean()), "nll_raters": float(cross.mean())}


def compute_fer_metrics(
    logits: np.ndarray, labels: np.ndarray, label_names: Sequence[str], raters: np.ndarray | None = None
) -> dict:
    """logits (N, K) and labels (N,) (and the raters' distributions (N, K) where there are votes) -> a JSON-ready
    dict of FER metrics."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"need logits (N, K) and labels (N,) with N > 0, got {logits.shape} and {labels.shape}")
    k = len(label_names)
    preds = logits.argmax(axis=-1)
    ids = list(range(k))
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
    top2 = np.argsort(-logits, axis=-1)[:, :2] if k > 2 else np.tile(np.arange(k), (len(labels), 1))
    return {
        "accuracy": float((preds == labels).mean()),
        "macro_f1": float(f1_score(labels, preds, labels=ids, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(labels, preds, labels=ids, average="weighted", zero_division=0)),
        "top2_accuracy": float((top2 == labels[:, None]).any(axis=1).mean()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": confusion_matrix(labels, preds, labels=ids).tolist(),
        "num_samples": int(len(labels)),
        **calibration_metrics(softmax(logits), labels),
        **(rater_metrics(softmax(logits), np.asarray(raters, dtype=np.float64)) if raters is not None else {}),
    }


def flat_scalars(metrics: dict) -> dict[str, float]:
    """The scalar part (plus per-class recall) of a metrics dict, for Trainer logs."""
    out = {k: v for k, v in metrics.items() if isinstance(v, float)}
    for name, row in metrics.get("per_class", {}).items():
        out[f"recall_{name}"] = row["recall"]
    return out


def trainer_compute_metrics(label_names: Sequence[str]):
    """A `compute_metrics` for the Trainer that logs the scalar FER metrics each evaluation."""

    def compute(eval_pred) -> dict[str, float]:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        return flat_scalars(compute_fer_metrics(logits, eval_pred.label_ids, label_names))

    return compute
