"""Writing ONNX exports: torch.onnx, optional int8 quantisation, a parity check against the torch model on real faces,
and the folder written in one rename (`python -m fer_hf.export`), or into the backend's cache on first use."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fer_hf.data.dataset import load_split
from fer_hf.data.decode import FerTensorDataset
from fer_hf.evaluation.inputs import eval_transform_for
from fer_hf.evaluation.tta import predict_logits
from fer_hf.exports.runtime import EXPORT_KEY, ONNX_FILE, OnnxClassifier, is_export
from fer_hf.inference.fingerprint import export_fingerprint, model_fingerprint
from fer_hf.logs import get_logger
from fer_hf.models.inputs import input_spec

logger = get_logger(__name__)

if TYPE_CHECKING:
    from fer_hf.models.loading import LoadedModel

MIN_AGREEMENT = 0.999  # fp32: share of faces on which ONNX and torch must predict the same class
MAX_INT8_DROP = 0.005  # int8: accuracy points it may lose (0.5) and still be recommended
# torch's exporter writes opset 18 and converts the graph to the opset asked for; below 17 its converter fails and it
# silently keeps 18 (measured with torch 2.14: 5, 7 and 13 gave 18, 17 gave 17). Above, onnx's newest opset.
MIN_OPSET = 17


@dataclass
class ExportOptions:
    """What `python -m fer_hf.export` asks for, as the library takes it."""

    model: str  # a bundled name, a model or run folder, or a Hub id
    output: str  # the export folder (refused when it exists, unless overwrite)
    int8: bool = False  # static int8 quantisation, calibrated on Training faces of check_data
    opset: int = 18
    check_data: str | None = None  # a FER2013 source: parity on its split's real faces and their accuracies
    split: str | None = None
    overwrite: bool = False
    trust_remote_code: bool = False


class ExportError(ValueError):
    """A model that cannot be exported; the message says why."""


class ParityError(ExportError):
    """An export whose predictions differ from the torch model's: nothing was written, and the command exits 1."""

    exit_code = 1


@dataclass
class Parity:
    max_logit_diff: float  # on the bundled real faces
    faces: int  # how many
    data: str | None = None  # --check-data source
    split: str | None = None
    torch_accuracy: float | None = None
    onnx_accuracy: float | None = None
    agreement: float | None = None  # share of faces with the same predicted class


class LogitsOnly(torch.nn.Module):
    """model(pixel_values=x).logits as a plain (B, C, S, S) -> (B, K) graph for the exporter."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def export_onnx(loaded: LoadedModel, path: Path, opset: int) -> None:
    """torch.onnx.export (the torch.export-based exporter) with a dynamic batch axis."""
    spec = input_spec(loaded.model.config, loaded.image_processor)
    example = torch.zeros(2, spec["channels"], spec["size"], spec["size"])
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the exporter prints its progress: keep stdout for results
            torch.onnx.export(
                LogitsOnly(loaded.model).eval(), (example,), str(path), input_names=["pixel_values"],
                output_names=["logits"], dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True,
                external_data=False,
            )  # fmt: skip
    except ImportError:  # onnx or onnxscript missing: an install to fix, not a model the exporter refuses
        raise
    except Exception as err:  # noqa: BLE001  (the exporter raises many types; the user needs one line)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        reason = re.sub(r"\x1b\[[0-9;]*m", "", reason)  # torch colours its messages for a terminal
        raise ExportError(f"{loaded.source}: cannot be exported to ONNX ({type(err).__name__}: {reason})") from err
    written = written_opset(path)
    if written != opset:  # the exporter falls back to its own opset when it cannot convert: say so, write nothing
        raise ExportError(
            f"--opset {opset}: torch's exporter wrote opset {written} instead (it cannot convert this model's graph "
            f"to {opset}); choose an opset from {MIN_OPSET} to {max_opset()}, e.g. the default 18; nothing was written"
        )


def written_opset(path: Path) -> int:
    """The default-domain opset a model file declares (what onnxruntime will run it as)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), -1)


