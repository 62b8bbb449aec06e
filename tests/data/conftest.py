"""Fixtures for the data tests: small fake IDX files, a local HTTP mirror, the real t10k files."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from imblab.data import mnist_sources as mnist

# the official t10k files: $IMBLAB_DATA_DIR/mnist, else the shared/ folder beside the checkout
SHARED_MNIST = (
    Path(os.environ["IMBLAB_DATA_DIR"]) / "mnist"
    if os.environ.get("IMBLAB_DATA_DIR")
    else Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"
)
TRAIN_PER_CLASS = 30
TEST_PER_CLASS = 12


def fake_digits(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct random uint8 (N, 28, 28) images and shuffled uint8 labels, per_class of each."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), per_class))
    images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
    return images, labels


def write_fake_mnist(root: Path, seed: int = 0) -> list[tuple[str, str]]:
    """Write the four MNIST .gz IDX files (fake, small) into root; return (filename, md5)s."""
    root.mkdir(parents=True, exist_ok=True)
    train_x, train_y = fake_digits(TRAIN_PER_CLASS, seed)
    test_x, test_y = fake_digits(TEST_PER_CLASS, seed + 1)
    arrays = [train_x, train_y, test_x, test_y]
    resources = []
    for (name, _), array in zip(mnist.RESOURCES, arrays, strict=True):
        mnist.write_idx(root / name, array)
        resources.append((name, hashlib.md5((root / name).read_bytes()).hexdigest()))
    return resources


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Mirror:
    url: str
    root: Path
    resources: list[tuple[str, str]]


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(key, "127.0.0.1,localhost")


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_proxy: None) -> Iterator[Mirror]:
    """A threaded HTTP server on 127.0.0.1 serving fake MNIST .gz files under /good/ (RESOURCES
    patched to their md5s) and copies with flipped bytes under /bad/."""
    root = tmp_path / "www"
    resources = write_fake_mnist(root / "good")
    (root / "bad").mkdir()
    for name, _ in resources:
        data = bytearray((root / "good" / name).read_bytes())
        data[-10] ^= 0xFF
        (root / "bad" / name).write_bytes(bytes(data))
    monkeypatch.setattr(mnist, "RESOURCES", resources)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield Mirror(f"http://127.0.0.1:{server.server_address[1]}/", root, resources)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def t10k_dir(tmp_path: Path) -> Path:
    """A tmp data_dir with links to the real official t10k files (skips when they are absent)."""
    names = [name for name, _ in mnist.RESOURCES[2:]]
    if not all((SHARED_MNIST / n).is_file() for n in names):
        pytest.skip(f"official MNIST t10k files not in {SHARED_MNIST}")
    data_dir = tmp_path / "t10k"
    data_dir.mkdir()
    for n in names:
        os.symlink(SHARED_MNIST / n, data_dir / n)
    return data_dir
