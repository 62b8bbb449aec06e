"""Image folders for the image-folder datamodule's tests, generated with Pillow."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

from ..scrape.badfiles import CLASS_COLOURS, noise_image


def write_folder(
    root: Path, counts: Mapping[str, int], *, size: int = 24, start: int = 0
) -> list[str]:
    """Write ``counts[name]`` unique images into ``root/<name>/`` (alternately JPEG and PNG,
    the class's colour plus noise, so a model can learn them), numbered from ``start``; return
    their paths relative to ``root``."""
    written = []
    for k, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + n):
            image = noise_image(100_000 * (k + 1) + i, size, CLASS_COLOURS[k % len(CLASS_COLOURS)])
            fmt, ext = ("JPEG", "jpg") if i % 2 == 0 else ("PNG", "png")
            buf = io.BytesIO()
            image.save(buf, format=fmt)
            rel = f"{name}/img_{i:05d}.{ext}"
            (root / rel).write_bytes(buf.getvalue())
            written.append(rel)
    return written
