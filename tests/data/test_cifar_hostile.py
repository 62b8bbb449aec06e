"""data=cifar_lt with hostile batch files: wrong contents are one-line errors naming the file,
and a pickle crafted to run a command is refused before it runs anything, while every way the
format is legitimately written (Python 2's batches, NumPy 1 and 2, pickle protocols 2 to 5)
still reads."""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from imblab.data import cifar_sources
from imblab.data.cifar_lt import CIFARLTDataModule
from imblab.errors import ConfigError
from tests.data.cifar_archive import write_extracted

SPEC = cifar_sources.ARCHIVES["cifar10"]


def module(data_dir: Path, **options: object) -> CIFARLTDataModule:
    options = {"val_fraction": 0.2, "batch_size": 16, "on_device": False, **options}
    return CIFARLTDataModule(data_dir=str(data_dir), **options)


def load(data_dir: Path) -> None:
    """Read the archive under ``data_dir`` as imblab-train does (md5s not checked)."""
    module(data_dir, verify_checksums=False).load_raw(torch.Generator())


def one_line_error(data_dir: Path) -> str:
    with pytest.raises(ConfigError) as err:
        load(data_dir)
    message = str(err.value)
    assert "\n" not in message and message.startswith("data.data_dir: ")
    return message


def dump(path: Path, record: object, protocol: int = 2) -> None:
    path.write_bytes(pickle.dumps(record, protocol=protocol))


def batch(folder: Path, name: str) -> dict[str, object]:
    return pickle.loads((folder / name).read_bytes())  # our own generated file


def test_rows_of_3000_bytes_are_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    folder = write_extracted(tmp_path).path
    record = batch(folder, "data_batch_2")
    data = record["data"]
    assert isinstance(data, np.ndarray)
    record["data"] = data[:, :3000].copy()
    dump(folder / "data_batch_2", record)
    message = one_line_error(tmp_path)
    assert "data_batch_2" in message and "(60, 3000)" in message and "(N, 3072)" in message


def test_a_label_outside_the_classes_is_an_error_not_a_dropped_image(tmp_path: Path) -> None:
    folder = write_extracted(tmp_path).path
    record = batch(folder, "data_batch_4")
    labels = list(record["labels"])  # type: ignore[call-overload]
    labels[3] = 10  # CIFAR-10 has labels 0..9
    dump(folder / "data_batch_4", {**record, "labels": labels})
    message = one_line_error(tmp_path)
    assert "data_batch_4" in message and "outside [0, 10)" in message and "e.g. 10" in message


@pytest.mark.parametrize("label", [-1, True, 2.0])
def test_labels_that_are_not_class_indices_are_errors(tmp_path: Path, label: object) -> None:
    folder = write_extracted(tmp_path).path
    record = batch(folder, "test_batch")
    labels = list(record["labels"])  # type: ignore[call-overload]
    labels[0] = label
    dump(folder / "test_batch", {**record, "labels": labels})
    message = one_line_error(tmp_path)
    assert "test_batch" in message and "label" in message


def test_images_and_labels_of_different_counts_are_an_error(tmp_path: Path) -> None:
    folder = write_extracted(tmp_path).path
    record = batch(folder, "data_batch_1")
    dump(folder / "data_batch_1", {**record, "labels": list(record["labels"])[:-1]})  # type: ignore[call-overload]
    message = one_line_error(tmp_path)
    assert "data_batch_1" in message and "60 images but 59 labels" in message


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        (np.zeros((60, 3072), dtype=np.float32), "dtype float32"),
        (np.full((60, 3072), 256, dtype=np.int16), "outside [0, 255]"),
        ([[0] * 3072] * 60, "found list"),
    ],
)
def test_pixels_that_are_not_bytes_are_an_error(tmp_path: Path, data: object, shown: str) -> None:
    folder = write_extracted(tmp_path).path
    dump(folder / "data_batch_5", {**batch(folder, "data_batch_5"), "data": data})
    message = one_line_error(tmp_path)
    assert "data_batch_5" in message and shown in message


