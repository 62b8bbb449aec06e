"""Imbalance-aware classification losses, selected with the ``loss=NAME`` config group.

Every loss is an ``nn.Module`` called as ``loss(logits, target)`` with ``logits`` of shape
(N, C) and integer ``target`` of shape (N,). Targets equal to ``ignore_index`` are left out of
the loss (and of its mean) exactly like :func:`torch.nn.functional.cross_entropy`; a batch in
which every target is ignored gives a loss of 0. Every loss takes the keyword argument
``class_counts`` (per-class training counts; the training pipeline adds it from the
datamodule) and has ``set_epoch(epoch)``, which the model calls at the start of every training
epoch (it only matters for deferred re-weighting: ``drw_epoch`` of :class:`LDAM` and
:class:`WeightedCrossEntropy`).

Per-class quantities are buffers (``.to(device)`` / ``.to(torch.float64)`` move them) and the
loss is computed in float32 (or float64 if the logits are float64) with autocast disabled.

Bad options raise :class:`imblab.errors.ConfigError` with a one-line message
``loss.<key>=<value>: <what is wrong>; <how to fix it>``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imblab.class_weights import (
    check_effective_beta,
    effective_number_weights,
    inverse_frequency_weights,
)
from imblab.errors import ConfigError, config_error

__all__ = [
    "LDAM",
    "BalancedSoftmax",
    "ClassBalancedFocal",
    "CrossEntropy",
    "FocalLoss",
    "ImbalanceLoss",
    "LogitAdjusted",
    "WeightedCrossEntropy",
]

DEFAULT_IGNORE_INDEX = -100


def _fail(key: str, value: Any, what: str, fix: str) -> ConfigError:
    """The one-line ``loss.<key>=<value>: <what>; <fix>`` error."""
    return config_error(f"loss.{key}", value, what, fix)


def _as_list(key: str, value: Any) -> list[float]:
    """A list/ListConfig/tuple/1-d tensor of numbers as floats, else ConfigError."""
    if isinstance(value, Tensor):
        value = value.detach().cpu().flatten().tolist()
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        try:  # e.g. omegaconf.ListConfig is a Sequence, numpy arrays are not
            value = list(value)
        except TypeError:
            raise _fail(key, value, "must be a list of numbers", f"set loss.{key}=[...]") from None
    out: list[float] = []
    for v in value:
        if isinstance(v, bool):
            raise _fail(key, list(value), "must be a list of numbers", f"set loss.{key}=[...]")
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise _fail(
                key, list(value), "must be a list of numbers", f"set loss.{key}=[...]"
            ) from None
    return out


def _check_nonneg(key: str, value: float, fix: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise _fail(key, value, "must be a finite number >= 0", fix)
    return float(value)


def _check_ignore_index(value: int | None) -> int:
    if value is None:
        return DEFAULT_IGNORE_INDEX
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(
            "ignore_index",
            value,
            "must be an integer or null",
            "set loss.ignore_index to the target value to leave out (default -100)",
        )
    return int(value)


def _check_drw_epoch(value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise _fail(
            "drw_epoch",
            value,
            "must be an integer >= 0 or null",
            "set loss.drw_epoch to e.g. 160 (of 200 epochs), or null to turn DRW off",
        )
    return value


class ImbalanceLoss(nn.Module):
    """Base class: holds the per-class training counts ``class_counts`` (a float buffer of
    shape (C,)), the ``ignore_index`` and a no-op :meth:`set_epoch`.

    Args:
        class_counts: training samples per class (all > 0). ``None`` only for losses that do
            not use them (:class:`CrossEntropy`).
        ignore_index: target value left out of the loss (``None`` -> -100).
    """

    class_counts: Tensor | None
    drw_epoch: int | None = None
    """The epoch from which deferred re-weighting is on (None: the loss has none)."""

    def __init__(
        self,
        class_counts: Sequence[int] | None,
        *,
        ignore_index: int | None = DEFAULT_IGNORE_INDEX,
        requires_counts: bool = True,
    ) -> None:
        super().__init__()
        self.ignore_index = _check_ignore_index(ignore_index)
        if class_counts is None:
            if requires_counts:
                raise _fail(
                    "class_counts",
                    None,
                    f"{type(self).__name__} needs the per-class training counts",
                    "pass class_counts=[n_0, n_1, ...] (the training pipeline adds them "
                    "from the datamodule)",
                )
            self.register_buffer("class_counts", None)
            return
        counts = _as_list("class_counts", class_counts)
        if not counts:
            raise _fail("class_counts", [], "is empty", "pass one training count per class")
        shown = [int(c) if math.isfinite(c) and c == int(c) else c for c in counts]
        for i, c in enumerate(counts):
            if not math.isfinite(c) or c < 0 or c != int(c):
                raise _fail(
                    "class_counts",
                    shown,
                    f"class {i} has an invalid count {c!r} (must be an integer >= 0)",
                    "pass the number of training samples of each class",
                )
        for i, c in enumerate(counts):
            if c == 0:
                raise _fail(
                    "class_counts",
                    shown,
                    f"class {i} has no training samples",
                    "add training samples of that class, drop it from the label set, or "
                    "use loss=ce, which does not use the counts",
                )
        self.register_buffer("class_counts", torch.tensor(counts, dtype=torch.float32))

    @property
    def num_classes(self) -> int | None:
        return None if self.class_counts is None else int(self.class_counts.numel())

    def _counts(self) -> Tensor:
        assert self.class_counts is not None
        return self.class_counts

    def set_epoch(self, epoch: int) -> None:
        """Called by the model at the start of every training epoch; a no-op here."""

    @property
    def head_bias_init(self) -> float | None:
        """The initial bias the loss wants on the classifier's last layer (None: keep it)."""
        return None

    # ---- helpers shared by the subclasses -------------------------------------------------

    def _prepare(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Logits in float32 (float64 stays float64), the validity mask and a target tensor
        with ignored entries replaced by 0 (safe for indexing)."""
        if logits.dim() != 2:
            raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
        if target.shape != logits.shape[:1]:
            raise ValueError(
                f"target must have shape ({logits.shape[0]},), got {tuple(target.shape)}"
            )
        n = self.num_classes
        if n is not None and logits.shape[1] != n:
            raise ValueError(f"logits have {logits.shape[1]} classes but loss.class_counts has {n}")
        dtype = torch.promote_types(logits.dtype, torch.float32)
        target = target.long()
        valid = target != self.ignore_index
        safe = torch.where(valid, target, torch.zeros_like(target))
        return logits.to(dtype), valid, safe

    @staticmethod
    def _mean(per_sample: Tensor, denom: Tensor) -> Tensor:
        """``sum(per_sample) / denom``; 0 (keeping the graph) when denom is 0."""
        tiny = torch.finfo(per_sample.dtype).tiny
        return per_sample.sum() / denom.to(per_sample.dtype).clamp_min(tiny)

    def _ce(
        self,
        logits: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> Tensor:
        """Cross-entropy with F.cross_entropy's mean: sum_i w_{y_i} l_i / sum_i w_{y_i} over
        non-ignored samples (w = 1 when ``weight`` is None)."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            x, valid, safe = self._prepare(logits, target)
            per = F.cross_entropy(
                x,
                target.long(),
                reduction="none",
                ignore_index=self.ignore_index,
                label_smoothing=label_smoothing,
            )
            if weight is None:
                return self._mean(per, valid.sum())
            w = weight.to(x.dtype)[safe] * valid.to(x.dtype)
            return self._mean(per * w, w.sum())


class CrossEntropy(ImbalanceLoss):
    """Plain softmax cross-entropy, the baseline:
    ``L = -(1 - eps) log p_y - eps/C sum_c log p_c`` with ``p = softmax(z)`` and label
    smoothing ``eps`` (Szegedy et al. 2016, "Rethinking the Inception Architecture"); mean over
    non-ignored samples. ``class_counts`` is accepted and ignored.

    Args:
        class_counts: ignored (accepted so every loss has the same call signature).
        label_smoothing: eps in [0, 1).
        ignore_index: target value left out of the loss.
    """

    def __init__(
        self,
        *,
        class_counts: Sequence[int] | None = None,
        label_smoothing: float = 0.0,
        ignore_index: int | None = DEFAULT_IGNORE_INDEX,
    ) -> None:
        super().__init__(None, ignore_index=ignore_index, requires_counts=False)
        if (
            isinstance(label_smoothing, bool)
            or not isinstance(label_smoothing, int | float)
            or not 0.0 <= label_smoothing < 1.0
        ):
            raise _fail(
                "label_smoothing",
                label_smoothing,
                "must be in [0, 1)",
                "set loss.label_smoothing to e.g. 0.1, or 0 for none",
            )
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self._ce(logits, target, label_smoothing=self.label_smoothing)


class WeightedCrossEntropy(ImbalanceLoss):
    """Class-weighted cross-entropy ``L = sum_i w_{y_i} (-log p_{y_i}) / sum_i w_{y_i}`` (the
    weighted mean of :func:`torch.nn.functional.cross_entropy`), with weights

    * ``scheme="inverse"``: ``w_c ∝ 1 / n_c`` (inverse class frequency);
    * ``scheme="effective"``: ``w_c ∝ (1 - beta) / (1 - beta^n_c)``, the inverse effective
      number of samples (Cui et al., "Class-Balanced Loss Based on Effective Number of
      Samples", CVPR 2019),

    normalised so that ``sum_c w_c = C``.

    Deferred re-weighting (Cao et al. 2019, the ``Reweight`` and ``DRW`` train rules of
    ``kaidic/LDAM-DRW`` ``cifar_train.py``, with ``nn.CrossEntropyLoss(weight=...)``, the same
    weighted mean): with ``drw_epoch`` the loss is plain cross-entropy before epoch
    ``drw_epoch`` (0-based; the official 160 of 200) and weighted from it on (CE-DRW);
    ``None``: weighted from the start. Difference: Cui et al.'s official class-balanced softmax
    (``richardaecn/class-balanced-loss``) divides the weighted sum by N, not by the weight sum.

    Args:
        class_counts: training samples per class.
        scheme: ``"inverse"`` or ``"effective"``.
        beta: effective-number beta in [0, 1) (only for ``scheme="effective"``).
        drw_epoch: epoch from which the weights apply, or ``None`` for always.
        ignore_index: target value left out of the loss.
    """

    weight: Tensor

    def __init__(
        self,
        *,
        class_counts: Sequence[int],
        scheme: str = "effective",
        beta: float = 0.9999,
        drw_epoch: int | None = None,
        ignore_index: int | None = DEFAULT_IGNORE_INDEX,
    ) -> None:
        super().__init__(class_counts, ignore_index=ignore_index)
        self.beta = check_effective_beta("loss.beta", beta)
        if scheme == "inverse":
            w = inverse_frequency_weights(self._counts())
        elif scheme == "effective":
            w = effective_number_weights(self._counts(), self.beta)
        else:
            raise _fail("scheme", scheme, "unknown weighting scheme", "use inverse or effective")
        self.scheme = scheme
        self.drw_epoch = _check_drw_epoch(drw_epoch)
        self.register_buffer("weight", w)
        self.drw_active = drw_epoch is None

    def set_epoch(self, epoch: int) -> None:
        """Weights on from ``drw_epoch`` on (always without it)."""
        self.drw_active = self.drw_epoch is None or epoch >= self.drw_epoch

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self._ce(logits, target, weight=self.weight if self.drw_active else None)


class FocalLoss(ImbalanceLoss):
    """Softmax focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017):
    ``FL_i = -alpha_{y_i} (1 - p_{y_i})^gamma log p_{y_i}`` with ``p = softmax(z)``, averaged
    over the non-ignored samples (``sum_i FL_i / N_valid``, not weighted by alpha).
    ``gamma = 0`` and no alpha is plain cross-entropy. Without alpha it is ``FocalLoss`` of
    ``kaidic/LDAM-DRW`` (``losses.py``; the CIFAR-LT focal baseline uses ``gamma = 1``).

    Args:
        class_counts: training samples per class (only used to check ``alpha``'s length).
        gamma: focusing parameter >= 0.
        alpha: per-class weights (a list of C numbers >= 0) or ``None`` for all ones.
        ignore_index: target value left out of the loss.
    """

    alpha: Tensor | None

    def __init__(
        self,
        *,
        class_counts: Sequence[int],
        gamma: float = 2.0,
        alpha: Sequence[float] | None = None,
        ignore_index: int | None = DEFAULT_IGNORE_INDEX,
    ) -> None:
        super().__init__(class_counts, ignore_index=ignore_index)
        self.gamma = _check_nonneg("gamma", gamma, "set loss.gamma to e.g. 2 (0 = cross-entropy)")
        if alpha is None:
            self.register_buffer("alpha", None)
        else:
            values = _as_list("alpha", alpha)
            c = self.num_classes
            if len(values) != c:
                raise _fail(
                    "alpha",
                    values,
                    f"has {len(values)} entries but there are {c} classes",
                    f"give one weight per class ({c} numbers) or null for none",
                )
            if any(not math.isfinite(v) or v < 0 for v in values):
                raise _fail("alpha", values, "entries must be finite and >= 0", "fix the weights")
            self.register_buffer("alpha", torch.tensor(values, dtype=torch.float32))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            x, valid, safe = self._prepare(logits, target)
            log_p = F.log_softmax(x, dim=1).gather(1, safe[:, None]).squeeze(1)
            # 1 - p computed as -expm1(log p) (accurate near p = 1); clamped so that
            # (1 - p)^gamma has a finite gradient for 0 < gamma < 1
            one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(x.dtype).tiny)
            per = -one_minus_p.pow(self.gamma) * log_p
            if self.alpha is not None:
                per = per * self.alpha.to(x.dtype)[safe]
            per = per * valid.to(x.dtype)
            return self._mean(per, valid.sum())


