"""Per-class weights from training class counts, shared by the losses and the samplers.

Each function takes the per-class counts ``n_c`` as a 1-d tensor and returns one weight per
class; :func:`check_effective_beta` validates the ``beta`` of the effective-number weights for
the config key it came from.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from imblab.errors import config_error

__all__ = ["check_effective_beta", "effective_number_weights", "inverse_frequency_weights"]


def check_effective_beta(key: str, beta: float) -> float:
    """The effective-number ``beta`` (Cui et al. 2019) as a float in [0, 1), else the one-line
    ConfigError for config key ``key`` (e.g. ``loss.beta``, ``sampler.beta``)."""
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0.0 <= beta < 1.0:
        raise config_error(
            key,
            beta,
            "must be in [0, 1)",
            f"set {key} to e.g. 0.9999 (Cui et al. 2019; closer to 1 = closer to 1/n_c)",
        )
    return float(beta)


def effective_number_weights(counts: Tensor, beta: float) -> Tensor:
    """Cui et al. 2019 class-balanced weights ``(1 - beta) / (1 - beta^n_c)``, normalised to
    sum to C (the number of classes). ``beta = 0`` gives all ones; ``beta -> 1`` tends to
    ``1/n_c`` normalised. Computed in float64 for accuracy, returned in ``counts.dtype``."""
    n = counts.to(torch.float64)
    # 1 - beta^n = -expm1(n * log(beta)) is accurate for beta close to 1 (beta = 0: all ones)
    w = torch.ones_like(n) if beta == 0.0 else (1.0 - beta) / -torch.expm1(n * math.log(beta))
    return (w * (n.numel() / w.sum())).to(counts.dtype)


def inverse_frequency_weights(counts: Tensor) -> Tensor:
    """Weights ``1 / n_c`` normalised to sum to C, in ``counts.dtype``."""
    w = 1.0 / counts.to(torch.float64)
    return (w * (counts.numel() / w.sum())).to(counts.dtype)
