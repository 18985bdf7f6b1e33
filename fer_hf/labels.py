"""Label sets in canonical order: FER2013's seven classes and FER+'s eight (the same seven, then contempt), their
label maps, and class subsets.

FER2013's `emotion` column uses 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral; FER+ adds
7 contempt. Everything in the package speaks these names and takes the label set of a run from its dataset's
`ClassLabel` or its model's config; an ImageFolder copy sorts them alphabetically on disk, so ids always come
from names (`label2id`), never from folder order.
"""

from __future__ import annotations

FER_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FERPLUS_LABELS: tuple[str, ...] = (*FER_LABELS, "contempt")
# Every class name the package knows, in canonical order (FER2013's ids are a prefix of FER+'s).
KNOWN_LABELS = FERPLUS_LABELS

# Named class subsets used by the reports (report-d: binary and 4-class tasks).
CLASS_SUBSETS: dict[str, tuple[str, ...]] = {
    "all": FER_LABELS,
    "happy_sad": ("happy", "sad"),
    "angry_fear_happy_sad": ("angry", "fear", "happy", "sad"),
}


def id2label(names: tuple[str, ...] = FER_LABELS) -> dict[int, str]:
    return dict(enumerate(names))


def label2id(names: tuple[str, ...] = FER_LABELS) -> dict[str, int]:
    return {name: i for i, name in enumerate(names)}


def canonical_id(name: str) -> int:
    """Canonical id of a class name (case-insensitive): FER2013's 0..6, contempt 7; raises on unknown names."""
    key = name.strip().lower()
    if key not in KNOWN_LABELS:
        raise ValueError(f"unknown class {name!r}; expected one of {list(KNOWN_LABELS)}")
    return KNOWN_LABELS.index(key)


def resolve_classes(classes: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Turn a subset name ("happy_sad") or a list of class names into class names in canonical order.

    The order of a subset is always the canonical order, so that "sad, happy" and "happy, sad"
    give the same relabelling (happy -> 0, sad -> 1).
    """
    if classes is None:
        return FER_LABELS
    if isinstance(classes, str):
        if classes in CLASS_SUBSETS:
            return CLASS_SUBSETS[classes]
        classes = [c for c in classes.split(",") if c.strip()]
    try:
        ids = sorted({canonical_id(c) for c in classes})
    except ValueError as err:
        raise ValueError(f"{err}; or a subset name, one of {list(CLASS_SUBSETS)}") from None
    if len(ids) < 2:
        raise ValueError(f"a class subset needs at least 2 classes, got {list(classes)}")
    if len(ids) != len(classes):
        raise ValueError(f"class subset {list(classes)} names a class twice")
    return tuple(KNOWN_LABELS[i] for i in ids)
