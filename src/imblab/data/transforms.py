"""Batched image transforms that run on the batch's device (a few kernels per batch, no loop over
samples): random translation, flip and resized crop of float images, and the pixel statistics
that normalisation uses."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_translate(
    x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Shift each image of ``x`` (B, C, H, W) by its own uniform random (dy, dx) in
    [-max_shift, max_shift]^2, filling with 0: zero-pad by ``max_shift``, then read an H x W
    window at a per-sample offset with one ``gather`` over the flattened padded images (a
    handful of kernels for the whole batch, no loop over samples)."""
    b, c, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s))
    wp = w + 2 * s
    offsets = torch.randint(0, 2 * s + 1, (2, b, 1, 1), device=x.device, generator=generator)
    window = torch.arange(h, device=x.device)[:, None] * wp + torch.arange(w, device=x.device)
    index = (window.view(1, 1, h * w) + (offsets[0] * wp + offsets[1])).expand(b, c, h * w)
    return padded.view(b, c, -1).gather(2, index).view(b, c, h, w)


def random_hflip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image of ``x`` (B, C, H, W) left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=generator) < 0.5
    return torch.where(flip, x.flip(-1), x)


def random_resized_crop(
    x: torch.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    hflip: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per image of ``x`` (B, C, H, W, float): a random crop covering an area fraction
    ``s ~ U(scale)`` with aspect ratio ``r`` (``log r ~ U(log ratio)``; sides ``sqrt(s r)``,
    ``sqrt(s / r)`` of the image's, capped at 1) at a uniform random position, resized back to
    H x W (bilinear) and, with ``hflip``, mirrored with probability 1/2. One ``affine_grid`` +
    one ``grid_sample`` for the whole batch."""
    b, device = x.shape[0], x.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(b, device=device, generator=generator) * (high - low) + low

    s = uniform(*scale)
    r = uniform(math.log(ratio[0]), math.log(ratio[1])).exp()
    w = (s * r).sqrt().clamp(max=1.0)
    h = (s / r).sqrt().clamp(max=1.0)
    tx = uniform(-1, 1) * (1 - w)
    ty = uniform(-1, 1) * (1 - h)
    sign = torch.ones(b, device=device)
    if hflip:
        sign = torch.where(uniform(0, 1) < 0.5, -sign, sign)
    theta = torch.zeros(b, 2, 3, device=device, dtype=x.dtype)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def pixel_mean_std(images: torch.Tensor) -> tuple[float, float]:
    """Mean and std of ``images / 255`` over all pixels, exact from a 256-bin histogram of the
    uint8 values (no float copy of the images)."""
    hist = torch.bincount(images.flatten(), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    n = hist.sum()
    mean = (hist * values).sum() / n
    var = (hist * (values - mean) ** 2).sum() / n
    return mean.item(), var.sqrt().item()