class ClassBalancedFocal(FocalLoss):
    """Class-balanced focal loss (Cui et al., "Class-Balanced Loss Based on Effective Number of
    Samples", CVPR 2019; official code ``richardaecn/class-balanced-loss``, ``src/cifar_main.py``
    ``focal_loss`` and ``model_fn``), with the class weights
    ``alpha_c = (1 - beta) / (1 - beta^n_c)`` normalised to ``sum_c alpha_c = C``.

    * ``form="sigmoid"`` (default, the paper's): one-vs-all sigmoid focal loss over every
      class, weighted by the weight of the sample's class,
      ``L = sum_i sum_c alpha_{y_i} (1 - q_ic)^gamma BCE(z_ic, t_ic) / N`` with
      ``t_ic = [c = y_i]``, ``q_ic = sigmoid(z_ic)`` if ``t_ic`` else ``1 - sigmoid(z_ic)``;
      the modulator is the official stable ``exp(-gamma t z - gamma log(1 + e^-z))``. The
      official network initialises the last layer's bias to ``-log(C - 1)`` (prior 1/C per
      class): :attr:`head_bias_init`, which the training pipeline applies to the backbone's
      last linear layer.
    * ``form="softmax"``: ``-alpha_{y_i} (1 - p_{y_i})^gamma log p_{y_i}`` with
      ``p = softmax(z)``, mean over the N samples, as most later long-tail work uses it (the
      official ``softmax`` loss type is class-balanced softmax cross-entropy, without focal
      term).

    Both divide by N, the number of non-ignored samples, as the official code (by the number
    of positive labels), not by the weight sum. Differences: the official code excludes the
    last layer's bias from weight decay in the sigmoid form (here every parameter gets the
    optimizer's weight decay); a head without bias (``model.head=cosine``) gets no
    bias initialisation (a warning).

    Defaults: ``beta = 0.9999``, ``gamma = 1.0``, the paper's best setting for long-tailed
    CIFAR-10 at imbalance 100 (Table 2; tuned for the sigmoid form).

    Args:
        class_counts: training samples per class.
        beta: effective-number beta in [0, 1).
        gamma: focusing parameter >= 0.
        form: ``sigmoid`` or ``softmax``.
        ignore_index: target value left out of the loss.
    """

    FORMS = ("sigmoid", "softmax")

    def __init__(
        self,
        *,
        class_counts: Sequence[int],
        beta: float = 0.9999,
        gamma: float = 1.0,
        form: str = "sigmoid",
        ignore_index: int | None = DEFAULT_IGNORE_INDEX,
    ) -> None:
        super().__init__(class_counts=class_counts, gamma=gamma, ignore_index=ignore_index)
        if form not in self.FORMS:
            raise _fail("form", form, "unknown form", f"use one of {list(self.FORMS)}")
        self.form = form
        self.beta = check_effective_beta("loss.beta", beta)
        self.register_buffer("alpha", effective_number_weights(self._counts(), self.beta))

    @property
    def head_bias_init(self) -> float | None:
        """The official initial bias of the last layer, ``-log(C - 1)``, in the sigmoid form
        with C > 2 classes (0 for C = 2, which needs no change); None in the softmax form."""
        c = self.num_classes
        return -math.log(c - 1) if self.form == "sigmoid" and c is not None and c > 1 else None

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.form == "softmax":
            return super().forward(logits, target)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            x, valid, safe = self._prepare(logits, target)
            t = F.one_hot(safe, x.shape[1]).to(x.dtype)
            bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
            if self.gamma:
                bce = torch.exp(-self.gamma * t * x - self.gamma * F.softplus(-x)) * bce
            assert self.alpha is not None
            w = self.alpha.to(x.dtype)[safe] * valid.to(x.dtype)
            return self._mean(bce.sum(dim=1) * w, valid.sum())


