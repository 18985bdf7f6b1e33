"""Resolve a MODEL argument to a loaded image classifier: the bundled default, a run folder, a saved model
folder or a Hub id. Used by evaluate, predict, explain, publish and the app, so they all accept the same things."""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

import fer_hf.models.hub_code  # noqa: F401  (registers the package's model classes with the Auto classes)
from fer_hf.exports.runtime import (
    ExportFolderError,
    OnnxClassifier,
    is_export,
)

log = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).parents[1] / "assets"


@dataclass(frozen=True)
class BundledModel:
    """A model trained by this project on FER2013 and shipped inside the package (offline), made by fer_hf.hub.bundle."""

    path: Path
    title: str  # what it is, in a few words (the app's model menu)
    recipe: str | None  # the recipe that trains it (fer_hf.hub.bundle ships its run), or None
    made_by: str | None = None  # else: the command that writes it


DEFAULT_MODEL = "default"
DEFAULT_MODEL_DIR = ASSETS_DIR / "default_model"
BUNDLED_MODELS = {
    DEFAULT_MODEL: BundledModel(DEFAULT_MODEL_DIR, "fer-resnet5 CNN from scratch", "recipes/cnn_swa.yaml"),
    "lite0": BundledModel(ASSETS_DIR / "lite0_model", "EfficientNet-Lite0 from ImageNet", "recipes/lite0_main.yaml"),
    "ferplus": BundledModel(
        ASSETS_DIR / "ferplus_model", "FER+ CNN: 8 classes, from ten raters' votes", "recipes/ferplus_cnn.yaml"
    ),
    "ensemble": BundledModel(
        ASSETS_DIR / "ensemble_model",
        "ensemble of default + lite0 + lite2",
        None,
        "python -m fer_hf.ensemble default lite0 runs/lite2_member --output fer_hf/assets/ensemble_model "
        "--data ../shared/fer2013 --half",
    ),
}
MODEL_HELP = f"{' or '.join(map(repr, BUNDLED_MODELS))} (bundled), a model/run folder or a Hub id"


class ModelLoadError(ValueError):
    """A MODEL argument that does not name a usable image classifier."""


@dataclass
class LoadedModel:
    model: PreTrainedModel
    image_processor: object
    source: str  # what the user passed, resolved ("default" -> its folder)

    @property
    def label_names(self) -> list[str]:
        return [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]


def resolve_model_path(ref: str | Path) -> str:
    """A bundled model's name ('default', 'lite0') -> its folder; a run folder -> its saved model; a folder or Hub
    id -> itself."""
    if str(ref) in BUNDLED_MODELS:
        bundled = BUNDLED_MODELS[str(ref)]
        if not is_installed(bundled):
            how = (
                f"`{bundled.made_by}` writes it"
                if bundled.made_by
                else f"fer_hf.hub.bundle makes it from a {bundled.recipe} run"
            )
            raise ModelLoadError(
                f"no bundled model {str(ref)!r} in {bundled.path} yet ({how}); pass a trained model instead, e.g. "
                "--model runs/smoke after `make smoke`"
            )
        return str(bundled.path)
    path = Path(ref).expanduser()
    if path.is_dir():
        if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{path}: a LoRA adapter without its base model; merge them first (`python -m fer_hf.hub.publish {path} "
                "--repo-id USER/NAME --dry-run OUT` writes the merged model to OUT), then use OUT"
            )
        if not (path / "config.json").is_file():
            onnx = " (a model.onnx alone is not enough: a fer_hf.export folder holds its config.json too)"
            raise ModelLoadError(
                f"{path}: no config.json; expected a saved model or a finished run folder"
                + (onnx if (path / "model.onnx").is_file() else "")
            )
        return str(path)
    if path.exists():
        raise ModelLoadError(f"{path}: a file; MODEL must be a model folder, a run folder, 'default' or a Hub id")
    if str(ref).startswith((".", "/", "~")) or str(ref).count("/") != 1:
        raise ModelLoadError(f"{ref}: no such folder (and not a Hub id of the form owner/name)")
    return str(ref)


def is_installed(bundled: BundledModel) -> bool:
    return (bundled.path / "config.json").is_file()


