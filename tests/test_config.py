"""Every config group option and experiment composes, resolves and instantiates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lightning.pytorch import Trainer
from omegaconf import OmegaConf

from imblab.callbacks.base import MetricCallback
from imblab.config import check_monitor, check_writable_dir, instantiate_callbacks, validate
from imblab.errors import ConfigError
from imblab.pipelines.training import build_trainer

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
    assert (cfg.monitor.metric, cfg.monitor.mode) == ("val/f1_macro", "auto")
    validate(cfg)  # resolves monitor.mode: auto
    assert cfg.monitor.mode == "max"
    assert cfg.data.profile == "exponential" and cfg.data.imbalance_ratio >= 50


def test_metric_callbacks_instantiate_and_plugins_add_on(compose_cfg) -> None:
    default = instantiate_callbacks(compose_cfg().metrics, "metrics")
    with_mcc = instantiate_callbacks(compose_cfg("metrics=[default,mcc]").metrics, "metrics")
    assert all(isinstance(c, MetricCallback) for c in with_mcc)
    names = {type(c).__name__ for c in with_mcc} - {type(c).__name__ for c in default}
    assert names == {"MatthewsCorrCoef"}


def test_trainer_and_callbacks_instantiate(compose_cfg) -> None:
    cfg = compose_cfg("trainer=cpu")
    validate(cfg)  # monitor.mode: auto resolved before any callback is built
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
    validate(cfg)
    with pytest.raises(ConfigError, match=r"^callbacks\.mine: has no _target_"):
        instantiate_callbacks(cfg.callbacks, "callbacks")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.max_epochs=abc", "trainer.max_epochs"),
        ("trainer.max_epochs=-2", "trainer.max_epochs"),
        ("model.optimizer.lr=fast", "model.optimizer.lr"),
        ("model.optimizer.lr=-1", "model.optimizer.lr"),
        ("model.optimizer.lr=0", "model.optimizer.lr"),
        ("metrics.scalars.betas=[-1,1]", "metrics.scalars.betas"),
        ("metrics.scalars.betas=[]", "metrics.scalars.betas"),
        ("metrics.scalars.betas=2", "metrics.scalars.betas"),
        ("metrics.scalars.zero_division=0.5", "metrics.scalars.zero_division"),
        ("metrics.binary.zero_division=yes", "metrics.binary.zero_division"),
    ],
)
def test_bad_trainer_optimizer_and_metric_values_fail_before_training(
    compose_cfg, override: str, key: str
) -> None:
    """Values that failed only after epoch 1 (or as tracebacks) fail in ``validate``, naming
    the config key (not the function argument)."""
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=") as err:
        validate(compose_cfg(override))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "override", ["metrics.scalars.zero_division=nan", "metrics.scalars.zero_division=1"]
)
def test_metric_values_scikit_learn_accepts_pass(compose_cfg, override: str) -> None:
    validate(compose_cfg(override))


def test_monitor_must_be_a_tag_the_configured_metrics_log(compose_cfg) -> None:
    cfg = compose_cfg()
    callbacks = instantiate_callbacks(cfg.metrics, "metrics")
    names = [str(c) for c in range(10)]
    for tag in ("val/f1_macro", "val/loss", "val/recall/3", "val/auroc_macro"):
        check_monitor(tag, callbacks, names)
    with pytest.raises(ConfigError, match=r"^monitor\.metric='val/f1_macr': .*val/f1_macro\?"):
        check_monitor("val/f1_macr", callbacks, names)
    with pytest.raises(ConfigError, match=r"^monitor\.metric='val/recall/cat'"):
        check_monitor("val/recall/cat", callbacks, names)  # not a class of this run
    with pytest.raises(ConfigError, match=r"^monitor\.metric='val/binary/f1'"):
        check_monitor("val/binary/f1", callbacks, names)  # two-class tasks only
    check_monitor("val/binary/f1", callbacks, ["a", "b"])
    # the shot groups the training counts fill (many > 100, few < 20), and only those
    counts = [400, 240, 140, 90, 50, 30, 18, 11, 6, 4]
    for tag in ("val/accuracy_many", "val/f1_macro_medium", "val/accuracy_few"):
        check_monitor(tag, callbacks, names, counts)
    with pytest.raises(ConfigError, match=r"^monitor\.metric='val/accuracy_few'"):
        check_monitor("val/accuracy_few", callbacks, names, [500] * 10)  # no few-shot class
    with pytest.raises(ConfigError, match=r"^monitor\.metric='val/accuracy_many'"):
        check_monitor("val/accuracy_many", callbacks, names)  # training counts unknown


def test_run_dir_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"^hydra\.run\.dir='.*': cannot create or write it"):
        check_writable_dir("hydra.run.dir", str(blocker / "run"))
    check_writable_dir("hydra.run.dir", str(tmp_path / "new" / "run"))
    assert (tmp_path / "new" / "run").is_dir()


@pytest.mark.parametrize(("drw_epoch", "warned"), [(50, True), (0, False)])
def test_a_drw_epoch_past_the_last_epoch_warns(
    compose_cfg, caplog: pytest.LogCaptureFixture, drw_epoch: int, warned: bool
) -> None:
    """`loss=ldam loss.drw_epoch=50 trainer.max_epochs=1`: re-weighting never starts; say so."""
    from imblab.pipelines.training import build_datamodule, build_model

    from .conftest import FAST

    cfg = compose_cfg(*FAST, "loss=ldam", f"loss.drw_epoch={drw_epoch}")
    with caplog.at_level("WARNING", logger="imblab.pipelines.training"):
        build_model(cfg, build_datamodule(cfg))
    message = f"loss.drw_epoch={drw_epoch} is past the last epoch: no re-weighting"
    assert (message in caplog.text) == warned
