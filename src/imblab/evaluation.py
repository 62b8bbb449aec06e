"""The pipeline behind ``imblab-eval``: checkpoint + its run's config -> test (or val) -> reports.

The training run's config is composed again from ``RUN/.hydra/overrides.yaml`` (``RUN`` the
checkpoint's run dir), with the eval command line's overrides applied after it; the model is
built from it, the checkpoint's weights (and callback states, e.g. a tuned threshold) are
loaded, and the split is evaluated by a Lightning Trainer with every metric callback.  A
:class:`~imblab.callbacks.predictions.PredictionRecorder` collects each process's
probabilities, targets and ids from the step outputs and gathers them at the end of the epoch;
:class:`SplitCounts` keeps the summed counts; rank 0 writes one report and one
``predictions.npz`` covering each sample once.

The report is exact: its AUROC and AP come from the recorded predictions
(:func:`~imblab.metrics.exact_curves.curve_scores`, equal to scikit-learn on
``predictions.npz``), not from the training's binned curves; every other value is a function of
the confusion matrix, which binning does not touch.

``eval.logit_adjustment`` (post-hoc logit adjustment, :mod:`imblab.metrics.logit_adjustment`):
the model is evaluated on ``logits - tau * log(prior)`` (a forward hook), the prior from the
checkpoint's training class counts; ``auto`` tunes tau on validation first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch import Callback, Trainer
from omegaconf import DictConfig, OmegaConf, open_dict

from imblab.callbacks.base import MetricCallback
from imblab.callbacks.contract import EvaluatedModel, evaluated_model, stateful_model
from imblab.callbacks.intervals import BootstrapIntervals
from imblab.callbacks.predictions import PredictionRecorder
from imblab.callbacks.threshold import ThresholdTuning
from imblab.config import instantiate, instantiate_callbacks, validate
from imblab.console import evaluation_summary, print_summary
from imblab.errors import ConfigError, config_error
from imblab.metrics.bootstrap import percentile_intervals, replicate_scores
from imblab.metrics.counts import Counts
from imblab.metrics.exact_curves import curve_scores
from imblab.metrics.functional import binary_scores, summarize
from imblab.metrics.logit_adjustment import (
    TAU_GRID,
    AdjustedConfusion,
    adjust,
    best_tau,
    log_prior,
)
from imblab.reports.figures import write_figures
from imblab.reports.predictions import FILENAME, save_predictions
from imblab.reports.report import write_reports
from imblab.training import build_datamodule, build_model, build_trainer

log = logging.getLogger(__name__)

SPLITS = ("test", "val")
# training overrides that would make the evaluation cover less than the whole split
_PARTIAL_RUN = ("trainer.limit_", "trainer.fast_dev_run", "debug")


def _key(override: str) -> str:
    """The key (or group) an override string sets: ``+a.b=1`` -> ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~")


def _eval_only(key: str) -> bool:
    return key in ("ckpt_path", "eval") or key.startswith(("eval.", "hydra.", "hydra/"))


def run_dir_of(ckpt: Path) -> Path:
    """The run dir of a checkpoint: ``RUN`` for ``RUN/checkpoints/FILE.ckpt``, else its folder."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def load_checkpoint(path: object, weights_only: bool = True) -> dict[str, Any]:
    """The checkpoint dict at ``path`` on the CPU, loaded with ``torch.load(weights_only=...)``;
    a missing, unreadable or non-Lightning file is a one-line :class:`ConfigError`."""
    fix = "pass ckpt_path=RUN/checkpoints/last.ckpt (or epoch_NNN.ckpt) of an imblab-train run"
    if path is None or not str(path):
        raise config_error("ckpt_path", path, "no checkpoint given", fix)
    file = Path(str(path))
    if not file.is_file():
        raise config_error("ckpt_path", str(path), "no such file", fix)
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # torch.load raises many types for a bad file
        reason = (str(err).strip().splitlines() or [""])[0][:160]
        safe = " (or eval.weights_only=false for a trusted file)" if weights_only else ""
        raise ConfigError(
            f"ckpt_path={file}: not a readable checkpoint ({type(err).__name__}: {reason}); "
            f"{fix}{safe}"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise config_error(
            "ckpt_path", str(file), "has no state_dict: not a Lightning checkpoint", fix
        )
    return ckpt


@contextmanager
def _hydra_compose_ready() -> Iterator[None]:
    """Inside ``@hydra.main`` Hydra is initialised; elsewhere (tests, notebooks) initialise it
    on imblab's packaged configs for the duration."""
    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_module(config_module="imblab.conf", version_base="1.3"):
        yield


