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
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import torch
from PIL import Image

from fer_hf.data.sources import BUNDLED_SAMPLE
from fer_hf.evaluation.results import ENSEMBLE_FILES, METRICS_FILE, RunRecord, read_record
from fer_hf.hub.card import DEFAULT_LICENSE, build_model_card, read_run, usage_code, write_ensemble_card
from fer_hf.models.hub_code import OWN_MODEL_TYPES
from fer_hf.models.loading import LoadedModel, load_classifier
from fer_hf.outputs import check_apart

# Files of a run folder that go into the repository as they are (the model itself is re-saved, see stage_run).
RUN_FILES = ("recipe.yaml", "metrics.json", "confusion_matrix_*.png", "training_curves.png", "per_class_*.md")
TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
LOGIT_ATOL = 1e-4  # float32 logits of the same weights in two processes; a merged LoRA adds rounding


class PublishError(ValueError):
    """Staging or validation failed; the message says what and where."""


class UploadError(OSError):
    """The Hub refused or could not be reached; the staged folder stays on disk. The command exits 1."""

    exit_code = 1


# ---------------------------------------------------------------------------------------------------- tokens


def known_tokens() -> list[str]:
    """Every Hugging Face token this process could use (environment or `hf auth login`), to keep them out of output."""
    from huggingface_hub import get_token

    found = {os.environ.get(name) for name in TOKEN_ENV} | {get_token()}
    return sorted(t for t in found if t and len(t) >= 8)


def scrub(text: str) -> str:
    for token in known_tokens():
        text = text.replace(token, "***")
    return text


def files_with_tokens(folder: Path) -> list[Path]:
    tokens = [t.encode() for t in known_tokens()]
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and any(t in p.read_bytes() for t in tokens)]


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

    from fer_hf.configs import load_recipe
    from fer_hf.models import build_model

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


