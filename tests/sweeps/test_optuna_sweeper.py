"""imblab's Optuna sweeper (hydra_plugins.imblab_optuna_sweeper) without training: the override
syntax against the distributions Optuna gets, the values the jobs get, the same trials as Optuna
run directly with the same sampler, failed trials, wrong settings, and Hydra finding the plugin
in a fresh process, from the editable install and from the wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import given
from hypothesis import strategies as st
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from hydra_plugins.imblab_optuna_sweeper._impl import Dimension, check_settings, search_space
from hydra_plugins.imblab_optuna_sweeper.optuna_sweeper import TARGET
from imblab.errors import ConfigError

from .optuna_app import objective

ROOT = Path(__file__).resolve().parents[2]
APP = Path(__file__).with_name("optuna_app.py")
# the app's search space, as Optuna's own distributions
SPACE: dict[str, BaseDistribution] = {
    "x": FloatDistribution(-1.0, 1.0),
    "n": IntDistribution(1, 4),
    "kind": CategoricalDistribution(("a", "b")),
}
APP_CONFIG = """\
defaults:
  - override hydra/sweeper: imblab_optuna
  - _self_
x: 0.0
n: 1
kind: a
fail_kind: none
hydra:
  sweeper:
    direction: maximize
    study_name: toy
    n_trials: 6
    params:
      x: interval(-1, 1)
      n: range(1, 5)
      kind: choice(a, b)
