"""Publishing without network: tiny CNN / ViT / ResNet / LoRA runs are trained on the bundled real faces, staged by
`fer_hf.hub.publish --dry-run`, reloaded in a fresh process and compared with the run's own model; the card's numbers
are checked against metrics.json; uploads go to an unreachable endpoint or a local server that refuses them."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import shutil
import tempfile
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from huggingface_hub import ModelCard, SpaceCard, constants
from PIL import Image
from safetensors.torch import load_file

import fer_hf.hub.publish as publish
from fer_hf.cli import run as run_command
from fer_hf.hub.card import build_model_card
from fer_hf.hub.publish import UploadError, build_repository, load_run_model
from fer_hf.hub.validate import run_logits
from fer_hf.models.loading import load_classifier

REPO = Path(__file__).resolve().parents[1]
FAKE_TOKEN = "hf_FakeTokenForTests0123456789abcdefXYZ"
# 56 real faces, 1 epoch, no checkpoints: a few seconds per run on a CPU.
TINY_RUN = [
    *("--data.max_train_samples", "56", "--training.num_train_epochs", "1"),
    *("--training.per_device_train_batch_size", "28", "--training.save_strategy", '"no"'),
    *("--training.eval_strategy", '"no"', "--training.logging_strategy", '"no"'),
]
TINY_VIT = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
TINY_RESNET = dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
FAMILIES = {  # run name -> (extra recipe overrides, model class in the repository)
    "cnn": ([], "FerCnnForImageClassification"),
    "vit": (["--model.family", "vit"], "FerViTForImageClassification"),
    "resnet": (["--model.family", "resnet"], "FerResNetForImageClassification"),
    "lora": (["--model.family", "vit", "--model.lora", "{r: 4}"], "FerViTForImageClassification"),
}
BACKBONE = {"vit": "vit", "resnet": "resnet", "lora": "vit"}


@pytest.fixture(scope="module")
def backbones(tmp_path_factory) -> Path:
    """Tiny random stock checkpoints saved to disk: the families load them through from_pretrained, as from the Hub."""
    from transformers import (
        ResNetConfig,
        ResNetForImageClassification,
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessor,
    )

    root = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(0)
    ViTForImageClassification(ViTConfig(**TINY_VIT, intermediate_size=64, num_labels=3)).save_pretrained(root / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        root / "vit"
    )
    ResNetForImageClassification(ResNetConfig(**TINY_RESNET, num_labels=3)).save_pretrained(root / "resnet")
    return root


@pytest.fixture(scope="module")
def push_attempt() -> dict:
    """The CNN run's `push_to_hub: true` attempt: exit code, stderr and the staged folder it kept."""
    return {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, backbones, push_attempt):
    """name -> finished run folder, trained on first use. The CNN run is trained with `push_to_hub: true` and a
    fake HF_TOKEN against an unreachable Hub (http://127.0.0.1:9): the real upload code runs and fails."""
    from fer_hf.cli import run
    from fer_hf.train import main as train_main

    root, done = tmp_path_factory.mktemp("runs"), {}

    def get(name: str) -> Path:
        if name not in done:
            extra, _ = FAMILIES[name]
            args = ["recipes/smoke.yaml", *TINY_RUN, *extra, "--training.output_dir", str(root / name)]
            if name in BACKBONE:
                args += ["--model.name_or_path", str(backbones / BACKBONE[name]), "--model.head_hidden_sizes", "[16]"]
                args += ["--data.image_size", "32"]
            if name == "cnn":
                args += ["--training.push_to_hub", "true", "--training.hub_model_id", "me/fer-cnn"]
            with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(io.StringIO()) as err:
                mp.chdir(REPO)
                unreachable_hub(mp, root / "tmp")
                code = run(train_main, args)  # as `python -m fer_hf.train`: a failed upload is one line, exit 1
            if name == "cnn":
                kept = list((root / "tmp").glob("fer_hf_publish_*"))
                push_attempt.update(code=code, stderr=err.getvalue(), kept=kept)
            else:
                assert code == 0, err.getvalue()[-2000:]
            done[name] = root / name
        return done[name]

    return get


