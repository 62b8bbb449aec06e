"""The training pipeline behind ``imblab-train``: data -> model -> trainer -> fit -> test."""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from imblab.callbacks.base import apply_class_limit, builtin_directions
from imblab.callbacks.contract import eval_inputs, evaluated_model
from imblab.callbacks.long_tail import DRWGuard, TestEveryEpoch, drw_min_epochs
from imblab.callbacks.predictions import PredictionRecorder
from imblab.callbacks.scalars import ClassificationScalars
from imblab.callbacks.stateful import check_metric_plugins
from imblab.callbacks.tau_tuning import TauTuning
from imblab.callbacks.threshold import ThresholdTuning
from imblab.config import (
    check_monitor,
    instantiate,
    instantiate_callbacks,
    resolve_monitor,
    validate,
)
from imblab.console import FIT_TERMINAL, fit_console_logs, print_summary, training_summary
from imblab.data.base import ImbalancedDataModule
from imblab.data.summary import DataSummary
from imblab.errors import ConfigError, config_error
from imblab.losses import ImbalanceLoss
from imblab.metrics.logit_adjustment import TAU_GRID, adjust, adjustment_option, best_tau, log_prior
from imblab.models.backbones import init_head_bias
from imblab.models.classifier import TrainingDiverged
from imblab.reports.predictions import FILENAME as PREDICTIONS_FILE
from imblab.reports.predictions import save_predictions
from imblab.resume import RandomState, interruptions_recorded, record_monitor
from imblab.runs import write_json
from imblab.tensorboard import (
    EpochAxis,
    best_tag,
    class_layout,
    epoch_step,
    log_final_hparams,
    log_hparams,
    logdir_command,
    record_run,
    run_hparams,
    tensorboard_writer,
)

log = logging.getLogger(__name__)

#: the run dir's record of which images each split used (:meth:`ImbalancedDataModule.data_indices`)
INDICES_FILE = "data_indices.json"


def build_datamodule(cfg: DictConfig) -> ImbalancedDataModule:
    """Instantiate, prepare and set up the datamodule with the training sampler of
    ``cfg.sampler`` (none without a ``_target_``), and build the train loader once, so bad
    data or a bad sampler fails before training."""
    sampler_cfg = cfg.get("sampler")
    if sampler_cfg and "_target_" not in sampler_cfg:
        raise ConfigError(
            f"sampler={dict(sampler_cfg)}: has no _target_; choose sampler=NAME of conf/sampler "
            "(e.g. sampler=inverse) or sampler=none"
        )
    sampler = instantiate(sampler_cfg) if sampler_cfg else None
    extra = {} if sampler is None else {"sampler": sampler}
    datamodule: ImbalancedDataModule = instantiate(cfg.data, **extra)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.train_dataloader()
    return datamodule


def build_model(cfg: DictConfig, datamodule: ImbalancedDataModule) -> LightningModule:
    """Instantiate the model (and its loss) with the classes, class counts and channels of the
    training data."""
    train_counts = list(datamodule.train_counts)
    loss = instantiate(
        cfg.loss,
        class_counts=train_counts,
        ignore_index=cfg.model.counts.ignore_index,
    )
    # model.head is the backbone's (its config reads ${model.head}), not the module's
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(model_cfg, dict)
    model_cfg.pop("head", None)
    model: LightningModule = instantiate(
        model_cfg,
        _convert_="all",
        loss=loss,
        num_classes=datamodule.num_classes,
        class_names=list(datamodule.class_names),
        train_counts=train_counts,
        backbone={"in_channels": datamodule.in_channels, "num_classes": datamodule.num_classes},
    )
    if not isinstance(loss, ImbalanceLoss):  # a loss of your own: used as it is
        return model
    bias = loss.head_bias_init  # sigmoid class-balanced focal: -log(C - 1)
    if bias is not None and not init_head_bias(model.get_submodule("backbone"), bias):
        log.warning("loss: the model's head has no bias to initialise to %.3f", bias)
    drw_epoch = loss.drw_epoch
    max_epochs = cfg.trainer.get("max_epochs")
    if drw_epoch is not None and max_epochs is not None and 0 <= max_epochs <= drw_epoch:
        log.warning("loss.drw_epoch=%d is past the last epoch: no re-weighting", drw_epoch)
    return model


