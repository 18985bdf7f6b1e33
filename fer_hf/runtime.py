"""The light inference runtime: faces found by `fer_hf.inference.faces`, classified by an exported ONNX model through
onnxruntime. Imports neither torch nor transformers (numpy, OpenCV, Pillow and onnxruntime only), so it runs
where only `pip install fer_hf`'s light dependencies are present.

    python -m fer_hf.runtime photo.jpg [more photos]                 # the bundled default model's shipped export
    python -m fer_hf.runtime lite0 photo.jpg                         # another bundled model's shipped export
    python -m fer_hf.runtime EXPORT_DIR photo.jpg [more photos]      # EXPORT_DIR from `python -m fer_hf.export`

`OnnxClassifier(folder)` reads the `fer_hf_onnx` block that export wrote into the folder's config.json (labels,
input size, channels, mean, std) and prepares each 48x48 gray face the way `fer_hf.evaluate` does: a bilinear
resize to the input size (half-pixel centres, as torch's align_corners=False), /255, (x - mean) / std.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from fer_hf.exports.runtime import DEFAULT_EXPORT, ExportFolderError, OnnxClassifier, resolve_export


def split_model_arg(argv: Sequence[str]) -> tuple[str, list[str]]:
    """(model, photos): the first argument is the model when it is a folder, or a name before more arguments that is
    no file; otherwise every argument is a photo, classified by the shipped default export."""
    first = Path(argv[0])
    if first.is_dir() or (len(argv) > 1 and not first.is_file()):
        return argv[0], list(argv[1:])
    return DEFAULT_EXPORT, list(argv)


def predict_photo(classifier: OnnxClassifier, path: str | Path, detector=None) -> list[dict]:
    """Every face of a photo: number (1 = largest), box, detector score, label and probabilities."""
    from fer_hf.inference.faces import FaceDetector, load_image

    detector = detector or FaceDetector()
    rgb, scale = load_image(path, detector.config)
    faces = detector.faces(rgb)
    probs = classifier.classify([face.crop for face in faces])
    return [
        {
            "face": i,
            "box": [int(round(v / scale)) for v in face.box],
            "detector_score": face.score,
            "label": classifier.label_names[int(p.argmax())],
            "probabilities": {n: round(float(v), 5) for n, v in zip(classifier.label_names, p, strict=True)},
        }
        for i, (face, p) in enumerate(zip(faces, probs, strict=True), 1)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[1].strip())
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    model, photos = split_model_arg(argv)
    if not photos:  # a model and no photo
        print(__doc__.split("\n\n")[1].strip())
        return 2
    classifier = OnnxClassifier(resolve_export(model))  # ExportFolderError: cli.run prints its sentence
    failed = 0
    for path in photos:
        try:
            faces = predict_photo(classifier, path)
        except ExportFolderError:  # the model, not this photo: every photo would fail the same way
            raise
        except ValueError as err:  # ImageLoadError: not an image
            print(f"{path}: ERROR {err}")
            failed += 1
            continue
        found = "; ".join(f"{f['face']}: {f['label']} {max(f['probabilities'].values()):.2f} at {tuple(f['box'])}"
                          for f in faces)  # fmt: skip
        print(f"{path}: {len(faces)} face(s): {found}" if faces else f"{path}: no face found")
    return 1 if failed else 0


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))
