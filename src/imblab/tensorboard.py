"""TensorBoard helpers: where a run's events go, its logger and their x axes, its
SummaryWriter, the HParams view and the custom-scalars layout.

A run's events go to ``<root>/tensorboard/<run name>/``: the root is the run dir, or the sweep
dir for a sweep job, and the run name is the run dir's name, a sweep job's its number and swept
values only (``0_loss=ce,seed=1``: the overrides every job shares left out; its dir keeps them
all), so ``tensorboard --logdir <root>/tensorboard`` names each run by what tells it apart, and
a resumed run writes on into the same TensorBoard run (:func:`tensorboard_root`,
:func:`run_name`). ``status.json`` records where (:func:`record_run`; reading it back:
:func:`imblab.runs.event_dir`).

**X axes.** Every epoch-level value is written against the epoch (step = the 0-based epoch,
as in the figure titles and checkpoint names), so runs of any batch size, dataset size or
sampler length line up epoch for epoch: the validation and test scalars, figures, texts and PR
curves (:func:`epoch_step`; a test's step is the number of epochs trained, right of the last
validation) and the training epoch means (``train/loss_epoch``, ``train/accuracy``).
What is logged during the batches (``train/loss_step``), the learning rates (``lr-*``) and
Lightning's ``epoch`` scalar (the epoch at each global step) keep the global step. Lightning's
``self.log`` is put on the epoch axis by :class:`TensorBoardLogger` with :class:`EpochAxis`;
a run resumed from a checkpoint written before this axis (one without
:data:`AXIS_KEY`) goes on writing against the global step, as its TensorBoard run began.

The HParams view of a run is written in two parts, as :meth:`SummaryWriter.add_hparams` would
write them into the run's own event file: :func:`log_hparams` at the start (the experiment: its
parameters and the metric tags it shows, and the session start) and :func:`log_final_hparams`
at the end of a successful run (the monitor's best value as :func:`best_tag`, and the session
end, status ``SUCCESS``). The metric values are the run's own scalars, not a placeholder.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from imblab.metrics.groups import GROUPS
from imblab.runs import EVENTS, read_status, update_status


def in_sweep() -> bool:
    """Whether this process runs a Hydra multirun job."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def tensorboard_root(output_dir: str | None) -> str | None:
    """The folder whose ``tensorboard/`` holds this run's TensorBoard run: the sweep dir (the
    job dir's parent) in a sweep job, else the run dir itself (None before Hydra has one, as
    in ``--cfg job``)."""
    if output_dir is None:
        return None
    return str(Path(output_dir).parent) if in_sweep() else output_dir


MAX_NAME = 200  # characters of a TensorBoard run name (a folder name)


def sweep_run_name(num: Any, overrides: Sequence[str], swept: str) -> str:
    """A sweep job's TensorBoard run name: its number and its values of the swept keys
    (comma-separated ``swept``), in that order: ``0_loss=ce,seed=1`` (``+``/``~`` prefixes
    dropped; the job number alone when nothing is swept). ``/`` and ``\\`` become ``_``; a name
    longer than 200 characters is cut and ends in a hash of the whole."""
    order = [key for key in swept.split(",") if key]
    values = {}
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if key in order:
            values[key] = f"{key}={value}"
    items = [values[key] for key in order if key in values]
    name = f"{num}_{','.join(items)}" if items else str(num)
    name = name.replace("/", "_").replace("\\", "_")
    if len(name) > MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[: MAX_NAME - len(digest) - 1]}-{digest}"
    return name


def run_name(output_dir: str | None, swept: str = "") -> str | None:
    """The run's name in TensorBoard: a sweep job's :func:`sweep_run_name` (``swept``: the
    swept keys, comma-separated), any other run its directory's name (None before Hydra has
    one)."""
    if output_dir is None:
        return None
    if in_sweep():
        hc = HydraConfig.get()
        return sweep_run_name(hc.job.num, list(hc.overrides.task or []), swept)
    return Path(output_dir).resolve().name


def logdir_command(output_dir: Path) -> str:
    """The command that opens this run (in a sweep: every job of the sweep) in TensorBoard."""
    root = tensorboard_root(str(output_dir.resolve()))
    assert root is not None
    return f"tensorboard --logdir {Path(root) / EVENTS}"


