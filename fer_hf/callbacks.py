"""Trainer callbacks: gradual unfreezing and friends."""

from __future__ import annotations

from transformers import EarlyStoppingCallback, TrainerCallback


def build_callbacks(recipe, built) -> list[TrainerCallback]:
    callbacks: list[TrainerCallback] = []
    if recipe.run.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=recipe.run.early_stopping_patience))
    return callbacks
