"""FER+ (Barsoum et al. 2016, arXiv 1608.01041; labels MIT): ten crowd votes per FER2013 face, read as data.

Sources (`fer_hf.data.load_fer_dataset` dispatches here):
- the FER+ layout FERPlus's `src/generate_training_data.py` writes: `FER2013Train/`, `FER2013Valid/`, `FER2013Test/`
  (any of them), each with `label.csv` (no header: image name, face box, 10 vote counts) and its 48x48 gray PNGs;
- a Kaggle `fer2013.csv` joined with the official `fer2013new.csv` by row order, as FERPlus's script does.

A FER+ split has the columns `image`, `label` (`ClassLabel` of `FERPLUS_LABELS`: FER2013's 7 names in their order,
then contempt) and `votes` (the 10 raw counts, FER+'s order: `VOTE_NAMES`); the Kaggle join also keeps
`fer2013_label` (the original one-rater label). `label` is the majority label of the paper's protocol, -1 where it
has none. `targets(votes, mode)` turns votes into what a training mode learns from, exactly as FERPlus's
`src/ferplus.py` (`_process_data`, `_process_target`) does.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from fer_hf.labels import FER_LABELS, FERPLUS_LABELS

# label.csv / fer2013new.csv vote columns, in the files' order
VOTE_NAMES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
NUM_VOTES = len(VOTE_NAMES)
# FER+'s emotion column i -> canonical label id (fer_hf.labels.FERPLUS_LABELS)
VOTE_TO_LABEL = np.array([FERPLUS_LABELS.index(n) for n in ("neutral", "happy", "surprise", "sad", "angry", "disgust",
                          "fear", "contempt")])  # fmt: skip
LABEL_TO_VOTE = np.argsort(VOTE_TO_LABEL)  # canonical id -> FER+ emotion column
FERPLUS_FOLDERS = {"FER2013Train": "train", "FER2013Valid": "validation", "FER2013Test": "test"}
MODES = ("majority", "probability", "crossentropy", "multi_target")
MULTI_TARGET_THRESHOLD = 0.3  # multi_target: every emotion with at least 30% of the (outlier-free) votes
MULTI_TARGET_EPSILON = 0.001  # FERPlus's epsilon, "to avoid ill-conditioned computation"
FACE_SIZE = 48


class FerPlusError(ValueError):
    """A FER+ file that is not what it should be; the message names the file and line."""


# ---------------------------------------------------------------------------------------------- votes -> targets
def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"ferplus_mode {mode!r}: choose one of {list(MODES)}")
    return mode


def _process_row(raw: np.ndarray, mode: str) -> np.ndarray:
    """FERPlus's `_process_data` for one face: 10 counts -> 10 shares (unknown = 1 when the face is dropped)."""
    raw = np.where(raw <= 1, 0.0, raw.astype(np.float64))  # votes of 1 are outliers
    total = raw.sum()
    unknown = np.zeros(NUM_VOTES)
    unknown[-2] = 1.0
    emotion = np.zeros(NUM_VOTES)
    if total <= 0:
        return unknown
    if mode == "majority":
        if raw.max() > 0.5 * total:
            emotion[np.argmax(raw)] = raw.max()
        else:
            return unknown
    elif mode in ("probability", "crossentropy"):
        # Take the top counts (ties together) until 75% of the votes, 3 emotions, or unknown/NF is reached.
        part, count, valid = 0.0, 0, True
        while part < 0.75 * total and count < 3 and valid:
            top = raw.max()
            for i in range(NUM_VOTES):
                if raw[i] == top:
                    emotion[i], raw[i] = top, 0.0
                    part += top
                    count += 1
                    if i >= 8:  # unknown or not-a-face ties with the top
                        valid = False
                        if emotion.sum() > top:  # other emotions came before it: keep them, drop it
                            emotion[i] = 0.0
                            count -= 1
                        break
        if emotion.sum() <= 0.5 * total or count > 3:
            return unknown
    else:  # multi_target
        emotion = np.where(raw >= MULTI_TARGET_THRESHOLD * total, raw, 0.0)
        if emotion.sum() <= 0.5 * total:
            return unknown
    return emotion / emotion.sum()


