"""FER+: the real vote files as datasets, the four training modes, metrics against the raters, label sets as data.

Uses the real FER+ layout in ../shared/ferplus (FER2013Valid's 3,579 faces; its train folder only where a test
needs it) and its official fer2013new.csv.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fer_hf.data import ferplus
from fer_hf.data.dataset import load_fer_dataset
from fer_hf.data.sources import FerDataError, raters_of, votes_of
from fer_hf.data.summary import save_dataset
from fer_hf.labels import FER_LABELS, FERPLUS_LABELS
from fer_hf.training.losses import FocalLoss, MultiTargetLoss, WeightedCrossEntropy
from fer_hf.training.trainer import draw_labels

REPO = Path(__file__).resolve().parents[1]
SHARED_FERPLUS = Path(os.environ.get("FER_HF_SHARED_FERPLUS") or REPO.parent / "shared" / "ferplus")


@pytest.fixture(scope="session")
def ferplus_root() -> Path:
    if not (SHARED_FERPLUS / "FER2013Valid" / "label.csv").is_file():
        reason = f"needs the real FER+ layout (FER2013Valid/label.csv + PNGs) in {SHARED_FERPLUS}"
        if os.environ.get("FER_HF_REQUIRE_SHARED", "") not in ("", "0"):
            pytest.fail(reason)
        pytest.skip(reason)
    return SHARED_FERPLUS


@pytest.fixture(scope="session")
def valid_only(ferplus_root, tmp_path_factory) -> Path:
    """A FER+ folder holding only FER2013Valid (a link to the real one): 'any subset of the folders'."""
    root = tmp_path_factory.mktemp("ferplus_valid")
    (root / "FER2013Valid").symlink_to(ferplus_root / "FER2013Valid")
    return root


@pytest.fixture(scope="session")
def valid_raw(valid_only):
    return load_fer_dataset(valid_only, ferplus_mode=None)


def copy_valid_rows(dst: Path, ferplus_root: Path, n: int) -> list[list[str]]:
    """The first n rows of FER2013Valid (label.csv + their real PNGs) in dst/FER2013Valid; returns the rows."""
    folder = dst / "FER2013Valid"
    folder.mkdir(parents=True)
    with (ferplus_root / "FER2013Valid" / "label.csv").open(newline="") as handle:
        rows = [row for _, row in zip(range(n), csv.reader(handle), strict=False)]
    for row in rows:
        shutil.copy(ferplus_root / "FER2013Valid" / row[0], folder / row[0])
    write_label_csv(folder / "label.csv", rows)
    return rows


def write_label_csv(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


# ------------------------------------------------------------------------------------------------ loading
def test_the_real_layout_loads_with_votes_and_the_majority_protocol(valid_only, valid_raw):
    label_csv = list(csv.reader((valid_only / "FER2013Valid" / "label.csv").open()))
    dd = load_fer_dataset(valid_only)
    assert list(dd) == ["validation"]  # only the folders present; no train to carve a split from
    ds = dd["validation"]
    assert ds.features["label"].names == list(FERPLUS_LABELS)
    assert len(valid_raw["validation"]) == len(label_csv)  # every row read, in order
    raw_votes = votes_of(valid_raw["validation"])
    assert raw_votes.tolist() == [[int(c) for c in row[2:]] for row in label_csv]
    # the majority protocol by hand: votes of 1 removed, more than half of the rest on one of the 8 emotions
    cleaned = np.where(raw_votes <= 1, 0, raw_votes)
    top = cleaned.argmax(axis=1)
    expected_kept = (cleaned.max(axis=1) > 0.5 * cleaned.sum(axis=1)) & (top < 8)
    assert len(ds) == expected_kept.sum() < len(label_csv)
    names = ["neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt"]
    expected = [FERPLUS_LABELS.index(names[t]) for t in top[expected_kept]]
    assert ds["label"] == expected
    assert votes_of(ds).tolist() == raw_votes[expected_kept].tolist()


@pytest.mark.parametrize(
    "votes, mode, kept, shares",
    [
        # the first face of FER2013Train: outlier (sadness 1) removed, 4/3/2 of 9 left
        ([4, 0, 0, 1, 3, 2, 0, 0, 0, 0], "majority", False, None),  # 4 is not more than half of 9
        ([4, 0, 0, 1, 3, 2, 0, 0, 0, 0], "crossentropy", True, {"neutral": 4 / 7, "angry": 3 / 7}),  # 7 >= 75%
        ([4, 0, 0, 1, 3, 2, 0, 0, 0, 0], "probability", True, {"neutral": 4 / 7, "angry": 3 / 7}),
        ([4, 0, 0, 1, 3, 2, 0, 0, 0, 0], "multi_target", True, {"neutral": 4 / 7, "angry": 3 / 7}),  # >= 2.7 each
        ([6, 0, 1, 1, 0, 0, 0, 0, 2, 0], "majority", True, {"neutral": 1.0}),  # 6 of 8 after the outliers
        ([2, 0, 0, 0, 0, 0, 0, 0, 8, 0], "majority", False, None),  # unknown wins: dropped
        ([0, 0, 0, 0, 0, 0, 0, 0, 0, 10], "crossentropy", False, None),  # not a face
        ([3, 3, 0, 0, 0, 0, 0, 0, 3, 1], "crossentropy", True, {"neutral": 0.5, "happy": 0.5}),  # unknown tie
        ([6, 0, 0, 0, 0, 0, 0, 0, 4, 0], "crossentropy", True, {"neutral": 1.0}),  # unknown next: not taken
        ([5, 0, 0, 0, 0, 0, 0, 0, 5, 0], "crossentropy", False, None),  # unknown ties: only half integrated
    ],
)
def test_vote_modes_follow_ferplus_rules(votes, mode, kept, shares):
    dist, keep = ferplus.vote_distributions(np.array([votes]), mode)
    assert bool(keep[0]) is kept
    if kept:
        expected = np.zeros(8)
        for name, share in shares.items():
            expected[FERPLUS_LABELS.index(name)] = share
        np.testing.assert_allclose(dist[0], expected, rtol=1e-6)
    else:
        assert not dist[0].any()


def test_multi_target_marks_every_kept_emotion():
    dist, _ = ferplus.vote_distributions(np.array([[4, 0, 0, 1, 3, 2, 0, 0, 0, 0]]), "multi_target")
    target = ferplus.training_targets(dist, "multi_target")[0]
    high = 1 - ferplus.MULTI_TARGET_EPSILON + ferplus.MULTI_TARGET_EPSILON
    assert target[FERPLUS_LABELS.index("neutral")] == target[FERPLUS_LABELS.index("angry")] == pytest.approx(high)
    assert target[FERPLUS_LABELS.index("happy")] == pytest.approx(ferplus.MULTI_TARGET_EPSILON)


def test_each_mode_keeps_what_the_summary_counts(valid_only, valid_raw):
    votes = votes_of(valid_raw["validation"])
    counts = ferplus.mode_counts(votes)
    assert counts["majority"]["kept"] == len(load_fer_dataset(valid_only)["validation"])
    assert counts["crossentropy"]["kept"] > counts["majority"]["kept"]  # soft targets keep split decisions
    for mode, c in counts.items():
        assert c["kept"] + c["dropped"] == len(votes), mode
    out = subprocess.run(
        [sys.executable, "-m", "fer_hf.data", str(valid_only)], capture_output=True, text=True, check=True
    ).stdout
    assert "contempt" in out and f"{counts['probability']['kept']:,} / {counts['probability']['dropped']:<6,}" in out


BAD_LABEL_ROWS = [
    (lambda rows: rows[1].__setitem__(slice(2, None), rows[1][2:11]), "11 fields; expected image name, face box"),
    (lambda rows: rows[1].__setitem__(5, "x"), "must be integers"),
    (lambda rows: rows[1].__setitem__(5, "-1"), "negative vote count"),
    (lambda rows: rows[1].__setitem__(slice(2, None), ["0"] * 10), "sum to 0"),
    (lambda rows: rows[1].__setitem__(0, "fer9999999.png"), "named but missing"),
    (lambda rows: rows[2].__setitem__(0, rows[0][0]), r"named twice \(first on line 1\)"),
]


@pytest.mark.parametrize("spoil, message", BAD_LABEL_ROWS)
def test_bad_label_rows_name_file_and_line(tmp_path, ferplus_root, spoil, message):
    rows = copy_valid_rows(tmp_path, ferplus_root, 4)
    spoil(rows)
    write_label_csv(tmp_path / "FER2013Valid" / "label.csv", rows)
    with pytest.raises(FerDataError, match=message) as err:
        load_fer_dataset(tmp_path)
    assert "label.csv: line" in str(err.value)


def test_an_image_that_is_not_a_gray_face_is_refused(tmp_path, ferplus_root):
    rows = copy_valid_rows(tmp_path, ferplus_root, 3)
    Image.new("RGB", (64, 48)).save(tmp_path / "FER2013Valid" / rows[1][0])
    with pytest.raises(FerDataError, match=r"line 2: .* is 48x64x3 uint8; expected a 48x48 8-bit gray face"):
        load_fer_dataset(tmp_path)


def kaggle_files(tmp_path: Path, ferplus_root: Path, n: int) -> tuple[Path, Path]:
    """A Kaggle fer2013.csv of n real faces (FER2013Valid's PNGs as pixel strings) and a fer2013new.csv with their
    votes: both with Usage PublicTest, row for row."""
    rows = list(csv.reader((ferplus_root / "FER2013Valid" / "label.csv").open()))[:n]
    kaggle, votes = tmp_path / "fer2013.csv", tmp_path / "fer2013new.csv"
    with kaggle.open("w", newline="") as k, votes.open("w", newline="") as v:
        kw, vw = csv.writer(k), csv.writer(v)
        kw.writerow(["emotion", "pixels", "Usage"])
        vw.writerow(["Usage", "Image name", *ferplus.VOTE_NAMES])
        for i, row in enumerate(rows):
            pixels = np.asarray(Image.open(ferplus_root / "FER2013Valid" / row[0]))
            kw.writerow([i % 7, " ".join(map(str, pixels.reshape(-1))), "PublicTest"])
            vw.writerow(["PublicTest", row[0], *row[2:]])
    return kaggle, votes


def test_kaggle_csv_joins_fer2013new_by_row_order(tmp_path, ferplus_root):
    kaggle, votes = kaggle_files(tmp_path, ferplus_root, 12)
    raw = load_fer_dataset(kaggle, ferplus_mode=None)["validation"]
    assert raw["fer2013_label"] == [i % 7 for i in range(12)]  # FER2013's own label kept beside the votes
    expected = [[int(c) for c in row[2:]] for row in list(csv.reader(votes.open()))[1:]]
    assert votes_of(raw).tolist() == expected
    first = np.asarray(Image.open(ferplus_root / "FER2013Valid" / "fer0028638.png"))
    assert np.array_equal(np.asarray(raw[0]["image"]), first)
    folder = load_fer_dataset(tmp_path)  # the folder with both CSVs: fer2013.csv is the source, votes beside it
    assert folder["validation"].features["label"].names == list(FERPLUS_LABELS)


def test_kaggle_join_errors_name_both_files_and_the_row(tmp_path, ferplus_root):
    kaggle, votes = kaggle_files(tmp_path, ferplus_root, 6)
    lines = votes.read_text().splitlines()
    votes.write_text("\n".join(lines[:-1]) + "\n")  # one row short
    with pytest.raises(FerDataError, match=r"fer2013.csv has 6 rows but .*fer2013new.csv has 5"):
        load_fer_dataset(kaggle)
    lines[4] = lines[4].replace("PublicTest", "Training", 1)
    other = tmp_path / "votes.csv"
    other.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        FerDataError, match=r"row 4: .*fer2013.csv says Usage 'PublicTest' .*votes.csv says 'Training'"
    ):
        load_fer_dataset(kaggle, votes=other)


def test_save_writes_a_dataset_that_loads_back_with_its_votes(tmp_path, valid_raw, valid_only):
    out = tmp_path / "saved"
    save_dataset(valid_raw, out, "ferplus")
    card = (out / "README.md").read_text()
    assert "FER+ (Barsoum et al. 2016" in card and "validation.parquet" in card
    back = load_fer_dataset(out, ferplus_mode=None)["validation"]
    assert votes_of(back).tolist() == votes_of(valid_raw["validation"]).tolist()
    assert back["label"] == valid_raw["validation"]["label"]
    assert load_fer_dataset(out)["validation"]["label"] == load_fer_dataset(valid_only)["validation"]["label"]
    with pytest.raises(FerDataError, match="not empty"):
        save_dataset(valid_raw, out, "ferplus")


def test_raters_distribution_is_the_vote_shares_of_the_named_classes(valid_raw):
    ds = valid_raw["validation"]
    votes = votes_of(ds)
    shares = raters_of(ds, ["happy", "neutral"])
    i = int(np.flatnonzero((votes[:, 0] > 0) & (votes[:, 1] > 0))[0])
    total = votes[i, 0] + votes[i, 1]
    assert shares[i].tolist() == pytest.approx([votes[i, 1] / total, votes[i, 0] / total])


# ------------------------------------------------------------------------------------------------ losses, modes
def test_soft_targets_generalise_the_hard_losses():
    torch.manual_seed(0)
    logits, labels = torch.randn(12, 8), torch.randint(0, 8, (12,))
    onehot = F.one_hot(labels, 8).float()
    weights = torch.rand(8).add(0.5).tolist()
    for loss in (WeightedCrossEntropy(weights, 0.1), FocalLoss(2.0, weights)):
        assert loss(logits, labels, targets=onehot).item() == pytest.approx(loss(logits, labels).item(), rel=1e-5)
    soft = torch.softmax(torch.randn(12, 8), -1)
    expected = -(soft * torch.log_softmax(logits, -1)).sum(-1).mean()
    assert WeightedCrossEntropy()(logits, labels, targets=soft).item() == pytest.approx(expected.item(), rel=1e-5)


def test_multi_target_loss_is_minus_log_of_the_best_marked_class():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0]])
    targets = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    p = torch.softmax(logits, -1)
    expected = -torch.log(torch.stack([p[0, 2], p[1, 0]])).mean()
    assert MultiTargetLoss()(logits, torch.tensor([2, 0]), targets=targets).item() == pytest.approx(expected.item())


def test_probability_mode_draws_labels_from_the_votes():
    dist = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.0, 1.0]]).repeat(2000, 1)
    torch.manual_seed(0)
    drawn = draw_labels(dist)
    assert drawn.sum(-1).eq(1).all() and (drawn * (dist == 0)).sum() == 0  # one-hot, never an unvoted class
    assert drawn[0::2, 0].mean().item() == pytest.approx(0.7, abs=0.03)
    torch.manual_seed(0)
    assert torch.equal(draw_labels(dist), drawn)  # the Trainer's seeded global RNG: reproducible, resumable


@pytest.mark.parametrize("mode", ["probability", "crossentropy", "multi_target"])
def test_each_vote_mode_trains_and_validates_on_the_majority(tmp_path, ferplus_root, mode):
    from test_train import TINY_CNN

    from fer_hf.recipe_parser import load_recipe
    from fer_hf.training.run import train_from_recipe

    recipe = load_recipe(
        REPO / "recipes" / "ferplus_cnn.yaml",
        [
            *("--data.source", str(tmp_path / "src"), "--data.ferplus_mode", mode),
            *("--model.init_from", "null", "--model.cnn_overrides", TINY_CNN),
            *("--training.output_dir", str(tmp_path / "run"), "--training.num_train_epochs", "1"),
            *("--training.per_device_train_batch_size", "16", "--training.disable_tqdm", "true"),
            *("--training.bf16", "false", "--data.augment.mixup_alpha", "0.4"),  # mixing mixes the targets
        ],
    )
    src = tmp_path / "src"
    src.mkdir()
    for folder in ("FER2013Train", "FER2013Valid"):  # real faces and votes, small and quick
        (src / folder).symlink_to(ferplus_root / "FER2013Valid")
    dd = load_fer_dataset(src, ferplus_mode=mode)
    assert len(dd["train"]) > len(dd["validation"])  # the mode keeps more faces than the majority protocol
    dd["train"], dd["validation"] = per_class(dd["train"], 8), per_class(dd["validation"], 6)
    trainer = train_from_recipe(recipe, dd=dd)
    assert trainer.train_dataset.targets is not None and trainer.train_dataset.targets.shape == (64, 8)
    assert trainer.eval_dataset.targets is None  # validation: majority labels
    assert trainer.state.log_history[-1]["train_loss"] > 0
    from fer_hf.evaluation.results import read_run_record

    record = read_run_record(tmp_path / "run")
    assert record.labels == list(FERPLUS_LABELS)
    assert record.splits["validation"].kl_raters is not None and record.splits["validation"].ece is not None


def per_class(ds, n: int):
    """The first n faces of each of the 8 classes."""
    labels = np.asarray(ds["label"])
    return ds.select(np.concatenate([np.flatnonzero(labels == k)[:n] for k in range(8)]))


def test_a_vote_mode_without_votes_is_refused(tmp_path):
    from test_train import tiny_args

    from fer_hf.configs import RecipeError
    from fer_hf.train import main

    with pytest.raises(RecipeError, match="has no FER\\+ votes"):
        main(tiny_args(tmp_path / "run", "--data.ferplus_mode", "crossentropy"))


# ------------------------------------------------------------------------------------------------ label sets
def test_init_from_another_label_set_copies_rows_by_name(tmp_path):
    from helpers import save_tiny_cnn

    from fer_hf.configs import ModelArgs
    from fer_hf.models import build_model, load_trained_weights

    save_tiny_cnn(tmp_path / "fer2013", FER_LABELS)
    old = build_model(ModelArgs(family="cnn", preset="report-c-baseline"), FER_LABELS).model
    old.load_state_dict(__import__("safetensors.torch").torch.load_file(str(tmp_path / "fer2013/model.safetensors")))
    new = build_model(ModelArgs(family="cnn", preset="report-c-baseline"), FERPLUS_LABELS).model
    assert load_trained_weights(new, tmp_path / "fer2013", FERPLUS_LABELS) == ["contempt"]
    last = [k for k, v in new.state_dict().items() if v.shape[:1] == (8,) and k.startswith("classifier")]
    assert last
    for key in last:
        for i, name in enumerate(FER_LABELS):
            assert torch.equal(new.state_dict()[key][FERPLUS_LABELS.index(name)], old.state_dict()[key][i])
    x = torch.randn(4, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(old.eval()(pixel_values=x).logits, new.eval()(pixel_values=x).logits[:, :7], atol=1e-5)


def test_a_seven_class_model_on_ferplus_is_scored_on_its_classes(tmp_path, valid_only):
    from helpers import save_tiny_cnn

    from fer_hf.evaluate import main

    save_tiny_cnn(tmp_path / "m7", FER_LABELS)
    assert main([str(tmp_path / "m7"), "--data", str(valid_only), "--output", str(tmp_path / "ev")]) == 0
    from fer_hf.evaluation.results import read_record

    report = read_record(tmp_path / "ev")
    contempt = load_fer_dataset(valid_only)["validation"]["label"].count(FERPLUS_LABELS.index("contempt"))
    assert report.left_out["faces"] == contempt > 0 and report.left_out["classes"] == ["contempt"]
    assert report.labels == list(FER_LABELS) and report.kl_raters is not None
    assert (tmp_path / "ev" / "reliability.png").is_file()


def test_an_eight_class_model_on_fer2013_reads_its_seven_outputs(tmp_path, bundled_dd):
    from helpers import save_tiny_cnn

    from fer_hf.evaluate import main
    from fer_hf.evaluation.results import read_record

    save_tiny_cnn(tmp_path / "m8", FERPLUS_LABELS)
    assert main([str(tmp_path / "m8"), "--data", "bundled", "--output", str(tmp_path / "ev")]) == 0
    report = read_record(tmp_path / "ev")
    assert report.left_out["outputs"] == ["contempt"] and report.left_out["faces"] == 0
    assert report.num_samples == len(bundled_dd["validation"]) and report.kl_raters is None
