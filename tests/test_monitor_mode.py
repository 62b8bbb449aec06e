"""Directions and ``monitor.mode: auto``: imblab's table of its own tags, every built-in metric's
declared directions, the mode resolved (built-in tags, a plugin's, errors) before anything reads
it, and the Hydra callback that resolves it before the Optuna sweeper is built and in a sweep
job's saved config."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from imblab.callbacks.base import MetricCallback
from imblab.callbacks.stateful import StatefulMetric
from imblab.config import (
    ResolveMonitorMode,
    instantiate_callbacks,
    validate,
)
from imblab.errors import ConfigError
from imblab.metrics.directions import UNKNOWN, builtin_direction, tag_key

ALL_METRICS = "metrics=[default,mcc,calibration,topk,bootstrap,threshold]"


@pytest.mark.parametrize(
    ("key", "better"),
    [
        ("f1_macro", True),
        ("f0.5_weighted", True),
        ("precision_micro", True),
        ("recall/cat", True),
        ("f2/cat_lo", True),
        ("balanced_accuracy", True),
        ("accuracy_few", True),
        ("specificity/3", True),
        ("auroc_weighted", True),
        ("ap/3", True),
        ("binary_tuned/f1", True),
        ("mcc", True),
        ("top5_accuracy", True),
        ("f1_macro_hi", True),
        ("loss", False),
        ("loss_step", False),
        ("ece", False),
        ("classwise_ece", False),
        ("support/3", None),
        ("auroc_num_defined", None),
        ("binary/threshold", None),
        ("brier", UNKNOWN),
        ("brier_lo", UNKNOWN),
        ("ece_hi", False),
    ],
)
def test_the_table_of_imblabs_own_keys(key: str, better: object) -> None:
    assert builtin_direction(key) is better


@pytest.mark.parametrize("names", [["neg", "pos"], [str(c) for c in range(10)]])
def test_every_builtin_tag_has_a_known_direction(compose_cfg, names: list[str]) -> None:
    """Every tag a shipped metric callback logs is in the table (True, False or None), and its
    ``directions`` give exactly the table's True/False ones."""
    callbacks = instantiate_callbacks(compose_cfg(ALL_METRICS).metrics, "metrics")
    counts = [500, 300, 120, 80, 50, 30, 18, 11, 6, 4][: len(names)]
    for callback in callbacks:
        assert isinstance(callback, MetricCallback | StatefulMetric)
        for stage in ("val", "test"):
            tags = callback.tags(stage, names, counts)
            table = {t: builtin_direction(tag_key(t)) for t in tags}
            assert UNKNOWN not in table.values(), type(callback).__name__
            declared = callback.directions(stage, names)
            assert {t: b for t, b in table.items() if b is not None} == {
                t: b for t, b in declared.items() if t in table
            }


def resolved(cfg: DictConfig) -> str:
    validate(cfg)
    return str(cfg.monitor.mode)


@pytest.mark.parametrize(
    ("overrides", "mode"),
    [
        ([], "max"),
        (["monitor.metric=val/loss"], "min"),
        (["monitor.metric=train/loss_epoch"], "min"),
        (["monitor.metric=val/recall/3"], "max"),
        (["metrics=[default,calibration]", "monitor.metric=val/ece"], "min"),
        (["monitor.metric=val/f1_macro", "monitor.mode=min"], "min"),  # set: kept
        (["monitor.metric=val/loss", "monitor.mode=max"], "max"),
    ],
)
def test_auto_resolves_from_the_table(compose_cfg, overrides: list[str], mode: str) -> None:
    cfg = compose_cfg(*overrides)
    assert resolved(cfg) == mode
    OmegaConf.resolve(cfg)  # what the callbacks read
    assert cfg.callbacks.model_checkpoint.mode == mode and cfg.callbacks.early_stopping.mode == mode


