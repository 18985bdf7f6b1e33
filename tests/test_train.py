"""`python -m fer_hf.train`: artefacts, 2-process DDP, resume, recipe errors, losses and the balanced sampler.

Runs on the package's bundled real FER2013 sample with a tiny CNN. Run as a script (under `accelerate launch`) this
file is also the DDP entry point: each rank writes a digest of its final parameters and buffers.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import Trainer, TrainerCallback

from fer_hf.configs import FerTrainingArguments, RecipeError
from fer_hf.recipe_parser import load_recipe, parse_recipe
from fer_hf.train import main
from fer_hf.training.callbacks import StopAfterEpochsCallback, parameter_digest
from fer_hf.training.losses import FocalLoss, WeightedCrossEntropy
from fer_hf.training.run import train_from_recipe
from fer_hf.training.trainer import EpochWeightedSampler, balanced_sample_weights, recipe_loss

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "recipes" / "smoke.yaml"
CPU_DDP = REPO / "recipes" / "accelerate_configs" / "cpu_ddp.yaml"
TINY_CNN = (
    "{blocks: [{out_channels: 4, norm: batch, pool: max}, {out_channels: 8, norm: batch, pool: max},"
    " {out_channels: 8, norm: batch, pool: max}], global_pool: avg, hidden_sizes: [], classifier_dropout: 0.2}"
)


def tiny_args(out: Path, *overrides: str) -> list[str]:
    """The smoke recipe on 64 real faces with a ~1.3k-parameter CNN (dropout and augmentation stay on), 2 epochs
    unless the overrides say otherwise: the recipe's own 20 are for learning, these runs check the plumbing."""
    epochs = [] if "--training.num_train_epochs" in overrides else ["--training.num_train_epochs", "2"]
    return [
        str(SMOKE),
        *("--training.output_dir", str(out), "--model.cnn_overrides", TINY_CNN),
        *("--data.max_train_samples", "64", "--training.per_device_train_batch_size", "16"),
        *("--training.disable_tqdm", "true", "--training.ddp_find_unused_parameters", "false"),
        *epochs,
        *overrides,
    ]


