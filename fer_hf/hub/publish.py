"""Publish a finished run to the Hugging Face Hub: stage the repository on disk, validate it, then upload.

    python -m fer_hf.hub.publish runs/vit_unfreeze --repo-id user/fer-vit --comparison runs/comparison.md
    python -m fer_hf.hub.publish runs/smoke --repo-id user/fer-cnn --dry-run runs/fer-cnn-repo   # stage + validate only

The staged repository holds the weights (safetensors), config.json, the image processor, the model's own code
where it needs it (auto_map), the model card (README.md), the resolved recipe, metrics.json, the confusion
matrices and the training curves; never checkpoints or training_args.bin. Before any upload it must pass two
checks: the card's metadata parses with huggingface_hub's ModelCard, and a fresh Python process that never imports
fer_hf loads the folder through AutoModelForImageClassification and pipeline (trust_remote_code=True only for
fer_hf's own model types) and reproduces the run's logits on real FER2013 faces.

`push_to_hub: true` (+ `hub_model_id`) in a recipe's training section calls `publish_run` after training, so both
ways give the same repository. The token comes from `hf auth login` or HF_TOKEN; it is never printed or written.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from fer_hf.evaluation.results import ENSEMBLE_FILES, METRICS_FILE
from fer_hf.hub.card import DEFAULT_LICENSE, build_model_card, read_run, write_ensemble_card
from fer_hf.hub.validate import (
    PublishError,
    Validation,
    files_with_tokens,
    run_logits,
    sample_faces,
    scrub,
    validate_stage,
)
from fer_hf.logs import get_logger
from fer_hf.models.loading import LoadedModel, load_classifier
from fer_hf.outputs import check_apart

logger = get_logger(__name__)

# Files of a run folder that go into the repository as they are (the model itself is re-saved, see stage_run).
RUN_FILES = ("recipe.yaml", "metrics.json", "confusion_matrix_*.png", "training_curves.png", "per_class_*.md")


class UploadError(OSError):
    """The Hub refused or could not be reached; the staged folder stays on disk. The command exits 1."""

    exit_code = 1


# ---------------------------------------------------------------------------------------------------- staging


def load_run_model(run_dir: Path) -> LoadedModel:
    """The run's model as training left it, through fer_hf's own classes (no remote code needed here)."""
    if (run_dir / "adapter_config.json").is_file() and not (run_dir / "config.json").is_file():
        return load_lora_run(run_dir)
    return load_classifier(run_dir)


def load_lora_run(run_dir: Path) -> LoadedModel:
    """A run saved as a peft adapter: rebuild the recipe's model (backbone + fresh head, wrapped by peft) and load
    the adapter and head weights into it; `stage_run` merges them so the repository needs no peft."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoImageProcessor

    from fer_hf.models import build_model
    from fer_hf.recipe_parser import load_recipe

    info = read_run(run_dir)
    recipe = load_recipe(run_dir / "recipe.yaml")
    built = build_model(recipe.model, info.metrics.labels, image_size=recipe.data.image_size)
    saved = load_file(str(run_dir / "adapter_model.safetensors"))
    set_peft_model_state_dict(built.model, saved)
    # Every saved adapter/head tensor must now be in the model, or the merged repository would be untrained.
    loaded = get_peft_model_state_dict(built.model)
    wrong = [k for k, v in saved.items() if k not in loaded or not torch.equal(loaded[k].cpu(), v)]
    if wrong or not saved:
        raise PublishError(f"{run_dir}/adapter_model.safetensors: tensors {wrong[:5]} did not load into the model")
    processor = AutoImageProcessor.from_pretrained(run_dir)
    return LoadedModel(model=built.model.eval(), image_processor=processor, source=str(run_dir))


