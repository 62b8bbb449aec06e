"""Many classes, sensibly logged: above ``per_class_max_classes`` TensorBoard gets the shot
groups, the averages, the worst classes and a bounded number of PR curves, not one scalar per
class; ``metrics.json`` keeps every per-class value. A 1,000-class evaluation on synthetic
scores, and (``slow``) a 1,000-class training on a generated image folder."""

from __future__ import annotations

import io
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from sklearn import metrics as skm
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from imblab.callbacks.pr_curves import PRCurves, curve_classes
from imblab.errors import ConfigError
from imblab.metrics import evaluate
from imblab.metrics.counts import score_grid
from imblab.models.classifier import Classifier
from imblab.pipelines.training import train
from imblab.runs import event_dir
from imblab.tensorboard import class_layout

from .conftest import FAST

# -- which PR curves ------------------------------------------------------------------------------


def reference_curve_classes(
    f1: np.ndarray, support: np.ndarray, train_counts: list[int], worst_k: int, head_k: int
) -> tuple[list[int], list[int]]:
    """The definition, by sorting tuples: lowest F1 (NaN lowest) among classes with samples,
    most training samples (the split's support without counts); ties by class index."""
    present = [i for i in range(len(f1)) if support[i] > 0]
    worst = sorted(present, key=lambda i: (-np.inf if np.isnan(f1[i]) else f1[i], i))[:worst_k]
    sizes = train_counts or support.tolist()
    head = sorted(range(len(f1)), key=lambda i: (-sizes[i], i))[:head_k]
    return worst, head


@settings(max_examples=60, deadline=None)
@given(
    data=st.integers(1, 40).flatmap(
        lambda c: st.tuples(
            arrays(np.float64, c, elements=st.sampled_from([0.0, 0.25, 0.5, 1.0, np.nan])),
            arrays(np.int64, c, elements=st.integers(0, 3)),
            st.one_of(st.just([]), st.lists(st.integers(0, 5), min_size=c, max_size=c)),
        )
    ),
    worst_k=st.integers(0, 12),
    head_k=st.integers(0, 5),
)
def test_curve_classes_are_the_worst_and_the_head_classes(data, worst_k, head_k) -> None:
    f1, support, train_counts = data
    worst, head = curve_classes(f1, support, train_counts, worst_k, head_k)
    expected = reference_curve_classes(f1, support, train_counts, worst_k, head_k)
    assert (worst.tolist(), head.tolist()) == expected