class LogitAdjusted(ImbalanceLoss):
    """Logit-adjusted cross-entropy (Menon et al., "Long-Tail Learning via Logit Adjustment",
    ICLR 2021): ``L = -log softmax(z + tau * log pi)_y`` with the class prior
    ``pi_c = n_c / sum_k n_k``; predictions use the raw logits ``z``. Mean over non-ignored
    samples. As the loss of ``google-research/google-research`` ``logit_adjustment``; with
    ``tau = 1`` it equals :class:`BalancedSoftmax` (``log pi`` and ``log n`` differ by a
    constant, which softmax ignores).

    Args:
        class_counts: training samples per class.
        tau: adjustment strength >= 0 (1 is Fisher-consistent for the balanced error).
        ignore_index: target value left out of the loss.
    """

    log_prior: Tensor

    def __init__(
        self,
        *,
        class_counts: Sequence[int],
        tau: float = 1.0,
        ignore_index: int | None = DEFAULT_IGNORE_INDEX,
    ) -> None:
        super().__init__(class_counts, ignore_index=ignore_index)
        self.tau = _check_nonneg("tau", tau, "set loss.tau to e.g. 1 (0 = cross-entropy)")
        counts = self._counts()
        self.register_buffer("log_prior", torch.log(counts / counts.sum()))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            x, _, _ = self._prepare(logits, target)
            return self._ce(x + self.tau * self.log_prior.to(x.dtype), target)


