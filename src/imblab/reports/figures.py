"""The report's figures as PNG files: confusion matrix, ROC and PR curves, per-class bars."""

from __future__ import annotations

from pathlib import Path

from imblab.metrics.counts import Counts
from imblab.plots import (
    class_bars_figure,
    confusion_matrix_figure,
    figure_title,
    pr_figure,
    roc_figure,
)


def write_figures(
    out_dir: Path, counts: Counts, class_names: list[str], stage: str = "", where: str = ""
) -> list[Path]:
    """``confusion_matrix.png``, ``roc.png``, ``pr.png`` and ``per_class.png`` in ``out_dir``,
    titled ``<stage> · <where> · <what>`` (e.g. ``test · epoch_012 · confusion matrix``)."""
    out_dir.mkdir(parents=True, exist_ok=True)

    def title(what: str) -> str:
        return figure_title(stage, where, what)

    figures = {
        "confusion_matrix": confusion_matrix_figure(
            counts.confmat.cpu().numpy(), class_names, title("confusion matrix")
        ),
        "roc": roc_figure(counts, class_names, title("ROC, one vs rest")),
        "pr": pr_figure(counts, class_names, title("precision-recall, one vs rest")),
        "per_class": class_bars_figure(counts, class_names, title=title("per class")),
    }
    paths = []
    for name, fig in figures.items():
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=100)
        paths.append(path)
    return paths
