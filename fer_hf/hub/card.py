"""Model cards for finished runs: Hub metadata (license, library, task, datasets, base model, tags, model-index)
followed by prose (what the model is, how to use it, the training recipe and hardware, results, comparison,
limitations and intended use). Every number comes from the run's metrics.json, always with its split named.

    python -m fer_hf.hub.card runs/vit_unfreeze --repo-id user/fer-vit --comparison runs/comparison.md

`fer_hf.train` writes README.md into each run folder; `fer_hf.hub.publish` writes the card of the repository it stages.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from fer_hf.evaluation.report import member_markdown_table
from fer_hf.evaluation.results import MEMBERS_FILE, METRICS_FILE, MemberRow, RecordError, RunRecord, read_record
from fer_hf.hub.card_sections import (
    LIMITATIONS,
    card_body,
    hub_base_model,
    hub_dataset,
    is_ferplus,
    split_label,
    usage_code,
)
from fer_hf.models.hub_code.configuration_fer_ensemble import FerEnsembleConfig

DEFAULT_LICENSE = "apache-2.0"  # the package's own licence; FER2013's terms are stated in the limitations
DATASET_NAME = "FER2013"
DATASET_TYPE = "fer2013"  # model-index needs a dataset identifier even when the data was a local copy
# The standard FER2013 protocol: train on Training, select on PublicTest, report on PrivateTest.


class CardError(ValueError):
    """A run folder that lacks what a model card needs; the message names the file."""


@dataclass
class RunInfo:
    """What a card is made from: the files a finished `fer_hf.train` run leaves in its folder."""

    run_dir: Path
    metrics: RunRecord  # metrics.json
    recipe: dict  # recipe.yaml (the resolved recipe)
    config: dict  # config.json of the saved model ({} for a LoRA adapter run: only peft's adapter files)

    @property
    def splits(self) -> list[str]:
        """Evaluated splits, the reported one (test when there is one) first."""
        return self.metrics.evaluated_splits

    @property
    def is_adapter(self) -> bool:
        return not self.config and (self.run_dir / "adapter_config.json").is_file()

    @property
    def has_custom_code(self) -> bool:
        """A model whose code travels with it (auto_map): loading it needs trust_remote_code=True."""
        return bool(self.config.get("auto_map"))


def _read(path: Path, parse) -> dict:
    if not path.is_file():
        raise CardError(f"{path}: missing; expected a finished fer_hf.train run folder")
    try:
        data = parse(path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise CardError(f"{path}: cannot parse ({err})") from None
    if not isinstance(data, dict):
        raise CardError(f"{path}: expected a mapping at the top level")
    return data


def read_run(run_dir: str | Path, model_dir: str | Path | None = None) -> RunInfo:
    """The run's files; config.json from `model_dir` when given (a staged repository with the merged model)."""
    run_dir = Path(run_dir)
    config_path = Path(model_dir or run_dir) / "config.json"
    adapter_only = not config_path.is_file() and (run_dir / "adapter_config.json").is_file()
    if not (run_dir / METRICS_FILE).is_file():
        raise CardError(f"{run_dir / METRICS_FILE}: missing; expected a finished fer_hf.train run folder")
    try:
        record = read_record(run_dir / METRICS_FILE, RunRecord)
    except RecordError as err:
        raise CardError(str(err)) from None
    info = RunInfo(
        run_dir=run_dir,
        metrics=record,
        recipe=_read(run_dir / "recipe.yaml", yaml.safe_load),
        config={} if adapter_only else _read(config_path, json.loads),
    )
    if not info.splits:
        raise CardError(f"{run_dir / METRICS_FILE}: no evaluated split (a dict with accuracy and per_class)")
    return info


def card_tags(info: RunInfo) -> list[str]:
    family = info.metrics.model_family
    tags = ["image-classification", "facial-expression-recognition", "emotion-recognition", "fer2013", "fer_hf"]
    if "contempt" in info.metrics.labels:
        tags.append("ferplus")
    tags.append(str(family))
    if (info.recipe.get("model") or {}).get("lora"):
        tags.append("lora")
    if info.has_custom_code:
        tags.append("custom_code")
    return tags


def eval_results(info: RunInfo, model_name: str) -> list[EvalResult]:
    """Accuracy and macro-F1 of every evaluated split, values exactly as in metrics.json."""
    ferplus = is_ferplus(info)
    dataset = hub_dataset(info) or ("ferplus" if ferplus else DATASET_TYPE)
    out = []
    for split in info.splits:
        m = info.metrics.splits[split]
        common = dict(task_type="image-classification", task_name="Facial expression recognition")
        common.update(dataset_type=dataset, dataset_name="FER+" if ferplus else DATASET_NAME, dataset_split=split)
        out.append(
            EvalResult(**common, metric_type="accuracy", metric_name=f"{split} accuracy", metric_value=m.accuracy)
        )
        out.append(
            EvalResult(
                **common,
                metric_type="f1",
                metric_name=f"{split} macro-F1",
                metric_args={"average": "macro"},
                metric_value=m.macro_f1,
            )
        )
    return out


def card_data(info: RunInfo, model_name: str, license: str = DEFAULT_LICENSE) -> ModelCardData:
    dataset = hub_dataset(info)
    return ModelCardData(
        license=license,
        library_name="transformers",
        pipeline_tag="image-classification",
        datasets=[dataset] if dataset else None,
        base_model=hub_base_model(info),
        tags=card_tags(info),
        metrics=["accuracy", "f1"],
        model_name=model_name,
        eval_results=eval_results(info, model_name),
    )


