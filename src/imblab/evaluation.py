"""The pipeline behind ``imblab-eval``: checkpoint + its run's config -> test (or val) -> reports.

The training run's config is composed again from ``RUN/.hydra/overrides.yaml`` (``RUN`` the
checkpoint's run dir), with the eval command line's overrides applied after it; the model is
built from it, the checkpoint's weights (and callback states, e.g. a tuned threshold) are
loaded, and the split is evaluated by a Lightning Trainer with every metric callback.  A
:class:`~imblab.callbacks.predictions.PredictionRecorder` collects each process's
probabilities, targets and ids from the step outputs and gathers them at the end of the epoch;
:class:`SplitCounts` keeps the summed counts; rank 0 writes one report and one
``predictions.npz`` covering each sample once.
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
from imblab.callbacks.contract import EvaluatedModel, evaluated_model
from imblab.callbacks.intervals import BootstrapIntervals
from imblab.callbacks.predictions import PredictionRecorder
from imblab.callbacks.threshold import ThresholdTuning
from imblab.config import instantiate, instantiate_callbacks, validate
from imblab.errors import ConfigError, config_error
from imblab.metrics.bootstrap import percentile_intervals, replicate_scores
from imblab.metrics.counts import Counts
from imblab.metrics.functional import binary_scores, summarize
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
        boot = model.bootstrap_state(stage)
        self.confmats = None if boot is None else boot.compute()


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
    if split == "test" and tuner is not None and tuner.threshold is None:
        log.info("the checkpoint holds no tuned threshold: tuning it on validation first")
        trainer.validate(model, datamodule=datamodule, verbose=False)
    run = trainer.test if split == "test" else trainer.validate
    run(model, datamodule=datamodule, verbose=False)
    if not trainer.is_global_zero:
        return {}
    scores = report_scores(split_counts, trainer, run_cfg, confidence, tuner)
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
        paths += write_figures(output_dir, split_counts.counts, split_counts.class_names)
    headline = ("f1_macro", "f1_macro_lo", "f1_macro_hi", "balanced_accuracy", "auroc_macro")
    shown = {k: scores[k] for k in headline if k in scores and not math.isnan(scores[k])}
    log.info("%s: %s", split, ", ".join(f"{k}={v:.4f}" for k, v in shown.items()))
    log.info("wrote %s", ", ".join(p.name for p in [output_dir / FILENAME, *paths]))
    return scores
