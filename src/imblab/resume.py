"""What makes a resumed run the same run: the random state a run consumes, saved in its
checkpoints; and the status record of a run that was interrupted or ended.

A run resumed from ``checkpoints/last.ckpt`` must train exactly as the uninterrupted run did
after that epoch. Lightning restores the weights, optimizer, schedulers, loops and callback
states; the random state is imblab's part. Every draw of a run comes from one of:

- the training sampler (:mod:`imblab.samplers`): a generator seeded with ``seed + epoch`` each
  epoch, derived, nothing to save;
- the bootstrap (:mod:`imblab.metrics.bootstrap`): a counter-based hash of ``(seed, sample id,
  replicate)``, derived, nothing to save;
- the global generators: torch's CPU generator and each CUDA device's default generator
  (on-device augmentation of :mod:`imblab.data.transforms` and dropout draw from the
  generator of the batch's device), numpy's and Python's ``random`` (third-party code), and
  the base seed a :class:`~torch.utils.data.DataLoader` draws from torch's generator for its
  workers each time it is iterated (image folders).

:class:`RandomState` saves the global generators in every checkpoint and restores them on
resume. The state is taken when the checkpoint is written (at the end of a training epoch,
after its validation); between that point and the next training batch an uninterrupted run
draws nothing, and a
resumed run's draws before it (model initialisation, the sanity check, which Lightning runs
under ``isolate_rng``) are overwritten by the restore. Under DDP the checkpoint holds rank 0's
state, which every rank restores: ``seed_everything`` gives all ranks the same seed and they
draw the same shapes, so their states are equal.

:func:`interruptions_recorded` turns SIGINT and SIGTERM into an ``interrupted`` record in
``status.json`` (the signal and the epochs completed; the run resumes from ``last.ckpt``), and
:func:`record_monitor` adds the monitor's ``best`` and ``last`` values to the record.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from imblab.runs import read_status, update_status, utc_now

log = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    """The global generators' state, as tensors and plain lists (loadable with
    ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            str(kind),
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(gauss),
        ],
        "python": [int(version), list(internal), gauss_next],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the global generators from :func:`rng_state`'s record (CUDA only where both
    the record and this process have CUDA devices)."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


class RandomState(Callback):
    """Saves the global random generators in every checkpoint and restores them on resume
    (see the module docstring for what is saved and why it suffices)."""

    def state_dict(self) -> dict[str, Any]:
        return rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_rng_state(state_dict)


@contextmanager
def interruptions_recorded(trainer: Trainer, run_dir: Path) -> Iterator[None]:
    """Around ``trainer.fit`` / ``trainer.test``: when SIGINT (Ctrl+C) or SIGTERM stops the
    trainer, rank 0 records ``status: interrupted`` with ``signal``, ``epochs_completed`` (the
    epochs in ``last.ckpt``, where a rerun in the run dir resumes) and ``finished``, and the
    process exits with code 128 + the signal's number (130, 143). Lightning turns both signals
    into ``SystemExit`` after its own shutdown; other exits pass through unchanged.

    SIGINT is also noted by a handler (main thread) that asks the trainer to stop: Python drops
    a ``KeyboardInterrupt`` raised while a finalizer runs ("Exception ignored in ..."), and
    such a lost Ctrl+C still ends the run (after the current epoch) as interrupted."""
    noted: list[int] = []

    def on_sigint(signum: int, frame: Any) -> None:
        noted.append(signum)
        trainer.should_stop = True
        raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main else None
    try:
        yield
        if noted:  # the KeyboardInterrupt was lost on its way
            raise KeyboardInterrupt
    except (KeyboardInterrupt, SystemExit) as err:
        if isinstance(err, SystemExit) and not (trainer.interrupted or noted):
            raise
        signum = signal.SIGTERM if trainer.received_sigterm else signal.SIGINT
        done = trainer.current_epoch
        if trainer.is_global_zero:
            update_status(
                run_dir,
                status="interrupted",
                error=None,
                signal=signum.name,
                epochs_completed=done,
                finished=utc_now(),
            )
        log.warning("%s: interrupted after %d epochs; rerun to resume", signum.name, done)
        raise SystemExit(128 + signum) from None
    finally:
        if previous is not None:  # None: not ours to restore (another thread, or set in C)
            signal.signal(signal.SIGINT, previous)


def record_monitor(trainer: Trainer, metric: str, mode: str, run_dir: Path) -> None:
    """Add ``monitor: {metric, mode, best, last}`` to the run's ``status.json`` record (when it
    has one; rank 0): ``best`` is the value that chose the best checkpoint, ``last`` the last
    epoch's (null when not finite or not logged)."""
    if not trainer.is_global_zero or read_status(run_dir) is None:
        return
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_score if isinstance(checkpoint, ModelCheckpoint) else None
    last = trainer.callback_metrics.get(metric)

    def number(value: Any) -> float | None:
        return None if value is None or not math.isfinite(float(value)) else float(value)

    monitor = {"metric": metric, "mode": mode, "best": number(best), "last": number(last)}
    update_status(run_dir, monitor=monitor, epochs_completed=trainer.current_epoch)
