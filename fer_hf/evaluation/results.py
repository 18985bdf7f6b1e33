"""What a run folder records, as types: a training run, an evaluation and a cross-validation.

Every command that writes `metrics.json` or `cv_metrics.json` builds one of these records and writes it with
`write_record`; every reader (compare, the model card, publish, bundle, evaluate, cv, the ensemble) reads it with
`read_record`. The keys therefore live in one place, a file that does not fit is refused with its path and key, and a
record is written to a temporary file and renamed, so a half-written one never looks complete.

    RunRecord   fer_hf.train, fer_hf.hub.bundle, fer_hf.ensemble   metrics.json of a model folder
    EvalRecord  fer_hf.evaluate, fer_hf.importers.reference         metrics.json of an evaluation folder
    CVRecord    fer_hf.cv                                            cv_metrics.json

The JSON layout is flat, as it was before these types existed (files without a "version" are read the same way): the
record's fields, and in a run record one object per evaluated split under the split's name ("validation", "test"),
plus score summaries such as "validation_tta_hflip".
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

FORMAT_VERSION = 1
METRICS_FILE = "metrics.json"
CV_FILE = "cv_metrics.json"


class RecordError(ValueError):
    """A metrics file that is not a record of this package: the message names the file and the key."""


# ------------------------------------------------------------------------------------------------- the parts
@dataclass
class Metrics:
    """One split's scores (`fer_hf.evaluation.metrics.compute_fer_metrics`): confusion_matrix is (K, K), rows true labels."""

    accuracy: float
    macro_f1: float
    weighted_f1: float
    top2_accuracy: float
    per_class: dict[str, dict[str, float]]  # name -> precision, recall, f1, support
    confusion_matrix: list[list[int]]
    num_samples: int
    ece: float | None = None  # expected calibration error, 15 bins (records from before calibration: None)
    nll: float | None = None  # mean -log p(label)
    kl_raters: float | None = None  # FER+ splits: mean KL(raters' distribution || model's)
    nll_raters: float | None = None  # ... and the votes' mean cross-entropy under the model
    left_out: dict[str, Any] | None = None  # faces not scored (another label set): faces, classes, outputs, why
    reliability: dict[str, list] | None = None  # per confidence bin: confidence, accuracy, count (the diagram)


@dataclass
class TrainerEval(Metrics):
    """A run's final evaluation by `Trainer.predict` (fer_hf.training.trainer.evaluate_splits)."""

    split: str = "validation"
    seconds: float | None = None  # Trainer.predict's time for the split: the run's only throughput figure

    @property
    def images_per_second(self) -> float | None:
        return round(self.num_samples / self.seconds, 1) if self.seconds else None


@dataclass
class Scores:
    """Accuracy and macro-F1 alone: a test-time-augmented view, or the float32 weights of a float16 bundle."""

    accuracy: float
    macro_f1: float
    tta: str = "none"


# ------------------------------------------------------------------------------------------------- the records
@dataclass
class EvalRecord(Metrics):
    """One model on one split (fer_hf.evaluate's report): scores, where the faces came from, what it cost."""

    KIND: ClassVar[str] = "evaluate"
    model: str = ""
    model_type: str = ""
    data: str = ""
    split: str = ""
    split_size: int = 0
    labels: list[str] = field(default_factory=list)
    classes: str | None = None
    tta: str = "none"
    parameters: int | None = None
    trainable_parameters: int | None = None  # from the run's own record; None without one
    train_seconds: float | None = None
    images_per_second: float | None = None
    inference_seconds: float | None = None
    wall_seconds: float | None = None
    batch_size: int | None = None
    device: str | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)  # size, channels, mean, std (+ resize)
    top_mistakes: list[dict[str, Any]] = field(default_factory=list)
    reference: dict[str, Any] | None = None  # a third-party model's provenance (fer_hf.importers.reference)

    @property
    def scores(self) -> Scores:
        return Scores(self.accuracy, self.macro_f1, self.tta)


