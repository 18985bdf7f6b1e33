"""Pictures of a video's faces over time: one stacked-probability timeline per track and an overview of all.

Both read a `fer_hf.inference.predictions.VideoResult` (duck-typed: frames with faces that carry track ids and smoothed
probabilities) and write a PNG; matplotlib is imported here only, so predicting without plots never loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)

COLOURS = {  # one colour per FER2013 class, the same in every plot
    "angry": "#d62728", "disgust": "#8c564b", "fear": "#9467bd", "happy": "#2ca02c",
    "sad": "#1f77b4", "surprise": "#ff7f0e", "neutral": "#7f7f7f",
}  # fmt: skip


def colour(name: str, index: int) -> str:
    return COLOURS.get(name, plt.get_cmap("tab10")(index % 10))


def plot_track(result, track_id: int, label_names: Sequence[str], path: str | Path) -> Path:
    """Smoothed probabilities of one face over time, stacked to 1; gaps where sampled frames did not see it."""
    segments, current = [], []  # runs of consecutive sampled frames with the face: [(time, probabilities)]
    for frame in result.frames:
        face = next((f for f in frame.faces if f.track_id == track_id), None)
        if face is None:
            current = []
            continue
        if not current:
            segments.append(current)
        current.append((frame.time_s, [(face.smoothed or face.probabilities)[n] for n in label_names]))
    fig, ax = plt.subplots(figsize=(10, 3.2))
    colours = [colour(n, i) for i, n in enumerate(label_names)]
    for i, segment in enumerate(segments):
        times = [t for t, _ in segment]
        if len(segment) == 1:  # a single frame: a thin bar instead of an invisible area
            times = [times[0] - 0.02, times[0] + 0.02]
            segment = segment * 2
        columns = list(zip(*(probs for _, probs in segment), strict=True))
        ax.stackplot(times, columns, labels=label_names if i == 0 else (), colors=colours)
    ax.set(xlabel="time (s)", ylabel="probability (smoothed)", ylim=(0, 1))
    ax.set_title(f"{Path(result.path).name}: face {track_id}")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    return _save(fig, path)


def plot_overview(result, label_names: Sequence[str], path: str | Path) -> Path:
    """Every track as a row of coloured marks (its smoothed label at each sampled frame), and the share of the
    largest face's frames per emotion."""
    tracks = [t["track_id"] for t in result.tracks]
    fig, (ax, bars) = plt.subplots(
        1, 2, figsize=(13, 1.6 + 0.45 * max(1, len(tracks))), gridspec_kw={"width_ratios": [3, 1]}
    )
    for row, track_id in enumerate(tracks):
        for frame in result.frames:
            for face in frame.faces:
                if face.track_id == track_id:
                    label = face.smoothed_label or face.label
                    ax.scatter(frame.time_s, row, marker="s", s=40, color=colour(label, label_names.index(label)))
    ax.set(xlabel="time (s)", yticks=range(len(tracks)), yticklabels=[f"face {t}" for t in tracks])
    ax.set_title(f"{Path(result.path).name}: emotion per face over time")
    ax.invert_yaxis()
    handles = [plt.Line2D([], [], marker="s", ls="", color=colour(n, i)) for i, n in enumerate(label_names)]
    ax.legend(handles, label_names, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=len(label_names), fontsize=8)
    shares = [result.distribution.get(name, 0.0) for name in label_names]
    bars.barh(list(label_names), shares, color=[colour(n, i) for i, n in enumerate(label_names)])
    bars.set(xlim=(0, 1), xlabel="share of frames (largest face)", title="predicted emotions")
    bars.invert_yaxis()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
