"""Bundle a trained model inside the package: the default CNN (fer_hf/assets/default_model) or another bundled model.

    python -m fer_hf.hub.bundle runs/cnn --data ../shared/fer2013 [--comparison runs/comparison/comparison.md]
    python -m fer_hf.hub.bundle runs/lite0_main --name lite0 --data ../shared/fer2013
    python -m fer_hf.hub.bundle fer_hf/assets/lite0_model --name lite0 --data ../shared/fer2013 --half

--name picks the bundled model (`default`, `lite0`): its folder and, unless --recipe is given, its recipe.

MODEL_DIR is a run folder (its best checkpoint is taken, whether the run finished or was cut short; a finished
weight-averaging run gives its final, averaged weights), one of its `checkpoint-*` folders, or a folder this command
wrote (its weights, recipe, training record, curves and comparison are carried over and evaluated again: how a
bundled model is stored in float16 with --half when its run folder is gone). The folder gets the model (safetensors, config, image processor, its code), the resolved
recipe, `metrics.json` in the layout of a training run (validation = FER2013 PublicTest, single view; hardware and
training time from the finished run), evaluations by `fer_hf.evaluate` without and with horizontal-flip TTA
(reported apart), the confusion matrix, the training curves and a model card; with --comparison, the
`fer_hf.compare` table in the card and its whole folder (charts, learning curves) in comparison/. Everything is
written to a temporary folder and moved into place at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from safetensors.torch import load_file, save_file

from fer_hf.data.dataset import load_split
from fer_hf.data.decode import FerTensorDataset
from fer_hf.data.sources import raters_of
from fer_hf.evaluation.evaluator import check_labels, run_inference, write_outputs
from fer_hf.evaluation.evaluator import evaluate as evaluate_one
from fer_hf.evaluation.metrics import compute_fer_metrics
from fer_hf.evaluation.report import checkpoint_states, describe_hardware, plot_confusion_matrix, plot_curves
from fer_hf.evaluation.results import METRICS_FILE, RunRecord, Scores, read_record, read_run_record, write_record
from fer_hf.hub.card import write_model_card
from fer_hf.models.loading import BUNDLED_MODELS, DEFAULT_MODEL, load_classifier
from fer_hf.recipe_parser import load_recipe

MODEL_FILES = ("config.json", "model.safetensors")
# + preprocessor_config.json where the family has one (a timm model's image processor lives in its config.json)
OPTIONAL_FILES = ("preprocessor_config.json",)


def best_checkpoint(model_dir: Path) -> tuple[Path, dict]:
    """(folder holding the weights, trainer_state.json) of a checkpoint folder, or of a run folder's best checkpoint
    (finished or not: the Trainer keeps the best one, and a finished run's top-level model is that one)."""
    states = checkpoint_states(model_dir)
    # A checkpoint folder itself (a finished run folder also holds a trainer_state.json, beside its checkpoints).
    if not states and (model_dir / "trainer_state.json").is_file() and (model_dir / "model.safetensors").is_file():
        return model_dir, json.loads((model_dir / "trainer_state.json").read_text())
    if not states:
        raise FileNotFoundError(f"{model_dir}: no checkpoint-*/trainer_state.json; expected a fer_hf.train run")
    state = json.loads(states[-1].read_text())
    if not state.get("best_model_checkpoint"):
        raise ValueError(f"{states[-1]}: no best_model_checkpoint; train with metric_for_best_model set")
    best = model_dir / Path(state["best_model_checkpoint"]).name  # the run may have been moved since
    if not (best / "model.safetensors").is_file():
        raise FileNotFoundError(f"{best}: best checkpoint has no model.safetensors")
    return best, state


def weights_to_bundle(model_dir: Path, run: RunRecord | None) -> tuple[Path, dict | None]:
    """(folder with the weights, its trainer_state.json or None), given the folder's own record `run`.

    A folder this command wrote (its record names the checkpoint it holds, and it has no trainer state) ships its
    own weights again, e.g. to store them with --half. A finished weight-averaging run (run.swa_from_epoch) ships its
    final, averaged weights: no checkpoint holds them. Any other run ships its best checkpoint."""
    has_state = (model_dir / "trainer_state.json").is_file()
    if run is not None and run.checkpoint is not None and not has_state:
        return model_dir, None
    if run is not None and run.weight_average:
        return model_dir, json.loads((model_dir / "trainer_state.json").read_text())
    return best_checkpoint(model_dir)


def bundle(
    model_dir: Path,
    recipe_path: str,
    data: str,
    out: Path,
    comparison: str | None = None,
    name: str = DEFAULT_MODEL,
    half: bool = False,
) -> Path:
    """Write the bundled model `name` into `out` (staged, then moved into place). Returns `out`.
    `half`: weights stored in float16, only if PublicTest accuracy moves by less than HALF_TOLERANCE.
    `model_dir` may be a bundled folder itself (even `out`): its weights, resolved recipe, training record, curves and
    comparison are carried over and evaluated again, e.g. to store them in float16."""
    run = read_run_record(model_dir)  # None: a checkpoint of a run that has not ended
    weights_dir, state = weights_to_bundle(model_dir, run)
    if state is None and half and run.weights_dtype == "float16":
        raise ValueError(f"{model_dir}: its weights are stored in float16 already; --half needs the float32 ones")
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:  # an error or Ctrl-C anywhere below must not leave the staging folder behind
        copy_model_files(weights_dir, staging)
        split, ds = load_split(data, "validation")
        faces = FerTensorDataset.from_split(ds, desc=f"decode {split}")
        full_precision = None
        if half:  # measured in float32 first: --half is refused if PublicTest moves by HALF_TOLERANCE or more
            full_precision = single_view_scores(load_classifier(staging), faces)  # Scores
            store_half(staging / "model.safetensors")
        recipe = stage_recipe(model_dir, recipe_path, staging, bundled=state is None)
        where = f"fer_hf/assets/{out.name}"  # the model is named by where it lives, not by the staging folder
        loaded = load_classifier(staging)
        check_labels(loaded.label_names, ds.features["label"].names, str(model_dir))
        reports = evaluate_views(loaded, faces, ds, data, split, where, staging)
        check_half(full_precision, reports["none"])
        epoch = int(state["epoch"] if state else run.epochs)
        checkpoint = (
            run.checkpoint
            if state is None
            else checkpoint_name(weights_dir, model_dir, run, epoch, recipe.training.num_train_epochs)
        )
        metrics = bundle_record(run, recipe, reports, epoch, checkpoint, full_precision, bundled=state is None)
        write_record(metrics, staging / METRICS_FILE)
        comparison = write_plots(metrics, recipe, state, model_dir, staging, comparison)
        extra = comparison_charts(staging) + status_section(metrics, name, recipe_path, data)
        write_model_card(staging, repo_id=where, comparison=comparison, extra=extra)
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def copy_model_files(weights_dir: Path, staging: Path) -> None:
    """The weights, config, image processor and the model's own code (`*.py`) of the folder bundled."""
    optional = [name for name in OPTIONAL_FILES if (weights_dir / name).is_file()]
    for file in (*MODEL_FILES, *optional, *(p.name for p in weights_dir.glob("*.py"))):
        shutil.copy2(weights_dir / file, staging / file)


def stage_recipe(model_dir: Path, recipe_path: str, staging: Path, bundled: bool):
    """The resolved recipe beside the model. A bundled folder keeps its own (it names the run it came from); a run
    is described by `recipe_path` with its output_dir."""
    if bundled:
        shutil.copy2(model_dir / "recipe.yaml", staging / "recipe.yaml")
        return load_recipe(str(staging / "recipe.yaml"))
    recipe = load_recipe(recipe_path, ["--training.output_dir", str(model_dir)])
    recipe.save(staging / "recipe.yaml")
    return recipe


def evaluate_views(loaded, faces, ds, data: str, split: str, where: str, staging: Path) -> dict:
    """Single view and hflip TTA on the split, each written to its folder (evaluation/, evaluation_hflip/)."""
    reports, raters = {}, raters_of(ds)  # FER+: the raters' vote shares, for KL and NLL of the votes
    for tta, folder in (("none", "evaluation"), ("hflip", "evaluation_hflip")):
        reports[tta] = evaluate_one(loaded, faces, data=data, split=split, tta=tta, name=where, raters=raters)
        (staging / folder).mkdir()
        write_outputs(staging / folder, reports[tta], faces.images)
    return reports


def check_half(full_precision, single) -> None:
    """float16 weights are kept only if they move PublicTest accuracy by less than HALF_TOLERANCE."""
    if full_precision is None:
        return
    moved = abs(single.accuracy - full_precision.accuracy)
    if moved >= HALF_TOLERANCE:
        raise ValueError(
            f"--half moves PublicTest accuracy by {moved:.4f} ({full_precision.accuracy:.4f} in float32, "
            f"{single.accuracy:.4f} in float16), not less than {HALF_TOLERANCE}: bundle without --half"
        )


def bundle_record(run, recipe, reports: dict, epoch: int, checkpoint, full_precision, bundled: bool) -> RunRecord:
    """metrics.json of the bundle: what the run recorded (when there is a record) and the evaluations just made."""
    single = reports["none"]
    device = run.device if run and run.device else "cpu"
    return RunRecord(
        model_family=recipe.model.family,
        labels=single.labels,
        parameters=single.parameters,
        trainable_parameters=run.trainable_parameters if run else None,  # what the run trained (None: no record)
        epochs=epoch,
        device=device,
        # A run folder from before fer_hf.train recorded its hardware was trained on the machine bundling it.
        hardware=(run.hardware if run else None) or describe_hardware(device),
        world_size=(run.world_size if run else None) or 1,
        train_seconds=run.train_seconds if run else None,  # None for an interim checkpoint: the run has not ended
        checkpoint=checkpoint,
        init_from=run.init_from if run else None,  # a second stage: the card says so
        weight_average=run.weight_average if run else None,
        # A bundled folder bundled again without --half keeps what it stored, and what that was measured against.
        weights_dtype="float16" if full_precision else run.weights_dtype if bundled else None,
        float32_validation=full_precision or (run.float32_validation if bundled else None),
        splits={"validation": single},
        summaries={"validation_tta_hflip": reports["hflip"].scores},
    )


def write_plots(
    metrics: RunRecord, recipe, state, model_dir: Path, staging: Path, comparison: str | None
) -> str | None:
    """The confusion matrix and training curves; a bundled folder's curves and comparison travel on. Returns the
    comparison table's path inside the staging folder (read before `out` is replaced), or None."""
    single = metrics.splits["validation"]
    path = staging / "confusion_matrix_validation.png"
    plot_confusion_matrix(single.confusion_matrix, single.labels, path, split_title(single.labels))
    if state is not None:
        plot_curves({recipe.model.family: state["log_history"]}, staging / "training_curves.png")
    else:
        shutil.copy2(model_dir / "training_curves.png", staging / "training_curves.png")
        if comparison is None and (model_dir / "comparison" / "comparison.md").is_file():
            comparison = str(model_dir / "comparison" / "comparison.md")
    if not comparison:
        return None
    # The comparison folder's table and charts travel with the model; the card shows the charts.
    shutil.copytree(Path(comparison).parent, staging / "comparison", ignore=shutil.ignore_patterns(".*"))
    return str(staging / "comparison" / Path(comparison).name)


HALF_TOLERANCE = 0.001  # accuracy: 0.1 point of PublicTest


def single_view_scores(loaded, faces: FerTensorDataset) -> Scores:
    """Accuracy and macro-F1 of a loaded model on decoded faces (no files written)."""
    logits, _ = run_inference(loaded, faces)
    m = compute_fer_metrics(logits, faces.labels.numpy(), loaded.label_names)
    return Scores(m["accuracy"], m["macro_f1"])


def store_half(weights: Path) -> None:
    """Rewrite a safetensors file with its floating-point tensors in float16 (half the bytes). config.json keeps
    float32, so `from_pretrained` casts them back and inference runs in float32 as before."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}
    save_file(state, str(weights), metadata={"format": "pt"})


def checkpoint_name(weights_dir: Path, model_dir: Path, run: RunRecord | None, epoch: int, planned: int) -> str:
    if weights_dir == model_dir:  # weights_to_bundle: only a weight-averaging run ships its top-level weights
        return f"the final weights, averaged over epochs {run.weight_average['epochs']} (of {planned})"
    return f"{weights_dir.name} (epoch {epoch} of {planned})"


def comparison_charts(folder: Path) -> str:
    """Markdown images of the comparison's bar chart and learning curves, when bundled (comparison/)."""
    charts = {"comparison.png": "scores side by side", "curves.png": "learning curves of the compared runs"}
    found = [f"![{alt}](comparison/{png})" for png, alt in charts.items() if (folder / "comparison" / png).is_file()]
    return "\n" + "\n\n".join(found) + "\n" if found else ""


def split_title(labels: Sequence[str]) -> str:
    """What the validation split is: FER2013's PublicTest, or FER+'s FER2013Valid under the majority protocol."""
    return "FER2013Valid (FER+ majority protocol)" if "contempt" in labels else "PublicTest"


def status_section(metrics: RunRecord, name: str, recipe_path: str, data: str) -> str:
    tta = metrics.summaries["validation_tta_hflip"]
    ferplus = "contempt" in metrics.labels
    trained = "FER2013Train's FER+ votes" if ferplus else "FER2013 Training"
    valid = split_title(metrics.labels)
    status = (
        "an interim checkpoint: the run was cut short and is being resumed"
        if not metrics.train_seconds
        else "the finished run's model"
        if metrics.weight_average
        else "the best epoch of the finished run"
    )
    what = metrics.checkpoint[:1].upper() + metrics.checkpoint[1:]  # it starts the sentence
    return (
        f"\n## This checkpoint\n\n{what}, {status}. Trained on {trained} and selected on "
        f"{valid} (validation) only, on {metrics.hardware}{wall_time(metrics)}; bundled into the package with\n\n"
        f"```bash\npython -m fer_hf.hub.bundle RUN_DIR --name {name} --recipe {recipe_path} --data {data}"
        f"{' --half' if metrics.weights_dtype == 'float16' else ''}\n```\n\n"
        f"{how_to_load(name)}\n\n{half_note(metrics)}"
        f"Horizontal-flip test-time augmentation, reported apart from the single-view numbers above: accuracy "
        f"{tta.accuracy:.4f}, macro-F1 {tta.macro_f1:.4f} on {valid} "
        f"(`python -m fer_hf.evaluate {name} --data {data} --tta hflip`).\n"
    )


def half_note(metrics: RunRecord) -> str:
    full = metrics.float32_validation
    if not full:
        return ""
    single = metrics.splits["validation"]
    return (
        f"The weights are stored in float16 (`--half`: half the file) and loaded as float32. {split_title(single.labels)} "
        "single view "
        f"with the float32 weights: accuracy {full.accuracy:.4f}, macro-F1 {full.macro_f1:.4f}; with the stored "
        f"ones: {single.accuracy:.4f}, {single.macro_f1:.4f}.\n\n"
    )


def how_to_load(name: str) -> str:
    if name == DEFAULT_MODEL:
        return "Inside fer_hf it is the default model: `fer_hf.load_default_model()`, `--model default`."
    return f"Inside fer_hf it is the bundled model `{name}`: `fer_hf.load_classifier({name!r})`, `--model {name}`."


def wall_time(metrics: RunRecord) -> str:
    seconds = metrics.train_seconds
    if not seconds:
        return ""
    earlier = (metrics.init_from or {}).get("train_seconds")
    if earlier:  # a second stage: both stages' time
        return (
            f" in {metrics.total_train_seconds() / 60:.0f} minutes of training over two stages ({earlier / 60:.0f} + "
            f"{seconds / 60:.0f}, evaluation every epoch included)"
        )
    return f" in {seconds / 60:.0f} minutes of training (evaluation every epoch included)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_hf.hub.bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "model_dir", help="a fer_hf.train run folder (its best checkpoint is taken), a checkpoint or a bundled folder"
    )
    trained = [name for name, model in BUNDLED_MODELS.items() if model.recipe]  # the ensemble is written otherwise
    parser.add_argument("--name", choices=trained, default=DEFAULT_MODEL, help="which bundled model")
    parser.add_argument("--recipe", help="the recipe the run was trained with (default: the bundled model's)")
    parser.add_argument("--data", required=True, help="your FER2013 copy with the validation split it is scored on")
    parser.add_argument("--out", help="where the bundled model goes (default: its folder in fer_hf/assets)")
    parser.add_argument("--comparison", help="a fer_hf.compare comparison.md to include in the model card")
    parser.add_argument("--half", action="store_true", help="store the weights in float16 if accuracy moves < 0.1 pt")
    args = parser.parse_args(argv)
    bundled = BUNDLED_MODELS[args.name]
    recipe, out = args.recipe or bundled.recipe, Path(args.out or bundled.path)
    out = bundle(Path(args.model_dir), recipe, args.data, out, args.comparison, args.name, args.half)
    m = read_record(out, RunRecord)
    single = m.splits["validation"]
    print(f"bundled {m.checkpoint} into {out}")
    title = split_title(single.labels)
    print(f"{title} single view: accuracy {single.accuracy:.4f}, macro-F1 {single.macro_f1:.4f}")
    print(f"{title} hflip TTA:   accuracy {m.summaries['validation_tta_hflip'].accuracy:.4f}")
    return 0


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))
