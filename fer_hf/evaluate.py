"""Evaluate a trained FER model on one split, with the preprocessing of training's evaluation.

    python -m fer_hf.evaluate runs/cnn --data ../shared/fer2013 --split validation --tta hflip

MODEL is a run folder, a saved model folder, a Hub id or a bundled model (`default`, `lite0`); --data is anything
`load_fer_dataset` takes, including a single parquet file (used whole, as one split). Writes metrics.json
(the keys of `fer_hf.metrics.compute_fer_metrics` plus split, model, TTA mode, throughput and parameters),
a normalised confusion matrix and a grid of the most confident mistakes. Outputs are written to a temporary
folder and renamed into place at the end, so a folder with a metrics.json is always a complete evaluation.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from datasets import Dataset, DatasetDict
from tqdm.auto import tqdm

from fer_hf.cli import positive_int
from fer_hf.data.dataset import load_fer_dataset
from fer_hf.data.sources import FerDataError, raters_of, read_source
from fer_hf.data.splits import select_classes
from fer_hf.data.transforms import BatchTransform, FerTensorDataset
from fer_hf.devices import DEVICE_HELP, DeviceError, resolve_device
from fer_hf.evaluation.metrics import compute_fer_metrics, softmax
from fer_hf.evaluation.report import per_class_table, plot_confusion_matrix, plot_reliability, plt
from fer_hf.evaluation.results import METRICS_FILE, EvalRecord, RecordError, read_run_record, write_record
from fer_hf.evaluation.tta import TTA_MODES, tta_logits
from fer_hf.labels import FER_LABELS, resolve_classes
from fer_hf.loading import MODEL_HELP, LoadedModel, ModelLoadError, load_classifier, resolve_model_path
from fer_hf.outputs import OutputOverlapError, check_apart

CONFUSION_FILE = "confusion_matrix.png"
MISTAKES_FILE = "confident_mistakes.png"
RELIABILITY_FILE = "reliability.png"


class EvaluationError(ValueError):
    """A model and a dataset that cannot be evaluated together; the message says why and how to fix it."""


# ---------------------------------------------------------------------------------------------- preprocessing
def _read(container, key: str):
    """A key of a dict or an attribute of a SizeDict-like object (transformers 5 uses both)."""
    if container is None:
        return None
    return container.get(key) if isinstance(container, dict) else getattr(container, key, None)


def input_spec(config, image_processor) -> dict:
    """The model's input as training's evaluation saw it: {size, channels, mean, std}.

    Read from the saved image processor (side, mean, std) and the model config (channels), so any folder
    that `load_classifier` loads is evaluated exactly as `fer_hf.train` evaluated it.
    """
    data_config = getattr(image_processor, "data_config", None)  # timm wrapper: resolved pretrained_cfg
    if data_config:
        size, mean, std = data_config["input_size"][-1], data_config["mean"], data_config["std"]
    else:
        crop = _read(image_processor, "crop_size") if getattr(image_processor, "do_center_crop", False) else None
        sizes = (crop, _read(image_processor, "size"))
        size = next((_read(s, k) for s in sizes for k in ("height", "shortest_edge") if _read(s, k)), None)
        mean, std = image_processor.image_mean, image_processor.image_std
    if not size:
        raise EvaluationError(f"cannot read the input size from the image processor {type(image_processor).__name__}")
    channels = int(getattr(config, "num_channels", 3) or 3)
    mean, std = np.atleast_1d(np.asarray(mean, dtype=float)), np.atleast_1d(np.asarray(std, dtype=float))
    if channels == 1:  # a gray model: one statistic (all equal for the package's CNN, [0.5] * 3)
        mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
    return {"size": int(size), "channels": channels, "mean": mean[:channels].tolist(), "std": std[:channels].tolist()}


def eval_transform_for(loaded: LoadedModel) -> BatchTransform:
    """uint8 faces (B, 48, 48) -> the loaded model's normalised input (B, C, S, S), no augmentation."""
    return BatchTransform(**input_spec(loaded.model.config, loaded.image_processor), train=False)


