"""CIFAR-10/100 sources: the official python archives (``cifar-10-python.tar.gz``,
``cifar-100-python.tar.gz``), their md5 checksums (as torchvision's ``CIFAR10``/``CIFAR100``
list them), the download through torchvision's utilities, and the reading of the pickled
batches into uint8 tensors.

The batches are Python 2 pickles of dicts; they are loaded with ``encoding="latin1"``, and keys
and label names that come back as ``bytes`` are decoded, so files with ``str`` or ``bytes``
keys both read. A pickle can name any callable to run while it loads, so the batches are read
with :class:`BatchUnpickler`, which admits only the globals a batch holds (NumPy arrays) and
refuses a crafted file before it runs anything; each batch is then checked
(:func:`check_batch`) before it becomes tensors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imblab.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Archive:
    """One CIFAR archive: its file name and folder, the batch files of each split, the meta
    file and its key of the class names, the label key, and the official md5 of every file."""

    filename: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    names_key: str
    labels_key: str
    url: str
    md5: str
    file_md5: Mapping[str, str]


ARCHIVES: dict[str, Archive] = {
    "cifar10": Archive(
        filename="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test=("test_batch",),
        meta="batches.meta",
        names_key="label_names",
        labels_key="labels",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        file_md5={
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
            "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        },
    ),
    "cifar100": Archive(
        filename="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        train=("train",),
        test=("test",),
        meta="meta",
        names_key="fine_label_names",
        labels_key="fine_labels",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        file_md5={
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
            "meta": "7973b15100ade9c7d40fb424638fde48",
        },
    ),
}


def md5sum(path: Path) -> str:
    """The md5 hex digest of the file at ``path``."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files(archive: Archive) -> tuple[str, ...]:
    """Every file of the extracted folder: the training and test batches and the meta file."""
    return (*archive.train, *archive.test, archive.meta)


def missing(root: Path, archive: Archive) -> list[str]:
    """The files of ``archive``'s folder under ``root`` that are not there."""
    return [name for name in files(archive) if not (root / archive.folder / name).is_file()]


MANIFEST = ".imblab-md5.json"
"""Written into the extracted folder after a download: the md5 of every file as extracted."""


def write_manifest(root: Path, archive: Archive, source: str) -> None:
    """Record the md5 of every extracted file of ``archive`` (downloaded from ``source``, its
    archive md5 checked), so later reads detect a file changed since."""
    md5s = {name: md5sum(root / archive.folder / name) for name in files(archive)}
    path = root / archive.folder / MANIFEST
    path.write_text(json.dumps({"source": source, "md5": md5s}, indent=1) + "\n")


def expected_md5s(
    root: Path, archive: Archive, pinned: Mapping[str, str] | None
) -> tuple[dict[str, str], str]:
    """The md5s the extracted files are checked against, and where they come from: the
    ``pinned`` ones (``data.file_md5``), else those recorded when imblab downloaded the archive
    (:data:`MANIFEST`), else the official archive's."""
    if pinned is not None:
        return dict(pinned), "data.file_md5"
    manifest = root / archive.folder / MANIFEST
    if manifest.is_file():
        try:
            return dict(json.loads(manifest.read_text())["md5"]), f"{manifest} (the download)"
        except (ValueError, KeyError, TypeError) as e:
            log.warning("%s is unreadable (%s): checking the official md5s", manifest, e)
    return dict(archive.file_md5), "the official archive"


