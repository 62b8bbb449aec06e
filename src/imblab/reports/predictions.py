"""``predictions.npz``: every evaluated sample's class probabilities, target and id, and the
fingerprint of the split they were evaluated on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imblab.errors import ConfigError

FILENAME = "predictions.npz"


def save_predictions(
    path: Path,
    probs: np.ndarray,
    targets: np.ndarray,
    ids: np.ndarray,
    fingerprint: str | None = None,
) -> None:
    """Write the arrays ``probs`` (N, C) float32, ``targets`` (N,) and ``ids`` (N,) int64 (the
    samples' indices in their split), ordered by id, and ``split_fingerprint``, a 0-d string
    array: ``fingerprint`` (the split's
    :meth:`~imblab.data.base.ImbalancedDataModule.split_fingerprint`), empty when not known."""
    order = np.argsort(ids, kind="stable")
    np.savez(
        path,
        probs=np.asarray(probs, dtype=np.float32)[order],
        targets=np.asarray(targets, dtype=np.int64)[order],
        ids=np.asarray(ids, dtype=np.int64)[order],
        split_fingerprint=np.asarray(fingerprint or ""),
    )


def prediction_file(path: Path | str) -> Path:
    """``path`` itself, or the ``predictions.npz`` in the directory ``path``."""
    path = Path(path)
    return path / FILENAME if path.is_dir() else path


def load_fingerprint(path: Path | str) -> str | None:
    """The split fingerprint a ``predictions.npz`` (or the one in a directory) records; None
    when it records none (an empty one, or a file written before it was recorded) or cannot be
    read."""
    try:
        with np.load(prediction_file(path)) as data:
            found = str(data["split_fingerprint"]) if "split_fingerprint" in data else ""
    except (OSError, ValueError):
        return None
    return found or None


def load_predictions(path: Path | str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(probs, targets, ids)`` of a ``predictions.npz`` file, or of the one in an eval dir."""
    path = Path(path)
    file = prediction_file(path)
    if not file.is_file():
        raise ConfigError(
            f"predictions={path}: no {FILENAME} there; give an imblab-eval dir, a training run "
            f"dir (test_predictions=true) or a {FILENAME}"
        )
    try:
        with np.load(file) as data:
            probs, targets, ids = data["probs"], data["targets"], data["ids"]
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(
            f"predictions={file}: not a readable {FILENAME} ({type(err).__name__}); "
            "re-run imblab-eval to write it"
        ) from None
    if probs.ndim != 2 or targets.shape != probs.shape[:1] or ids.shape != targets.shape:
        raise ConfigError(
            f"predictions={file}: expected probs (N, C), targets (N,), ids (N,), got "
            f"{probs.shape}, {targets.shape}, {ids.shape}; re-run imblab-eval to write it"
        )
    return probs, targets, ids