def test_integer_pixels_of_another_dtype_within_0_255_read_as_bytes(tmp_path: Path) -> None:
    archive = write_extracted(tmp_path)
    record = batch(archive.path, "data_batch_5")
    dump(archive.path / "data_batch_5", {**record, "data": record["data"].astype(np.int64)})  # type: ignore[attr-defined]
    raw = module(tmp_path, verify_checksums=False).load_raw(torch.Generator())
    np.testing.assert_array_equal(raw.train[0].numpy(), archive.train[0])


def test_the_images_per_batch_of_the_meta_file_are_checked(tmp_path: Path) -> None:
    """CIFAR-10's batches.meta says how many images each batch holds (10,000 in the official
    archive): a batch of another size is an error; batches of that size read."""
    folder = write_extracted(tmp_path, train_per_class=50, test_per_class=10).path  # 100 each
    meta = batch(folder, "batches.meta")
    dump(folder / "batches.meta", {**meta, "num_cases_per_batch": 100})
    load(tmp_path)
    record = batch(folder, "data_batch_3")
    data, labels = record["data"], record["labels"]
    dump(folder / "data_batch_3", {**record, "data": data[:99], "labels": labels[:99]})  # type: ignore[index]
    message = one_line_error(tmp_path)
    assert "data_batch_3" in message and "99 images" in message and "holds 100" in message


def test_a_meta_file_without_class_names_is_an_error(tmp_path: Path) -> None:
    folder = write_extracted(tmp_path).path
    dump(folder / "batches.meta", {"num_cases_per_batch": 60})
    message = one_line_error(tmp_path)
    assert "batches.meta" in message and "label_names" in message


def test_a_pickle_of_something_else_than_a_dict_is_an_error(tmp_path: Path) -> None:
    folder = write_extracted(tmp_path).path
    dump(folder / "test_batch", [1, 2, 3])
    message = one_line_error(tmp_path)
    assert "test_batch" in message and "holds a list" in message


class RunsCommand:
    """Pickles as a call of ``function(*args)``: what a crafted file runs when unpickled."""

    def __init__(self, function: object, *args: object) -> None:
        self.call = (function, args)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.call


def hostile_payloads(marker: Path) -> dict[str, RunsCommand]:
    """Calls that each create ``marker``: a shell command, code, a subprocess, a NumPy helper."""
    import subprocess

    from numpy.testing._private.utils import runstring

    return {
        "os.system": RunsCommand(os.system, f"touch {marker}"),
        "eval": RunsCommand(eval, f"open({str(marker)!r}, 'w').close()"),
        "subprocess": RunsCommand(subprocess.run, ["touch", str(marker)]),
        "numpy runstring": RunsCommand(runstring, f"open({str(marker)!r}, 'w').close()", {}),
    }


@pytest.mark.parametrize("payload", ["os.system", "eval", "subprocess", "numpy runstring"])
@pytest.mark.parametrize("protocol", [2, 4])
def test_a_batch_crafted_to_run_a_command_is_refused_and_runs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, payload: str, protocol: int
) -> None:
    folder = write_extracted(tmp_path / "data").path
    marker = tmp_path / "ran"
    crafted = hostile_payloads(marker)[payload]
    # the payload is live: an ordinary unpickler runs it
    pickle.loads(pickle.dumps(crafted, protocol=protocol))
    assert marker.exists()
    marker.unlink()
    record = {**batch(folder, "data_batch_1"), "filenames": [crafted]}
    dump(folder / "data_batch_1", record, protocol)
    # a file put there by hand whose md5 is not the official one: warned about, then read
    with pytest.raises(ConfigError) as err:
        module(tmp_path / "data").load_raw(torch.Generator())
    message = str(err.value)
    assert "\n" not in message and "data_batch_1" in message and "refused" in message
    assert "could run code" in message
    assert not marker.exists()


def test_a_persistent_id_is_refused(tmp_path: Path) -> None:
    folder = write_extracted(tmp_path).path
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00X\x01\x00\x00\x00aP0\ns.")  # {'a': pid}
    message = one_line_error(tmp_path)
    assert "test_batch" in message and "refused" in message