def validate_with_pr_curves(
    tmp_path: Path, callback: PRCurves, train_counts: list[int]
) -> tuple[set[str], np.ndarray, np.ndarray]:
    """Validate an identity-backbone classifier on fixed logits with ``callback`` and a
    TensorBoard logger; return the PR-curve tags written, the targets and the predictions."""
    c = len(train_counts)
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, c - 1, (400,), generator=g)  # the last class never occurs
    logits = torch.randn(400, c, generator=g)
    logits[torch.arange(400), target] += 1.0
    model = Classifier(
        backbone=nn.Identity(),
        optimizer=torch.optim.SGD,
        num_classes=c,
        class_names=[f"k{i}" for i in range(c)],
        train_counts=train_counts,
    )
    logger = TensorBoardLogger(tmp_path, name="", version="")
    trainer = Trainer(
        accelerator="cpu",
        callbacks=[callback],
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.validate(
        model, DataLoader(TensorDataset(logits, target), batch_size=100), verbose=False
    )
    logger.experiment.flush()
    events = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    events.Reload()
    return set(events.Tags()["tensors"]), target.numpy(), logits.argmax(dim=1).numpy()


def test_pr_curves_above_the_limit_are_the_worst_and_head_classes(tmp_path: Path) -> None:
    train_counts = [90, 5, 60, 60, 8, 1, 30, 2, 9, 4, 3, 0]
    c = len(train_counts)
    tags, _, _ = validate_with_pr_curves(tmp_path / "few", PRCurves(), train_counts)
    assert tags == {f"val/pr/k{i}" for i in range(c)}  # up to the limit: every class

    callback = PRCurves(per_class_max_classes=c - 1, worst_k=4, head_k=3)
    tags, y, pred = validate_with_pr_curves(tmp_path / "many", callback, train_counts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f1 = skm.f1_score(y, pred, labels=range(c), average=None, zero_division=0)
    worst, head = reference_curve_classes(f1, np.bincount(y, minlength=c), train_counts, 4, 3)
    assert tags == {f"val/pr/k{i}" for i in {*worst, *head}}
    assert head == [0, 2, 3] and c - 1 not in worst  # a class without samples has no curve


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"per_class_max_classes": 0}, "metrics.pr_curves.per_class_max_classes=0: "),
        ({"worst_k": -1}, "metrics.pr_curves.worst_k=-1: "),
        ({"head_k": 1.5}, "metrics.pr_curves.head_k=1.5: "),
    ],
)
def test_bad_pr_curve_options_are_one_line_config_errors(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        PRCurves(**kwargs)
    assert str(info.value).startswith(key) and "\n" not in str(info.value)


# -- the custom-scalars layout --------------------------------------------------------------------


def matched(layout: dict, tags: list[str]) -> dict[str, list[str]]:
    """Each chart's title -> the tags its patterns match."""
    return {
        title: [t for t in tags if any(re.search(p, t) for p in patterns)]
        for charts in layout.values()
        for title, (_, patterns) in charts.items()
    }


def test_class_layout_above_the_limit_charts_groups_and_averages() -> None:
    names = [f"c{i}" for i in range(5)]
    assert class_layout(names, max_classes=5) == class_layout(names)  # at the limit: per class
    layout = class_layout(names, stages=("val", "test"), max_classes=4)
    groups = [f"{s}/{m}_{g}" for s in ("val", "test") for m in ("accuracy", "f1_macro")
              for g in ("many", "medium", "few")]  # fmt: skip
    averages = [
        f"{s}/{k}"
        for s in ("val", "test")
        for k in ("f1_macro", "balanced_accuracy", "accuracy", "auroc_macro", "ap_macro")
    ]
    per_class = [f"val/f1/{n}" for n in names] + [f"val/recall/{n}" for n in names]
    charts = matched(layout, groups + averages + per_class + ["val/f1_macro_x", "val/accuracy_x"])
    assert all(len(found) == 1 and found == [title] for title, found in charts.items())
    assert set(groups + averages) <= set(charts)
    assert not any(t in charts for t in per_class)


# -- a 1,000-class evaluation on synthetic scores -------------------------------------------------


def test_evaluate_1000_classes_matches_sklearn() -> None:
    """20,000 samples x 1,000 classes on the training callbacks' binned grid (200 thresholds):
    every per-class F1 and recall and the averages equal scikit-learn's, and the AUROC of a
    sample of classes equals scikit-learn's on the scores binned to the grid."""
    n, c = 20_000, 1_000
    rng = np.random.default_rng(0)
    target = rng.integers(0, c, n)
    logits = rng.standard_normal((n, c)).astype(np.float32)
    logits[np.arange(n), target] += 3.0
    names = [f"c{i:04d}" for i in range(c)]
    out = evaluate(
        logits, target, input="logits", thresholds=200, class_names=names, one_vs_rest=True
    )
    pred = logits.argmax(axis=1)
    f1 = skm.f1_score(target, pred, labels=range(c), average=None, zero_division=0)
    recall = skm.recall_score(target, pred, labels=range(c), average=None, zero_division=0)
    np.testing.assert_allclose([out[f"f1/{n}"] for n in names], f1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose([out[f"recall/{n}"] for n in names], recall, atol=1e-12)
    assert out["f1_macro"] == pytest.approx(f1.mean(), abs=1e-12)
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(target, pred), abs=1e-12)
    assert out["balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(target, pred), abs=1e-12
    )
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    grid = score_grid(200).numpy()
    for k in range(0, c, 97):
        bins = np.searchsorted(grid, probs[:, k], side="right")  # the bin each score falls in
        expected = skm.roc_auc_score(target == k, bins)
        assert out[f"auroc/{names[k]}"] == pytest.approx(expected, abs=1e-9), names[k]


# -- a short 1,000-class training on synthetic images ---------------------------------------------

C = 1_000
SIZE = 16


def class_sizes() -> list[int]:
    """Images per class folder: 12 for the first 50 classes, 6 for the next 200, 4 for the rest
    (about 8 / 4 / 2 training images: many / medium / few with many_above=6, few_below=3)."""
    return [12] * 50 + [6] * 200 + [4] * (C - 250)


def write_many_classes(root: Path, sizes: list[int]) -> list[str]:
    """``root/c0000 .. c0999/`` with ``sizes[i]`` tiny PNGs each: class ``i``'s own colour (a
    10 x 10 x 10 RGB grid) plus noise, so neighbouring classes are alike but learnable."""
    rng = np.random.default_rng(0)
    names = [f"c{i:04d}" for i in range(len(sizes))]
    levels = np.linspace(30, 225, 10)
    for i, (name, n) in enumerate(zip(names, sizes, strict=True)):
        colour = np.array([levels[i // 100], levels[i // 10 % 10], levels[i % 10]])
        (root / name).mkdir(parents=True)
        for j in range(n):
            arr = colour + rng.integers(-12, 13, (SIZE, SIZE, 3))
            buf = io.BytesIO()
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="PNG")
            (root / name / f"img_{j:02d}.png").write_bytes(buf.getvalue())
    return names


@pytest.mark.slow
def test_1000_class_training_logs_groups_worst_classes_and_few_curves(
    compose_cfg, tmp_path: Path
) -> None:
    root = tmp_path / "folder"
    names = write_many_classes(root, class_sizes())
    run = tmp_path / "run"
    cfg = compose_cfg(
        *(o for o in FAST if not o.startswith("data.")),
        "data=image_folder",
        f"data.root={root}",
        f"data.image_size={SIZE}",
        "data.batch_size=64",
        "metrics.scalars.many_above=6",
        "metrics.scalars.few_below=3",
        "trainer.max_epochs=1",
        run_dir=run,
    )
    metrics = train(cfg)
    assert 0.0 <= metrics["val/f1_macro"] <= 1.0 and 0.0 <= metrics["test/f1_macro"] <= 1.0

    record = json.loads((run / "metrics.json").read_text())["metrics"]
    for stage in ("val", "test"):
        for key in ("f1", "recall", "precision", "support", "auroc"):
            assert all(f"{stage}/{key}/{n}" in record for n in names), (stage, key)
        assert all(record[f"{stage}/support/{n}"] >= 1 for n in names)  # a file in each split

    found = event_dir(run)
    assert found is not None
    events = EventAccumulator(str(found), size_guidance={"tensors": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    per_class = [t for t in tags["scalars"] if re.search(r"/c\d{4}$", t)]
    assert per_class == []
    for stage in ("val", "test"):
        for key in ("accuracy", "f1_macro"):
            assert {f"{stage}/{key}_{g}" for g in ("many", "medium", "few")} <= set(tags["scalars"])
        assert f"{stage}/worst_classes/text_summary" in tags["tensors"]
        curves = [t for t in tags["tensors"] if t.startswith(f"{stage}/pr/")]
        assert 0 < len(curves) <= 10 + 3  # worst_k + head_k of conf/metrics/pr_curves.yaml
        assert sum(int(t[-4:]) < 50 for t in curves) >= 3  # the head classes: 12 files each
        assert {f"{stage}/confusion_matrix", f"{stage}/per_class"} <= set(tags["images"])
    (config,) = events.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0])
    charts = [chart.title for category in layout.category for chart in category.chart]
    assert "val/f1_macro_few" in charts and not any(re.search(r"/c\d{4}$", t) for t in charts)
