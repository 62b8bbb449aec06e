"""The pipeline behind ``imblab-eval``: checkpoint + its run's config -> test (or val) -> reports.

The training run's config is composed again from ``RUN/.hydra/overrides.yaml`` (``RUN`` the
checkpoint's run dir), with the eval command line's overrides applied after it; the model is
built from it, the checkpoint's weights (and callback states, e.g. a tuned threshold) are
loaded, and the split is evaluated by a Lightning Trainer with every metric callback.  A
:class:`~imblab.callbacks.predictions.PredictionRecorder` collects each process's
probabilities, targets and ids from the step outputs and gathers them at the end of the epoch;
:class:`~imblab.callbacks.split_counts.SplitCounts` keeps the summed counts; rank 0 writes one
report and one ``predictions.npz`` covering each sample once.

The report is exact: its AUROC and AP come from the recorded predictions
(:func:`~imblab.metrics.exact_curves.curve_scores`, equal to scikit-learn on
``predictions.npz``), not from the training's binned curves; every other value is a function of
the confusion matrix, which binning does not touch.

``eval.logit_adjustment`` (post-hoc logit adjustment, :mod:`imblab.metrics.logit_adjustment`):
the model is evaluated on ``logits - tau * log(prior)`` (a forward hook), the prior from the
checkpoint's training class counts; ``auto`` tunes tau on validation first
(:class:`~imblab.callbacks.tau_tuning.TauTuning`).
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
from hydra.errors import ConfigCompositionException
from lightning.pytorch import Callback, Trainer
from omegaconf import DictConfig, OmegaConf, open_dict

from imblab.callbacks.base import apply_class_limit
from imblab.callbacks.contract import evaluated_model
from imblab.callbacks.intervals import BootstrapIntervals
from imblab.callbacks.predictions import PredictionRecorder
from imblab.callbacks.split_counts import SplitCounts
from imblab.callbacks.tau_tuning import TauTuning
from imblab.callbacks.threshold import ThresholdTuning
from imblab.config import instantiate, instantiate_callbacks, validate
from imblab.console import evaluation_summary, print_summary
from imblab.errors import ConfigError, config_error
from imblab.metrics.bootstrap import percentile_intervals, replicate_scores
from imblab.metrics.exact_curves import curve_scores
from imblab.metrics.functional import binary_scores, summarize
from imblab.metrics.logit_adjustment import TAU_GRID, adjust, adjustment_option, best_tau, log_prior
from imblab.pipelines.training import build_datamodule, build_model, build_trainer
from imblab.reports.figures import write_figures
from imblab.reports.predictions import FILENAME, save_predictions
from imblab.reports.report import write_reports

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


#: what rebuilds the data of a run written before ``data.subset_seed`` existed
LEGACY_DATA = ("data.subset_seed=null", "data.val_source=split", "data.n_max=null")


def legacy_data_overrides(run_dir: Path) -> list[str]:
    """:data:`LEGACY_DATA` for a run trained before ``data.subset_seed`` existed (its
    ``.hydra/config.yaml`` has no ``data.subset_seed``): its subset and validation split drawn
    with ``seed``, as it was trained; nothing for a newer run. A run dir without that file
    cannot tell: its data is rebuilt with today's protocol, which one warning line says."""
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        log.warning(
            "%s has no .hydra/config.yaml: cannot tell whether it was trained before "
            "data.subset_seed; evaluating with today's data protocol",
            run_dir,
        )
        return []
    saved_cfg = OmegaConf.load(saved)
    data = saved_cfg.get("data") if isinstance(saved_cfg, DictConfig) else None
    if data is None or "subset_seed" in data:
        return []
    log.info(
        "%s was trained before data.subset_seed: rebuilding its data as it was (%s)",
        run_dir,
        " ".join(LEGACY_DATA),
    )
    return list(LEGACY_DATA)


def _choice(overrides: list[str], group: str) -> str | None:
    """The option ``overrides`` pick for config group ``group`` (``data=cifar_lt``), if any."""
    picked = [o.split("=", 1)[1] for o in overrides if "=" in o and _key(o) == group]
    return picked[-1] if picked else None


def trained_data_group(trained: list[str]) -> str | None:
    """The ``data`` group option the run was trained with (its overrides composed, an
    experiment's choice included)."""
    with _hydra_compose_ready():
        composed = compose(config_name="train", overrides=trained, return_hydra_config=True)
    choice = composed.hydra.runtime.choices.get("data")
    return None if choice is None else str(choice)


def _first_line(err: BaseException) -> str:
    return " ".join((str(err).strip().splitlines() or [type(err).__name__])[0].split())[:200]


