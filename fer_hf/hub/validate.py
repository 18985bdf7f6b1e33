"""Checks on a staged repository before anything is uploaded: the weights reload in a fresh process through the card's
own usage code and give the run's logits, the card parses, and no file holds a token."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import torch
from PIL import Image

from fer_hf.data.sources import BUNDLED_SAMPLE
from fer_hf.evaluation.results import METRICS_FILE, RunRecord, read_record
from fer_hf.hub.card_sections import usage_code
from fer_hf.models.hub_code import OWN_MODEL_TYPES
from fer_hf.models.loading import LoadedModel


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


TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


LOGIT_ATOL = 1e-4  # float32 logits of the same weights in two processes; a merged LoRA adds rounding


class PublishError(ValueError):
    """Staging or validation failed; the message says what and where."""


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