@dataclass
class RunRecord:
    """A model folder: what was trained and how (fer_hf.train), bundled (fer_hf.hub.bundle) or combined
    (fer_hf.ensemble), and its evaluated splits."""

    KIND: ClassVar[str] = "run"
    model_family: str
    labels: list[str]
    parameters: int
    trainable_parameters: int | None = None  # what training updated (gradual unfreezing: fewer than parameters)
    train_seconds: float | None = None  # all sessions of a resumed run, evaluation every epoch included
    train_sessions: int | None = None
    epochs: float | None = None
    best_checkpoint: str | None = None
    checkpoint: str | None = None  # a bundle: which weights it holds, in words
    device: str | None = None
    hardware: str | None = None
    world_size: int | None = None
    init_from: dict[str, Any] | None = None  # the run it started from: path, epochs, train_seconds
    weight_average: dict[str, Any] | None = None  # method, epochs (run.swa_from_epoch)
    distill: dict[str, Any] | None = None  # the distill section of the recipe
    members: list[str] | None = None  # an ensemble: its members, their weights, the command that made it
    weights: list[float] | None = None
    command: str | None = None
    data: str | None = None
    split: str | None = None
    weights_dtype: str | None = None  # "float16" for a bundle stored with --half
    float32_validation: Scores | None = None  # ... and its scores before, with the float32 weights
    splits: dict[str, TrainerEval | EvalRecord] = field(default_factory=dict)  # "validation", "test"
    summaries: dict[str, Scores] = field(default_factory=dict)  # "validation_tta_hflip"

    @property
    def evaluated_splits(self) -> list[str]:
        """The evaluated splits, the reported one (test when there is one) first."""
        return sorted(self.splits, key=lambda s: (s != "test", s != "validation", s))

    def total_train_seconds(self) -> float | None:
        """Training time including the run this one started from (model.init_from)."""
        earlier = (self.init_from or {}).get("train_seconds")
        seconds = self.train_seconds
        return seconds + earlier if seconds is not None and earlier is not None else seconds


@dataclass
class CVRecord:
    """k-fold cross-validation over Training (fer_hf.cv): per-fold rows, mean and sample std, pooled confusions."""

    KIND: ClassVar[str] = "cv"
    recipe: str | None
    model_family: str
    data: str
    split: str  # "train (5-fold CV)"
    split_size: int
    folds: int
    seed: int
    labels: list[str]
    mean: dict[str, Any]  # accuracy, macro_f1, weighted_f1, top2_accuracy, per_class_f1
    std: dict[str, Any]
    confusion_matrix: list[list[int]]
    per_fold: list[dict[str, Any]]
    tta: str = "none"
    parameters: int | None = None
    trainable_parameters: int | None = None
    train_seconds: float | None = None  # mean over folds
    images_per_second: float | None = None


Record = RunRecord | EvalRecord | CVRecord
RECORDS: dict[str, type] = {cls.KIND: cls for cls in (RunRecord, EvalRecord, CVRecord)}


# ------------------------------------------------------------------------------------------------- JSON
def to_json(record: Record) -> dict:
    """The flat JSON object of a record: kind, version, the fields; a run's splits and summaries by name."""
    out: dict[str, Any] = {"kind": record.KIND, "version": FORMAT_VERSION}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if f.name in ("splits", "summaries"):
            out.update({name: _part_json(part) for name, part in value.items()})
        else:
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out


def _part_json(part: TrainerEval | EvalRecord | Scores) -> dict:
    return to_json(part) if isinstance(part, EvalRecord) else dataclasses.asdict(part)