def trainer_overrides(trainer_cfg: DictConfig) -> dict[str, Any]:
    """Resolve imblab's ``trainer.precision: auto`` and ``trainer.benchmark: null`` for the
    device the run trains on. On a CUDA GPU: ``bf16-mixed`` (``16-mixed`` where the GPU has no
    bf16) and ``cudnn.benchmark`` on unless ``deterministic``; elsewhere ``32-true`` and off.
    An explicit value is kept."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    out: dict[str, Any] = {}
    if trainer_cfg.get("precision") == "auto":
        bf16 = cuda and torch.cuda.is_bf16_supported()
        out["precision"] = "bf16-mixed" if bf16 else "16-mixed" if cuda else "32-true"
    if trainer_cfg.get("benchmark") is None:
        out["benchmark"] = cuda and not trainer_cfg.get("deterministic")
    return out


def build_trainer(cfg: DictConfig, **kwargs: Any) -> Trainer:
    """The Trainer of ``cfg.trainer`` (with :func:`trainer_overrides` resolved) and ``kwargs``
    (callbacks, logger, ...)."""
    trainer: Trainer = instantiate(cfg.trainer, **trainer_overrides(cfg.trainer), **kwargs)
    return trainer


def resume_path(cfg: DictConfig) -> str | None:
    """``ckpt_path`` if given, else the run dir's ``last.ckpt`` when an earlier run left one."""
    if cfg.ckpt_path:
        if not Path(cfg.ckpt_path).is_file():
            raise ConfigError(
                f"ckpt_path={cfg.ckpt_path}: no such file; give an existing checkpoint or "
                "ckpt_path=null"
            )
        return str(cfg.ckpt_path)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if last.is_file():
        log.info("resuming from %s", last)
        return str(last)
    return None


@rank_zero_only
def log_run_hparams(trainer: Trainer, cfg: DictConfig, datamodule: ImbalancedDataModule) -> None:
    """Write the experiment (:func:`~imblab.tensorboard.run_hparams`: the run's settings and
    realised data under readable names) to TensorBoard's HParams view, linked to the metric tags
    of ``hparams_metrics`` and the monitor's best value, and the custom-scalars layout (per class,
    or above ``per_class_max_classes`` per shot group)."""
    writer = tensorboard_writer(trainer)
    if writer is None:
        return
    params = run_hparams(cfg, datamodule.summary().hparams())
    tags = [t for t in cfg.hparams_metrics if t is not None]  # ${monitor.metric}: none without
    monitor = cfg.monitor.metric
    log_hparams(writer, params, [*tags, best_tag(monitor)] if monitor else tags)
    names = list(datamodule.class_names)
    writer.add_custom_scalars(class_layout(names, max_classes=cfg.per_class_max_classes))
    writer.flush()


def scalar_metrics(trainer: Trainer) -> dict[str, float]:
    """The trainer's current epoch-level scalars as plain floats (the metric callbacks' are
    float64, the losses float32 as computed), the learning rates as set (a
    ``LearningRateMonitor`` keeps them as floats; its ``callback_metrics`` copy is float32)."""
    values = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    for callback in trainer.callbacks:  # type: ignore[attr-defined]  # set by Lightning
        if isinstance(callback, LearningRateMonitor):
            values.update({k: float(v[-1]) for k, v in callback.lrs.items() if v and k in values})
    return values


def metric_directions(
    callbacks: list[Any], class_names: list[str], tags: list[str]
) -> dict[str, bool]:
    """Which way is better for each of ``tags`` that has a direction (True: higher is better):
    what the metric callbacks declare (``directions``), else imblab's table
    (:mod:`imblab.metrics.directions`: the losses, the training accuracy)."""
    declared: dict[str, bool] = {}
    for callback in callbacks:
        if hasattr(callback, "directions"):
            for stage in ("val", "test"):
                declared.update(callback.directions(stage, class_names))
    declared.update(builtin_directions(t for t in tags if t not in declared))
    return {t: declared[t] for t in sorted(tags) if t in declared}