OmegaConf.register_new_resolver("imblab.tensorboard_root", tensorboard_root, replace=True)
OmegaConf.register_new_resolver("imblab.run_name", run_name, replace=True)


EPOCH, GLOBAL_STEP = "epoch", "global_step"  # the x axes of epoch-level values
AXIS_KEY = "imblab_epoch_axis"  # the checkpoint key of the axis a run's values are written on


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoard logger that writes what ``LightningModule.log`` logs at the end
    of an epoch (training, validation or test) against the epoch: at step ``epoch``, Lightning's
    0-based ``current_epoch``; what is logged during the batches, and Lightning's ``epoch``
    scalar, keep the step Lightning gives (the global step). :class:`EpochAxis` among the
    trainer's callbacks tells an epoch's end from its batches; without it every value keeps
    Lightning's step. Values handed over without Lightning's ``epoch`` key keep the step they
    come with (:func:`~imblab.callbacks.base.publish_scalars` gives :func:`epoch_step`; the
    learning-rate monitor the global step).

    ``axis`` is :data:`EPOCH`, or :data:`GLOBAL_STEP` for a run resumed from a checkpoint
    written before the epoch axis (set by :class:`EpochAxis`): its values keep the global step,
    so its TensorBoard run goes on as it began."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.axis = EPOCH
        self.at_epoch_end = False

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        epoch = metrics.get("epoch")
        if self.axis == EPOCH and self.at_epoch_end and epoch is not None:
            values = {k: v for k, v in metrics.items() if k != "epoch"}
            if values:
                super().log_metrics(values, step=int(epoch))
            metrics = {"epoch": epoch}
        super().log_metrics(dict(metrics), step=step)