def training_config(cfg: DictConfig, ckpt: Path) -> DictConfig:
    """``train.yaml`` composed with the checkpoint's run overrides, then the eval command line's
    (eval-only keys, ``hydra.*`` and limits such as ``trainer.limit_test_batches`` of the
    training run left out)."""
    overrides_file = run_dir_of(ckpt) / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        raise config_error(
            "ckpt_path",
            str(ckpt),
            f"no {overrides_file} to rebuild the run's config from",
            "evaluate a checkpoint inside the run dir imblab-train wrote (RUN/checkpoints/)",
        )
    trained = [str(o) for o in OmegaConf.load(overrides_file)]
    trained = [
        o for o in trained if not _eval_only(_key(o)) and not _key(o).startswith(_PARTIAL_RUN)
    ]
    command_line = [str(o) for o in HydraConfig.get().overrides.task]
    command_line = [o for o in command_line if not _eval_only(_key(o))]
    with _hydra_compose_ready():
        run_cfg = compose(config_name="train", overrides=[*trained, *command_line])
    with open_dict(run_cfg):
        run_cfg.paths.output_dir = str(cfg.paths.output_dir)
    return run_cfg


class SplitCounts(MetricCallback):
    """Keeps what the report needs from the end of the ``stage`` epoch: the summed counts, the
    class names, the default two-class threshold and the bootstrap confusion matrices (None
    without a bootstrap). Every rank takes part in the sums; rank 0 reports."""

    def __init__(self, stage: str) -> None:
        super().__init__(stages=(stage,))
        self.stage = stage
        self.counts: Counts | None = None
        self.class_names: list[str] = []
        self.binary_threshold = 0.5
        self.ignore_index: int | None = None
        self.confmats: torch.Tensor | None = None

    def log_counts(
        self,
        stage: str,
        counts: Counts,
        class_names: list[str],
        trainer: Trainer,
        model: EvaluatedModel,
    ) -> None:
        self.counts = counts
        self.class_names = class_names
        self.binary_threshold = float(model.count_state(stage).binary_threshold)
        self.ignore_index = model.count_state(stage).ignore_index
        boot = model.bootstrap_state(stage)
        self.confmats = None if boot is None else boot.compute()


class TauTuning(Callback):
    """``eval.logit_adjustment=auto``: registers an :class:`AdjustedConfusion` state on the
    model (updated with every validation batch's logits, summed across processes) and keeps the
    validation epoch's (G, C, C) confusion matrices, one per tau of :data:`TAU_GRID`."""

    name = "logit_adjustment"

    def __init__(self, log_prior: torch.Tensor) -> None:
        self.log_prior = log_prior
        self.confmats: torch.Tensor | None = None

    def setup(self, trainer: Trainer, pl_module: L.LightningModule, stage: str) -> None:
        stateful_model(pl_module).add_eval_state(
            self.name, lambda: AdjustedConfusion(self.log_prior, TAU_GRID)
        )

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:  # every rank: the sum is collective
            self.confmats = stateful_model(pl_module).eval_state("val", self.name).compute()


def logit_adjustment_option(value: object) -> float | str | None:
    """``eval.logit_adjustment`` checked: None (off), ``"auto"`` or a finite tau >= 0."""
    if value is None or value == "auto":
        return "auto" if value else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        tau = float(value)
        if math.isfinite(tau) and tau >= 0:
            return tau
    raise config_error(
        "eval.logit_adjustment",
        value,
        "not null, auto or a number >= 0",
        "use null (off), auto (tau tuned on validation) or a tau such as 1.0",
    )


def _training_counts(ckpt: dict[str, Any], model: Any) -> list[int]:
    """The training class counts the checkpoint's model was trained on: its hyperparameters'
    ``train_counts``, else the model's (the datamodule's)."""
    saved = (ckpt.get("hyper_parameters") or {}).get("train_counts")
    return [int(n) for n in (saved or getattr(model, "train_counts", None) or [])]


def _report_options(run_cfg: DictConfig) -> tuple[tuple[float, ...], float]:
    """``(betas, zero_division)`` of the run's scalars callback (defaults without one)."""
    scalars = (run_cfg.get("metrics") or {}).get("scalars") or {}
    betas = tuple(float(b) for b in scalars.get("betas", (0.5, 1.0, 2.0)))
    return betas, float(scalars.get("zero_division", 0.0))