def mergeable(model):
    """A plain PreTrainedModel to save: peft wrappers are merged into the base weights."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def prepare_stage_dir(stage_dir: Path, overwrite: bool) -> None:
    if stage_dir.exists() and any(stage_dir.iterdir()):
        if not overwrite:
            raise PublishError(f"{stage_dir} is not empty; pass --overwrite or choose another folder")
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)


def copy_run_files(run_dir: Path, stage_dir: Path, patterns: Sequence[str] = RUN_FILES) -> None:
    """The run's own files into the stage; a symbolic link that leads outside the run folder is refused (it would
    upload whatever it points at)."""
    inside = run_dir.resolve()
    for pattern in patterns:
        for src in sorted(run_dir.glob(pattern)):
            if not src.resolve().is_relative_to(inside) or not src.resolve().is_file():
                raise PublishError(
                    f"{src}: a link to {src.resolve()}, outside the run folder (or not a regular file); "
                    "refusing to stage it for upload: copy the file into the run folder instead"
                )
            if src.suffix in (".yaml", ".json", ".md"):
                (stage_dir / src.name).write_text(scrub(src.read_text()))
            else:
                shutil.copy2(src, stage_dir / src.name)


def stage_run(
    run_dir: Path,
    stage_dir: Path,
    loaded: LoadedModel,
    *,
    repo_id: str,
    comparison: str | Path | None = None,
    license: str = DEFAULT_LICENSE,
) -> Path:
    """Write the repository content into stage_dir: model + processor via save_pretrained (safetensors; custom
    classes registered for the Auto classes copy their own .py files and auto_map), run files, model card."""
    model = mergeable(loaded.model)
    model.save_pretrained(stage_dir)
    loaded.image_processor.save_pretrained(stage_dir)
    if model.config.model_type == "fer_ensemble":  # `fer_hf.ensemble` wrote its own table and metrics, no recipe
        copy_run_files(run_dir, stage_dir, ENSEMBLE_FILES)
        card = write_ensemble_card(stage_dir, repo_id).read_text()
    else:
        copy_run_files(run_dir, stage_dir)
        card = str(
            build_model_card(run_dir, repo_id=repo_id, comparison=comparison, license=license, model_dir=stage_dir)
        )
    (stage_dir / "README.md").write_text(scrub(card))
    leaked = files_with_tokens(stage_dir)
    if leaked:
        raise PublishError(f"a Hugging Face token was found in {[str(p) for p in leaked]}; refusing to publish")
    return stage_dir


# ---------------------------------------------------------------------------------------------------- validation


# Runs in a fresh interpreter that never imports fer_hf: exactly what a Hub user does with the repository.


def build_repository(
    run_dir: str | Path,
    stage_dir: str | Path,
    *,
    repo_id: str,
    comparison: str | Path | None = None,
    license: str = DEFAULT_LICENSE,
    overwrite: bool = False,
) -> Validation:
    """Stage + validate: everything `publish` does before the upload (what --dry-run runs)."""
    run_dir, stage_dir = Path(run_dir), Path(stage_dir)
    if not (run_dir / METRICS_FILE).is_file():
        raise PublishError(
            f"{run_dir}: no metrics.json; expected a finished fer_hf.train run folder (or a fer_hf.ensemble folder "
            "made with --data)"
        )
    prepare_stage_dir(stage_dir, overwrite)
    loaded = load_run_model(run_dir)
    faces = sample_faces()
    reference = run_logits(loaded, faces)  # before staging: a LoRA model is merged in place there
    labels = [loaded.model.config.id2label[i] for i in range(reference.shape[-1])]
    stage_run(run_dir, stage_dir, loaded, repo_id=repo_id, comparison=comparison, license=license)
    return validate_stage(stage_dir, repo_id, reference, faces, labels)


# ---------------------------------------------------------------------------------------------------- upload


def explain_upload_error(err: Exception, repo_id: str) -> str:
    """The Hub's reason in a sentence, with the fix; never the token."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    hint = {
        401: "the token is missing or invalid: run `hf auth login` or set HF_TOKEN",
        403: f"this token may not write to {repo_id} (owned by someone else, or a read-only token)",
        404: f"{repo_id} not found or not visible with this token",
        409: f"{repo_id} conflicts with an existing repository",
    }.get(status)
    if hint is None and any(word in type(err).__name__ for word in ("Connect", "Timeout", "Network", "Offline")):
        from huggingface_hub import constants

        hint = f"cannot reach the Hub at {constants.ENDPOINT} (no network, or HF_HUB_OFFLINE is set)"
    return scrub(f"{hint or 'upload failed'} [{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}]")


def upload_stage(stage_dir: Path, repo_id: str, *, private: bool | None = None, revision: str | None = None) -> str:
    """create_repo (exist_ok) [+ branch] + upload_folder; returns the commit URL. Raises UploadError."""
    from huggingface_hub import HfApi

    api = HfApi()  # token: HF_TOKEN or the `hf auth login` one, read by huggingface_hub itself
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision:
            api.create_branch(url.repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=url.repo_id,
            folder_path=stage_dir,
            revision=revision,
            commit_message="Upload fer_hf model (python -m fer_hf.hub.publish)",
        )
    except Exception as err:  # the Hub client raises many types (HTTP, connection, offline, value)
        raise UploadError(explain_upload_error(err, repo_id)) from None
    return str(commit.commit_url)


