"""Sweep jobs: readable job dirs, a ``status.json`` record per job (failures kept, not raised),
DDP inside a sweep, resuming an interrupted Optuna study, and the sweep summary at its end
(the Hydra :class:`SweepCallback`)."""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, read_write

from imblab.config import launched_rank, resolve_monitor, resolve_monitor_mode
from imblab.errors import config_error
from imblab.pipelines.training import build_trainer
from imblab.runs import (
    RUN_FIELDS,
    error_line,
    read_status,
    utc_now,
    write_status,
    write_summary,
)
from imblab.tensorboard import EVENTS

log = logging.getLogger(__name__)

MAX_SUBDIR = 200
SWEPT_KEYS = "IMBLAB_SWEPT_KEYS"  # environment variable: the keys a sweep varies


def split_items(text: str, sep: str = ",") -> list[str]:
    """Split ``text`` at the ``sep`` that are outside brackets, braces, parentheses and quotes
    (the items of Hydra's ``override_dirname``)."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == sep and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item for item in items if item]


def job_subdir(num: Any, override_dirname: str, swept: str = "") -> str:
    """A sweep job's directory name ``<num>_<overrides>`` as one path component: the swept keys
    (comma-separated ``swept``) come first so they stay readable, then the other overrides;
    ``/`` and ``\\`` become ``_``, and a name longer than 200 characters is cut and ends in a
    hash of the whole. The job number keeps it unique within the sweep, whatever the start
    time."""
    order = {key: i for i, key in enumerate(k for k in swept.split(",") if k)}
    items = split_items(override_dirname)
    items.sort(key=lambda item: order.get(item.partition("=")[0].lstrip("+~"), len(order)))
    name = "_".join([str(num), ",".join(items)]) if items else str(num)
    name = name.replace("/", "_").replace("\\", "_")
    if len(name) > MAX_SUBDIR:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[: MAX_SUBDIR - len(digest) - 1]}-{digest}"
    return name


def swept_keys(config: DictConfig) -> list[str]:
    """The keys a multirun varies: command-line sweeps (``a=1,2``, ``range``, ``choice``...)
    and the sweeper's ``params`` (the Optuna search space)."""
    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys = [o.key_or_group for o in parsed if o.is_sweep_override()]
    keys += [str(k) for k in config.hydra.sweeper.get("params") or {}]
    return list(dict.fromkeys(keys))


OmegaConf.register_new_resolver("imblab.job_subdir", job_subdir, replace=True)