def report_scores(
    split_counts: SplitCounts,
    trainer: Trainer,
    run_cfg: DictConfig,
    confidence: float,
    tuner: ThresholdTuning | None,
) -> dict[str, float]:
    """The flat report: :func:`summarize` of the counts (float64, keys as ``evaluate()``),
    the bootstrap intervals, the two-class scores at the default and the tuned threshold, then
    every other scalar the metric callbacks published for the split (``loss``, ``mcc``, ...)."""
    counts = split_counts.counts
    assert counts is not None
    betas, zero_division = _report_options(run_cfg)
    names = split_counts.class_names
    scores = summarize(
        counts, betas=betas, zero_division=zero_division, class_names=names, one_vs_rest=True
    )
    if split_counts.confmats is not None:
        replicates = replicate_scores(
            split_counts.confmats, betas=betas, zero_division=zero_division, class_names=names
        )
        scores.update(percentile_intervals(replicates, confidence))
    if counts.num_classes == 2:
        default = split_counts.binary_threshold
        scores["binary/threshold"] = default
        for beta in betas:
            values = binary_scores(counts, default, beta, zero_division)
            scores.update({f"binary/{k}": v for k, v in values.items()})
        if tuner is not None:
            scores.update(tuner.tuned_scores(counts))
    prefix = f"{split_counts.stage}/"
    for tag, value in trainer.callback_metrics.items():
        key = tag[len(prefix) :]
        if tag.startswith(prefix) and key not in scores and value.numel() == 1:
            scores[key] = float(value)
    return scores


def exact_curves(predictions: PredictionRecorder, split_counts: SplitCounts) -> dict[str, float]:
    """The report's AUROC and AP keys, exact, from the recorded probabilities (the arrays of
    ``predictions.npz``)."""
    assert predictions.predictions is not None
    probs, targets, _ = predictions.predictions
    return curve_scores(
        torch.from_numpy(probs),
        torch.from_numpy(targets),
        input="probs",
        ignore_index=split_counts.ignore_index,
        class_names=split_counts.class_names,
    )


