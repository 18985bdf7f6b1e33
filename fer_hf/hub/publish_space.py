"""Publish the Gradio app (spaces_app/) as a Hugging Face Space that uses the published models.

    python -m fer_hf.hub.publish_space --repo-id user/fer-demo --models user/fer-cnn,user/fer-vit
    python -m fer_hf.hub.publish_space --repo-id user/fer-demo --models user/fer-cnn --dry-run runs/fer-space

The staged Space holds the files of spaces_app/ at its root, a copy of the fer_hf package (the app imports it and
it is not on PyPI), requirements.txt, and README.md whose front-matter configures the Space (sdk: gradio,
sdk_version, app_file, python_version) and links the models. The models reach the app through the Space variable
FER_HF_MODELS (set with add_space_variable after the upload; the dry run writes it to space_variables.json, which
is not uploaded). The token comes from `hf auth login` or HF_TOKEN and is never printed or written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from huggingface_hub import SpaceCard, SpaceCardData

from fer_hf.hub.publish import UploadError, explain_upload_error, prepare_stage_dir
from fer_hf.hub.validate import PublishError, files_with_tokens, scrub
from fer_hf.repo_ids import is_hub_id

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_DIR = REPO_ROOT / "spaces_app"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # fer_hf/
MODELS_ENV = "FER_HF_MODELS"  # read by spaces_app/backend.py
VARIABLES_FILE = "space_variables.json"  # dry run only: what add_space_variable would set
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".ipynb_checkpoints", "flagged", ".gradio")
# Spaces install gradio themselves at sdk_version: a second gradio requirement could conflict with it.
SPACE_PROVIDED = ("gradio",)


def parse_models(models: str | None) -> list[str]:
    """'a/x, b/y' -> ['a/x', 'b/y']; each must be a Hub model id (a Space cannot see local folders)."""
    ids = [m.strip() for m in (models or "").split(",") if m.strip()]
    bad = [m for m in ids if not is_hub_id(m)]
    if bad:
        raise PublishError(f"--models {bad}: a Space loads models from the Hub, so give ids like user/fer-cnn")
    return list(dict.fromkeys(ids))


def requirements(app_dir: Path) -> str:
    """spaces_app/requirements.txt when the app has one, else the package's dependencies from pyproject.toml."""
    if (app_dir / "requirements.txt").is_file():
        return (app_dir / "requirements.txt").read_text()
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    keep = [d for d in deps if not d.lower().startswith(SPACE_PROVIDED)]
    return "# the fer_hf package's dependencies (pyproject.toml); gradio comes with the Space's sdk_version\n" + (
        "\n".join(keep) + "\n"
    )


SPACE_DEFAULTS = {
    "title": "fer_hf facial expressions",
    "emoji": "🙂",
    "colorFrom": "indigo",
    "colorTo": "blue",
    "pinned": False,
    "short_description": "Facial-expression recognition (FER2013) with fer_hf",
    "tags": ["facial-expression-recognition", "emotion-recognition", "fer2013"],
}


def space_card(app_dir: Path, models: list[str], license: str) -> SpaceCard:
    """spaces_app/README.md (its body and front-matter, when it has them) with the keys that make it a Gradio
    Space of this package: sdk, sdk_version (the installed gradio), app_file, python_version, models."""
    body, existing = "# Facial expressions with fer_hf\n\nA Gradio demo of fer_hf's FER2013 models.\n", {}
    if (app_dir / "README.md").is_file():
        own = SpaceCard((app_dir / "README.md").read_text())
        body, existing = own.text or body, own.data.to_dict()
    required = {
        "sdk": "gradio",
        "sdk_version": version("gradio"),
        "python_version": "3.11",
        "app_file": "app.py",
        "models": models or None,
    }
    data = SpaceCardData(**{**SPACE_DEFAULTS, "license": license, **existing, **required})
    uses = ", ".join(f"[{m}](https://huggingface.co/{m})" for m in models) or "the CNN bundled with fer_hf"
    note = f"\n\nModels in this Space ({MODELS_ENV}): {uses}.\n"
    return SpaceCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}{note}")