def records_test_predictions(cfg: DictConfig) -> bool:
    """Whether the run writes ``predictions.npz`` (the best checkpoint's test predictions, which
    ``imblab-compare --baseline`` uses for the test-set part of its intervals): ``test`` and
    ``test_predictions`` (true unless set false); a ``test_predictions`` that is not a bool is a
    ConfigError."""
    value = cfg.get("test_predictions", True)
    if not isinstance(value, bool):
        raise config_error(
            "test_predictions", value, "not true or false", "set test_predictions=true (or false)"
        )
    return bool(cfg.test) and value


def long_tail_callbacks(cfg: DictConfig, callbacks: list[Any]) -> dict[str, Any]:
    """Add the long-tail protocol's callbacks to ``callbacks`` and return the Trainer options
    they need: with ``loss.drw_epoch`` the :class:`~imblab.callbacks.long_tail.DRWGuard` and
    ``min_epochs`` (:func:`~imblab.callbacks.long_tail.drw_min_epochs`, when above
    ``trainer.min_epochs``); with ``test_every_epoch`` (a bool)
    :class:`~imblab.callbacks.long_tail.TestEveryEpoch`."""
    every_epoch = cfg.get("test_every_epoch", False)
    if not isinstance(every_epoch, bool):
        raise config_error(
            "test_every_epoch", every_epoch, "not true or false", "set test_every_epoch=false"
        )
    options: dict[str, Any] = {}
    drw_epoch = (cfg.get("loss") or {}).get("drw_epoch")
    if drw_epoch is not None:
        callbacks.append(DRWGuard(int(drw_epoch)))
        least = drw_min_epochs(int(drw_epoch), callbacks)
        if least > (cfg.trainer.get("min_epochs") or 0):
            options["min_epochs"] = least
    if every_epoch:
        callbacks.append(TestEveryEpoch())
    return options


#: the option of post-hoc logit adjustment of the final test
ADJUSTMENT_KEY = "test_logit_adjustment"


def test_adjustment(
    cfg: DictConfig,
    model: LightningModule,
    datamodule: ImbalancedDataModule,
    metric_callbacks: list[Any],
) -> tuple[float | str | None, torch.Tensor | None]:
    """``test_logit_adjustment`` checked against the run, before training: ``(option, log
    prior)`` (``(None, None)`` when off). It needs a final test, logits, no tuned decision
    threshold (which was tuned on the unadjusted scores) and, for ``auto``, a validation split;
    the prior is the training split's class frequencies."""
    option = adjustment_option(cfg.get(ADJUSTMENT_KEY), ADJUSTMENT_KEY)
    if option is None:
        return None, None
    if not cfg.test:
        raise config_error(
            ADJUSTMENT_KEY,
            option,
            "it adjusts the final test and test=false runs none",
            f"set test=true, or {ADJUSTMENT_KEY}=null",
        )
    if evaluated_model(model).count_state("val").input != "logits":
        raise config_error(
            ADJUSTMENT_KEY,
            option,
            "the model's outputs are probabilities, not logits",
            f"set {ADJUSTMENT_KEY}=null",
        )
    if any(isinstance(c, ThresholdTuning) for c in metric_callbacks):
        raise config_error(
            ADJUSTMENT_KEY,
            option,
            "a tuned decision threshold (metrics.threshold) and the adjustment both move the "
            "decision, and the threshold is tuned on the unadjusted scores",
            f"drop metrics.threshold, or set {ADJUSTMENT_KEY}=null",
        )
    if option == "auto" and not sum(datamodule.val_counts):
        raise config_error(
            ADJUSTMENT_KEY,
            option,
            f"the run has no validation split to tune tau on (data.val_source="
            f"{datamodule.val_source})",
            f"give a tau, e.g. {ADJUSTMENT_KEY}=1.0",
        )
    return option, log_prior(list(datamodule.train_counts), ADJUSTMENT_KEY)


