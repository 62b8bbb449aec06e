"""``predictions.npz``: every evaluated sample's class probabilities, target and id."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imblab.errors import ConfigError

FILENAME = "predictions.npz"


def save_predictions(path: Path, probs: np.ndarray, targets: np.ndarray, ids: np.ndarray) -> None:
    """Write exactly the arrays ``probs`` (N, C) float32, ``targets`` (N,) and ``ids`` (N,)
    int64 (the samples' indices in their split), ordered by id."""
    order = np.argsort(ids, kind="stable")
    np.savez(
        path,
        probs=np.asarray(probs, dtype=np.float32)[order],
        targets=np.asarray(targets, dtype=np.int64)[order],
        ids=np.asarray(ids, dtype=np.int64)[order],
    )


def load_predictions(path: Path | str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(probs, targets, ids)`` of a ``predictions.npz`` file, or of the one in an eval dir."""
    path = Path(path)
    file = path / FILENAME if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(
            f"predictions={path}: no {FILENAME} there; give an imblab-eval run dir or its "
            f"{FILENAME}"
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
