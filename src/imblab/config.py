"""Config helpers: validation of the keys everything depends on (before anything is built),
the monitor against the tags the run will log, the run dir (a Hydra callback), instantiating
callback groups, flattening."""

from __future__ import annotations

import difflib
import logging
import math
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import hydra
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback as HydraCallback
from lightning.pytorch import Callback
from omegaconf import DictConfig, OmegaConf

from imblab.errors import ConfigError, config_error

log = logging.getLogger(__name__)

MONITOR_MODES = ("min", "max")
#: the scalar tags the model itself logs (imblab.models.classifier), besides the metric callbacks
MODEL_TAGS = ("train/loss_step", "train/loss_epoch", "train/accuracy", "val/loss")
#: the values of ``zero_division`` scikit-learn accepts (and nan)
ZERO_DIVISION = (0.0, 1.0)


def validate(cfg: DictConfig) -> None:
    """Check the top-level keys that everything else depends on; raise :class:`ConfigError`."""
    mode = cfg.monitor.mode
    if mode not in MONITOR_MODES:
        raise ConfigError(f"monitor.mode={mode}: must be 'min' or 'max'; set monitor.mode=max")
    metric = cfg.monitor.metric
    if not isinstance(metric, str) or "/" not in metric:
        raise ConfigError(
            f"monitor.metric={metric}: must be a logged tag like val/f1_macro; "
            "set monitor.metric=val/f1_macro"
        )
    if not isinstance(cfg.seed, int):
        raise ConfigError(f"seed={cfg.seed}: must be an integer; set e.g. seed=42")
    every = cfg.get("figures_every_n_epochs", 1)
    if not isinstance(every, int) or every < 1:
        raise ConfigError(
            f"figures_every_n_epochs={every}: must be an integer >= 1; set figures_every_n_epochs=1"
        )
    trainer = cfg.get("trainer") or {}
    epochs = trainer.get("max_epochs")
    if epochs is not None and (not is_int(epochs) or epochs < -1):
        raise config_error(
            "trainer.max_epochs",
            epochs,
            "must be an integer >= 1 (-1: no limit)",
            "set e.g. trainer.max_epochs=30",
        )
    optimizer = (cfg.get("model") or {}).get("optimizer") or {}
    lr = optimizer.get("lr")
    if "lr" in optimizer and (not is_real(lr) or not 0 < lr < math.inf):
        raise config_error(
            "model.optimizer.lr", lr, "must be a number > 0", "set e.g. model.optimizer.lr=0.002"
        )
    for name, metric in (cfg.get("metrics") or {}).items():
        if isinstance(metric, Mapping):
            check_metric_options(f"metrics.{name}", metric)


def is_int(value: Any) -> TypeGuard[int]:
    """An integer, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> TypeGuard[int | float]:
    """An int or float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_metric_options(key: str, conf: Mapping[str, Any]) -> None:
    """The options metric callbacks share, as config keys: ``betas`` (a non-empty list of
    finite numbers > 0) and ``zero_division`` (0, 1 or nan)."""
    if "betas" in conf:
        betas = conf["betas"]
        items = list(betas) if isinstance(betas, Sequence) and not isinstance(betas, str) else None
        if not items or not all(is_real(b) and 0 < b < math.inf for b in items):
            raise config_error(
                f"{key}.betas",
                OmegaConf.to_object(betas) if items is not None else betas,
                "must be a non-empty list of numbers > 0 (F-beta weighs recall beta times as "
                "much as precision)",
                f"set e.g. {key}.betas=[0.5,1,2]",
            )
    if "zero_division" in conf:
        value = conf["zero_division"]
        number = float(value) if is_real(value) or value in ("nan", "NaN") else None
        if number is None or not (math.isnan(number) or number in ZERO_DIVISION):
            raise config_error(
                f"{key}.zero_division",
                value,
                "the value of an undefined precision, recall or F must be 0, 1 or nan "
                "(as in scikit-learn)",
                f"set {key}.zero_division=0",
            )


def check_monitor(
    metric: str,
    callbacks: Iterable[Any],
    class_names: Sequence[str],
    train_counts: Sequence[int] = (),
) -> None:
    """``monitor.metric`` must be a tag this run logs in the validation epoch: one the model
    logs (:data:`MODEL_TAGS`) or one of the metric ``callbacks``'
    ``tags("val", class_names, train_counts)``
    (the ``metrics`` group). Skipped (with a log line) when one of them cannot say which tags
    it logs (it has no ``tags`` method)."""
    tags = set(MODEL_TAGS)
    for callback in callbacks:
        tags_of = getattr(callback, "tags", None)
        if tags_of is None:
            log.info("monitor.metric not checked: %s does not list its tags", type(callback))
            return
        tags.update(tags_of("val", list(class_names), list(train_counts)))
    if metric in tags:
        return
    close = difflib.get_close_matches(metric, sorted(tags), n=1)
    hint = f"did you mean {close[0]}?" if close else f"e.g. {sorted(tags)[0]}"
    raise config_error(
        "monitor.metric",
        metric,
        "no configured metric logs this tag in validation",
        f"{hint} (every tag: docs/metrics.md, logged every epoch)",
    )


def check_writable_dir(key: str, path: str) -> None:
    """Create ``path`` (with its parents) and write a file in it, or raise the one-line
    :class:`ConfigError` naming ``key``."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        what = f"cannot create or write it ({err.strerror or type(err).__name__})"
        raise config_error(
            key, path, what, f"choose a writable directory, e.g. {key}=runs/x"
        ) from None


class RunDirCheck(HydraCallback):
    """Hydra callback: checks that the run dir (``hydra.run.dir``) or sweep dir
    (``hydra.sweep.dir``) can be created and written before Hydra creates it, so a bad one is
    the one-line error (exit code 2) instead of Hydra's traceback."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        exit_on_error("hydra.run.dir", str(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        exit_on_error("hydra.sweep.dir", str(config.hydra.sweep.dir))


def exit_on_error(key: str, path: str) -> None:
    """:func:`check_writable_dir`, a failure printed as ``error: ...`` and exit code 2."""
    try:
        check_writable_dir(key, path)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def instantiate(conf: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets a :class:`ConfigError` of the target through
    unwrapped, so the user sees its one-line message instead of Hydra's wrapper."""
    try:
        return hydra.utils.instantiate(conf, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise


def instantiate_callbacks(group: DictConfig | None, key: str) -> list[Callback]:
    """Instantiate every entry of a callback group (``callbacks``, ``metrics``); null entries
    are skipped so ``callbacks.early_stopping=null`` switches one off."""
    if not group:
        return []
    callbacks = []
    for name, conf in group.items():
        name = str(name)
        if conf is None:
            continue
        if "_target_" not in conf:
            raise ConfigError(
                f"{key}.{name}: has no _target_; give it `_target_: <Callback class>` or set "
                f"{key}.{name}=null"
            )
        callbacks.append(instantiate(conf))
    return callbacks


def flatten(cfg: Mapping[str, Any] | DictConfig, prefix: str = "") -> dict[str, Any]:
    """Flatten nested config into ``a/b/c`` keys with scalar values (lists become strings)."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    out: dict[str, Any] = {}
    for key, value in dict(container).items():  # type: ignore[arg-type]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}/"))
        elif value is None or isinstance(value, bool | int | float | str):
            out[name] = "null" if value is None else value
        else:
            out[name] = str(value)
    return out
