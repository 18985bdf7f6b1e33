"""Run artefacts people look at: confusion-matrix PNG, training curves PNG, per-class tables."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

if TYPE_CHECKING:
    from fer_hf.evaluation.results import MemberRow


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], names: Sequence[str], path: str | Path, title: str) -> None:
    """Row-normalised confusion matrix (rows: true class, so the diagonal is per-class recall)."""
    m = np.asarray(matrix, dtype=np.float64)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2, 1.0 * len(names) + 1.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            colour = "white" if norm[i, j] > 0.5 else "black"
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(m[i, j])})", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def epoch_history(log_history: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """Trainer log history -> {series: [(epoch, value)]} for train loss and eval loss/accuracy/macro-F1."""
    series: dict[str, list[tuple[float, float]]] = {"train_loss": [], "eval_loss": [], "accuracy": [], "macro_f1": []}
    for row in log_history:
        epoch = row.get("epoch")
        if epoch is None:
            continue
        if "loss" in row:
            series["train_loss"].append((epoch, row["loss"]))
        for key, name in (("eval_loss", "eval_loss"), ("eval_accuracy", "accuracy"), ("eval_macro_f1", "macro_f1")):
            if key in row:
                series[name].append((epoch, row[key]))
    return series


def checkpoint_states(run_dir: Path) -> list[Path]:
    """The run's checkpoint-*/trainer_state.json files, oldest step first."""
    return sorted(run_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[-1]))


def run_log_history(run_dir: Path) -> list[dict] | None:
    """The Trainer's log history of a run folder: its trainer_state.json (written at the end of fer_hf.train), else
    that of its latest checkpoint (a run cut short); None when neither exists (e.g. an evaluation folder)."""
    states = checkpoint_states(run_dir)
    path = run_dir / "trainer_state.json"
    path = path if path.is_file() else (states[-1] if states else None)
    return json.loads(path.read_text())["log_history"] if path else None


def plot_curves(histories: dict[str, list[dict]], path: str | Path, title: str = "training curves") -> None:
    """Loss, accuracy and macro-F1 per epoch; several runs (name -> log history) share the axes."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for i, (run, log_history) in enumerate(histories.items()):  # one colour per run on every panel
        series = epoch_history(log_history)
        for ax, keys in zip(axes, (("train_loss", "eval_loss"), ("accuracy",), ("macro_f1",)), strict=True):
            for key in keys:
                if series[key]:
                    xs, ys = zip(*series[key], strict=True)
                    style = "--" if key == "train_loss" else "-"
                    marker = "." if key != "train_loss" else None
                    ax.plot(xs, ys, style, color=f"C{i}", marker=marker, label=f"{run} {key}")
    for ax, label in zip(axes, ("loss", "validation accuracy", "validation macro-F1"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(table: dict[str, list], path: str | Path, title: str, ece: float | None = None) -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal (a calibrated model's), bars shaded by
    how many faces fall in the bin, and the ECE in the legend."""
    confidence, accuracy, count = (np.asarray(table[k], dtype=float) for k in ("confidence", "accuracy", "count"))
    bins = len(count)
    edges = np.linspace(0, 1, bins + 1)
    fig, ax = plt.subplots(figsize=(5, 5))
    used = count > 0
    shade = 0.25 + 0.75 * count / max(count.max(), 1)
    ax.bar(edges[:-1][used], accuracy[used], width=1 / bins, align="edge", edgecolor="black",
           color=[(0.2, 0.4, 0.8, a) for a in shade[used]], label="accuracy (shade: faces in bin)")  # fmt: skip
    ax.plot(confidence[used], accuracy[used], "o", color="darkorange", label="mean confidence of the bin")
    ax.plot([0, 1], [0, 1], "k--", label="calibrated")
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title + (f"\nECE {ece:.4f} ({bins} bins)" if ece is not None else ""), fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def per_class_table(per_class: dict[str, dict]) -> str:
    """Markdown table of per-class precision/recall/F1/support (a record's `per_class`)."""
    lines = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for name, row in per_class.items():
        lines.append(f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
    return "\n".join(lines)


def describe_hardware(device: str = "cpu") -> str:
    """What a run ran on, for metrics.json and model cards: 'NVIDIA H100 80GB HBM3 (GPU)' or 'AMD EPYC, 2 CPU cores'."""
    if str(device).startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(device)} (GPU)"
    cpu = platform.processor() or platform.machine()
    try:  # Linux names the CPU model in /proc/cpuinfo; platform.processor() often says only 'x86_64'
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} CPU cores"


def member_markdown_table(rows: Sequence[MemberRow], split: str) -> str:
    """An ensemble's member table (`fer_hf.ensemble`) as markdown: each row's accuracy and macro-F1, single view and
    with hflip TTA."""
    lines = [
        "| model | accuracy | macro-F1 | accuracy, hflip TTA | macro-F1, hflip TTA |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.model} | {r.accuracy:.2%} | {r.macro_f1:.3f} | {r.accuracy_hflip:.2%} | {r.macro_f1_hflip:.3f} |"
        for r in rows
    ]
    return f"{split} ({rows[0].n:,} faces):\n\n" + "\n".join(lines)
