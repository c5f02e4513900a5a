"""Training curves and confusion-matrix pictures (matplotlib, Agg backend: no display needed).

Figures are made with matplotlib's object-oriented API on an Agg canvas, never through pyplot: no global figure
state, nothing to close, and the Agg backend is imported here at start-up. Loaded lazily at the first savefig, a
Ctrl-C arriving during that import came out as "ImportError: initialization failed" instead of an interrupt.
"""
from typing import List, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(size) -> Figure:
    """A matplotlib figure of ``size`` inches on its own Agg canvas."""
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def plot_curves(history: List[dict], path: str, keys: Sequence[str], ylabel: str) -> None:
    """One line per ``keys`` entry against the epoch number."""
    fig = new_figure((6, 4))
    ax = fig.subplots()
    epochs = [row["epoch"] for row in history]
    for key in keys:
        ax.plot(epochs, [row[key] for row in history], marker="o", markersize=3, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_lr_time(actual: Sequence[Tuple[float, float]], planned: Sequence[Tuple[float, float]],
                 epoch_starts: Sequence[float], budget: float, training_end: float, path: str) -> None:
    """A time budget's learning rate against seconds since its clock started: as planned when training began and
    as applied batch by batch, with the epochs' starts, the planned end of training and the deadline."""
    fig = new_figure((7, 4))
    ax = fig.subplots()
    for start in epoch_starts:
        ax.axvline(start, color="0.85", linewidth=0.8)
    if planned:
        ax.plot(*zip(*planned), color="tab:blue", linestyle="--", label="planned")
    if actual:
        ax.plot(*zip(*actual), color="tab:orange", linewidth=1.2, label="actual (per batch)")
    ax.axvline(training_end, color="tab:green", linestyle=":", label=f"training end {training_end:.0f} s")
    ax.axvline(budget, color="tab:red", label=f"budget {budget:.0f} s")
    ax.set_xlim(0, budget * 1.02)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("seconds since the start (grey: epoch starts)")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_confusion(matrix: Sequence[Sequence[int]], class_names: List[str], path: str,
                   normalize: bool = False) -> None:
    """A labelled confusion-matrix heat map; ``normalize`` shows each true class's row as fractions."""
    cm = np.asarray(matrix, dtype=float)
    if normalize:
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    size = min(4 + 0.5 * n, 20)
    fig = new_figure((size, size))
    ax = fig.subplots()
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        threshold = cm.max() / 2 if cm.size else 0
        for i in range(n):
            for j in range(n):
                text = f"{cm[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > threshold else "black")
    ax.set_title("confusion matrix" + (" (row-normalised)" if normalize else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_lr_find(frame, path: str, suggestion=None) -> None:
    """The range test's loss (raw and smoothed) against a log learning-rate axis, with the suggestion marked."""
    fig = new_figure((6, 4))
    ax = fig.subplots()
    ax.plot(frame["lr"], frame["loss"], alpha=0.3, label="loss")
    ax.plot(frame["lr"], frame["smoothed_loss"], label="smoothed loss")
    if suggestion is not None:
        ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested {suggestion:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    top = frame["smoothed_loss"].iloc[: max(1, len(frame) // 5)].max()
    ax.set_ylim(bottom=0, top=float(top) * 1.5 if np.isfinite(top) else None)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_reliability(probs: np.ndarray, labels: np.ndarray, temperature: float, path: str) -> None:
    """Reliability diagram: accuracy against confidence per bin, with and without the calibration temperature."""
    from easycls.evaluation.calibration import reliability, soften
    fig = new_figure((5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfect calibration")
    curves = [("calibrated (T=%.2f)" % temperature, probs)]
    if temperature != 1.0:
        curves.insert(0, ("uncalibrated", soften(probs, 1.0 / temperature)))
    for name, p in curves:
        table = reliability(p, labels)
        used = table["count"] > 0
        ax.plot(table["confidence"][used], table["accuracy"][used], marker="o", label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_preview(images: np.ndarray, titles: List[str], path: str, columns: int = 8) -> None:
    """A grid of uint8 ``(N, H, W, C)`` images, each with its title."""
    rows = -(-len(images) // columns)
    fig = new_figure((columns * 1.3, rows * 1.5))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, title in zip(axes, images, titles):
        ax.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