def adjust_test(
    model: LightningModule,
    option: float | str,
    prior: torch.Tensor,
    tuning: TauTuning | None,
    best: str,
    trainer: Trainer,
) -> float:
    """Make the model's outputs ``logits - tau * log(prior)`` from now on (a forward hook; the
    weights are untouched) and return tau: ``option`` itself, or for ``auto`` the tau of
    :data:`~imblab.metrics.logit_adjustment.TAU_GRID` that maximises balanced accuracy on the
    validation epoch that selected ``best`` (its global step, read from the checkpoint; the
    last validation epoch when no checkpoint was selected), as ``eval.logit_adjustment=auto``
    chooses it for that checkpoint."""
    if isinstance(option, float):
        tau = option
    else:
        assert tuning is not None
        step = trainer.global_step
        if best:
            step = int(torch.load(best, map_location="cpu", weights_only=True)["global_step"])
        tau, tuned = best_tau(tuning.at_step(step), TAU_GRID)
        if trainer.is_global_zero:
            log.info(
                "%s: tau=%g (validation balanced accuracy %.4f at step %d)",
                ADJUSTMENT_KEY,
                tau,
                tuned,
                step,
            )
    model.register_forward_hook(lambda _m, _i, out: adjust(out, prior, tau))
    return tau


def kept_checkpoint(trainer: Trainer) -> str:
    """The newest checkpoint the run wrote: the last epoch's (an unmonitored checkpoint
    callback's, ``last.ckpt``), else the best one; "" when none was written."""
    callbacks = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
    paths = [c.last_model_path or ("" if c.monitor else c.best_model_path) for c in callbacks]
    paths += [c.best_model_path for c in callbacks]
    return next((p for p in paths if p and Path(p).is_file()), "")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; write ``metrics.json``; return the final scalars."""
    validate(cfg)
    monitor = resolve_monitor(cfg)
    recorder = PredictionRecorder("test") if records_test_predictions(cfg) else None
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    callbacks = instantiate_callbacks(cfg.get("callbacks"), "callbacks")
    metric_callbacks = instantiate_callbacks(cfg.get("metrics"), "metrics")
    apply_class_limit(metric_callbacks, int(cfg.get("per_class_max_classes") or 100))
    if metric_callbacks:  # the plugin contract (a dry run), before training
        inputs = eval_inputs(evaluated_model(model))
        check_metric_plugins(metric_callbacks, inputs, datamodule.class_names)
    # the shot groups' class sizes: the long-tailed subset's (a setup of its own may not say)
    group_counts = datamodule.subset_counts or datamodule.train_counts
    check_monitor(monitor, metric_callbacks, datamodule.class_names, group_counts)
    adjustment, prior = test_adjustment(cfg, model, datamodule, metric_callbacks)
    callbacks += metric_callbacks
    tuning = None
    if adjustment == "auto" and prior is not None:  # the validation epochs' adjusted confusion
        tuning = TauTuning(prior, keep_history=True)
        callbacks.append(tuning)
    callbacks.append(RandomState())  # a resumed run draws what the uninterrupted one drew
    if recorder is not None:  # the best checkpoint's test predictions: predictions.npz
        callbacks.append(recorder)
    callbacks.append(EpochAxis())  # epoch-level values against the epoch; resumed: as begun
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    if not loggers:  # nothing to show learning rates in
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer_options = long_tail_callbacks(cfg, callbacks)
    trainer = build_trainer(cfg, callbacks=callbacks, logger=loggers, **trainer_options)
    log_run_hparams(trainer, cfg, datamodule)
    output_dir = Path(cfg.paths.output_dir)
    record_run(trainer, output_dir)  # status.json: where its TensorBoard run is
    if trainer.is_global_zero:
        write_json(output_dir / INDICES_FILE, datamodule.data_indices())
        log.info("run dir: %s", output_dir.resolve())
        if tensorboard_writer(trainer) is not None:
            log.info("TensorBoard: %s", logdir_command(output_dir))

    resume = resume_path(cfg)
    try:
        with interruptions_recorded(trainer, output_dir):  # SIGINT/SIGTERM: status interrupted
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    except TrainingDiverged as err:  # the one line names the checkpoint it kept
        kept = kept_checkpoint(trainer)
        raise TrainingDiverged(err.epoch, err.step, err.lr, err.base_lr, kept) from None
    except pickle.UnpicklingError as err:  # only the resumed checkpoint is unpickled
        found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", str(err))
        reason = f"it names {found.group(1)}" if found else " ".join(str(err).split())[:160]
        raise config_error(
            "ckpt_path",
            resume,
            f"refused by torch.load(weights_only=True): {reason}",
            "resume only from checkpoints imblab-train wrote; delete it to start the run afresh",
        ) from None
    metrics = scalar_metrics(trainer)
    record_monitor(trainer, cfg.monitor.metric, cfg.monitor.mode, output_dir)
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
    if cfg.test:
        tau = None
        if adjustment is not None:
            assert prior is not None
            tau = adjust_test(model, adjustment, prior, tuning, best, trainer)
        with interruptions_recorded(trainer, output_dir):
            # verbose=False: Lightning's table would show test/loss alone; the summary shows all
            trainer.test(
                model,
                datamodule=datamodule,
                ckpt_path=best or None,
                weights_only=True,
                verbose=False,
            )
        metrics.update(scalar_metrics(trainer))
        if tau is not None:
            metrics[f"test/{TauTuning.name}_tau"] = tau
    if trainer.is_global_zero:
        headline = {k: v for k, v in sorted(metrics.items()) if k.count("/") == 1}
        fit_console_logs()  # the console shows the line cut to the terminal, the log file all
        final = ", ".join(f"{k}={v:.4f}" for k, v in headline.items())
        log.info("final: %s", final, extra=FIT_TERMINAL)
        groups = next(
            (
                c.group_record(datamodule.class_names, group_counts)
                for c in callbacks
                if isinstance(c, ClassificationScalars)
            ),
            None,
        )
        fingerprint = datamodule.split_fingerprint("test") if cfg.test else None
        if recorder is not None and recorder.predictions is not None:
            save_predictions(
                output_dir / PREDICTIONS_FILE, *recorder.predictions, fingerprint=fingerprint
            )
        write_metrics(
            output_dir / "metrics.json",
            metrics,
            cfg,
            best,
            datamodule.summary(),
            groups,
            test_fingerprint=fingerprint,
            directions=metric_directions(
                metric_callbacks, list(datamodule.class_names), list(metrics)
            ),
        )
        if (writer := tensorboard_writer(trainer)) is not None:
            score = checkpoint.best_model_score if isinstance(checkpoint, ModelCheckpoint) else None
            best_score = None if score is None else float(score)
            log_final_hparams(writer, cfg.monitor.metric, best_score, epoch_step(trainer))
        command = logdir_command(output_dir) if tensorboard_writer(trainer) is not None else None
        max_classes = int(cfg.get("per_class_max_classes") or 100)
        data = datamodule.summary()
        print_summary(
            training_summary(trainer, metrics, monitor, data, output_dir, max_classes, command)
        )
    return metrics


def write_metrics(
    path: Path,
    metrics: dict[str, float],
    cfg: DictConfig,
    best: str,
    data: DataSummary,
    groups: dict[str, Any] | None = None,
    test_fingerprint: str | None = None,
    directions: dict[str, bool] | None = None,
) -> None:
    """``metrics.json``: the final validation and test scalars, plus what produced them (the
    monitor, the best checkpoint, the realised data, and the many/medium/few-shot ``groups``
    the group scores were computed over, when known), written atomically
    (:func:`~imblab.runs.write_json`); with ``test_fingerprint`` (the test split's
    :meth:`~imblab.data.base.ImbalancedDataModule.split_fingerprint`) a top-level
    ``test_fingerprint``, which ``imblab-compare`` checks before it pairs test images; with
    ``directions`` a top-level ``directions`` record ``{tag: true}`` (higher is better) or
    ``false`` (lower is) for the scalars that have a direction
    (:func:`metric_directions`), which ``imblab-compare`` reads for its verdicts."""
    record: dict[str, Any] = {
        "monitor": {"metric": cfg.monitor.metric, "mode": cfg.monitor.mode},
        "best_checkpoint": best or None,
        "data": data.record(),
        "metrics": {k: (None if math.isnan(v) else v) for k, v in sorted(metrics.items())},
    }
    if groups is not None:
        record["groups"] = groups
    if test_fingerprint is not None:
        record["test_fingerprint"] = test_fingerprint
    if directions is not None:
        record["directions"] = directions
    write_json(path, record)
    log.info("wrote %s", path)
