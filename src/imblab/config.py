"""Config helpers: validation of the keys everything depends on (before anything is built),
``monitor.mode: auto`` resolved (a Hydra callback, before any callback or sweeper is built), the
monitor against the tags the run will log, the run dir (a Hydra callback), instantiating
callback groups, flattening."""

from __future__ import annotations

import atexit
import difflib
import logging
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import hydra
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback as HydraCallback
from lightning.pytorch import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from imblab.errors import ConfigError, config_error
from imblab.metrics.directions import AVERAGED_KEYS, builtin_direction
from imblab.runs import RunLock

log = logging.getLogger(__name__)

MONITOR_MODES = ("min", "max")
#: the scalar tags the model itself logs (imblab.models.classifier), besides the metric callbacks
MODEL_TAGS = ("train/loss_step", "train/loss_epoch", "train/accuracy", "val/loss")
#: the values of ``zero_division`` scikit-learn accepts (and nan)
ZERO_DIVISION = (0.0, 1.0)


def validate(cfg: DictConfig) -> None:
    """Check the top-level keys that everything else depends on; raise :class:`ConfigError`.
    ``monitor.mode: auto`` is resolved in place first (:func:`resolve_monitor_mode`)."""
    resolve_monitor_mode(cfg)
    metric = cfg.monitor.metric
    if not isinstance(metric, str) or "/" not in metric:
        raise ConfigError(
            f"monitor.metric={metric}: must be a logged tag like val/f1_macro; "
            "set monitor.metric=val/f1_macro"
        )
    if not isinstance(cfg.seed, int):
        raise ConfigError(f"seed={cfg.seed}: must be an integer; set e.g. seed=42")
    every = cfg.get("figures_every_n_epochs", 1)
    if not isinstance(every, int) or every < 1:
        raise ConfigError(
            f"figures_every_n_epochs={every}: must be an integer >= 1; set figures_every_n_epochs=1"
        )
    trainer = cfg.get("trainer") or {}
    epochs = trainer.get("max_epochs")
    if epochs is not None and (not is_int(epochs) or epochs < -1):
        raise config_error(
            "trainer.max_epochs",
            epochs,
            "must be an integer >= 1 (-1: no limit)",
            "set e.g. trainer.max_epochs=30",
        )
    optimizer = (cfg.get("model") or {}).get("optimizer") or {}
    lr = optimizer.get("lr")
    if "lr" in optimizer and (not is_real(lr) or not 0 < lr < math.inf):
        raise config_error(
            "model.optimizer.lr", lr, "must be a number > 0", "set e.g. model.optimizer.lr=0.002"
        )
    check_cuda_graph(cfg.get("model") or {})
    for name, metric in (cfg.get("metrics") or {}).items():
        if isinstance(metric, Mapping):
            check_metric_options(f"metrics.{name}", metric)


def is_int(value: Any) -> TypeGuard[int]:
    """An integer, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> TypeGuard[int | float]:
    """An int or float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_cuda_graph(model: Mapping[str, Any]) -> None:
    """``model.cuda_graph``: true or false (absent: false), and not with ``model.compile``
    (the captured training step runs the backbone uncompiled)."""
    value = model.get("cuda_graph", False)
    if not isinstance(value, bool):
        raise config_error(
            "model.cuda_graph", value, "must be true or false", "set model.cuda_graph=false"
        )
    if value and model.get("compile") is True:
        raise config_error(
            "model.cuda_graph",
            value,
            "cannot be combined with model.compile=true (one compiles the backbone, the other "
            "captures it in CUDA graphs)",
            "set model.compile=false or model.cuda_graph=false",
        )


