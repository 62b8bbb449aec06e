"""Config helpers: validation of top-level keys, instantiating callback groups, flattening."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hydra
from hydra.errors import InstantiationException
from lightning.pytorch import Callback
from omegaconf import DictConfig, OmegaConf

from imblab.errors import ConfigError

MONITOR_MODES = ("min", "max")


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
