"""Training curves and confusion-matrix pictures (matplotlib, Agg backend: no display needed)."""
from typing import List, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402


def plot_curves(history: List[dict], path: str, keys: Sequence[str], ylabel: str) -> None:
    """One line per ``keys`` entry against the epoch number."""
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [row["epoch"] for row in history]
    for key in keys:
        ax.plot(epochs, [row[key] for row in history], marker="o", markersize=3, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(matrix: Sequence[Sequence[int]], class_names: List[str], path: str,
                   normalize: bool = False) -> None:
    """A labelled confusion-matrix heat map; ``normalize`` shows each true class's row as fractions."""
    cm = np.asarray(matrix, dtype=float)
    if normalize:
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    size = min(4 + 0.5 * n, 20)
    fig, ax = plt.subplots(figsize=(size, size))
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
    plt.close(fig)
