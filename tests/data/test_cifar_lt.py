"""data=cifar_lt: the official archive format (str and bytes keys), download from a local
mirror with md5 checks, the long-tailed profile of Cao et al., the augmentation, and training
on a generated archive through ``imblab-train``."""

from __future__ import annotations

import functools
import http.server
import json
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from imblab.data import cifar_sources
from imblab.data.cifar_lt import CIFARLTDataModule
from imblab.errors import ConfigError
from tests.data.cifar_archive import Archive, write_archive, write_extracted


def official_counts(n_max: int, num_classes: int, rho: float) -> list[int]:
    """``get_img_num_per_cls`` of kaidic/LDAM-DRW ``imbalance_cifar.py`` (imb_factor = 1/rho)."""
    return [int(n_max * ((1 / rho) ** (i / (num_classes - 1.0)))) for i in range(num_classes)]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Archive]]:
    """A generated CIFAR-10 archive served over HTTP on 127.0.0.1: (its URL, the archive)."""
    for key in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(key, "127.0.0.1,localhost")
    archive = write_archive(tmp_path / "www")
    handler = functools.partial(_Quiet, directory=str(tmp_path / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        port = server.server_address[1]
        yield f"http://127.0.0.1:{port}/{archive.path.name}", archive
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def module(data_dir: Path, **options: object) -> CIFARLTDataModule:
    options = {"val_source": "split", "val_fraction": 0.2, "batch_size": 16, **options}
    options = {"on_device": False, **options}
    return CIFARLTDataModule(data_dir=str(data_dir), **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_reads_the_official_pickles_with_str_or_bytes_keys(tmp_path: Path, bytes_keys: bool):
    archive = write_extracted(tmp_path, bytes_keys=bytes_keys)
    dm = module(tmp_path, file_md5=archive.file_md5, imbalance_ratio=10)
    raw = dm.load_raw(torch.Generator())
    assert list(raw.class_names) == [f"class{c}" for c in range(10)]
    np.testing.assert_array_equal(raw.train[0].numpy(), archive.train[0])
    np.testing.assert_array_equal(raw.train[1].numpy(), archive.train[1])
    np.testing.assert_array_equal(raw.test[0].numpy(), archive.test[0])
    np.testing.assert_array_equal(raw.test[1].numpy(), archive.test[1])


@pytest.mark.parametrize(("num_classes", "n_max"), [(10, 5000), (100, 500)])
@pytest.mark.parametrize("rho", [10, 50, 100, 200])
def test_the_real_archives_get_the_official_long_tailed_counts(
    tmp_path: Path, num_classes: int, n_max: int, rho: int
):
    dm = module(tmp_path, imbalance_ratio=rho)
    assert dm.target_counts([n_max] * num_classes) == official_counts(n_max, num_classes, rho)


def test_a_small_archive_keeps_every_class_and_the_test_batch_balanced(tmp_path: Path):
    archive = write_extracted(tmp_path)
    dm = module(tmp_path, file_md5=archive.file_md5, imbalance_ratio=100)
    dm.setup()
    pool = [t + v for t, v in zip(dm.train_counts, dm.val_counts, strict=True)]
    # the official formula, where it rounds a class to 0 images imblab keeps 1
    assert pool == [max(1, n) for n in official_counts(30, 10, 100)]
    assert dm.test_counts == [10] * 10
    assert all(n >= 1 for n in dm.train_counts)
    x, _ = dm.split("train")
    assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32)
    mean = (x.double() / 255).mean(dim=(0, 2, 3))
    torch.testing.assert_close(torch.tensor(dm.mean, dtype=torch.float64), mean)


def test_augmentation_is_a_zero_padded_random_crop_and_flip(tmp_path: Path):
    dm = module(tmp_path)
    x = torch.rand(6, 3, 32, 32)
    out = dm.augment(x)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):
        crops = [
            c
            for dy in range(9)
            for dx in range(9)
            for c in (padded[i, :, dy : dy + 32, dx : dx + 32],)
            for c in (c, c.flip(-1))
        ]
        assert any(torch.equal(out[i], c) for c in crops), f"image {i} is no padded crop"


def test_download_from_a_local_mirror_checks_md5s(tmp_path: Path, served: tuple[str, Archive]):
    url, archive = served
    data_dir = tmp_path / "data"
    dm = module(data_dir, mirrors=[{"url": url, "md5": archive.md5}])
    dm.prepare_data()
    assert cifar_sources.missing(data_dir, cifar_sources.ARCHIVES["cifar10"]) == []
    assert not (data_dir / archive.path.name).exists()  # the .tar.gz is removed after extraction
    # the extracted files' md5s are recorded at download, and checked against on reading
    manifest = json.loads((data_dir / "cifar-10-batches-py" / cifar_sources.MANIFEST).read_text())
    assert manifest["md5"] == archive.file_md5 and manifest["source"] == url
    dm.setup()
    pool = sum(dm.train_counts) + sum(dm.val_counts)
    assert pool == sum(max(1, n) for n in official_counts(30, 10, 100))
    batch = data_dir / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ConfigError) as err:
        module(data_dir, mirrors=[{"url": url, "md5": archive.md5}]).setup()
    message = str(err.value)
    assert "\n" not in message and "test_batch" in message and "(the download)" in message


