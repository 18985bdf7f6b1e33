"""Helpers shared by several test files (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch

from fer_hf.configs import ModelArgs
from fer_hf.labels import FER_LABELS
from fer_hf.models import build_model


def save_tiny_cnn(folder, names=FER_LABELS, preset="report-c-baseline", seed=0):
    """A randomly initialised package CNN with its image processor, saved like a trained model."""
    torch.manual_seed(seed)
    built = build_model(ModelArgs(family="cnn", preset=preset), names)
    built.model.save_pretrained(folder)
    built.image_processor.save_pretrained(folder)
    return folder
