"""ONNX export folders and the torch-free runtime that runs them: the folder's format (model.onnx, config.json
with its `fer_hf_onnx` block, the image processor), checks that say what is wrong with a folder, and
`OnnxClassifier` (numpy + onnxruntime; CUDA when onnxruntime has it). The light install (`pip install fer_hf`) runs
this and nothing of torch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from fer_hf.devices import onnxruntime_threads  # torch-free: it imports torch only to resolve a device

EXPORT_KEY = "fer_hf_onnx"  # the block of config.json that `fer_hf.export` writes
ONNX_FILE = "model.onnx"
# `make dist` exports the bundled models here (git-ignored), so the wheel ships them: <name>/ per bundled model.
SHIPPED_DIR = Path(__file__).parents[1] / "assets" / "onnx"
DEFAULT_EXPORT = "default"


class ExportFolderError(ValueError):
    """A folder that is not a usable `fer_hf.export` output."""


def is_export(folder: str | Path) -> bool:
    """True for a folder written by `fer_hf.export` (model.onnx + config.json with its block)."""
    folder = Path(folder)
    if not (folder / ONNX_FILE).is_file() or not (folder / "config.json").is_file():
        return False
    try:
        return EXPORT_KEY in json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False


def resolve_export(ref: str | Path) -> Path:
    """A bundled model's name ('default', 'lite0', ...) -> its shipped export folder; anything else as given."""
    if Path(ref).is_dir() or len(Path(ref).parts) > 1:  # a path: OnnxClassifier says what is wrong with it
        return Path(ref)
    shipped = SHIPPED_DIR / str(ref)
    if not is_export(shipped):
        raise ExportFolderError(
            f"{ref}: neither an export folder nor a shipped export ({shipped} has none; `make dist` writes the "
            "bundled models' exports there, `python -m fer_hf.export MODEL --output DIR` any model's)"
        )
    return shipped