# ----------------------------------------------------------------------------------------------------- the card


def default_model_ref(info: RunInfo) -> str:
    """The id in the usage code of a run folder's own card: its hub_model_id, else the folder itself."""
    hub_id = (info.recipe.get("training") or {}).get("hub_model_id")
    return str(hub_id) if hub_id else str(info.run_dir)


def build_model_card(
    run_dir: str | Path,
    *,
    repo_id: str | None = None,
    comparison: str | Path | None = None,
    license: str = DEFAULT_LICENSE,
    model_dir: str | Path | None = None,
) -> ModelCard:
    """The card of a finished run; `repo_id` names the repository in the usage code (default: hub_model_id or
    the run folder); `comparison` is a Markdown file (e.g. from fer_hf.compare) appended as a section;
    `model_dir` holds the config.json to describe (default the run folder; publish passes its staged folder)."""
    info = read_run(run_dir, model_dir)
    model_ref = repo_id or default_model_ref(info)
    model_name = model_ref.rstrip("/").split("/")[-1]
    comparison_md = None
    if comparison is not None:
        if not Path(comparison).is_file():
            raise CardError(f"--comparison {comparison}: no such file")
        comparison_md = Path(comparison).read_text()
    data = card_data(info, model_name, license)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{card_body(info, model_name, model_ref, comparison_md)}")


def write_model_card(run_dir: str | Path, path: str | Path | None = None, extra: str = "", **kwargs) -> Path:
    """Write README.md (default: into the run folder) and return its path. `extra`: Markdown sections added at
    the end (bundle's charts and status)."""
    path = Path(path) if path is not None else Path(run_dir) / "README.md"
    card = build_model_card(run_dir, **kwargs)
    card.text += extra
    card.save(path)
    return path


def write_ensemble_card(folder: Path, where: str) -> Path:
    """README.md of an ensemble folder from its config.json, members.json and metrics.json (when it was evaluated):
    members and weights, the member table with the command that made it, usage with `where` as the model id, limits.
    `fer_hf.hub.publish` calls it again with the repository id."""
    config = json.loads((folder / "config.json").read_text())
    ensemble = FerEnsembleConfig(**{k: config[k] for k in ("members", "image_size", "num_channels")})
    members = "\n".join(
        f"| {m['name']} | `{m['config']['model_type']}` | {w:.3f} | {m['input']['size']} px, "
        f"{m['input']['channels']} channel(s) |"
        for m, w in zip(ensemble.members, ensemble.member_weights, strict=True)
    )
    front = "---\nlibrary_name: transformers\nlicense: apache-2.0\npipeline_tag: image-classification\n---\n"
    results = "Not evaluated: the folder was written without `--data`."
    if (folder / METRICS_FILE).is_file():
        metrics = read_record(folder / METRICS_FILE, RunRecord)
        table = json.loads((folder / MEMBERS_FILE).read_text())
        split, rows = table["split"], [MemberRow(**r) for r in table["rows"]]
        info = RunInfo(folder, metrics, {"data": {"source": metrics.data}}, config)
        front = f"---\n{card_data(info, Path(where).name).to_yaml()}\n---\n"
        single = metrics.splits[split]
        results = (
            f"{member_markdown_table(rows, split_label(info, split))}\n\nThe ensemble, single view: accuracy "
            f"{single.accuracy:.4f}, macro-F1 {single.macro_f1:.4f} (`evaluation/`). Made on "
            f"{metrics.hardware} by\n\n```bash\n{table['command']}\n```\n\nSingle view unless the column says "
            "hflip TTA (the average with the mirrored face). The weights were not fitted on this split; the members "
            "were selected on it as `fer_hf.train` selects checkpoints."
        )
    usage = "\n".join(f"```python\n{code}```\n" for code in usage_code(where, trust_remote_code=True))
    card = folder / "README.md"
    card.write_text(
        f"{front}\n# FER2013 ensemble: {' + '.join(m['name'] for m in ensemble.members)}\n\n"
        "The weighted average of the probabilities of models trained by fer_hf on FER2013 Training (7 classes). Each "
        "member keeps its own preprocessing inside the ensemble's forward: the ensemble takes a gray face at "
        f"{ensemble.image_size}x{ensemble.image_size} (pixel values in [0, 1]; RGB is averaged to gray), like "
        "FER2013's own faces. One forward runs every member: its cost is the sum of theirs.\n\n"
        f"## Members\n\n| member | model type | weight | input |\n|---|---|---|---|\n{members}\n\n"
        f"## Results\n\n{results}\n\n## How to use\n\n{usage}\n{LIMITATIONS}"
    )
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_hf.hub.card", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a finished fer_hf.train run folder")
    parser.add_argument("--repo-id", help="Hub id used in the usage code (default: hub_model_id or the folder)")
    parser.add_argument("--comparison", help="Markdown file with a comparison table to include")
    parser.add_argument("--license", default=DEFAULT_LICENSE, help="license identifier for the metadata")
    parser.add_argument("--out", help="where to write the card (default: RUN_DIR/README.md)")
    args = parser.parse_args(argv)
    path = write_model_card(
        args.run_dir, args.out, repo_id=args.repo_id, comparison=args.comparison, license=args.license
    )
    print(path)
    return 0


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))
