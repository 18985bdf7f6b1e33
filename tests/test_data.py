"""fer_hf.data on the real FER2013: every source gives the same rows, labels map by name, bad input is named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value

from fer_hf.data.dataset import load_fer_dataset
from fer_hf.data.decode import decode_images
from fer_hf.data.sources import FerDataError, labels_of
from fer_hf.data.splits import add_validation_split, class_counts, class_weights, select_classes
from fer_hf.data.summary import main, summarize
from fer_hf.labels import FER_LABELS
from fer_hf.repo_ids import is_hub_id

# ../shared/fer2013/README.md
TRAIN_COUNTS = {
    "angry": 3995,
    "disgust": 436,
    "fear": 4097,
    "happy": 7215,
    "sad": 4830,
    "surprise": 3171,
    "neutral": 4965,
}
VALIDATION_COUNTS = {
    "angry": 467,
    "disgust": 56,
    "fear": 496,
    "happy": 895,
    "sad": 653,
    "surprise": 415,
    "neutral": 607,
}
USAGE = {"train": "Training", "validation": "PublicTest", "test": "PrivateTest"}
PIXEL_TEXT = np.array([str(v) for v in range(256)], dtype=object)  # uint8 -> its decimal text


# ---------------------------------------------------------------------------------------------- copies of the rows
def stratified_rows(ds: Dataset, per_class: int) -> Dataset:
    """The first `per_class` rows of each class, in their original order."""
    labels = labels_of(ds)
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(FER_LABELS))]))
    return ds.select(keep)


def write_kaggle_csv(dd: DatasetDict, path: Path) -> Path:
    """fer2013.csv layout: emotion,pixels,Usage, splits one after the other (train first, as in Kaggle's file)."""
    with path.open("w") as f:
        f.write("emotion,pixels,Usage\n")
        for split, ds in dd.items():
            pixels = decode_images(ds).numpy().reshape(len(ds), -1)
            for label, row in zip(labels_of(ds), pixels, strict=True):
                f.write(f"{label},{' '.join(PIXEL_TEXT[row])},{USAGE[split]}\n")
    return path


def write_imagefolder(dd: DatasetDict, root: Path) -> Path:
    """root/<split>/<class>/<row>.png with the original PNG bytes (no re-encoding)."""
    for split, ds in dd.items():
        names = ds.features["label"].names
        raw = ds.cast_column("image", Image(decode=False))
        for row, (image, label) in enumerate(zip(raw["image"], raw["label"], strict=True)):
            folder = root / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{row:05d}.png").write_bytes(image["bytes"])
    return root


def imagefolder_order(ds: Dataset) -> np.ndarray:
    """Row order an ImageFolder copy comes back in: class folders alphabetically, then file names."""
    labels, names = labels_of(ds), ds.features["label"].names
    return np.concatenate([np.flatnonzero(labels == names.index(name)) for name in sorted(names)])


@pytest.fixture(scope="session")
def small_dd(fer_dd) -> DatasetDict:
    """A stratified real subset: 50 train and 15 validation faces per class."""
    return DatasetDict(
        {"train": stratified_rows(fer_dd["train"], 50), "validation": stratified_rows(fer_dd["validation"], 15)}
    )


@pytest.fixture(scope="session")
def small_pixels(small_dd) -> dict[str, np.ndarray]:
    return {split: decode_images(ds).numpy() for split, ds in small_dd.items()}


@pytest.fixture(scope="session")
def full_csv_dd(fer_dd, tmp_path_factory) -> DatasetDict:
    """All 32,298 rows written as fer2013.csv and loaded back (built once: ~10 s)."""
    return load_fer_dataset(write_kaggle_csv(fer_dd, tmp_path_factory.mktemp("kaggle") / "fer2013.csv"))


@pytest.fixture(scope="session")
def full_imagefolder_dd(fer_dd, tmp_path_factory) -> DatasetDict:
    """All 32,298 rows written as an ImageFolder and loaded back (built once)."""
    return load_fer_dataset(write_imagefolder(fer_dd, tmp_path_factory.mktemp("imagefolder")))


# ---------------------------------------------------------------------------------------------- the real data
def test_parquet_has_the_published_counts(fer_dd):
    assert list(fer_dd) == ["train", "validation"]
    assert len(fer_dd["train"]) == 28709 and len(fer_dd["validation"]) == 3589
    for split, expected in (("train", TRAIN_COUNTS), ("validation", VALIDATION_COUNTS)):
        ds = fer_dd[split]
        assert ds.features["label"] == ClassLabel(names=list(FER_LABELS))
        assert isinstance(ds.features["image"], Image)
        assert dict(zip(FER_LABELS, class_counts(ds), strict=True)) == expected


def test_single_parquet_file_split_comes_from_its_name(shared_fer, tmp_path):
    dd = load_fer_dataset(shared_fer / "validation.parquet")
    assert list(dd) == ["validation"] and class_counts(dd["validation"]) == list(VALIDATION_COUNTS.values())
    (tmp_path / "faces.parquet").symlink_to(shared_fer / "validation.parquet")  # no split in the name: train
    dd = load_fer_dataset(tmp_path / "faces.parquet", validation_fraction=0.2)
    assert class_counts(dd["validation"]) == [round(0.2 * n) for n in VALIDATION_COUNTS.values()]  # stratified
    assert len(dd["train"]) + len(dd["validation"]) == 3589


def test_bundled_sample_is_real_and_balanced(bundled_dd):
    assert class_counts(bundled_dd["train"]) == [40] * 7
    assert class_counts(bundled_dd["validation"]) == [10] * 7
    images = decode_images(bundled_dd["validation"])
    assert images.shape == (70, 48, 48) and images.float().std() > 30  # real faces, not blank


# ---------------------------------------------------------------------------------------------- same rows, every source
def test_kaggle_csv_copy_gives_the_same_labels_and_pixels(small_dd, small_pixels, tmp_path):
    dd = load_fer_dataset(write_kaggle_csv(small_dd, tmp_path / "fer2013.csv"))
    assert list(dd) == ["train", "validation"]
    for split, ds in dd.items():
        np.testing.assert_array_equal(labels_of(ds), labels_of(small_dd[split]))
        np.testing.assert_array_equal(decode_images(ds).numpy(), small_pixels[split])
        assert ds.features == small_dd[split].features


def test_kaggle_csv_folder_and_private_test_split(small_dd, small_pixels, tmp_path):
    three = DatasetDict({**small_dd, "test": small_dd["validation"]})
    write_kaggle_csv(three, tmp_path / "fer2013.csv")
    dd = load_fer_dataset(tmp_path)  # a folder holding one CSV
    assert list(dd) == ["train", "validation", "test"]
    np.testing.assert_array_equal(decode_images(dd["test"]).numpy(), small_pixels["validation"])


def test_imagefolder_copy_maps_folder_names_not_folder_order(small_dd, small_pixels, tmp_path):
    root = write_imagefolder(small_dd, tmp_path / "fer")
    assert sorted(p.name for p in (root / "train").iterdir())[:5] == ["angry", "disgust", "fear", "happy", "neutral"]
    dd = load_fer_dataset(root)
    assert list(dd) == ["train", "validation"]
    for split, ds in dd.items():
        order = imagefolder_order(small_dd[split])
        np.testing.assert_array_equal(labels_of(ds), labels_of(small_dd[split])[order])
        np.testing.assert_array_equal(decode_images(ds).numpy(), small_pixels[split][order])
        assert ds.features["label"].names == list(FER_LABELS)  # neutral stays 6, not alphabetical 4
    assert labels_of(dd["train"])[-1] == FER_LABELS.index("surprise")  # the last folder on disk


def test_full_kaggle_csv_copy_has_the_same_rows(full_csv_dd, fer_dd):
    assert list(full_csv_dd) == ["train", "validation"]
    for split in ("train", "validation"):
        np.testing.assert_array_equal(labels_of(full_csv_dd[split]), labels_of(fer_dd[split]))  # same order too
    assert summarize(full_csv_dd) == summarize(fer_dd)


def test_full_imagefolder_copy_has_the_same_counts(full_imagefolder_dd, fer_dd):
    dd = full_imagefolder_dd
    for split, expected in (("train", TRAIN_COUNTS), ("validation", VALIDATION_COUNTS)):
        assert dict(zip(FER_LABELS, class_counts(dd[split]), strict=True)) == expected
        np.testing.assert_array_equal(labels_of(dd[split]), labels_of(fer_dd[split])[imagefolder_order(fer_dd[split])])
    assert summarize(dd) == summarize(fer_dd)


def test_cli_json(shared_fer, capsys):
    assert main([str(shared_fer), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train"]["counts"] == TRAIN_COUNTS and summary["validation"]["counts"] == VALIDATION_COUNTS
    assert summary["train"]["rows"] == 28709 and summary["validation"]["rows"] == 3589
    assert summary["train"]["imbalance"] == round(7215 / 436, 2)


def test_cli_table_and_plot(shared_fer, tmp_path, capsys):
    plot = tmp_path / "classes.png"
    assert main([str(shared_fer), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "28709" in out and "3589" in out and "happy/disgust" in out
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_imagefolder_without_validation_gets_a_stratified_one(small_dd, tmp_path):
    root = write_imagefolder(DatasetDict({"train": small_dd["train"]}), tmp_path / "fer")
    dd = load_fer_dataset(root, validation_fraction=0.2, seed=3)
    assert list(dd) == ["train", "validation"]
    assert class_counts(dd["validation"]) == [10] * 7 and class_counts(dd["train"]) == [40] * 7


def test_parquet_with_classlabel_in_another_order_is_remapped(small_dd, tmp_path):
    alphabetical = sorted(FER_LABELS)
    ds = small_dd["validation"]
    names = [FER_LABELS[i] for i in labels_of(ds)]
    other = Dataset.from_dict(
        {
            "image": ds.cast_column("image", Image(decode=False))["image"],
            "label": [alphabetical.index(n) for n in names],
        },
        features=Features({"image": Image(), "label": ClassLabel(names=alphabetical)}),
    )
    other.to_parquet(tmp_path / "validation.parquet")
    small_dd["train"].to_parquet(tmp_path / "train.parquet")
    dd = load_fer_dataset(tmp_path)
    assert dd["validation"].features["label"].names == list(FER_LABELS)
    np.testing.assert_array_equal(labels_of(dd["validation"]), labels_of(ds))


def test_string_labels_are_mapped_by_name(small_dd, tmp_path):
    ds = small_dd["validation"]
    text = Dataset.from_dict(
        {
            "image": ds.cast_column("image", Image(decode=False))["image"],
            "label": [FER_LABELS[i].upper() for i in labels_of(ds)],
        },
        features=Features({"image": Image(), "label": Value("string")}),
    )
    text.to_parquet(tmp_path / "validation.parquet")
    np.testing.assert_array_equal(labels_of(load_fer_dataset(tmp_path)["validation"]), labels_of(ds))


# ---------------------------------------------------------------------------------------------- Hub ids, missing paths
@pytest.mark.parametrize("source", ["owner/fer2013", "Jeneral/fer-2013", "user_1/fer.v2"])
def test_hub_ids_are_recognised(source):
    assert is_hub_id(source)


@pytest.mark.parametrize(
    "source", ["fer2013", "./owner/name", "~/data/fer", "/data/fer2013", "a/b/c", "data/fer.csv", "x/"]
)
def test_paths_are_not_hub_ids(source):
    assert not is_hub_id(source)


def test_missing_path_raises_file_not_found_naming_it(tmp_path):
    missing = tmp_path / "no_such" / "fer2013.csv"
    with pytest.raises(FileNotFoundError, match="no_such/fer2013.csv"):
        load_fer_dataset(missing)
    with pytest.raises(FileNotFoundError, match="missing_folder"):
        load_fer_dataset("missing_folder")


def test_hub_id_goes_to_load_dataset(monkeypatch, small_dd):
    """Offline: the Hub loader is replaced by a fake returning Hub-style split names (train/test)."""
    calls = []

    def fake_load_dataset(repo_id, revision=None, **kwargs):
        calls.append((repo_id, revision))
        return DatasetDict({"train": small_dd["train"], "test": small_dd["validation"]})

    monkeypatch.setattr("fer_hf.data.sources.load_dataset", fake_load_dataset)
    dd = load_fer_dataset("someone/fer2013", revision="v1", seed=0)
    assert calls == [("someone/fer2013", "v1")]
    assert list(dd) == ["train", "validation", "test"]  # validation carved from train
    assert len(dd["train"]) + len(dd["validation"]) == len(small_dd["train"])


# ---------------------------------------------------------------------------------------------- subsets, splits, weights
@pytest.mark.parametrize(
    ("classes", "names"),
    [
        ("happy_sad", ["happy", "sad"]),
        ("angry_fear_happy_sad", ["angry", "fear", "happy", "sad"]),
        (["sad", "Angry", "surprise"], ["angry", "sad", "surprise"]),  # non-canonical order and case
        ("neutral,happy", ["happy", "neutral"]),
    ],
)
def test_class_subsets_relabel_contiguously(small_dd, classes, names):
    dd = select_classes(small_dd, classes)
    for split, ds in dd.items():
        assert ds.features["label"].names == names
        original = labels_of(small_dd[split])
        kept = np.flatnonzero(np.isin(original, [FER_LABELS.index(n) for n in names]))
        assert len(ds) == len(kept)  # nothing else dropped
        relabelled = [names[i] for i in labels_of(ds)]
        assert relabelled == [FER_LABELS[i] for i in original[kept]]  # same rows, same order, same classes


def test_load_with_a_subset(shared_fer):
    dd = load_fer_dataset(shared_fer, classes="happy_sad")
    assert class_counts(dd["train"]) == [7215, 4830] and class_counts(dd["validation"]) == [895, 653]


@pytest.mark.parametrize("classes", [["happy"], ["happy", "happy"], "joyful", "happy,calm"])
def test_bad_subsets_raise(small_dd, classes):
    with pytest.raises(ValueError):
        select_classes(small_dd, classes)


def test_validation_split_is_seeded_and_stratified(fer_dd):
    train = DatasetDict({"train": fer_dd["train"]})  # all 28,709 rows: labels only, cheap
    a = add_validation_split(train, 0.1, seed=1)
    b = add_validation_split(train, 0.1, seed=1)
    c = add_validation_split(train, 0.1, seed=2)
    rows = {
        name: decode_images(dd["validation"].select(range(200))).numpy()
        for name, dd in zip("abc", (a, b, c), strict=True)
    }
    np.testing.assert_array_equal(rows["a"], rows["b"])
    assert (rows["a"] != rows["c"]).any()
    assert abs(len(a["validation"]) - 2871) <= 4 and len(a["train"]) + len(a["validation"]) == 28709
    for part in ("train", "validation"):  # original row order kept: rows of the source, ascending
        assert (np.diff(a[part]._indices.column(0).to_numpy()) > 0).all()
    total = np.asarray(class_counts(fer_dd["train"]))
    for part in ("train", "validation"):
        share = np.asarray(class_counts(a[part])) / total
        np.testing.assert_allclose(share, len(a[part]) / 28709, atol=0.003)
    with pytest.raises(ValueError, match="validation_fraction"):
        add_validation_split(train, 1.5, seed=1)


def test_class_weights_are_inverse_frequency(fer_dd):
    counts = np.asarray(class_counts(fer_dd["train"]), dtype=float)
    weights = np.asarray(class_weights(fer_dd["train"]))
    np.testing.assert_allclose(weights * counts, 28709 / 7)  # w_c * n_c is the same for every class
    assert weights.argmax() == FER_LABELS.index("disgust") and weights.argmin() == FER_LABELS.index("happy")
    assert summarize(fer_dd)["train"]["smallest"] == "disgust"


# ---------------------------------------------------------------------------------------------- bad input
CSV_HEADER = "emotion,pixels,Usage\n"
GOOD_PIXELS = " ".join(["128"] * 2304)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("label,pixels,Usage\n3," + GOOD_PIXELS + ",Training\n", r"missing column\(s\) \['emotion'\]"),
        (
            CSV_HEADER + f"3,{GOOD_PIXELS},Training\n3,1 2 3,Training\n",
            r"row 2 \(line 3\): 'pixels' has 3 values; expected 2304",
        ),
        (CSV_HEADER + f"7,{GOOD_PIXELS},Training\n", r"row 1 \(line 2\): emotion '7'; expected an integer in 0..6"),
        (CSV_HEADER + f"-1,{GOOD_PIXELS},Training\n", r"row 1 \(line 2\): emotion '-1'"),
        (CSV_HEADER + f"3,{GOOD_PIXELS},Training\n2,{GOOD_PIXELS},Validate\n", r"row 2 \(line 3\): Usage 'Validate'"),
        (
            CSV_HEADER + "3," + " ".join(["300"] * 2304) + ",Training\n",
            r"row 1 \(line 2\): 'pixels' has values outside 0..255",
        ),
        (CSV_HEADER + "3," + " ".join(["a"] * 2304) + ",Training\n", r"row 1 \(line 2\): 'pixels' must be integers"),
        (CSV_HEADER, "no rows"),
        ("", "not a readable CSV"),
    ],
)
def test_bad_kaggle_csv_names_file_and_row(tmp_path, body, match):
    path = tmp_path / "broken.csv"
    path.write_text(body)
    with pytest.raises(FerDataError, match=match) as err:
        load_fer_dataset(path)
    assert str(path) in str(err.value)


def test_csv_with_an_empty_split(tmp_path):
    path = tmp_path / "only_test.csv"
    path.write_text(CSV_HEADER + f"3,{GOOD_PIXELS},PrivateTest\n")
    dd = load_fer_dataset(path)  # a test-only copy is allowed ...
    assert list(dd) == ["test"]
    (tmp_path / "fer" / "train" / "happy").mkdir(parents=True)
    with pytest.raises(FerDataError, match="split 'train' is empty"):  # ... an empty split is not
        load_fer_dataset(tmp_path / "fer")


def test_unknown_class_folder_names_it(small_dd, tmp_path):
    root = write_imagefolder(DatasetDict({"train": small_dd["train"].select(range(20))}), tmp_path / "fer")
    next((root / "train").iterdir()).rename(root / "train" / "joyful")
    with pytest.raises(FerDataError, match=r"train/joyful: unknown class folder 'joyful'; expected one of"):
        load_fer_dataset(root)


def test_undecodable_image_names_the_file(small_dd, tmp_path):
    root = write_imagefolder(DatasetDict({"train": small_dd["train"].select(range(20))}), tmp_path / "fer")
    broken = next((root / "train").glob("*/*.png"))
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(FerDataError, match=f"{broken}: cannot decode image"):
        load_fer_dataset(root)
    broken.unlink()
    (broken.parent / "notes.txt").write_text("not a face")
    with pytest.raises(FerDataError, match="notes.txt: not an image file"):
        load_fer_dataset(root)


def test_undecodable_parquet_image_names_file_and_row(small_dd, tmp_path, monkeypatch):
    monkeypatch.setattr("fer_hf.data.decode.DECODE_BLOCK", 2)  # the bad row is in a later block, on another thread
    ds = small_dd["validation"].select(range(5))
    images = list(ds.cast_column("image", Image(decode=False))["image"])
    images[3] = {"bytes": b"garbage", "path": None}
    bad = Dataset.from_dict({"image": images, "label": labels_of(ds).tolist()}, features=ds.features)
    bad.to_parquet(tmp_path / "validation.parquet")
    dd = load_fer_dataset(tmp_path / "validation.parquet")
    with pytest.raises(FerDataError, match=r"validation.parquet: row 3: cannot decode image"):
        decode_images(dd["validation"])
    with pytest.raises(FerDataError, match=r"validation.parquet: row 3 \(row 1 of this selection\): cannot decode"):
        decode_images(dd["validation"].select([0, 3, 4]))  # a subset or carved split still names the file row


def test_parquet_with_bad_labels_or_columns(small_dd, tmp_path):
    ds = small_dd["validation"].select(range(5))
    images = ds.cast_column("image", Image(decode=False))["image"]
    Dataset.from_dict({"image": images, "label": [0, 1, 9, 2, 3]}).to_parquet(tmp_path / "labels.parquet")
    with pytest.raises(FerDataError, match=r"labels.parquet: row 2 has label 9; expected an integer in 0..6"):
        load_fer_dataset(tmp_path / "labels.parquet")
    Dataset.from_dict({"image": images, "target": [0] * 5}).to_parquet(tmp_path / "columns.parquet")
    with pytest.raises(FerDataError, match=r"columns.parquet: no label column"):
        load_fer_dataset(tmp_path / "columns.parquet")
    named = Features({"image": Image(), "label": ClassLabel(names=["calm", "happy"])})
    Dataset.from_dict({"image": images, "label": [0, 1, 0, 1, 0]}, features=named).to_parquet(
        tmp_path / "names.parquet"
    )
    with pytest.raises(FerDataError, match=r"names.parquet: label names \['calm', 'happy'\]"):
        load_fer_dataset(tmp_path / "names.parquet")


def test_other_file_types_and_unknown_split_folders(tmp_path):
    (tmp_path / "faces.zip").write_bytes(b"PK")
    with pytest.raises(FerDataError, match="faces.zip: not a FER2013 source"):
        load_fer_dataset(tmp_path / "faces.zip")
    (tmp_path / "fer" / "holdout" / "happy").mkdir(parents=True)
    with pytest.raises(FerDataError, match="holdout: unknown split folder"):
        load_fer_dataset(tmp_path / "fer")
