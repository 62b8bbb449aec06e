"""Per-class precision-recall curves in TensorBoard's PR-curve plugin, from raw counts.

The plugin draws its axes unlabelled; each curve's display name says what they are
(``val/pr/<class> · precision (y) against recall (x)``), and its description how many positives
the class had.

Up to ``per_class_max_classes`` classes every class gets a curve. Above it (the rule of the
per-class scalars, :class:`~imblab.callbacks.scalars.ClassificationScalars`) only
:func:`curve_classes` get one: the ``worst_k`` classes with the lowest F1 in the split and the
``head_k`` head classes (most training samples), at most ``worst_k + head_k`` curves per stage
and epoch whatever the number of classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from lightning.pytorch import Trainer
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.plugins.pr_curve.plugin_data_pb2 import PrCurvePluginData

from imblab.callbacks.base import MetricCallback
from imblab.callbacks.contract import EvaluatedModel
from imblab.errors import config_error
from imblab.metrics.counts import Counts
from imblab.metrics.functional import per_class_prf, pr_curve_counts, worst_classes
from imblab.tensorboard import epoch_step, rank_zero_writer

__all__ = ["PRCurves", "curve_classes", "pr_curve_summary"]

PR_ROWS = ("tp", "fp", "tn", "fn", "precision", "recall")  # the plugin's row order

_KEY = "metrics.pr_curves"


class PRCurves(MetricCallback):
    """Per-class precision-recall curves in TensorBoard's PR-curve plugin, from raw counts
    (``<stage>/pr/<class_name>``, :func:`~imblab.metrics.functional.pr_curve_counts`); written
    by rank 0, at the epoch's step (:func:`~imblab.tensorboard.epoch_step`).

    With more than ``per_class_max_classes`` classes, only the classes of :func:`curve_classes`:
    the ``worst_k`` lowest F1 (zero division 0) among the classes with samples in the split,
    then the ``head_k`` with the most training samples (``model.train_counts``; the split's
    support when those are unknown); each curve's description says which it is.

    Args:
        per_class_max_classes: above this many classes, curves of the worst and head classes
            only.
        worst_k: worst classes by F1 drawn above the limit.
        head_k: head classes drawn above the limit.
    """

    per_class_max_classes: int

    def __init__(
        self,
        stages: Sequence[str] = ("val", "test"),
        every_n_epochs: int = 1,
        per_class_max_classes: int = 100,
        worst_k: int = 10,
        head_k: int = 3,
    ) -> None:
        super().__init__(stages=stages, every_n_epochs=every_n_epochs)
        for key, value, low in (
            ("per_class_max_classes", per_class_max_classes, 1),
            ("worst_k", worst_k, 0),
            ("head_k", head_k, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise config_error(f"{_KEY}.{key}", value, f"not an int >= {low}", "use e.g. 10")
        self.per_class_max_classes = per_class_max_classes
        self.worst_k = worst_k
        self.head_k = head_k

    def log_counts(
        self,
        stage: str,
        counts: Counts,
        class_names: list[str],
        trainer: Trainer,
        model: EvaluatedModel,
    ) -> None:
        writer = rank_zero_writer(trainer)
        if writer is None:
            return
        raws = pr_curve_counts(counts)
        notes = {c: "" for c in range(counts.num_classes)}
        if counts.num_classes > self.per_class_max_classes:
            _, _, f1, support = per_class_prf(counts.confmat.cpu(), 1.0, 0.0)
            worst, head = curve_classes(
                f1.numpy(), support.numpy(), model.train_counts, self.worst_k, self.head_k
            )
            of = f"of {counts.num_classes} classes"
            notes = {int(c): f" Worst {rank} by F1 {of}." for rank, c in enumerate(worst, 1)}
            for rank, c in enumerate(head, 1):
                notes.setdefault(int(c), f" Head class {rank} by training samples {of}.")
        file_writer = writer._get_file_writer()  # what SummaryWriter.add_pr_curve_raw uses
        step = epoch_step(trainer)
        for c, note in notes.items():
            summary = pr_curve_summary(f"{stage}/pr/{class_names[c]}", raws[c], note)
            file_writer.add_summary(summary, step)


def curve_classes(
    f1: np.ndarray,
    support: np.ndarray,
    train_counts: Sequence[int],
    worst_k: int,
    head_k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The classes whose PR curves are drawn above the class limit: the ``worst_k`` with the
    lowest ``f1`` among those with ``support > 0`` (NaN lowest), and the ``head_k`` with the
    most ``train_counts`` (the split's ``support`` when empty); ties: lower class index first.
    The head classes may include worst ones."""
    worst = worst_classes(f1, worst_k, among=np.asarray(support) > 0)
    sizes = np.asarray(train_counts if len(train_counts) else support, dtype=np.int64)
    head = np.argsort(-sizes, kind="stable")[:head_k]
    return worst, head


def pr_curve_summary(tag: str, raw: dict[str, Any], note: str = "") -> Summary:
    """The PR-curve plugin's summary of :func:`pr_curve_counts`'s ``raw`` counts, as
    ``SummaryWriter.add_pr_curve_raw`` writes it (rows tp, fp, tn, fn, precision, recall; at
    most 127 thresholds in the metadata), with a display name that labels the axes and
    ``note`` appended to the description."""
    data = np.stack([np.asarray(raw[k], dtype=np.float64) for k in PR_ROWS])
    plugin = PrCurvePluginData(version=0, num_thresholds=min(data.shape[1], 127))
    positives = int(raw["tp"][0] + raw["fn"][0])
    metadata = SummaryMetadata(
        display_name=f"{tag} · precision (y) against recall (x)",
        summary_description=f"One-vs-rest PR curve of class {tag.rsplit('/', 1)[-1]} "
        f"({positives} positives): x = recall, y = precision, one point per threshold." + note,
        plugin_data=SummaryMetadata.PluginData(
            plugin_name="pr_curves", content=plugin.SerializeToString()
        ),
    )
    tensor = TensorProto(
        dtype="DT_FLOAT",
        float_val=data.reshape(-1).tolist(),
        tensor_shape=TensorShapeProto(
            dim=[TensorShapeProto.Dim(size=data.shape[0]), TensorShapeProto.Dim(size=data.shape[1])]
        ),
    )
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata, tensor=tensor)])
