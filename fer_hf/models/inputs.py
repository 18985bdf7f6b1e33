"""What a saved model expects as input, read from its config and image processor: {size, channels, mean, std}.
Plain numbers, so that the data side builds the matching batch transform without the models importing it."""

from __future__ import annotations

import numpy as np


class ModelInputError(ValueError):
    """A saved model whose input (size, statistics) cannot be read from its image processor."""


def _read(container, key: str):
    """A key of a dict or an attribute of a SizeDict-like object (transformers 5 uses both)."""
    if container is None:
        return None
    return container.get(key) if isinstance(container, dict) else getattr(container, key, None)


def input_spec(config, image_processor) -> dict:
    """The model's input as training's evaluation saw it: {size, channels, mean, std}.

    Read from the saved image processor (side, mean, std) and the model config (channels), so any folder
    that `load_classifier` loads is evaluated exactly as `fer_hf.train` evaluated it.
    """
    data_config = getattr(image_processor, "data_config", None)  # timm wrapper: resolved pretrained_cfg
    if data_config:
        size, mean, std = data_config["input_size"][-1], data_config["mean"], data_config["std"]
    else:
        crop = _read(image_processor, "crop_size") if getattr(image_processor, "do_center_crop", False) else None
        sizes = (crop, _read(image_processor, "size"))
        size = next((_read(s, k) for s in sizes for k in ("height", "shortest_edge") if _read(s, k)), None)
        mean, std = image_processor.image_mean, image_processor.image_std
    if not size:
        raise ModelInputError(f"cannot read the input size from the image processor {type(image_processor).__name__}")
    channels = int(getattr(config, "num_channels", 3) or 3)
    mean, std = np.atleast_1d(np.asarray(mean, dtype=float)), np.atleast_1d(np.asarray(std, dtype=float))
    if channels == 1:  # a gray model: one statistic (all equal for the package's CNN, [0.5] * 3)
        mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
    return {"size": int(size), "channels": channels, "mean": mean[:channels].tolist(), "std": std[:channels].tolist()}