def test_smoke_recipe_trains_and_writes_artefacts(tmp_path, capsys):
    out = tmp_path / "smoke"
    assert main(tiny_args(out, "--training.num_train_epochs", "1")) == 0
    printed = capsys.readouterr().out  # the command ends with the run folder and what to run with it next
    assert f"run folder: {out} (" in printed
    assert f"python -m fer_hf.evaluate {out} --data bundled" in printed
    assert f"python -m fer_hf.predict --model {out} photo.jpg" in printed and "recipes/cnn.yaml" in printed
    for name in (
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "recipe.yaml",
        "per_class_validation.md",
    ):
        assert (out / name).stat().st_size > 0, name
    for png in ("confusion_matrix_validation.png", "training_curves.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and min(im.size) > 100
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation"]["num_samples"] == 70
    assert 0.0 <= metrics["validation"]["accuracy"] <= 1.0
    assert sum(map(sum, metrics["validation"]["confusion_matrix"])) == 70
    assert metrics["hardware"].endswith(f"{len(os.sched_getaffinity(0))} CPU cores")  # named in the model card
    assert metrics["hardware"] in (out / "README.md").read_text()
    saved = load_recipe(out / "recipe.yaml")  # the resolved recipe reloads as the same settings
    assert (
        saved.to_dict()
        == load_recipe(*_path_and_overrides(tiny_args(out, "--training.num_train_epochs", "1"))).to_dict()
    )
    # ... holding every TrainingArguments input the run used (no tokens), so re-running it gives the same arguments
    # even without the library's defaults; a derived setting left unset is derived again from an overridden key.
    import yaml
    from transformers import TrainingArguments

    training = yaml.safe_load((out / "recipe.yaml").read_text())["training"]
    init_fields = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    assert set(training) == init_fields - {"hub_token", "token"} and training["remove_unused_columns"] is False
    ran = TrainingArguments(**training)
    assert ran.to_dict() == saved.training.to_dict() and ran.num_train_epochs == 1
    assert training["greater_is_better"] is None
    loss_first = load_recipe(out / "recipe.yaml", ["--training.metric_for_best_model", "loss"]).training
    assert loss_first.greater_is_better is False
    # The run folder is a transformers model folder: pipeline() loads it once fer_hf is imported (this module
    # imports it), no trust_remote_code, and gives every class a probability for a real bundled face.
    from transformers import pipeline

    classify = pipeline("image-classification", model=str(out), device="cpu")
    row = pq.read_table(REPO / "fer_hf/assets/fer2013_sample/validation.parquet").slice(0, 1).to_pylist()[0]
    preds = classify(Image.open(io.BytesIO(row["image"]["bytes"])), top_k=7)
    assert sorted(p["label"] for p in preds) == sorted(metrics["labels"])
    assert sum(p["score"] for p in preds) == pytest.approx(1.0, abs=1e-4)


def test_smoke_recipe_learns_above_chance(tmp_path):
    """recipes/smoke.yaml as `make smoke` runs it, nothing overridden but the folder: a first run must show learning
    on the bundled sample's 70 validation faces. Chance is 1/7 = 0.143; seeds 42 (the recipe's), 0 and 7 gave 0.37,
    0.34 and 0.24 (docs/experiments.md): 70 faces make a noisy score, hence a bar of 0.2, which 2 epochs missed."""
    out = tmp_path / "smoke"
    assert main([str(SMOKE), "--training.output_dir", str(out), "--training.disable_tqdm", "true"]) == 0
    validation = json.loads((out / "metrics.json").read_text())["validation"]
    assert validation["num_samples"] == 70 and validation["accuracy"] >= 0.2, validation["accuracy"]


def test_run_folder_has_the_transformers_results_files_and_they_agree_with_metrics_json(tmp_path):
    out = tmp_path / "hf_results"
    assert main(tiny_args(out, "--training.num_train_epochs", "1")) == 0
    record = json.loads((out / "metrics.json").read_text())  # the typed record: the source of truth
    train = json.loads((out / "train_results.json").read_text())
    evaluation = json.loads((out / "eval_results.json").read_text())
    combined = json.loads((out / "all_results.json").read_text())
    assert train["epoch"] == record["epochs"] == 1 and train["train_samples"] == 64 and train["train_loss"] > 0
    assert train["train_runtime"] > 0 and train["train_samples_per_second"] > 0
    validation = record["validation"]
    for key in ("accuracy", "macro_f1", "weighted_f1", "top2_accuracy", "ece", "nll"):
        assert evaluation[f"eval_{key}"] == validation[key], key
    assert evaluation["eval_samples"] == validation["num_samples"] == 70
    assert evaluation["eval_runtime"] == validation["seconds"]
    assert combined == {**train, **evaluation}  # all_results.json: both, as the example scripts leave it


def _path_and_overrides(argv: list[str]) -> tuple[str, list[str]]:
    return argv[0], argv[1:]


def test_mixup_and_cutmix_recipe_trains_through_the_trainer(tmp_path):
    mixing = ("--data.augment.mixup_alpha", "0.4", "--data.augment.cutmix_alpha", "1.0")
    out = tmp_path / "mix"
    trainer = train_from_recipe(load_recipe(*_path_and_overrides(tiny_args(out, *mixing))))
    assert trainer.mixer is not None and trainer.mixer.augment.cutmix_alpha == 1.0
    train_loss = trainer.state.log_history[-1]["train_loss"]
    assert 0.0 < train_loss < 10.0  # finite: the mixed loss trained
    saved = load_recipe(out / "recipe.yaml").data.augment  # the run records its mixing
    assert (saved.mixup_alpha, saved.cutmix_alpha, saved.rotation) == (0.4, 1.0, 10)  # smoke.yaml keeps its own


class DigestCallback(TrainerCallback):
    """Each rank writes sha256(parameters + buffers) of its own model copy when training ends."""

    def on_train_end(self, args, state, control, model=None, **kwargs):
        rank = int(os.environ.get("RANK", "0"))
        Path(args.output_dir, f"digest_rank{rank}.txt").write_text(parameter_digest(model, buffers=False))
        Path(args.output_dir, f"buffers_rank{rank}.txt").write_text(parameter_digest(model))


def ddp_entry(argv: list[str]) -> None:
    """`accelerate launch ... tests/test_train.py RECIPE [--key value ...]`: train and dump per-rank digests."""
    train_from_recipe(load_recipe(argv[0], argv[1:]), extra_callbacks=[DigestCallback()])


def test_two_gloo_processes_with_unfreezing_stay_bit_identical(tmp_path):
    out = tmp_path / "ddp"
    argv = tiny_args(out, "--unfreeze.schedule", "{1: [features.2]}", "--unfreeze.layerwise_decay", "0.5")
    argv += ["--data.sampler", "weighted", "--training.num_train_epochs", "2", "--training.save_strategy", "'no'"]
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(CPU_DDP), "--num_cpu_threads_per_process", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*cmd, __file__, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    digests = [(out / f"digest_rank{r}.txt").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert done.stdout.count("validation: accuracy") == 1  # only rank 0 reports and writes


def test_resume_after_a_cut_reaches_the_same_weights(tmp_path):
    common = ("--training.num_train_epochs", "3", "--unfreeze.schedule", "{1: [features.2]}")
    common += ("--data.sampler", "weighted", "--training.save_strategy", "epoch", "--training.eval_strategy", "epoch")
    straight = train_from_recipe(load_recipe(*_path_and_overrides(tiny_args(tmp_path / "a", *common))))
    cut_args = _path_and_overrides(tiny_args(tmp_path / "b", *common))
    cut = train_from_recipe(load_recipe(*cut_args), extra_callbacks=[StopAfterEpochsCallback(1)])
    assert cut.state.epoch == 1
    assert parameter_digest(cut.model) != parameter_digest(straight.model)
    saved = json.loads(next((tmp_path / "b").glob("checkpoint-*/trainer_state.json")).read_text())
    clock = saved["stateful_callbacks"]["TrainingClockCallback"]["args"]
    assert clock["earlier_sessions"] == 1 and clock["seconds_before"] > 0
    start = time.perf_counter()
    resumed = train_from_recipe(load_recipe(cut_args[0], [*cut_args[1], "--run.resume", "true"]))
    resumed_seconds = time.perf_counter() - start
    assert resumed.state.epoch == 3
    assert parameter_digest(resumed.model) == parameter_digest(straight.model)
    # metrics.json counts the time of both sessions, not only the resumed one's
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["train_sessions"] == 2
    # only the head and features.2 ever trained: the groups left frozen do not count as trainable
    assert 0 < metrics["trainable_parameters"] < metrics["parameters"]
    assert clock["seconds_before"] < metrics["train_seconds"] < clock["seconds_before"] + resumed_seconds
    # An evaluation of the run reports what the run trained (the comparison's `trainable` column), not what the
    # loaded model could train (every parameter of it requires grad).
    from fer_hf import evaluate

    assert evaluate.main([str(tmp_path / "b"), "--data", "bundled", "--output", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["trainable_parameters"] == metrics["trainable_parameters"] < report["parameters"]


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        (("--training.learning_rat", "0.1"), RecipeError, "Did you mean 'learning_rate'"),
        (("--data.sorce", "bundled"), RecipeError, "Did you mean 'source'"),
        (("--model.family", "vitt"), ValueError, r"unknown model family 'vitt'; choose one of \[.*'cnn'"),
        (("--unfreeze.schedule", "{1: [features.7]}"), RecipeError, "unknown layer group 'features.7'"),
        (("--data.classes", "[happy, sadd]"), ValueError, "unknown class 'sadd'"),
        (("--data.augment.mixup_alpha", "-0.2"), RecipeError, "mixup_alpha must be >= 0"),
        (
            ("--training.optim_args", "momentum"),
            RecipeError,
            "optim_args 'momentum': expected comma-separated key=value",
        ),
        (
            ("--data.max_train_samples", "65"),
            RecipeError,
            "65 training faces in batches of 16 leave a last batch of 1",
        ),
    ],
)
def test_recipe_errors_say_what_to_fix(tmp_path, override, error, message):
    out = tmp_path / "run"
    with pytest.raises(error, match=message):
        main(tiny_args(out, *override))
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_nested_overrides_set_one_key_and_keep_the_others():
    recipe = load_recipe(REPO / "recipes" / "cnn.yaml", ["--data.augment.mixup_alpha", "0.2"])
    assert recipe.data.augment.mixup_alpha == 0.2
    assert recipe.data.augment.rotation == 10 and recipe.data.augment.random_erasing == 0.25  # from the recipe
    with pytest.raises(RecipeError, match="'source' is '../shared/fer2013' in the recipe, not a mapping"):
        load_recipe(REPO / "recipes" / "cnn.yaml", ["--data.source.path", "x"])


def test_flat_trainer_flags_are_aliases_of_training_keys():
    recipe = load_recipe(
        REPO / "recipes" / "cnn.yaml",
        [
            *("--output_dir", "runs/elsewhere", "--learning-rate", "0.02", "--num_train_epochs=3"),
            *("--push_to_hub", "false", "--weight_decay", "0.05", "--warmup_steps", "100"),
            *("--report_to", "tensorboard"),
        ],
    )
    training = recipe.training  # FerTrainingArguments, read as attributes
    assert isinstance(training, FerTrainingArguments)
    assert training.output_dir == "runs/elsewhere" and training.learning_rate == 0.02
    assert training.num_train_epochs == 3 and training.push_to_hub is False
    assert (training.weight_decay, training.warmup_steps, training.report_to) == (0.05, 100, ["tensorboard"])
    assert training.per_device_train_batch_size == 64  # untouched keys keep the recipe's values
    assert recipe.training_inputs["weight_decay"] == 0.05  # what recipe.yaml saves: the inputs as given
    with pytest.raises(RecipeError, match="training.seed is already given by --seed; give it once"):
        load_recipe(REPO / "recipes" / "cnn.yaml", ["--seed", "1", "--training.seed", "2"])
    with pytest.raises(RecipeError, match="training.num_train_epochs: must be positive"):
        load_recipe(REPO / "recipes" / "cnn.yaml", ["--num_train_epochs", "0"])  # checked as the long form is
    with pytest.raises(RecipeError, match="--weight_decy: not a TrainingArguments flag; did you mean --weight_decay?"):
        load_recipe(REPO / "recipes" / "cnn.yaml", ["--weight_decy", "0.1"])


def test_bare_booleans_stand_alone_and_take_a_value_when_given_one():
    recipe = load_recipe(
        REPO / "recipes" / "cnn.yaml", ["--push_to_hub", "--run.resume", "--data.augment.hflip", "0.2", "--use_cpu"]
    )
    assert recipe.training.push_to_hub is True and recipe.run.resume is True and recipe.training.use_cpu is True
    assert recipe.data.augment.hflip == 0.2  # a float key still takes its value
    recipe = load_recipe(REPO / "recipes" / "cnn.yaml", ["--push_to_hub", "false", "--run.resume", "no"])
    assert recipe.training.push_to_hub is False and recipe.run.resume is False
    with pytest.raises(RecipeError, match="--learning_rate: missing its value"):
        load_recipe(REPO / "recipes" / "cnn.yaml", ["--learning_rate"])
    with pytest.raises(RecipeError, match="training.push_to_hub: expected true or false"):
        load_recipe(REPO / "recipes" / "cnn.yaml", ["--push_to_hub", "maybe"])


def test_help_lists_every_key_with_its_default_and_the_trainer_flags(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_recipe(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "--data.source (default: None)" in text and "--run.resume (default: False)" in text
    assert "--weight_decay WEIGHT_DECAY" in text and "--output_dir OUTPUT_DIR" in text
    assert "runs/default" in text  # fer_hf's own default, shown by HfArgumentParser


def test_gpu_recipes_say_how_to_run_on_the_cpu():
    """vit_unfreeze.yaml asks for bf16; on a machine without a bf16 GPU the recipe is refused with the fix."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the recipe runs as written")
    with pytest.raises(RecipeError, match="training: .*bf16.*add --use_cpu true"):
        load_recipe(REPO / "recipes" / "vit_unfreeze.yaml")
    assert load_recipe(REPO / "recipes" / "vit_unfreeze.yaml", ["--use_cpu"]).training.use_cpu is True


def test_default_recipes_train_with_sgd_nesterov():
    """The shipped optimizer settings reach torch.optim.SGD through the Trainer's optim/optim_args."""
    for name in ("cnn.yaml", "cnn_swa.yaml"):
        args = load_recipe(REPO / "recipes" / name).training
        cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
        assert cls is torch.optim.SGD and kwargs["momentum"] == 0.9 and kwargs["nesterov"] is True
        assert args.weight_decay == 0.0005 and args.max_grad_norm == 5.0


def test_labels_subset_missing_from_the_dataset(tmp_path, bundled_dd):
    only_happy_sad = bundled_dd["train"].filter(lambda row: row["label"] in (3, 4))
    only_happy_sad.to_parquet(str(tmp_path / "train.parquet"))
    with pytest.raises(RecipeError, match=r"data.classes: .* has no training images of \['fear'\]"):
        main(tiny_args(tmp_path / "run", "--data.source", str(tmp_path), "--data.classes", "[happy, fear]"))


def test_output_folder_of_another_run_is_refused(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    with pytest.raises(RecipeError, match="already holds a run.*--run.resume true.*--run.overwrite true"):
        main(tiny_args(out, "--run.overwrite", "false"))
    assert (out / "metrics.json").read_text() == "{}"
    with pytest.raises(RecipeError, match="no checkpoint"):
        main(tiny_args(out, "--run.resume", "true"))


def schedule_groups(recipe) -> list[str]:
    """The layer groups of the recipe's model family (vit/resnet from their shapes: no weights are loaded)."""
    from fer_hf.models import build_model
    from fer_hf.models.resnet import resnet_layer_groups
    from fer_hf.models.vit import vit_layer_groups

    family = recipe.model.family
    if family == "vit":
        groups = vit_layer_groups(12)  # ViT-base
    elif family == "resnet":
        groups = resnet_layer_groups(4)
    else:
        groups = build_model(recipe.model, ["angry", "happy"]).layer_groups
    return [g for g, _ in groups]


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_is_valid(path):
    gpu = "bf16: true" in path.read_text() and "use_cpu: true" not in path.read_text()
    recipe = load_recipe(path, ["--use_cpu"] if gpu else [])  # bf16 recipes are for GPUs: checked here on the CPU
    assert f"fer_hf.train recipes/{path.name}" in (REPO / "recipes" / "README.md").read_text()
    assert recipe.training.output_dir  # resolved: FerTrainingArguments accepted every training key
    if recipe.unfreeze.schedule and recipe.model.family in ("vit", "resnet", "cnn"):
        named = {g for groups in recipe.unfreeze.schedule.values() for g in groups}
        assert named <= set(schedule_groups(recipe)), path.name


@pytest.mark.parametrize(
    "path", sorted((REPO / "recipes" / "accelerate_configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(path)
    assert config.num_processes == {"single_gpu.yaml": 1, "multi_node.yaml": 16}.get(path.name, 2)
    assert config.use_cpu == (path.name == "cpu_ddp.yaml")


def test_focal_and_weighted_losses_match_a_direct_computation():
    torch.manual_seed(0)
    logits, labels = torch.randn(32, 4) * 3, torch.randint(0, 4, (32,))
    alpha = torch.tensor([2.0, 1.5, 1.0, 1.3])  # report-d's 4-class weights
    p = logits.softmax(-1)
    p_t = p[torch.arange(32), labels]
    focal = (-alpha[labels] * (1 - p_t) ** 2.0 * p_t.log()).mean()
    assert FocalLoss(2.0, alpha.tolist())(logits, labels).item() == pytest.approx(focal.item(), rel=1e-5)
    assert FocalLoss(0.0)(logits, labels).item() == pytest.approx(-p_t.log().mean().item(), rel=1e-5)
    weighted = (-alpha[labels] * p_t.log()).sum() / alpha[labels].sum()  # torch's weighted mean
    assert WeightedCrossEntropy(alpha.tolist())(logits, labels).item() == pytest.approx(weighted.item(), rel=1e-5)
    smooth = (0.9 * -p_t.log() + 0.1 * -p.log().mean(-1)).mean()
    assert WeightedCrossEntropy(None, 0.1)(logits, labels).item() == pytest.approx(smooth.item(), rel=1e-5)


def test_mixed_batches_weigh_both_labels_and_evaluation_is_never_mixed(tmp_path, bundled_dd):
    from transformers import TrainingArguments

    from fer_hf.configs import Augment, ModelArgs
    from fer_hf.data.decode import FerTensorDataset
    from fer_hf.data.transforms import BatchMixer, BatchTransform, FerCollator
    from fer_hf.models import build_model
    from fer_hf.training.trainer import FerTrainer

    torch.manual_seed(0)
    model = build_model(ModelArgs(family="cnn", preset="report-c-baseline"), [str(i) for i in range(7)]).model
    loss_fn, mixer = WeightedCrossEntropy(None, 0.1), BatchMixer(Augment(mixup_alpha=0.4, cutmix_alpha=1.0))
    data = FerTensorDataset.from_split(bundled_dd["train"].select(range(32)))
    batch = FerCollator(BatchTransform(48, 1, 0.5, 0.5))([data[i] for i in range(32)])
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    trainer = FerTrainer(model=model, args=args, loss_fn=loss_fn, mixer=mixer)
    model.train()
    for seed in range(4):  # mixup and CutMix batches
        torch.manual_seed(seed)
        loss = trainer.compute_loss(model, dict(batch))
        torch.manual_seed(seed)  # the same draws: the mixer's, then dropout's
        mix = mixer(batch["pixel_values"])
        logits = model(pixel_values=mix.pixels).logits
        expected = mix.lam * loss_fn(logits, batch["labels"]) + (1 - mix.lam) * loss_fn(
            logits, batch["labels"][mix.perm]
        )
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    model.eval()
    plain = loss_fn(model(pixel_values=batch["pixel_values"]).logits, batch["labels"])
    assert trainer.compute_loss(model, dict(batch)).item() == pytest.approx(plain.item(), rel=1e-6)


def test_recipe_loss_uses_the_recipe_weights():
    logits, labels = torch.randn(16, 7), torch.randint(0, 7, (16,))
    inverse = [0.5, 4.0, 1.0, 0.3, 0.8, 1.2, 0.9]
    recipe = load_recipe(SMOKE, ["--loss.name", "focal", "--loss.alpha", "inverse_frequency", "--loss.gamma", "1.5"])
    expected = FocalLoss(1.5, inverse)(logits, labels)
    assert recipe_loss(recipe, inverse)(logits, labels).item() == pytest.approx(expected.item())
    recipe = load_recipe(SMOKE, ["--loss.name", "weighted_ce"])
    expected = F.cross_entropy(logits, labels, weight=torch.tensor(inverse))
    assert recipe_loss(recipe, inverse)(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)


def test_weighted_sampler_draws_classes_roughly_uniformly(shared_fer):
    labels = torch.tensor(pq.read_table(shared_fer / "train.parquet", columns=["label"])["label"].to_numpy())
    counts = torch.bincount(labels, minlength=7)
    assert counts.max() > 10 * counts.min()  # real FER2013: happy ~7.2k vs disgust ~0.4k
    sampler = EpochWeightedSampler(balanced_sample_weights(labels, 7), seed=0)
    drawn = torch.tensor(list(sampler))
    share = torch.bincount(labels[drawn], minlength=7).double() / len(drawn)
    assert torch.allclose(share, torch.full((7,), 1 / 7, dtype=torch.double), atol=0.015)
    assert torch.equal(torch.tensor(list(sampler)), drawn)  # same epoch, same draws (resume, all ranks)
    sampler.set_epoch(1)
    assert not torch.equal(torch.tensor(list(sampler)), drawn)


if __name__ == "__main__":
    ddp_entry(sys.argv[1:])


def test_command_line_recipe_error_is_one_line_without_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "fer_hf.train", str(SMOKE), "--data.augment.mixup_alpha", "-1"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"error: {SMOKE}: data.augment: augment.mixup_alpha must be >= 0, got -1 (run with --debug for the traceback)"
    )


def test_the_trainer_module_and_the_benchmarks_import_no_hub_code():
    """FerTrainer and build_trainer live apart from the command: cv-style reuse and the benchmarks do not pull in
    the card, publishing or bundling code (fer_hf.train composes them)."""
    import subprocess
    import sys

    code = (
        "import sys, fer_hf.training.trainer, fer_hf.bench.train\n"
        "hub = [m for m in ('fer_hf.hub.card', 'fer_hf.hub.publish', 'fer_hf.hub.publish_space', 'fer_hf.hub.bundle') if m in sys.modules]\n"
        "print(hub)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
