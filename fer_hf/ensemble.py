"""Build an ensemble of trained FER models: one self-contained model folder that averages their probabilities.

    python -m fer_hf.ensemble default lite0 --output runs/ensemble --data ../shared/fer2013

MODELs are bundled names, run folders, model folders or Hub ids (what `fer_hf.evaluate` takes), trained on the same
classes. The folder holds every member's weights and code (`trust_remote_code=True` reloads it without fer_hf) and an
image processor for 48x48 gray faces; each member keeps its own preprocessing inside the ensemble's forward. Weights are
uniform unless --weights gives them; fit them, if at all, on data that is not the split you report.

With --data, every member and the ensemble are evaluated on one split (default: validation = PublicTest), single view
and with horizontal-flip TTA: `members.json`/`members.md` hold each member alone, the ensemble, and the ensemble
without each member (its gain), and `evaluation/`, `evaluation_hflip/` the ensemble's full `fer_hf.evaluate` report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import ViTImageProcessor

from fer_hf.cli import positive_int
from fer_hf.data.dataset import load_split
from fer_hf.data.decode import FerTensorDataset
from fer_hf.data.sources import raters_of
from fer_hf.evaluation.evaluator import build_report, check_labels, write_outputs
from fer_hf.evaluation.metrics import compute_fer_metrics
from fer_hf.evaluation.report import describe_hardware, member_markdown_table
from fer_hf.evaluation.results import (
    MEMBERS_FILE,
    METRICS_FILE,
    MemberRow,
    RunRecord,
    write_record,
)
from fer_hf.hub.card import write_ensemble_card
from fer_hf.models.hub_code import FerEnsembleConfig, FerEnsembleForImageClassification
from fer_hf.models.hub_code.configuration_fer_ensemble import MEMBER_TYPES
from fer_hf.models.inputs import input_spec
from fer_hf.models.loading import MODEL_HELP, LoadedModel, OnnxImageClassifier, load_classifier, resolve_model_path
from fer_hf.outputs import atomic_output_dir, check_apart


class EnsembleError(ValueError):
    """Models that cannot be put together; the message says which and why."""


# ---------------------------------------------------------------------------------------------- the model
def ensemble_image_processor(size: int = 48) -> ViTImageProcessor:
    """Photos and faces -> (B, C, 48, 48) in [0, 1] (mean 0, std 1): the members normalise inside the ensemble."""
    return ViTImageProcessor(
        do_resize=True,
        size={"height": size, "width": size},
        resample=Image.Resampling.BILINEAR,
        image_mean=0.0,  # one value: 1-channel faces and RGB photos both work
        image_std=1.0,
    )


def build_ensemble(
    members: Sequence[LoadedModel], names: Sequence[str], weights: Sequence[float] | None = None
) -> FerEnsembleForImageClassification:
    """One model from loaded members (same classes, same order); `weights` default to uniform."""
    if len(members) < 2:
        raise EnsembleError(f"an ensemble needs at least two models, got {len(members)}")
    weights = list(weights) if weights is not None else [1.0] * len(members)
    if len(weights) != len(members):
        raise EnsembleError(f"--weights has {len(weights)} values for {len(members)} models")
    first = members[0].label_names
    specs = []
    for name, member, weight in zip(names, members, weights, strict=True):
        config = member.model.config
        if config.model_type not in MEMBER_TYPES:
            raise EnsembleError(
                f"{name}: a {config.model_type!r} model cannot be a member (members are torch models of fer_hf's "
                f"own types {list(MEMBER_TYPES)}; an ensemble's members can be listed instead of the ensemble)"
            )
        if member.label_names != first:
            raise EnsembleError(f"{name} predicts {member.label_names} but {names[0]} predicts {first}")
        # Where the member was loaded from is `name`; its config's own path would name a folder of this machine.
        member_config = {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}
        spec = {"name": name, "weight": float(weight), "config": member_config}
        specs.append({**spec, "input": input_spec(config, member.image_processor)})
    reference = members[0].model.config
    config = FerEnsembleConfig(members=specs, id2label=reference.id2label, label2id=reference.label2id)
    model = FerEnsembleForImageClassification(config)
    for target, member in zip(model.members, members, strict=True):
        target.load_state_dict(member.model.state_dict())
    return model.eval()


def save_ensemble(model: FerEnsembleForImageClassification, folder: str | Path, half: bool = False) -> Path:
    """The model, its code and its image processor. `half`: weights stored as float16 (half the file; the config
    keeps float32, so loading casts them back and inference runs in float32 as before)."""
    folder = Path(folder)
    state = {k: v.half() if half and v.is_floating_point() else v for k, v in model.state_dict().items()}
    model.save_pretrained(folder, state_dict=state)
    ensemble_image_processor(model.config.image_size).save_pretrained(folder)
    return folder


def load_members(refs: Sequence[str], trust_remote_code: bool = False) -> list[LoadedModel]:
    loaded = []
    for ref in refs:
        member = load_classifier(ref, trust_remote_code=trust_remote_code)
        if isinstance(member.model, OnnxImageClassifier):
            raise EnsembleError(f"{ref}: an ONNX export cannot be a member; give the torch model it was exported from")
        loaded.append(member)
    return loaded


# ---------------------------------------------------------------------------------------------- the member table


def weighted_mean(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(M, N, K) probabilities, (M,) weights -> (N, K) log of the weighted mean (the ensemble's logits)."""
    mean = np.tensordot(weights / weights.sum(), probs, axes=1)
    return np.log(np.maximum(mean, np.finfo(mean.dtype).tiny))