def sample_faces(n_per_class: int = 1) -> list[Image.Image]:
    """Real FER2013 faces from the bundled sample's validation split, one per class (48x48 gray, as RGB)."""
    table = pq.read_table(BUNDLED_SAMPLE / "validation.parquet").to_pylist()
    faces, seen = [], {}
    for row in table:
        if seen.get(row["label"], 0) < n_per_class:
            seen[row["label"]] = seen.get(row["label"], 0) + 1
            faces.append(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB"))
    return faces


@torch.no_grad()
def run_logits(loaded: LoadedModel, faces: list[Image.Image]) -> torch.Tensor:
    """(N, K) logits of the run's own model (fer_hf classes) through its own image processor."""
    inputs = loaded.image_processor(faces, return_tensors="pt")
    return loaded.model.eval()(pixel_values=inputs["pixel_values"]).logits.float()


# Runs in a fresh interpreter that never imports fer_hf: exactly what a Hub user does with the repository.
FRESH_LOAD_SCRIPT = """
import json, sys
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline
folder, trust, usage, paths = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4:]
faces = [Image.open(p).convert("RGB") for p in paths]
processor = AutoImageProcessor.from_pretrained(folder)
model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=trust).eval()
with torch.no_grad():
    logits = model(**processor(faces, return_tensors="pt")).logits.float()
classifier = pipeline("image-classification", model=folder, trust_remote_code=trust)
top1 = [out[0]["label"] for out in classifier(faces, top_k=1)]
import contextlib, io  # the model card's own code examples, run as written (repo id -> this folder)
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
    exec(compile(open(usage).read(), "README.md code", "exec"), {})
print(json.dumps({"logits": logits.tolist(), "pipeline_top1": top1, "model_class": type(model).__name__,
                  "usage_output": printed.getvalue(),
                  "fer_hf_imported": any(m.split(".")[0] == "fer_hf" for m in sys.modules)}))
"""


def needs_remote_code(stage_dir: Path) -> bool:
    """trust_remote_code=True only for fer_hf's own model types; foreign custom code is refused."""
    config = json.loads((stage_dir / "config.json").read_text())
    if not config.get("auto_map"):
        return False
    if config.get("model_type") not in OWN_MODEL_TYPES:
        raise PublishError(
            f"{stage_dir}/config.json: custom code for model_type {config.get('model_type')!r}, which is not one of "
            f"fer_hf's own types {sorted(OWN_MODEL_TYPES)}; refusing to validate it with trust_remote_code"
        )
    return True


def card_code(stage_dir: Path, repo_id: str, face_path: str, trust: bool) -> str:
    """The card's usage examples as the package writes them (`card.usage_code`), checked to stand verbatim in the
    staged README, pointed at the staged folder and a real face. Other code in the card (a --comparison file's
    blocks, say) is never run."""
    readme = (stage_dir / "README.md").read_text()
    blocks = usage_code(repo_id, trust)
    if not all(f"```python\n{block}```" in readme for block in blocks):
        raise PublishError(f"{stage_dir}/README.md: the package's ```python usage examples are missing or changed")
    code = "\n".join(blocks).replace(f'"{repo_id}"', json.dumps(str(stage_dir.resolve())))
    return code.replace('"face.jpg"', json.dumps(face_path))


def fresh_process_predictions(stage_dir: Path, faces: list[Image.Image], trust: bool, repo_id: str) -> dict:
    """Load stage_dir in a new Python process (offline, no token in its environment), predict on `faces` and run
    the card's code examples."""
    env = {k: v for k, v in os.environ.items() if k not in TOKEN_ENV}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    with tempfile.TemporaryDirectory(prefix="fer_hf_faces_") as tmp:
        paths = []
        for i, face in enumerate(faces):
            paths.append(str(Path(tmp) / f"face_{i}.png"))
            face.save(paths[-1])
        usage = Path(tmp) / "card_code.py"
        usage.write_text(card_code(stage_dir, repo_id, paths[0], trust))
        folder = str(stage_dir.resolve())
        cmd = [sys.executable, "-c", FRESH_LOAD_SCRIPT, folder, "1" if trust else "0", str(usage), *paths]
        # cwd = the temp folder, so that the package in the working directory cannot be imported by accident
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=600)
    if proc.returncode != 0:
        raise PublishError(f"{stage_dir} does not load in a fresh Python process:\n{scrub(proc.stderr[-3000:])}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def validate_card(stage_dir: Path) -> list[str]:
    """Parse README.md with huggingface_hub's ModelCard and check its metadata against metrics.json.
    Returns the problems found (empty = valid)."""
    from huggingface_hub import ModelCard

    try:
        card = ModelCard.load(stage_dir / "README.md")  # raises on YAML or model-index errors
    except ValueError as err:
        return [f"README.md metadata does not parse: {err}"]
    data, metrics = card.data, read_record(stage_dir / METRICS_FILE, RunRecord)
    problems = [
        f"{key} is {getattr(data, key)!r}, expected {want!r}"
        for key, want in (("library_name", "transformers"), ("pipeline_tag", "image-classification"))
        if getattr(data, key) != want
    ]
    if not data.license:
        problems.append("no license")
    for result in data.eval_results or []:
        key = {"accuracy": "accuracy", "f1": "macro_f1"}.get(result.metric_type)
        split = metrics.splits.get(result.dataset_split or "")
        if key is None or split is None or getattr(split, key) != result.metric_value:
            problems.append(f"model-index {result.metric_type} on {result.dataset_split!r} != metrics.json")
    if not data.eval_results:
        problems.append("no model-index results")
    return problems


@dataclass
class Validation:
    """What the checks measured: the card, and the fresh process's logits against the run's own model."""

    max_abs_logit_diff: float
    expected_top1: list[str]
    pipeline_top1: list[str]
    model_class: str
    trust_remote_code: bool
    num_faces: int
    card_code_output: str  # what the card's code examples printed when run on a real face


def validate_stage(
    stage_dir: Path, repo_id: str, reference_logits: torch.Tensor, faces: list[Image.Image], labels
) -> Validation:
    problems = validate_card(stage_dir)
    if problems:
        raise PublishError(f"{stage_dir}/README.md: " + "; ".join(problems))
    trust = needs_remote_code(stage_dir)
    fresh = fresh_process_predictions(stage_dir, faces, trust, repo_id)
    if fresh["fer_hf_imported"]:
        raise PublishError("the fresh process imported fer_hf: the repository must load without the package")
    logits = torch.tensor(fresh["logits"])
    if logits.shape != reference_logits.shape:
        raise PublishError(
            f"reloaded logits have shape {tuple(logits.shape)}, the run's {tuple(reference_logits.shape)}"
        )
    expected = [labels[i] for i in reference_logits.argmax(-1).tolist()]
    report = Validation(
        max_abs_logit_diff=float((logits - reference_logits).abs().max()),
        expected_top1=expected,
        pipeline_top1=fresh["pipeline_top1"],
        model_class=fresh["model_class"],
        trust_remote_code=trust,
        num_faces=len(faces),
        card_code_output=fresh["usage_output"],
    )
    if report.max_abs_logit_diff > LOGIT_ATOL or report.pipeline_top1 != expected:
        raise PublishError(
            f"{stage_dir} reloads with different predictions: max |logit diff| {report.max_abs_logit_diff:.2e} "
            f"(allowed {LOGIT_ATOL}); pipeline {report.pipeline_top1} vs run {expected}"
        )
    return report


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
    print_validation(stage_dir, report)
    if dry_run:
        print(f"dry run: repository content for {repo_id} staged in {stage_dir} (nothing uploaded)")
        return 0
    try:
        url = upload_stage(stage_dir, repo_id, private=private, revision=revision)
    except UploadError as err:
        raise UploadError(f"upload to {repo_id} failed: {err}; staged folder kept: {stage_dir}") from None
    print(f"uploaded {stage_dir} to {url}")
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


def print_validation(stage_dir: Path, report: Validation) -> None:
    files = ", ".join(sorted(p.name for p in stage_dir.iterdir()))
    print(f"staged: {files}")
    print(
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
