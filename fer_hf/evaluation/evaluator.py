"""One model on one split, as a library: inference with the preprocessing of training's evaluation (TTA too), how
the model's label set meets the split's, and the typed report (`EvalRecord`) with its plots. The command
`python -m fer_hf.evaluate` parses arguments around it; compare, ensemble, calibrate, export and bundle use it too."""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from tqdm.auto import tqdm

from fer_hf.data.decode import FerTensorDataset
from fer_hf.data.splits import select_classes
from fer_hf.evaluation.inputs import eval_transform_for
from fer_hf.evaluation.metrics import compute_fer_metrics, softmax
from fer_hf.evaluation.report import per_class_table, plot_confusion_matrix, plot_reliability, plt
from fer_hf.evaluation.results import METRICS_FILE, EvalRecord, RecordError, read_run_record, write_record
from fer_hf.evaluation.tta import tta_logits
from fer_hf.labels import FER_LABELS
from fer_hf.models.inputs import input_spec
from fer_hf.models.loading import LoadedModel

CONFUSION_FILE = "confusion_matrix.png"
MISTAKES_FILE = "confident_mistakes.png"
RELIABILITY_FILE = "reliability.png"


class EvaluationError(ValueError):
    """A model and a dataset that cannot be evaluated together; the message says why and how to fix it."""


@dataclass(frozen=True)
class LabelAlignment:
    """How a model's label set meets a split's: the classes scored (`names`, the data's order), the model outputs
    read for them (`columns`), and what is left out. A 7-class FER2013 model on an 8-class FER+ split is scored on
    the faces of its 7 classes; an 8-class FER+ model on FER2013 reads its 7 shared outputs (contempt left out)."""

    names: tuple[str, ...]
    columns: tuple[int, ...]  # model output index of each scored class
    data_names: tuple[str, ...]
    unscored_classes: tuple[str, ...] = ()  # data classes the model does not predict: their faces are left out
    unread_outputs: tuple[str, ...] = ()  # model classes the data does not have: their outputs are not read
    dropped: int = 0  # faces `select` left out

    @property
    def exact(self) -> bool:
        return not self.unscored_classes and not self.unread_outputs and self.columns == tuple(range(len(self.names)))

    def select(self, ds: Dataset) -> tuple[Dataset, LabelAlignment]:
        """The split's faces of the scored classes, relabelled in `names`' order (FER+ columns kept), and this
        alignment with the count of faces left out."""
        if not self.unscored_classes:
            return ds, self
        kept = select_classes(DatasetDict({"split": ds}), list(self.names))["split"]
        return kept, dataclasses.replace(self, dropped=len(ds) - len(kept))

    def left_out(self) -> dict | None:
        if self.exact:
            return None
        why = []
        if self.unscored_classes:
            why.append(f"the model does not predict {list(self.unscored_classes)}: those faces are not scored")
        if self.unread_outputs:
            why.append(f"the data has no {list(self.unread_outputs)}: the model's outputs for them are not read")
        return {
            "faces": self.dropped,
            "classes": list(self.unscored_classes),
            "outputs": list(self.unread_outputs),
            "why": "; ".join(why),
        }


def align_labels(model_names: Sequence[str], data_names: Sequence[str], model_ref: str) -> LabelAlignment:
    """The classes a model and a split share, scored on those; fewer than 2 shared is an EvaluationError."""
    model_names, data_names = list(model_names), list(data_names)
    shared = [n for n in data_names if n in model_names]
    if len(shared) < 2:
        raise EvaluationError(
            f"{model_ref}: the model predicts {model_names} but the data is labelled {data_names}: fewer than two "
            "classes in common, nothing to score"
        )
    return LabelAlignment(
        names=tuple(shared),
        columns=tuple(model_names.index(n) for n in shared),
        data_names=tuple(data_names),
        unscored_classes=tuple(n for n in data_names if n not in model_names),
        unread_outputs=tuple(n for n in model_names if n not in data_names),
    )


def check_labels(model_names: Sequence[str], data_names: Sequence[str], model_ref: str) -> None:
    """The model must predict exactly the data's classes, in the same order."""
    model_names, data_names = list(model_names), list(data_names)
    if model_names == data_names:
        return
    hint = ""
    if set(model_names) < set(FER_LABELS) and set(model_names) < set(data_names):
        hint = f"; evaluate it on the same classes with --classes {','.join(model_names)}"
    elif set(model_names) == set(data_names):
        hint = "; same classes in another order: re-save the model with the canonical order of fer_hf.labels"
    raise EvaluationError(f"{model_ref}: the model predicts {model_names} but the data is labelled {data_names}{hint}")


def run_inference(
    loaded: LoadedModel, faces: FerTensorDataset, tta: str = "none", batch_size: int = 256
) -> tuple[np.ndarray, float]:
    """Logits (N, K) of every face (log-probabilities under TTA) and the seconds inference took."""
    transform = eval_transform_for(loaded)
    chunks, start = [], time.perf_counter()
    for pixels in tqdm(faces.images.split(batch_size), desc=f"evaluate (tta={tta})", leave=False, mininterval=2):
        chunks.append(tta_logits(loaded.model, transform(pixels), tta, batch_size))  # (B, K)
    return torch.cat(chunks).numpy(), time.perf_counter() - start


