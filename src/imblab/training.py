"""The training pipeline behind ``imblab-train``: data -> model -> trainer -> fit -> test."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from imblab.callbacks.scalars import ClassificationScalars
from imblab.config import check_monitor, instantiate, instantiate_callbacks, validate
from imblab.console import print_summary, training_summary
from imblab.data.base import ImbalancedDataModule
from imblab.data.summary import DataSummary
from imblab.errors import ConfigError
from imblab.losses import ImbalanceLoss
from imblab.models.backbones import init_head_bias
from imblab.resume import RandomState, interruptions_recorded, record_monitor
from imblab.tensorboard import (
    best_tag,
    class_layout,
    log_final_hparams,
    log_hparams,
    logdir_command,
    run_hparams,
    tensorboard_writer,
)

log = logging.getLogger(__name__)


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
    log_hparams(writer, params, [*cfg.hparams_metrics, best_tag(cfg.monitor.metric)])
    names = list(datamodule.class_names)
    writer.add_custom_scalars(class_layout(names, max_classes=cfg.per_class_max_classes))
    writer.flush()


def scalar_metrics(trainer: Trainer) -> dict[str, float]:
    """The trainer's current epoch-level scalars as plain floats."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; write ``metrics.json``; return the final scalars."""
    validate(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    callbacks = instantiate_callbacks(cfg.get("callbacks"), "callbacks")
    metric_callbacks = instantiate_callbacks(cfg.get("metrics"), "metrics")
    check_monitor(
        cfg.monitor.metric, metric_callbacks, datamodule.class_names, datamodule.train_counts
    )
    callbacks += metric_callbacks
    callbacks.append(RandomState())  # a resumed run draws what the uninterrupted one drew
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    if not loggers:  # nothing to show learning rates in
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = build_trainer(cfg, callbacks=callbacks, logger=loggers)
    log_run_hparams(trainer, cfg, datamodule)
    output_dir = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:
        log.info("run dir: %s", output_dir.resolve())
        if tensorboard_writer(trainer) is not None:
            log.info("TensorBoard: %s", logdir_command(output_dir))

    with interruptions_recorded(trainer, output_dir):  # SIGINT/SIGTERM: status interrupted
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_path(cfg), weights_only=True)
    metrics = scalar_metrics(trainer)
    record_monitor(trainer, cfg.monitor.metric, cfg.monitor.mode, output_dir)
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
    if cfg.test:
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
    if trainer.is_global_zero:
        headline = {k: v for k, v in sorted(metrics.items()) if k.count("/") == 1}
        log.info("final: %s", ", ".join(f"{k}={v:.4f}" for k, v in headline.items()))
        groups = next(
            (
                c.group_record(datamodule.class_names, datamodule.train_counts)
                for c in callbacks
                if isinstance(c, ClassificationScalars)
            ),
            None,
        )
        write_metrics(output_dir / "metrics.json", metrics, cfg, best, datamodule.summary(), groups)
        if (writer := tensorboard_writer(trainer)) is not None:
            score = checkpoint.best_model_score if isinstance(checkpoint, ModelCheckpoint) else None
            best_score = None if score is None else float(score)
            log_final_hparams(writer, cfg.monitor.metric, best_score, trainer.global_step)
        command = logdir_command(output_dir) if tensorboard_writer(trainer) is not None else None
        max_classes = int(cfg.get("per_class_max_classes") or 100)
        data = datamodule.summary()
        monitor = cfg.monitor.metric
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
) -> None:
    """``metrics.json``: the final validation and test scalars, plus what produced them (the
    monitor, the best checkpoint, the realised data, and the many/medium/few-shot ``groups``
    the group scores were computed over, when known)."""
    record: dict[str, Any] = {
        "monitor": {"metric": cfg.monitor.metric, "mode": cfg.monitor.mode},
        "best_checkpoint": best or None,
        "data": data.record(),
        "metrics": {k: (None if math.isnan(v) else v) for k, v in sorted(metrics.items())},
    }
    if groups is not None:
        record["groups"] = groups
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    log.info("wrote %s", path)
