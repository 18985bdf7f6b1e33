"""fer_hf.explain on the astronaut photo from scikit-image, for tiny random CNN / ResNet / ViT models saved to tmp:
every method writes PNGs of the promised size for each family it supports, and refuses the others clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from fer_hf.cli import run
from fer_hf.explain import main
from fer_hf.inference.explanations import (
    GRADCAM_LAYERS,
    ExplainError,
    attention_rollout,
    explain,
    gradcam_layer,
    gradcam_map,
    saliency_map,
)
from fer_hf.inference.predictor import Predictor
from fer_hf.labels import FER_LABELS
from fer_hf.models.loading import load_classifier

SUPPORTED = {
    "cnn": ("saliency", "gradcam", "activations", "filters"),
    "resnet": ("saliency", "gradcam", "activations", "filters"),
    "vit": ("saliency", "attention", "filters"),  # filters: the patch-embedding convolution
}
UNSUPPORTED = [("cnn", "attention"), ("resnet", "attention"), ("vit", "gradcam"), ("vit", "activations")]


def _labels() -> dict:
    return {"id2label": dict(enumerate(FER_LABELS)), "label2id": {n: i for i, n in enumerate(FER_LABELS)}}


def _save_cnn(folder):
    from fer_hf.models.cnn_family import cnn_image_processor
    from fer_hf.models.hub_code import FerCnnConfig, FerCnnForImageClassification

    blocks = [
        {"out_channels": 8, "norm": "batch", "pool": "max"},
        {"out_channels": 24, "norm": "batch", "pool": "max"},
    ]
    FerCnnForImageClassification(FerCnnConfig(preset=None, blocks=blocks, global_pool="avg")).save_pretrained(folder)
    cnn_image_processor(48).save_pretrained(folder)


def _save_resnet(folder):
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", **_labels())
    ResNetForImageClassification(config).save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": 64}).save_pretrained(folder)


def _save_vit(folder):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        **_labels(),
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    folders = {}
    for family, save in (("cnn", _save_cnn), ("resnet", _save_resnet), ("vit", _save_vit)):
        folders[family] = tmp_path_factory.mktemp(family)
        save(folders[family])
    return {family: Predictor(load_classifier(folder)) for family, folder in folders.items()} | {"dirs": folders}


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(path)
    return path


def _grid_size(n: int, tile: int, cols: int = 8, gap: int = 2) -> tuple[int, int]:
    cols = min(cols, n)
    rows = -(-n // cols)
    return cols * tile + (cols - 1) * gap, rows * tile + (rows - 1) * gap


@pytest.mark.parametrize(("family", "method"), [(f, m) for f, methods in SUPPORTED.items() for m in methods])
def test_method_writes_pngs_of_the_right_size(models, photo, tmp_path, family, method):
    predictor = models[family]
    result = explain(predictor, photo, method, tmp_path, size=200)
    assert result.label in FER_LABELS and result.files and all(f.is_file() for f in result.files)
    sizes = [Image.open(f).size for f in result.files]
    model = predictor.loaded.model
    if method in ("saliency", "gradcam", "attention"):
        assert sizes == [(200, 200)]
    elif method == "filters":
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert sizes == [_grid_size(conv.out_channels, tile=32)]
    else:  # one grid per block / stage, of its 16 most active channels (fewer if the layer has fewer)
        widths = [b["out_channels"] for b in model.config.blocks] if family == "cnn" else [8, 8, 16]
        assert sizes == [_grid_size(min(16, c), tile=64) for c in widths]


@pytest.mark.parametrize(("family", "method"), UNSUPPORTED)
def test_method_refuses_families_it_does_not_support(models, photo, tmp_path, family, method):
    with pytest.raises(ExplainError, match="attention|transformer|activation maps"):
        explain(models[family], photo, method, tmp_path)
    assert not list(tmp_path.iterdir())


def test_gradcam_layer_lookup_by_model_type(models, monkeypatch):
    cnn, resnet = models["cnn"].loaded.model, models["resnet"].loaded.model
    pixels = torch.zeros(1, 3, 64, 64)
    assert gradcam_layer(cnn, torch.zeros(1, 3, 48, 48)) is cnn.features[-1].activation  # pre-pool, 12x12
    assert gradcam_layer(resnet, pixels) is resnet.resnet.encoder.stages[-1]
    # A model type missing from the table falls back to the last (B, C, h, w) map: the same stage here.
    monkeypatch.delitem(GRADCAM_LAYERS, "resnet")
    assert gradcam_layer(resnet, pixels) is resnet.resnet.encoder.stages[-1]


def test_maps_are_normalised_and_depend_on_the_face(models):
    model = models["cnn"].loaded.model
    face = torch.linspace(-1, 1, 48 * 48).reshape(1, 1, 48, 48).repeat(1, 3, 1, 1)
    for fn in (saliency_map, gradcam_map):
        heat = fn(model, face, 0)
        assert heat.shape == (48, 48) and heat.min() == 0 and heat.max() == pytest.approx(1)
        assert not np.allclose(heat, fn(model, face.flip(-1), 0))  # a different face gives a different map


def test_saliency_masks_pixels_the_model_ignores(models):
    """The CNN's RGB input is averaged to gray: the gradient is equal across channels, and zero for a pixel that
    is cut off from the output (here: a model that only sees the left half)."""
    model = models["cnn"].loaded.model
    x = torch.randn(1, 3, 48, 48)

    class LeftHalf(torch.nn.Module):
        config = model.config

        def forward(self, pixel_values):
            return model(
                pixel_values=torch.cat([pixel_values[..., :24], torch.zeros_like(pixel_values[..., 24:])], -1)
            )

    heat = saliency_map(LeftHalf(), x, 3)
    assert heat[:, 24:].max() == 0 and heat[:, :24].max() == 1


def test_attention_rollout_restores_the_attention_implementation(models):
    model = models["vit"].loaded.model
    before = model.config._attn_implementation
    heat = attention_rollout(model, torch.randn(1, 3, 32, 32))
    assert heat.shape == (32, 32) and heat.max() == pytest.approx(1)
    assert model.config._attn_implementation == before


def test_cli_all_methods_and_a_bad_target(models, photo, tmp_path, capsys):
    cnn_dir = str(models["dirs"]["cnn"])
    assert main(["--model", cnn_dir, str(photo), "--method", "all", "--output", str(tmp_path / "all")]) == 0
    out, err = capsys.readouterr()
    assert "attention: skipped" in err and "gradcam:" in out
    names = sorted(p.name for p in (tmp_path / "all").iterdir())
    assert names == [
        "astronaut_activations_block0.png",
        "astronaut_activations_block1.png",
        "astronaut_gradcam.png",
        "astronaut_saliency.png",
        "filters.png",
    ]
    argv = ["--model", cnn_dir, str(photo), "--method", "saliency", "--output", str(tmp_path / "x"), "--target", "joy"]
    assert run(main, argv) == 2  # the whole run fails: one error line (cli convention), not a skipped line
    err = [
        line
        for line in capsys.readouterr().err.splitlines()
        if line.strip() and not line.startswith("Loading weights")
    ]
    assert len(err) == 1 and err[0].startswith("error: --target 'joy' is not a class of this model"), err
    assert not (tmp_path / "x").exists()


def test_no_face_is_a_clear_error(models, tmp_path):
    Image.fromarray(skdata.coins()).save(tmp_path / "coins.png")
    with pytest.raises(ExplainError, match="no face found"):
        explain(models["cnn"], tmp_path / "coins.png", "saliency", tmp_path / "out")
