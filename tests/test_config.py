"""Every config group option and experiment composes, resolves and instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch import Trainer
from omegaconf import OmegaConf

from imblab.callbacks.base import MetricCallback
from imblab.config import instantiate_callbacks, validate
from imblab.errors import ConfigError
from imblab.training import build_trainer

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_config_file_starts_with_a_comment() -> None:
    files = sorted(CONF.rglob("*.yaml"))
    assert len(files) > 20
    for path in files:
        first = path.read_text().splitlines()[0]
        if first.startswith("# @package"):
            first = path.read_text().splitlines()[1]
        assert first.startswith("# "), f"{path} has no one-line comment saying what it is for"


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_compose(compose_cfg, experiment: str) -> None:
    cfg = compose_cfg(f"experiment={experiment}")
    OmegaConf.resolve(cfg)
    validate(cfg)
    assert cfg.data.profile in {"none", "exponential", "step", "explicit", "binary"}


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer_options_compose(compose_cfg, trainer: str) -> None:
    cfg = compose_cfg(f"trainer={trainer}")
    OmegaConf.resolve(cfg)
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    assert cfg.trainer.default_root_dir == cfg.paths.output_dir


@pytest.mark.parametrize(
    "group", ["logger", "callbacks", "metrics", "debug", "data", "model", "loss"]
)
def test_group_options_compose(compose_cfg, group: str) -> None:
    for option in options(group):
        if option == "default" and group in {"metrics", "callbacks"}:
            continue
        cfg = compose_cfg(f"{group}={option}")
        OmegaConf.resolve(cfg)


def test_one_monitor_feeds_checkpointing_and_early_stopping(compose_cfg) -> None:
    cfg = compose_cfg("monitor.metric=val/recall_macro", "monitor.mode=max")
    OmegaConf.resolve(cfg)
    for name in ("model_checkpoint", "early_stopping"):
        assert cfg.callbacks[name].monitor == "val/recall_macro"
        assert cfg.callbacks[name].mode == "max"


def test_default_monitor_is_macro_f1(compose_cfg) -> None:
    cfg = compose_cfg()
    assert (cfg.monitor.metric, cfg.monitor.mode) == ("val/f1_macro", "max")
    assert cfg.data.profile == "exponential" and cfg.data.imbalance_ratio >= 50


def test_metric_callbacks_instantiate_and_plugins_add_on(compose_cfg) -> None:
    default = instantiate_callbacks(compose_cfg().metrics, "metrics")
    with_mcc = instantiate_callbacks(compose_cfg("metrics=[default,mcc]").metrics, "metrics")
    assert all(isinstance(c, MetricCallback) for c in with_mcc)
    names = {type(c).__name__ for c in with_mcc} - {type(c).__name__ for c in default}
    assert names == {"MatthewsCorrCoef"}


def test_trainer_and_callbacks_instantiate(compose_cfg) -> None:
    cfg = compose_cfg("trainer=cpu")
    callbacks = instantiate_callbacks(cfg.callbacks, "callbacks")
    trainer = build_trainer(cfg, callbacks=callbacks, logger=False)
    assert isinstance(trainer, Trainer)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("monitor.mode=maximum", "monitor.mode"),
        ("monitor.metric=f1", "monitor.metric"),
        ("figures_every_n_epochs=0", "figures_every_n_epochs"),
    ],
)
def test_bad_top_level_values_name_the_key(compose_cfg, override: str, key: str) -> None:
    cfg = compose_cfg(override)
    with pytest.raises(ConfigError, match=rf"^{key}=") as err:
        validate(cfg)
    assert "\n" not in str(err.value)


def test_callback_entry_without_target_is_a_config_error(compose_cfg) -> None:
    cfg = compose_cfg("+callbacks.mine.patience=3")
    with pytest.raises(ConfigError, match=r"^callbacks\.mine: has no _target_"):
        instantiate_callbacks(cfg.callbacks, "callbacks")