def confident_mistakes(logits: np.ndarray, labels: np.ndarray, names: Sequence[str], k: int = 16) -> list[dict]:
    """The k wrong predictions with the highest predicted probability, most confident first."""
    probs = softmax(logits)
    preds = probs.argmax(-1)
    wrong = np.flatnonzero(preds != labels)
    order = wrong[np.argsort(-probs[wrong, preds[wrong]], kind="stable")][:k]
    return [
        {
            "index": int(i),
            "true": names[labels[i]],
            "predicted": names[preds[i]],
            "confidence": float(probs[i, preds[i]]),
        }
        for i in order
    ]


def plot_mistakes(mistakes: list[dict], images: torch.Tensor, path: Path, title: str) -> None:
    """A grid of faces with their true class, predicted class and confidence."""
    cols = 4
    rows = max(1, -(-len(mistakes) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, m in zip(axes.flat, mistakes, strict=False):
        ax.imshow(images[m["index"]].numpy(), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"#{m['index']} true {m['true']}\npred {m['predicted']} {m['confidence']:.2f}", fontsize=8)
    if not mistakes:
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _training_costs(model_dir: str) -> dict:
    """What training cost, from the run's own record: its wall time (a second stage's includes the first's) and
    the parameters it trained (gradual unfreezing trains fewer than the model has). A loaded model cannot tell:
    every parameter of it requires grad. None where the folder holds no training record (a Hub id, a checkpoint)."""
    try:
        record = read_run_record(model_dir)
    except OSError:  # a Hub id or a bundled name is not a folder
        record = None
    except RecordError as err:  # another tool's metrics.json: the evaluation stands, the costs are unknown
        warnings.warn(f"training costs not reported: {err}", stacklevel=2)
        record = None
    if record is None:
        return {"trainable_parameters": None, "train_seconds": None}
    return {"trainable_parameters": record.trainable_parameters, "train_seconds": record.total_train_seconds()}


def evaluate(
    loaded: LoadedModel,
    faces: FerTensorDataset,
    *,
    data: str,
    split: str,
    tta: str = "none",
    batch_size: int = 256,
    classes: str | None = None,
    mistakes: int = 16,
    name: str | None = None,
    raters: np.ndarray | None = None,
    alignment: LabelAlignment | None = None,
) -> EvalRecord:
    """One evaluation as a library function (nothing written): inference over the decoded `faces` with `tta`, and
    the report that `fer_hf.evaluate`'s metrics.json holds. `data`/`split`/`classes` say where the faces came from;
    `name` names the model in the report (default: where it was loaded from); `raters` (N, K) are the FER+ raters'
    distributions of the faces, `alignment` how the model's labels meet the faces' (`align_labels`)."""
    start = time.perf_counter()
    logits, seconds = run_inference(loaded, faces, tta, batch_size)
    wall = time.perf_counter() - start
    settings = dict(data=data, tta=tta, batch_size=batch_size, classes=classes, mistakes=mistakes, name=name)
    return build_report(
        loaded, split, logits, faces.labels.numpy(), seconds, wall, **settings, raters=raters, alignment=alignment
    )


def build_report(
    loaded: LoadedModel,
    split: str,
    logits: np.ndarray,
    labels: np.ndarray,
    seconds: float,
    wall: float,
    *,
    data: str,
    tta: str,
    batch_size: int,
    classes: str | None = None,
    mistakes: int = 16,
    name: str | None = None,
    raters: np.ndarray | None = None,
    alignment: LabelAlignment | None = None,
) -> EvalRecord:
    """The report of given logits (N, K): evaluate's, or an ensemble's from its members' probabilities. With an
    `alignment`, the model's outputs of the scored classes are read (renormalised by the softmax) and the report
    says what was left out."""
    names = loaded.label_names
    left_out = None
    if alignment is not None and not alignment.exact:
        logits, names = logits[:, list(alignment.columns)], list(alignment.names)
        left_out = alignment.left_out()
    model = loaded.model
    return EvalRecord(
        model=name or loaded.source,
        model_type=model.config.model_type,
        data=str(data),
        split=split,
        split_size=int(len(labels)),
        labels=names,
        classes=classes,
        tta=tta,
        **{**compute_fer_metrics(logits, labels, names, raters), "left_out": left_out},
        parameters=sum(p.numel() for p in model.parameters()),
        **_training_costs(loaded.source),
        images_per_second=round(len(labels) / seconds, 1),
        inference_seconds=round(seconds, 3),
        wall_seconds=round(wall, 3),
        batch_size=batch_size,
        device=str(next(model.parameters()).device),
        preprocessing=input_spec(model.config, loaded.image_processor),
        top_mistakes=confident_mistakes(logits, labels, names, mistakes),
    )


def write_outputs(out: Path, report: EvalRecord, images: torch.Tensor) -> None:
    title = f"{Path(report.model).name} on {report.split} ({report.split_size}), tta={report.tta}"
    write_record(report, out / METRICS_FILE)
    (out / "per_class.md").write_text(per_class_table(report.per_class) + "\n")
    plot_confusion_matrix(report.confusion_matrix, report.labels, out / CONFUSION_FILE, title)
    plot_mistakes(report.top_mistakes, images, out / MISTAKES_FILE, f"most confident mistakes: {title}")
    if report.reliability:
        plot_reliability(report.reliability, out / RELIABILITY_FILE, title, report.ece)


def default_output(model: str, split: str | None, tta: str) -> Path:
    """Where an evaluation goes unless told: runs/eval/<model>-<split>-<tta>."""
    return Path("runs") / "eval" / f"{Path(model.rstrip('/')).name}-{split or 'validation'}-{tta}"
