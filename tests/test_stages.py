"""Second training stages: `model.init_from` (start from a trained run) and `run.swa_from_epoch` (weight averaging).

Tiny CNN runs on the package's bundled real FER2013 sample, as in test_train.py.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_train import TINY_CNN, _path_and_overrides, tiny_args
from transformers import TrainerCallback

from fer_hf.configs import RecipeError
from fer_hf.hub.card import write_model_card
from fer_hf.recipe_parser import load_recipe
from fer_hf.training.callbacks import BATCH_NORMS, StopAfterEpochsCallback, WeightAveragingCallback, parameter_digest
from fer_hf.training.run import train_from_recipe

EPOCHS = ("--training.num_train_epochs", "3", "--training.save_strategy", "epoch", "--training.eval_strategy", "epoch")
SWA = ("--run.swa_from_epoch", "2", "--training.load_best_model_at_end", "false")


class EpochWeights(TrainerCallback):
    """The parameters at the end of every epoch, and the BatchNorm statistics at the end of training."""

    def __init__(self):
        self.epochs: dict[int, dict[str, torch.Tensor]] = {}
        self.train_begin_digest: str | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.train_begin_digest = parameter_digest(model)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self.epochs[round(state.epoch)] = {k: v.detach().clone() for k, v in model.named_parameters()}


def run(out, *overrides, callbacks=()):
    """What `python -m fer_hf.train` does: the run, then its card."""
    trainer = train_from_recipe(
        load_recipe(*_path_and_overrides(tiny_args(out, *overrides))), extra_callbacks=callbacks
    )
    write_model_card(out)
    return trainer


def test_swa_averages_the_epochs_and_recomputes_batch_norm(tmp_path):
    record = EpochWeights()
    trainer = run(tmp_path / "swa", *EPOCHS, *SWA, callbacks=[record])
    model = trainer.model
    for name, p in model.named_parameters():
        expected = (record.epochs[2][name] + record.epochs[3][name]) / 2
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6, msg=name)
    last = dict(model.named_parameters())
    assert not all(torch.equal(last[k], v) for k, v in record.epochs[3].items())  # not simply the last weights
    # recomputed BatchNorm statistics are exact averages over one pass, no longer the momentum-0.1 running ones
    norm = next(m for m in model.modules() if isinstance(m, BATCH_NORMS))
    assert norm.momentum == 0.1 and 0 < int(norm.num_batches_tracked) <= 4  # 64 faces / batch 16
    metrics = json.loads((tmp_path / "swa" / "metrics.json").read_text())
    assert metrics["weight_average"]["epochs"] == [2, 3]
    assert "SWA of the weights after epochs [2, 3]" in (tmp_path / "swa" / "README.md").read_text()
    saved = sorted((tmp_path / "swa").glob(f"checkpoint-*/{WeightAveragingCallback.FILE}"))
    assert len(saved) == 1  # save_total_limit 1: the last checkpoint holds the average of epochs 2 and 3


def test_swa_average_survives_a_resume(tmp_path):
    straight = run(tmp_path / "a", *EPOCHS, *SWA)
    out = tmp_path / "b"
    cut = run(out, *EPOCHS, *SWA, "--training.save_total_limit", "3", callbacks=[StopAfterEpochsCallback(2)])
    assert cut.state.epoch == 2
    assert (out / f"checkpoint-{cut.state.global_step}" / WeightAveragingCallback.FILE).is_file()
    resumed = run(out, *EPOCHS, *SWA, "--training.save_total_limit", "3", "--run.resume", "true")
    assert parameter_digest(resumed.model) == parameter_digest(straight.model)


def test_resuming_without_the_average_is_refused(tmp_path):
    out = tmp_path / "plain"
    run(out, *EPOCHS, callbacks=[StopAfterEpochsCallback(2)])  # checkpoints written without run.swa_from_epoch
    with pytest.raises(RecipeError, match=r"resuming at epoch 2, but .*checkpoint-\d+/weight_average.safetensors"):
        run(out, *EPOCHS, *SWA, "--run.resume", "true")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (("--run.swa_from_epoch", "2", "--training.load_best_model_at_end", "true"), "load_best_model_at_end must"),
        (("--run.swa_from_epoch", "0"), "swa_from_epoch must be an integer >= 1, got 0"),
    ],
)
def test_swa_recipe_errors(tmp_path, override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(*_path_and_overrides(tiny_args(tmp_path / "x", *override)))


def test_init_from_starts_where_the_first_stage_ended(tmp_path):
    first = run(tmp_path / "first", "--training.num_train_epochs", "1")
    record = EpochWeights()
    second = tmp_path / "second"
    run(second, "--training.num_train_epochs", "1", "--model.init_from", str(tmp_path / "first"), callbacks=[record])
    assert record.train_begin_digest == parameter_digest(first.model)
    metrics = json.loads((second / "metrics.json").read_text())
    assert metrics["init_from"]["path"] == str(tmp_path / "first") and metrics["init_from"]["epochs"] == 1
    total = metrics["init_from"]["train_seconds"] + metrics["train_seconds"]
    assert f"{total:,.0f} s for both stages" in (second / "README.md").read_text()


def test_init_from_refuses_what_does_not_fit(tmp_path):
    first = tmp_path / "first"
    run(first, "--training.num_train_epochs", "1")
    wider = TINY_CNN.replace("out_channels: 8", "out_channels: 12", 1)
    with pytest.raises(ValueError, match=r"does not fit this recipe's model \(shape mismatch \['features.1.*"):
        run(tmp_path / "b", "--model.init_from", str(first), "--model.cnn_overrides", wider)
    # Another label set starts from the output rows of the classes both have (FER2013's 7 -> a subset, or FER+'s 8).
    subset = run(
        tmp_path / "c",
        "--model.init_from",
        str(first),
        "--data.classes",
        "[happy, sad]",
        "--training.num_train_epochs",
        "1",
    )
    assert subset is not None
    with pytest.raises(ValueError, match="no such folder. This recipe starts from another run's result"):
        run(tmp_path / "e", "--model.init_from", str(tmp_path / "never_trained"))
    (first / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no model.safetensors there; give the output_dir of a finished"):
        run(tmp_path / "d", "--model.init_from", str(first))
