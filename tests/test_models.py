"""Model families: build, train a step, layer groups, CNN presets, save -> reload in a fresh process, pipeline, LoRA.

ViT and ResNet weights come through the real `from_pretrained` path: tiny random stock checkpoints are saved to a
temporary folder (as a Hub repo would hold them) and the families load that folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from skimage import data as skdata
from transformers import (
    AutoModelForImageClassification,
    BertConfig,
    BertModel,
    ResNetConfig,
    ResNetForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
    pipeline,
)
from transformers.image_utils import IMAGENET_DEFAULT_MEAN

from fer_hf.configs import ModelArgs
from fer_hf.data.transforms import BatchTransform
from fer_hf.labels import FER_LABELS
from fer_hf.models import MODEL_FAMILIES, BuiltModel, build_model
from fer_hf.models.heads import BatchNormHead, check_head_sizes
from fer_hf.models.hub_code import PRESETS
from fer_hf.models.lora import merge_lora

FAMILIES = ("cnn", "vit", "resnet")
TINY_VIT = dict(
    hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
)
TINY_RESNET = dict(embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1], layer_type="basic")
VIT_OWN_MEAN, VIT_OWN_STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
# Parameter counts published in ../shared/docs/REPORTS.md for 7 classes.
PUBLISHED_PARAMS = {
    "report-a-model1": 1_849_223,
    "report-a-model2": 5_223_047,
    "report-a-model3": 8_409_543,
    "report-b-v2": 404_935,
    "report-c-baseline": 167_911,
}


@pytest.fixture(scope="module")
def backbones(tmp_path_factory) -> dict[str, Path]:
    """Stock checkpoints saved like Hub repos: a ViT with its own image processor, a ResNet without one."""
    root = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(0)
    ViTForImageClassification(ViTConfig(**TINY_VIT, num_labels=10)).save_pretrained(root / "vit")
    own = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=VIT_OWN_MEAN, image_std=VIT_OWN_STD)
    own.save_pretrained(root / "vit")
    ResNetForImageClassification(ResNetConfig(**TINY_RESNET, num_labels=10)).save_pretrained(root / "resnet")
    return {"vit": root / "vit", "resnet": root / "resnet"}


def build(family: str, backbones: dict[str, Path], image_size: int | None = None, **model_kw) -> BuiltModel:
    path = str(backbones[family]) if family in backbones else None
    args = ModelArgs(family=family, name_or_path=path, head_hidden_sizes=[16, 8], head_dropout=0.1, **model_kw)
    return build_model(args, FER_LABELS, image_size=image_size)


@pytest.fixture(scope="module")
def faces(bundled_dd) -> dict:
    """Real 48x48 FER2013 faces from the bundled sample: PIL images, uint8 (B, 48, 48) and their labels."""
    split = bundled_dd["validation"].select(range(8))
    images = list(split["image"])
    pixels = torch.from_numpy(np.stack([np.asarray(im.convert("L")) for im in images]))
    return {"pil": images, "pixels": pixels, "labels": torch.tensor(split["label"])}


def model_input(built: BuiltModel, pixels: torch.Tensor) -> torch.Tensor:
    """The training collator's evaluation path: uint8 (B, H, W) -> (B, C, S, S) normalised."""
    return BatchTransform(size=built.image_size, channels=built.channels, mean=built.mean, std=built.std)(pixels)


