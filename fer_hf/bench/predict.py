"""End-to-end prediction speed on CPU: read a 640x480 photo with one face, detect, crop, classify.

    python -m fer_hf.bench predict [--families cnn vit resnet] [--size tiny|base] [--threads 2]
    python -m fer_hf.bench predict --backends-only          # torch beside the ONNX exports, idle and contended

Per family (through torch): the median latency of one photo through `Predictor.predict_images` (JPEG decode +
YuNet detection + aligned crop + image processor + forward), and the throughput when many photos go through in
batches. The CNN is the bundled default model, timed with YuNet and with the Haar cascades in the same run; vit/resnet
are stock transformers models with random weights (speed does not depend on their values) at `--size base`
(ViT-B/16, ResNet-50) or tiny ones. Unless `--no-ensemble`, the bundled ensemble is timed beside the default (ratios
to the default).

Unless `--no-onnx`, the default model runs through each backend: torch with one thread per usable core (torch's own
default), torch with the fitted thread count (`fer_hf.devices.inference_threads`), the fp32 export that `--backend
auto` uses (shipped, or exported once into the cache), the same with YuNet run by OpenCV instead of onnxruntime
(`DetectorConfig.yunet_engine`) and, unless `--no-int8`, an int8 export. Each is timed on the photo end to end (median
and 90th percentile) and for faces/s (its classifier alone, 256 real FER2013 faces in one batch), idle and then beside
a competing process busy-looping on one core (stopped at the end), each with its ratio to torch's first row of the
same condition. The last line checks the default path against issue #37's targets: a photo in <= 15 ms idle and <= 25
ms beside the busy process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from fer_hf.bench import at_least
from fer_hf.devices import THREADS_ENV
from fer_hf.inference.faces import DetectorConfig
from fer_hf.inference.predictor import Predictor
from fer_hf.labels import FER_LABELS
from fer_hf.models.loading import BUNDLED_MODELS, DEFAULT_MODEL, LoadedModel, is_installed, load_classifier

FAMILIES = ("cnn", "vit", "resnet")


def demo_photo() -> np.ndarray:
    """skimage's astronaut (512x512, one frontal face) scaled to 640 wide and cropped to 640x480 -> (480, 640, 3)."""
    from skimage.data import astronaut

    return cv2.resize(astronaut(), (640, 640), interpolation=cv2.INTER_AREA)[:480]


def _labels() -> dict:
    return {"id2label": dict(enumerate(FER_LABELS)), "label2id": {n: i for i, n in enumerate(FER_LABELS)}}


def random_model(family: str, size: str = "tiny") -> LoadedModel:
    """The bundled default model (cnn), or a randomly initialised vit/resnet with the image processor it would be
    saved with."""
    if family == "cnn":
        return load_classifier(DEFAULT_MODEL)
    if family == "vit":
        from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

        tiny = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
        model = ViTForImageClassification(ViTConfig(**(tiny if size == "tiny" else {}), **_labels()))
        processor = ViTImageProcessor(size={"height": 224, "width": 224})
    elif family == "resnet":
        from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

        tiny = {"embedding_size": 16, "hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1], "layer_type": "basic"}
        model = ResNetForImageClassification(ResNetConfig(**(tiny if size == "tiny" else {}), **_labels()))
        processor = ConvNextImageProcessor(size={"shortest_edge": 224})
    else:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    return LoadedModel(model=model.eval(), image_processor=processor, source=f"random {size} {family}")


def end_to_end_ms(predictor: Predictor, photo: Path, repeats: int) -> tuple[float, float, float]:
    """Median (wall, CPU) milliseconds of one photo through the whole pipeline after two warm-up calls, and the
    wall time's 90th percentile. CPU time (this process, all threads) is the fairer figure on a machine shared with
    other jobs."""
    wall, cpu = [], []
    for i in range(repeats + 2):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = predictor.predict_images([photo], crop_mode="detect")[0]
        if i >= 2:
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    if len(result.faces) != 1:
        raise RuntimeError(f"expected one face in the benchmark photo, found {len(result.faces)}")
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu), 1000 * float(np.percentile(wall, 90))


def batched_images_per_s(predictor: Predictor, photo: Path, count: int) -> float:
    """Photos per second (wall) when `count` copies go through predict_images together (one forward batch)."""
    start = time.perf_counter()
    predictor.predict_images([photo] * count, crop_mode="detect")
    return count / (time.perf_counter() - start)


def classifier_speed(classify, faces: list[np.ndarray], repeats: int) -> tuple[float, float]:
    """(median ms for one face, faces per second in one batch of all `faces`) of `classify(list of faces)`."""
    for _ in range(3):
        classify(faces[:1])
    single = []
    for i in range(repeats):
        start = time.perf_counter()
        classify(faces[i % len(faces) : i % len(faces) + 1])
        single.append(time.perf_counter() - start)
    start = time.perf_counter()
    classify(faces)
    return 1000 * statistics.median(single), len(faces) / (time.perf_counter() - start)


