"""The search space, checks and results of imblab's Optuna sweeper (:mod:`.optuna_sweeper`).

Hydra's plugin scan skips modules whose name starts with ``_``: this one is imported by the
sweeper module (as usual, so its dataclass can use postponed annotations) and imports Optuna
only inside its functions.
"""

from __future__ import annotations

import logging
import math
import numbers
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    IntervalSweep,
    Override,
    RangeSweep,
    Sweep,
    Transformer,
)
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from omegaconf import OmegaConf

from imblab.errors import ConfigError, config_error

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

log = logging.getLogger(__name__)

DIRECTIONS = ("maximize", "minimize")
SYNTAX = "see docs/sweeps.md#optuna-search for the syntax Optuna takes"


@dataclass(frozen=True)
class Dimension:
    """One searched key: the distribution Optuna samples, and the choices that are override
    text already (a list or dict choice, which Optuna holds as its text)."""

    distribution: BaseDistribution
    verbatim: frozenset[str] = frozenset()

    def text(self, value: Any) -> str:
        """``value`` (suggested by Optuna) as the value of an override, escaped as Hydra's
        basic sweeper escapes it."""
        return value if value in self.verbatim else Transformer.str(value)


def dimension(override: Override) -> Dimension:
    """The :class:`Dimension` of a sweep override (the forms: :mod:`.optuna_sweeper`);
    raises ValueError for what Optuna cannot sample."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    sweep = override.value()
    assert isinstance(sweep, Sweep)
    unknown = sorted(set(sweep.tags) - {"log"})
    if unknown:
        raise ValueError(f"unknown tag {unknown[0]!r}: log is the one tag Optuna takes")
    log_scale = "log" in sweep.tags
    if isinstance(sweep, IntervalSweep):
        assert sweep.start is not None and sweep.end is not None
        return Dimension(FloatDistribution(sweep.start, sweep.end, log=log_scale))
    values = list(override.sweep_iterator())
    if isinstance(sweep, RangeSweep):
        if not values:
            raise ValueError("the range lists no value")
        assert sweep.step is not None
        ints = [v for v in values if isinstance(v, int)]
        if len(ints) == len(values):
            step = abs(int(sweep.step))
            return Dimension(IntDistribution(min(ints), max(ints), log=log_scale, step=step))
        floats = [float(v) for v in values if isinstance(v, (int, float))]
        float_step = abs(float(sweep.step))
        return Dimension(
            FloatDistribution(min(floats), max(floats), log=log_scale, step=float_step)
        )
    if log_scale:
        raise ValueError("tag(log, ...) takes an interval or a range, not a choice")
    primitive = (str, int, float, bool)
    choices = [v if isinstance(v, primitive) else Transformer.str(v) for v in values]
    verbatim = frozenset(Transformer.str(v) for v in values if not isinstance(v, primitive))
    return Dimension(CategoricalDistribution(choices), verbatim)


def search_space(
    params: Mapping[Any, Any] | None, arguments: Sequence[str]
) -> tuple[dict[str, Dimension], list[str]]:
    """The searched keys (their :class:`Dimension`, in order) and the fixed overrides of
    ``params`` (``hydra.sweeper.params``) followed by the command-line ``arguments``. Raises
    :class:`~imblab.errors.ConfigError` naming the first entry Optuna cannot take."""
    entries = [(f"hydra.sweeper.params.{k}", f"{k}={v}") for k, v in (params or {}).items()]
    entries += [(line.partition("=")[0], line) for line in arguments]
    parser = OverridesParser.create()
    dims: dict[str, Dimension] = {}
    fixed: dict[str, str] = {}
    for key, line in entries:
        try:
            (override,) = parser.parse_overrides([line])
            name = override.get_key_element()
            dims.pop(name, None)
            fixed.pop(name, None)
            if override.is_sweep_override():
                dims[name] = dimension(override)
            else:
                fixed[name] = line
        except (HydraException, ValueError) as err:
            what = str(err).splitlines()[0]
            raise config_error(key, line.partition("=")[2], what, SYNTAX) from None
    return dims, list(fixed.values())


def check_settings(direction: str, n_trials: int, n_jobs: int, max_failure_rate: float) -> None:
    """Raise :class:`~imblab.errors.ConfigError` for a setting the sweep cannot run with."""
    if direction not in DIRECTIONS:
        raise config_error(
            "hydra.sweeper.direction",
            direction,
            "must be maximize or minimize",
            "set it (hparams_search=optuna_f1 takes it from monitor.mode: min or max)",
        )
    if n_trials < 0:
        raise config_error("hydra.sweeper.n_trials", n_trials, "must be >= 0", "e.g. 20")
    if n_jobs < 1:
        raise config_error("hydra.sweeper.n_jobs", n_jobs, "must be >= 1", "e.g. 1")
    if not 0 <= max_failure_rate <= 1:
        raise config_error(
            "hydra.sweeper.max_failure_rate",
            max_failure_rate,
            "must be in [0, 1]",
            "e.g. 1.0 (failed trials never stop the search)",
        )


@contextmanager
def exit_on_config_error() -> Iterator[None]:
    """A :class:`~imblab.errors.ConfigError` raised inside is imblab's one-line
    ``error: ...`` on stderr and exit code 2 (before any trial is asked), not a traceback."""
    try:
        yield
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def objective(ret: JobReturn) -> float | None:
    """A job's return value as the trial's value: a finite real number, else None (failed)."""
    if ret.status != JobStatus.COMPLETED:
        return None
    value = ret.return_value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value) if math.isfinite(value) else None


def write_results(study: optuna.Study, sweep_dir: Path) -> None:
    """``<sweep_dir>/optimization_results.yaml``: the best trial's parameters, value and job
    dir (none before a trial completes)."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        log.warning("no trial of study %s completed: no optimization results", study.study_name)
        return
    best = study.best_trial
    results = {
        "name": "optuna",
        "best_params": best.params,
        "best_value": best.value,
        "best_trial": best.number,
        "best_job_dir": best.user_attrs.get("job_dir"),
    }
    OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
    log.info("best trial %d: %s = %s", best.number, best.params, best.value)