def _imblab_loggers(trainer: Trainer) -> list[TensorBoardLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def epoch_step(trainer: Trainer) -> int:
    """The step an epoch-level value is written at now: ``trainer.current_epoch`` (the epoch
    validated; in a test after training, the number of epochs trained), or
    ``trainer.global_step`` for a run whose TensorBoard run is on the global-step axis
    (:class:`TensorBoardLogger`'s ``axis``)."""
    if any(logger.axis == GLOBAL_STEP for logger in _imblab_loggers(trainer)):
        return int(trainer.global_step)
    return int(trainer.current_epoch)


class EpochAxis(Callback):
    """Tells the trainer's :class:`TensorBoardLogger` when an epoch ends (its ``self.log``
    values are then written against the epoch), and keeps a resumed run on the axis its
    TensorBoard run began with: the axis is saved in every checkpoint (:data:`AXIS_KEY`); a
    checkpoint without it, written before the epoch axis, resumes on the global step."""

    @staticmethod
    def _mark(trainer: Trainer, at_epoch_end: bool) -> None:
        for logger in _imblab_loggers(trainer):
            logger.at_epoch_end = at_epoch_end

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._mark(trainer, False)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._mark(trainer, False)

    def on_validation_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._mark(trainer, False)

    def on_test_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._mark(trainer, False)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._mark(trainer, True)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._mark(trainer, True)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._mark(trainer, True)

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        loggers = _imblab_loggers(trainer)
        checkpoint[AXIS_KEY] = loggers[0].axis if loggers else EPOCH

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        axis = checkpoint.get(AXIS_KEY, GLOBAL_STEP)
        for logger in _imblab_loggers(trainer):
            logger.axis = EPOCH if axis == EPOCH else GLOBAL_STEP


def record_run(trainer: Trainer, run_dir: Path) -> None:
    """Add ``tensorboard: {logdir, run}`` to the run's ``status.json`` record (rank 0, when it
    has one): the folder to open with ``tensorboard --logdir`` (relative to the run dir:
    ``tensorboard``, a sweep job's ``../tensorboard``) and the run's name in it."""
    loggers = [lg for lg in trainer.loggers if isinstance(lg, LightningTensorBoardLogger)]
    if not loggers or not trainer.is_global_zero or read_status(run_dir) is None:
        return
    log_dir = Path(loggers[0].log_dir).resolve()
    logdir = os.path.relpath(log_dir.parent, run_dir.resolve())
    update_status(run_dir, tensorboard={"logdir": logdir, "run": log_dir.name})


def tensorboard_writer(trainer: Trainer) -> SummaryWriter | None:
    """The SummaryWriter of the trainer's first TensorBoard logger, if any."""
    for logger in trainer.loggers:
        if isinstance(logger, LightningTensorBoardLogger):
            return logger.experiment
    return None


def rank_zero_writer(trainer: Trainer) -> SummaryWriter | None:
    """The TensorBoard writer on rank 0 (figures and curves are written once), else None."""
    return tensorboard_writer(trainer) if trainer.is_global_zero else None


def best_tag(monitor: str) -> str:
    """The scalar tag of the monitor's best value over epochs (``best/val/f1_macro``)."""
    return f"best/{monitor}"


HIDDEN = ("_target_", "dir")  # no HParams key contains these; none starts with "callbacks"


def _scalar(value: Any) -> bool | int | float | str:
    """A value the HParams view can show: numbers, text and booleans as they are, ``none`` for
    null, anything else as text."""
    if value is None:
        return "none"
    return value if isinstance(value, bool | int | float | str) else str(value)


def _class_name(node: Any) -> str | None:
    """The class name of a config node's ``_target_`` (``torch.optim.AdamW`` -> ``AdamW``)."""
    target = node.get("_target_") if isinstance(node, Mapping | DictConfig) else None
    return str(target).rsplit(".", 1)[-1] if target else None


def shown_key(key: str) -> bool:
    """Whether a config key may appear in the HParams view (no ``_target_``, no path-like
    ``dir`` key, nothing of the ``callbacks`` group; the full config is in ``.hydra/``)."""
    return not key.startswith(("callbacks", "hydra", "hparams_metrics")) and not any(
        word in key for word in HIDDEN
    )


def experiment_hparams(
    cfg: DictConfig,
    data: Mapping[str, Any],
    choices: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, bool | int | float | str]:
    """The settings that define a run, under readable names, for TensorBoard's HParams view.

    The five that tell runs apart come first: ``dataset``, ``loss``, ``lr``, ``sampler``
    (``none`` without one) and ``seed``. TensorBoard sorts the names and shows the first five
    as columns (in a sweep, those whose values differ first), so every other name sorts after
    ``seed``: ``setup/*`` holds the rest of the run's settings (model, backbone, optimizer,
    weight decay, batch size, epochs, monitor, experiment, tags, ``setup/loss/<option>``) and
    the realised data (``setup/data/*``: source, profile, ratios, sizes, from ``data``:
    :meth:`DataSummary.hparams`), ``user/<key>`` every other command-line override. Options
    are Hydra's ``runtime.choices`` (``choices``; else class names). No key contains
    ``_target_`` or ``dir`` (:func:`shown_key`)."""
    choices = dict(choices or {})
    model = cfg.get("model") or {}
    optimizer = model.get("optimizer") or {}
    loss = cfg.get("loss") or {}
    sampler = cfg.get("sampler") or {}
    params: dict[str, Any] = {
        "dataset": choices.get("data") or _class_name(cfg.get("data") or {}),
        "loss": choices.get("loss") or _class_name(loss),
        "lr": optimizer.get("lr"),
        "sampler": ("none" if not sampler else choices.get("sampler") or _class_name(sampler)),
        "seed": cfg.get("seed"),
        "setup/data/source": data.get("source_used"),
        "setup/data/profile": data.get("profile"),
        "setup/data/imbalance_ratio": data.get("imbalance_ratio"),
        "setup/data/realised_ratio": data.get("realised_ratio"),
        "setup/data/num_classes": data.get("num_classes"),
        "setup/data/train_size": data.get("train_size"),
        "setup/model": choices.get("model") or _class_name(model),
        "setup/backbone": _class_name(model.get("backbone") or {}) or model.get("backbone"),
        "setup/optimizer": _class_name(optimizer),
        "setup/weight_decay": optimizer.get("weight_decay"),
        "setup/batch_size": (cfg.get("data") or {}).get("batch_size"),
        "setup/epochs": (cfg.get("trainer") or {}).get("max_epochs"),
        "setup/monitor": (cfg.get("monitor") or {}).get("metric"),
    }
    if choices.get("experiment"):
        params["setup/experiment"] = choices["experiment"]
    if cfg.get("tags"):
        params["setup/tags"] = ",".join(map(str, cfg.tags))
    for key, value in loss.items():
        if key not in ("_target_", "_partial_", "class_counts", "ignore_index"):
            params[f"setup/loss/{key}"] = value
    shown = {"data.batch_size", "trainer.max_epochs", "seed", "model.optimizer.lr", "tags"}
    shown |= {"model.optimizer.weight_decay", "loss", "sampler", "data", "model", "experiment"}
    for override in overrides:
        key, sep, value = override.partition("=")
        key = key.lstrip("+~")
        if sep and key not in shown and shown_key(key):
            params["user/" + key.replace(".", "/")] = value
    return {k: _scalar(v) for k, v in params.items() if shown_key(k)}


def run_hparams(cfg: DictConfig, data: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """:func:`experiment_hparams` with the config choices and command-line overrides of the
    running Hydra job (none outside one)."""
    if not HydraConfig.initialized():
        return experiment_hparams(cfg, data)
    hc = HydraConfig.get()
    choices = OmegaConf.to_container(OmegaConf.create(dict(hc.runtime.choices or {})))
    overrides = list(hc.overrides.task or [])
    return experiment_hparams(cfg, data, choices, overrides)  # type: ignore[arg-type]


def log_hparams(writer: SummaryWriter, params: Mapping[str, Any], tags: Sequence[str]) -> None:
    """Start the run's HParams session: the flat scalar ``params`` and the metric ``tags`` the
    view shows (the run's real scalar tags; no ``hp_metric``). The session end is written by
    :func:`log_final_hparams`; the caller flushes the writer."""
    metrics = {tag: math.nan for tag in dict.fromkeys(tags)}  # names only: hparams() needs a dict
    experiment, start, _ = hparams(dict(params), metrics)
    file_writer = writer._get_file_writer()  # what SummaryWriter.add_hparams writes through
    file_writer.add_summary(experiment)
    file_writer.add_summary(start)


def log_final_hparams(writer: SummaryWriter, monitor: str, best: float | None, step: int) -> None:
    """At the end of a successful run: the monitor's best value over epochs as the scalar
    :func:`best_tag` (next to the last-epoch scalars the HParams view reads its other metrics
    from) and the session's end (status ``SUCCESS``) for the HParams view."""
    if best is not None and math.isfinite(best):
        writer.add_scalar(best_tag(monitor), best, global_step=step)
    *_, end = hparams({}, {})  # the session-end summary: status SUCCESS
    writer._get_file_writer().add_summary(end)  # what SummaryWriter.add_hparams writes through
    writer.flush()


AVERAGES = ("f1_macro", "balanced_accuracy", "accuracy", "auroc_macro", "ap_macro")


def class_layout(
    class_names: Sequence[str], stages: Sequence[str] = ("val",), max_classes: int | None = None
) -> dict[str, Any]:
    """Custom-scalars layout that follows each class across runs: per stage, a category of
    per-class F1 charts and one of per-class recall (one chart per class, every selected run in
    it, one colour per run). There is no all-classes chart: TensorBoard colours a chart's lines
    by run, so every class of a run would share one colour; the image
    ``val/f1_per_class_history`` (``metrics=[default,class_history]``) draws that overview.

    With more than ``max_classes`` classes (``per_class_max_classes``: the per-class scalars are
    not logged then) it charts, per stage, the shot groups instead (``<stage>/accuracy_<group>``
    and ``<stage>/f1_macro_<group>`` for many, medium, few: one chart per tag, for the same
    reason) and the averages (:data:`AVERAGES`)."""
    layout: dict[str, Any] = {}
    for stage in stages:
        if max_classes is not None and len(class_names) > max_classes:
            for metric, title in (("accuracy", "accuracy"), ("f1_macro", "macro F1")):
                layout[f"{stage} {title} by shot group"] = {
                    f"{stage}/{metric}_{group}": ["Multiline", [f"^{stage}/{metric}_{group}$"]]
                    for group in GROUPS
                }
            layout[f"{stage} averages"] = {
                f"{stage}/{key}": ["Multiline", [f"^{stage}/{key}$"]] for key in AVERAGES
            }
            continue
        for metric, title in (("f1", "F1"), ("recall", "recall")):
            layout[f"{stage} {title} per class"] = {
                f"{stage}/{metric}/{name}": ["Multiline", [f"^{stage}/{metric}/{re.escape(name)}$"]]
                for name in class_names
            }
    return layout
