"""The cache of decoded images: the files of every split decoded once, in worker processes, into
one uint8 (N, C, S, S) tensor, optionally kept on disk (one ``.pt`` file per root, image size,
colour mode and file list) for later runs."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from imblab.data.image_files import ImageFiles

log = logging.getLogger(__name__)

#: uint8 images (N, C, S, S) and the positions that failed to decode (left zero)
Decoded = tuple[torch.Tensor, list[int]]


def cache_key(
    root: Path, image_size: int, grayscale: bool, files: Sequence[tuple[str, str]]
) -> str:
    """24 hex digits naming the decoded images of ``files`` ((path, sha256) pairs under
    ``root``): the sha256 of the resolved root, size, colour mode and relative paths and
    contents."""
    content = [
        str(root.resolve()),
        image_size,
        grayscale,
        [(Path(path).relative_to(root).as_posix(), sha) for path, sha in files],
    ]
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:24]


def decode_images(
    paths: list[str],
    labels: torch.Tensor,
    *,
    image_size: int,
    grayscale: bool,
    max_pixels: int,
    num_workers: int,
    cache_file: Path | None = None,
) -> Decoded:
    """The decoded images of ``paths``: read from ``cache_file`` when it holds them (a damaged
    file is rebuilt), else decoded in ``num_workers`` processes and, with ``cache_file``, saved
    there."""
    decoded = None if cache_file is None else _read(cache_file)
    if decoded is None:
        decoded = _decode(paths, labels, image_size, grayscale, max_pixels, num_workers)
        if cache_file is not None:
            _save(cache_file, *decoded)
    return decoded


def _read(path: Path) -> Decoded | None:
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        decoded = stored["images"], list(stored["failed"])
    except Exception as err:  # a damaged cache file is rebuilt
        log.warning("rebuilding cache %s (%s)", path, err)
        return None
    log.info("decoded images read from cache %s", path)
    return decoded


def _decode(
    paths: list[str],
    labels: torch.Tensor,
    image_size: int,
    grayscale: bool,
    max_pixels: int,
    num_workers: int,
) -> Decoded:
    c, s = 1 if grayscale else 3, image_size
    out = torch.zeros(len(paths), c, s, s, dtype=torch.uint8)
    log.info(
        "decoding %d images into a %.1f MB uint8 cache (%d workers)",
        len(paths),
        out.numel() / 2**20,
        num_workers,
    )
    dataset = ImageFiles(paths, labels, s, grayscale, max_pixels, substitute=False)
    loader = DataLoader(dataset, batch_size=64, num_workers=num_workers, collate_fn=list)
    failed: list[int] = []
    for batch in loader:
        for image, _, i in batch:
            if image is None:
                failed.append(i)
            else:
                out[i] = image
    return out, failed


def _save(path: Path, images: torch.Tensor, failed: list[int]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"images": images, "failed": failed}, tmp)
        os.replace(tmp, path)
        log.info("decoded images cached in %s", path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        log.warning("could not write the image cache %s (%s); continuing without", path, err)