def member_table(
    probs: dict[str, np.ndarray], labels: np.ndarray, names: Sequence[str], label_names: Sequence[str], weights
) -> list[MemberRow]:
    """probs[tta]: (M, N, K) per member. Rows: each member alone, the ensemble, the ensemble without each member."""
    weights = np.asarray(weights, dtype=np.float64)

    def row(title: str, keep: list[int]) -> MemberRow:
        scores = {}
        for tta, p in probs.items():
            m = compute_fer_metrics(weighted_mean(p[keep], weights[keep]), labels, label_names)
            scores[tta] = (round(m["accuracy"], 4), round(m["macro_f1"], 4))
        return MemberRow(title, len(labels), *scores["none"], *scores["hflip"])

    everyone = list(range(len(names)))
    rows = [row(name, [i]) for i, name in enumerate(names)]
    rows.append(row("ensemble", everyone))
    if len(names) > 2:  # without one of two members is that other member alone: already a row
        rows += [row(f"ensemble without {name}", [j for j in everyone if j != i]) for i, name in enumerate(names)]
    return rows


def evaluate_members(
    ensemble: FerEnsembleForImageClassification, faces: FerTensorDataset, batch_size: int = 256
) -> tuple[dict[str, np.ndarray], float]:
    """{tta: (M, N, K)} member probabilities, single view ("none") and averaged with the mirror ("hflip"), and the
    seconds the single-view passes took (the ensemble's own inference time: one pass runs every member)."""
    out, seconds = {"none": [], "hflip": []}, 0.0
    with torch.no_grad():
        for chunk in tqdm(faces.images.split(batch_size), desc="members", unit="batch", leave=False):
            x = chunk.unsqueeze(1).float().div_(255.0)  # (B, 1, 48, 48) in [0, 1], as the ensemble's processor
            start = time.perf_counter()
            single = ensemble.member_probabilities(x)  # (M, B, K)
            seconds += time.perf_counter() - start
            out["none"].append(single)
            out["hflip"].append((single + ensemble.member_probabilities(x.flip(-1))) / 2)
    return {tta: torch.cat(chunks, dim=1).numpy() for tta, chunks in out.items()}, seconds


# ---------------------------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fer_hf.ensemble", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help=f"two or more: {MODEL_HELP}")
    parser.add_argument("--output", required=True, help="the ensemble's folder")
    parser.add_argument("--weights", type=float, nargs="+", default=None, help="one per MODEL (default: uniform)")
    parser.add_argument("--data", default=None, help="evaluate members and ensemble on a split of this source")
    parser.add_argument("--split", default="validation", help="split of --data (default: validation = PublicTest)")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="faces per forward pass")
    parser.add_argument("--half", action="store_true", help="store the weights in float16 (inference stays float32)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a Hub model's own code to run")
    args = parser.parse_args(argv)
    if args.weights is not None and any(not np.isfinite(w) or w <= 0 for w in args.weights):
        parser.error(f"--weights must be positive numbers, got {args.weights}")
    return args