def python2_batch(images: np.ndarray, labels: list[int]) -> bytes:
    """A batch as Python 2 and NumPy 1 wrote the official 2009 files: protocol 2, keys and the
    pixel buffer as ``str`` (BINSTRING), the array through ``numpy.core.multiarray``."""

    def string(text: bytes) -> bytes:
        if len(text) < 256:
            return b"U" + bytes([len(text)]) + text
        return b"T" + struct.pack("<i", len(text)) + text

    def integer(value: int) -> bytes:
        return b"J" + struct.pack("<i", value)

    n = len(images)
    dtype = (
        b"cnumpy\ndtype\n" + string(b"u1") + integer(0) + integer(1) + b"\x87R"
        b"(" + integer(3) + string(b"|") + b"NNN" + integer(-1) + integer(-1) + integer(0) + b"tb"
    )
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        + integer(0)
        + b"\x85"
        + string(b"b")
        + b"\x87R("
        + integer(1)
        + integer(n)
        + integer(3072)
        + b"\x86"
        + dtype
        + b"\x89"
        + string(images.reshape(n, -1).tobytes())
        + b"tb"
    )
    items = b"".join(integer(v) for v in labels)
    return (
        b"\x80\x02}("
        + string(b"batch_label")
        + string(b"training batch 1 of 5")
        + string(b"data")
        + array
        + string(b"labels")
        + b"]("
        + items
        + b"eu."
    )


Writer = Callable[[Path, np.ndarray, list[int]], None]


def replace_batches(folder: Path, write: Writer) -> None:
    """Rewrite every batch of ``folder`` with ``write(path, images, labels)``."""
    for name in (*SPEC.train, *SPEC.test):
        record = batch(folder, name)
        data, labels = record["data"], record["labels"]
        assert isinstance(data, np.ndarray) and isinstance(labels, list)
        write(folder / name, data, labels)


def as_python2(path: Path, images: np.ndarray, labels: list[int]) -> None:
    path.write_bytes(python2_batch(images, labels))


def numpy1_names(protocol: int) -> Writer:
    def write(path: Path, images: np.ndarray, labels: list[int]) -> None:
        text = pickle.dumps({"data": images, "labels": labels}, protocol=protocol)
        path.write_bytes(text.replace(b"numpy._core.", b"numpy.core."))

    return write


def numpy2(protocol: int) -> Writer:
    def write(path: Path, images: np.ndarray, labels: list[int]) -> None:
        path.write_bytes(pickle.dumps({b"data": images, b"labels": labels}, protocol=protocol))

    return write


@pytest.mark.parametrize(
    "writer",
    [as_python2, numpy1_names(2), numpy2(2), numpy2(4), numpy2(5)],
    ids=["python2-numpy.core", "protocol2-numpy.core", "protocol2", "protocol4", "protocol5"],
)
def test_every_legitimate_way_of_writing_a_batch_reads(tmp_path: Path, writer: Writer) -> None:
    archive = write_extracted(tmp_path)
    replace_batches(archive.path, writer)
    raw = module(tmp_path, verify_checksums=False).load_raw(torch.Generator())
    np.testing.assert_array_equal(raw.train[0].numpy(), archive.train[0])
    np.testing.assert_array_equal(raw.train[1].numpy(), archive.train[1])
    np.testing.assert_array_equal(raw.test[0].numpy(), archive.test[0])
    np.testing.assert_array_equal(raw.test[1].numpy(), archive.test[1])


def test_the_python2_batch_is_what_numpy_itself_reads(tmp_path: Path) -> None:
    """The hand-written Python 2 pickle above is valid: NumPy's own unpickling agrees."""
    images = np.random.default_rng(0).integers(0, 256, (4, 3072), dtype=np.uint8)
    record = pickle.loads(python2_batch(images, [1, 2, 3, 4]), encoding="latin1")
    np.testing.assert_array_equal(record["data"], images)
    assert record["labels"] == [1, 2, 3, 4]