class OnnxClassifier:
    """An exported classifier: gray uint8 faces (N, 48, 48) -> probabilities (N, K) through onnxruntime.

    Everything about the folder is checked when it is opened (the config block's keys, the graph's input and output
    against them), so a bad or foreign export is one sentence naming the file, not an onnxruntime traceback later."""

    def __init__(self, folder: str | Path, threads: int | None = None, device: str = "cpu"):
        """threads: onnxruntime's intra-op threads (None: fitted to the usable cores, `fer_hf.devices`; 0:
        onnxruntime's own default, one per core). device: 'cuda[:N]' runs on CUDAExecutionProvider when this
        onnxruntime has it (else the CPU), anything else on the CPU."""
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ExportFolderError("running an exported model needs onnxruntime: pip install onnxruntime") from err
        self.folder = Path(folder)
        check_export_files(self.folder)
        self.spec = read_spec(self.folder / "config.json")  # {"size", "channels", "mean", "std", "labels", ...}
        self.label_names = list(self.spec["labels"])
        model = self.folder / ONNX_FILE
        try:
            self.session = ort.InferenceSession(
                str(model), session_options(threads), providers=session_providers(device)
            )
        except Exception as err:  # noqa: BLE001  (onnxruntime's pybind errors share no base class but Exception)
            raise ExportFolderError(
                f"{model}: onnxruntime cannot load it ({_reason(err)}); expected an ONNX model written by "
                "python -m fer_hf.export (export the model again)"
            ) from None
        self.input_name = check_graph(model, self.session, self.spec)
        self.provider = self.session.get_providers()[0]  # what runs it: CUDAExecutionProvider or CPUExecutionProvider

    def preprocess(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Gray (S0, S0) uint8 faces -> (N, C, S, S) float32, normalised like `fer_hf.evaluate`'s transform."""
        size, channels = int(self.spec["size"]), int(self.spec["channels"])
        mean = np.asarray(self.spec["mean"], np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.spec["std"], np.float32).reshape(1, -1, 1, 1)
        floats = [np.asarray(face, np.float32) / 255.0 for face in faces]  # resized in float, as torch does
        resized = [f if f.shape == (size, size) else cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR)
                   for f in floats]  # fmt: skip
        pixels = np.stack(resized)[:, None]  # (N, 1, S, S)
        return ((np.repeat(pixels, channels, axis=1) - mean) / std).astype(np.float32)

    def logits(self, pixel_values: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(N, C, S, S) float32 -> (N, K) logits."""
        chunks = [self._run(pixel_values[i : i + batch_size]) for i in range(0, len(pixel_values), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.label_names)), np.float32)

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        model = self.folder / ONNX_FILE
        try:
            (logits, *_) = self.session.run(None, {self.input_name: pixels})
        except Exception as err:  # noqa: BLE001  (onnxruntime's errors: InvalidArgument, Fail, ...)
            raise ExportFolderError(
                f"{model}: onnxruntime failed on input {tuple(pixels.shape)} ({_reason(err)}); expected (batch, "
                f"{self.spec['channels']}, {self.spec['size']}, {self.spec['size']}) as config.json's {EXPORT_KEY} says"
            ) from None
        if logits.ndim != 2 or logits.shape[1] != len(self.label_names):
            raise ExportFolderError(
                f"{model}: gives outputs of shape {tuple(logits.shape)}, but config.json's {EXPORT_KEY} names "
                f"{len(self.label_names)} labels; expected (batch, {len(self.label_names)})"
            )
        return logits

    def classify(self, faces: Sequence[np.ndarray], hflip: bool = False) -> np.ndarray:
        """Gray faces -> (N, K) probabilities (averaged with the mirror image when `hflip`)."""
        if not len(faces):
            return np.zeros((0, len(self.label_names)), np.float32)
        pixels = self.preprocess(faces)
        probs = softmax(self.logits(pixels))
        return (probs + softmax(self.logits(pixels[..., ::-1].copy()))) / 2 if hflip else probs


def session_options(threads: int | None = None):
    """onnxruntime.SessionOptions for every session here (the exports, YuNet): `threads` intra-op threads (None:
    `fer_hf.devices.onnxruntime_threads`; 0: onnxruntime's default), never spinning.

    Why not spin: by default idle threads spin after a run, taking the cores from whatever runs next (the face
    detector, the classifier, another request). Spinning within a run only (`session.force_spinning_stop`) made
    YuNet alone faster idle on 2 cores (4.7-5.0 ms against 5.6-7.7 ms a 640x480 photo) and the whole photo too (11.1
    against 14.3 ms), but beside a busy process the photo went from 18-21 to 32-40 ms (`python -m fer_hf.bench
    predict --backends-only`, two runs each, 2026-12-07)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = onnxruntime_threads() if threads is None else threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def session_providers(device: str = "cpu") -> list:
    """onnxruntime's providers for a resolved device: CUDA first (the CPU after it, for the operators CUDA lacks)
    when the device is a CUDA GPU and this onnxruntime build has the CUDA provider; the CPU otherwise."""
    if str(device).startswith("cuda") and has_cuda_provider():
        index = str(device).partition(":")[2]
        return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def has_cuda_provider() -> bool:
    """onnxruntime is installed with its CUDA provider (the onnxruntime-gpu package)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


SPEC_KEYS = {  # key of the config block -> what it must hold, in words (the error says it)
    "size": "a positive integer (the input side in pixels)",
    "channels": "1 or 3",
    "mean": "a list of 1 or `channels` numbers",
    "std": "a list of 1 or `channels` positive numbers",
    "labels": "a list of class names",
}


def _reason(err: BaseException) -> str:
    """onnxruntime's message in one short line, without its '[ONNXRuntimeError] : 7 : INVALID_PROTOBUF :' prefix."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text.rsplit(" : ", 1)[-1][:200]


def check_export_files(folder: Path) -> None:
    """The two files of an export, each named when it is missing or not this package's."""
    if not folder.is_dir():
        raise ExportFolderError(f"{folder}: no such folder; expected a fer_hf.export output folder")
    missing = [name for name in (ONNX_FILE, "config.json") if not (folder / name).is_file()]
    if missing:
        raise ExportFolderError(
            f"{folder}: no {' and no '.join(missing)}; expected a fer_hf.export folder (model.onnx + config.json)"
        )
    if not is_export(folder):
        raise ExportFolderError(
            f"{folder / 'config.json'}: has no {EXPORT_KEY!r} block; expected the config.json that "
            "python -m fer_hf.export writes beside model.onnx (an ONNX model from elsewhere is not supported)"
        )


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_spec(config_file: Path) -> dict:
    """config.json's export block with each key checked: size, channels, mean, std, labels."""
    spec = json.loads(config_file.read_text()).get(EXPORT_KEY)
    where = f"{config_file}: {EXPORT_KEY}"
    if not isinstance(spec, dict):
        raise ExportFolderError(f"{where} is {type(spec).__name__}, expected an object with {sorted(SPEC_KEYS)}")
    missing = [key for key in SPEC_KEYS if key not in spec]
    if missing:
        raise ExportFolderError(
            f"{where} has no {missing}; expected {', '.join(f'{k}: {SPEC_KEYS[k]}' for k in missing)}"
        )
    size, channels, labels = spec["size"], spec["channels"], spec["labels"]
    problems = {
        "size": not isinstance(size, int) or isinstance(size, bool) or size < 1,
        "channels": channels not in (1, 3) or isinstance(channels, bool),
        "labels": not isinstance(labels, list) or not labels or not all(isinstance(n, str) for n in labels),
    }
    for key in ("mean", "std"):
        values = spec[key]
        problems[key] = (
            not isinstance(values, list)
            or len(values) not in (1, channels)
            or not all(_is_number(v) and (key == "mean" or v > 0) for v in values)
        )
    for key, bad in problems.items():
        if bad:
            raise ExportFolderError(f"{where}.{key} is {spec[key]!r}; expected {SPEC_KEYS[key]}")
    return spec


def check_graph(model: Path, session, spec: dict) -> str:
    """The graph takes one (batch, C, S, S) float input and gives (batch, K) outputs, as the config block says;
    returns the input's name. Dimensions the graph leaves symbolic (the batch) are not compared."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    size, channels, labels = int(spec["size"]), int(spec["channels"]), len(spec["labels"])
    expected = f"one float input (batch, {channels}, {size}, {size}) and one output (batch, {labels})"
    if len(inputs) != 1 or not outputs:
        raise ExportFolderError(
            f"{model}: has {len(inputs)} input(s) and {len(outputs)} output(s); expected {expected} as config.json's "
            f"{EXPORT_KEY} says (is it an export of this package?)"
        )
    shape, out_shape = list(inputs[0].shape), list(outputs[0].shape)
    wanted = [None, channels, size, size]  # None: the batch, any size
    fixed = len(shape) == 4 and all(
        not isinstance(got, int) or want in (None, got) for got, want in zip(shape, wanted, strict=True)
    )
    if not fixed or inputs[0].type != "tensor(float)":
        raise ExportFolderError(
            f"{model}: takes {inputs[0].name} {inputs[0].type} of shape {_shape(shape)}; expected {expected} as "
            f"config.json's {EXPORT_KEY} says (size {size}, channels {channels})"
        )
    if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != labels):
        raise ExportFolderError(
            f"{model}: gives {outputs[0].name} of shape {_shape(out_shape)}, but config.json's {EXPORT_KEY} names "
            f"{labels} labels {spec['labels']}; expected (batch, {labels})"
        )
    return inputs[0].name


def _shape(dims: list) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) else str(d or "?") for d in dims) + ")"


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