def max_opset() -> int:
    import onnx

    return int(onnx.defs.onnx_opset_version())


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray) -> None:
    """Static int8 quantisation (QDQ, per-channel weights) calibrated on `calibration` (N, C, S, S) float32."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"pixel_values": calibration[i : i + 32]} for i in range(0, len(calibration), 32)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(
        str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip


def faces_of(source: str, split: str | None) -> tuple[str, FerTensorDataset]:
    name, ds = load_split(source, split)
    return name, FerTensorDataset.from_split(ds, desc=f"decode {name}")


def torch_and_onnx_logits(loaded: LoadedModel, onnx: OnnxClassifier, faces: FerTensorDataset) -> tuple:
    """Both models on the same prepared faces -> (torch logits, onnx logits), each (N, K)."""

    pixels = eval_transform_for(loaded)(faces.images)  # (N, C, S, S)
    return predict_logits(loaded.model, pixels).numpy(), onnx.logits(pixels.numpy().astype(np.float32))


def check_parity(loaded: LoadedModel, folder: Path, data: str | None, split: str | None) -> Parity:
    onnx = OnnxClassifier(folder)
    _, sample = faces_of("bundled", "validation")
    reference, exported = torch_and_onnx_logits(loaded, onnx, sample)
    parity = Parity(max_logit_diff=float(np.abs(reference - exported).max()), faces=len(sample))
    if data:
        parity.data = data
        parity.split, faces = faces_of(data, split)
        reference, exported = torch_and_onnx_logits(loaded, onnx, faces)
        labels = faces.labels.numpy()
        parity.torch_accuracy = float((reference.argmax(1) == labels).mean())
        parity.onnx_accuracy = float((exported.argmax(1) == labels).mean())
        parity.agreement = float((reference.argmax(1) == exported.argmax(1)).mean())
    return parity


def verdict(parity: Parity, int8: bool) -> tuple[bool, str]:
    """(recommended, one sentence). fp32 below MIN_AGREEMENT is refused by the caller."""
    if parity.agreement is None:
        return True, f"largest logit difference {parity.max_logit_diff:.2e} on {parity.faces} real faces"
    drop = parity.torch_accuracy - parity.onnx_accuracy
    text = (
        f"{parity.split} accuracy torch {parity.torch_accuracy:.4f}, onnx {parity.onnx_accuracy:.4f}; same prediction "
        f"on {parity.agreement:.2%} of the faces; largest logit difference {parity.max_logit_diff:.2e} on "
        f"{parity.faces} real faces"
    )
    if int8 and drop > MAX_INT8_DROP:
        return False, f"{text}. int8 loses {100 * drop:.2f} points: not recommended for this model"
    return True, text


def write_folder(loaded: LoadedModel, folder: Path, options: ExportOptions, parity: Parity, note: str) -> None:
    """config.json (+ the fer_hf_onnx block), preprocessor_config.json and README.md beside model.onnx."""
    loaded.model.config.save_pretrained(folder)
    loaded.image_processor.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config[EXPORT_KEY] = {
        **input_spec(loaded.model.config, loaded.image_processor),
        "labels": loaded.label_names,  # config formats differ (id2label, timm's label_names): the runtime reads this
        "opset": options.opset,
        "int8": options.int8,
        "exported_from": str(options.model),
        "parity": asdict(parity),
        "fingerprint": model_fingerprint(loaded),  # which weights: `fer_hf.loading.find_export` compares it
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    kind = "int8 (static, QDQ, per channel, calibrated on 512 Training faces)" if options.int8 else "fp32"
    (folder / "README.md").write_text(
        f"# ONNX export of `{options.model}`\n\n"
        f"`model.onnx`: {kind}, opset {options.opset}, input `pixel_values` (batch, {config[EXPORT_KEY]['channels']}, "
        f"{config[EXPORT_KEY]['size']}, {config[EXPORT_KEY]['size']}), output `logits` (batch, "
        f"{len(loaded.label_names)}); labels and preprocessing in `config.json` (`{EXPORT_KEY}`).\n\n"
        f"Parity with the torch model, checked by `python -m fer_hf.export` after exporting: {note}.\n\n"
        "Run it without torch: `python -m fer_hf.runtime <this folder> photo.jpg`, or pass this folder as "
        "`--model` to `fer_hf.predict` / `fer_hf.evaluate` and as a model of the app.\n"
    )


def calibration_faces(loaded: LoadedModel, data: str | None, count: int = 512) -> np.ndarray:
    """Training faces (a seeded sample) prepared like evaluation: int8's calibration set, never the checked split."""
    _, faces = faces_of(data or "bundled", "train")
    rows = torch.from_numpy(np.random.default_rng(0).permutation(len(faces.images))[:count])
    return eval_transform_for(loaded)(faces.images[rows]).numpy().astype(np.float32)