def test_registry_has_the_families():
    assert set(FAMILIES) <= set(MODEL_FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_builds_and_trains_a_step(family, backbones, faces):
    built = build(
        family, backbones, image_size=64 if family == "resnet" else None
    )  # ResNet: 64 px, not 224, for speed
    x = model_input(built, faces["pixels"])  # (B, C, S, S)
    assert x.shape == (8, built.channels, built.image_size, built.image_size)
    out = built.model.train()(pixel_values=x, labels=faces["labels"])
    assert out.logits.shape == (8, len(FER_LABELS))
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    out.loss.backward()
    head_grads = [p.grad for n, p in built.model.named_parameters() if n.startswith("classifier.")]
    assert head_grads and all(g is not None and g.abs().sum() > 0 for g in head_grads[-2:])
    assert built.model.config.id2label == dict(enumerate(FER_LABELS))


@pytest.mark.parametrize("family", ["vit", "resnet"])
def test_backbone_weights_come_from_the_checkpoint(family, backbones):
    stock = AutoModelForImageClassification.from_pretrained(backbones[family]).state_dict()
    model = build(family, backbones).model
    shared = {n: p for n, p in model.state_dict().items() if not n.startswith("classifier.")}
    assert shared and set(shared) <= set(stock)
    assert all(torch.equal(p, stock[n]) for n, p in shared.items())
    assert model.config.model_type == f"fer_{family}"
    assert model.classifier.output.out_features == len(FER_LABELS)


def test_processor_is_the_checkpoints_own_or_the_family_default(backbones):
    vit = build("vit", backbones)
    assert (vit.image_size, vit.mean, vit.std) == (32, VIT_OWN_MEAN, VIT_OWN_STD)  # the folder's processor
    resnet = build("resnet", backbones)  # no processor in the folder: ImageNet default at 224, no centre crop
    assert (resnet.image_size, resnet.channels) == (224, 3)
    assert resnet.mean == pytest.approx(list(IMAGENET_DEFAULT_MEAN))
    assert resnet.image_processor.crop_pct == 1.0
    assert build("resnet", backbones, image_size=96).image_size == 96  # the recipe's data.image_size wins


def test_batchnorm_head_layout():
    head = BatchNormHead(768, 7)  # default 512-256-128-64
    kinds = [type(m).__name__ for m in head.hidden]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout"] * 4
    assert [m.out_features for m in head.hidden if isinstance(m, torch.nn.Linear)] == [512, 256, 128, 64]
    assert head.output.in_features == 64 and head.output.out_features == 7
    assert head.eval()(torch.randn(3, 768)).shape == (3, 7)


@pytest.mark.parametrize("sizes", [[512, 0], [-1], [64, 2.5], "512"])
def test_head_sizes_must_be_positive_ints(sizes, backbones):
    with pytest.raises(ValueError, match="positive ints"):
        check_head_sizes(sizes)
    with pytest.raises(ValueError, match="positive ints"):
        build_model(ModelArgs(family="vit", name_or_path=str(backbones["vit"]), head_hidden_sizes=sizes), FER_LABELS)


def assert_groups_partition(model: torch.nn.Module, groups: list[tuple[str, list[str]]]) -> None:
    names = [g for g, _ in groups]
    assert names[0] == "head" and len(set(names)) == len(names)
    for param, _ in model.named_parameters():
        owners = [g for g, prefixes in groups if any(param.startswith(p) for p in prefixes)]
        assert len(owners) == 1, f"{param} is in groups {owners}"


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        ("vit", ["head", "encoder.layer.2", "encoder.layer.1", "encoder.layer.0", "embeddings"]),
        ("resnet", ["head", "stage4", "stage3", "stage2", "stage1", "stem"]),
        ("cnn", ["head", "features.4", "features.3", "features.2", "features.1", "features.0"]),
    ],
)
def test_layer_groups_cover_every_parameter_once(family, expected, backbones):
    built = build(family, backbones)
    assert [g for g, _ in built.layer_groups] == expected
    assert_groups_partition(built.model, built.layer_groups)


@pytest.mark.parametrize(("preset", "count"), PUBLISHED_PARAMS.items())
def test_cnn_preset_matches_published_parameter_count(preset, count):
    model = build_model(ModelArgs(family="cnn", preset=preset), FER_LABELS).model
    assert sum(p.numel() for p in model.parameters()) == count


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_cnn_preset_runs_on_faces(preset, faces):
    built = build_model(ModelArgs(family="cnn", preset=preset), FER_LABELS)
    logits = built.model.eval()(pixel_values=model_input(built, faces["pixels"])).logits
    assert logits.shape == (8, 7) and torch.isfinite(logits).all()


