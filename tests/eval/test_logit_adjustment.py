"""Post-hoc logit adjustment: the streaming per-tau confusion matrices and the tau search against
NumPy/scikit-learn, and the checks of ``eval.logit_adjustment`` and of the class counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import balanced_accuracy_score, confusion_matrix

from imblab.errors import ConfigError
from imblab.metrics.logit_adjustment import (
    TAU_GRID,
    AdjustedConfusion,
    adjust,
    adjustment_option,
    best_tau,
    log_prior,
)


def _data(seed: int, n: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 logits of a classifier biased towards the head classes, targets, train counts."""
    rng = np.random.default_rng(seed)
    counts = np.maximum(1, (1000 * 0.5 ** np.arange(c)).astype(int))
    y = rng.integers(0, c, size=n)
    logits = rng.normal(size=(n, c)) + np.log(counts / counts.sum())  # the prior's bias
    logits[np.arange(n), y] += rng.uniform(0.0, 3.0, size=n)
    return logits.astype(np.float32), y, counts


def _numpy_predictions(logits: np.ndarray, counts: np.ndarray, tau: float) -> np.ndarray:
    """argmax of logits - tau * log(prior), the prior n_c / sum(n), in NumPy."""
    shift = (tau * np.log(counts / counts.sum())).astype(logits.dtype)
    return (logits - shift).argmax(axis=1)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 400), c=st.integers(2, 8))
def test_adjusted_confusion_equals_numpy_for_every_tau(seed: int, n: int, c: int) -> None:
    logits, y, counts = _data(seed, n, c)
    state = AdjustedConfusion(log_prior(counts.tolist()))
    for start in range(0, n, 37):  # batches
        state.update(torch.from_numpy(logits[start : start + 37]), torch.from_numpy(y[start:][:37]))
    confmats = state.compute()
    assert confmats.shape == (len(TAU_GRID), c, c)
    for g, tau in enumerate(TAU_GRID):
        pred = _numpy_predictions(logits, counts, tau)
        expected = confusion_matrix(y, pred, labels=range(c))
        assert np.array_equal(confmats[g].numpy(), expected), tau
        adjusted = adjust(torch.from_numpy(logits), log_prior(counts.tolist()), tau)
        assert np.array_equal(adjusted.argmax(dim=1).numpy(), pred)


def test_auto_picks_the_grid_tau_with_the_best_balanced_accuracy() -> None:
    logits, y, counts = _data(1, 2000, 6)
    state = AdjustedConfusion(log_prior(counts.tolist()))
    state.update(torch.from_numpy(logits), torch.from_numpy(y))
    tau, score = best_tau(state.compute(), TAU_GRID)
    scores = [balanced_accuracy_score(y, _numpy_predictions(logits, counts, t)) for t in TAU_GRID]
    assert tau == TAU_GRID[int(np.argmax(scores))] and tau > 0  # the head bias is undone
    assert score == pytest.approx(max(scores), abs=1e-12)


def test_ties_take_the_smallest_tau_and_targets_out_of_range_are_left_out() -> None:
    state = AdjustedConfusion(log_prior([3, 1]))
    # one sample of each class, far from any decision boundary: every tau is as good
    state.update(torch.tensor([[9.0, -9.0], [-9.0, 9.0], [0.0, 0.0]]), torch.tensor([0, 1, -100]))
    confmats = state.compute()
    assert int(confmats.sum()) == 2 * len(TAU_GRID)
    assert best_tau(confmats, TAU_GRID) == (0.0, 1.0)


@pytest.mark.parametrize("counts", [[5, 0, 3], []])
def test_classes_without_training_counts_are_a_one_line_error(counts: list[int]) -> None:
    with pytest.raises(ConfigError, match=r"^eval\.logit_adjustment: .*=null"):
        log_prior(counts)


@pytest.mark.parametrize("value", ["fast", -1.0, float("inf"), True, [1.0]])
def test_bad_option_is_a_one_line_config_error(value: object) -> None:
    with pytest.raises(ConfigError) as err:
        adjustment_option(value)
    message = str(err.value)
    assert message.startswith("eval.logit_adjustment=") and "\n" not in message
    assert "use null (off), auto (tau tuned on validation) or a tau" in message


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("auto", "auto"), (1, 1.0)])
def test_good_options(value: object, expected: object) -> None:
    assert adjustment_option(value) == expected
