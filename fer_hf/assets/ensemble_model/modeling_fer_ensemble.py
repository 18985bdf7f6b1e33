"""An ensemble of FER classifiers as one `PreTrainedModel`: the weighted average of its members' probabilities.

Each member keeps its own preprocessing inside `forward`, so the ensemble takes the face as FER2013 gives it (gray,
48x48, pixel values in [0, 1]) and `pipeline`, `evaluate`, `predict` and the app use it like any model. Self-contained
apart from relative imports of the members' code, so a saved folder reloads with `trust_remote_code=True`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration_fer_ensemble import FerEnsembleConfig


def member_classes(model_type: str) -> tuple[type, type]:
    """(config class, model class) of a member; imported on demand so that, e.g., timm is needed only for timm members."""
    if model_type == "fer_cnn":
        from .configuration_fer_cnn import FerCnnConfig
        from .modeling_fer_cnn import FerCnnForImageClassification

        return FerCnnConfig, FerCnnForImageClassification
    if model_type == "fer_timm":
        from .configuration_fer_timm import FerTimmConfig
        from .modeling_fer_timm import FerTimmForImageClassification

        return FerTimmConfig, FerTimmForImageClassification
    if model_type == "fer_vit":
        from .configuration_fer_vit import FerViTConfig
        from .modeling_fer_vit import FerViTForImageClassification

        return FerViTConfig, FerViTForImageClassification
    if model_type == "fer_resnet":
        from .configuration_fer_resnet import FerResNetConfig
        from .modeling_fer_resnet import FerResNetForImageClassification

        return FerResNetConfig, FerResNetForImageClassification
    raise ValueError(f"no ensemble member class for model_type {model_type!r}")


class MemberInput(nn.Module):
    """The member's preprocessing of a gray face: (B, 1, H, W) in [0, 1] -> (B, C, S, S) normalised, as the
    package's evaluation transform makes it (bilinear resize, (x - mean) / std, gray repeated over C channels)."""

    def __init__(self, size: int, channels: int, mean: list[float], std: list[float]):
        super().__init__()
        # Plain numbers, not buffers: they live in the config, and the weights file holds only the members' weights.
        self.size, self.channels = int(size), int(channels)
        self.mean = [float(v) for v in mean] * (self.channels if len(mean) == 1 else 1)
        self.std = [float(v) for v in std] * (self.channels if len(std) == 1 else 1)

    def forward(self, gray: torch.Tensor) -> torch.Tensor:
        if gray.shape[-2:] != (self.size, self.size):
            gray = F.interpolate(gray, size=(self.size, self.size), mode="bilinear", align_corners=False)
        mean = torch.tensor(self.mean, device=gray.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
        std = torch.tensor(self.std, device=gray.device).view(1, -1, 1, 1)
        return (gray - mean) / std  # (B, 1, S, S) -> (B, C, S, S)


class FerEnsembleForImageClassification(PreTrainedModel):
    """pixel_values (B, 1 or 3, H, W) in [0, 1] -> logits (B, num_labels) = log of the weighted mean probability.

    The logits are log-probabilities: softmax(logits) is the ensemble's probability, argmax its prediction.
    """

    config_class = FerEnsembleConfig
    base_model_prefix = "fer_ensemble"
    main_input_name = "pixel_values"
    accepts_loss_kwargs = False

    def __init__(self, config: FerEnsembleConfig):
        super().__init__(config)
        if not config.members:
            raise ValueError("an ensemble needs at least one member")
        members, inputs = [], []
        for member in config.members:
            config_cls, model_cls = member_classes(member["config"]["model_type"])
            members.append(model_cls(config_cls.from_dict(member["config"])))
            inputs.append(MemberInput(**member["input"]))
        self.members = nn.ModuleList(members)
        self.inputs = nn.ModuleList(inputs)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        pass  # every weight comes from the members' trained checkpoints

    def member_probabilities(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (M, B, K): each member's softmax on its own preprocessing of the face."""
        gray = pixel_values.float()
        if gray.shape[1] == 3:  # RGB from a pipeline: averaged to gray, as the package's CNN does
            gray = gray.mean(dim=1, keepdim=True)
        elif gray.shape[1] != 1:
            raise ValueError(f"pixel_values must have 1 or 3 channels, got shape {tuple(pixel_values.shape)}")
        probs = [
            model(pixel_values=prepare(gray)).logits.float().softmax(-1)
            for model, prepare in zip(self.members, self.inputs, strict=True)
        ]
        return torch.stack(probs)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        probs = self.member_probabilities(pixel_values)  # (M, B, K)
        weights = torch.tensor(self.config.member_weights, device=probs.device)  # (M,), sum 1
        mean = torch.einsum("m,mbk->bk", weights, probs)
        logits = mean.clamp_min(torch.finfo(mean.dtype).tiny).log()  # (B, K) log-probabilities
        temperature = getattr(
            self.config, "logit_temperature", 1.0
        )  # the ensemble's own calibration (members: theirs)
        if temperature != 1.0:
            logits = (logits / temperature).log_softmax(-1)  # still log-probabilities
        loss = F.nll_loss(logits, labels) if labels is not None else None
        if return_dict is False:
            return (loss, logits) if loss is not None else (logits,)
        return ImageClassifierOutput(loss=loss, logits=logits)
