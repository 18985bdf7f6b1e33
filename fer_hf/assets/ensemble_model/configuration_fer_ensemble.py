"""Configuration of an ensemble of FER classifiers. Self-contained (transformers only) so that it travels to the Hub
with `register_for_auto_class` and loads with `trust_remote_code=True`."""

from __future__ import annotations

import math

from transformers import PreTrainedConfig

MEMBER_TYPES = ("fer_cnn", "fer_timm", "fer_vit", "fer_resnet")
INPUT_KEYS = ("size", "channels", "mean", "std")


class FerEnsembleConfig(PreTrainedConfig):
    """Members and their weights in the average of probabilities.

    Args:
        members: one dict per member: `name` (where it came from, for cards), `weight` (> 0; the weights are
            normalised to sum 1), `config` (the member's own config.json as a dict) and `input` (its preprocessing
            as training's evaluation did it: `size` side, `channels` 1 or 3, `mean`/`std` per channel).
        image_size: side of the face the ensemble takes (48: FER2013's own faces); pixel values in [0, 1], gray.
    """

    model_type = "fer_ensemble"

    def __init__(self, members: list[dict] | None = None, image_size: int = 48, num_channels: int = 1, **kwargs):
        self.members = [dict(m) for m in (members or [])]
        self.image_size = image_size
        self.num_channels = num_channels
        super().__init__(**kwargs)
        for i, member in enumerate(self.members):
            _check_member(i, member)

    @property
    def member_weights(self) -> list[float]:
        """The weights normalised to sum 1, in member order."""
        total = sum(float(m["weight"]) for m in self.members)
        return [float(m["weight"]) / total for m in self.members]


def _check_member(i: int, member: dict) -> None:
    missing = [k for k in ("name", "weight", "config", "input") if k not in member]
    if missing:
        raise ValueError(f"members[{i}]: missing {missing}; each member needs name, weight, config and input")
    model_type = member["config"].get("model_type")
    if model_type not in MEMBER_TYPES:
        raise ValueError(f"members[{i}] ({member['name']}): model_type {model_type!r} is not one of {MEMBER_TYPES}")
    weight = member["weight"]
    if not isinstance(weight, int | float) or not math.isfinite(weight) or weight <= 0:
        raise ValueError(f"members[{i}] ({member['name']}): weight must be a positive number, got {weight!r}")
    missing = [k for k in INPUT_KEYS if k not in member["input"]]
    if missing:
        raise ValueError(f"members[{i}] ({member['name']}): input lacks {missing}")
