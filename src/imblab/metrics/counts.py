"""The streaming count state every imblab metric is computed from.

One :class:`CountState` per stage is updated once per batch.  It keeps sufficient statistics,
not predictions (in binned mode):

* ``confmat`` (C, C): ``confmat[i, j]`` = samples of true class ``i`` predicted as ``j``, where
  the prediction is ``argmax_c p[:, c]`` (ties go to the lowest index).
* ``hist`` (C, T, 2): for each class ``c`` the one-vs-rest score ``s = p[:, c]`` lies in bin
  ``k`` iff ``t_k <= s < t_{k+1}`` (``t_T = +inf``); ``hist[c, k, y]`` counts it with
  ``y = (target == c)``.  A score is predicted positive at threshold ``t_k`` iff ``s >= t_k``,
  so the one-vs-rest TP and FP at ``t_k`` are the reverse cumulative sums of ``hist[c, k:, 1]``
  and ``hist[c, k:, 0]``.

With ``thresholds=None`` (exact mode) the (N, C) scores and (N,) targets are kept instead of
``hist`` and sorted once at compute time.

Both count tensors are int32 (:data:`COUNT_DTYPE`): a cell counts at most every sample seen since
the last reset, so they are exact up to :data:`MAX_SAMPLES` = 2^31 - 1 samples per process and
stage between resets, and ``update`` raises before a batch would pass it (checked on the host
from the batch shape: no device sync).  :meth:`CountState.compute` returns int64 copies, and the
cross-process sum (torchmetrics: ``torch.sum`` of the gathered states) is int64, so sums over
processes stay exact.  At C = 8,142 and T = 200 a stage's state is 265 MiB (int64: 531 MiB).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from imblab.errors import ConfigError

__all__ = [
    "COUNT_DTYPE",
    "LOGIT_RANGE",
    "MAX_SAMPLES",
    "CountState",
    "Counts",
    "grid_bins",
    "score_grid",
]

LOGIT_RANGE = (-20.0, 13.0)
"""Logit range ``(a, b)`` of the threshold grid: sigmoid(-20) = 2.1e-9, sigmoid(13) = 1 - 2.3e-6."""

COUNT_DTYPE = torch.int32
"""dtype of the confusion matrix and the histogram."""

MAX_SAMPLES = torch.iinfo(COUNT_DTYPE).max
"""Samples a count state takes per process between resets: no int32 cell can overflow below it."""

_NO_BAD_BATCH = torch.iinfo(torch.int64).max
_CHUNK_ELEMENTS = 1 << 15
"""CPU, binned mode: scores counted at a time.  Small batches are buffered up to it (a batch of
1024 x 10 scores costs ~20 tiny ops whose fixed overhead dominates), big ones are split into
chunks of it: the intermediates of a chunk stay in the core's cache (a 2^18-score chunk ran at
~2x the cost per score).  It is torch's parallel grain, so each op runs on one thread: with two
threads on a busy 2-core machine, 2^16-score chunks (ops split over both threads) were up to 40x
slower, waiting for a descheduled core, while one thread lost nothing."""


def _check_binary_threshold(binary_threshold: float) -> None:
    if not 0.0 <= binary_threshold <= 1.0:
        raise ConfigError(
            f"binary_threshold={binary_threshold!r}: not a probability; use a value in [0, 1]"
        )
    if binary_threshold > 0.0 and float(torch.tensor(binary_threshold, dtype=torch.float32)) == 0:
        raise ConfigError(
            f"binary_threshold={binary_threshold!r}: is 0 in float32; use 0 or a value >= 1e-38"
        )


def score_grid(num_thresholds: int, binary_threshold: float = 0.5) -> Tensor:
    """The (T,) float64 threshold grid: strictly increasing, ``t_0 = 0``, uniform in logit space.

    ``t_1 .. t_{T-1} = sigmoid(linspace(a, b, T - 1))`` with ``(a, b) = LOGIT_RANGE``: the
    softmax outputs of a trained classifier pile up near 0 and 1, where a grid uniform in
    probability would drop most positives and negatives of a class into the same bin (a pair in
    one bin counts as a tie).  The range is asymmetric because float32 is: an overconfident
    network puts wrong-class scores anywhere in 1e-9 .. 1e-4 (with a symmetric ``L = 9``
    everything below 1.2e-4 is one bin, which cost simulated 10-class AUROCs up to 2e-2), while
    near 1 float32 probabilities are 6e-8 apart, so there are only ~38 of them above sigmoid(13).
    ``t_0 = 0`` makes every non-negative score fall into some bin.
    ``binary_threshold`` replaces the nearest of ``t_1 .. t_{T-1}`` exactly (it is already
    ``t_0`` when 0), so metrics at that threshold come straight from the grid.
    """
    if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, int):
        raise ConfigError(
            f"thresholds={num_thresholds!r}: not an int; use an int >= 2, or None for exact mode"
        )
    if num_thresholds < 2:
        raise ConfigError(
            f"thresholds={num_thresholds}: a grid needs at least 2 thresholds; "
            "use an int >= 2, or None for exact mode"
        )
    _check_binary_threshold(binary_threshold)
    inner = torch.sigmoid(torch.linspace(*LOGIT_RANGE, num_thresholds - 1, dtype=torch.float64))
    if binary_threshold > 0.0:
        # The nearest point's neighbours stay on either side of binary_threshold: still sorted.
        inner[torch.argmin((inner - binary_threshold).abs())] = binary_threshold
    grid = torch.cat([torch.zeros(1, dtype=torch.float64), inner])
    as_float32 = grid.to(torch.float32)
    if not bool((as_float32[1:] > as_float32[:-1]).all()):
        raise ConfigError(
            f"thresholds={num_thresholds}: grid points collide in float32 near 1; "
            "use fewer thresholds (at most about 1400)"
        )
    return grid


def _upper_bounds(grid: Tensor, dtype: torch.dtype) -> Tensor:
    """``(t_1, .., t_{T-1}, nan)`` in ``dtype``: the upper edge of every bin (nan: none, and no
    score compares >= nan, so bin indices stay in range whatever the input)."""
    return torch.cat([grid[1:], grid.new_full((1,), math.nan)]).to(dtype)


def grid_bins(scores: Tensor, upper: Tensor) -> Tensor:
    """Bin index ``k`` (int32) of every score (flattened), ``t_k <= s < t_{k+1}`` with ``t``
    cast to the score dtype: exactly ``torch.bucketize(s, t, right=True) - 1``, in ``[0, T - 1]``
    for any ``s`` (NaN included).  CPU only: on an accelerator ``bucketize`` is one kernel and
    the faster choice (see ``CountState._count``).

    ``upper = _upper_bounds(t, s.dtype)``.  A binary search per score is slow on CPU (it was 60%
    of an update); the grid is uniform in logit space, so ``floor((logit(s) - a) / h)`` lands
    within one bin of the answer (the float error is far below a bin, and the one moved point,
    ``binary_threshold``, shifts a bin index by at most one), and starting one bin lower, two
    exact comparisons with the next two edges finish it: ``k = j + [s >= t_{j+1}] +
    [s >= t_{j+2}]``.
    """
    t = upper.shape[0]
    low, high = LOGIT_RANGE
    inv_step = (t - 2) / (high - low) if t > 2 else 1.0  # T = 2: j = 0 whatever the scale
    s = scores.reshape(-1)
    z = torch.logit(s, eps=0.0).sub_(low).mul_(inv_step)  # s clamped to [0, 1]: 0 -> -inf
    if not s.is_cpu:  # NaN scores (reported at compute) must still index in range
        z.nan_to_num_(0.0)
    j = z.clamp_(0, t - 2).to(torch.int32)
    above_next = s >= upper.index_select(0, j)
    above_second = s >= upper[1:].index_select(0, j)
    # the two corrections summed as uint8 first: one int32 add instead of two bool->int ones
    return j.add_(above_next.view(torch.uint8) + above_second.view(torch.uint8))


@dataclass(frozen=True, eq=False)
class Counts:
    """What :meth:`CountState.compute` returns: the sufficient statistics of one stage.

    Exactly one of ``hist`` (binned mode, with ``thresholds``) and ``scores`` (exact mode, with
    ``target``) is set.  ``scores`` holds only the samples that were counted (``ignore_index``
    samples are dropped).
    """

    confmat: Tensor
    thresholds: Tensor | None = None
    hist: Tensor | None = None
    scores: Tensor | None = None
    target: Tensor | None = None

    def __post_init__(self) -> None:
        binned = self.hist is not None and self.thresholds is not None
        exact = self.scores is not None and self.target is not None
        if binned == exact:
            raise ValueError("Counts needs either (thresholds, hist) or (scores, target)")

    @property
    def num_classes(self) -> int:
        """C, the number of classes."""
        return int(self.confmat.shape[0])


class _Opaque:
    """Carries a compute() result past torchmetrics' squeeze/clone pass, which cannot copy a
    frozen dataclass (and would squeeze a (1, 1) confmat)."""

    __slots__ = ("value",)

    def __init__(self, value: Counts) -> None:
        self.value = value


class CountState(Metric):
    """Per-stage confusion matrix + one-vs-rest score histogram (or stored scores).

    ``update(preds (N, C) float, target (N,) int)``; ``compute() -> Counts``.  Summed across
    processes (DDP) by torchmetrics; exact-mode score lists are concatenated.

    Bad input (NaN/Inf in ``preds``, negative probabilities, a target outside ``[0, C)`` other
    than ``ignore_index``) raises ``ValueError`` naming the stage and the 0-based index of the
    first bad batch since the last reset: in ``update`` on CPU; on other devices at ``compute``
    (a device-side flag avoids a host sync per batch).
    """

    # forward() then updates the global state before the batch-local one, so the batch index in
    # a bad-input error stays right
    full_state_update = True
    is_differentiable = False
    higher_is_better = None

    confmat: Tensor
    hist: Tensor
    thresholds: Tensor
    _upper32: Tensor
    _upper64: Tensor
    _class_offsets: Tensor
    _one: Tensor
    _limits32: Tensor
    _limits64: Tensor
    num_batches: Tensor
    first_bad_batch: Tensor
    scores: list[Tensor]
    target: list[Tensor]

    def __init__(
        self,
        num_classes: int,
        *,
        thresholds: int | None = 200,
        input: Literal["logits", "probs"] = "logits",
        ignore_index: int | None = None,
        binary_threshold: float = 0.5,
        stage: str = "",
        **kwargs: Any,
    ) -> None:
        self._pending: list[tuple[Tensor, Tensor]] = []
        self._pending_elements = 0
        self._buffer = True
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes={num_classes!r}: not a positive int; set it to C >= 1")
        if input not in ("logits", "probs"):
            raise ConfigError(f"input={input!r}: unknown score kind; use 'logits' or 'probs'")
        if ignore_index is not None and (
            isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
        ):
            raise ConfigError(f"ignore_index={ignore_index!r}: not an int; use an int or None")
        _check_binary_threshold(binary_threshold)
        self.num_classes = num_classes
        self.input = input
        self.ignore_index = ignore_index
        self.binary_threshold = binary_threshold
        self.stage = stage
        self.binned = thresholds is not None
        c = num_classes
        self.add_state("confmat", torch.zeros(c, c, dtype=COUNT_DTYPE), dist_reduce_fx="sum")
        self.add_state("num_batches", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state(
            "first_bad_batch", torch.tensor(_NO_BAD_BATCH, dtype=torch.int64), dist_reduce_fx="min"
        )
        if thresholds is not None:
            grid = score_grid(thresholds, binary_threshold)
            self.register_buffer("thresholds", grid, persistent=False)
            self.register_buffer("_upper32", _upper_bounds(grid, torch.float32), persistent=False)
            self.register_buffer("_upper64", _upper_bounds(grid, torch.float64), persistent=False)
            self.add_state(
                "hist", torch.zeros(c, thresholds, 2, dtype=COUNT_DTYPE), dist_reduce_fx="sum"
            )
            # flat hist bin of (class c, bin k, label y) = c * 2T + 2k + y (< 2^31: int32)
            offsets = torch.arange(c, dtype=torch.int32) * 2 * thresholds
            self.register_buffer("_class_offsets", offsets, persistent=False)
        else:
            self.add_state("scores", [], dist_reduce_fx="cat")
            self.add_state("target", [], dist_reduce_fx="cat")
        self.register_buffer("_one", torch.ones(1, dtype=COUNT_DTYPE), persistent=False)
        # off-CPU input check: (target min, target max, score min, score max) must lie within
        # these bounds, in the score dtype (finite scores: |s| <= the dtype's largest float)
        for name, dtype in (("_limits32", torch.float32), ("_limits64", torch.float64)):
            top = torch.finfo(dtype).max
            low = -top if input == "logits" else 0.0
            limits = torch.tensor([[0, 0, low, low], [c - 1, c - 1, top, top]], dtype=dtype)
            self.register_buffer(name, limits, persistent=False)
        self._samples = 0  # host-side: samples given to update() since the last reset

    def sync(self, *args: Any, **kwargs: Any) -> None:
        """Count the buffered batches, then sum across processes (torchmetrics)."""
        self._flush()
        super().sync(*args, **kwargs)

    def reset(self) -> None:
        self._pending, self._pending_elements = [], 0
        self._samples = 0
        super().reset()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """torchmetrics' forward (batch value + global update) without buffering: it swaps the
        states for the batch-local ones, which the buffer is not part of."""
        self._flush()
        self._buffer = False
        samples = self._samples
        try:
            return super().forward(*args, **kwargs)
        finally:  # forward resets (zeroing the sample count) and restores the global state
            self._buffer = True
            self._samples += samples

    def _apply(self, fn: Callable, exclude_state: Any = "") -> Any:
        """Move like any module, but keep the threshold grid float64/float32 through dtype casts
        (e.g. Lightning's ``bf16-true`` precision calls ``module.to(torch.bfloat16)``)."""
        self._flush()
        this = super()._apply(fn, exclude_state)
        if self.binned:
            grid = score_grid(self.hist.shape[1], self.binary_threshold)
            this.thresholds = grid.to(self.confmat.device)
            this._upper32 = _upper_bounds(grid, torch.float32).to(self.confmat.device)
            this._upper64 = _upper_bounds(grid, torch.float64).to(self.confmat.device)
        return this

    def _wrap_compute(self, compute: Callable) -> Callable:
        wrapped = super()._wrap_compute(lambda: _Opaque(compute()))

        @functools.wraps(compute)
        def unwrapped() -> Counts:
            return wrapped().value

        return unwrapped

    def _where(self) -> str:
        return f"CountState(stage={self.stage!r})"

    def update(self, preds: Tensor, target: Tensor, ids: Tensor | None = None) -> None:
        """Count one batch: ``preds`` (N, C) logits or probabilities, ``target`` (N,) int;
        ``ids`` (the samples' indices, the third input of every evaluation state) is unused."""
        c = self.num_classes
        if preds.ndim != 2 or preds.shape[1] != c or target.shape != preds.shape[:1]:
            raise ValueError(
                f"{self._where()}: expected preds (N, {c}) and target (N,), got "
                f"preds {tuple(preds.shape)} and target {tuple(target.shape)}"
            )
        if not preds.is_floating_point() or target.is_floating_point() or target.is_complex():
            raise ValueError(
                f"{self._where()}: expected float preds and int target, got {preds.dtype} and "
                f"{target.dtype}"
            )
        if self._samples + preds.shape[0] > MAX_SAMPLES:
            raise ValueError(
                f"{self._where()}: more than {MAX_SAMPLES:,} samples since the last reset would "
                "overflow the int32 counts; reset the state more often (e.g. per epoch) or "
                "evaluate the data in parts and add their Counts"
            )
        self._samples += preds.shape[0]
        dtype = torch.float64 if preds.dtype == torch.float64 else torch.float32
        x = preds.detach().to(dtype)
        labels = target.detach().to(torch.int64)
        if not self.binned or (preds.is_cpu and self._buffer):  # kept: copies, never views
            x = x.clone() if x.data_ptr() == preds.data_ptr() else x
            labels = labels.clone() if labels.data_ptr() == target.data_ptr() else labels
        if not preds.is_cpu:
            counted, keep = self._flag_bad_batch(x, labels)
            self.num_batches += 1
            self._count(x, counted, keep)
            return
        self._check(x, labels)
        self.num_batches += 1
        if self.binned and self._buffer and x.numel() < _CHUNK_ELEMENTS:
            self._pending.append((x, labels))
            self._pending_elements += x.numel()
            if self._pending_elements >= _CHUNK_ELEMENTS:
                self._flush()
            return
        self._count_cpu(x, labels)

    def _flush(self) -> None:
        """Count the batches buffered on the CPU (already checked)."""
        if not self._pending:
            return
        xs, ys = zip(*self._pending, strict=True)
        self._pending, self._pending_elements = [], 0
        self._count_cpu(torch.cat(xs), torch.cat(ys))

    def _count_cpu(self, x: Tensor, labels: Tensor) -> None:
        """Count checked CPU scores, binned mode in chunks of ``_CHUNK_ELEMENTS`` scores."""
        if not self.binned:
            keep = None if self.ignore_index is None else labels != self.ignore_index
            self._count(x, labels if keep is None else torch.where(keep, labels, 0), keep)
            return
        rows = max(1, _CHUNK_ELEMENTS // self.num_classes)
        for start in range(0, max(labels.shape[0], 1), rows):
            xc, yc = x[start : start + rows], labels[start : start + rows]
            keep = None if self.ignore_index is None else yc != self.ignore_index
            self._count(xc, yc if keep is None else torch.where(keep, yc, 0), keep)

    def _count(self, x: Tensor, counted: Tensor, keep: Tensor | None) -> None:
        """Add checked scores ``x`` (N, C) to the counts: ``counted`` (N,) their classes, all in
        ``[0, C)`` (a sample left out has any in-range class); ``keep``: the samples to count
        (None: all).

        Per batch: a softmax for logits, the argmax, one index add into the confusion matrix
        and, binned, the bins (CPU: :func:`grid_bins`; elsewhere one ``bucketize``), one
        scatter of the label bit and one index add into the histogram.  No Python loop over
        classes and no host sync (``bincount`` would read its maximum back to size its output).
        """
        c, n = self.num_classes, counted.shape[0]
        s = torch.softmax(x, dim=1) if self.input == "logits" else x
        weight = self._one.expand(n) if keep is None else keep.to(COUNT_DTYPE)
        pred = s.max(dim=1).indices  # ties: the lowest index
        self.confmat.view(-1).index_add_(0, torch.add(pred, counted, alpha=c), weight)
        if self.binned:
            upper = self._upper64 if s.dtype == torch.float64 else self._upper32
            if s.is_cpu:
                k = grid_bins(s, upper)
            else:  # t_1 .. t_{T-1}: the number of them <= s is the bin
                k = torch.bucketize(s, upper[:-1], out_int32=True, right=True)
            index = torch.add(self._class_offsets, k.view(n, c), alpha=2)  # c * 2T + 2k
            index.scatter_add_(1, counted.unsqueeze(1), self._one.expand(n, 1))  # + y
            if keep is None:
                weight = self._one.expand(n * c)
            else:
                weight = weight[:, None].expand(n, c).reshape(-1)
            self.hist.view(-1).index_add_(0, index.view(-1), weight)
        else:
            self.scores.append(s)
            if keep is not None and self.ignore_index is not None:
                # samples left out keep ignore_index as their target: compute() drops them
                counted = counted.where(keep, self.ignore_index)
            self.target.append(counted)

    def _bad_batch(self, batch: int, what: str) -> ValueError:
        return ValueError(f"{self._where()}: batch {batch}: {what}")

    def _check(self, x: Tensor, labels: Tensor) -> None:
        """CPU: raise on NaN/Inf (or negative probabilities) and targets out of range."""
        if labels.numel() == 0:
            return
        lo, hi = (v.item() for v in torch.aminmax(x))  # NaN propagates and fails both tests
        if not (hi < math.inf and (lo > -math.inf if self.input == "logits" else lo >= 0)):
            negative = "" if self.input == "logits" else " or negative probabilities"
            raise self._bad_batch(int(self.num_batches), f"preds contain NaN/Inf{negative}")
        counted = labels if self.ignore_index is None else labels[labels != self.ignore_index]
        if counted.numel():
            lowest, highest = (v.item() for v in torch.aminmax(counted))
            if not 0 <= lowest <= highest < self.num_classes:
                raise self._bad_batch(int(self.num_batches), self._target_problem())

    def _target_problem(self) -> str:
        ignored = "" if self.ignore_index is None else f" and != {self.ignore_index}"
        return f"target outside [0, {self.num_classes}){ignored}"

    def _flag_bad_batch(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor | None]:
        """Off CPU: record a bad batch in ``first_bad_batch`` without a host sync; return the
        classes to count (clamped into ``[0, C)``: a bad batch's counts are never read, since
        ``compute`` raises) and the mask of samples to count (None: all)."""
        keep = None if self.ignore_index is None else labels != self.ignore_index
        checked = labels if keep is None else torch.where(keep, labels, 0)
        if labels.numel():
            target_lo, target_hi = torch.aminmax(checked)
            lo, hi = torch.aminmax(x)
            found = torch.stack([target_lo, target_hi, lo, hi])  # promoted to the score dtype
            limits = self._limits64 if x.dtype == torch.float64 else self._limits32
            ok = (found.clamp(limits[0], limits[1]) == found).all()  # NaN != NaN: bad
            self.first_bad_batch = torch.where(
                ok, self.first_bad_batch, torch.minimum(self.first_bad_batch, self.num_batches)
            )
        return checked.clamp(0, self.num_classes - 1), keep

    def compute(self) -> Counts:
        """The accumulated :class:`Counts`, as copies on the CPU: one device-to-host copy per
        epoch (the counts are small; every metric derived from them is CPU work)."""
        self._flush()
        first_bad = int(self.first_bad_batch)
        if first_bad != _NO_BAD_BATCH:
            negative = "" if self.input == "logits" else " or negative probabilities"
            raise self._bad_batch(
                first_bad, f"preds contain NaN/Inf{negative}, or {self._target_problem()}"
            )
        confmat = _cpu_copy(self.confmat, torch.int64)
        if self.binned:
            hist = _cpu_copy(self.hist, torch.int64)
            return Counts(confmat, thresholds=_cpu_copy(self.thresholds), hist=hist)
        if isinstance(self.scores, list) and not self.scores:  # no data on any process
            scores = torch.zeros(0, self.num_classes)
            target = torch.zeros(0, dtype=torch.int64)
        else:  # a list here, one tensor after a cross-process sync
            scores = _cpu_copy(dim_zero_cat(self.scores).reshape(-1, self.num_classes))
            target = _cpu_copy(dim_zero_cat(self.target).to(torch.int64))
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            scores, target = scores[keep], target[keep]
        return Counts(confmat, scores=scores, target=target)


def _cpu_copy(t: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    return t.to("cpu", dtype, copy=True)