@pytest.mark.parametrize("preset", ["fer-resnet", "report-a-model1"])  # a grayscale and an RGB preset
def test_cnn_takes_gray_or_rgb_input(preset, faces):
    built = build_model(ModelArgs(family="cnn", preset=preset), FER_LABELS)
    gray = BatchTransform(size=48, channels=1, mean=built.mean, std=built.std)(faces["pixels"])  # (B, 1, 48, 48)
    model = built.model.eval()
    with torch.no_grad():  # the same face as 1 channel or repeated as RGB: the same prediction
        torch.testing.assert_close(model(gray).logits, model(gray.expand(-1, 3, -1, -1)).logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_two_channel_input_is_rejected(family, backbones):
    built = build(family, backbones)
    with pytest.raises(ValueError, match="1 or 3"):
        built.model.eval()(pixel_values=torch.zeros(2, 2, built.image_size, built.image_size))


@pytest.fixture(scope="module")
def saved(backbones, faces, tmp_path_factory) -> dict[str, tuple[Path, BuiltModel]]:
    """Each family at 48 px, BatchNorm statistics moved by a few training passes, saved with its processor."""
    root = tmp_path_factory.mktemp("saved")
    out = {}
    for family in FAMILIES:
        torch.manual_seed(1)
        built = build(family, backbones, image_size=48)
        x = model_input(built, faces["pixels"])
        with torch.no_grad():
            for _ in range(3):
                built.model.train()(pixel_values=x)
        built.model.eval()
        built.model.save_pretrained(root / family)
        built.image_processor.save_pretrained(root / family)
        out[family] = (root / family, built)
    return out


RELOAD_SCRIPT = """
import json, sys
import torch
from transformers import AutoModelForImageClassification
folders, inputs, out, remote = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "remote"
if not remote:
    import fer_hf.models  # registers the fer_* model types with the Auto classes
x = torch.load(inputs)
result = {"logits": {}, "modules": {}}
for family, folder in folders.items():
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=remote).eval()
    with torch.no_grad():
        result["logits"][family] = model(pixel_values=x[family]).logits
    result["modules"][family] = type(model).__module__
result["fer_hf_imported"] = "fer_hf" in sys.modules
torch.save(result, out)
"""


def reload_in_fresh_process(saved, faces, tmp_path: Path, remote: bool) -> tuple[dict, dict]:
    inputs = {f: model_input(built, faces["pixels"]) for f, (_, built) in saved.items()}
    with torch.no_grad():
        expected = {f: built.model(pixel_values=inputs[f]).logits for f, (_, built) in saved.items()}
    torch.save(inputs, tmp_path / "inputs.pt")
    (tmp_path / "reload.py").write_text(textwrap.dedent(RELOAD_SCRIPT))
    folders = json.dumps({f: str(folder) for f, (folder, _) in saved.items()})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    args = [sys.executable, "reload.py", folders, "inputs.pt", "out.pt", "remote" if remote else "local"]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return expected, torch.load(tmp_path / "out.pt")


def test_reload_with_auto_classes_in_a_fresh_process(saved, faces, tmp_path):
    expected, result = reload_in_fresh_process(saved, faces, tmp_path, remote=False)
    for family in FAMILIES:
        assert torch.equal(result["logits"][family], expected[family]), family
        assert result["modules"][family].startswith("fer_hf.models")


def test_reload_with_trust_remote_code_without_fer_hf(saved, faces, tmp_path):
    """The saved folder carries its own code: loading it never imports fer_hf."""
    expected, result = reload_in_fresh_process(saved, faces, tmp_path, remote=True)
    assert result["fer_hf_imported"] is False
    for family in FAMILIES:
        assert torch.equal(result["logits"][family], expected[family]), family
        assert result["modules"][family].startswith("transformers_modules")


@pytest.mark.parametrize("family", FAMILIES)
def test_pipeline_on_a_gray_face_and_a_photo(family, saved, faces):
    folder, built = saved[family]
    classify = pipeline("image-classification", model=str(folder), device="cpu")
    face = faces["pil"][0]
    assert face.size == (48, 48) and face.mode == "L"
    for image in (face, skdata.astronaut()):  # raw 48x48 grayscale face; 512x512 RGB photo
        preds = classify(image, top_k=7)
        assert sorted(p["label"] for p in preds) == sorted(FER_LABELS)
        assert sum(p["score"] for p in preds) == pytest.approx(1.0, abs=1e-4)
    # The saved processor reproduces the training collator: same probabilities as the training input path.
    with torch.no_grad():
        probs = built.model(pixel_values=model_input(built, faces["pixels"][:1])).logits.softmax(-1)[0]
    scores = {p["label"]: p["score"] for p in classify(face, top_k=7)}
    assert [scores[n] for n in FER_LABELS] == pytest.approx(probs.tolist(), abs=1e-4)


def test_lora_trains_only_adapters_and_head_and_reloads(backbones, faces, tmp_path):
    built = build("vit", backbones, lora={"r": 4, "alpha": 8, "dropout": 0.0})
    model = built.model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in trainable) and any("classifier" in n for n in trainable)
    assert all("lora_" in n or ".modules_to_save." in n for n in trainable)
    assert_groups_partition(model, built.layer_groups)
    x = model_input(built, faces["pixels"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    for _ in range(2):
        model.train()(pixel_values=x, labels=faces["labels"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.equal(p, frozen_before[n]) for n, p in model.named_parameters() if not p.requires_grad)
    with torch.no_grad():
        expected = model.eval()(pixel_values=x).logits
    model.save_pretrained(tmp_path / "adapter")
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["modules_to_save"] == ["classifier"]
    assert set(adapter_config["target_modules"]) in ({"q_proj", "v_proj"}, {"query", "value"})  # attention q, v
    base = build("vit", backbones).model  # a fresh backbone with a new random head
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(pixel_values=x).logits, expected)
    merged = merge_lora(reloaded)  # one plain FerViT model: saves and reloads through the Auto classes
    merged.save_pretrained(tmp_path / "merged")
    again = AutoModelForImageClassification.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(pixel_values=x).logits, expected, atol=1e-5, rtol=1e-4)


def test_lora_options_are_checked(backbones):
    with pytest.raises(ValueError, match="unknown keys"):
        build("vit", backbones, lora={"rank": 8})
    with pytest.raises(ValueError, match="positive int"):
        build("vit", backbones, lora={"r": 0})
    with pytest.raises(ValueError, match="vit family only"):
        build("resnet", backbones, lora={"r": 4})


def test_unknown_family_and_preset_are_rejected():
    with pytest.raises(ValueError, match="unknown model family 'vgg'"):
        build_model(ModelArgs(family="vgg"), FER_LABELS)
    with pytest.raises(ValueError, match="unknown FerCnn preset 'nope'"):
        build_model(ModelArgs(family="cnn", preset="nope"), FER_LABELS)


def test_a_checkpoint_that_is_not_an_image_classifier_is_rejected(backbones, tmp_path):
    tiny_bert = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertModel(tiny_bert).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="'bert' checkpoint"):
        build_model(ModelArgs(family="vit", name_or_path=str(tmp_path / "bert")), FER_LABELS)
    with pytest.raises(ValueError, match="'vit' checkpoint.*not a ResNet"):
        build_model(ModelArgs(family="resnet", name_or_path=str(backbones["vit"])), FER_LABELS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot read a model config"):
        build_model(ModelArgs(family="vit", name_or_path=str(tmp_path / "empty")), FER_LABELS)