def _build(cls: type, doc: dict, where: str):
    """cls(**doc) with every key checked: unknown keys and missing required ones are named."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(doc) - names)
    if unknown:
        raise RecordError(
            f"{where}: unexpected key(s) {unknown} for a {cls.__name__}; expected some of {sorted(names)}"
        )
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in doc]
    if missing:
        raise RecordError(f"{where}: missing key(s) {missing} for a {cls.__name__}")
    hints = _field_types(cls)
    for name, value in doc.items():
        problem = _type_problem(value, hints[name])
        if problem is not None:
            path, expected, bad = problem
            raise RecordError(f"{where}: key {name!r}{path} is {value_text(bad)}, expected {expected}")
    return cls(**doc)


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def value_text(value: Any) -> str:
    """A JSON value, short, with its type."""
    text = json.dumps(value)
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({type(value).__name__})"


def _type_problem(value: Any, hint: Any) -> tuple[str, str, Any] | None:
    """None when `value` (parsed JSON) fits the annotation `hint`, else (where inside it, what was expected, the
    value found there). Numbers
    are checked all the way down (a per-class f1 of "high" would break every reader's :.4f); records and parts
    (dataclasses) and Any are checked by their own builders or not at all."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or dataclasses.is_dataclass(hint):
        return None
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        others = [arg for arg in args if arg is not type(None)]
        if any(dataclasses.is_dataclass(arg) or arg is Any for arg in others):
            return None
        problems = [_type_problem(value, arg) for arg in others]
        if any(problem is None for problem in problems):
            return None
        path, expected, bad = problems[0]
        return path, expected + (" or null" if type(None) in args else ""), bad
    if hint is float:
        return None if isinstance(value, int | float) and not isinstance(value, bool) else ("", "a number", value)
    if hint is int:
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        return None if whole and not isinstance(value, bool) else ("", "an integer", value)
    if hint in (str, bool):
        return None if isinstance(value, hint) else ("", f"a {'string' if hint is str else 'boolean'}", value)
    if origin is list:
        if not isinstance(value, list):
            return "", "a list", value
        for i, item in enumerate(value):
            problem = _type_problem(item, args[0]) if args else None
            if problem is not None:
                return f"[{i}]{problem[0]}", problem[1], problem[2]
        return None
    if origin is dict:
        if not isinstance(value, dict):
            return "", "an object", value
        for key, item in value.items():
            problem = _type_problem(item, args[1]) if args else None
            if problem is not None:
                return f"[{key!r}]{problem[0]}", problem[1], problem[2]
        return None
    return None


def _part(name: str, value: Any, where: str) -> TrainerEval | EvalRecord | Scores:
    """A run's split ("validation": full metrics) or summary ("validation_tta_hflip": accuracy, macro_f1, tta)."""
    if not isinstance(value, dict) or "accuracy" not in value:
        raise RecordError(f"{where}: key {name!r} is not a field of a run record nor a split's metrics")
    if value.get("kind") == EvalRecord.KIND:
        return _build(EvalRecord, _strip(value, where), f"{where} [{name}]")
    cls = TrainerEval if "per_class" in value else Scores
    return _build(cls, value, f"{where} [{name}]")


def _strip(doc: dict, where: str) -> dict:
    """doc without its kind and version; a version newer than this package's is refused."""
    version = doc.get("version", FORMAT_VERSION)  # files from before the version field have this layout
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RecordError(
            f"{where}: record format version {version!r}; this fer_hf reads up to {FORMAT_VERSION} (upgrade fer_hf)"
        )
    return {k: v for k, v in doc.items() if k not in ("kind", "version")}


def from_json(doc: Any, where: str = "record") -> Record:
    """The record a JSON object holds. `where` (a path) names it in errors."""
    if not isinstance(doc, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    # Runs written before records had a kind are recognised by their model_family.
    kind = doc.get("kind") or ("run" if "model_family" in doc else None)
    if kind not in RECORDS:
        raise RecordError(
            f"{where}: not a record of fer_hf (kind {kind!r}; expected one of {sorted(RECORDS)}): written by "
            "fer_hf.train, fer_hf.evaluate or fer_hf.cv?"
        )
    body = _strip(doc, where)
    try:
        if kind != RunRecord.KIND:
            return _build(RECORDS[kind], body, where)
        names = {f.name for f in dataclasses.fields(RunRecord)} - {"splits", "summaries"}
        fields = {k: v for k, v in body.items() if k in names}
        if isinstance(fields.get("float32_validation"), dict):
            fields["float32_validation"] = _build(
                Scores, fields["float32_validation"], f"{where} [float32_validation]"
            )
        parts = {k: _part(k, v, where) for k, v in body.items() if k not in names}
        fields["splits"] = {k: v for k, v in parts.items() if not isinstance(v, Scores)}
        fields["summaries"] = {k: v for k, v in parts.items() if isinstance(v, Scores)}
        return _build(RunRecord, fields, where)
    except TypeError as err:
        raise RecordError(f"{where}: {err}") from None


def find_record_file(path: str | Path) -> Path:
    """A folder -> its cv_metrics.json or metrics.json; a file -> itself."""
    path = Path(path)
    if path.is_file():
        return path
    for name in (CV_FILE, METRICS_FILE):
        if (path / name).is_file():
            return path / name
    raise RecordError(f"{path}: no {METRICS_FILE} or {CV_FILE} (is the run or evaluation finished?)")


def read_record(path: str | Path, expect: type | tuple[type, ...] | None = None) -> Record:
    """The record in a folder (metrics.json or cv_metrics.json) or file; `expect` refuses other kinds."""
    file = find_record_file(path)
    try:
        doc = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise RecordError(f"{file}: cannot read it as JSON ({err})") from None
    record = from_json(doc, str(file))
    if expect is not None and not isinstance(record, expect):
        wanted = " or ".join(cls.__name__ for cls in (expect if isinstance(expect, tuple) else (expect,)))
        raise RecordError(f"{file}: holds a {type(record).__name__}, expected a {wanted}")
    return record


def read_run_record(folder: str | Path) -> RunRecord | None:
    """The model folder's own run record, or None where it has none (a Hub model, a plain checkpoint)."""
    file = Path(folder) / METRICS_FILE
    return read_record(file, RunRecord) if file.is_file() else None


def write_record(record: Record, path: str | Path) -> Path:
    """Write a record as JSON, atomically: a temporary file renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(to_json(record), indent=2) + "\n")
    os.replace(tmp, path)
    return path


MEMBERS_FILE = "members.json"


ENSEMBLE_FILES = (MEMBERS_FILE, "members.md", METRICS_FILE)  # what publishing stages next to the model


@dataclass
class MemberRow:
    """One line of the member table: a member alone, the ensemble, or the ensemble without one member."""

    model: str
    n: int  # faces in the split
    accuracy: float
    macro_f1: float
    accuracy_hflip: float
    macro_f1_hflip: float