def _restore_callback_states(callbacks: list[Callback], ckpt: dict[str, Any]) -> None:
    states = ckpt.get("callbacks") or {}
    for callback in callbacks:
        state = states.get(callback.state_key)
        if state:
            callback.load_state_dict(state)


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, float]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.eval.split``; rank 0 writes ``report.json``,
    ``report.md``, ``report.csv``, ``predictions.npz`` and the figures into
    ``cfg.paths.output_dir``.  Returns the report's scores (on rank 0; empty elsewhere)."""
    options = cfg.eval
    split = options.split
    if split not in SPLITS:
        raise config_error("eval.split", split, "unknown split", "use eval.split=test or val")
    replicates = options.bootstrap
    if (
        isinstance(replicates, bool)
        or not isinstance(replicates, int)
        or replicates == 1
        or replicates < 0
    ):
        raise config_error("eval.bootstrap", replicates, "not 0 or an int >= 2", "use e.g. 200")
    confidence = float(options.confidence)
    if not 0 < confidence < 1:
        raise config_error("eval.confidence", confidence, "not in (0, 1)", "use e.g. 0.95")
    adjustment = logit_adjustment_option(options.get("logit_adjustment"))
    ckpt_path = Path(str(cfg.ckpt_path)) if cfg.ckpt_path else None
    ckpt = load_checkpoint(ckpt_path, bool(options.weights_only))
    assert ckpt_path is not None
    run_cfg = training_config(cfg, ckpt_path)
    validate(run_cfg)
    with open_dict(run_cfg):
        run_cfg.model.bootstrap = replicates
        run_cfg.model.bootstrap_seed = int(options.bootstrap_seed)
    L.seed_everything(run_cfg.seed, workers=True)
    datamodule: Any = build_datamodule(run_cfg)
    model = build_model(run_cfg, datamodule)
    evaluated_model(model)  # a clear TypeError now for a model the callbacks cannot read
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"ckpt_path={ckpt_path}: its weights do not fit the run's model (missing "
            f"{list(missing)[:3]}, unexpected {list(unexpected)[:3]}); evaluate it with the "
            "overrides it was trained with (no model.* changes on the command line)"
        )

    callbacks = instantiate_callbacks(run_cfg.get("metrics"), "metrics")
    betas, zero_division = _report_options(run_cfg)
    if replicates and not any(isinstance(c, BootstrapIntervals) for c in callbacks):
        callbacks.append(BootstrapIntervals(confidence, betas, zero_division))
    tuner = next((c for c in callbacks if isinstance(c, ThresholdTuning)), None)
    if tuner is None and datamodule.num_classes == 2:
        tuner = ThresholdTuning(float(options.threshold_beta), betas, zero_division)
        callbacks.append(tuner)
    _restore_callback_states(callbacks, ckpt)
    prior = None
    if adjustment is not None:
        if evaluated_model(model).count_state("val").input != "logits":
            raise config_error(
                "eval.logit_adjustment",
                adjustment,
                "the model's outputs are probabilities, not logits",
                "set eval.logit_adjustment=null",
            )
        prior = log_prior(_training_counts(ckpt, model))
    tau_tuning = TauTuning(prior) if adjustment == "auto" and prior is not None else None
    if tau_tuning is not None:
        callbacks.append(tau_tuning)
    split_counts = SplitCounts(split)
    predictions = PredictionRecorder(split)
    callbacks += [split_counts, predictions]
    loggers = [instantiate(c) for c in (run_cfg.get("logger") or {}).values() if c]
    trainer = build_trainer(
        run_cfg, callbacks=callbacks, logger=loggers, enable_checkpointing=False
    )
    output_dir = Path(run_cfg.paths.output_dir)
    if trainer.is_global_zero:
        log.info("evaluating %s on %s; eval dir: %s", ckpt_path, split, output_dir.resolve())
    tau = adjustment
    if tau_tuning is not None:
        trainer.validate(model, datamodule=datamodule, verbose=False)
        assert tau_tuning.confmats is not None
        tau, tuned = best_tau(tau_tuning.confmats, TAU_GRID)
        if math.isnan(tau):
            raise ConfigError(
                "eval.logit_adjustment=auto: the validation split is empty, nothing to tune "
                "tau on; give a tau (e.g. eval.logit_adjustment=1.0)"
            )
        if trainer.is_global_zero:
            log.info("logit adjustment: tau=%g (validation balanced accuracy %.4f)", tau, tuned)
            if split == "val":
                log.warning("tau was tuned on the split it is evaluated on (eval.split=val)")
    if prior is not None:
        assert isinstance(tau, float)
        shift_prior, shift_tau = prior, tau
        model.register_forward_hook(lambda _m, _i, out: adjust(out, shift_prior, shift_tau))
        if tuner is not None:  # a threshold tuned on the unadjusted scores no longer applies
            tuner.threshold = None
    if split == "test" and tuner is not None and tuner.threshold is None:
        log.info("the checkpoint holds no tuned threshold: tuning it on validation first")
        trainer.validate(model, datamodule=datamodule, verbose=False)
    run = trainer.test if split == "test" else trainer.validate
    run(model, datamodule=datamodule, verbose=False)
    if not trainer.is_global_zero:
        return {}
    scores = report_scores(split_counts, trainer, run_cfg, confidence, tuner)
    scores.update(exact_curves(predictions, split_counts))
    if tau is not None:
        scores["logit_adjustment_tau"] = float(tau)
    assert predictions.predictions is not None and split_counts.counts is not None
    save_predictions(output_dir / FILENAME, *predictions.predictions)
    title = f"{split} split of {ckpt_path}"
    paths = write_reports(
        output_dir,
        scores,
        split_counts.class_names,
        betas,
        title=title,
        confidence=confidence if replicates else None,
    )
    if options.figures:
        paths += write_figures(
            output_dir,
            split_counts.counts,
            split_counts.class_names,
            stage=split,
            where=Path(ckpt_path).stem,
        )
    headline = ("f1_macro", "f1_macro_lo", "f1_macro_hi", "balanced_accuracy", "auroc_macro")
    shown = {k: scores[k] for k in headline if k in scores and not math.isnan(scores[k])}
    log.info("%s: %s", split, ", ".join(f"{k}={v:.4f}" for k, v in shown.items()))
    log.info("wrote %s", ", ".join(p.name for p in [output_dir / FILENAME, *paths]))
    max_classes = int(run_cfg.get("per_class_max_classes") or 100)
    train_counts = _training_counts(ckpt, model)
    names = split_counts.class_names
    summary = evaluation_summary(
        scores, split, names, train_counts, str(ckpt_path), output_dir, max_classes, bool(loggers)
    )
    print_summary(summary)  # the last thing imblab-eval prints
    return scores