def training_config(cfg: DictConfig, ckpt: Path) -> DictConfig:
    """``train.yaml`` composed with the checkpoint's run overrides, then, for a run trained
    before ``data.subset_seed`` existed, :func:`legacy_data_overrides`, then the eval command
    line's (eval-only keys, ``hydra.*`` and limits such as ``trainer.limit_test_batches`` of
    the training run left out). A ``data=<group>`` on the command line other than the run's
    evaluates on other data: the run's ``data`` overrides are left out (they belong to its
    group). Overrides that do not compose are the one-line :class:`ConfigError`."""
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
    group = _choice(command_line, "data")
    other_data = group is not None and group != trained_data_group(trained)
    if other_data:
        dropped = [o for o in trained if _key(o) == "data" or _key(o).startswith("data.")]
        trained = [o for o in trained if o not in dropped]
        if dropped:
            log.info("data=%s: the run's data overrides left out: %s", group, " ".join(dropped))
    try:
        with _hydra_compose_ready():
            legacy = [] if other_data else legacy_data_overrides(run_dir_of(ckpt))
            run_cfg = compose(config_name="train", overrides=[*trained, *legacy, *command_line])
    except ConfigCompositionException as err:
        raise config_error(
            "ckpt_path",
            str(ckpt),
            f"its run's overrides and the command line's do not compose ({_first_line(err)})",
            "evaluate on other data with data=<group> and keys of that group only (the run's "
            "data overrides are then left out); other keys must exist in the run's config",
        ) from None
    with open_dict(run_cfg):
        run_cfg.paths.output_dir = str(cfg.paths.output_dir)
    return run_cfg


def checkpoint_inputs(ckpt: dict[str, Any]) -> tuple[int | None, int | None, str]:
    """What the checkpoint's model takes and predicts: the input channels of its stem (the
    first 4-D weight of its state dict, a convolution's ``(out, in, kh, kw)``), the classes of
    its hyperparameters (``num_classes``), and that weight's name and shape for a message."""
    state = ckpt.get("state_dict") or {}
    stem = next(
        ((k, v.shape) for k, v in state.items() if isinstance(v, torch.Tensor) and v.ndim == 4),
        None,
    )
    classes = (ckpt.get("hyper_parameters") or {}).get("num_classes")
    shown = f"{stem[0]} {list(stem[1])}" if stem else "no convolution"
    channels = int(stem[1][1]) if stem else None
    return channels, (classes if isinstance(classes, int) else None), shown


def check_data_fits(ckpt: dict[str, Any], ckpt_path: Path, datamodule: Any) -> None:
    """The datamodule's ``in_channels`` and classes (``num_classes``; 0 while unknown) must be
    the checkpoint's model's (:func:`checkpoint_inputs`); checked on the constructed
    datamodule, before anything is downloaded or read, and again once its classes are known.

    Raises:
        ConfigError: one line naming both.
    """
    channels, classes, stem = checkpoint_inputs(ckpt)
    data_channels = getattr(datamodule, "in_channels", None)
    data_classes = int(datamodule.num_classes)
    if (channels is None or data_channels is None or channels == data_channels) and (
        classes is None or not data_classes or classes == data_classes
    ):
        return
    raise config_error(
        "ckpt_path",
        str(ckpt_path),
        f"its model takes {channels}-channel images and predicts {classes} classes ({stem}), "
        f"the data ({type(datamodule).__name__}) has {data_channels}-channel images and "
        f"{data_classes or 'not yet known'} classes",
        "evaluate it on data like its training data (data=<its group>), or evaluate a "
        "checkpoint trained on this data",
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
    adjustment = adjustment_option(options.get("logit_adjustment"))
    ckpt_path = Path(str(cfg.ckpt_path)) if cfg.ckpt_path else None
    ckpt = load_checkpoint(ckpt_path, bool(options.weights_only))
    assert ckpt_path is not None
    run_cfg = training_config(cfg, ckpt_path)
    validate(run_cfg)
    with open_dict(run_cfg):
        run_cfg.model.bootstrap = replicates
        run_cfg.model.bootstrap_seed = int(options.bootstrap_seed)
    L.seed_everything(run_cfg.seed, workers=True)
    check_data_fits(ckpt, ckpt_path, instantiate(run_cfg.data))  # before any download
    datamodule: Any = build_datamodule(run_cfg)
    check_data_fits(ckpt, ckpt_path, datamodule)  # its classes are known now
    if split == "val" and not sum(datamodule.val_counts):
        raise config_error(
            "eval.split",
            split,
            f"the run has no validation split (data.val_source={datamodule.val_source})",
            "use eval.split=test",
        )
    model = build_model(run_cfg, datamodule)
    evaluated_model(model)  # a clear TypeError now for a model the callbacks cannot read
    own = model.state_dict()
    for key, value in ckpt["state_dict"].items():
        if key in own and isinstance(value, torch.Tensor) and value.shape != own[key].shape:
            raise ConfigError(
                f"ckpt_path={ckpt_path}: its weights do not fit the run's model ({key} is "
                f"{list(value.shape)} in the checkpoint, {list(own[key].shape)} in the model); "
                "evaluate it with the overrides it was trained with (no model.* changes on the "
                "command line)"
            )
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
    apply_class_limit(callbacks, int(run_cfg.get("per_class_max_classes") or 100))
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
    fingerprint = datamodule.split_fingerprint(split)  # imblab-compare pairs only equal ones
    save_predictions(output_dir / FILENAME, *predictions.predictions, fingerprint=fingerprint)
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
        scores,
        split,
        names,
        train_counts,
        str(ckpt_path),
        output_dir,
        max_classes,
        bool(loggers),
        group_counts=datamodule.subset_counts,
    )
    print_summary(summary)  # the last thing imblab-eval prints
    return scores
