"""CountState: the grid, binned == exact counts, streaming, ignore_index, bad input, devices."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from imblab.errors import ConfigError
from imblab.metrics import Counts, CountState
from imblab.metrics.counts import (
    LOGIT_RANGE,
    MAX_SAMPLES,
    _upper_bounds,
    grid_bins,
    score_grid,
)
from imblab.metrics.functional import auroc, average_precision

from .conftest import make_predictions

# binary thresholds at the edges: below, at and above the logit range, and t_0 itself
EDGE_THRESHOLDS = (0.0, 1e-38, 1e-30, 1e-9, 2.1e-9, 0.3, 0.5, 0.7, 1 - 2e-6, 1 - 1e-7, 1.0)


def stream(state: CountState, preds: torch.Tensor, target: torch.Tensor, batch: int) -> Counts:
    for start in range(0, max(len(target), 1), batch):  # an empty batch for no data
        state.update(preds[start : start + batch], target[start : start + batch])
    return state.compute()


def expected_curve_counts(scores: torch.Tensor, target: torch.Tensor, thresholds: torch.Tensor):
    """(C, T) one-vs-rest TP and FP of ``s >= t`` with t cast to the score dtype, by brute force."""
    positive = scores[:, :, None] >= thresholds.to(scores.dtype)
    y = (target[:, None] == torch.arange(scores.shape[1]))[:, :, None]
    return (positive & y).sum(dim=0), (positive & ~y).sum(dim=0)


def binned_curve_counts(counts: Counts) -> tuple[torch.Tensor, torch.Tensor]:
    assert counts.hist is not None
    reverse_cumsum = lambda x: x.flip(-1).cumsum(-1).flip(-1)  # noqa: E731
    return reverse_cumsum(counts.hist[..., 1]), reverse_cumsum(counts.hist[..., 0])


def expected_confmat(pred: torch.Tensor, target: torch.Tensor, c: int) -> torch.Tensor:
    m = torch.zeros(c, c, dtype=torch.int64)
    for t, p in zip(target.tolist(), pred.tolist(), strict=True):
        m[t, p] += 1
    return m


# ---- the threshold grid -------------------------------------------------------------------


@pytest.mark.parametrize("binary_threshold", [0.5, 0.0, 1e-6, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("t", [2, 3, 200, 1000])
def test_grid_is_strictly_increasing_from_zero_with_binary_threshold(t, binary_threshold):
    grid = score_grid(t, binary_threshold)
    assert grid.dtype == torch.float64 and grid.shape == (t,)
    assert grid[0] == 0.0
    assert (grid[1:] > grid[:-1]).all()
    g32 = grid.float()
    assert (g32[1:] > g32[:-1]).all()
    assert (grid == binary_threshold).sum() == 1


def test_grid_is_uniform_in_logit_space_but_for_the_binary_threshold():
    grid = score_grid(200)
    logits = torch.logit(grid[1:])
    replaced = (grid[1:] == 0.5).nonzero().item()
    expected = torch.linspace(*LOGIT_RANGE, 199, dtype=torch.float64)
    keep = torch.arange(199) != replaced
    torch.testing.assert_close(logits[keep], expected[keep], rtol=0, atol=1e-9)
    assert abs(expected[replaced]) <= (expected[1] - expected[0]) / 2  # the nearest point


def test_state_carries_the_grid_as_float64_buffer():
    state = CountState(3, thresholds=50, binary_threshold=0.3)
    assert torch.equal(state.thresholds, score_grid(50, 0.3))
    assert "thresholds" in dict(state.named_buffers())
    # Lightning's bf16-true precision casts the whole module: the grid must survive
    state = state.to(torch.bfloat16)
    assert torch.equal(state.thresholds, score_grid(50, 0.3))
    state.update(torch.tensor([[0.2, 0.3, 0.5]]), torch.tensor([1]))
    assert state.compute().hist[1, (state.thresholds == 0.3).nonzero().item(), 1] == 1


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"thresholds": 1}, "thresholds"),
        ({"thresholds": 2.5}, "thresholds"),
        ({"thresholds": 10**6}, "thresholds"),
        ({"input": "softmax"}, "input"),
        ({"binary_threshold": 1.5}, "binary_threshold"),
        ({"binary_threshold": float("nan")}, "binary_threshold"),
        ({"binary_threshold": 1e-50}, "binary_threshold"),
        ({"ignore_index": "x"}, "ignore_index"),
    ],
)
def test_bad_constructor_arguments_raise_config_error(kwargs, key):
    args = {"num_classes": 3, **kwargs}
    with pytest.raises(ConfigError, match=rf"^{key}=.+: .+; .+") as err:
        CountState(**args)
    assert "\n" not in str(err.value)


# ---- binned counts are exact counts of s >= t ---------------------------------------------


def scores_on_and_around_the_grid(rng: np.random.Generator, n: int, c: int, grid: torch.Tensor):
    """float32 scores, each exactly a (float32) grid point, one ulp below or above it, or random."""
    g32 = grid.float()
    at = g32[torch.from_numpy(rng.integers(0, len(grid), size=(n, c)))]
    below = torch.nextafter(at, torch.zeros_like(at)).clamp(min=0)
    above = torch.nextafter(at, torch.ones_like(at))
    pick = torch.from_numpy(rng.integers(0, 4, size=(n, c)))
    random = torch.from_numpy(rng.random((n, c))).float()
    return torch.stack([at, below, above, random])[pick, torch.arange(n)[:, None], torch.arange(c)]


@settings(max_examples=60, deadline=None)
@given(
    c=st.integers(1, 6),
    n=st.integers(0, 200),
    t=st.integers(2, 60),
    binary_threshold=st.one_of(st.sampled_from(EDGE_THRESHOLDS), st.floats(1e-38, 1.0)),
    seed=st.integers(0, 2**32 - 1),
    float64=st.booleans(),
)
def test_binned_counts_equal_exact_ge_counts(c, n, t, binary_threshold, seed, float64):
    rng = np.random.default_rng(seed)
    grid = score_grid(t, binary_threshold)
    scores = scores_on_and_around_the_grid(rng, n, c, grid)
    if float64:
        scores = scores.double()
    target = torch.from_numpy(rng.integers(0, c, size=n))
    counts = stream(
        CountState(c, thresholds=t, input="probs", binary_threshold=binary_threshold),
        scores,
        target,
        batch=17,
    )
    tp, fp = binned_curve_counts(counts)
    exp_tp, exp_fp = expected_curve_counts(scores, target, grid)
    assert torch.equal(tp, exp_tp) and torch.equal(fp, exp_fp)
    assert torch.equal(counts.confmat, expected_confmat(scores.argmax(dim=1), target, c))
    assert counts.hist is not None and counts.hist.sum() == n * c


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("t", [2, 3, 7, 50, 200, 1000])
def test_grid_bins_equal_bucketize(t, dtype):
    """The logit-space bin estimate plus its exact correction is bucketize(right=True) - 1,
    around every grid point, in the tails, above 1 and with the binary threshold anywhere."""
    g = torch.Generator().manual_seed(t)
    for binary_threshold in EDGE_THRESHOLDS:
        grid = score_grid(t, binary_threshold).to(dtype)
        at = grid[torch.randint(0, t, (5000,), generator=g)]
        scores = torch.cat(
            [
                at,
                torch.nextafter(at, torch.zeros_like(at)),
                torch.nextafter(at, torch.ones_like(at)),
                torch.rand(5000, generator=g, dtype=dtype) ** 30,
                1 - torch.rand(5000, generator=g, dtype=dtype) ** 10,
                torch.sigmoid(torch.linspace(-60, 30, 5000, dtype=dtype)),
                torch.tensor([0.0, 1.0, 1.5, 7.0], dtype=dtype),
            ]
        ).reshape(-1, 2)
        expected = torch.bucketize(scores, grid, right=True).view(-1) - 1
        got = grid_bins(scores, _upper_bounds(grid.double(), dtype))
        assert got.dtype == torch.int32 and torch.equal(got.long(), expected)
        # the accelerator path: bucketize over t_1 .. t_{T-1} (run here on CPU tensors)
        inner = _upper_bounds(grid.double(), dtype)[:-1]
        on_device = torch.bucketize(scores, inner, out_int32=True, right=True).view(-1)
        assert torch.equal(on_device.long(), expected)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_bad_batches_are_flagged_on_device_without_raising():
    """The accelerator path: bad input sets the first bad batch index, samples to drop are
    masked (exercised here on CPU tensors; test_cuda_* runs it on a GPU)."""
    state = CountState(3, input="probs", ignore_index=-100)
    probs = torch.full((4, 3), 1 / 3)
    counted, keep = state._flag_bad_batch(probs, torch.tensor([0, -100, 2, 1]))
    assert keep is not None and keep.tolist() == [True, False, True, True]
    assert counted.tolist() == [0, 0, 2, 1]
    assert state.first_bad_batch.item() == torch.iinfo(torch.int64).max
    state.num_batches += 3
    bad = probs.clone()
    bad[1, 1] = -0.5
    state._flag_bad_batch(bad, torch.tensor([0, 1, 2, 1]))
    state.num_batches += 1
    counted, keep = state._flag_bad_batch(probs, torch.tensor([0, 3, -1, -100]))
    assert keep is not None and keep.tolist() == [True, True, True, False]
    assert counted.tolist() == [0, 2, 0, 0]  # in range whatever the target: never read
    assert state.first_bad_batch.item() == 3
    with pytest.raises(ValueError, match=bad_batch_message("", 3)):
        state.compute()


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_bad_logits_are_flagged_on_device(value):
    state = CountState(3, input="logits")
    logits = torch.zeros(4, 3)
    state._flag_bad_batch(logits, torch.tensor([0, 1, 2, 1]))
    assert state.first_bad_batch.item() == torch.iinfo(torch.int64).max
    logits[2, 1] = value
    state.num_batches += 1
    state._flag_bad_batch(logits, torch.tensor([0, 1, 2, 1]))
    assert state.first_bad_batch.item() == 1


def test_counts_are_int32_states_and_int64_results(batch_data):
    state = CountState(5, input="probs")
    assert state.confmat.dtype == torch.int32 and state.hist.dtype == torch.int32
    counts = stream(state, *batch_data, batch=100)
    assert counts.confmat.dtype == torch.int64
    assert counts.hist is not None and counts.hist.dtype == torch.int64


def test_state_of_8142_classes_is_under_300_mib():
    """iNaturalist 2018's C with the default grid: the bytes of the state's tensors."""
    state = CountState(num_classes=8142, thresholds=200)
    tensors = [t for t in state.metric_state.values() if isinstance(t, torch.Tensor)]
    assert sum(t.element_size() * t.numel() for t in tensors) < 300 * 2**20


def test_more_samples_than_int32_counts_allow_raise_before_counting():
    state = CountState(3, input="probs", stage="val")
    probs, target = torch.full((4, 3), 1 / 3), torch.tensor([0, 1, 2, 1])
    state.update(probs, target)
    state._samples = MAX_SAMPLES - 4  # as if 2^31 - 5 samples had been counted
    state.update(probs, target)  # exactly MAX_SAMPLES: still exact
    with pytest.raises(ValueError, match=r"^CountState\(stage='val'\): more than 2,147,483,647"):
        state.update(probs[:1], target[:1])
    assert int(state.compute().confmat.sum()) == 8
    state.reset()
    state.update(probs[:1], target[:1])
    assert state._samples == 1


def test_forward_keeps_the_sample_count(batch_data):
    p, y = batch_data
    state = CountState(5, input="probs")
    state.update(p[:100], y[:100])
    state(p[100:300], y[100:300])  # forward: batch value + global update
    assert state._samples == 300
    assert int(state.compute().confmat.sum()) == 300


def test_argmax_ties_go_to_the_lowest_index():
    probs = torch.tensor([[0.4, 0.4, 0.2], [0.2, 0.4, 0.4], [1 / 3, 1 / 3, 1 / 3], [0.0, 0, 0]])
    state = CountState(3, input="probs")
    state.update(probs, torch.tensor([2, 2, 2, 2]))
    assert state.compute().confmat[2].tolist() == [3, 1, 0]


def test_saturated_scores_land_in_the_top_and_bottom_bins():
    state = CountState(2, thresholds=10, input="probs")
    state.update(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    hist = state.compute().hist
    assert hist[0, -1, 1] == 1 and hist[0, 0, 0] == 0 and hist[0, 0, 1] == 1
    assert hist[1, -1, 0] == 1 and hist[1, 0, 0] == 1


# ---- streaming ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch_data() -> tuple[torch.Tensor, torch.Tensor]:
    p, y = make_predictions(np.random.default_rng(1), 1000, 5, "mixed", skew=1.0, absent=1)
    return torch.from_numpy(p).float(), torch.from_numpy(y)


def assert_same_counts(a: Counts, b: Counts) -> None:
    assert torch.equal(a.confmat, b.confmat)
    if a.hist is not None:
        assert b.hist is not None and torch.equal(a.hist, b.hist)
        assert b.thresholds is not None and torch.equal(a.thresholds, b.thresholds)
    else:
        assert a.scores is not None and b.scores is not None
        assert torch.equal(auroc(a), auroc(b)) or torch.allclose(auroc(a), auroc(b), equal_nan=True)
        assert torch.allclose(average_precision(a), average_precision(b), equal_nan=True)
        assert torch.equal(a.scores.sort(dim=0).values, b.scores.sort(dim=0).values)


@pytest.mark.parametrize("thresholds", [200, None])
def test_chunked_updates_equal_one_update(batch_data, thresholds):
    p, y = batch_data
    one = stream(CountState(5, thresholds=thresholds, input="probs"), p, y, batch=len(y))
    for batch in (1, 7, 256):
        chunked = stream(CountState(5, thresholds=thresholds, input="probs"), p, y, batch=batch)
        assert_same_counts(chunked, one)


@pytest.mark.parametrize("thresholds", [200, None])
def test_batch_order_does_not_matter(batch_data, thresholds):
    p, y = batch_data
    forward = stream(CountState(5, thresholds=thresholds, input="probs"), p, y, batch=100)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    shuffled = stream(CountState(5, thresholds=thresholds, input="probs"), p[order], y[order], 100)
    assert_same_counts(shuffled, forward)


@pytest.mark.parametrize("thresholds", [200, None])
def test_cross_process_sync_sums_counts(batch_data, thresholds):
    """torchmetrics' DDP sync with two processes that saw the same batches: twice the counts
    (sum) or every score twice (cat), and the local state back afterwards."""
    p, y = batch_data
    local = stream(CountState(5, thresholds=thresholds, input="probs"), p, y, batch=128)
    twice = stream(
        CountState(5, thresholds=thresholds, input="probs"), p.repeat(2, 1), y.repeat(2), 128
    )
    state = CountState(
        5,
        thresholds=thresholds,
        input="probs",
        dist_sync_fn=lambda tensor, group=None: [tensor, tensor.clone()],
        distributed_available_fn=lambda: True,
    )
    assert_same_counts(stream(state, p, y, batch=128), twice)
    assert torch.equal(state.confmat, local.confmat)
    if thresholds is None:
        assert local.scores is not None and torch.equal(torch.cat(state.scores), local.scores)
    else:
        assert local.hist is not None and torch.equal(state.hist, local.hist)


@pytest.mark.parametrize("thresholds", [200, None])
@pytest.mark.parametrize("ignore_index", [-100, 0])
def test_ignore_index_leaves_samples_out(batch_data, thresholds, ignore_index):
    p, y = batch_data
    y = y.clone()
    y[::3] = ignore_index
    keep = y != ignore_index
    state = CountState(5, thresholds=thresholds, input="probs", ignore_index=ignore_index)
    got = stream(state, p, y, batch=64)
    expected = stream(CountState(5, thresholds=thresholds, input="probs"), p[keep], y[keep], 64)
    assert_same_counts(got, expected)
    assert got.confmat.sum() == keep.sum()


@pytest.mark.parametrize("thresholds", [200, None])
def test_logits_input_equals_softmax_then_probs(thresholds):
    logits = torch.randn(600, 4, generator=torch.Generator().manual_seed(2)) * 8
    y = torch.randint(0, 4, (600,), generator=torch.Generator().manual_seed(3))
    got = stream(CountState(4, thresholds=thresholds, input="logits"), logits, y, batch=50)
    expected = stream(
        CountState(4, thresholds=thresholds, input="probs"), torch.softmax(logits, 1), y, 50
    )
    assert_same_counts(got, expected)
    if thresholds is None:
        assert got.scores is not None and expected.scores is not None
        assert torch.equal(got.scores, expected.scores)


def test_half_precision_logits_are_counted_in_float32():
    logits = torch.randn(64, 3, generator=torch.Generator().manual_seed(4)).half()
    y = torch.randint(0, 3, (64,))
    got = stream(CountState(3, thresholds=None), logits, y, batch=64)
    assert got.scores is not None and got.scores.dtype == torch.float32
    assert torch.equal(got.scores, torch.softmax(logits.float(), dim=1))


def test_exact_mode_keeps_float64_scores_and_copies_inputs():
    p = torch.rand(40, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    state = CountState(3, thresholds=None, input="probs")
    state.update(p, y)
    original_p, original_y = p.clone(), y.clone()
    p.zero_()
    y.fill_(2)
    counts = state.compute()
    assert counts.scores is not None and counts.target is not None
    assert counts.scores.dtype == torch.float64 and torch.equal(counts.scores, original_p)
    assert counts.target.dtype == torch.int64 and torch.equal(counts.target, original_y)


def test_reset_and_cached_compute(batch_data):
    p, y = batch_data
    state = CountState(5, input="probs")
    state.update(p[:100], y[:100])
    first = state.compute()
    assert state.compute() is first  # several callbacks, one computation
    state.update(p[100:200], y[100:200])
    assert first.confmat.sum() == 100  # a copy, not the live state
    assert state.compute().confmat.sum() == 200
    state.reset()
    state.update(p[:100], y[:100])
    assert_same_counts(state.compute(), first)


def test_one_class_and_two_thresholds_are_not_squeezed():
    state = CountState(1, thresholds=2, input="probs")
    state.update(torch.ones(3, 1), torch.zeros(3, dtype=torch.int64))
    counts = state.compute()
    assert isinstance(counts, Counts) and counts.num_classes == 1
    assert counts.confmat.shape == (1, 1) and counts.confmat.item() == 3
    assert counts.hist is not None and counts.hist.shape == (1, 2, 2)
    assert counts.thresholds is not None and counts.thresholds.shape == (2,)


def test_binned_state_does_not_grow_with_samples(batch_data):
    p, y = batch_data
    state = CountState(5, thresholds=200, input="probs")
    stream(state, p, y, batch=100)
    sizes = {name: getattr(state, name).numel() for name in state._defaults}
    assert sizes == {"confmat": 25, "num_batches": 1, "first_bad_batch": 1, "hist": 5 * 200 * 2}


def test_empty_batch_counts_nothing():
    state = CountState(3, input="probs")
    state.update(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64))
    assert state.compute().confmat.sum() == 0


# ---- bad input ----------------------------------------------------------------------------


def bad_batch_message(stage: str, batch: int) -> str:
    return rf"stage='{stage}'.*batch {batch}\b"


@pytest.mark.parametrize("thresholds", [200, None])
@pytest.mark.parametrize(
    ("input", "value"),
    [
        ("logits", float("nan")),
        ("logits", float("inf")),
        ("logits", -float("inf")),
        ("probs", float("nan")),
        ("probs", float("inf")),
        ("probs", -0.25),
    ],
)
def test_bad_scores_raise_naming_stage_and_batch(thresholds, input, value):
    state = CountState(3, thresholds=thresholds, input=input, stage="val")
    good = torch.full((4, 3), 1 / 3)
    y = torch.zeros(4, dtype=torch.int64)
    state.update(good, y)
    state.update(good, y)
    bad = good.clone()
    bad[2, 1] = value
    with pytest.raises(ValueError, match=bad_batch_message("val", 2)):
        state.update(bad, y)
    assert state.compute().confmat.sum() == 8  # the bad batch was not counted


@pytest.mark.parametrize("target", [3, -1, -100])
def test_out_of_range_target_raises_naming_stage_and_batch(target):
    state = CountState(3, input="probs", stage="test", ignore_index=-5)
    p = torch.full((4, 3), 1 / 3)
    state.update(p, torch.tensor([0, 1, 2, -5]))
    with pytest.raises(ValueError, match=bad_batch_message("test", 1)):
        state.update(p, torch.tensor([0, target, 1, 2]))


@pytest.mark.parametrize(
    ("preds", "target"),
    [
        (torch.zeros(4), torch.zeros(4, dtype=torch.int64)),
        (torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64)),
        (torch.zeros(4, 3), torch.zeros(4, 1, dtype=torch.int64)),
        (torch.zeros(4, 3), torch.zeros(5, dtype=torch.int64)),
        (torch.zeros(4, 3), torch.zeros(4)),
        (torch.zeros(4, 3, dtype=torch.int64), torch.zeros(4, dtype=torch.int64)),
    ],
)
def test_wrong_shapes_and_dtypes_raise_at_once(preds, target):
    state = CountState(3, stage="train")
    with pytest.raises(ValueError, match=re.escape("stage='train'")):
        state.update(preds, target)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("thresholds", [200, None])
def test_cuda_updates_do_not_sync_and_bad_batches_raise_at_compute(batch_data, thresholds):
    p, y = batch_data
    cpu = stream(CountState(5, thresholds=thresholds, input="probs"), p, y, batch=100)
    state = CountState(5, thresholds=thresholds, input="probs", stage="val").cuda()
    p, y = p.cuda(), y.cuda()
    state.update(p[:100], y[:100])  # first call may set up lazily
    torch.cuda.set_sync_debug_mode("error")
    try:
        for start in range(100, len(y), 100):
            state.update(p[start : start + 100], y[start : start + 100])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    got = state.compute()
    assert torch.equal(got.confmat.cpu(), cpu.confmat)
    if thresholds is not None:
        assert got.hist is not None and cpu.hist is not None
        assert torch.equal(got.hist.cpu(), cpu.hist)
    bad = p[:100].clone()
    bad[5, 0] = float("nan")
    state.update(bad, y[:100])
    state.update(p[:100], torch.full_like(y[:100], 7))
    with pytest.raises(ValueError, match=bad_batch_message("val", 10)):
        state.compute()


def _oracle_hist(probs: torch.Tensor, target: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(C, T, 2) by definition: bin k of s holds t_k <= s < t_{k+1}, label y = (target == c)."""
    c, t = probs.shape[1], grid.shape[0]
    hist = torch.zeros(c, t, 2, dtype=torch.int64)
    bins = torch.bucketize(probs, grid.to(probs.dtype), right=True) - 1
    for cls in range(c):
        y = (target == cls).long()
        hist[cls].view(-1).index_add_(0, bins[:, cls] * 2 + y, torch.ones_like(y))
    return hist


