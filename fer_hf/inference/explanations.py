"""Why a model said what it said, on the faces `fer_hf.inference.predictor` finds: saliency, Grad-CAM, attention
rollout (ViT), feature maps and first-layer filters, as images (`python -m fer_hf.explain`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fer_hf.inference.faces import load_image
from fer_hf.inference.predictor import Predictor
from fer_hf.models.loading import LoadedModel

METHODS = ("saliency", "gradcam", "attention", "activations", "filters")


class ExplainError(ValueError):
    """A method that does not apply to this model or input."""


@dataclass
class Explanation:
    method: str
    label: str  # the class explained
    probabilities: dict[str, float]  # the model's prediction for the face
    files: list[Path] = field(default_factory=list)  # PNGs written


def face_input(predictor: Predictor, image: str | Path, crop_mode: str = "auto") -> tuple[np.ndarray, torch.Tensor]:
    """Image file -> (largest face crop (S, S) uint8 gray, pixel_values (1, C, H, W))."""
    rgb, _ = load_image(image, predictor.detector.config)
    faces = predictor.detector.faces(rgb, crop_mode)
    if not faces:
        raise ExplainError(f"{image}: no face found; pass --cropped if the image is already a face")
    return faces[0].crop, predictor.pixel_values([faces[0].crop])


def _target_index(model: nn.Module, pixel_values: torch.Tensor, label: str | None) -> tuple[int, dict[str, float]]:
    with torch.no_grad():
        probs = model(pixel_values=pixel_values).logits.softmax(-1)[0]
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if label is not None and label not in names:
        raise ExplainError(f"--target {label!r} is not a class of this model; choose one of {names}")
    index = names.index(label) if label is not None else int(probs.argmax())
    return index, {n: float(p) for n, p in zip(names, probs, strict=True)}


def saliency_map(model: nn.Module, pixel_values: torch.Tensor, target: int) -> np.ndarray:
    """Vanilla gradient saliency: |d score / d pixel|, max over channels -> (H, W) in [0, 1]."""
    x = pixel_values.clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    model(pixel_values=x).logits[0, target].backward()
    return _normalise(x.grad[0].abs().amax(0).numpy())


def _fer_cnn_layer(model: nn.Module) -> nn.Module:
    block = model.features[-1]  # pre-pool map of the last block: 2x the resolution of its pooled output
    return block if block.pool_before_activation else block.activation


GRADCAM_LAYERS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "fer_cnn": _fer_cnn_layer,
    "resnet": lambda model: model.resnet.encoder.stages[-1],
    "fer_resnet": lambda model: model.resnet.encoder.stages[-1],
}


def gradcam_layer(model: nn.Module, pixel_values: torch.Tensor) -> nn.Module:
    """The table above, else the last module whose output is a (B, C, h, w) map with h, w >= 2."""
    if model.config.model_type == "fer_ensemble":
        raise ExplainError(
            "Grad-CAM of an ensemble would show one member's feature map only: use --method saliency (gradients "
            "through every member) or explain a member on its own"
        )
    lookup = GRADCAM_LAYERS.get(model.config.model_type)
    if lookup is not None:
        return lookup(model)
    if hasattr(model.config, "num_attention_heads"):
        raise ExplainError(
            f"Grad-CAM needs a convolutional feature map; {model.config.model_type} is a transformer: "
            "use --method attention or saliency"
        )
    spatial: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, _, out: spatial.append(mod) if _is_map(out) else None)
        for m in model.modules()
        if m is not model
    ]
    with torch.no_grad():
        model(pixel_values=pixel_values)
    for hook in hooks:
        hook.remove()
    if not spatial:
        raise ExplainError(f"{model.config.model_type}: no (B, C, h, w) feature map found for Grad-CAM")
    return spatial[-1]  # forward hooks fire when a module finishes: the last is the deepest map


def _is_map(out) -> bool:
    return isinstance(out, torch.Tensor) and out.ndim == 4 and min(out.shape[-2:]) >= 2


def gradcam_map(model: nn.Module, pixel_values: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM: ReLU(sum_c mean(dScore/dA_c) * A_c) on the target layer, upsampled -> (H, W) in [0, 1]."""
    captured = {}
    layer = gradcam_layer(model, pixel_values)
    hook = layer.register_forward_hook(lambda mod, _, out: captured.setdefault("map", out))
    try:
        score = model(pixel_values=pixel_values).logits[0, target]
    finally:
        hook.remove()
    activation = captured["map"]  # (1, C, h, w)
    (grad,) = torch.autograd.grad(score, activation)
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * activation).sum(1, keepdim=True))  # (1, 1, h, w)
    cam = F.interpolate(cam, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)
    return _normalise(cam[0, 0].detach().numpy())