def stage_space(stage_dir: Path, models: list[str], *, app_dir: Path = APP_DIR, license: str = "apache-2.0") -> Path:
    """Copy the app + fer_hf into stage_dir and write requirements.txt and README.md."""
    if not (app_dir / "app.py").is_file():
        raise PublishError(f"{app_dir}/app.py: missing; the Space runs app.py from spaces_app/")
    shutil.copytree(app_dir, stage_dir, ignore=IGNORE, dirs_exist_ok=True)
    shutil.copytree(PACKAGE_DIR, stage_dir / "fer_hf", ignore=IGNORE, dirs_exist_ok=True)
    (stage_dir / "requirements.txt").write_text(requirements(app_dir))
    (stage_dir / "README.md").write_text(scrub(str(space_card(app_dir, models, license))))
    leaked = files_with_tokens(stage_dir)
    if leaked:
        raise PublishError(f"a Hugging Face token was found in {[str(p) for p in leaked]}; refusing to publish")
    return stage_dir


def space_variables(models: list[str]) -> dict[str, str]:
    # Spaces serve the app on 0.0.0.0:7860; the app reads its host from GRADIO_SERVER_NAME (default 127.0.0.1).
    out = {"GRADIO_SERVER_NAME": "0.0.0.0"}
    if models:
        out[MODELS_ENV] = ",".join(models)
    return out


def upload_space(stage_dir: Path, repo_id: str, variables: dict[str, str], private: bool | None = None) -> str:
    """create_repo(space, gradio) + upload_folder + add_space_variable; returns the Space URL. Raises UploadError."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=url.repo_id,
            repo_type="space",
            folder_path=stage_dir,
            ignore_patterns=[VARIABLES_FILE],
            commit_message="Upload fer_hf app (python -m fer_hf.hub.publish_space)",
        )
        for key, value in variables.items():
            api.add_space_variable(url.repo_id, key, value)
    except Exception as err:  # the Hub client raises many types (HTTP, connection, offline, value)
        raise UploadError(explain_upload_error(err, repo_id)) from None
    return str(url)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fer_hf.hub.publish_space",
        description="Upload spaces_app/ as a Gradio Space that uses published fer_hf models.",
        epilog="Log in first with `hf auth login` (or set HF_TOKEN); the token is never printed or written.",
    )
    parser.add_argument("--repo-id", required=True, help="the Space, USER/NAME (created when missing)")
    parser.add_argument("--models", help="comma-separated Hub model ids the app offers (FER_HF_MODELS)")
    parser.add_argument("--private", action="store_true", default=None, help="create the Space as private")
    parser.add_argument("--dry-run", metavar="OUT_DIR", help="stage the Space into OUT_DIR, upload nothing")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --dry-run folder")
    parser.add_argument("--license", default="apache-2.0", help="license metadata of the Space")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import tempfile

    args = parse_args(argv)
    stage_dir = Path(args.dry_run) if args.dry_run else Path(tempfile.mkdtemp(prefix="fer_hf_space_"))
    try:
        models = parse_models(args.models)
        prepare_stage_dir(stage_dir, args.overwrite)
        stage_space(stage_dir, models, license=args.license)
    except (PublishError, OSError) as err:  # scrubbed: a message may quote a URL with a token in it
        raise PublishError(scrub(str(err))) from None
    variables = space_variables(models)
    print(f"staged Space in {stage_dir}: {', '.join(sorted(p.name for p in stage_dir.iterdir()))}")
    if args.dry_run:
        (stage_dir / VARIABLES_FILE).write_text(json.dumps(variables, indent=2) + "\n")
        print(f"dry run: nothing uploaded; Space variables {variables} written to {stage_dir / VARIABLES_FILE}")
        return 0
    try:
        url = upload_space(stage_dir, args.repo_id, variables, private=args.private)
    except UploadError as err:
        raise UploadError(f"upload of Space {args.repo_id} failed: {err}; staged folder kept: {stage_dir}") from None
    print(f"uploaded {stage_dir} to {url} with variables {sorted(variables)}")
    shutil.rmtree(stage_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))
