"""The bench's PNG plots (matplotlib, headless): a figure per file, closed once written."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI or a server
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["bars", "timeline"]


def bars(path: Path, title: str, ylabel: str, values: dict[str, float]) -> Path:
    """One bar per label, its value written on it."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    drawn = ax.bar(list(values), list(values.values()), color=["#4c72b0", "#dd8452", "#55a868", "#c44e52"])
    ax.bar_label(drawn, fmt="%.3g")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def timeline(path: Path, title: str, panels: dict[str, list[tuple[float, str, bool]]], *,
             events: Sequence[tuple[float, str]] = (), lanes: Sequence[str] = ()) -> Path:
    """One panel per run: each job a dot at its submit time (x) in the lane of who served it (y),
    ringed when it needed more than one call (its flag).

    `events` are vertical lines (the endpoint dies, returns); `lanes` fixes the order of the y axis.
    """
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.6 + 1.3 * len(panels)), sharex=True, squeeze=False)
    for ax, (name, jobs) in zip(axes[:, 0], panels.items(), strict=True):
        order = list(lanes) + sorted({who for _, who, _ in jobs} - set(lanes))
        for lane, who in enumerate(order):
            xs = [at for at, served, _ in jobs if served == who]
            ax.scatter(xs, [lane] * len(xs), s=6, color="#c44e52" if who == "lost" else None)
            retried = [at for at, served, failed in jobs if served == who and failed]
            ax.scatter(retried, [lane] * len(retried), s=40, facecolors="none", edgecolors="black", linewidths=0.6)
        ax.set_yticks(range(len(order)), order)
        ax.set_ylim(-0.6, len(order) - 0.4)
        for at, label in events:
            ax.axvline(at, color="grey", linestyle="--", linewidth=1)
            ax.text(at, len(order) - 0.5, f" {label}", fontsize=7, va="top")
        ax.set_title(name, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("job submitted at (s)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
