"""The custom FER CNN as a `PreTrainedModel`. Self-contained apart from its configuration file (a relative
import), so `AutoModelForImageClassification.from_pretrained(repo, trust_remote_code=True)` works once pushed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration_fer_cnn import FerCnnConfig


def _activation(name: str, channels: int) -> nn.Module:
    return {
        "relu": lambda: nn.ReLU(inplace=True),
        "prelu": lambda: nn.PReLU(),
        "elu": lambda: nn.ELU(inplace=True),
        "gelu": lambda: nn.GELU(),
        "none": lambda: nn.Identity(),
    }[name]()


def _norm(kind: str | None, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class FerConvBlock(nn.Module):
    """convs x (conv -> norm -> activation) [+ shortcut] -> pool -> dropout.  (B, Cin, H, W) -> (B, Cout, H', W')."""

    def __init__(self, in_channels: int, spec: dict):
        super().__init__()
        out = spec["out_channels"]
        layers = []
        for i in range(spec["convs"]):
            conv_in = in_channels if i == 0 else out
            layers.append(nn.Conv2d(conv_in, out, spec["kernel_size"], padding=spec["padding"], bias=spec["bias"]))
            layers.append(_norm(spec["norm"], out))
            # The last activation waits until after the shortcut (ResNet) or the pool (report-a model1).
            if i < spec["convs"] - 1:
                layers.append(_activation(spec["activation"], out))
        self.convs = nn.Sequential(*layers)
        self.shortcut = None
        if spec["residual"]:
            self.shortcut = nn.Identity() if in_channels == out else nn.Conv2d(in_channels, out, 1, bias=False)
        self.activation = _activation(spec["activation"], out)
        self.pool_before_activation = spec["pool_before_activation"]
        pool = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}.get(spec["pool"])
        self.pool = pool(spec["pool_size"], spec["pool_stride"]) if pool else nn.Identity()
        self.dropout = nn.Dropout(spec["dropout"]) if spec["dropout"] > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convs(x)
        if self.shortcut is not None:
            skip = self.shortcut(x)
            if skip.shape[-2:] != y.shape[-2:]:  # unpadded convs shrink the map: match it
                skip = F.adaptive_avg_pool2d(skip, y.shape[-2:])
            y = y + skip
        y = self.pool(self.activation(y)) if not self.pool_before_activation else self.activation(self.pool(y))
        return self.dropout(y)


class FerCnnPreTrainedModel(PreTrainedModel):
    config_class = FerCnnConfig
    base_model_prefix = "fer_cnn"
    main_input_name = "pixel_values"
    # forward(**kwargs) would make the Trainer pass num_items_in_batch and skip its gradient-accumulation scaling;
    # the loss here is a batch mean, so the Trainer must scale it.
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Kaiming (He) initialisation suits the ReLU-family activations used throughout.
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(module.weight, mode="fan_out" if isinstance(module, nn.Conv2d) else "fan_in")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d | nn.InstanceNorm2d) and module.affine:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class FerCnnForImageClassification(FerCnnPreTrainedModel):
    """pixel_values (B, C, H, W), C = 1 or 3 -> logits (B, num_labels)."""

    def __init__(self, config: FerCnnConfig):
        super().__init__(config)
        blocks, channels = [], config.num_channels
        for spec in config.blocks:
            blocks.append(FerConvBlock(channels, spec))
            channels = spec["out_channels"]
        self.features = nn.Sequential(*blocks)
        self.global_pool = config.global_pool
        in_features = channels * self._pooled_area(config)
        layers: list[nn.Module] = []
        for hidden in config.hidden_sizes:
            layers += [nn.Linear(in_features, hidden), _activation(config.classifier_activation, hidden)]
            if config.classifier_dropout > 0:
                layers.append(nn.Dropout(config.classifier_dropout))
            in_features = hidden
        if not config.hidden_sizes and config.classifier_dropout > 0:
            layers.append(nn.Dropout(config.classifier_dropout))
        layers.append(nn.Linear(in_features, config.num_labels))
        if config.output_activation == "tanh":
            layers.append(nn.Tanh())
        self.classifier = nn.Sequential(*layers)
        self.post_init()

    def _pooled_area(self, config: FerCnnConfig) -> int:
        if config.global_pool in ("avg", "max"):
            return 1
        if config.global_pool and config.global_pool.startswith("avg"):
            return int(config.global_pool[3:]) ** 2
        with torch.no_grad():  # flatten: trace a dummy face through the blocks to get (C, H, W)
            probe = torch.zeros(1, config.num_channels, config.image_size, config.image_size)
            return self.features.eval()(probe)[0, 0].numel()

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pool == "avg":
            return x.mean(dim=(2, 3))
        if self.global_pool == "max":
            return x.amax(dim=(2, 3))
        if self.global_pool:
            x = F.adaptive_avg_pool2d(x, int(self.global_pool[3:]))
        return x.flatten(1)

    def _check_channels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must be (B, C, H, W), got shape {tuple(pixel_values.shape)}")
        channels = pixel_values.shape[1]
        if channels == self.config.num_channels:
            return pixel_values
        if channels == 3 and self.config.num_channels == 1:  # RGB from a pipeline: average to gray
            return pixel_values.mean(dim=1, keepdim=True)
        if channels == 1 and self.config.num_channels == 3:  # gray face: repeat as RGB
            return pixel_values.expand(-1, 3, -1, -1)
        raise ValueError(f"expected 1 or 3 input channels (model has {self.config.num_channels}), got {channels}")

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        x = self.features(self._check_channels(pixel_values))  # (B, C_last, h, w)
        logits = self.classifier(self._pool(x))  # (B, num_labels)
        logits = logits / getattr(
            self.config, "logit_temperature", 1.0
        )  # a calibrated model's softmax temperature (`python -m fer_hf.calibrate`; 1.0 = none), in every consumer
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        if return_dict is False:
            return (loss, logits) if loss is not None else (logits,)
        return ImageClassifierOutput(loss=loss, logits=logits)