def check_metric_options(key: str, conf: Mapping[str, Any]) -> None:
    """The options metric callbacks share, as config keys: ``betas`` (a non-empty list of
    finite numbers > 0) and ``zero_division`` (0, 1 or nan)."""
    if "betas" in conf:
        betas = conf["betas"]
        items = list(betas) if isinstance(betas, Sequence) and not isinstance(betas, str) else None
        if not items or not all(is_real(b) and 0 < b < math.inf for b in items):
            raise config_error(
                f"{key}.betas",
                OmegaConf.to_object(betas) if items is not None else betas,
                "must be a non-empty list of numbers > 0 (F-beta weighs recall beta times as "
                "much as precision)",
                f"set e.g. {key}.betas=[0.5,1,2]",
            )
    if "zero_division" in conf:
        value = conf["zero_division"]
        number = float(value) if is_real(value) or value in ("nan", "NaN") else None
        if number is None or not (math.isnan(number) or number in ZERO_DIVISION):
            raise config_error(
                f"{key}.zero_division",
                value,
                "the value of an undefined precision, recall or F must be 0, 1 or nan "
                "(as in scikit-learn)",
                f"set {key}.zero_division=0",
            )


def resolve_monitor(cfg: DictConfig) -> str | None:
    """The run's monitor (``monitor.metric``), None when it has none, and the config made to
    match: ``data.val_source=none`` (no validation split) sets ``monitor.metric`` to null (so
    the callbacks' ``${monitor.metric}`` too: the checkpoint callback then keeps the last
    epoch) and ``trainer.limit_val_batches`` to 0; without a monitor ``callbacks.early_stopping``
    is switched off (nothing to stop on)."""
    with open_dict(cfg):
        if (cfg.get("data") or {}).get("val_source") == "none":
            cfg.monitor.metric = None
            cfg.trainer.limit_val_batches = 0
        metric = cfg.monitor.get("metric")
        if metric is None and (cfg.get("callbacks") or {}).get("early_stopping") is not None:
            cfg.callbacks.early_stopping = None
    if metric is None:
        log.info("no monitor: the checkpoint is the last epoch, no early stopping")
    return None if metric is None else str(metric)