@contextmanager
def quiet_logger(name: str, level: int = logging.WARNING) -> Iterator[None]:
    """Raise the level of logger ``name`` to ``level`` inside the block (its INFO chatter)."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(max(level, previous))
    try:
        yield
    finally:
        logger.setLevel(previous)


def job_info() -> dict[str, Any]:
    """Hydra's view of the running job: ``multirun``, ``num``, ``overrides`` (the job's own,
    sweep values resolved) and ``sweep_dir``; empty outside a Hydra app."""
    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return {
        "multirun": multirun,
        "num": hc.job.num if multirun else None,
        "overrides": list(hc.overrides.task),
        "sweep_dir": str(hc.sweep.dir) if multirun else None,
    }


def objective_of(metrics: dict[str, float], cfg: DictConfig) -> float | None:
    """The sweep objective: ``cfg.monitor.metric`` of the final scalars, None if it is missing
    or not finite (Optuna then records a failed trial), or the run has no monitor
    (``data.val_source=none``: a grid sweep then compares its runs with ``imblab-compare``)."""
    metric = cfg.monitor.get("metric")
    if metric is None:
        return None
    value = metrics.get(metric)
    return float(value) if value is not None and math.isfinite(value) else None


def run_job(cfg: DictConfig, task: Callable[[DictConfig], dict[str, float]]) -> float | None:
    """Run ``task(cfg)`` (training) and record it in ``<output_dir>/status.json``: ``running``
    at the start, then ``completed`` with the objective or ``failed`` with the error (one line
    and the traceback). Returns the objective (:func:`objective_of`).

    In a sweep job (Hydra multirun) an exception is recorded and the job returns None, so a bad
    value, a NaN loss or an out-of-memory error fails that job alone (and one Optuna trial)
    instead of the sweep; a job whose directory already holds a completed record of the same
    overrides returns its objective without training again, so a rerun sweep resumes. A sweep
    job whose trainer would re-launch the command line for its DDP processes runs as a single
    run in a fresh process (:func:`run_in_own_process`). Outside a sweep the exception
    propagates. The monitor is resolved first (none for ``data.val_source=none``;
    ``monitor.mode: auto`` to ``min`` or ``max``), so the record holds what the run uses. Only
    rank 0 writes."""
    resolve_monitor(cfg)  # data.val_source=none: no monitor, recorded as such from the start
    resolve_monitor_mode(cfg)  # a sweep job's config is composed afresh, with auto again
    out = Path(cfg.paths.output_dir)
    info = job_info()
    sweep = bool(info.get("multirun"))
    writer = launched_rank() == 0
    previous = read_status(out)
    if (
        sweep
        and previous is not None
        and previous.get("status") == "completed"
        and previous.get("overrides") == info["overrides"]
    ):
        log.info("job already completed in %s: reusing its result", out)
        value = (previous.get("objective") or {}).get("value")
        return None if value is None else float(value)
    started = time.time()
    record: dict[str, Any] = {
        "status": "running",
        "error": None,
        "objective": {"metric": cfg.monitor.metric, "mode": cfg.monitor.mode, "value": None},
        "started": utc_now(),
        "finished": None,
        "duration_s": None,
        "host": os.uname().nodename,
        **{k: v for k, v in info.items() if k != "multirun"},
    }
    if writer:
        write_status(out, record)
    metrics: dict[str, float] | None = None
    own_process = False
    try:
        own_process = sweep and launches_processes(cfg)
        metrics = run_in_own_process(cfg, info) if own_process else task(cfg)
    except Exception as err:
        record.update(
            run_fields(out) if own_process else {},
            status="failed",
            error=error_line(err),
            traceback=traceback.format_exc()[-5000:],
            finished=utc_now(),
            duration_s=round(time.time() - started, 3),
        )
        if writer:
            write_status(out, record)
        if not sweep:
            raise
    if metrics is None:  # the failed job's frames are gone now: its memory can be freed
        release_memory()
        log.error("job %s failed: %s", info.get("num"), record["error"])
        print(f"error: job {info.get('num')} failed: {record['error']}", file=sys.stderr)
        return None
    value = objective_of(metrics, cfg)
    record["objective"]["value"] = value
    if own_process:
        record.update(run_fields(out))
    record.update(
        status="completed", finished=utc_now(), duration_s=round(time.time() - started, 3)
    )
    if writer:
        write_status(out, record)
    return value


def run_fields(run_dir: Path) -> dict[str, Any]:
    """The :data:`~imblab.runs.RUN_FIELDS` (its TensorBoard run, the monitor, the epochs
    reached) that a job run in its own process recorded in ``status.json``: the job's final
    record keeps them."""
    child = read_status(run_dir) or {}
    return {key: child[key] for key in RUN_FIELDS if key in child}


def release_memory() -> None:
    """Free what a failed job left behind (its tensors, cached GPU blocks) before the next one."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def launches_processes(cfg: DictConfig) -> bool:
    """Whether the Trainer of ``cfg`` would start its other processes itself (DDP on one node:
    Lightning re-runs the command line, which inside a sweep would start the whole sweep
    again). False where a cluster (SLURM, torchrun) starts one process per rank. The probe
    Trainer is built quietly: the job's own Trainer prints Lightning's banner and tips."""
    with quiet_logger("lightning.pytorch"), quiet_logger("lightning.fabric"):
        trainer = build_trainer(
            cfg,
            logger=False,
            callbacks=[],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    env = getattr(trainer.strategy, "cluster_environment", None)
    return trainer.world_size > 1 and env is not None and not env.creates_processes_externally


def quote_override(value: str) -> str:
    """``value`` as a double-quoted Hydra override string (commas, ``=`` and spaces kept)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_in_own_process(cfg: DictConfig, info: dict[str, Any]) -> dict[str, float]:
    """Run this sweep job as a single ``imblab-train`` run (the job's overrides, its directory
    as ``hydra.run.dir``) in a fresh process, which launches its DDP processes as any single
    run does: one run dir per job, not one per process; its TensorBoard run is the sweep job's
    (in the sweep's ``tensorboard/``, named by the job number and swept values). Returns its
    final scalars."""
    out = Path(cfg.paths.output_dir).resolve()
    command = [
        sys.executable,
        "-m",
        "imblab.train",
        *info["overrides"],
        f"hydra.run.dir={quote_override(str(out))}",
        "hydra.output_subdir=null",
        "hydra.mode=RUN",
    ]
    if OmegaConf.select(cfg, "logger.tensorboard") is not None:  # resolved here, in the sweep
        tensorboard = cfg.logger.tensorboard
        command += [
            f"logger.tensorboard.save_dir={quote_override(str(tensorboard.save_dir))}",
            f"logger.tensorboard.version={quote_override(str(tensorboard.version))}",
        ]
    log.info("job %s: distributed run in its own process: %s", info.get("num"), " ".join(command))
    proc = subprocess.run(command, check=False)
    if proc.returncode != 0:
        child = read_status(out) or {}
        raise RuntimeError(child.get("error") or f"the run exited with code {proc.returncode}")
    record = json.loads((out / "metrics.json").read_text())
    return {k: math.nan if v is None else float(v) for k, v in record["metrics"].items()}


class SweepCallback(Callback):
    """Hydra callback of every ``imblab-train`` multirun: creates the sweep dir before the
    sweeper opens a storage in it, tells the jobs which keys are swept (for their dir names),
    resumes an interrupted Optuna study, and writes the sweep summary (``summary.md`` /
    ``summary.csv``: every job, failed ones marked) at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = config.hydra.sweeper
        optuna_search = "optuna" in str(sweeper.get("_target_", "")).lower()
        if optuna_search and importlib.util.find_spec("optuna") is None:
            what, fix = "needs Optuna, which is not installed", 'pip install "imblab[sweep]"'
            choice = config.hydra.runtime.choices["hydra/sweeper"]
            err = config_error("hydra/sweeper", choice, what, fix)
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        no_validation = (config.get("data") or {}).get("val_source") == "none"
        if optuna_search and (no_validation or config.monitor.get("metric") is None):
            err = config_error(
                "data.val_source" if no_validation else "monitor.metric",
                "none" if no_validation else None,
                "an Optuna search optimises the validation monitor, and this run has none",
                "use data.val_source=remainder (or split) and a monitor.metric",
            )
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        os.environ[SWEPT_KEYS] = ",".join(swept_keys(config))  # jobs inherit the environment
        if optuna_search and sweeper.get("storage"):
            remaining = resume_optuna(
                str(sweeper.storage), str(sweeper.study_name), int(sweeper.n_trials)
            )
            with read_write(config.hydra.sweeper):
                config.hydra.sweeper.n_trials = remaining

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        with quiet_logger("tensorboard"):  # its event reader logs every file it advances to
            write_summary(Path(config.hydra.sweep.dir))
        root = Path(config.hydra.sweep.dir).resolve()
        if (root / EVENTS).is_dir():
            log.info("TensorBoard: tensorboard --logdir %s", root / EVENTS)


def resume_optuna(storage: str, study_name: str, n_trials: int) -> int:
    """Prepare a rerun of an Optuna search on the same storage and return how many trials are
    still to run for ``n_trials`` in all. Trials left ``RUNNING`` by an interrupted run are
    marked failed and their parameters queued to run again (first); finished trials (complete,
    pruned, failed) count as done. A new study needs all ``n_trials``."""
    import optuna  # optional: the `sweep` extra, only an Optuna search needs it
    from optuna.trial import TrialState

    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        return n_trials
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # the storage holds no study of this name yet
        return n_trials
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for t in trials)
    interrupted = [t for t in trials if t.state == TrialState.RUNNING]
    for trial in interrupted:
        study.tell(trial.number, state=TrialState.FAIL)
        study.set_user_attr(f"interrupted_trial_{trial.number}", True)
        study.enqueue_trial(trial.params)
    remaining = max(n_trials - done, 0)
    log.info(
        "Optuna study %s: %d of %d trials done, %d interrupted (queued again), %d to run",
        study_name,
        done,
        n_trials,
        len(interrupted),
        remaining,
    )
    return remaining