def unreachable_hub(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    """huggingface_hub pointed at a closed port (what HF_ENDPOINT=http://127.0.0.1:9 does), online, with a fake
    token; temporary folders go to `tmp`."""
    tmp.mkdir(parents=True, exist_ok=True)
    mp.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    mp.setattr(constants, "HF_HUB_OFFLINE", False)
    mp.setenv("HF_TOKEN", FAKE_TOKEN)
    mp.setenv("TMPDIR", str(tmp))
    mp.setattr(tempfile, "tempdir", None)


@pytest.fixture(scope="module")
def staged(runs, tmp_path_factory):
    """name -> (run folder, --dry-run folder, Validation report), staged on first use."""
    root, done = tmp_path_factory.mktemp("staged"), {}

    def get(name: str):
        if name not in done:
            run = runs(name)
            done[name] = (run, root / name, build_repository(run, root / name, repo_id=f"me/fer-{name}"))
        return done[name]

    return get


def real_faces(shared_fer: Path, n: int = 4) -> list[Image.Image]:
    """Real FER2013 faces from the full validation split (other faces than the ones publish validates on)."""
    rows = pq.read_table(shared_fer / "validation.parquet").slice(100, n).to_pylist()
    return [Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB") for r in rows]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_dry_run_repository_reloads_with_identical_logits(name, staged, shared_fer):
    run, stage, report = staged(name)
    files = {p.name for p in stage.iterdir()}
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md", "recipe.yaml"} <= files
    assert {"metrics.json", "training_curves.png", "confusion_matrix_validation.png"} <= files
    assert not {f for f in files if f.startswith(("checkpoint", "training_args", "adapter_"))}
    config = json.loads((stage / "config.json").read_text())
    for ref in config["auto_map"].values():  # the model's own code travels with it
        assert (stage / f"{ref.split('.')[0]}.py").is_file()
    # The fresh process (no fer_hf) loaded the repository's own class and matched the run's model.
    assert report.model_class == FAMILIES[name][1] and report.trust_remote_code
    assert report.pipeline_top1 == report.expected_top1 and report.num_faces == 7
    assert report.max_abs_logit_diff <= (1e-5 if name == "lora" else 0.0)
    # The card's own code examples ran there too and printed a probability for every class.
    labels = json.loads((run / "metrics.json").read_text())["labels"]
    assert all(f"'{label}': " in report.card_code_output for label in labels)
    # Independently, on other real faces: the staged folder predicts what the run's model predicts.
    faces = real_faces(shared_fer)
    expected = run_logits(load_run_model(run), faces)
    torch.testing.assert_close(run_logits(load_classifier(stage), faces), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_card_metadata_parses_and_equals_metrics(name, staged):
    run, stage, _ = staged(name)
    card = ModelCard.load(stage / "README.md")
    metrics = json.loads((run / "metrics.json").read_text())
    data = card.data
    assert (data.library_name, data.pipeline_tag, data.license) == (
        "transformers",
        "image-classification",
        "apache-2.0",
    )
    assert data.base_model is None  # a local backbone folder is not a Hub id
    assert data.datasets is None  # nor is the bundled sample, and its recipe declares no data.hub_dataset_id
    assert {"fer2013", "custom_code", metrics["model_family"]} <= set(data.tags)
    assert ("lora" in data.tags) == (name == "lora")
    values = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    assert values == {("validation", "accuracy"): metrics["validation"]["accuracy"]} | {
        ("validation", "f1"): metrics["validation"]["macro_f1"]
    }
    text = card.text
    assert f'model="me/fer-{name}", trust_remote_code=True' in text
    assert f"| {metrics['validation']['accuracy']:.4f} | {metrics['validation']['macro_f1']:.4f} |" in text
    assert "surveillance" in text and "hiring" in text and "validation (" in text
    import transformers

    assert f"- transformers {transformers.__version__}" in text.split("## Framework versions")[1]


def test_lora_adapters_are_merged_into_the_weights(staged, backbones):
    _, stage, _ = staged("lora")
    merged, base = load_file(str(stage / "model.safetensors")), load_file(str(backbones / "vit" / "model.safetensors"))
    query = [k for k in base if k.endswith("attention.query.weight") or k.endswith("q_proj.weight")]
    assert query and all(k in merged for k in query)
    assert any(not torch.equal(merged[k], base[k]) for k in query)  # trained adapters moved the query weights
    key = next(k for k in base if k.endswith("intermediate.dense.weight"))
    assert torch.equal(merged[key], base[key])  # untargeted layers stay frozen


def test_push_to_hub_recipe_stages_the_same_repository_and_fails_cleanly(runs, staged, push_attempt):
    run = runs("cnn")  # trained with push_to_hub: true, hub_model_id: me/fer-cnn, against an unreachable Hub
    assert push_attempt["code"] == 1  # training itself finished; the failed upload makes the exit code non-zero
    assert "upload to me/fer-cnn failed: cannot reach the Hub at http://127.0.0.1:9" in push_attempt["stderr"]
    [kept] = push_attempt["kept"]
    assert f"staged folder kept: {kept}" in push_attempt["stderr"]
    ModelCard.load(run / "README.md")  # fer_hf.train wrote the card into the run folder too
    _, stage, _ = staged("cnn")  # python -m fer_hf.hub.publish RUN --repo-id me/fer-cnn --dry-run STAGE
    assert sorted(p.name for p in kept.iterdir()) == sorted(p.name for p in stage.iterdir())
    for path in stage.iterdir():
        assert path.read_bytes() == (kept / path.name).read_bytes(), path.name


def test_no_token_in_any_written_file_or_message(runs, staged, push_attempt):
    run, stage, _ = staged("cnn")
    assert FAKE_TOKEN not in push_attempt["stderr"]
    written = [p for folder in (run, stage, *push_attempt["kept"]) for p in folder.rglob("*") if p.is_file()]
    assert len(written) > 20 and not [p for p in written if FAKE_TOKEN.encode() in p.read_bytes()]


def test_card_names_base_model_dataset_split_and_comparison(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs("cnn"), run)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["model"].update(family="vit", name_or_path="google/vit-base-patch16-224")
    recipe["data"]["source"] = "someone/fer2013"
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["test"] = dict(metrics["validation"], accuracy=0.5, macro_f1=0.25)
    (run / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "cmp.md").write_text("| model | accuracy |\n|---|---:|\n| fer-cnn | 0.61 |\n")
    card = build_model_card(run, repo_id="me/fer-vit", comparison=tmp_path / "cmp.md")
    parsed = ModelCard(str(card))  # round trip through huggingface_hub's parser
    assert parsed.data.base_model == "google/vit-base-patch16-224" and parsed.data.datasets == ["someone/fer2013"]
    first = parsed.data.eval_results[0]
    assert (first.dataset_split, first.metric_type, first.metric_value) == ("test", "accuracy", 0.5)
    assert "test (FER2013 PrivateTest)" in card.text and "validation (FER2013 PublicTest)" in card.text
    assert "## Comparison" in card.text and "| fer-cnn | 0.61 |" in card.text


CARD_METADATA_CASES = [  # (recipe changes: {section: {key: value}}, expected `datasets`, expected `base_model`)
    ({}, None, None),  # the bundled sample and a CNN from scratch: no Hub id to name
    ({"data": {"source": "../shared/fer2013"}}, None, None),  # a local copy, undeclared: nothing invented
    ({"data": {"source": "../shared/fer2013", "hub_dataset_id": "someone/fer2013"}}, ["someone/fer2013"], None),
    ({"data": {"source": "someone/fer2013"}}, ["someone/fer2013"], None),  # the source itself is a Hub id
    (
        {"model": {"family": "timm", "name_or_path": "timm/tf_efficientnet_lite0.in1k"}},
        None,
        "timm/tf_efficientnet_lite0.in1k",
    ),
    ({"model": {"family": "timm", "name_or_path": "runs/weights/efficientnet-lite0"}}, None, None),  # a local folder
]


@pytest.mark.parametrize(("changes", "datasets", "base_model"), CARD_METADATA_CASES)
def test_card_front_matter_names_hub_datasets_and_base_models_only_when_there_is_one(
    changes, datasets, base_model, runs, tmp_path
):
    run = tmp_path / "run"
    shutil.copytree(runs("cnn"), run)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    for section, values in changes.items():
        recipe[section].update(values)
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    card = str(build_model_card(run))
    front = yaml.safe_load(card.split("---\n")[1])  # the YAML between the first two --- lines
    assert front.get("datasets") == datasets and front.get("base_model") == base_model
    assert ("datasets" in front) == (datasets is not None) and ("base_model" in front) == (base_model is not None)
    dataset_types = {r["dataset"]["type"] for r in front["model-index"][0]["results"]}
    assert dataset_types == {datasets[0] if datasets else "fer2013"}  # model-index names the same dataset


def test_recipe_refuses_a_hub_dataset_id_that_is_not_one():
    from fer_hf.configs import RecipeError
    from fer_hf.recipe_parser import load_recipe

    assert load_recipe(REPO / "recipes/smoke.yaml").data.hub_dataset_id is None
    with pytest.raises(RecipeError, match=r"data.hub_dataset_id '../fer2013': expected a Hub dataset id"):
        load_recipe(REPO / "recipes/smoke.yaml", ["--data.hub_dataset_id", "../fer2013"])


class RefusingHub(http.server.BaseHTTPRequestHandler):
    status = 401

    def do_POST(self):  # noqa: N802  (http.server's naming)
        body = json.dumps({"error": "refused by the test server"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status, reason", [(401, "token is missing or invalid"), (403, "owned by someone else")])
def test_refused_upload_says_why_without_the_token(status, reason, staged, monkeypatch):
    _, stage, _ = staged("cnn")
    handler = type("Refusing", (RefusingHub,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    try:
        with pytest.raises(UploadError) as err:
            publish.upload_stage(stage, "someone-else/fer-cnn")
    finally:
        server.shutdown()
    assert reason in str(err.value) and FAKE_TOKEN not in str(err.value)
    assert (stage / "model.safetensors").is_file()


def test_tokens_are_scrubbed_from_copied_text_and_caught_in_binaries(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    run = tmp_path / "run"
    shutil.copytree(runs("cnn"), run)
    with (run / "recipe.yaml").open("a") as f:
        f.write(f"# pasted by mistake: {FAKE_TOKEN}\n")
    (tmp_path / "out").mkdir()
    publish.copy_run_files(run, tmp_path / "out")
    assert "# pasted by mistake: ***" in (tmp_path / "out" / "recipe.yaml").read_text()
    assert publish.files_with_tokens(tmp_path / "out") == []
    (tmp_path / "out" / "training_curves.png").write_bytes(b"\x89PNG" + FAKE_TOKEN.encode())
    assert publish.files_with_tokens(tmp_path / "out") == [tmp_path / "out" / "training_curves.png"]
    assert publish.scrub(f"Bearer {FAKE_TOKEN}") == "Bearer ***"


def test_space_dry_run_stages_the_app_configured_for_the_models(tmp_path, monkeypatch):
    from fer_hf.hub import publish_space

    out = tmp_path / "space"
    args = ["--repo-id", "me/fer-demo", "--models", "me/fer-cnn, me/fer-vit", "--dry-run", str(out)]
    assert publish_space.main(args) == 0
    card = SpaceCard.load(out / "README.md")
    import gradio

    assert (card.data.sdk, card.data.sdk_version, card.data.python_version) == ("gradio", gradio.__version__, "3.11")
    assert card.data.models == ["me/fer-cnn", "me/fer-vit"] and (out / card.data.app_file).is_file()
    assert (out / "fer_hf" / "__init__.py").is_file() and (out / "requirements.txt").is_file()
    assert not list(out.rglob("__pycache__"))
    variables = json.loads((out / publish_space.VARIABLES_FILE).read_text())
    assert variables[publish_space.MODELS_ENV] == "me/fer-cnn,me/fer-vit"
    assert (
        run_command(
            publish_space.main, ["--repo-id", "me/x", "--models", str(tmp_path), "--dry-run", str(tmp_path / "b")]
        )
        == 2
    )
    # An unreachable Hub: exit 1, the staged Space is kept and its path printed.
    unreachable_hub(monkeypatch, tmp_path)
    assert run_command(publish_space.main, ["--repo-id", "me/fer-demo"]) == 1
    assert [p for p in tmp_path.glob("fer_hf_space_*") if (p / "app.py").is_file()]


def test_card_augmentation_row_lists_what_was_on():
    from fer_hf.evaluation.results import RunRecord
    from fer_hf.hub.card import RunInfo
    from fer_hf.hub.card_sections import training_rows

    def row(augment: dict) -> str:
        record = RunRecord(model_family="cnn", labels=["a"], parameters=1, epochs=1)
        info = RunInfo(Path("run"), record, {"data": {"augment": augment}}, {})
        return dict(training_rows(info))["augmentation"]

    assert row({"hflip": 0.5, "rotation": 0, "mixup_alpha": 0.0, "mix_prob": 1.0}) == "hflip=0.5"
    assert row({"hflip": 0.0, "mixup_alpha": 0.2, "mix_prob": 0.5}) == "mixup_alpha=0.2, mix_prob=0.5"