def real_faces(count: int = 256) -> list[np.ndarray]:
    """`count` real FER2013 faces (48x48 uint8): the bundled sample's validation faces, repeated (speed only)."""
    from fer_hf.data.dataset import load_fer_dataset
    from fer_hf.data.decode import FerTensorDataset

    images = FerTensorDataset.from_split(load_fer_dataset("bundled")["validation"], desc="decode").images.numpy()
    return [images[i % len(images)] for i in range(count)]


def ensemble_rows(photo: Path, repeats: int) -> None:
    """The bundled ensemble beside the default model: the photo end to end (YuNet) and the classifier alone per face
    and in batches of 256 real faces, each with its ratio to the default's."""
    if not is_installed(BUNDLED_MODELS["ensemble"]):
        print("  ensemble: not bundled in this install, skipped")
        return
    faces, rows = real_faces(), {}
    for name in (DEFAULT_MODEL, "ensemble"):
        predictor = Predictor(name, batch_size=256, backend="torch")  # like for like: torch, as the families
        rows[name] = (
            end_to_end_ms(predictor, photo, repeats)[0],
            *classifier_speed(predictor.classify, faces, repeats),
        )
    base_wall, base_ms, base_rate = rows[DEFAULT_MODEL]
    for name, (wall, ms, rate) in rows.items():
        print(
            f"  {name:8s}: end-to-end {wall:6.1f} ms/image (ratio {wall / base_wall:.2f}), classifier {ms:6.2f} "
            f"ms/face (ratio {ms / base_ms:.2f}), batched {rate:6.0f} faces/s (ratio {rate / base_rate:.2f})"
        )


# ---------------------------------------------------------------- backends, idle and beside a busy process
PHOTO_TARGET_MS = {"idle": 15.0, "busy": 25.0}  # issue #37: the default path's photo, end to end, on these CPUs
BUSY_LOOP = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


class BusyProcess:
    """A competing process busy-looping on one core for at most `seconds` (it ends by itself should the bench die),
    stopped when the `with` block ends."""

    def __init__(self, seconds: float = 900):
        self.seconds, self.proc = seconds, None

    def __enter__(self) -> BusyProcess:
        self.proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP.format(seconds=self.seconds)])
        time.sleep(0.5)  # let it take its core before anything is timed
        return self

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait()