class BalancedSoftmax(ImbalanceLoss):
    """Balanced softmax cross-entropy (Ren et al., "Balanced Meta-Softmax for Long-Tailed
    Visual Recognition", NeurIPS 2020): ``L = -log( n_y e^{z_y} / sum_c n_c e^{z_c} )``, i.e.
    cross-entropy on ``z + log n``. Mean over non-ignored samples, as
    ``jiawei-ren/BalancedMetaSoftmax`` (``loss/BalancedSoftmaxLoss.py``).

    Args:
        class_counts: training samples per class.
        ignore_index: target value left out of the loss.
    """

    log_counts: Tensor

    def __init__(
        self,
        *,
        class_counts: Sequence[int],
        ignore_index: int | None = DEFAULT_IGNORE_INDEX,
    ) -> None:
        super().__init__(class_counts, ignore_index=ignore_index)
        self.register_buffer("log_counts", torch.log(self._counts()))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            x, _, _ = self._prepare(logits, target)
            return self._ce(x + self.log_counts.to(x.dtype), target)


class LDAM(ImbalanceLoss):
    """Label-distribution-aware margin loss with optional deferred re-weighting (Cao et al.,
    "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss", NeurIPS 2019).

    Margins ``m_c = C_m / n_c^(1/4)`` with ``C_m`` chosen so that ``max_c m_c = max_m``; the
    true-class logit is lowered by its margin and the loss is cross-entropy on the scaled
    logits: ``L = -log softmax(s * (z - m_y e_y))_y``, as ``LDAMLoss`` of ``kaidic/LDAM-DRW``
    (``losses.py``). The paper's ``z`` are cosine similarities in [-1, 1]: its ResNet-32 uses
    the normalised head ``NormedLinear`` whenever the loss is LDAM
    (``model.head=cosine``, as the ``*_ldam_drw`` presets set); on a plain linear head
    a margin is met just by growing the logits, which is not the paper's method.

    DRW: before epoch ``drw_epoch`` the loss is unweighted; from ``drw_epoch`` on
    (``set_epoch(epoch)`` with ``epoch >= drw_epoch``) it is weighted by the effective-number
    weights ``w_c ∝ (1 - drw_beta) / (1 - drw_beta^n_c)`` normalised to ``sum_c w_c = C``,
    with F.cross_entropy's weighted mean ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` (the official
    ``DRW`` train rule: betas ``[0, 0.9999]`` switched at epoch 160 of 200, i.e. unweighted
    then weighted); ``None`` turns DRW off. No difference to the official loss known.

    Args:
        class_counts: training samples per class.
        max_m: largest margin (of the rarest class), >= 0.
        s: logit scale, > 0.
        drw_epoch: (0-based) epoch from which re-weighting is on, or ``None`` for never.
        drw_beta: effective-number beta in [0, 1) of the DRW weights.
        ignore_index: target value left out of the loss.
    """

    margins: Tensor
    drw_weights: Tensor

    def __init__(
        self,
        *,
        class_counts: Sequence[int],
        max_m: float = 0.5,
        s: float = 30.0,
        drw_epoch: int | None = None,
        drw_beta: float = 0.9999,
        ignore_index: int | None = DEFAULT_IGNORE_INDEX,
    ) -> None:
        super().__init__(class_counts, ignore_index=ignore_index)
        self.max_m = _check_nonneg("max_m", max_m, "set loss.max_m to e.g. 0.5 (0 = no margin)")
        if isinstance(s, bool) or not isinstance(s, int | float) or not math.isfinite(s) or s <= 0:
            raise _fail("s", s, "must be a finite number > 0", "set loss.s to e.g. 30")
        self.s = float(s)
        self.drw_epoch = _check_drw_epoch(drw_epoch)
        self.drw_beta = check_effective_beta("loss.drw_beta", drw_beta)
        counts = self._counts().to(torch.float64)
        m = counts.pow(-0.25)
        self.register_buffer("margins", (m * (self.max_m / m.max())).to(torch.float32))
        self.register_buffer("drw_weights", effective_number_weights(self._counts(), drw_beta))
        self.drw_active = False

    @property
    def weight(self) -> Tensor | None:
        """The per-class weights in use now: the DRW weights once DRW is on, else None."""
        return self.drw_weights if self.drw_active else None

    def set_epoch(self, epoch: int) -> None:
        """Turn DRW on from ``drw_epoch`` on (and off before it)."""
        self.drw_active = self.drw_epoch is not None and epoch >= self.drw_epoch

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            x, _, safe = self._prepare(logits, target)
            margin = self.margins.to(x.dtype)[safe]
            onehot = F.one_hot(safe, x.shape[1]).to(x.dtype)
            adjusted = self.s * (x - onehot * margin[:, None])
            return self._ce(adjusted, target, weight=self.weight)