def test_cpu_buffer_is_invisible() -> None:
    """CPU batches are buffered and counted ~2^18 scores at a time: flushing mid-stream, computing
    in between, forward(), callers reusing their tensors and reset() must not change a count."""
    g = torch.Generator().manual_seed(3)
    c = 7
    batches = [
        (torch.rand(3000, c, generator=g), torch.randint(0, c, (3000,), generator=g))
        for _ in range(30)
    ]
    probs, target = torch.cat([p for p, _ in batches]), torch.cat([t for _, t in batches])
    state = CountState(c, input="probs")
    state.update(torch.rand(5, c), torch.zeros(5, dtype=torch.int64))
    state.reset()  # the buffered batch is dropped with the counts
    for i, (p, t) in enumerate(batches):
        if i == 20:
            state(p.clone(), t.clone())  # forward: batch value + global update
        else:
            buffer_p, buffer_t = p.clone(), t.clone()
            state.update(buffer_p, buffer_t)
            buffer_p.fill_(0.5)  # the caller reuses its buffers
            buffer_t.fill_(0)
        if i == 10:
            state.compute()
    counts = state.compute()
    assert int(counts.confmat.sum()) == len(target)
    expected_confmat = torch.zeros(c, c, dtype=torch.int64)
    expected_confmat.index_put_((target, probs.argmax(1)), torch.ones_like(target), accumulate=True)
    assert torch.equal(counts.confmat, expected_confmat)
    assert torch.equal(counts.hist, _oracle_hist(probs, target, counts.thresholds))