"""


def dims_of(params: dict[str, str], *arguments: str) -> dict[str, BaseDistribution]:
    dims, _ = search_space(params, arguments)
    return {name: dim.distribution for name, dim in dims.items()}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("interval(0.0003, 0.01)", FloatDistribution(0.0003, 0.01)),
        ("tag(log, interval(0.0003, 0.01))", FloatDistribution(0.0003, 0.01, log=True)),
        ("interval(1, 10)", FloatDistribution(1.0, 10.0)),  # Hydra's interval is of floats
        # Hydra's range excludes its stop, Optuna's high is included
        ("range(1, 10, 3)", IntDistribution(1, 7, step=3)),
        ("range(10, 1, -3)", IntDistribution(4, 10, step=3)),
        ("range(5)", IntDistribution(0, 4)),
        ("shuffle(range(2, 6))", IntDistribution(2, 5)),
        ("tag(log, range(1, 64))", IntDistribution(1, 63, log=True)),
        ("range(0.5, 2.0, 0.5)", FloatDistribution(0.5, 1.5, step=0.5)),
        ("choice(ce, focal)", CategoricalDistribution(("ce", "focal"))),
        ("1,2,4", CategoricalDistribution((1, 2, 4))),
        ("choice(true, 2.5, 'a b', \"x,y\")", CategoricalDistribution((True, 2.5, "a b", "x,y"))),
        ("choice([1, 2], [3])", CategoricalDistribution(("[1,2]", "[3]"))),
    ],
)
def test_override_syntax_gives_optuna_distribution(value: str, expected: BaseDistribution) -> None:
    assert dims_of({"k": value}) == {"k": expected}


@given(start=st.integers(-50, 50), stop=st.integers(-50, 50), step=st.integers(-7, 7))
def test_integer_range_covers_the_values_of_python_range(start: int, stop: int, step: int) -> None:
    values = range(start, stop, step) if step else range(0)
    if not values:
        with pytest.raises(ConfigError, match=r"^hydra\.sweeper\.params\.k="):
            dims_of({"k": f"range({start}, {stop}, {step})"})
        return
    (dist,) = dims_of({"k": f"range({start}, {stop}, {step})"}).values()
    assert isinstance(dist, IntDistribution)
    assert list(range(dist.low, dist.high + 1, dist.step)) == sorted(values)


def parsed(key: str, text: str) -> Any:
    """What Hydra's override parser makes of ``key=text`` (the job's value)."""
    (override,) = OverridesParser.create().parse_overrides([f"{key}={text}"])
    assert not override.is_sweep_override(), text
    return override.value()


@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**12), 10**12))
def test_a_suggested_number_reaches_the_job_unchanged(value: float) -> None:
    dim = Dimension(FloatDistribution(-1.0, 1.0))
    got = parsed("k", dim.text(value))
    assert got == value and type(got) is type(value)


def test_a_choice_reaches_the_job_as_hydra_parsed_it() -> None:
    (sweep,) = OverridesParser.create().parse_overrides(
        ["k=choice(ce, 'a b', \"x,y\", 'f(x)=1', [1, 2], {a: 1}, true, 3, 0.5)"]
    )
    dims, _ = search_space(
        {}, ["k=choice(ce, 'a b', \"x,y\", 'f(x)=1', [1, 2], {a: 1}, true, 3, 0.5)"]
    )
    dim = dims["k"]
    assert isinstance(dim.distribution, CategoricalDistribution)
    hydra_values = list(sweep.sweep_iterator())
    assert [parsed("k", dim.text(c)) for c in dim.distribution.choices] == hydra_values


def test_fixed_overrides_and_the_last_entry_of_a_key() -> None:
    params = {"loss": "choice(ce, focal)", "sampler": "choice(none, sqrt)", "trainer.max_epochs": 5}
    arguments = ["loss=focal", "sampler=none,sqrt,balanced", "+a.b=[1, 2]", "~c", "d=x y"]
    dims, fixed = search_space(params, arguments)
    assert {name: dim.distribution for name, dim in dims.items()} == {
        "sampler": CategoricalDistribution(("none", "sqrt", "balanced"))
    }
    assert fixed == ["trainer.max_epochs=5", "loss=focal", "+a.b=[1, 2]", "~c", "d=x y"]


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("tag(lg, interval(0, 1))", "unknown tag 'lg': log is the one tag Optuna takes"),
        ("tag(log, choice(1, 2))", "tag(log, ...) takes an interval or a range, not a choice"),
        ("range(5, 1)", "the range lists no value"),
        ("range(1, 5, 0)", "range() arg 3 must not be zero"),
        ("interval(0, 1", "no viable alternative at input 'interval(0, 1'"),
        ("tag(log, interval(0, 1))", ""),  # Optuna's own message follows
        ("tag(log, range(1, 10, 2))", ""),
    ],
)
def test_what_optuna_cannot_take_is_a_one_line_error(value: str, what: str) -> None:
    where = [({"x": value}, [], "hydra.sweeper.params.x"), ({}, [f"x={value}"], "x")]
    for params, arguments, key in where:
        with pytest.raises(ConfigError) as raised:
            search_space(params, arguments)
        text = str(raised.value)
        assert text.startswith(f"{key}={value!r}: {what}"), text
        assert text.endswith("; see docs/sweeps.md#optuna-search for the syntax Optuna takes")
        assert "\n" not in text


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            ("autoimize", 20, 1, 1.0),
            "hydra.sweeper.direction='autoimize': must be maximize or minimize",
        ),
        (("maximize", -1, 1, 1.0), "hydra.sweeper.n_trials=-1: must be >= 0"),
        (("maximize", 20, 0, 1.0), "hydra.sweeper.n_jobs=0: must be >= 1"),
        (("minimize", 20, 1, 1.5), "hydra.sweeper.max_failure_rate=1.5: must be in [0, 1]"),
    ],
)
def test_wrong_settings_are_one_line_errors(
    settings: tuple[str, int, int, float], message: str
) -> None:
    with pytest.raises(ConfigError, match=r"^" + message.replace("[", r"\[").replace("(", r"\(")):
        check_settings(*settings)
    check_settings("maximize", 0, 1, 0.0)


# --- the sweeper in a Hydra app ----------------------------------------------------------------


def run_app(tmp_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the app's multirun with the config above, the study in tmp_path/study.db."""
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "app.yaml").write_text(APP_CONFIG)
    proc = subprocess.run(
        [
            sys.executable,
            str(APP),
            "-m",
            "--config-dir",
            str(conf),
            "--config-name",
            "app",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def study_trials(tmp_path: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'study.db'}").trials


def optuna_itself(sampler: optuna.samplers.BaseSampler, n_trials: int) -> list[dict[str, Any]]:
    """The parameters of ``n_trials`` trials of Optuna's own ask-and-tell loop over SPACE."""
    study = optuna.create_study(sampler=sampler, direction="maximize")
    for _ in range(n_trials):
        trial = study.ask(SPACE)
        study.tell(trial, objective(**trial.params))
    return [t.params for t in study.trials]


def test_tpe_search_is_the_search_optuna_runs_itself(tmp_path: Path) -> None:
    run_app(tmp_path, "hydra.sweeper.sampler.seed=3", "hydra.sweeper.sampler.n_startup_trials=2")
    trials = study_trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert all(t.distributions == SPACE for t in trials)
    reference = optuna_itself(optuna.samplers.TPESampler(seed=3, n_startup_trials=2), 6)
    assert [t.params for t in trials] == reference
    for trial in trials:  # each job got its trial's values, and returned their objective
        job = Path(trial.user_attrs["job_dir"])
        assert job.parent == tmp_path / "sweep"
        assert json.loads((job / "values.json").read_text()) == trial.params
        assert trial.value == objective(**trial.params)
    best = max(trials, key=lambda t: t.value or -1e9)
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert results == {
        "name": "optuna",
        "best_params": best.params,
        "best_value": best.value,
        "best_trial": best.number,
        "best_job_dir": best.user_attrs["job_dir"],
    }


def test_random_sampler_and_failed_trials(tmp_path: Path) -> None:
    run_app(
        tmp_path,
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=5",
        "fail_kind=b",
        "hydra.sweeper.max_failure_rate=1.0",
    )
    trials = study_trials(tmp_path)
    assert [t.params for t in trials] == optuna_itself(optuna.samplers.RandomSampler(seed=5), 6)
    kinds = [t.params["kind"] for t in trials]
    assert set(kinds) == {"a", "b"}  # both: some trials fail, the others complete
    for trial in trials:
        failed = trial.params["kind"] == "b"
        assert trial.state == (TrialState.FAIL if failed else TrialState.COMPLETE)
        assert trial.value == (None if failed else objective(**trial.params))


def test_more_failures_than_max_failure_rate_stop_the_search(tmp_path: Path) -> None:
    proc = run_app(
        tmp_path, "kind=choice(b)", "fail_kind=b", check=False
    )  # max_failure_rate: 0.0, the plugin's default
    assert proc.returncode == 1
    assert "1 of 1 trials of a batch failed, more than hydra.sweeper.max_failure_rate=0.0" in (
        proc.stderr
    )
    assert [t.state for t in study_trials(tmp_path)] == [TrialState.FAIL]


def test_a_key_the_config_lacks_fails_its_trials_before_any_job(tmp_path: Path) -> None:
    proc = run_app(tmp_path, "y=choice(1, 2)", check=False)
    assert proc.returncode == 1 and "Key 'y' is not in struct" in proc.stderr
    assert [t.state for t in study_trials(tmp_path)] == [TrialState.FAIL]  # not left RUNNING
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["x=tag(lg, interval(0, 1))"],
            "error: x='tag(lg, interval(0, 1))': unknown tag 'lg': log is "
            "the one tag Optuna takes; see docs/sweeps.md#optuna-search for the syntax Optuna "
            "takes",
        ),
        (
            ["hydra.sweeper.direction=up"],
            "error: hydra.sweeper.direction='up': must be maximize or minimize; set it "
            "(hparams_search=optuna_f1 takes it from monitor.mode: min or max)",
        ),
    ],
)
def test_wrong_setting_exits_2_with_one_line(tmp_path: Path, args: list[str], line: str) -> None:
    proc = run_app(tmp_path, *args, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [line]
    assert not (tmp_path / "study.db").exists() or study_trials(tmp_path) == []


# --- plugin discovery ----------------------------------------------------------------------------

PROBE = """
import json, sys
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
sweepers = {f"{p.__module__}.{p.__name__}": sys.modules[p.__module__].__file__
            for p in Plugins.instance().discover(Sweeper)}
print(json.dumps({
    "sweepers": sweepers,
    "configs": ConfigStore.instance().list("hydra/sweeper"),
    "samplers": ConfigStore.instance().list("hydra/sweeper/sampler"),
    "optuna_imported": "optuna" in sys.modules,
}))
"""


def discover(*python_args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """What Hydra's plugin scan finds in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, *python_args, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
        cwd="/",
    )
    found: dict[str, Any] = json.loads(proc.stdout)
    return found


def test_hydra_finds_the_sweeper_in_a_fresh_process() -> None:
    found = discover()
    assert found["sweepers"][TARGET].startswith(str(ROOT / "src" / "hydra_plugins"))
    assert "imblab_optuna.yaml" in found["configs"]
    assert {"tpe.yaml", "random.yaml"} <= set(found["samplers"])
    assert not found["optuna_imported"]  # every Hydra app scans the plugins: Optuna stays out


def test_the_wheel_ships_the_sweeper_where_hydra_finds_it(tmp_path: Path) -> None:
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*build, "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("imblab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    plugin = {n for n in names if n.startswith("hydra_plugins/")}
    assert plugin == {
        "hydra_plugins/imblab_optuna_sweeper/__init__.py",
        "hydra_plugins/imblab_optuna_sweeper/_impl.py",
        "hydra_plugins/imblab_optuna_sweeper/optuna_sweeper.py",
    }  # no hydra_plugins/__init__.py: the namespace package stays shared with other plugins
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # -S: no site-packages .pth files, so not the editable install's src/ either
    path = os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]])
    found = discover("-S", env={**os.environ, "PYTHONPATH": path})
    assert found["sweepers"][TARGET].startswith(str(site))
