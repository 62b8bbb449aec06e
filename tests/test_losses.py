"""imblab.losses: hand-computed values, ignore_index, gradients, dtypes, DRW, config errors and
the conf/loss/*.yaml group. Expected values are computed here from the formulas with plain
Python math, never by calling the code under test."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import hydra.utils
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from imblab.errors import ConfigError
from imblab.losses import (
    LDAM,
    BalancedSoftmax,
    ClassBalancedFocal,
    CrossEntropy,
    FocalLoss,
    ImbalanceLoss,
    LogitAdjusted,
    WeightedCrossEntropy,
)

LOSS_DIR = Path(__file__).resolve().parents[1] / "conf" / "loss"
COUNTS = [100, 10, 1]
LOGITS = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0]]
TARGET = [0, 2, 1]
BETA = 0.9999


def _logits() -> torch.Tensor:
    return torch.tensor(LOGITS, requires_grad=True)


def _target() -> torch.Tensor:
    return torch.tensor(TARGET)


def log_softmax(row: list[float]) -> list[float]:
    lse = math.log(sum(math.exp(v) for v in row))
    return [v - lse for v in row]


def nll(rows: list[list[float]], target: list[int]) -> list[float]:
    return [-log_softmax(r)[y] for r, y in zip(rows, target, strict=True)]


def normalise(w: list[float]) -> list[float]:
    return [v * len(w) / sum(w) for v in w]


def effective(counts: list[int], beta: float) -> list[float]:
    return normalise([(1 - beta) / (1 - beta**n) for n in counts])


def weighted_mean(losses: list[float], w: list[float], target: list[int]) -> float:
    return sum(w[y] * v for v, y in zip(losses, target, strict=True)) / sum(w[y] for y in target)


ALL = {
    "ce": lambda: CrossEntropy(class_counts=COUNTS),
    "weighted_ce_inverse": lambda: WeightedCrossEntropy(class_counts=COUNTS, scheme="inverse"),
    "weighted_ce_effective": lambda: WeightedCrossEntropy(class_counts=COUNTS),
    "focal": lambda: FocalLoss(class_counts=COUNTS, alpha=[0.25, 0.5, 1.0]),
    "cb_focal": lambda: ClassBalancedFocal(class_counts=COUNTS),
    "logit_adjusted": lambda: LogitAdjusted(class_counts=COUNTS),
    "balanced_softmax": lambda: BalancedSoftmax(class_counts=COUNTS),
    "ldam": lambda: LDAM(class_counts=COUNTS),
    "ldam_drw": lambda: LDAM(class_counts=COUNTS, drw_epoch=0),
}


def _make(name: str) -> ImbalanceLoss:
    loss = ALL[name]()
    loss.set_epoch(1)
    return loss


# ---- hand-computed values ------------------------------------------------------------------


def test_ce_value() -> None:
    expected = sum(nll(LOGITS, TARGET)) / 3
    assert CrossEntropy(class_counts=COUNTS)(_logits(), _target()).item() == pytest.approx(
        expected, rel=1e-5
    )


def test_ce_label_smoothing_value() -> None:
    eps = 0.1
    per = []
    for row, y in zip(LOGITS, TARGET, strict=True):
        lp = log_softmax(row)
        per.append(-(1 - eps) * lp[y] - eps / 3 * sum(lp))
    got = CrossEntropy(label_smoothing=eps)(_logits(), _target()).item()
    assert got == pytest.approx(sum(per) / 3, rel=1e-5)


@pytest.mark.parametrize("scheme", ["inverse", "effective"])
def test_weighted_ce_value(scheme: str) -> None:
    w = normalise([1 / n for n in COUNTS]) if scheme == "inverse" else effective(COUNTS, BETA)
    assert sum(w) == pytest.approx(3)
    expected = weighted_mean(nll(LOGITS, TARGET), w, TARGET)
    loss = WeightedCrossEntropy(class_counts=COUNTS, scheme=scheme, beta=BETA)
    assert loss.weight.tolist() == pytest.approx(w, rel=1e-5)
    assert loss(_logits(), _target()).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("alpha", [None, [0.25, 0.5, 1.0]])
def test_focal_value(alpha: list[float] | None) -> None:
    gamma = 2.0
    a = alpha or [1.0, 1.0, 1.0]
    per = []
    for row, y in zip(LOGITS, TARGET, strict=True):
        p = math.exp(log_softmax(row)[y])
        per.append(-a[y] * (1 - p) ** gamma * math.log(p))
    got = FocalLoss(class_counts=COUNTS, gamma=gamma, alpha=alpha)(_logits(), _target())
    assert got.item() == pytest.approx(sum(per) / 3, rel=1e-5)


def test_focal_gamma0_is_ce() -> None:
    got = FocalLoss(class_counts=COUNTS, gamma=0)(_logits(), _target()).item()
    assert got == pytest.approx(sum(nll(LOGITS, TARGET)) / 3, rel=1e-5)


def test_cb_focal_softmax_value() -> None:
    beta, gamma = 0.99, 1.0
    a = effective(COUNTS, beta)
    per = []
    for row, y in zip(LOGITS, TARGET, strict=True):
        p = math.exp(log_softmax(row)[y])
        per.append(-a[y] * (1 - p) ** gamma * math.log(p))
    loss = ClassBalancedFocal(class_counts=COUNTS, beta=beta, gamma=gamma, form="softmax")
    assert loss(_logits(), _target()).item() == pytest.approx(sum(per) / 3, rel=1e-5)
    assert ClassBalancedFocal(class_counts=COUNTS).gamma == 1.0  # documented paper default
    assert ClassBalancedFocal(class_counts=COUNTS, form="softmax").head_bias_init is None


def official_sigmoid_focal(
    logits: np.ndarray, target: np.ndarray, counts: list[int], beta: float, gamma: float
) -> float:
    """NumPy transcription of richardaecn/class-balanced-loss ``src/cifar_main.py``: the
    per-class weights of ``main`` tiled per sample by ``model_fn`` and ``focal_loss``."""
    effective_num = 1.0 - np.power(beta, counts)
    weights = (1.0 - beta) / np.array(effective_num)
    weights = weights / np.sum(weights) * len(counts)
    labels = np.eye(len(counts))[target]
    alpha = np.tile((weights[None, :] * labels).sum(axis=1, keepdims=True), [1, len(counts)])
    # tf.nn.sigmoid_cross_entropy_with_logits: max(x, 0) - x * z + log(1 + exp(-|x|))
    ce = np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))
    if gamma == 0.0:
        modulator = 1.0
    else:
        modulator = np.exp(-gamma * labels * logits - gamma * np.log1p(np.exp(-1.0 * logits)))
    return float(np.sum(alpha * modulator * ce) / np.sum(labels))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("beta", [0.0, 0.99, 0.9999])
def test_cb_focal_sigmoid_matches_the_official_code(gamma: float, beta: float) -> None:
    loss = ClassBalancedFocal(class_counts=COUNTS, beta=beta, gamma=gamma)
    assert loss.form == "sigmoid"  # the default, the paper's
    expected = official_sigmoid_focal(np.array(LOGITS), np.array(TARGET), COUNTS, beta, gamma)
    assert loss(_logits(), _target()).item() == pytest.approx(expected, rel=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 20),
    c=st.integers(2, 12),
    gamma=st.floats(0.0, 3.0),
    scale=st.floats(0.1, 20.0),
)
def test_cb_focal_sigmoid_random_cases(seed: int, n: int, c: int, gamma: float, scale: float):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 5000, size=c).tolist()
    logits = rng.normal(size=(n, c)) * scale
    target = rng.integers(0, c, size=n)
    loss = ClassBalancedFocal(class_counts=counts, beta=0.999, gamma=gamma)
    got = loss(torch.tensor(logits), torch.tensor(target)).item()  # float64 stays float64
    expected = official_sigmoid_focal(logits, target, counts, 0.999, gamma)
    assert got == pytest.approx(expected, rel=1e-7, abs=1e-12)


def test_cb_focal_sigmoid_bias_init_is_minus_log_c_minus_1() -> None:
    assert ClassBalancedFocal(class_counts=COUNTS).head_bias_init == pytest.approx(-math.log(2))
    assert ClassBalancedFocal(class_counts=[5] * 10).head_bias_init == pytest.approx(-math.log(9))
    with pytest.raises(ConfigError, match=r"^loss\.form='tanh': "):
        ClassBalancedFocal(class_counts=COUNTS, form="tanh")


def test_weighted_ce_drw_is_plain_ce_before_drw_epoch() -> None:
    w = effective(COUNTS, BETA)
    plain = sum(nll(LOGITS, TARGET)) / 3
    weighted = weighted_mean(nll(LOGITS, TARGET), w, TARGET)
    loss = WeightedCrossEntropy(class_counts=COUNTS, drw_epoch=3)
    for epoch, expected in [(0, plain), (2, plain), (3, weighted), (9, weighted), (1, plain)]:
        loss.set_epoch(epoch)
        assert loss(_logits(), _target()).item() == pytest.approx(expected, rel=1e-5)
    always = WeightedCrossEntropy(class_counts=COUNTS)  # drw_epoch=None: weighted throughout
    assert always(_logits(), _target()).item() == pytest.approx(weighted, rel=1e-5)
    with pytest.raises(ConfigError, match=r"^loss\.drw_epoch=-1: "):
        WeightedCrossEntropy(class_counts=COUNTS, drw_epoch=-1)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_logit_adjusted_value(tau: float) -> None:
    total = sum(COUNTS)
    shift = [tau * math.log(n / total) for n in COUNTS]
    rows = [[v + s for v, s in zip(r, shift, strict=True)] for r in LOGITS]
    expected = sum(nll(rows, TARGET)) / 3
    got = LogitAdjusted(class_counts=COUNTS, tau=tau)(_logits(), _target()).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_balanced_softmax_value() -> None:
    per = []
    for row, y in zip(LOGITS, TARGET, strict=True):
        num = COUNTS[y] * math.exp(row[y])
        den = sum(n * math.exp(v) for n, v in zip(COUNTS, row, strict=True))
        per.append(-math.log(num / den))
    got = BalancedSoftmax(class_counts=COUNTS)(_logits(), _target()).item()
    assert got == pytest.approx(sum(per) / 3, rel=1e-5)


def _ldam_expected(max_m: float, s: float, w: list[float] | None) -> float:
    raw = [n**-0.25 for n in COUNTS]
    m = [v * max_m / max(raw) for v in raw]
    rows = []
    for row, y in zip(LOGITS, TARGET, strict=True):
        rows.append([s * (v - (m[y] if c == y else 0.0)) for c, v in enumerate(row)])
    losses = nll(rows, TARGET)
    return sum(losses) / 3 if w is None else weighted_mean(losses, w, TARGET)


def test_ldam_value() -> None:
    loss = LDAM(class_counts=COUNTS, max_m=0.5, s=30.0)
    assert max(loss.margins.tolist()) == pytest.approx(0.5)
    assert loss(_logits(), _target()).item() == pytest.approx(
        _ldam_expected(0.5, 30.0, None), rel=1e-5
    )


def test_ldam_drw_switches_at_drw_epoch() -> None:
    loss = LDAM(class_counts=COUNTS, max_m=0.3, s=10.0, drw_epoch=2)
    w = effective(COUNTS, BETA)
    unweighted = _ldam_expected(0.3, 10.0, None)
    weighted = _ldam_expected(0.3, 10.0, w)
    assert unweighted != pytest.approx(weighted, rel=1e-3)
    for epoch, expected in [(0, unweighted), (1, unweighted), (2, weighted), (5, weighted)]:
        loss.set_epoch(epoch)
        assert (loss.weight is None) == (epoch < 2)
        assert loss(_logits(), _target()).item() == pytest.approx(expected, rel=1e-5)
    assert loss.drw_weights.tolist() == pytest.approx(w, rel=1e-5)
    loss.set_epoch(0)  # e.g. a restarted fit
    assert loss.weight is None
    off = LDAM(class_counts=COUNTS)  # drw_epoch=None: never weighted
    off.set_epoch(10_000)
    assert off.weight is None


# ---- behaviour shared by every loss --------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALL))
def test_ignore_index(name: str) -> None:
    loss = _make(name)
    full = loss(_logits(), _target())
    subset = loss(_logits()[[0, 2]], _target()[[0, 2]])
    ignored = loss(_logits(), torch.tensor([0, -100, 1]))
    assert ignored.item() == pytest.approx(subset.item(), rel=1e-5)
    assert ignored.item() != pytest.approx(full.item(), rel=1e-4)
    # a custom (out-of-range) ignore_index and an all-ignored batch
    custom = type(loss)(**{**_kwargs(name), "ignore_index": 255})
    custom.set_epoch(1)
    assert custom(_logits(), torch.tensor([0, 255, 1])).item() == pytest.approx(
        subset.item(), rel=1e-5
    )
    x = _logits()
    none = loss(x, torch.full((3,), -100))
    assert none.item() == 0.0
    none.backward()
    assert x.grad is not None and torch.all(x.grad == 0)


def _kwargs(name: str) -> dict[str, Any]:
    return {
        "ce": {"class_counts": COUNTS},
        "weighted_ce_inverse": {"class_counts": COUNTS, "scheme": "inverse"},
        "weighted_ce_effective": {"class_counts": COUNTS},
        "focal": {"class_counts": COUNTS, "alpha": [0.25, 0.5, 1.0]},
        "cb_focal": {"class_counts": COUNTS},
        "logit_adjusted": {"class_counts": COUNTS},
        "balanced_softmax": {"class_counts": COUNTS},
        "ldam": {"class_counts": COUNTS},
        "ldam_drw": {"class_counts": COUNTS, "drw_epoch": 0},
    }[name]


@pytest.mark.parametrize("name", sorted(ALL))
def test_gradients_flow(name: str) -> None:
    x = _logits()
    loss = _make(name)(x, _target())
    assert loss.dim() == 0 and loss.dtype == torch.float32
    loss.backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(ALL))
def test_float64_and_autocast(name: str) -> None:
    loss = _make(name)
    ref = loss(_logits(), _target()).item()
    loss64 = loss.to(torch.float64)
    for buf in loss64.buffers():
        assert buf.dtype == torch.float64
    out64 = loss64(_logits().double(), _target())
    assert out64.dtype == torch.float64
    assert out64.item() == pytest.approx(ref, rel=1e-5)
    loss32 = _make(name)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = loss32(_logits().to(torch.bfloat16), _target())
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_confident_predictions_stay_finite() -> None:
    x = torch.tensor([[50.0, -50.0, -50.0], [-50.0, 50.0, -50.0]], requires_grad=True)
    y = torch.tensor([0, 1])
    for gamma in (0.5, 2.0):
        out = FocalLoss(class_counts=COUNTS, gamma=gamma)(x, y)
        out.backward()
        assert torch.isfinite(out) and x.grad is not None and torch.isfinite(x.grad).all()
        x.grad = None


def test_class_counts_buffer_and_set_epoch_default() -> None:
    loss = BalancedSoftmax(class_counts=COUNTS)
    assert loss.class_counts is not None
    assert loss.class_counts.dtype == torch.float32
    assert loss.class_counts.tolist() == [100.0, 10.0, 1.0]
    assert "class_counts" in dict(loss.named_buffers())
    loss.set_epoch(3)  # no-op
    assert CrossEntropy().class_counts is None


def test_class_count_mismatch_with_logits() -> None:
    with pytest.raises(ValueError, match="class_counts has 3"):
        BalancedSoftmax(class_counts=COUNTS)(torch.zeros(2, 4), torch.tensor([0, 1]))


# ---- config errors -------------------------------------------------------------------------

BAD: list[tuple[type[ImbalanceLoss], dict[str, Any], str]] = [
    (WeightedCrossEntropy, {"beta": 1.0}, "beta"),
    (WeightedCrossEntropy, {"beta": -0.1}, "beta"),
    (WeightedCrossEntropy, {"scheme": "sqrt"}, "scheme"),
    (ClassBalancedFocal, {"beta": 1.5}, "beta"),
    (ClassBalancedFocal, {"gamma": -1.0}, "gamma"),
    (FocalLoss, {"gamma": -0.5}, "gamma"),
    (FocalLoss, {"alpha": [0.5, 0.5]}, "alpha"),
    (FocalLoss, {"alpha": [0.5, -0.5, 1.0]}, "alpha"),
    (LogitAdjusted, {"tau": -1.0}, "tau"),
    (LDAM, {"max_m": -0.1}, "max_m"),
    (LDAM, {"s": 0.0}, "s"),
    (LDAM, {"s": -30.0}, "s"),
    (LDAM, {"drw_epoch": -1}, "drw_epoch"),
    (LDAM, {"drw_beta": 1.0}, "drw_beta"),
    (BalancedSoftmax, {"ignore_index": "x"}, "ignore_index"),
    (BalancedSoftmax, {"class_counts": []}, "class_counts"),
    (BalancedSoftmax, {"class_counts": [10, -1, 3]}, "class_counts"),
    (BalancedSoftmax, {"class_counts": None}, "class_counts"),
]


@pytest.mark.parametrize(("cls", "kwargs", "key"), BAD)
def test_config_errors(cls: type[ImbalanceLoss], kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        cls(**{"class_counts": COUNTS, **kwargs})
    msg = str(info.value)
    assert msg.startswith(f"loss.{key}=")
    assert "\n" not in msg and "; " in msg


def test_label_smoothing_error() -> None:
    with pytest.raises(ConfigError, match=r"^loss\.label_smoothing=1\.0: "):
        CrossEntropy(label_smoothing=1.0)


def test_empty_class_error() -> None:
    with pytest.raises(ConfigError) as info:
        LDAM(class_counts=[100, 0, 1])
    msg = str(info.value)
    assert msg.startswith("loss.class_counts=[100, 0, 1]: class 1 has no training samples; ")
    assert "\n" not in msg
    CrossEntropy(class_counts=[100, 0, 1])  # plain CE ignores the counts


# ---- the conf/loss config group ------------------------------------------------------------

YAMLS = sorted(LOSS_DIR.glob("*.yaml"))


def test_config_group_complete() -> None:
    names = {p.stem for p in YAMLS}
    assert names == {
        "ce",
        "weighted_ce",
        "focal",
        "cb_focal",
        "logit_adjusted",
        "balanced_softmax",
        "ldam",
    }


@pytest.mark.parametrize("path", YAMLS, ids=[p.stem for p in YAMLS])
def test_yaml_instantiates(path: Path) -> None:
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ") and len(lines[0]) > 10
    for i, line in enumerate(lines[1:], start=1):  # every option documented by a comment
        if line and not line.startswith(("#", "_target_")):
            assert lines[i - 1].startswith("#"), f"{path.name}: {line!r} has no comment"
    cfg = OmegaConf.load(path)
    assert str(cfg["_target_"]).startswith("imblab.losses.")
    loss = hydra.utils.instantiate(cfg, class_counts=[100, 10, 1])
    assert isinstance(loss, ImbalanceLoss)
    loss.set_epoch(0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, generator=gen, requires_grad=True)
    y = torch.randint(0, 3, (8,), generator=gen)
    out = loss(x, y)
    assert torch.isfinite(out)
    out.backward()


def test_group_composes_under_loss_key(compose_cfg: Any) -> None:
    assert compose_cfg().loss["_target_"] == "imblab.losses.CrossEntropy"  # the default
    cfg = compose_cfg("loss=ldam", "loss.drw_epoch=3")
    assert cfg.loss["_target_"] == "imblab.losses.LDAM"
    loss = hydra.utils.instantiate(cfg.loss, class_counts=COUNTS)
    assert isinstance(loss, LDAM) and loss.drw_epoch == 3