def load_classifier(ref: str | Path = DEFAULT_MODEL, *, trust_remote_code: bool = False, device: str = "cpu"):
    """Load MODEL for inference (eval mode). Custom code of other repos needs an explicit trust_remote_code=True.
    A `fer_hf.export` folder runs through onnxruntime (`OnnxImageClassifier`): no torch model is built.

    The model classifies a face crop (FER2013-like: one face filling a small gray square), not a photo: for photos,
    arrays, videos or a camera use `fer_hf.analyze(x, model=...)`, which finds, aligns and crops the faces first."""
    path = resolve_model_path(ref)
    if is_export(path) or onnx_only(path):  # the runtime says what a foreign one lacks
        try:
            model = OnnxImageClassifier(path, None)  # the export's own checks first: they name the file
        except ExportFolderError as err:
            raise ModelLoadError(str(err)) from err
        model.config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        model.check_labels()
        processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        return LoadedModel(model=model, image_processor=processor, source=path)
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    if not any(arch.endswith("ForImageClassification") for arch in (config.architectures or [])):
        raise ModelLoadError(f"{ref}: architectures {config.architectures} is not an image classifier")
    try:
        model = AutoModelForImageClassification.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (SafetensorError, pickle.UnpicklingError) as err:  # a truncated file, a blocked pickle
        reason = " ".join(str(err).split())[:200]
        raise ModelLoadError(
            f"{path}: the model's weights cannot be read ({type(err).__name__}: {reason}); save or download the "
            "model again (as safetensors)"
        ) from err
    processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    return LoadedModel(model=model.to(device).eval(), image_processor=processor, source=path)


def onnx_only(path: str | Path) -> bool:
    """A folder with a model.onnx and no torch weights beside it (a Hub repo may ship both: torch loads those)."""
    folder = Path(path)
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    return (folder / "model.onnx").is_file() and not any((folder / name).is_file() for name in weights)


class OnnxImageClassifier(torch.nn.Module):
    """An exported model behind the interface the rest of fer_hf uses (`model(pixel_values=...).logits`, `.config`,
    `.eval()`): onnxruntime does the work on the CPU. Gray/RGB inputs are matched to the graph's channels the way
    the package's models do it (RGB averaged to gray, gray repeated as RGB)."""

    def __init__(self, folder: str | Path, config, *, threads: int | None = None, device: str = "cpu"):
        super().__init__()
        self.runtime = OnnxClassifier(folder, threads=threads, device=device)
        self.config = config
        # predict_logits asks a model for its device through its parameters: an empty one says "cpu".
        self.device_anchor = torch.nn.Parameter(torch.zeros(0), requires_grad=False)

    def check_labels(self) -> None:
        """config.json's id2label (what predict and the app show) and the export block's labels are one list."""
        names = [self.config.id2label.get(i) for i in range(self.config.num_labels)]
        if names != self.runtime.label_names:
            raise ModelLoadError(
                f"{self.runtime.folder / 'config.json'}: id2label {names} and the export block's labels "
                f"{self.runtime.label_names} differ; expected one list of classes (export the model again)"
            )

    def forward(self, pixel_values: torch.Tensor, **_) -> ImageClassifierOutput:
        pixels = pixel_values.detach().float().cpu().numpy()  # (B, C, S, S)
        channels = int(self.runtime.spec["channels"])
        if pixels.shape[1] != channels:
            pixels = pixels.mean(1, keepdims=True) if channels == 1 else np.repeat(pixels, channels, axis=1)
        try:
            logits = self.runtime.logits(np.ascontiguousarray(pixels, dtype=np.float32))
        except ExportFolderError as err:
            raise ModelLoadError(str(err)) from None
        return ImageClassifierOutput(logits=torch.from_numpy(logits))


def load_default_model(device: str = "cpu") -> LoadedModel:
    """The CNN bundled with the package (trained on FER2013 by recipes/cnn.yaml, then cnn_swa.yaml): works offline.

    It classifies a face crop (48x48 gray, FER2013's framing). For a photo with people in it use
    `fer_hf.analyze(photo)`, which finds and crops each face and returns one row per face."""
    return load_classifier(DEFAULT_MODEL, device=device)


def is_onnx_model(model) -> bool:
    """A LoadedModel, or a MODEL argument, that is only an ONNX export (False for anything that does not resolve)."""
    if isinstance(model, LoadedModel):
        return hasattr(model.model, "runtime")
    try:
        path = resolve_model_path(model)
    except ModelLoadError:
        return False
    return is_export(path) or onnx_only(path)