def attention_rollout(model: nn.Module, pixel_values: torch.Tensor, head_fusion: str = "mean") -> np.ndarray:
    """Attention rollout: prod over layers of (0.5 A + 0.5 I), rows renormalised; the CLS row over the patches,
    upsampled -> (H, W) in [0, 1]. Needs eager attention (sdpa returns no weights); restored afterwards."""
    if not hasattr(model.config, "num_attention_heads") or not hasattr(model, "set_attn_implementation"):
        raise ExplainError(
            f"attention rollout needs a ViT-like model; {model.config.model_type} has no attention "
            "layers: use saliency or gradcam"
        )
    previous = getattr(model.config, "_attn_implementation", None)
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            attentions = getattr(model(pixel_values=pixel_values, output_attentions=True), "attentions", None)
    except TypeError as err:
        raise ExplainError(f"{model.config.model_type} does not return attentions ({err}): use saliency") from err
    finally:
        if previous:
            model.set_attn_implementation(previous)
    if not attentions:
        raise ExplainError(f"{model.config.model_type} returns no attentions: attention rollout needs a ViT")
    rollout = None
    for layer in attentions:  # each (1, heads, T, T)
        fused = layer[0].mean(0) if head_fusion == "mean" else layer[0].amax(0)  # (T, T)
        fused = 0.5 * fused + 0.5 * torch.eye(fused.shape[-1])  # the residual path carries half the signal
        fused = fused / fused.sum(-1, keepdim=True)
        rollout = fused if rollout is None else fused @ rollout
    tokens = rollout.shape[-1]
    grid = int((tokens - 1) ** 0.5)  # patches form a square grid; the rest are CLS / extra prefix tokens
    prefix = tokens - grid * grid
    cls_to_patches = rollout[0, prefix:].reshape(1, 1, grid, grid)
    heat = F.interpolate(cls_to_patches, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)
    return _normalise(heat[0, 0].numpy())


def feature_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Named layers whose outputs are shown as activation maps: CNN blocks or ResNet embedder + stages."""
    if model.config.model_type == "fer_cnn":
        return [(f"block{i}", block) for i, block in enumerate(model.features)]
    if hasattr(model, "resnet"):
        stages = model.resnet.encoder.stages
        return [("stem", model.resnet.embedder)] + [(f"stage{i}", s) for i, s in enumerate(stages)]
    raise ExplainError(f"activation maps are shown for CNN and ResNet models, not {model.config.model_type}")


def activation_maps(model: nn.Module, pixel_values: torch.Tensor) -> list[tuple[str, np.ndarray]]:
    """[(layer name, (C, h, w) activations of the face)] for each layer of `feature_layers`."""
    outputs: list[tuple[str, torch.Tensor]] = []
    hooks = [
        layer.register_forward_hook(lambda mod, _, out, name=name: outputs.append((name, out.detach().clone())))
        for name, layer in feature_layers(model)
    ]
    try:
        with torch.no_grad():
            model(pixel_values=pixel_values)
    finally:
        for hook in hooks:
            hook.remove()
    return [(name, out[0].numpy()) for name, out in outputs]


def first_conv_filters(model: nn.Module) -> np.ndarray:
    """Weights of the first Conv2d (in module order) -> (O, I, k, k)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ExplainError(f"{model.config.model_type} has no Conv2d layer: no filters to show")
    return conv.weight.detach().float().numpy()


def _normalise(array: np.ndarray) -> np.ndarray:
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array, dtype=np.float32)