def write_export(loaded: LoadedModel, folder: Path, options: ExportOptions) -> tuple[Parity, bool, str]:
    """Export `loaded` into the empty `folder` (+ int8), check its parity, write its config and README."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / "fp32.onnx"
        export_onnx(loaded, fp32, options.opset)
        if options.int8:
            quantize_int8(fp32, folder / ONNX_FILE, calibration_faces(loaded, options.check_data))
        else:
            fp32.replace(folder / ONNX_FILE)
    write_folder(loaded, folder, options, Parity(0.0, 0), "not checked yet")  # OnnxClassifier reads config.json
    parity = check_parity(loaded, folder, options.check_data, options.split)
    if not options.int8 and parity.agreement is not None and parity.agreement < MIN_AGREEMENT:
        raise ParityError(
            f"parity check failed: onnx and torch predict the same class on {parity.agreement:.2%} of the "
            f"{parity.split} faces (at least {MIN_AGREEMENT:.1%} needed); nothing was written"
        )
    recommended, note = verdict(parity, options.int8)
    write_folder(loaded, folder, options, parity, note)
    print(f"exported in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return parity, recommended, note


# Exported once on first use, then cached. fp32 exports agree with torch to ~1e-5 (3.3e-06 measured for the default
# model): far above that is a wrong graph.
MAX_CACHED_LOGIT_DIFF = 1e-3


STALE_PARTIAL_S = 3600  # a .partial folder this old belongs to a process that died exporting


# The exporter's loggers: an application that logs at INFO (the app) would print ~60 lines of graph passes per model.
EXPORTER_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx")


@contextlib.contextmanager
def _quiet(names: tuple[str, ...]):
    """These loggers at WARNING for the block; their own levels after it."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def cached_export(loaded: LoadedModel, fingerprint: str, root: Path) -> Path:
    """Export `loaded` (fp32) into root/<fingerprint[:32]> and return that folder.

    The export is written into a private `.partial` folder and renamed into place only after its parity check
    passed, so a folder under the final name is always complete; concurrent processes each write their own and the
    first rename wins (the others discard theirs). A model the exporter refuses, or whose export disagrees with
    torch, is remembered (`<key>.refused-torch<version>`) so later runs fall back at once instead of retrying."""
    key = fingerprint[:32]
    final = root / key
    refused = root / f"{key}.refused-torch{torch.__version__}"
    if refused.is_file():
        raise ExportError(refused.read_text().strip())
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".partial", dir=root))
    print(f"{loaded.source}: exporting to ONNX once for onnxruntime (kept in {final})", file=sys.stderr)
    try:
        options = ExportOptions(str(loaded.source), str(final))
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings(), _quiet(EXPORTER_LOGGERS):
            warnings.simplefilter("ignore")  # the exporter's progress and warnings: the line above says it all
            parity, _, _ = write_export(loaded, tmp, options)
        if not parity.max_logit_diff <= MAX_CACHED_LOGIT_DIFF:
            raise ExportError(
                f"parity check failed: its logits differ from torch's by up to {parity.max_logit_diff:.2e} on "
                f"{parity.faces} real faces (at most {MAX_CACHED_LOGIT_DIFF:.0e} expected)"
            )
    except ExportError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        _write_atomically(refused, str(err))
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache's export from other users
    for _ in range(2):
        try:
            os.rename(tmp, final)  # atomic; fails when a non-empty folder is there (another process's export)
            return final
        except OSError:
            if is_export(final) and export_fingerprint(final) == fingerprint:  # another process won: use its copy
                shutil.rmtree(tmp, ignore_errors=True)
                return final
            # Something else under the name (a folder left by hand, an interrupted copy): set it aside, then retry.
            aside = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".partial", dir=root))
            with contextlib.suppress(OSError):
                os.rename(final, aside / key)
    shutil.rmtree(tmp, ignore_errors=True)
    raise ExportError(f"{final}: another folder is in the way of the exported model and could not be moved aside")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def _remove_stale_partials(root: Path) -> None:
    now = time.time()
    for partial in root.glob(".*.partial"):
        with contextlib.suppress(OSError):
            if now - partial.stat().st_mtime > STALE_PARTIAL_S:
                shutil.rmtree(partial) if partial.is_dir() else partial.unlink()