def vote_distributions(votes: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """votes (N, 10) -> (distributions (N, 8) over FERPLUS_LABELS in canonical order, kept (N,) bool).

    A face is kept when the mode's distribution peaks on one of the 8 emotions (not unknown / not-a-face); its
    distribution is then renormalised over the 8 emotions. Dropped faces get a zero row."""
    check_mode(mode)
    votes = np.asarray(votes)
    shares = np.stack([_process_row(row, mode) for row in votes]) if len(votes) else np.zeros((0, NUM_VOTES))
    kept = shares.argmax(axis=1) < 8
    emotions = shares[:, :8] * kept[:, None]
    sums = emotions.sum(axis=1, keepdims=True)
    emotions = np.divide(emotions, sums, out=np.zeros_like(emotions), where=sums > 0)
    out = np.zeros_like(emotions)
    out[:, VOTE_TO_LABEL] = emotions  # FER+ column order -> canonical label ids
    return out.astype(np.float32), kept


def majority_labels(votes: np.ndarray) -> np.ndarray:
    """The paper's test label of each face (canonical id), -1 where the majority protocol drops it."""
    dist, kept = vote_distributions(votes, "majority")
    return np.where(kept, dist.argmax(axis=1), -1).astype(np.int64)


def training_targets(dist: np.ndarray, mode: str) -> np.ndarray:
    """What the loss learns from, per face (N, K), from `vote_distributions`' rows (FERPlus's `_process_target`):
    majority and crossentropy the distribution itself (one-hot for majority), probability the distribution a label
    is drawn from each time the face is seen (`draw_labels`), multi_target every emotion it kept at 1 (plus FERPlus's
    epsilon everywhere), for `MultiTargetLoss`."""
    check_mode(mode)
    if mode == "multi_target":
        return ((1 - MULTI_TARGET_EPSILON) * (dist > 0) + MULTI_TARGET_EPSILON).astype(np.float32)
    return dist.astype(np.float32)


def raters_distribution(votes: np.ndarray, names: Sequence[str] = FERPLUS_LABELS) -> np.ndarray:
    """What the raters said, (N, len(names)): each face's raw votes for the `names` emotions, as shares of those
    votes (unknown / not-a-face and other classes left out). Rows without such votes are zero."""
    votes = np.asarray(votes, dtype=np.float64)
    columns = [int(LABEL_TO_VOTE[FERPLUS_LABELS.index(n)]) for n in names]
    chosen = votes[:, columns]
    sums = chosen.sum(axis=1, keepdims=True)
    return np.divide(chosen, sums, out=np.zeros_like(chosen), where=sums > 0)


def mode_counts(votes: np.ndarray) -> dict[str, dict[str, int]]:
    """Faces each mode keeps and drops: {mode: {"kept": n, "dropped": n}}."""
    out = {}
    for mode in MODES:
        _, kept = vote_distributions(votes, mode)
        out[mode] = {"kept": int(kept.sum()), "dropped": int((~kept).sum())}
    return out


def agreement(fer2013: np.ndarray, ferplus: np.ndarray) -> dict[str, dict]:
    """How often FER2013's label equals FER+'s majority, per FER2013 class, on faces that have both."""
    both = (fer2013 >= 0) & (ferplus >= 0)
    out = {}
    for i, name in enumerate(FER_LABELS):
        rows = both & (fer2013 == i)
        same = int((ferplus[rows] == i).sum())
        out[name] = {"faces": int(rows.sum()), "same": same, "share": same / max(int(rows.sum()), 1)}
    same = int((fer2013[both] == ferplus[both]).sum())
    out["all"] = {"faces": int(both.sum()), "same": same, "share": same / max(int(both.sum()), 1)}
    return out


# ---------------------------------------------------------------------------------------------- reading
def parse_counts(cells: Sequence[str], where: str) -> list[int]:
    """Ten vote counts of a label.csv / fer2013new.csv row, checked."""
    if len(cells) != NUM_VOTES:
        raise FerPlusError(
            f"{where}: {len(cells)} vote counts; expected {NUM_VOTES} integers ({', '.join(VOTE_NAMES)})"
        )
    try:
        counts = [int(c) for c in cells]
    except ValueError:
        raise FerPlusError(f"{where}: vote counts {list(cells)} must be integers") from None
    if min(counts) < 0:
        raise FerPlusError(f"{where}: a negative vote count in {counts}")
    if sum(counts) <= 0:
        raise FerPlusError(f"{where}: the vote counts {counts} sum to {sum(counts)}; expected a positive number")
    return counts


def is_ferplus_folder(path: Path) -> bool:
    return any((path / name / "label.csv").is_file() for name in FERPLUS_FOLDERS)


def read_ferplus_folder(root: Path) -> dict[str, tuple[Path, dict[str, list]]]:
    """The FER+ layout -> {split: (its folder, {"image": [...], "votes": [...]})}: each label.csv row, its image
    checked."""
    rows = {}
    for folder, split in FERPLUS_FOLDERS.items():
        labels = root / folder / "label.csv"
        if labels.is_file():
            rows[split] = (root / folder, _read_label_csv(labels))
        elif (root / folder).is_dir():
            raise FerPlusError(f"{root / folder}: no label.csv; expected FERPlus's image name, box, 10 votes rows")
    return rows


def _read_label_csv(path: Path) -> dict[str, list]:
    images, votes, seen = [], [], {}
    with path.open(newline="") as handle:
        for line, cells in enumerate(csv.reader(handle), start=1):
            where = f"{path}: line {line}"
            if not cells:
                continue
            if len(cells) != 2 + NUM_VOTES:
                raise FerPlusError(
                    f"{where}: {len(cells)} fields; expected image name, face box and {NUM_VOTES} vote counts"
                )
            name = cells[0].strip()
            if name in seen:
                raise FerPlusError(f"{where}: image {name!r} is named twice (first on line {seen[name]})")
            seen[name] = line
            votes.append(parse_counts(cells[2:], where))
            images.append({"bytes": _face_png(path.parent / name, where), "path": None})
    if not images:
        raise FerPlusError(f"{path}: no rows; expected one line per face")
    return {"image": images, "votes": votes}


def _face_png(file: Path, where: str) -> bytes:
    """The bytes of a 48x48 gray image, checked by decoding it (OpenCV: ~20 us a face)."""
    if not file.is_file():
        raise FerPlusError(f"{where}: image {file.name} is named but missing from {file.parent}")
    data = file.read_bytes()
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise FerPlusError(f"{where}: {file} cannot be decoded as an image")
    if decoded.shape != (FACE_SIZE, FACE_SIZE) or decoded.dtype != np.uint8:
        shape = "x".join(map(str, decoded.shape))
        raise FerPlusError(
            f"{where}: {file} is {shape} {decoded.dtype}; expected a {FACE_SIZE}x{FACE_SIZE} 8-bit gray face"
        )
    return data


def read_vote_file(path: Path) -> tuple[list[str], list[list[int]]]:
    """fer2013new.csv -> (Usage of each row, its 10 counts); one row per fer2013.csv row, in order."""
    usages, votes = [], []
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        expected = ["Usage", "Image name", *VOTE_NAMES]
        if header is None or [h.strip() for h in header] != expected:
            raise FerPlusError(f"{path}: header {header}; expected FER+'s {','.join(expected)}")
        for line, cells in enumerate(reader, start=2):
            where = f"{path}: line {line}"
            if len(cells) != 2 + NUM_VOTES:
                raise FerPlusError(f"{where}: {len(cells)} fields; expected Usage, image name and {NUM_VOTES} counts")
            usages.append(cells[0].strip())
            votes.append(parse_counts(cells[2:], where))
    return usages, votes


def check_join(csv_path: Path, csv_usage: Sequence[str], vote_path: Path, vote_usage: Sequence[str]) -> None:
    """fer2013.csv and fer2013new.csv must describe the same rows: same count, same Usage on every row."""
    if len(csv_usage) != len(vote_usage):
        raise FerPlusError(
            f"{csv_path} has {len(csv_usage)} rows but {vote_path} has {len(vote_usage)}; FER+'s votes join "
            "fer2013.csv row by row, so both must be the full files"
        )
    for i, (a, b) in enumerate(zip(csv_usage, vote_usage, strict=True)):
        if a.strip() != b:
            raise FerPlusError(
                f"row {i + 1}: {csv_path} says Usage {a!r} (line {i + 2}) but {vote_path} says {b!r} (line {i + 2}); "
                "the files do not describe the same rows"
            )