PLUGIN = """
from imblab.callbacks.stateful import StatefulMetric


class Brier(StatefulMetric):
    name = "brier"
    higher_is_better = {"brier": False, "n": None}

    def scalar_names(self, class_names):
        return ["brier", "n", *(f"brier/{c}" for c in class_names)]
"""


def test_auto_resolves_from_a_configured_plugin(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "imblab_auto_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = "+metrics.brier._target_=imblab_auto_plugin.Brier"
    assert resolved(compose_cfg(plugin, "monitor.metric=val/brier")) == "min"
    assert resolved(compose_cfg(plugin, "monitor.metric=val/brier/7")) == "min"  # per class
    with pytest.raises(ConfigError, match=r"^monitor\.metric='val/n': no configured metric d"):
        resolved(compose_cfg(plugin, "monitor.metric=val/n"))  # declared without direction


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["monitor.metric=val/support/3"],
            r"^monitor\.mode='auto': val/support/3 has no better direction \(a count or "
            r"threshold\); set monitor\.mode=max \(higher is better\) or monitor\.mode=min$",
        ),
        (
            ["monitor.metric=val/nothing"],
            r"^monitor\.metric='val/nothing': no configured metric declares which way is better "
            r"for this tag \(monitor\.mode=auto needs it\); \(every tag",
        ),
        (
            ["monitor.metric=val/f1_macr"],
            r"^monitor\.metric='val/f1_macr': .*; did you mean val/f1_macro\? ",
        ),
        (["monitor.mode=maximum"], r"^monitor\.mode='maximum': must be auto, max or min"),
    ],
)
def test_what_auto_cannot_resolve_is_one_line(
    compose_cfg, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        validate(compose_cfg(*overrides))
    assert "\n" not in str(err.value)


@pytest.fixture
def hydra_cfg():
    """Compose ``train.yaml`` with its ``hydra`` node, as Hydra hands it to its callbacks."""

    def _compose(*overrides: str) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="imblab.conf", version_base="1.3"):
            return compose("train", overrides=list(overrides), return_hydra_config=True)

    yield _compose
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(("metric", "direction"), [("val/f1_macro", "max"), ("val/loss", "min")])
def test_the_optuna_search_gets_the_resolved_direction(
    hydra_cfg, metric: str, direction: str
) -> None:
    """``hparams_search=optuna_f1`` composes and its ``direction: ${monitor.mode}imize`` reads
    the mode the Hydra callback resolved when the multirun starts (before the sweeper is
    built)."""
    cfg = hydra_cfg("hparams_search=optuna_f1", f"monitor.metric={metric}")
    # first: the run-dir check compares a rerun's config with the saved (resolved) one
    callbacks = list(cfg.hydra.callbacks)
    assert callbacks.index("imblab_monitor_mode") < callbacks.index("imblab_run_dir")
    assert cfg.monitor.mode == "auto"
    ResolveMonitorMode().on_multirun_start(cfg)
    assert cfg.hydra.sweeper.direction == f"{direction}imize"


def test_a_failed_resolution_in_hydra_is_exit_code_2(hydra_cfg, capsys) -> None:
    cfg = hydra_cfg("monitor.metric=val/support/3")
    with pytest.raises(SystemExit) as exit_:
        ResolveMonitorMode().on_run_start(cfg)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("error: monitor.mode='auto': val/support/3")


def test_a_sweep_jobs_saved_config_gets_the_resolved_mode(hydra_cfg, tmp_path: Path) -> None:
    """A sweep job's config is composed afresh (``auto`` again) and saved before the job
    starts; the callback rewrites the saved ``monitor.mode``."""
    cfg = hydra_cfg("monitor.metric=val/loss")
    cfg.hydra.runtime.output_dir = str(tmp_path)
    saved = tmp_path / str(cfg.hydra.output_subdir) / "config.yaml"
    saved.parent.mkdir()
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.save(task, saved)
    ResolveMonitorMode().on_job_start(cfg)
    assert OmegaConf.load(saved).monitor.mode == "min"