# ---------------------------------------------------------------------------------------------- data
def load_split(source: str, split: str | None, classes: str | None = None) -> tuple[str, Dataset]:
    """One split of SOURCE (default: validation, or the only split). A single file is used whole."""
    file = Path(source).expanduser()
    if file.is_file():
        if file.suffix == ".parquet" and pq.read_metadata(file).num_rows == 0:
            raise EvaluationError(f"{file}: the parquet file is empty; nothing to evaluate")
        dd = read_source(str(file), None)  # used whole: no validation split carved out of a single file
        dd = select_classes(dd, classes) if classes else dd
    else:
        dd = load_fer_dataset(source, classes=classes)
    name = split or ("validation" if "validation" in dd or len(dd) > 1 else next(iter(dd)))
    if name not in dd:
        raise EvaluationError(f"{source}: no split {name!r}; it has {list(dd)} (choose one with --split)")
    ds = dd[name]
    if len(ds) == 0:
        raise EvaluationError(f"{source}: split {name!r} is empty; nothing to evaluate")
    return name, ds


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


# ---------------------------------------------------------------------------------------------- inference
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


# ---------------------------------------------------------------------------------------------- outputs
@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `out` in one rename, on error it is removed."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise EvaluationError(f"{out} already exists and is not empty; choose another --output or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():  # move the old folder aside first: a directory rename cannot replace a non-empty one
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


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


def print_summary(report: EvalRecord, out: Path) -> None:
    print(f"{report.model} on {report.split} ({report.split_size} faces), TTA {report.tta}:")
    print(
        f"accuracy {report.accuracy:.4f}  macro-F1 {report.macro_f1:.4f}  top-2 {report.top2_accuracy:.4f}"
        f"  ({report.images_per_second:.0f} img/s)"
    )
    print(f"calibration: ECE {report.ece:.4f} (15 bins)  NLL {report.nll:.4f}", end="")
    if report.kl_raters is not None:
        print(f"  |  raters (FER+ votes): KL(raters||model) {report.kl_raters:.4f}  NLL {report.nll_raters:.4f}")
    else:
        print()
    if report.left_out:
        print(f"left out: {report.left_out['faces']} faces ({report.left_out['why']})")
    print(per_class_table(report.per_class))
    print(f"written to {out}")


# ---------------------------------------------------------------------------------------------- CLI
def default_output(model: str, split: str | None, tta: str) -> Path:
    return Path("runs") / "eval" / f"{Path(model.rstrip('/')).name}-{split or 'validation'}-{tta}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fer_hf.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("--data", required=True, help="FER2013 source: parquet file/folder, Kaggle CSV, ImageFolder")
    parser.add_argument("--split", default=None, help="split to evaluate (default: validation, or the only split)")
    parser.add_argument("--classes", default=None, help="class subset (name or comma-separated), as in training")
    parser.add_argument("--tta", default="none", choices=TTA_MODES, help="test-time augmentation (default: none)")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="faces per forward pass")
    parser.add_argument("--output", default=None, help="output folder (default: runs/eval/MODEL-SPLIT-TTA)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--mistakes", type=int, default=16, help="how many confident mistakes to show")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a Hub model's own code to run")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    args = parser.parse_args(argv)
    try:  # before anything loads: `--device cuda` on a machine without a GPU is one sentence
        args.device = resolve_device(args.device)
    except DeviceError as err:
        parser.error(str(err))
    if args.classes:
        try:
            resolve_classes(args.classes)
        except ValueError as err:
            parser.error(f"--classes: {err}")
    return args


def evaluate_model(args: argparse.Namespace) -> tuple[EvalRecord, Path]:
    """The command: load, check, evaluate, write (atomically). Returns (metrics, folder)."""
    out = Path(args.output) if args.output else default_output(args.model, args.split, args.tta)
    with atomic_output_dir(out, args.overwrite) as tmp:
        loaded = load_classifier(args.model, trust_remote_code=args.trust_remote_code, device=args.device)
        split, ds = load_split(args.data, args.split, args.classes)
        ds, alignment = align_labels(loaded.label_names, ds.features["label"].names, args.model).select(ds)
        faces = FerTensorDataset.from_split(ds, desc=f"decode {split}")
        settings = dict(tta=args.tta, batch_size=args.batch_size, classes=args.classes, mistakes=args.mistakes)
        report = evaluate(
            loaded, faces, data=args.data, split=split, **settings, raters=raters_of(ds), alignment=alignment
        )
        write_outputs(tmp, report, faces.images)
    return report, out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        # The command never writes over (into, around) its inputs; bundle writes evaluations into its staging folder.
        out = args.output or default_output(args.model, args.split, args.tta)
        check_apart(out, resolve_model_path(args.model), args.data)
        report, out = evaluate_model(args)
    except (EvaluationError, ModelLoadError, FerDataError, FileNotFoundError, OutputOverlapError, RecordError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_summary(report, out)
    return 0


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))