def backend_rows(photo: Path, repeats: int, int8: bool) -> dict:
    """The default model through torch (torch's own thread count, then the fitted one) and its exports (fp32: what
    `--backend auto` runs; int8 when asked): the photo end to end with YuNet and the classifier's faces/s in
    batches of 256 real faces, idle and beside a busy process, each with its ratio to torch's row measured just
    before it. Returns {(condition, row): (photo ms, faces/s)}."""
    from fer_hf.devices import inference_threads, usable_cores
    from fer_hf.export import export
    from fer_hf.inference.exporting import ExportOptions

    faces, cores = real_faces(), usable_cores()
    torch_side = Predictor(DEFAULT_MODEL, batch_size=256, backend="torch")
    auto = Predictor(DEFAULT_MODEL, batch_size=256)  # the default path: the shipped or cached export (made once)
    rows = {
        f"torch {cores} thread(s)": (torch_side, cores),  # torch's default (one per core): the old path
        f"torch {inference_threads()} thread(s)": (torch_side, inference_threads()),  # fitted, as predict runs it
        f"{auto.backend} fp32 (auto)": (auto, None),
    }
    if auto.detector.yunet_engine == "onnxruntime":  # the same path with YuNet through OpenCV: what it replaced
        opencv = Predictor(DEFAULT_MODEL, batch_size=256, detector=DetectorConfig(yunet_engine="opencv"))
        rows[f"{auto.backend} fp32, OpenCV YuNet"] = (opencv, None)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        if int8:
            with contextlib.redirect_stdout(sys.stderr):
                export(ExportOptions(DEFAULT_MODEL, f"{tmp}/int8", int8=True))
            rows["onnx int8"] = (Predictor(f"{tmp}/int8", batch_size=256), None)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"backends: default model; photo = 640x480 end to end with YuNet, faces/s = classifier alone on 256 "
              f"real faces in one batch; {cores} usable core(s), load average {load:.1f} before the bench's own "
              "competitor (above 0: the machine is shared, 'idle' means without it)")  # fmt: skip
        for condition in ("idle", "busy"):
            with BusyProcess() if condition == "busy" else contextlib.nullcontext():
                for name, (predictor, threads) in rows.items():
                    torch.set_num_threads(threads or inference_threads())
                    wall, _, p90 = end_to_end_ms(predictor, photo, repeats)
                    _, rate = classifier_speed(predictor.classify, faces, repeats)
                    figures[condition, name] = (wall, rate)
                    base_wall, base_rate = figures[condition, next(iter(rows))]
                    where = "idle" if condition == "idle" else "beside a busy process"
                    print(
                        f"  {where:21s} {name:26s}: photo {wall:6.1f} ms (p90 {p90:5.1f}, ratio {wall / base_wall:4.2f}), "
                        f"{rate:7.0f} faces/s (ratio {rate / base_rate:5.2f})"
                    )
    torch.set_num_threads(inference_threads())
    default = f"{auto.backend} fp32 (auto)"
    verdicts = [
        f"{figures[c, default][0]:.1f} ms {'idle' if c == 'idle' else 'beside a busy process'} (target <= "
        f"{PHOTO_TARGET_MS[c]:g}: {'met' if figures[c, default][0] <= PHOTO_TARGET_MS[c] else 'MISSED'})"
        for c in ("idle", "busy")
    ]
    base = next(iter(rows))
    print(
        f"predict: default path ({default}) photo {verdicts[0]}, {verdicts[1]}; {base}: "
        f"{figures['idle', base][0]:.1f} / {figures['busy', base][0]:.1f} ms, ratio "
        f"{figures['idle', default][0] / figures['idle', base][0]:.2f} / "
        f"{figures['busy', default][0] / figures['busy', base][0]:.2f}"
    )
    return figures


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fer_hf.bench predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=["cnn"], choices=FAMILIES, help="families to time")
    parser.add_argument("--size", default="tiny", choices=("tiny", "base"), help="size of the random vit/resnet")
    parser.add_argument(
        "--repeats", type=at_least(1), default=20, help="timed single-photo calls (median and p90 reported)"
    )
    parser.add_argument("--batch", type=at_least(1), default=32, help="photos in the batched-throughput run")
    parser.add_argument(
        "--no-onnx", dest="onnx", action="store_false", help="skip the backend rows (torch beside the ONNX exports)"
    )
    parser.add_argument("--no-int8", dest="int8", action="store_false", help="skip the int8 export's rows")
    parser.add_argument(
        "--backends-only", action="store_true", help="only the backend rows (no family, Haar or ensemble rows)"
    )
    parser.add_argument(
        "--no-ensemble", dest="ensemble", action="store_false", help="skip the bundled ensemble's rows"
    )
    parser.add_argument(
        "--threads", type=at_least(0), default=0,
        help="torch and OpenCV threads of the family rows (0: fitted to the usable cores, as predict runs)",
    )  # fmt: skip
    return parser.parse_args(argv)


def family_rows(photo: Path, args: argparse.Namespace) -> None:
    """Each family through torch, end to end (the CNN with YuNet and with Haar), and the default model's lines."""
    families = ["cnn", *[f for f in args.families if f != "cnn"]]  # the CNN always runs: its lines follow
    figures = {}
    for family, detector in [("cnn", "haar"), *((f, "yunet") for f in families)]:
        loaded = random_model(family, args.size)
        predictor = Predictor(loaded, detector=DetectorConfig(detector=detector), batch_size=args.batch,
                              backend="torch")  # fmt: skip
        params = sum(p.numel() for p in predictor.loaded.model.parameters()) / 1e6
        wall, cpu, _ = end_to_end_ms(predictor, photo, args.repeats)
        figures[family, detector] = (wall, cpu, batched_images_per_s(predictor, photo, args.batch))
        print(
            f"  {family:7s} {detector:5s} ({params:6.2f}M params): end-to-end {wall:7.1f} ms/image "
            f"(CPU time {cpu:6.1f} ms), batched {figures[family, detector][2]:6.1f} img/s"
        )
    (latency, cpu, throughput), haar = figures["cnn", "yunet"], figures["cnn", "haar"][0]
    # CPU time sums every thread's; the old < 50 ms target was for 1 thread (`--threads 1`).
    print(f"predict: cnn (torch) end-to-end CPU time {cpu:.1f} ms/image over {torch.get_num_threads()} thread(s)")
    print(
        f"predict: default model (torch) end-to-end {latency:.1f} ms/image with YuNet, batched {throughput:.1f} "
        f"img/s (Haar {haar:.1f} ms/image, ratio {latency / haar:.2f})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:  # the family rows' threads (Predictor fits torch's to FER_HF_THREADS, set here)
        os.environ[THREADS_ENV] = str(args.threads)
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "astronaut_640x480.jpg"
        Image.fromarray(demo_photo()).save(photo, quality=90)
        print(
            f"photo: {photo.name} 640x480, torch threads {torch.get_num_threads()}, cv2 threads {cv2.getNumThreads()}"
        )
        if not args.backends_only:
            family_rows(photo, args)
            if args.ensemble:
                ensemble_rows(photo, args.repeats)
        if args.onnx:
            os.environ.pop(THREADS_ENV, None)  # the backend rows set their own threads
            backend_rows(photo, args.repeats, args.int8)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