def publish_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    dry_run: str | Path | None = None,
    comparison: str | Path | None = None,
    license: str = DEFAULT_LICENSE,
    overwrite: bool = False,
) -> int:
    """Stage, validate and (unless dry_run) upload a run; returns 0 and says what happened, or raises PublishError
    (nothing staged is left behind) or UploadError (the staged folder is kept, and named)."""
    if dry_run:
        stage_dir = Path(dry_run)
        check_apart(stage_dir, run_dir, comparison, flag="--dry-run")
    else:
        stage_dir = Path(tempfile.mkdtemp(prefix=f"fer_hf_publish_{Path(run_dir).name}_"))
    ours = not dry_run or not stage_dir.exists() or not any(stage_dir.iterdir())  # a folder this run may remove
    try:
        report = build_repository(
            run_dir, stage_dir, repo_id=repo_id, comparison=comparison, license=license, overwrite=overwrite
        )
    except (PublishError, ValueError, OSError, subprocess.SubprocessError) as err:
        left = remove_refused_stage(stage_dir, ours or overwrite)
        raise PublishError(f"{scrub(str(err))}{left}") from None
    except BaseException:  # Ctrl-C, or a bug (its traceback follows): no half-staged repository stays behind
        remove_refused_stage(stage_dir, ours or overwrite)
        raise
    log_validation(stage_dir, report)
    if dry_run:
        logger.info("dry run: repository content for %s staged in %s (nothing uploaded)", repo_id, stage_dir)
        return 0
    try:
        url = upload_stage(stage_dir, repo_id, private=private, revision=revision)
    except UploadError as err:
        raise UploadError(f"upload to {repo_id} failed: {err}; staged folder kept: {stage_dir}") from None
    logger.info("uploaded %s to %s", stage_dir, url)
    shutil.rmtree(stage_dir, ignore_errors=True)  # a temporary staging folder; the run folder is untouched
    return 0


def remove_refused_stage(stage_dir: Path, ours: bool) -> str:
    """A refused or interrupted staging is removed (it is incomplete and would look like a repository to upload);
    a non-empty --dry-run folder of the user's that prepare_stage_dir refused is left as it was. Returns the note
    for the error line."""
    if not ours:
        return ""
    shutil.rmtree(stage_dir, ignore_errors=True)
    return f" (the incomplete staged folder {stage_dir} was removed)"


def log_validation(stage_dir: Path, report: Validation) -> None:
    files = ", ".join(sorted(p.name for p in stage_dir.iterdir()))
    logger.info(f"staged: {files}")
    logger.info(
        f"validated: card metadata parses; fresh process loads {report.model_class} "
        f"(trust_remote_code={report.trust_remote_code}); {report.num_faces} real faces, "
        f"max |logit diff| {report.max_abs_logit_diff:.1e}, pipeline top-1 matches; the card's code runs"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fer_hf.hub.publish",
        description="Stage, validate and upload a finished fer_hf run to the Hugging Face Hub.",
        epilog="Log in first with `hf auth login` (or set HF_TOKEN); the token is never printed or written.",
    )
    parser.add_argument("run_dir", help="a finished fer_hf.train run folder")
    parser.add_argument("--repo-id", required=True, help="Hub repository, USER/NAME (created when missing)")
    parser.add_argument("--private", action="store_true", default=None, help="create the repository as private")
    parser.add_argument("--revision", help="branch to upload to (created when missing); default main")
    parser.add_argument("--dry-run", metavar="OUT_DIR", help="stage + validate into OUT_DIR, upload nothing")
    parser.add_argument("--comparison", metavar="FILE.md", help="comparison table (fer_hf.compare) for the card")
    parser.add_argument("--license", default=DEFAULT_LICENSE, help=f"license metadata (default {DEFAULT_LICENSE})")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --dry-run folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return publish_run(
        args.run_dir,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        dry_run=args.dry_run,
        comparison=args.comparison,
        license=args.license,
        overwrite=args.overwrite,
    )


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))


def push_trained_run(recipe) -> int:
    """A recipe's `training.push_to_hub: true`: publish the finished run folder exactly as the CLI does (the
    Trainer's own push is switched off in fer_hf.train, since it uploads another layout: checkpoints, no card)."""
    training = recipe.training
    if not training.push_to_hub:
        return 0
    out = Path(training.output_dir)
    repo_id = training.hub_model_id or out.resolve().name  # the Trainer's default: the folder's name
    return publish_run(out, repo_id, private=training.hub_private_repo, revision=training.hub_revision)
