"""``test_logit_adjustment``: a training run that tests its best checkpoint adjusted trains the
same model as the run without it, tunes the tau of the grid with the best balanced accuracy on
the validation epoch that selected the checkpoint (as ``imblab-eval eval.logit_adjustment=auto``
does: the DDP test compares the two), and its test scores and ``predictions.npz`` are those of
``argmax(log p - tau log prior)`` computed in NumPy from the unadjusted run's predictions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score

from imblab.callbacks.tau_tuning import TauTuning
from imblab.errors import ConfigError
from imblab.pipelines.training import adjust_test, train
from tests.conftest import Compose
from tests.eval.test_eval_cli import TRAIN, cli

GRID = [0.25 * i for i in range(9)]
EPOCHS = ["trainer.max_epochs=2", "seed=3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The plain run, the adjusted run (same seed), and imblab-eval of the plain run's best
    checkpoint on validation (imblab-eval's adjusted test is compared in the DDP test)."""
    root = tmp_path_factory.mktemp("la")
    out: dict[str, Path] = {}
    for name, extra in (("plain", []), ("adjusted", ["test_logit_adjustment=auto"])):
        run = root / name
        args = [*TRAIN, *EPOCHS, *extra, f"paths.data_dir={root}/data", f"hydra.run.dir={run}"]
        proc = cli("imblab.train", *args, cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[name] = run
    ckpt = next((out["plain"] / "checkpoints").glob("epoch_*.ckpt"))
    for name, extra in (("eval_val", ["eval.split=val"]),):
        run = root / name
        args = [f"ckpt_path={ckpt}", *extra, "eval.bootstrap=0", "eval.figures=false"]
        proc = cli("imblab.eval", *args, f"hydra.run.dir={run}", cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[name] = run
    return out


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _predictions(run: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(run / "predictions.npz") as data:
        return data["probs"].astype(np.float64), data["targets"]


def _log_prior(run: Path) -> np.ndarray:
    counts = np.array(_metrics(run)["data"]["class_counts"]["train"], dtype=np.float64)
    return np.log(counts / counts.sum())


def test_the_adjusted_run_trains_the_same_model(runs: dict[str, Path]) -> None:
    plain, adjusted = _metrics(runs["plain"]), _metrics(runs["adjusted"])
    assert Path(plain["best_checkpoint"]).name == Path(adjusted["best_checkpoint"]).name
    for key, value in plain["metrics"].items():
        if key.startswith(("val/", "train/")):
            assert adjusted["metrics"][key] == value, key


def test_tau_is_tuned_on_the_validation_epoch_that_selected_the_checkpoint(
    runs: dict[str, Path],
) -> None:
    """The tau and the validation balanced accuracy the run logged are the grid maximum of
    NumPy's balanced accuracy on the best checkpoint's validation predictions."""
    probs, y_val = _predictions(runs["eval_val"])
    log_p = np.log(probs)
    prior = _log_prior(runs["plain"])
    scores = [balanced_accuracy_score(y_val, (log_p - t * prior).argmax(axis=1)) for t in GRID]
    tau = _metrics(runs["adjusted"])["metrics"]["test/logit_adjustment_tau"]
    assert tau == GRID[int(np.argmax(scores))]
    stderr = (runs["adjusted"] / "train.log").read_text()
    found = re.search(
        r"test_logit_adjustment: tau=([\d.]+) \(validation balanced accuracy ([\d.]+)", stderr
    )
    assert found is not None, stderr[-2000:]
    assert float(found.group(1)) == tau
    assert float(found.group(2)) == pytest.approx(max(scores), abs=5e-5)


def test_test_scores_and_predictions_are_the_adjusted_model_s(runs: dict[str, Path]) -> None:
    probs, y = _predictions(runs["plain"])
    log_p = np.log(probs)
    tau = _metrics(runs["adjusted"])["metrics"]["test/logit_adjustment_tau"]
    expected = (log_p - tau * _log_prior(runs["plain"])).argmax(axis=1)
    probs, targets = _predictions(runs["adjusted"])
    np.testing.assert_array_equal(targets, y)
    np.testing.assert_array_equal(probs.argmax(axis=1), expected)
    metrics = _metrics(runs["adjusted"])["metrics"]
    labels = list(range(probs.shape[1]))
    f1 = f1_score(y, expected, labels=labels, average="macro", zero_division=0)
    assert metrics["test/f1_macro"] == pytest.approx(f1, abs=1e-12)
    assert metrics["test/balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(y, expected), abs=1e-12
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["test_logit_adjustment=fast"], r"^test_logit_adjustment='fast': not null, auto"),
        (
            ["test_logit_adjustment=auto", "test=false"],
            r"^test_logit_adjustment='auto': .*test=true",
        ),
        (
            ["test_logit_adjustment=auto", "data.val_source=none"],
            r"^test_logit_adjustment='auto': the run has no validation split .*=1\.0$",
        ),
        (
            ["test_logit_adjustment=1.0", "experiment=mnist_binary", "metrics=[default,threshold]"],
            r"^test_logit_adjustment=1\.0: a tuned decision threshold .*metrics\.threshold",
        ),
    ],
)
def test_bad_settings_fail_before_training(
    compose_cfg: Compose, overrides: list[str], message: str
) -> None:
    cfg = compose_cfg(*TRAIN, *overrides)
    with pytest.raises(ConfigError, match=message) as err:
        train(cfg)
    assert "\n" not in str(err.value)
    assert not list(Path(cfg.paths.output_dir).glob("checkpoints/*.ckpt"))


def test_auto_reads_the_selected_checkpoint_s_epoch_not_the_last(tmp_path: Path) -> None:
    """Two validation epochs whose best taus differ (0.5 at step 10, 1.5 at step 20): the tau is
    the one of the step the checkpoint was saved at."""
    prior = torch.log(torch.tensor([0.9, 0.1], dtype=torch.float64))
    tuning = TauTuning(prior, keep_history=True)
    for step, good in ((10, 2), (20, 6)):  # grid index 2 = 0.5, 6 = 1.5
        confmats = torch.zeros(9, 2, 2, dtype=torch.int64)
        confmats[:, 0, 1] = confmats[:, 1, 0] = 5  # balanced accuracy 0.5 ...
        confmats[good] = torch.tensor([[10, 0], [0, 10]])  # ... but 1.0 at the good tau
        tuning.history[step] = confmats
    ckpt = tmp_path / "epoch_000.ckpt"
    torch.save({"global_step": 10}, ckpt)
    model = torch.nn.Linear(2, 2)

    class Trainer:
        global_step = 20
        is_global_zero = True

    tau = adjust_test(model, "auto", prior, tuning, str(ckpt), Trainer())
    assert tau == 0.5
    x = torch.randn(3, 2)
    expected = torch.nn.functional.linear(x, model.weight, model.bias) - 0.5 * prior.float()
    torch.testing.assert_close(model(x), expected)
    assert adjust_test(torch.nn.Linear(2, 2), "auto", prior, tuning, "", Trainer()) == 1.5


def test_the_kept_history_survives_a_checkpoint() -> None:
    """A resumed run tunes on the epochs before its interruption too."""
    tuning = TauTuning(torch.zeros(3), keep_history=True)
    tuning.history = {10: torch.arange(81).reshape(9, 3, 3), 20: torch.ones(9, 3, 3)}
    restored = TauTuning(torch.zeros(3), keep_history=True)
    restored.load_state_dict(tuning.state_dict())
    assert restored.history.keys() == {10, 20}
    assert torch.equal(restored.at_step(10), tuning.history[10])
    assert TauTuning(torch.zeros(3)).state_dict() == {}


@pytest.mark.slow
def test_ddp_run_tunes_and_tests_as_one_process_evaluates_it(tmp_path: Path) -> None:
    """Three gloo processes (validation 1,000 and test 241 images: uneven shares): the tau and
    the adjusted test of the DDP run equal imblab-eval's in one process on its checkpoint."""
    run = tmp_path / "ddp"
    ddp = ["trainer=ddp", "trainer.devices=3", "test_logit_adjustment=auto"]
    args = [*TRAIN, *EPOCHS, *ddp, f"paths.data_dir={tmp_path}/data", f"hydra.run.dir={run}"]
    proc = cli("imblab.train", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = _metrics(run)
    out = tmp_path / "eval"
    evaluation = [
        f"ckpt_path={record['best_checkpoint']}",
        "eval.logit_adjustment=auto",
        "eval.bootstrap=0",
        "eval.figures=false",
        f"hydra.run.dir={out}",
    ]
    proc = cli("imblab.eval", *evaluation, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert record["metrics"]["test/logit_adjustment_tau"] == report["logit_adjustment_tau"]
    for key in ("f1_macro", "balanced_accuracy", "accuracy", "accuracy_few"):
        assert record["metrics"][f"test/{key}"] == pytest.approx(report[key], abs=1e-12), key
    probs, targets = _predictions(run)
    eval_probs, eval_targets = _predictions(out)
    np.testing.assert_array_equal(targets, eval_targets)
    np.testing.assert_allclose(probs, eval_probs, atol=1e-6)
