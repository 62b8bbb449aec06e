"""Small CIFAR archives in the official format (a .tar.gz of pickled batches), for the tests."""

from __future__ import annotations

import hashlib
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imblab.data import cifar_sources


@dataclass
class Archive:
    """A generated archive: the .tar.gz and its md5, the md5 of every extracted file, the
    images (N, 3, 32, 32) and labels of each split."""

    path: Path
    md5: str
    file_md5: dict[str, str]
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


def _split(per_class: int, num_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
    images = rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8)
    return images, labels


def _dump(path: Path, record: dict[str, object], bytes_keys: bool) -> None:
    """Pickle ``record`` as the Python 2 batches: with bytes keys (and bytes names) or str."""
    if bytes_keys:
        record = {
            k.encode(): [n.encode() for n in v] if k.endswith("names") else v  # type: ignore[attr-defined]
            for k, v in record.items()
        }
    with path.open("wb") as f:
        pickle.dump(record, f, protocol=2)


def write_extracted(
    root: Path,
    name: str = "cifar10",
    train_per_class: int = 30,
    test_per_class: int = 10,
    bytes_keys: bool = False,
    seed: int = 0,
) -> Archive:
    """Write the extracted folder of a random archive of ``name`` under ``root`` (no .tar.gz:
    ``path`` is the folder, ``md5`` empty)."""
    spec = cifar_sources.ARCHIVES[name]
    num_classes = 10 if name == "cifar10" else 100
    rng = np.random.default_rng(seed)
    train, test = (
        _split(train_per_class, num_classes, rng),
        _split(test_per_class, num_classes, rng),
    )
    folder = root / spec.folder
    folder.mkdir(parents=True, exist_ok=True)
    parts = np.array_split(np.arange(len(train[1])), len(spec.train))
    for batch, index in zip(spec.train, parts, strict=True):
        data = train[0][index].reshape(len(index), -1)
        _dump(folder / batch, {"data": data, spec.labels_key: train[1][index].tolist()}, bytes_keys)
    (test_name,) = spec.test
    data = test[0].reshape(len(test[1]), -1)
    _dump(folder / test_name, {"data": data, spec.labels_key: test[1].tolist()}, bytes_keys)
    names = [f"class{c}" for c in range(num_classes)]
    _dump(folder / spec.meta, {spec.names_key: names}, bytes_keys)
    md5s = {
        f: hashlib.md5((folder / f).read_bytes()).hexdigest() for f in cifar_sources.files(spec)
    }
    return Archive(folder, "", md5s, (train[0], train[1]), (test[0], test[1]))


def write_archive(www: Path, name: str = "cifar10", **options: object) -> Archive:
    """A random archive of ``name`` as the official .tar.gz in ``www`` (and its md5)."""
    spec = cifar_sources.ARCHIVES[name]
    staging = www / "staging"
    extracted = write_extracted(staging, name, **options)  # type: ignore[arg-type]
    path = www / spec.filename
    with tarfile.open(path, "w:gz") as tar:
        tar.add(extracted.path, arcname=spec.folder)
    extracted.path, extracted.md5 = path, hashlib.md5(path.read_bytes()).hexdigest()
    return extracted
