"""The report's pictures (PNG, matplotlib's Agg canvas; no global pyplot state): the privacy
spent and the test accuracy over training, and a sample of training records with their
sensitivity masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxpriv import files
from jaxpriv.data import schema


def _figure(size: tuple[float, float], rows: int, columns: int):
    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, columns, squeeze=False)


def privacy_curve(records: list[dict], target_epsilon: float | None, path: Path) -> None:
    """ε spent (with the target as a dashed line) and test accuracy, per epoch."""
    epochs = [0.0] + [r["epoch"] for r in records]
    figure, ((spent, accuracy),) = _figure((9, 3.4), 1, 2)
    if target_epsilon is None:
        spent.text(0.5, 0.5, "no DP: ε = ∞", ha="center", va="center", fontsize=14)
        spent.set_xticks([])
        spent.set_yticks([])
    else:
        spent.plot(epochs, [0.0] + [r["epsilon"] for r in records], "o-", label="ε spent")
        spent.axhline(target_epsilon, color="grey", ls="--", label=f"target ε = {target_epsilon:g}")
        spent.set_xlabel("epoch")
        spent.set_ylabel("ε")
        spent.set_ylim(bottom=0)
        spent.legend(loc="lower right")
    spent.set_title("privacy spent")
    accuracy.plot(epochs[1:], [r["test_accuracy"] for r in records], "o-", color="tab:green")
    accuracy.set_xlabel("epoch")
    accuracy.set_ylabel("test accuracy")
    accuracy.set_ylim(0, 1)
    accuracy.set_title("test accuracy")
    figure.tight_layout()
    _save(figure, path)


def records_grid(records: list[dict], class_names: list[str], path: Path) -> None:
    """Training records (a video's first frame) above the same records with their
    sensitivity overlay, titled by label."""
    from jaxpriv.anonymize import preview

    figure, axes = _figure((1.9 * len(records), 4.4), 2, len(records))
    for column, record in enumerate(records):
        pixels = record[schema.pixel_feature(record)]
        sensitive = record[schema.SENSITIVE]
        region = record.get("region", np.zeros_like(sensitive))
        if pixels.ndim == 4:  # a clip: its first frame
            pixels, sensitive, region = pixels[0], sensitive[0], region[0]
        axes[0, column].imshow(pixels, interpolation="nearest")
        axes[0, column].set_title(class_names[int(record[schema.LABEL])], fontsize=9)
        axes[1, column].imshow(preview.overlay(pixels, sensitive, region), interpolation="nearest")
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0, 0].set_ylabel("pixels")
    axes[1, 0].set_ylabel("sensitivity")
    figure.legend(handles=preview.legend_handles(), loc="lower center", ncol=3, fontsize=8)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    _save(figure, path)


def _save(figure, path: Path) -> None:
    """Writes the PNG, never a half-written one."""
    with files.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