def overlay(face: np.ndarray, heat: np.ndarray, size: int = 240, caption: str = "", cmap: str = "jet") -> np.ndarray:
    """Gray face (S, S) + heat (h, w) in [0, 1] -> RGB (size, size, 3) uint8: colour map blended over the face."""
    base = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255
    heat = cv2.resize(heat.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    colour = matplotlib.colormaps[cmap](heat)[..., :3]  # (size, size, 3) in [0, 1]
    alpha = 0.25 + 0.35 * heat[..., None]  # stronger colour where the map is high: the face stays readable
    blended = ((1 - alpha) * base[..., None] + alpha * colour) * 255
    image = np.ascontiguousarray(blended.clip(0, 255).astype(np.uint8))
    if caption:
        cv2.putText(
            image, caption, (4, size - 6), cv2.FONT_HERSHEY_SIMPLEX, size / 600, (255, 255, 255), 1, cv2.LINE_AA
        )
    return image


def tile_grid(maps: np.ndarray, tile: int = 64, cols: int = 8, cmap: str = "viridis", gap: int = 2) -> np.ndarray:
    """(N, h, w) maps, each normalised on its own -> RGB grid of ceil(N / cols) x min(N, cols) tiles.
    Image size: rows * tile + (rows - 1) * gap high, cols * tile + (cols - 1) * gap wide."""
    n = len(maps)
    cols = min(cols, n)
    rows = -(-n // cols)
    grid = np.full((rows * tile + (rows - 1) * gap, cols * tile + (cols - 1) * gap, 3), 255, np.uint8)
    for i, m in enumerate(maps):
        cell = cv2.resize(_normalise(m.astype(np.float32)), (tile, tile), interpolation=cv2.INTER_NEAREST)
        r, c = divmod(i, cols)
        rgb = (matplotlib.colormaps[cmap](cell)[..., :3] * 255).astype(np.uint8)
        grid[r * (tile + gap) : r * (tile + gap) + tile, c * (tile + gap) : c * (tile + gap) + tile] = rgb
    return grid


def save_png(image: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def explain(
    loaded: LoadedModel | Predictor,
    image: str | Path,
    method: str,
    output: str | Path,
    *,
    target: str | None = None,
    crop_mode: str = "auto",
    size: int = 240,
    max_channels: int = 16,
) -> Explanation:
    """Run one method on the largest face of `image` and write its PNG(s) under `output`."""
    if method not in METHODS:
        raise ExplainError(f"unknown method {method!r}; choose from {METHODS}")
    # Explanations read torch's gradients and layers: never export for them (an export folder stays one, refused below).
    predictor = loaded if isinstance(loaded, Predictor) else Predictor(loaded, backend=_backend_for(loaded))
    refuse_export(predictor.loaded, str(predictor.loaded.source))
    model = predictor.loaded.model
    face, pixels = face_input(predictor, image, crop_mode)
    index, probs = _target_index(model, pixels, target)
    label = model.config.id2label[index]
    out, stem = Path(output), Path(image).stem
    result = Explanation(method=method, label=label, probabilities=probs)
    if method in ("saliency", "gradcam", "attention"):
        heat = {
            "saliency": lambda: saliency_map(model, pixels, index),
            "gradcam": lambda: gradcam_map(model, pixels, index),
            "attention": lambda: attention_rollout(model, pixels),
        }[method]()
        caption = f"{method}: {label} {probs[label]:.2f}"
        result.files.append(save_png(overlay(face, heat, size, caption), out / f"{stem}_{method}.png"))
    elif method == "activations":
        for name, maps in activation_maps(model, pixels):
            strongest = np.argsort(-maps.reshape(len(maps), -1).mean(1))[:max_channels]  # most active channels
            result.files.append(save_png(tile_grid(maps[strongest]), out / f"{stem}_activations_{name}.png"))
    else:
        weights = first_conv_filters(model)  # (O, I, k, k): mean over input channels shows the spatial pattern
        result.files.append(save_png(tile_grid(weights.mean(1), tile=32, cmap="gray"), out / "filters.png"))
    return result


def _backend_for(model) -> str:
    """torch, unless the model is only an ONNX export (then `refuse_export` says why it cannot be explained)."""
    from fer_hf.models.loading import is_onnx_model

    return "onnx" if is_onnx_model(model) else "torch"


def refuse_export(loaded: LoadedModel, ref: str) -> None:
    """An ONNX export (onnxruntime) has no gradients, layers or attentions to look into."""
    if hasattr(loaded.model, "runtime"):
        exported_from = loaded.model.runtime.spec.get("exported_from")
        source = f" (this one was exported from {exported_from!r})" if exported_from else ""
        raise ExplainError(
            f"--model {ref}: an ONNX export run by onnxruntime, which gives no gradients or layer outputs; "
            f"explanations need the torch model it was exported from{source}"
        )