def write_evaluation(
    out: Path, data: str, split: str, batch_size: int, command: str, name: str | None = None
) -> list[MemberRow]:
    """Evaluate the ensemble saved in `out` on one split: the member table (members.json, members.md), the ensemble's
    own evaluation folders (single view, hflip TTA) and metrics.json (what its card and `fer_hf.hub.publish` read).
    `name`: the folder the reports name (where a staged ensemble will live; default `out`)."""
    loaded = load_classifier(out)
    split, ds = load_split(data, split)
    check_labels(loaded.label_names, ds.features["label"].names, str(out))
    faces = FerTensorDataset.from_split(ds, desc=f"decode {split}")
    labels = faces.labels.numpy()
    config = loaded.model.config
    names = [m["name"] for m in config.members]
    start = time.perf_counter()
    probs, seconds = evaluate_members(loaded.model, faces, batch_size)
    rows = member_table(probs, labels, names, loaded.label_names, config.member_weights)
    about = {"split": split, "data": data, "members": names, "weights": config.member_weights, "command": command}
    (out / MEMBERS_FILE).write_text(json.dumps({**about, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    (out / "members.md").write_text(member_markdown_table(rows, split) + "\n")
    reports, wall = {}, time.perf_counter() - start
    for tta, folder in (("none", "evaluation"), ("hflip", "evaluation_hflip")):
        # The ensemble's logits are the weighted mean of the member probabilities above: no second inference pass.
        logits = weighted_mean(probs[tta], np.asarray(config.member_weights))
        settings = dict(data=data, tta=tta, batch_size=batch_size, name=name)
        reports[tta] = build_report(loaded, split, logits, labels, seconds, wall, **settings, raters=raters_of(ds))
        (out / folder).mkdir()
        write_outputs(out / folder, reports[tta], faces.images)
    metrics = RunRecord(
        model_family="ensemble",
        labels=loaded.label_names,
        parameters=reports["none"].parameters,
        hardware=describe_hardware(),
        **about,
        splits={split: reports["none"]},
        summaries={f"{split}_tta_hflip": reports["hflip"].scores},
    )
    write_record(metrics, out / METRICS_FILE)
    return rows


def distinct_members(refs: Sequence[str]) -> list[str]:
    """Each MODEL's folder (or Hub id); refuses one model given twice, under the same name or another (a bundled
    name and its folder, a run folder and a path to it): it would only count twice in the average, which is what
    --weights is for."""
    resolved, seen = [], {}
    for ref in refs:
        where = resolve_model_path(ref)
        key = str(Path(where).resolve()) if Path(where).is_dir() else where
        if key in seen:
            same = f"{seen[key]!r} and {ref!r} are one model" if seen[key] != ref else f"{ref!r} is given twice"
            raise EnsembleError(
                f"MODEL {same} ({where}): an ensemble's members are different models; give each once, and "
                "--weights to count one more than the others"
            )
        seen[key] = ref
        resolved.append(where)
    return resolved


def make_ensemble(args: argparse.Namespace) -> tuple[Path, list[MemberRow]]:
    out = Path(args.output)
    check_apart(out, *distinct_members(args.models), args.data)
    rows: list[MemberRow] = []
    with atomic_output_dir(out, args.overwrite) as tmp:
        members = load_members(args.models, args.trust_remote_code)
        ensemble = build_ensemble(members, args.models, args.weights)
        save_ensemble(ensemble, tmp, args.half)
        command = " ".join(["python -m fer_hf.ensemble", *args.models, "--output", str(out), *command_options(args)])
        if args.data:
            rows = write_evaluation(tmp, args.data, args.split, args.batch_size, command, name=str(out))
        write_ensemble_card(tmp, str(out))
    return out, rows


def command_options(args: argparse.Namespace) -> list[str]:
    options = ["--weights", *map(str, args.weights)] if args.weights else []
    options += ["--data", args.data, "--split", args.split] if args.data else []
    return options + (["--half"] if args.half else [])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out, rows = make_ensemble(args)
    print(f"ensemble of {', '.join(args.models)} written to {out}")
    if rows:
        print(member_markdown_table(rows, args.split))
    return 0


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))