def test_files_put_there_by_hand_that_are_not_the_official_ones_are_read_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    write_extracted(tmp_path)
    with caplog.at_level(logging.WARNING):
        dm = module(tmp_path)
        dm.setup()
    assert sum(dm.test_counts) == 100
    assert "not the official archive's" in caplog.text and "data.file_md5" in caplog.text


def test_a_truncated_batch_is_a_one_line_error(tmp_path: Path):
    archive = write_extracted(tmp_path)
    batch = archive.path / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:1000])
    with pytest.raises(ConfigError) as err:
        module(tmp_path, verify_checksums=False).setup()
    message = str(err.value)
    assert "\n" not in message and "data_batch_2" in message and "not a readable" in message


def test_an_archive_with_the_wrong_md5_is_a_one_line_error(
    tmp_path: Path, served: tuple[str, Archive]
):
    url, _ = served
    dm = module(tmp_path / "data", mirrors=[{"url": url, "md5": "0" * 32}])
    with pytest.raises(ConfigError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert "\n" not in message and message.startswith("data.mirrors: no mirror delivered")
    assert not (tmp_path / "data" / "cifar-10-python.tar.gz").exists()


def test_a_corrupt_extracted_file_fails_the_checksum(tmp_path: Path):
    archive = write_extracted(tmp_path)
    batch = archive.path / "data_batch_3"
    data = bytearray(batch.read_bytes())
    # another value of a pixel (ASCII, so the pickled latin-1 text stays valid UTF-8; the last
    # bytes are labels, and a label outside the classes is an error of its own)
    pixel = next(i for i in range(len(data) // 2, len(data)) if 0x20 <= data[i] < 0x7F)
    data[pixel] ^= 0x01
    batch.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as err:
        module(tmp_path, file_md5=archive.file_md5).setup()
    message = str(err.value)
    assert "\n" not in message and "data_batch_3" in message
    assert "data.verify_checksums=false" in message
    # without the check the (corrupt but readable) archive loads
    module(tmp_path, file_md5=archive.file_md5, verify_checksums=False).setup()


def test_offline_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for key in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(key, "127.0.0.1,localhost")
    dm = module(tmp_path, mirrors=[{"url": "http://127.0.0.1:9/cifar-10-python.tar.gz"}])
    with pytest.raises(ConfigError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert "\n" not in message and "offline?" in message and "cifar-10-batches-py" in message


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"name": "cifar1000"}, "data.name"),
        ({"mirrors": ["ftp://x"]}, "data.mirrors"),
        ({"verify_checksums": "yes"}, "data.verify_checksums"),
        ({"profile": "binary"}, "data.profile"),
    ],
)
def test_bad_options_fail_in_the_constructor(tmp_path: Path, options: dict, key: str):
    with pytest.raises(ConfigError, match=rf"^{key}="):
        module(tmp_path, **options)


def run_train(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``imblab-train ARGV`` in-process, with Hydra's global state and logging undone."""
    from imblab.train import main

    monkeypatch.setattr(sys, "argv", ["imblab-train", *argv])
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    GlobalHydra.instance().clear()
    try:
        main()
    finally:
        GlobalHydra.instance().clear()
        for handler in set(root.handlers) - set(handlers):
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)


def test_imblab_train_ldam_drw_preset_downloads_and_trains_one_epoch(
    tmp_path: Path, served: tuple[str, Archive], monkeypatch: pytest.MonkeyPatch
):
    url, archive = served
    run_dir = tmp_path / "run"
    run_train(
        [
            "experiment=cifar10_lt_ldam_drw",
            f"data.data_dir={tmp_path / 'data'}",
            "data.val_per_class=5",  # 30 images a class
            f"data.mirrors=[{{url:'{url}',md5:{archive.md5}}}]",
            "trainer.max_epochs=1",
            "trainer.accelerator=cpu",
            "callbacks.rich_progress_bar=null",
            f"hydra.run.dir={run_dir}",
        ],
        monkeypatch,
    )
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["data"]["source_used"] == "cifar10"
    assert record["data"]["class_counts"]["test"] == [10] * 10
    assert "test/balanced_accuracy" in record["metrics"]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "completed"


def test_the_readme_command_trains_on_a_generated_archive_put_there_by_hand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """`imblab-train experiment=cifar10_lt_ldam_drw data.data_dir=DIR`, DIR holding an
    extracted CIFAR-format archive that is not the official one (read with a warning)."""
    write_extracted(tmp_path / "cifar")
    run_dir = tmp_path / "run"
    run_train(
        [
            "experiment=cifar10_lt_ldam_drw",
            f"data.data_dir={tmp_path / 'cifar'}",
            "data.val_per_class=5",  # 30 images a class
            "trainer.max_epochs=1",
            "trainer.accelerator=cpu",
            f"hydra.run.dir={run_dir}",
        ],
        monkeypatch,
    )
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["data"]["class_counts"]["test"] == [10] * 10
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