def verify(root: Path, archive: Archive, md5s: Mapping[str, str], origin: str) -> None:
    """Check every extracted file against ``md5s`` (from ``origin``, :func:`expected_md5s`).

    A mismatch with pinned md5s or with those recorded at download is an error (a corrupt or
    changed file); with the official md5s, the files were put there by hand and are not the
    official archive (e.g. your own data in CIFAR's format): a warning, and they are read as
    given (a truncated or corrupt batch then fails to load with its own error).

    Raises:
        ConfigError: a file's md5 is not the pinned or recorded one.
    """
    wrong = []
    for name in files(archive):
        path = root / archive.folder / name
        if name in md5s and (actual := md5sum(path)) != md5s[name]:
            wrong.append((path, actual, md5s[name]))
    if not wrong:
        return
    path, actual, expected = wrong[0]
    if origin != "the official archive":
        raise ConfigError(
            f"data.verify_checksums=true: {path} has md5 {actual}, expected {expected} from "
            f"{origin} ({len(wrong)} file(s) differ: corrupt or changed); delete "
            f"{root / archive.folder} to download it again, or set data.verify_checksums=false"
        )
    log.warning(
        "data.verify_checksums: %d file(s) of %s are not the official archive's (%s has md5 %s, "
        "not %s): reading them as given; pin your own files' md5s with data.file_md5 or set "
        "data.verify_checksums=false",
        len(wrong),
        root / archive.folder,
        path.name,
        actual,
        expected,
    )


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """The default socket timeout set to ``seconds`` for the block (torchvision's download
    opens its connections without one)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def download(
    root: Path, archive: Archive, mirrors: Sequence[Mapping[str, str]], timeout: float
) -> None:
    """Download ``archive`` from the first mirror (``{url, md5}``) that delivers it with the
    right md5 (md5 ``null``: unchecked) and extract it into ``root``, with torchvision's
    ``download_and_extract_archive``; ConfigError (one line, every mirror's failure) when
    none does."""
    from torchvision.datasets.utils import download_and_extract_archive

    root.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in mirrors:
        url, md5 = mirror["url"], mirror.get("md5")
        try:
            with _socket_timeout(timeout):
                download_and_extract_archive(
                    url, str(root), filename=archive.filename, md5=md5, remove_finished=True
                )
        except (OSError, RuntimeError, ValueError) as e:
            (root / archive.filename).unlink(missing_ok=True)
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            failures.append(f"{url}: {reason}")
            log.info("CIFAR mirror %s failed: %s", url, reason)
            continue
        log.info("downloaded %s from %s into %s", archive.filename, url, root)
        write_manifest(root, archive, url)
        return
    raise ConfigError(
        f"data.mirrors: no mirror delivered {archive.filename} ({'; '.join(failures)}); "
        f"offline? put the extracted {archive.folder}/ into {root} or make a mirror reachable"
    )


def _text(value: Any) -> Any:
    return value.decode("latin1") if isinstance(value, bytes) else value


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 pickles ``bytes`` at protocol 2: latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_EMPTY = np.empty(0, dtype=np.uint8)
_RECONSTRUCT = _EMPTY.__reduce__()[0]  # numpy's _reconstruct, whatever its module's name
_FROMBUFFER = _EMPTY.__reduce_ex__(5)[0]  # numpy's _frombuffer (arrays at pickle protocol 5)

#: the globals a CIFAR batch may name: NumPy arrays under both module names (the official
#: 2009 batches ``numpy.core``, NumPy 2 ``numpy._core``), and ``bytes`` as Python 3 writes
#: them at protocol 2; anything else (``os.system``, ``builtins.eval``, ...) is refused.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1,
}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a global that a CIFAR batch never holds."""


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds only what a CIFAR batch holds: dicts, lists, str/bytes,
    numbers and NumPy arrays (:data:`ALLOWED_GLOBALS`); any other global, and persistent ids,
    are refused before anything is called, so a crafted file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedGlobal(f"persistent id {str(pid)[:40]!r}")


def _bad(path: Path, problem: str) -> ConfigError:
    """The one-line error of a batch file that is not what the format holds."""
    return ConfigError(
        f"data.data_dir: {path}: {problem}; delete {path.parent} to download the archive "
        "again (or fix the file if it is your own data in CIFAR's format)"
    )


def unpickle(path: Path) -> dict[str, Any]:
    """A batch file as a dict with ``str`` keys (``bytes`` keys decoded), read with
    :class:`BatchUnpickler` (the batches are Python 2 pickles: ``encoding="latin1"``).

    Raises:
        ConfigError: the file names a global a batch never holds (refused unread: it could
            run code), or is not a readable pickled dict (truncated, corrupt).
    """
    try:
        with path.open("rb") as f:
            raw = BatchUnpickler(f, encoding="latin1").load()
    except RefusedGlobal as e:
        raise _bad(
            path,
            f"refused: it names {e}, which a CIFAR batch never holds (unpickling it could "
            "run code)",
        ) from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as e:
        raise ConfigError(
            f"data.data_dir: {path} is not a readable CIFAR batch ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:200] or 'no detail'}); delete {path.parent} to "
            "download the archive again"
        ) from None
    except MemoryError:
        raise _bad(
            path, "not a readable CIFAR batch (it claims more memory than there is)"
        ) from None
    if not isinstance(raw, dict):
        raise _bad(path, f"holds a {type(raw).__name__}, not the dict of a CIFAR batch")
    return {_text(k): v for k, v in raw.items()}


#: the bytes of one image: 3 channels of 32 x 32, a row of a batch's ``data``
ROW = 3 * 32 * 32


@dataclass(frozen=True)
class Meta:
    """The meta file: the class names, and the images each batch holds where it says
    (CIFAR-10's ``num_cases_per_batch``; None for CIFAR-100, whose meta does not)."""

    names: list[str]
    per_batch: int | None


def read_meta(root: Path, archive: Archive) -> Meta:
    """The archive's meta file, checked: a non-empty list of names under ``names_key``, and
    ``num_cases_per_batch`` an integer > 0 when present."""
    path = root / archive.folder / archive.meta
    meta = unpickle(path)
    names = meta.get(archive.names_key)
    if not isinstance(names, list | tuple) or not names:
        raise _bad(path, f"has no list of class names under {archive.names_key!r}")
    if not all(isinstance(n, str | bytes) for n in names):
        raise _bad(path, f"{archive.names_key!r} holds values that are not text")
    per_batch = meta.get("num_cases_per_batch")
    if per_batch is not None and (not isinstance(per_batch, int) or per_batch <= 0):
        raise _bad(path, f"num_cases_per_batch={per_batch!r} is not a count of images")
    return Meta([str(_text(n)) for n in names], per_batch)


def check_batch(
    path: Path, batch: Mapping[str, Any], labels_key: str, meta: Meta
) -> tuple[np.ndarray, np.ndarray]:
    """A batch's images (N, 3, 32, 32) uint8 and labels (N,) int64, checked: ``data`` a
    (N, 3072) integer array of values in [0, 255], ``labels_key`` N integers in
    [0, C) (C the meta's class names), and N the meta's ``num_cases_per_batch`` where it
    gives one. Any other content is the one-line :class:`ConfigError` naming ``path``."""
    data, labels = batch.get("data"), batch.get(labels_key)
    if not isinstance(data, np.ndarray):
        raise _bad(path, f"has no 'data' array (found {type(data).__name__})")
    if data.dtype.kind not in "iu":
        raise _bad(path, f"'data' has dtype {data.dtype}, not uint8 pixels")
    if data.ndim != 2 or data.shape[1] != ROW:
        raise _bad(
            path,
            f"'data' has shape {data.shape}, not (N, {ROW}) (rows of 3 x 32 x 32 bytes)",
        )
    if data.dtype != np.uint8 and data.size and (data.min() < 0 or data.max() > 255):
        raise _bad(path, f"'data' ({data.dtype}) holds values outside [0, 255]")
    if isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu":
        values = labels.tolist()
    elif isinstance(labels, list | tuple) and all(type(v) is int for v in labels):
        values = list(labels)
    else:
        raise _bad(path, f"has no list of integer labels under {labels_key!r}")
    if len(values) != len(data):
        raise _bad(path, f"{len(data)} images but {len(values)} labels")
    classes = len(meta.names)
    outside = [v for v in values if not 0 <= v < classes]
    if outside:
        raise _bad(
            path,
            f"{len(outside)} label(s) outside [0, {classes}) ({classes} class names in the "
            f"meta file), e.g. {outside[0]}",
        )
    if meta.per_batch is not None and len(data) != meta.per_batch:
        raise _bad(
            path,
            f"{len(data)} images, but the meta file says each batch holds {meta.per_batch}",
        )
    images = data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32)
    return images, np.asarray(values, dtype=np.int64)


def load_split(
    root: Path, archive: Archive, names: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, 32, 32) and int64 labels of the batch files ``names``, every file
    checked (:func:`check_batch`) against the meta file (:func:`read_meta`)."""
    meta = read_meta(root, archive)
    images, labels = [], []
    for name in names:
        path = root / archive.folder / name
        batch_images, batch_labels = check_batch(path, unpickle(path), archive.labels_key, meta)
        images.append(batch_images)
        labels.append(batch_labels)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def class_names(root: Path, archive: Archive) -> list[str]:
    """The class names of the meta file, label ``c`` at position ``c``."""
    return read_meta(root, archive).names
