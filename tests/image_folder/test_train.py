"""End to end: `imblab-train data=image_folder data.root=DIR` on a generated folder with bad
files, with the default backbone and with a torchvision one, every metric callback logged."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from imblab.pipelines.training import train
from imblab.runs import event_dir

from ..conftest import FAST
from ..scrape.badfiles import write_image_tree
from .conftest import write_folder

# the MNIST-only entries of FAST are left out
OVERRIDES = [o for o in FAST if not o.startswith("data.")]


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """An imbalanced two-class folder (cat 40, dog 12 good images) with every bad-file kind."""
    root = tmp_path_factory.mktemp("scraped")
    expected = write_image_tree(root, classes=("cat", "dog"), good_per_class=(1, 1), size=24)
    write_folder(root, {"cat": 40, "dog": 12}, size=24)
    return root, expected


def tags(run_dir: Path) -> set[str]:
    found_dir = event_dir(run_dir)
    assert found_dir is not None, f"no TensorBoard events under {run_dir}"
    acc = EventAccumulator(str(found_dir), size_guidance={"images": 0})
    acc.Reload()
    found = acc.Tags()
    return set(found["scalars"]) | set(found["images"]) | set(found["tensors"])


def test_default_backbone_trains_with_every_metric(compose_cfg, tmp_path: Path, scraped) -> None:
    root, expected = scraped
    cfg = compose_cfg(
        *OVERRIDES,
        "data=image_folder",
        f"data.root={root}",
        "data.image_size=24",
        "trainer.max_epochs=2",
        "metrics=[default,mcc]",
    )
    metrics = train(cfg)
    for key in ("val/f1_macro", "val/auroc_macro", "val/binary/f1", "val/mcc", "test/f1_macro"):
        assert 0.0 <= metrics[key] <= 1.0 or key == "val/mcc", key
    found = tags(tmp_path)
    assert {"val/f1/cat", "val/f1/dog", "val/confusion_matrix", "val/roc", "val/pr/dog"} <= found
    record = json.loads((tmp_path / "metrics.json").read_text())
    data = record["data"]
    assert data["source_used"] == "image_folder" and data["class_names"] == "cat,dog"
    bad = [rel for rel, case in expected.items() if case.status != "ok"]
    assert data["rejected_files"] + data["duplicate_files"] == len(bad)
    with open(tmp_path / "rejected.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(Path(r["path"]).relative_to(root).as_posix() for r in rows) == sorted(bad)


def test_torchvision_backbone_trains_offline(
    compose_cfg, tmp_path: Path, scraped, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = scraped
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # nothing to download
    cfg = compose_cfg(
        *OVERRIDES,
        "data=image_folder",
        f"data.root={root}",
        "data.image_size=32",
        "data.cache=none",
        "data.positive_class=dog",
        "model=resnet18",
        "+trainer.limit_train_batches=2",
        "sampler=inverse",
        "loss=focal",
    )
    metrics = train(cfg)
    assert {"val/binary/f1", "test/binary/f1", "test/auroc_macro"} <= set(metrics)
    assert "val/f1/dog" in tags(tmp_path)


def test_missing_root_fails_before_training_on_the_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IMBLAB_ROOT": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "imblab.train", "data=image_folder", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: data.root=None: no image folder given; set data.root")


def test_scraped_binary_preset_on_a_generated_folder(
    compose_cfg, tmp_path: Path, scraped, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = scraped
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cfg = compose_cfg(
        *OVERRIDES,
        "experiment=scraped_binary",
        f"data.root={root}",
        "data.positive_class=dog",
        "data.image_size=32",
        "+trainer.limit_train_batches=1",
    )
    assert cfg.model.backbone.name == "resnet18" and cfg.monitor.metric == "val/binary/f1"
    metrics = train(cfg)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["monitor"]["metric"] == "val/binary/f1"
    assert record["data"]["class_names"] == "cat,dog"
    assert 0.0 <= metrics["test/binary/f1"] <= 1.0
