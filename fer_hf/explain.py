"""Why did the model say that? Saliency, Grad-CAM, attention rollout, activation maps and first-layer filters.

    python -m fer_hf.explain --model runs/cnn photo.jpg --method gradcam --output explain/
    python -m fer_hf.explain --model runs/vit face.png --cropped --method saliency attention --output explain/

The face is found and cropped exactly as `fer_hf.predict` does, then preprocessed by the model's own image
processor. Heat maps are drawn over the face as PNGs of `size` x `size` pixels (matplotlib colour maps); activation
maps and filters as grids of `tile`-pixel tiles.

Which method works for which family:
    saliency     any model (gradient of the class score w.r.t. the input pixels)
    gradcam      convolutional models: CNN (last conv block), ResNet (last stage), others by their last
                 (B, C, h, w) feature map
    attention    ViT-like models that return attentions (attention rollout, Abnar & Zuidema 2020)
    activations  CNN blocks / ResNet stages
    filters      the first Conv2d of the model (CNN, ResNet stem, ViT patch embedding)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fer_hf.inference.explanations import (
    METHODS,
    ExplainError,
    _backend_for,
    _target_index,
    explain,
    face_input,
    refuse_export,
)
from fer_hf.inference.faces import DetectorError, add_detector_args, detector_config
from fer_hf.inference.predictor import Predictor
from fer_hf.models.loading import DEFAULT_MODEL, MODEL_HELP


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fer_hf.explain", description=__doc__.split("\n\n")[0])
    parser.add_argument("image", metavar="IMAGE", help="a photo (the largest face is explained) or a face crop")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    parser.add_argument(
        "--method",
        nargs="+",
        default=["saliency"],
        choices=[*METHODS, "all"],
        help="one or more methods; 'all' runs every method this model supports",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the PNGs")
    parser.add_argument("--target", help="class to explain (default: the predicted class)")
    parser.add_argument("--cropped", action="store_true", help="IMAGE is already a face crop: no detection")
    parser.add_argument("--size", type=int, default=240, help="side of the overlay PNGs in pixels")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow custom code from a Hub model")
    add_detector_args(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Every method asked for; a method that does not apply to this model is a `skipped:` line (exit 1 when one the
    user named is skipped), and a run where nothing can be explained (no usable image, no face, an unknown
    --target, an ONNX export, no method that applies) ends through `fer_hf.cli.run`: one `error:` line, exit 2."""
    args = parse_args(argv)
    try:
        detector = detector_config(args)
    except DetectorError as err:
        raise DetectorError(f"face detector: {err}") from None
    try:
        predictor = Predictor(args.model, detector=detector, trust_remote_code=args.trust_remote_code,
                              backend=_backend_for(args.model))  # fmt: skip
    except (OSError, ValueError) as err:
        raise ExplainError(f"could not load --model {args.model}: {err}") from None
    refuse_export(predictor.loaded, args.model)
    crop_mode = "cropped" if args.cropped or args.detector == "none" else "auto"
    _, pixels = face_input(predictor, args.image, crop_mode)  # the image and the face, once for every method
    _target_index(predictor.loaded.model, pixels, args.target)
    methods = list(METHODS) if "all" in args.method else args.method
    skipped: list[str] = []
    for method in methods:
        try:
            result = explain(
                predictor, args.image, method, args.output, target=args.target, crop_mode=crop_mode, size=args.size
            )
        except ExplainError as err:
            skipped.append(f"{method}: {err}")
            continue
        files = ", ".join(str(f) for f in result.files)
        print(f"{method}: {result.label} ({result.probabilities[result.label]:.2f}) -> {files}")
    if len(skipped) == len(methods):
        raise ExplainError("; ".join(skipped) if len(skipped) == 1 else "no method applies: " + "; ".join(skipped))
    for line in skipped:
        print(line.replace(": ", ": skipped: ", 1), file=sys.stderr)
    return 0 if "all" in args.method or not skipped else 1


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))