def monitor_direction(metric: str, metrics: Mapping[str, Any] | None) -> bool:
    """Whether higher is better for the tag ``metric``: imblab's static table of its own tags
    (:func:`~imblab.metrics.directions.builtin_direction`), else the ``directions`` that a
    configured metric callback of ``metrics`` (the ``metrics`` group, each instantiated from its
    config) declares for it. A per-class tag ``<stage>/<metric>/<class>`` is asked of the
    plugins with that class among the class names (the data is not loaded yet).

    Raises:
        ConfigError: the tag has no direction (a support, a threshold) or none is declared.
    """
    stage, _, key = metric.partition("/")
    better = builtin_direction(key)
    if isinstance(better, bool):
        return better
    fix = "set monitor.mode=max (higher is better) or monitor.mode=min"
    if better is None:
        raise config_error(
            "monitor.mode", "auto", f"{metric} has no better direction (a count or threshold)", fix
        )
    last = key.rsplit("/", 1)[-1]
    probe = [last, "class_1" if last == "class_0" else "class_0"] if "/" in key else ["a", "b"]
    declared = {f"{stage}/{k}" for k in AVERAGED_KEYS}
    for conf in (metrics or {}).values():
        if not isinstance(conf, Mapping) or "_target_" not in conf:
            continue
        directions = getattr(instantiate(conf), "directions", None)
        found = {} if directions is None else directions(stage, probe)
        if metric in found:
            return bool(found[metric])
        declared.update(found)
    close = difflib.get_close_matches(metric, sorted(declared), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise config_error(
        "monitor.metric",
        metric,
        "no configured metric declares which way is better for this tag (monitor.mode=auto "
        "needs it)",
        f"{hint}(every tag: docs/metrics.md); or {fix}, or declare higher_is_better in the "
        "metric plugin",
    )


def resolve_monitor_mode(cfg: DictConfig) -> str:
    """Resolve ``monitor.mode: auto`` (the default) in place to ``max`` or ``min`` by the
    direction of ``monitor.metric`` (:func:`monitor_direction`; ``max`` for a run without a
    monitor, where it is unused); ``min`` and ``max`` are kept. Everything that reads
    ``${monitor.mode}`` afterwards (checkpointing, early stopping, an Optuna search's direction,
    ``.hydra/config.yaml``, ``metrics.json``, ``status.json``) gets the resolved value. Returns
    it; any other value is a ConfigError."""
    monitor = cfg.get("monitor") or {}
    mode = monitor.get("mode", "auto")
    if mode in MONITOR_MODES:
        return str(mode)
    if mode != "auto":
        raise config_error(
            "monitor.mode", mode, "must be auto, max or min", "set monitor.mode=auto"
        )
    metric = monitor.get("metric")
    if metric is not None and (not isinstance(metric, str) or "/" not in metric):
        raise ConfigError(
            f"monitor.metric={metric}: must be a logged tag like val/f1_macro; "
            "set monitor.metric=val/f1_macro"
        )
    higher = metric is None or monitor_direction(metric, cfg.get("metrics"))
    resolved = "max" if higher else "min"
    with read_write(cfg), open_dict(cfg):
        cfg.monitor.mode = resolved
    log.info("monitor.mode=auto: %s for %s", resolved, metric)
    return resolved


class ResolveMonitorMode(HydraCallback):
    """Hydra callback: resolves ``monitor.mode: auto`` (:func:`resolve_monitor_mode`) in the
    run's config before Hydra saves ``.hydra/config.yaml`` and runs the job, and in a sweep's
    config before the sweeper is built (``direction: ${monitor.mode}imize``); a sweep job's
    config is composed afresh, so its saved ``config.yaml`` is rewritten with the resolved value
    (the job itself resolves it again, the same way). A failure is the one-line error and exit
    code 2 (in a sweep job: that job's failure, from its own validation)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _resolve_or_exit(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _resolve_or_exit(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if OmegaConf.select(config, "monitor.mode") != "auto":
            return
        try:
            mode = resolve_monitor_mode(config)
        except ConfigError:
            return
        subdir = config.hydra.output_subdir
        saved = Path(config.hydra.runtime.output_dir) / str(subdir) / "config.yaml"
        if subdir is not None and saved.is_file():
            task = OmegaConf.load(saved)
            task.monitor.mode = mode
            OmegaConf.save(task, saved)


def _resolve_or_exit(config: DictConfig) -> None:
    if "monitor" not in config:
        return
    try:
        resolve_monitor_mode(config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def check_monitor(
    metric: str | None,
    callbacks: Iterable[Any],
    class_names: Sequence[str],
    train_counts: Sequence[int] = (),
) -> None:
    """``monitor.metric`` must be a tag this run logs in the validation epoch: one the model
    logs (:data:`MODEL_TAGS`) or one of the metric ``callbacks``'
    ``tags("val", class_names, train_counts)``
    (the ``metrics`` group). Skipped (with a log line) when one of them cannot say which tags
    it logs (it has no ``tags`` method), and for a run without a monitor (None)."""
    if metric is None:
        return
    tags = set(MODEL_TAGS)
    for callback in callbacks:
        tags_of = getattr(callback, "tags", None)
        if tags_of is None:
            log.info("monitor.metric not checked: %s does not list its tags", type(callback))
            return
        tags.update(tags_of("val", list(class_names), list(train_counts)))
    if metric in tags:
        return
    close = difflib.get_close_matches(metric, sorted(tags), n=1)
    hint = f"did you mean {close[0]}?" if close else f"e.g. {sorted(tags)[0]}"
    raise config_error(
        "monitor.metric",
        metric,
        "no configured metric logs this tag in validation",
        f"{hint} (every tag: docs/metrics.md, logged every epoch)",
    )


def check_writable_dir(key: str, path: str) -> None:
    """Create ``path`` (with its parents) and write a file in it, or raise the one-line
    :class:`ConfigError` naming ``key``."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        what = f"cannot create or write it ({err.strerror or type(err).__name__})"
        raise config_error(
            key, path, what, f"choose a writable directory, e.g. {key}=runs/x"
        ) from None


#: changes a rerun in a run dir (resuming it) may make to the run's saved config, each key
#: with its subkeys: what the run trains is the same (docs/configuration.md#resuming-a-run);
#: ``trainer.max_epochs`` within the plan of a schedule planned over it (:func:`check_rerun`)
SAFE_CHANGES = (
    "trainer.max_epochs",
    "model.scheduler.max_epochs",  # warmup_multistep: only warns about unreached milestones
    "ckpt_path",
    "test",
    "test_predictions",
    "figures_every_n_epochs",
    "per_class_max_classes",
    "tags",
    "hparams_metrics",
    "paths.data_dir",
    "data.mirrors",
    "data.download_timeout",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "callbacks.rich_progress_bar",
)
#: environment variables of a process's rank in a distributed run (set by its launcher)
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
_REFERENCE = re.compile(r"\$\{([\w.]+)\}")
_ABSENT = "<absent>"


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """A config container as ``a.b.c`` keys and leaf values (lists whole), unresolved."""
    if not isinstance(node, Mapping):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _safe(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in SAFE_CHANGES)


def _shown(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= 32 else f"{text[:31]}…"


def _extends(old: Any, new: Any) -> bool:
    """Whether ``trainer.max_epochs`` going from ``old`` to ``new`` trains longer (-1: no
    limit)."""
    if not (is_int(old) and is_int(new)) or old == -1:
        return old != new
    return new == -1 or new > old


def task_config(config: DictConfig) -> dict[str, Any]:
    """``config`` without its ``hydra`` node (what Hydra saves as ``.hydra/config.yaml``), as
    a container, unresolved."""
    task = OmegaConf.to_container(config, resolve=False)
    assert isinstance(task, dict)
    return {str(k): v for k, v in task.items() if k != "hydra"}


def check_rerun(config: DictConfig, run_dir: Path) -> None:
    """A run started in a run dir that holds a run (its ``.hydra/config.yaml`` and a
    checkpoint or ``metrics.json``) resumes that run, so its config must be the run's: every
    key compared unresolved (so ``${...}`` values compare as written), changes allowed only to
    :data:`SAFE_CHANGES`. A learning-rate schedule planned over ``trainer.max_epochs`` (a
    ``model.scheduler`` value that interpolates it, as the cosine schedule's ``T_max``) keeps
    its plan on resume (the scheduler's state is restored), so the run may stop earlier but not
    go on past it: there the restored schedule would raise the learning rate again.

    Raises:
        ConfigError: one line naming the keys that differ and the ways out.
    """
    saved_file = run_dir / ".hydra" / "config.yaml"
    results = (run_dir / "metrics.json").is_file() or any(run_dir.glob("checkpoints/*.ckpt"))
    if not saved_file.is_file() or not results:
        return
    saved = _flat(OmegaConf.to_container(OmegaConf.load(saved_file), resolve=False))
    new = _flat(task_config(config))
    changed = {
        k: (saved.get(k, _ABSENT), new.get(k, _ABSENT))
        for k in sorted(set(saved) | set(new))
        if saved.get(k, _ABSENT) != new.get(k, _ABSENT)
    }
    unsafe = {k: v for k, v in changed.items() if not _safe(k)}
    if unsafe:
        overrides_file = run_dir / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.load(overrides_file) if overrides_file.is_file() else None
        listed = [str(o) for o in overrides] if isinstance(overrides, Sequence) else []
        own = " ".join(o for o in listed if not o.startswith("hydra.run.dir="))
        # a group switched (another _target_): the group, not each of its keys
        groups = [k.removesuffix("._target_") for k in unsafe if k.endswith("._target_")]
        shown = [
            f"{k.removesuffix('._target_')} {_shown(old)} -> {_shown(now)}"
            for k, (old, now) in unsafe.items()
            if k.endswith("._target_") or not any(k.startswith(f"{g}.") for g in groups)
        ]
        more = f" and {len(shown) - 4} more" if len(shown) > 4 else ""
        raise config_error(
            "hydra.run.dir",
            str(run_dir),
            f"holds a run of another config ({', '.join(shown[:4])}{more}), which it would resume",
            f"rerun it with its own overrides ({own or 'none'}) or give this config another "
            "hydra.run.dir (changes a resumed run may make: docs/configuration.md#resuming-a-run)",
        )
    if "trainer.max_epochs" not in changed:
        return
    old, now = changed["trainer.max_epochs"]
    planned = [
        k
        for k, value in saved.items()
        if k.startswith("model.scheduler.")
        and not _safe(k)
        and "trainer.max_epochs" in _REFERENCE.findall(str(value))
    ]
    if planned and _extends(old, now):
        raise config_error(
            "trainer.max_epochs",
            now,
            f"goes on past trainer.max_epochs={old}, the length the run's learning-rate "
            f"schedule was planned for ({planned[0]}=${{trainer.max_epochs}}, restored on "
            f"resume: it would raise the learning rate again after epoch {old})",
            f"resume with trainer.max_epochs<={old}, or train the longer run in another "
            "hydra.run.dir",
        )


def launched_rank() -> int:
    """This process's rank from its launcher's environment (:data:`RANK_VARIABLES`; 0 when it
    was not launched as a rank of a distributed run)."""
    for name in RANK_VARIABLES:
        if os.environ.get(name, "0").isdigit() and int(os.environ.get(name, "0")) != 0:
            return int(os.environ[name])
    return 0


class RunDirCheck(HydraCallback):
    """Hydra callback: before Hydra creates the run dir (``hydra.run.dir``) or sweep dir
    (``hydra.sweep.dir``) and writes ``.hydra/`` into it, checks that it can be created and
    written, then (a run, rank 0) takes its lock (:class:`~imblab.runs.RunLock`, released when
    the run ends, also on a failure, an exception or a signal that ends the process) and
    compares the config with the run it holds (:func:`check_rerun`). A refusal is the
    one-line error and exit code 2, with ``.hydra/`` and ``status.json`` left as they were.
    Ranks a distributed launcher started run in rank 0's dir and check nothing."""

    def __init__(self) -> None:
        self.lock: RunLock | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = str(config.hydra.run.dir)
        exit_on_error("hydra.run.dir", run_dir)
        if launched_rank() != 0:
            return
        lock = RunLock(Path(run_dir))
        try:
            lock.acquire()
            atexit.register(lock.release)  # SystemExit (errors, signals) skips on_run_end
            self.lock = lock
            check_rerun(config, Path(run_dir))
        except ConfigError as err:
            lock.release()
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.lock is not None:
            self.lock.release()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        exit_on_error("hydra.sweep.dir", str(config.hydra.sweep.dir))


def exit_on_error(key: str, path: str) -> None:
    """:func:`check_writable_dir`, a failure printed as ``error: ...`` and exit code 2."""
    try:
        check_writable_dir(key, path)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def instantiate(conf: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets a :class:`ConfigError` of the target through
    unwrapped, so the user sees its one-line message instead of Hydra's wrapper."""
    try:
        return hydra.utils.instantiate(conf, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise


def instantiate_callbacks(group: DictConfig | None, key: str) -> list[Callback]:
    """Instantiate every entry of a callback group (``callbacks``, ``metrics``); null entries
    are skipped so ``callbacks.early_stopping=null`` switches one off."""
    if not group:
        return []
    callbacks = []
    for name, conf in group.items():
        name = str(name)
        if conf is None:
            continue
        if "_target_" not in conf:
            raise ConfigError(
                f"{key}.{name}: has no _target_; give it `_target_: <Callback class>` or set "
                f"{key}.{name}=null"
            )
        callbacks.append(instantiate(conf))
    return callbacks


def flatten(cfg: Mapping[str, Any] | DictConfig, prefix: str = "") -> dict[str, Any]:
    """Flatten nested config into ``a/b/c`` keys with scalar values (lists become strings)."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    out: dict[str, Any] = {}
    for key, value in dict(container).items():  # type: ignore[arg-type]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}/"))
        elif value is None or isinstance(value, bool | int | float | str):
            out[name] = "null" if value is None else value
        else:
            out[name] = str(value)
    return out
