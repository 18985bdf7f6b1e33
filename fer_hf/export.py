"""Export a model to ONNX, check it against torch, and optionally quantise it to int8.

    python -m fer_hf.export default --output exports/default --check-data ../shared/fer2013
    python -m fer_hf.export lite0 --output exports/lite0-int8 --int8 --check-data ../shared/fer2013

MODEL is anything fer_hf loads (the bundled `default`/`lite0`, a run folder, a saved or Hub model folder). The folder
written holds `model.onnx` (a dynamic batch axis; input `pixel_values` (B, C, S, S) exactly as `fer_hf.evaluate`
prepares faces), the model's `config.json` with a `fer_hf_onnx` block (input size, channels, mean, std, the parity
numbers), its `preprocessor_config.json`, and a README stating the parity. `predict`, `evaluate`, the app and the
torch-free `python -m fer_hf.runtime` take that folder as MODEL.

Parity, checked after every export: the largest absolute logit difference against torch on real FER2013 faces
(the package's bundled sample), and with `--check-data` the accuracy of both on that source's validation split
(PublicTest for FER2013) and how often they predict the same class. fp32 must agree on at least 99.9% of the faces,
or nothing is written. int8 (static quantisation, QDQ, per channel, calibrated on Training faces) is written
either way; when it loses more than 0.5 point of accuracy the command and the README say it is not recommended.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fer_hf.exports.runtime import ONNX_FILE, is_export
from fer_hf.inference.exporting import MIN_OPSET, ExportError, ExportOptions, Parity, max_opset, write_export
from fer_hf.models.loading import MODEL_HELP, load_classifier, onnx_only, resolve_model_path
from fer_hf.outputs import atomic_output_dir, check_apart


def opset_arg(text: str) -> int:
    """argparse type of --opset: an opset torch's exporter can write, else a sentence saying which it can."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not MIN_OPSET <= value <= max_opset():
        raise argparse.ArgumentTypeError(
            f"{text!r}: torch's exporter writes opsets {MIN_OPSET} to {max_opset()} (older ones fall back to 18)"
        )
    return value


def export(options: ExportOptions) -> tuple[Path, Parity, bool, str]:
    """The command as a function: refuse what cannot be exported, load the torch model, write its export (parity
    checked, `fer_hf.inference.exporting`) in one rename. Nothing is written when it fails."""
    out = Path(options.output)
    source = resolve_model_path(options.model)
    check_apart(out, source, options.check_data)
    if is_export(source) or onnx_only(source):
        raise ExportError(
            f"{options.model}: already an ONNX model ({Path(source) / ONNX_FILE}); export the torch model it came from "
            "(a run or model folder with model.safetensors) instead"
        )
    loaded = load_classifier(options.model, trust_remote_code=options.trust_remote_code)
    with atomic_output_dir(out, options.overwrite) as tmp:
        parity, recommended, note = write_export(loaded, tmp, options)
    return out, parity, recommended, note


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fer_hf.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("--output", required=True, help="folder to write (refused when it exists, unless --overwrite)")
    parser.add_argument("--int8", action="store_true", help="static int8 quantisation calibrated on Training faces")
    parser.add_argument(
        "--opset", type=opset_arg, default=18, help=f"ONNX opset, {MIN_OPSET} to onnx's newest (default 18)"
    )
    parser.add_argument("--check-data", metavar="SOURCE", help="FER2013 source: compare accuracies on its validation")
    parser.add_argument("--split", default=None, help="split of --check-data (default: validation)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a Hub model's own code to run")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out, _, recommended, note = export(
        ExportOptions(**vars(args))
    )  # a failed parity check ends with exit code 1 (ExportError.exit_code)
    print(f"{out}/{ONNX_FILE}: {note}{'' if recommended else ' (int8 NOT recommended)'}")
    return 0


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))
