"""imblab's Optuna sweeper: a Hydra :class:`~hydra.plugins.sweeper.Sweeper` over Optuna's
ask-and-tell interface (Optuna >= 4), selected with ``hydra/sweeper=imblab_optuna``.

It asks the study for ``n_jobs`` trials at a time, launches them as Hydra jobs with the
configured launcher (basic, joblib, submitit), and tells each trial its job's return value: a
finite number completes it, anything else (None, NaN, an exception) fails it. The search space
is ``params`` (then the command line) in Hydra's override syntax:

- ``choice(a, b, ...)`` or ``a,b,...``: categorical (a list or dict value is kept as its text);
- ``interval(a, b)``: a float in [a, b]; ``tag(log, interval(a, b))`` on a log scale;
- ``range(a, b, step)``: the values Hydra's range lists (``b`` excluded), an int or a float
  with that step; ``tag(log, range(a, b))`` on a log scale (step 1);
- anything else: a fixed override every trial gets. A later entry of a key replaces an earlier
  one, so ``loss=focal`` on the command line fixes a searched ``loss``.

Hydra imports every module of ``hydra_plugins`` in any Hydra app, which registers the configs
below: this module imports Optuna only when a sweep starts.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import MISSING, DictConfig

from ._impl import (
    check_settings,
    exit_on_config_error,
    objective,
    search_space,
    write_results,
)

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

TARGET = "hydra_plugins.imblab_optuna_sweeper.optuna_sweeper.OptunaSweeper"


@dataclass
class TPESamplerConf:
    """``optuna.samplers.TPESampler`` (5 random trials first, where Optuna's default is 10: a
    search of imblab's size runs 20 or so); another of its keywords:
    ``+hydra.sweeper.sampler.KEY=VALUE``."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    n_startup_trials: int = 5


@dataclass
class RandomSamplerConf:
    """``optuna.samplers.RandomSampler``."""

    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class OptunaSweeperConf:
    """``hydra.sweeper`` of ``hydra/sweeper=imblab_optuna``."""

    _target_: str = TARGET
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    # hydra/sweeper/sampler: tpe or random
    sampler: Any = MISSING
    # maximize or minimize the value each job returns
    direction: str = "minimize"
    # the study's database URL (sqlite:///path.db); null: in memory, lost at the end
    storage: str | None = None
    # the study's name in the storage (null: Optuna makes one up)
    study_name: str | None = None
    # trials this sweep runs
    n_trials: int = 20
    # trials asked and launched at once (in parallel with a parallel launcher)
    n_jobs: int = 1
    # the share of failed trials in a batch above which the sweep stops with an error
    max_failure_rate: float = 0.0
    # the search space: key -> Hydra override value (choice, interval, range, tag(log, ...))
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="imblab_optuna", node=OptunaSweeperConf, provider="imblab"
)
ConfigStore.instance().store(
    group="hydra/sweeper/sampler", name="tpe", node=TPESamplerConf, provider="imblab"
)
ConfigStore.instance().store(
    group="hydra/sweeper/sampler", name="random", node=RandomSamplerConf, provider="imblab"
)


class OptunaSweeper(Sweeper):
    """Run ``n_trials`` trials of the study ``study_name`` in ``storage`` (created, or loaded
    with its finished trials), ``n_jobs`` at a time, and write the best trial to
    ``<sweep dir>/optimization_results.yaml``. The job numbers count from 0 in each sweep."""

    def __init__(
        self,
        sampler: "optuna.samplers.BaseSampler",
        direction: str,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
    ) -> None:
        with exit_on_config_error():
            check_settings(direction, n_trials, n_jobs, max_failure_rate)
        self.sampler = sampler
        self.direction = direction
        self.storage = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.params = params
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> None:
        import optuna
        from optuna.study import StudyDirection
        from optuna.trial import TrialState

        assert self.config is not None and self.launcher is not None
        with exit_on_config_error():
            dims, fixed = search_space(self.params, arguments)
        distributions = {name: dim.distribution for name, dim in dims.items()}
        study = optuna.create_study(
            storage=self.storage,
            sampler=self.sampler,
            study_name=self.study_name,
            direction=StudyDirection[self.direction.upper()],
            load_if_exists=True,
        )
        log.info(
            "Optuna study %s (%s, %s, %s): %d trials, %d at a time",
            study.study_name,
            self.storage or "in memory",
            type(self.sampler).__name__,
            self.direction,
            self.n_trials,
            self.n_jobs,
        )
        launched = 0
        while launched < self.n_trials:
            trials = [
                study.ask(distributions) for _ in range(min(self.n_jobs, self.n_trials - launched))
            ]
            batch = [[*(f"{n}={dims[n].text(t.params[n])}" for n in dims), *fixed] for t in trials]
            try:
                self.validate_batch_is_legal(batch)  # a bad key fails here, not in every job
            except Exception:
                for trial in trials:
                    study.tell(trial, state=TrialState.FAIL)
                raise
            returns = self.launcher.launch(batch, initial_job_idx=launched)
            launched += len(trials)
            failed = []
            for trial, ret in zip(trials, returns, strict=True):
                if ret.hydra_cfg is not None:
                    trial.set_user_attr("job_dir", str(ret.hydra_cfg.hydra.runtime.output_dir))
                value = objective(ret)
                if value is None:
                    study.tell(trial, state=TrialState.FAIL)
                    failed.append(ret)
                    log.warning("trial %d failed: its job returned no number", trial.number)
                else:
                    study.tell(trial, value)
            if len(failed) / len(returns) > self.max_failure_rate:
                errors = [r._return_value for r in failed if r.status == JobStatus.FAILED]
                raise RuntimeError(
                    f"{len(failed)} of {len(returns)} trials of a batch failed, more than "
                    f"hydra.sweeper.max_failure_rate={self.max_failure_rate}"
                ) from (errors[0] if errors else None)
        write_results(study, Path(self.config.hydra.sweep.dir))
