"""Bad settings and options get a clear error and change nothing (a sweep of the commands a user runs).

Each case was found by feeding the CLI and ``mlma.toml`` hostile values: before, each ended in a Python
traceback, ran with a silently wrong meaning, or overwrote data. Now each is refused with a message that names
the file, key or option, exits 2, and leaves what was already accepted as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_hostile_data import cli, days, make_project, write_csv

from mlma.backtest import BacktestConfig, run_backtest
from mlma.escalations import Escalation
from mlma.models import Drivers, SeasonalNaive
from mlma.project import ConfigError, check_model_spec, load_config
from mlma.store import Store


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlma.cli", *args], capture_output=True, text=True, timeout=300)


def said(result: subprocess.CompletedProcess) -> str:
    """What the command printed, on one line (rich wraps long messages)."""
    return " ".join((result.stdout + result.stderr).split())


def refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    text = said(result)
    assert result.returncode == 2, text
    assert "Traceback" not in text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def edit(root: Path, key: str, value: str) -> None:
    path = root / "mlma.toml"
    text, found = re.subn(rf"(?m)^{key} = .*$", lambda _: f"{key} = {value}", path.read_text())
    assert found == 1, key
    path.write_text(text)


@pytest.fixture(scope="module")
def fleet() -> pd.DataFrame:
    from mlma.simulate import simulate_platform

    return simulate_platform(4, 32, seed=5).data


@pytest.fixture()
def project(tmp_path, fleet) -> Path:
    """A project with 29 days ingested and its start-up step run."""
    root = make_project(tmp_path / "p")
    assert cli(root, "ingest", str(write_csv(days(fleet, 0, 29), tmp_path / "history.csv"))).returncode == 0
    assert cli(root, "tick").returncode == 0
    return root


@pytest.mark.parametrize("key, value, fragment", [
    ("executor", '"process:0"', "[agent] executor: process executor needs a whole number of workers from 1 to 1,024"),
    ("executor", '"process:100000"', "[agent] executor: process executor needs a whole number of workers from 1"),
    ("fit_timeout_seconds", "1e10", "[agent] fit_timeout_seconds must be at most 2,592,000 (30 days; 0: no limit)"),
    ("executor", '"dask://"', "[agent] executor: executor 'dask://' names no scheduler"),
    ("lock_ttl_seconds", "nan", "[agent] lock_ttl_seconds must be between 5 and 86,400 seconds, got nan"),
    ("lock_ttl_seconds", "1e300", "[agent] lock_ttl_seconds must be between 5 and 86,400 seconds"),
    ("fit_timeout_seconds", "nan", "[agent] fit_timeout_seconds must be a finite number >= 0, got nan"),
    # Accepted, it wrapped round in the policy's 32-bit counters: no cool-down at all, the opposite of asked.
    ("cooldown_ticks", "3000000000", "[monitor] parameter cooldown_ticks must be the cool-down in ticks, a whole "
                                     "number from 0 to 10000 (for the project's default), got 3000000000"),
    ("drivers", '["y"]', "[data] drivers: driver 'y' is the target column (target_col='y')"),
    # Accepted, and printed as "a b": no file can have such a column (check_column_names refuses it).
    ("drivers", '["a\\u0000b"]', "[data] drivers: future drivers must be column names without control characters"),
    ("historical_drivers", '["unique_id"]', "driver 'unique_id' is the id column (id_col='unique_id')"),
    # Accepted by tick and status; the ingest then said only that a renamed column 'y' would clash.
    ("target_col", '"ds"', "[data] time_col and target_col name the same column 'ds'; a stream's id, its "
                           "timestamps and its target are three columns"),
    ("id_col", '"y"', "[data] id_col and target_col name the same column 'y'"),
    ("time_col", '" "', "[data] time_col must name a column of the data files, got ' '"),
    # Accepted, and later written back as the tick a prune waits for ("before tick 9223372036854775807").
    ("train_window_ticks", "9223372036854775807", "[model] train_window_ticks must be a whole number of ticks from 0 "
                                                  "(the frequency's default) to 1,000,000, got 9223372036854775807"),
])
def test_a_bad_setting_is_refused_when_the_file_is_read_naming_the_key(tmp_path, key, value, fragment):
    root = make_project(tmp_path / "p")
    load_config(root)  # the template is valid
    edit(root, key, value)
    with pytest.raises(ConfigError) as caught:
        load_config(root)
    assert fragment in str(caught.value) and str(root / "mlma.toml") in str(caught.value)
    # What the user meets: the command says it and stops, before touching the store.
    refused(cli(root, "tick"), fragment)


def test_key_columns_naming_one_column_are_refused_by_status_of_a_project_that_ticked(project):
    """`mlma status` reads a project that has ticked without checking the settings' values (its quick path):
    `target_col = "ds"` passed there, when no tick was due, while every other command refused it."""
    assert cli(project, "tick").returncode == 0  # the one due: none is due now
    edit(project, "target_col", '"ds"')
    refused(cli(project, "status"), "[data] time_col and target_col name the same column 'ds'")


@pytest.mark.parametrize("key, value, fragment", [
    ("freq", '"D"', "mlma.toml sets [data] freq = 'D', but the project's clock is frequency h"),
    ("freq", '"xyz"', "mlma.toml [data] freq: freq='xyz' is not a pandas offset alias"),
    ("tick", '"12h"', "mlma.toml sets [data] tick = '12h', but the project's clock is frequency h, tick D"),
])
def test_a_clock_setting_that_is_not_the_projects_clock_is_refused_by_tick_as_by_ingest(project, fleet, tmp_path,
                                                                                       key, value, fragment):
    """`mlma ingest` refused [data] freq = "D" on an hourly project, but `mlma tick` and `mlma backtest
    --project` ran on the stored clock and said nothing: every command that runs ticks refuses it now."""
    edit(project, key, value)
    day = write_csv(days(fleet, 29, 30), tmp_path / "day.csv")
    refused(cli(project, "ingest", str(day)), fragment)
    refused(cli(project, "tick"), fragment, "mlma.toml")
    refused(cli(project, "backtest", "--project", str(project), "--policies", "never", "--out",
                str(tmp_path / "bt")), fragment)
    edit(project, key, '"h"' if key == "freq" else '"24h"')   # the project's own clock, spelt another way
    assert cli(project, "ingest", str(day)).returncode == 0
    assert cli(project, "tick").returncode == 0


def test_an_mlma_toml_that_is_a_folder_is_one_line_not_a_traceback(tmp_path):
    root = make_project(tmp_path / "p")
    (root / "mlma.toml").unlink()
    (root / "mlma.toml").mkdir()
    for command in (["status"], ["tick"], ["audit"]):
        refused(cli(root, *command), "mlma.toml: cannot be read (Is a directory; it is a folder, not a file)")


@pytest.mark.parametrize("spec", ["mlma:alpha=oops", "mlma:nosuchkey=1"])
def test_a_policy_spec_whose_settings_cannot_work_fails_the_tick_naming_it(project, fleet, tmp_path, spec):
    """The spec's settings are checked when the policy is built (at the tick: checking them when the file is
    read would load the statistics stack for every command): exit 2 naming the key, nothing of the tick kept."""
    assert cli(project, "ingest", str(write_csv(days(fleet, 29, 30), tmp_path / "day.csv"))).returncode == 0
    edit(project, "policy", f'"{spec}"')
    refused(cli(project, "tick"), f"mlma.toml: [agent] policy '{spec}'")
    with Store.open(load_config(project).store_url) as store:
        assert store.last_done_tick() == 27
    edit(project, "policy", '"mlma"')
    assert cli(project, "tick").returncode == 0


def test_a_project_file_that_is_not_utf8_is_a_config_error(tmp_path):
    root = make_project(tmp_path / "p")
    (root / "mlma.toml").write_bytes((root / "mlma.toml").read_bytes() + "# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(root)


def test_a_driver_that_is_the_target_is_refused_by_the_backtest(fleet):
    for drivers, fragment in [(Drivers(future=["y"]), "driver 'y' is the target column"),
                              (Drivers(future=["orders"]), "driver 'orders' is the target column")]:
        frame = fleet.rename(columns={"y": "orders"}) if "orders" in fragment else fleet
        options = {"target_col": "orders"} if "orders" in fragment else {}
        with pytest.raises(ValueError, match=fragment):
            run_backtest(frame, BacktestConfig(policies=["never"], model="seasonal-naive", frontier=False,
                                               drivers=drivers), **options)


def test_an_executor_option_that_cannot_work_is_refused_before_the_tick(project):
    for bad, fragment in [("bogus", "unknown executor 'bogus'"),
                          ("process:0", "whole number of workers from 1 to 1,024"),
                          ("dask://", "names no scheduler"),
                          ("dask://127.0.0.1:8786/extra", "the scheduler's address must be host or host:port")]:
        refused(cli(project, "tick", "--executor", bad), "--executor: ", fragment)
    with Store.open(load_config(project).store_url) as store:
        assert store.last_done_tick() == 27  # the start-up only: no tick ran, none failed
        assert store.ticks()["status"].eq("done").all()


def test_a_reason_without_allow_no_data_is_refused(project):
    refused(cli(project, "tick", "--reason", "storm"), "--by and --reason go with --allow-no-data")


def test_backup_never_overwrites_a_file_without_force_and_never_the_store_itself(project, tmp_path):
    other = make_project(tmp_path / "other")
    target = load_config(other).root / "mlma.db"
    before = sha(target)
    refused(cli(project, "backup", str(target)), "exists already; choose a new file, or pass --force")
    assert sha(target) == before  # the other project's store is untouched
    refused(cli(project, "backup", str(project / "mlma.db"), "--force"), "this store's own database")
    # Its working files too: a backup over mlma.db-wal was reported written, then SQLite removed the file.
    for companion in ("mlma.db-wal", "mlma.db-shm", "mlma.db-journal"):
        refused(cli(project, "backup", str(project / companion), "--force"), "this store's own database or one of")
    refused(cli(project, "backup", str(tmp_path)), "is a folder")
    (tmp_path / "a-file").write_text("x")
    refused(cli(project, "backup", str(tmp_path / "a-file" / "x.db"), "--force"),
            "a-file is a file, not a folder: the backup cannot be written under it")
    copy = tmp_path / "copy.db"
    assert cli(project, "backup", str(copy)).returncode == 0
    refused(cli(project, "backup", str(copy)), "exists already")
    assert cli(project, "backup", str(copy), "--force").returncode == 0
    with Store.open(f"sqlite:///{copy}") as store:
        assert store.last_done_tick() == 27
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_gc_refuses_an_artifacts_folder_another_projects_store_keeps_models_in(fleet, tmp_path):
    """Two projects given one artifacts folder (a copied mlma.toml): `mlma gc` in the first deleted the second's
    serving models, files no version of its own refers to, and the second's next tick failed. The folder is
    signed by each store that writes models there; gc refuses a folder another store signed."""
    roots = [make_project(tmp_path / name, artifacts='"../shared"') for name in ("pa", "pb")]
    for root, shift in zip(roots, (0.0, 5.0)):  # other data: other models
        data = days(fleet, 0, 29).assign(y=lambda f, s=shift: f["y"] + s)
        assert cli(root, "ingest", str(write_csv(data, tmp_path / f"{root.name}.csv"))).returncode == 0
        assert cli(root, "tick").returncode == 0
    shared = tmp_path / "shared"
    before = sorted(p.name for p in shared.glob("??/*"))
    refused(cli(roots[0], "gc", "--min-age", "0"), f"the artifacts folder {shared}",
            "also holds the models of 1 other store(s)", "give each project an artifacts folder of its own")
    assert sorted(p.name for p in shared.glob("??/*")) == before          # nothing deleted
    assert len({p.read_text() for p in (shared / ".mlma-stores").iterdir()}) == 2
    # A folder of its own: gc works as it did.
    alone = make_project(tmp_path / "pc")
    assert cli(alone, "ingest", str(tmp_path / "pa.csv")).returncode == 0 and cli(alone, "tick").returncode == 0
    cleaned = cli(alone, "gc", "--min-age", "0")
    assert cleaned.returncode == 0 and "removed 0 unreferenced artifact(s)" in cleaned.stdout, said(cleaned)


def test_init_refuses_what_cannot_work_and_leaves_nothing_behind(tmp_path):
    (tmp_path / "a-file").write_text("x")
    refused(run("init", str(tmp_path / "a-file")), "a-file is a file; give a folder")
    refused(run("init", str(tmp_path / "m"), "--model", "nosuch"), "model 'nosuch': unknown model spec")
    refused(run("init", str(tmp_path / "d"), "--db", "sqlite:////proc/no/x.db"),
            "cannot create the project's store")
    assert not (tmp_path / "m").exists() and not (tmp_path / "d").exists()
    # Nothing half-made blocks the retry.
    assert run("init", str(tmp_path / "d"), "--model", "seasonal-naive").returncode == 0
    load_config(tmp_path / "d")
    # Neither in a folder that was there (left as it was) nor under parents it made (removed with it).
    (tmp_path / "there").mkdir()
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/nodb"
    refused(run("init", str(tmp_path / "there"), "--db", unreachable), "cannot create the project's store")
    assert list((tmp_path / "there").iterdir()) == []
    refused(run("init", str(tmp_path / "new" / "deep" / "p"), "--db", unreachable), "cannot create")
    assert not (tmp_path / "new").exists()
    # A spec that needs an extra or a path the ticks' environment may have is left to the first tick, said.
    nixtla = run("init", str(tmp_path / "nixtla"), "--model", "mlforecast")
    assert nixtla.returncode == 0 and ("could not be checked in this environment" in said(nixtla)
                                       or importlib.util.find_spec("mlforecast") is not None), said(nixtla)


@pytest.mark.parametrize("spec, fragment", [
    ("ridge:alpha=abc", "model 'ridge:alpha=abc': alpha must be a non-negative number, got 'abc'"),
    ("ridge:alpah=3", "unexpected keyword argument 'alpah'"),
    ("lightgbm:lags=x", "lags must be a list, e.g. lags=[24, 168], got 'x'"),
    ("ridge:lags=7", "lags must be a list, e.g. lags=[24, 168], got 7"),
    ("ridge:calendar=day_of_week", "calendar must be a list, e.g. calendar=[day_of_week], got 'day_of_week'"),
    ("ridge:lags=[7, x]", "lags must be whole numbers of steps, got (7, 'x')"),
    ("sklearn:sklearn.cluster.KMeans", "KMeans is a scikit-learn clusterer, not a regressor"),  # ran: forecast
    ("sklearn.linear_model:LogisticRegression", "is a scikit-learn classifier, not a regressor"),  # labels
    ("seasonal-naive:season", "model 'seasonal-naive:season': option 'season' is not name=value"),
    ("sklearn:linear_model.Ridgee", "module 'sklearn.linear_model' has no attribute 'Ridgee'"),
    ("sklearn:linear_model.Ridge:alpha=2", "e.g. 'sklearn.linear_model:Ridge:alpha=2'"),
    ("mlma.models.linear:RidgeForecaster:alpha=-1", "alpha must be a non-negative number, got -1"),
    ("statsforecast:AutoETS:ZZA", "name one statsforecast model"),
])
def test_init_refuses_a_model_spec_the_agent_cannot_build_and_writes_nothing(tmp_path, spec, fragment):
    """Such a spec made a project whose every tick then failed; the agent's own factory now builds it first."""
    refused(run("init", str(tmp_path / "p"), "--model", spec), fragment)
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("spec", ["ridge:lags=[7, 14]", "ridge:windows=[7]:calendar=[day_of_week]",
                                  "lightgbm:lags=[7,14]:calendar=['day_of_week', \"month\"]"])
def test_the_lists_of_a_built_in_models_spec_are_taken_as_docs_models_writes_them(spec):
    """docs/models.md writes `lags=[24, 168]`, `windows=[24]`, `calendar=["day_of_week"]`; in a spec each
    character was taken for an item ("lags must be whole numbers of steps, got ('[', '1', ...")."""
    from mlma.models import ForecastContext
    from mlma.models.factory import make_forecaster

    assert check_model_spec(spec) is None
    features = make_forecaster(spec, ForecastContext("D", 7, 7)).spec
    options = dict(option.split("=") for option in spec.split(":")[1:])
    assert features.lags == ((7, 14) if "lags" in options else features.lags)
    assert features.windows == ((7,) if "windows" in options else features.windows)
    wanted = {"[day_of_week]": ("day_of_week",), "['day_of_week', \"month\"]": ("day_of_week", "month")}
    assert features.calendar == wanted.get(options.get("calendar"), features.calendar)


class DailyOnly(SeasonalNaive):
    """A user's model that only daily data suits: its error depends on the clock, unknown at init."""

    def __init__(self, ctx):
        if ctx.freq != "D":
            raise ValueError("DailyOnly needs daily data")
        super().__init__(ctx)


def test_a_spec_that_only_some_clocks_refuse_is_left_to_the_first_tick():
    assert check_model_spec("test_hostile_cli:DailyOnly") is None
    with pytest.raises(ConfigError, match="model 'test_hostile_cli:DailyOnly:x=1'"):
        check_model_spec("test_hostile_cli:DailyOnly:x=1")  # no clock takes an unknown option


class OneClockOnly(SeasonalNaive):
    """A user's model for one frequency (weekly retail, monthly, quarterly or yearly figures, minutes of a
    sensor) and, optionally, ticks of at least some steps: its error depends on the clock, unknown at init."""

    def __init__(self, ctx, freq: str, horizon: int = 1):
        if ctx.freq != freq or ctx.horizon < horizon:
            raise ValueError(f"OneClockOnly needs {freq!r} data forecast {horizon} steps ahead")
        super().__init__(ctx)


@pytest.mark.parametrize("options", ["freq=min", "freq=5min", "freq=15min", "freq=30min", "freq=h:horizon=24",
                                     "freq=D:horizon=7", "freq=W-SUN", "freq=W-SUN:horizon=4", "freq=MS",
                                     "freq=ME:horizon=12", "freq=QS", "freq=QE:horizon=4", "freq=YS", "freq=YE"])
def test_a_spec_that_builds_on_any_clock_a_project_can_have_is_taken(options):
    """Only hourly and daily data were tried, so a model for weekly (or monthly...) data was refused at init."""
    assert check_model_spec(f"test_hostile_cli:OneClockOnly:{options}") is None


def test_a_spec_no_clock_builds_is_still_refused():
    with pytest.raises(ConfigError, match="OneClockOnly needs 'fortnightly' data"):
        check_model_spec("test_hostile_cli:OneClockOnly:freq=fortnightly")  # no project has that clock
    with pytest.raises(ConfigError, match="unexpected keyword argument 'x'"):
        check_model_spec("test_hostile_cli:OneClockOnly:freq=W-SUN:x=1")  # nor takes an unknown option


class NeedsWeights(SeasonalNaive):
    """A user's model that reads its weights when built, from a file on the agent's machine."""

    def __init__(self, ctx, weights: str = "/srv/no-such-folder/weights.npy"):
        with open(weights, "rb"):
            pass
        super().__init__(ctx)


def test_a_file_the_constructor_cannot_read_here_is_said_not_refused(tmp_path):
    """An OSError of the constructor was refused, though a pickle: file missing here was taken with a note."""
    said_here = check_model_spec("test_hostile_cli:NeedsWeights")
    assert "FileNotFoundError" in said_here and "/srv/no-such-folder/weights.npy" in said_here, said_here
    weights = tmp_path / "weights.npy"
    weights.write_bytes(b"")
    assert check_model_spec(f"test_hostile_cli:NeedsWeights:weights={weights}") is None


def with_modules(folder: Path, modules: dict[str, str]) -> dict[str, str]:
    """Write a user's modules to ``folder``; the environment of a command that imports them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in modules.items():
        (folder / f"{name}.py").write_text(text)
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}


@pytest.mark.parametrize("text, raised", [
    ("import numpy\nCONSTANT = undefined_name * 2\n", "raised NameError: name 'undefined_name' is not defined"),
    ("x = (\n", "raised SyntaxError: '(' was never closed"),
    ("import os\nCONFIG = os.environ['MLMA_TEST_MODEL_CONFIG']\n", "raised KeyError: 'MLMA_TEST_MODEL_CONFIG'"),
    ("raise RuntimeError('the model server is not reachable')\n", "raised RuntimeError: the model server is not"),
    ("import sys\nsys.exit(3)\n", "raised SystemExit: 3"),
])
def test_a_module_that_raises_at_import_is_said_not_a_traceback(tmp_path, monkeypatch, text, raised):
    """Only ImportError was caught: any other error of the user's module at import crashed `mlma init`."""
    name = f"mlma_test_user_module_{tmp_path.name.replace('-', '_')}"
    with_modules(tmp_path / "mods", {name: text})
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    said_here = check_model_spec(f"{name}:Model")
    assert f"importing {name!r} for '{name}:Model' {raised}" in said_here, said_here


def test_init_takes_a_module_that_raises_at_import_and_the_first_tick_names_it(tmp_path, fleet):
    """The ticks' environment may import what this one cannot (a config file or a variable it reads): init says
    why it could not check the spec, and the first tick, where it fails too, says the same, without a traceback."""
    env = with_modules(tmp_path / "mods", {"brokenmod": "import numpy\nCONSTANT = undefined_name * 2\n",
                                           "weightsmod": "from test_hostile_cli import NeedsWeights as Model\n"})
    env["PYTHONPATH"] += os.pathsep + str(Path(__file__).parent)
    for spec, reason in [("brokenmod:Model", "importing 'brokenmod' for 'brokenmod:Model' raised NameError: name "
                                             "'undefined_name' is not defined"),
                         ("weightsmod:Model", "its constructor raised FileNotFoundError: [Errno 2] No such file or "
                                              "directory: '/srv/no-such-folder/weights.npy'")]:
        root = tmp_path / spec.partition(":")[0]
        done = subprocess.run([sys.executable, "-m", "mlma.cli", "init", str(root), "--model", spec],
                              capture_output=True, text=True, timeout=300, env={**os.environ, **env})
        assert done.returncode == 0 and "Traceback" not in said(done), said(done)
        assert f"could not be checked in this environment (model spec {spec!r}: {reason}" in said(done), said(done)
        assert load_config(root).model.spec == spec
    root = make_project(tmp_path / "ticks")
    edit(root, "spec", '"brokenmod:Model"')
    assert cli(root, "ingest", str(write_csv(days(fleet, 0, 29), tmp_path / "h.csv")), env=env).returncode == 0
    refused(cli(root, "tick", env=env), "[model] model spec 'brokenmod:Model': importing 'brokenmod' for "
            "'brokenmod:Model' raised NameError: name 'undefined_name' is not defined")


def test_a_file_with_other_column_names_is_told_where_a_project_names_them(project, fleet, tmp_path):
    renamed = days(fleet, 29, 30).rename(columns={"unique_id": "store_id", "ds": "date", "y": "sales"})
    refused(cli(project, "ingest", str(write_csv(renamed.rename(columns={"date": "ds"}), tmp_path / "r.csv"))),
            "missing column", "'unique_id'", "[data] section of mlma.toml")
    edit(project, "id_col", '"store_id"')
    edit(project, "time_col", '"date"')
    edit(project, "target_col", '"sales"')
    frame = renamed.copy()
    frame["date"] = frame["date"].dt.strftime("%Y-%m-%d %H:%M:%S")
    frame.to_csv(tmp_path / "renamed.csv", index=False)
    done = cli(project, "ingest", str(tmp_path / "renamed.csv"))
    assert done.returncode == 0 and "96 new" in said(done), said(done)


def test_monthly_data_is_told_its_tick_when_the_clock_is_fixed(tmp_path):
    """Monthly data ticks every 12 months by default: said when the first ingest fixes the clock, the moment
    another tick length can still be chosen (a project fed a month per file was surprised a year later)."""
    root = make_project(tmp_path / "monthly")
    months = pd.date_range("2015-01-01", periods=36, freq="MS")
    frame = pd.DataFrame({"unique_id": ["a"] * 36 + ["b"] * 36, "ds": list(months.strftime("%Y-%m-%d")) * 2,
                          "y": 1.0})
    done = cli(root, "ingest", str(write_csv(frame, tmp_path / "months.csv")))
    assert done.returncode == 0 and "clock: frequency MS, tick 12MS" in said(done), said(done)
    assert "note: each tick holds 12 step(s) of MS data" in said(done) and "set [data] tick" in said(done)


def test_a_lock_of_a_dead_agent_is_broken_with_mlma_unlock_audited(project, fleet, tmp_path):
    with Store.open(load_config(project).store_url) as store:
        store.acquire_lock("agent@dead-host:4242", ttl=3600)
    assert cli(project, "ingest", str(write_csv(days(fleet, 29, 30), tmp_path / "day.csv"))).returncode == 0
    held = cli(project, "tick")
    assert held.returncode == 4 and "`mlma unlock --reason ...`" in said(held), said(held)
    assert cli(project, "unlock").returncode == 2                          # a reason is required
    # Renewed a moment ago: its holder looks alive, and breaking the lock would lose its tick.
    refused(cli(project, "unlock", "--reason", "the host died", "--by", "ana"),
            "the tick lock's holder agent@dead-host:4242 renewed it", "looks alive", "--force")
    done = cli(project, "unlock", "--reason", "the host died", "--by", "ana", "--force")
    assert done.returncode == 0 and "broke the tick lock of agent@dead-host:4242" in said(done), said(done)
    with Store.open(load_config(project).store_url) as store:
        entry = store.audit_log(action="break-lock").iloc[-1]
        assert (entry["actor"], entry["reason"], entry["params"]["holder"]) == (
            "user:ana", "the host died", "agent@dead-host:4242")
    assert cli(project, "tick").returncode == 0
    again = cli(project, "unlock", "--reason", "sure?", "--by", "ana")
    assert again.returncode == 0 and "was not held" in said(again)
    # Not renewed for 50 of its 60 minutes: its holder is gone, no --force needed.
    import datetime as dt

    import sqlalchemy as sa

    from mlma.store import schema as S

    with Store.open(load_config(project).store_url) as store:
        store.acquire_lock("agent@gone:1", ttl=3600)
        renewed = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=50)   # as its last renewal wrote it
        with store.engine.begin() as conn:
            conn.execute(sa.update(S.locks).values(heartbeat_at=renewed,
                                                   expires_at=renewed + dt.timedelta(minutes=60)))
    stale = cli(project, "unlock", "--reason", "its host is gone", "--by", "ana")
    assert stale.returncode == 0 and "broke the tick lock of agent@gone:1" in said(stale), said(stale)
    # Renewed a moment ago by an agent process on this host that no longer runs (killed): gone, no --force
    # needed (it was refused as "looks alive", as `mlma status` said its process no longer ran).
    from mlma.store.testing import gone_agent

    killed = gone_agent()
    with Store.open(load_config(project).store_url) as store:
        store.acquire_lock(killed, ttl=3600)
    done = cli(project, "unlock", "--reason", "the agent was killed", "--by", "ana")
    assert done.returncode == 0 and f"broke the tick lock of {killed}" in said(done), said(done)


def test_init_on_a_store_that_holds_a_project_is_refused_unless_attached(project, tmp_path):
    """`mlma init q --db <p's store>` would share and change p's fleet, and q's failed ticks would reach p's
    queue: refused, naming what the store holds; `--attach` is the way to a second front of the same project."""
    url = load_config(project).store_url
    with Store.open(url) as store:
        before = (len(store.streams()), len(store.ticks()), len(store.audit_log()))
    refused(run("init", str(tmp_path / "q"), "--db", url, "--model", "seasonal-naive"),
            f"the store {url} already holds a project (4 streams, 1 tick)", "--attach")
    assert not (tmp_path / "q").exists()
    with Store.open(url) as store:
        assert (len(store.streams()), len(store.ticks()), len(store.audit_log())) == before
    # A store of an older mlma is refused as it is: not migrated under the other project's agent first.
    import sqlite3

    from mlma.store import migrate

    older = [r for r in migrate.known_revisions() if r != migrate.SCHEMA_REVISION][-1]
    database = url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (older,))
    refused(run("init", str(tmp_path / "q"), "--db", url, "--model", "seasonal-naive"),
            f"already holds a project (an mlma schema at revision {older}, of another mlma version)")
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (older,)
        conn.execute("UPDATE alembic_version SET version_num = ?", (migrate.SCHEMA_REVISION,))
    attached = run("init", str(tmp_path / "q"), "--db", url, "--model", "seasonal-naive", "--attach")
    assert attached.returncode == 0 and load_config(tmp_path / "q").store_url == url, said(attached)


def test_validate_and_ingest_name_the_file_they_cannot_read(project, fleet, tmp_path):
    text = tmp_path / "text.parquet"
    text.write_text("this is not parquet\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    for path in (text, empty):
        refused(run("validate", str(path)), str(path))
    refused(run("validate", str(tmp_path)), "is a folder; give a CSV or Parquet file")
    with Store.open(load_config(project).store_url) as store:
        rows = len(store.observations())
    refused(cli(project, "ingest", str(tmp_path)), "is a folder; `mlma ingest` takes one CSV or Parquet file")
    good = write_csv(days(fleet, 29, 30), tmp_path / "day.csv")
    refused(cli(project, "ingest", str(good), "--rejects", str(tmp_path)), "--rejects", "is a folder")
    with Store.open(load_config(project).store_url) as store:
        assert len(store.observations()) == rows


def test_a_file_whose_name_is_not_utf8_is_ingested_under_the_bytes_it_names(project, fleet, tmp_path):
    """A file named on a Latin-1 system (byte 0xE9 for é) reaches Python as a lone surrogate, which no store can
    encode: `mlma ingest` refused the file with "'utf-8' codec can't encode character '\\udce9'". Its rows are
    stored now, and the ingest's source is the name with the byte written out."""
    latin1 = tmp_path / os.fsdecode(b"donn\xe9es.csv")
    write_csv(days(fleet, 29, 30), latin1)
    future = tmp_path / os.fsdecode(b"m\xe9t\xe9o.csv")
    last = pd.Timestamp(days(fleet, 29, 30)["ds"].max())
    pd.DataFrame({"unique_id": "c00-z00", "ds": [last + pd.Timedelta(hours=1)], "temp": [3.5]}).to_csv(future,
                                                                                                   index=False)
    with Store.open(load_config(project).store_url) as store:
        rows = len(store.observations())

    def cli_bytes(*args: str) -> subprocess.CompletedProcess:  # the CLI echoes the file's name as its bytes, as ls
        return subprocess.run([sys.executable, "-m", "mlma.cli", *args, "--project", str(project)],
                              capture_output=True, encoding="utf-8", errors="surrogateescape", timeout=300)

    done = cli_bytes("ingest", str(latin1))
    assert done.returncode == 0 and "96 new" in said(done), said(done)
    done = cli_bytes("ingest", "--future", str(future))
    assert done.returncode == 0 and "1 future driver values for 1 streams" in said(done), said(done)
    with Store.open(load_config(project).store_url) as store:
        assert len(store.observations()) == rows + 96
        assert store.ingests()["source"].tolist()[-2:] == ["donn\\xe9es.csv", "m\\xe9t\\xe9o.csv"]


def test_a_project_folder_whose_path_is_not_utf8_is_refused_naming_the_byte(tmp_path):
    """SQLite opens UTF-8 paths only: `mlma init` in a folder named in Latin-1 said "cannot create the project's
    store: UnicodeEncodeError", and a project moved into such a folder failed every command the same way."""
    folder = tmp_path / os.fsdecode(b"proj\xe9")
    done = subprocess.run([sys.executable, "-m", "mlma.cli", "init", str(folder), "--model", "ridge"],
                          capture_output=True, encoding="utf-8", errors="surrogateescape", timeout=300)
    refused(done, "proj\\xe9/mlma.db is in a folder whose path holds bytes that are not UTF-8", "rename the folder")
    assert not folder.exists()  # nothing half-made stays
    moved = make_project(tmp_path / "p")
    moved.rename(folder)
    done = subprocess.run([sys.executable, "-m", "mlma.cli", "status", "--project", str(folder)],
                          capture_output=True, encoding="utf-8", errors="surrogateescape", timeout=300)
    refused(done, "proj\\xe9/mlma.db is in a folder whose path holds bytes that are not UTF-8")


def test_a_compressed_file_cut_short_or_damaged_is_named_not_aborted(project, fleet, tmp_path):
    """A .csv.gz cut short by a copy that stopped part way raised EOFError, which the CLI printed as a bare
    "Aborted." (ingest, ingest --future, attributes, validate); a damaged gzip header was a traceback."""
    import bz2
    import gzip
    import io
    import lzma
    import zipfile

    import zstandard

    text = days(fleet, 29, 30).assign(ds=lambda f: f["ds"].dt.strftime("%Y-%m-%d %H:%M:%S")).to_csv(index=False)
    attributes = "unique_id,city\n" + "".join(f"z{i},Berlin\n" for i in range(20_000))
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("cut.csv", text)
    # A .zst cut short was worse: pandas read the rows before the cut and the ingest stored them, exit 0.
    zst = zstandard.ZstdCompressor().compress(text.encode())
    files = {"cut.csv.gz": gzip.compress(text.encode())[:200], "cut.csv.bz2": bz2.compress(text.encode())[:300],
             "cut.csv.xz": lzma.compress(text.encode())[:300], "header.csv.gz": b"\x1f\x8bNOTGZIP" * 10,
             "cut.csv.zst": zst[:len(zst) * 9 // 10], "header.csv.zst": b"not zstd at all" * 10,
             "cut.csv.zip": zipped.getvalue()[:400], "attributes.csv.gz": gzip.compress(attributes.encode())[:3000]}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with Store.open(load_config(project).store_url) as store:
        rows = len(store.observations())
    kind = {"gz": "gzip", "bz2": "bz2", "xz": "xz", "zst": "zstd", "zip": "zip"}
    for name in files:
        path = str(tmp_path / name)
        said_damaged = f"{path}: the {kind[name.rsplit('.', 1)[1]]}-compressed file is damaged or incomplete"
        if name == "attributes.csv.gz":  # its header line reads; the rest does not
            refused(cli(project, "attributes", path), said_damaged, "EOFError")
            continue
        for args in (("ingest", path), ("ingest", "--future", path), ("attributes", path)):
            refused(cli(project, *args), said_damaged)
        refused(run("validate", path), said_damaged)
    with Store.open(load_config(project).store_url) as store:
        assert len(store.observations()) == rows and not store.streams()["attributes"].map(bool).any()


def test_a_column_without_a_name_is_refused_if_it_holds_values_and_ignored_if_empty(project, fleet, tmp_path):
    """A header `unique_id,ds,y,` over rows with a fourth value stored 72 driver values named "Unnamed: 3" (and the
    note named a blank column); `mlma attributes` stored an attribute "Unnamed: 1". A column with values but no
    name refuses the file now, naming its position and line; a comma at the end of every line is no column."""
    day = days(fleet, 29, 30).assign(ds=lambda f: f["ds"].dt.strftime("%Y-%m-%d %H:%M:%S"))
    lines = ["unique_id,ds,y,"] + [f"{r.unique_id},{r.ds},{r.y}," for r in day.itertuples()]
    valued = lines[:5] + [lines[5] + "3.5"] + lines[6:]
    (tmp_path / "valued.csv").write_text("\n".join(valued) + "\n")
    (tmp_path / "trailing.csv").write_text("\n".join(line + " " * (i % 2) for i, line in enumerate(lines)) + "\n")
    with Store.open(load_config(project).store_url) as store:
        rows = len(store.observations())
    refused(cli(project, "ingest", str(tmp_path / "valued.csv")),
            "column 4 of the header has no name but holds values (line 6: '3.5'); name it in the header")
    refused(run("validate", str(tmp_path / "valued.csv")), "column 4 of the header has no name but holds values")
    done = cli(project, "ingest", str(tmp_path / "trailing.csv"))
    assert done.returncode == 0 and "96 new" in said(done) and "Unnamed" not in said(done), said(done)
    assert "stored as observed driver values" not in said(done), said(done)
    (tmp_path / "attributes.csv").write_text(f"unique_id,\n{day['unique_id'].iloc[0]},Berlin\n")
    refused(cli(project, "attributes", str(tmp_path / "attributes.csv")),
            "column 2 of the header has no name but holds values (line 2: 'Berlin')")
    with Store.open(load_config(project).store_url) as store:
        assert len(store.observations()) == rows + 96
        stored = store.driver_values(["Unnamed: 3"])
        assert stored.empty, stored  # before, the valued file's 96 values were stored under that name
        assert not store.streams()["attributes"].map(bool).any()


def test_integer_attributes_of_a_parquet_file_with_a_missing_cell_stay_integers(project, tmp_path):
    """pandas reads an int64 Parquet column with a null as floats: attributes were stored as "7.0" (while a
    CSV's are "7"), so `--group region=7` chose nothing, and a large id lost its last digits. A `.pq` file (a
    Parquet suffix mlma reads data with) was read as CSV: "'utf-8' codec can't decode byte"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with Store.open(load_config(project).store_url) as store:
        ids = sorted(store.streams()["unique_id"])[:3]
    path = tmp_path / "attributes.pq"
    pq.write_table(pa.table({"unique_id": ids, "region": pa.array([7, None, 12], pa.int64()),
                             "account": pa.array([2**62 + 1, 5, None], pa.int64()),
                             "share": pa.array([0.5, None, 1.0], pa.float64())}), path)
    done = cli(project, "attributes", str(path))
    assert done.returncode == 0, said(done)
    with Store.open(load_config(project).store_url) as store:
        stored = dict(zip(store.streams()["unique_id"], store.streams()["attributes"]))
    assert stored[ids[0]] == {"region": "7", "account": str(2**62 + 1), "share": "0.5"}, stored
    assert stored[ids[1]] == {"account": "5"} and stored[ids[2]] == {"region": "12", "share": "1.0"}, stored
    chosen = cli(project, "pin", "--group", "region=7", "--reason", "test", "--by", "ana")
    assert chosen.returncode == 0 and "1 stream" in said(chosen), said(chosen)


def test_a_changed_tick_in_the_file_is_refused_at_the_next_ingest(project, fleet, tmp_path):
    edit(project, "tick", '"7D"')
    day = write_csv(days(fleet, 29, 30), tmp_path / "day.csv")
    refused(cli(project, "ingest", str(day)), "mlma.toml sets [data] tick = '7D'", "nothing was written")
    edit(project, "tick", '"bogus"')
    refused(cli(project, "ingest", str(day)), "mlma.toml [data] tick:", "nothing was written")
    edit(project, "tick", '"24h"')  # the same length as the clock's "D": fine
    assert cli(project, "ingest", str(day)).returncode == 0


def test_forecast_out_is_written_as_simulate_and_dataset_write_theirs(project, tmp_path):
    """`--out F.CSV` was refused and a new folder was "non-existent" while simulate and dataset take both; a
    folder that is a file was said to be non-existent."""
    made = cli(project, "forecast", "--out", str(tmp_path / "new" / "folder" / "F.CSV"))
    assert made.returncode == 0, said(made)
    assert pd.read_csv(tmp_path / "new" / "folder" / "F.CSV").columns.tolist() == ["unique_id", "ds", "y_hat",
                                                                                   "model_version"]
    (tmp_path / "afile").write_text("x")
    refused(cli(project, "forecast", "--out", str(tmp_path / "afile" / "f.csv")),
            f"cannot write --out {tmp_path / 'afile' / 'f.csv'}: {tmp_path / 'afile'} is a file, not a folder")
    refused(cli(project, "forecast", "--out", str(tmp_path / "f.txt")), "--out must end in .csv or .parquet")


def test_acknowledging_several_escalations_with_one_wrong_id_changes_none(project):
    with Store.open(load_config(project).store_url) as store:
        store.add_escalations([Escalation(0, 27, "silent", 2, "no data")], tick=27)
        ids = store.escalations()["id"].tolist()
        audited = len(store.audit_log())
    refused(cli(project, "ack", str(ids[0]), "999"), "no escalation with id(s) [999]; nothing changed")
    with Store.open(load_config(project).store_url) as store:
        assert store.escalations()["status"].tolist() == ["open"]
        assert len(store.audit_log()) == audited
    assert cli(project, "ack", str(ids[0])).returncode == 0


def test_blank_attribute_cells_are_said_to_remove_the_attribute(project, fleet, tmp_path):
    table = tmp_path / "zones.csv"
    ids = sorted(fleet["unique_id"].unique())
    pd.DataFrame({"unique_id": ids, "city": ["c1"] * len(ids)}).to_csv(table, index=False)
    assert cli(project, "attributes", str(table)).returncode == 0
    pd.DataFrame({"unique_id": ids, "city": [None] + ["c2"] * (len(ids) - 1)}).to_csv(table, index=False)
    done = cli(project, "attributes", str(table))
    assert done.returncode == 0 and "removed (blank cells): city on 1 stream(s)" in said(done)


def test_an_attribute_name_holding_an_equals_sign_is_refused_and_nothing_changes(project, fleet, tmp_path):
    """A column "reg=ion" was stored as an attribute that no group could choose (groups are written key=value:
    the page split it at the first "=" and the API found no stream): refused naming the column."""
    table = tmp_path / "zones.csv"
    ids = sorted(fleet["unique_id"].unique())
    pd.DataFrame({"unique_id": ids, "city": ["c1"] * len(ids), "reg=ion": ["north"] * len(ids)}).to_csv(
        table, index=False)
    refused(cli(project, "attributes", str(table)), "column 'reg=ion' cannot name an attribute: it holds '='")
    with Store.open(load_config(project).store_url) as store:
        assert not store.streams()["attributes"].map(bool).any()
        with pytest.raises(ValueError, match="'a=b' cannot name an attribute"):
            store.set_attributes({ids[0]: {"city": "c9", "a=b": "x"}})
        assert not store.streams()["attributes"].map(bool).any()
        # One an older mlma stored can be removed, from Python and by a file whose cells are all blank.
        store._merge_json("attributes", {0: {"reg=ion": "north", "city": "c1"}, 1: {"reg=ion": "south"}})
        store.set_attributes({store.unique_ids([0])[0]: {"reg=ion": None}})
        assert "reg=ion" not in store.streams()["attributes"].iloc[0]
    pd.DataFrame({"unique_id": ids, "reg=ion": [None] * len(ids)}).to_csv(table, index=False)
    assert cli(project, "attributes", str(table)).returncode == 0
    with Store.open(load_config(project).store_url) as store:
        assert not any("reg=ion" in a for a in store.streams()["attributes"])


def test_a_port_out_of_range_is_refused_by_the_option(project):
    result = cli(project, "serve", "--port", "99999")
    assert result.returncode == 2 and "less than or equal to 65535" in said(result)


def test_serve_says_in_a_line_where_it_cannot_listen_before_announcing_the_dashboard(project):
    """`--host ""` (`--host "$MLMA_HOST"` unset) listened on every interface; a port in use, or an address the
    machine has not, printed "mlma dashboard on http://..." and then uvicorn's error, exit 3 ("no tick due")."""
    import socket

    refused(cli(project, "serve", "--host", "", "--port", "18097"),
            "--host must name the address to listen on (127.0.0.1; 0.0.0.0 for every interface), got ''")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(project, "serve", "--port", str(port))
        refused(result, f"cannot listen on 127.0.0.1:{port}: another program (or another mlma serve) listens there")
        assert "mlma dashboard on" not in said(result)
    refused(cli(project, "serve", "--host", "10.255.255.254", "--port", "18097"),
            "cannot listen on 10.255.255.254:18097: this machine has no such address; check --host")



def test_text_with_square_brackets_is_printed_as_it_is_not_taken_for_styles(project):
    """A reason like "[red]holiday[/red] and [store] note", the audit suffix "[audit #N]" and an error naming
    "[store] artifacts" are what people and the store wrote; the terminal's styling must not eat them."""
    reason = "[red]holiday[/red] and [store] note"
    pinned = cli(project, "pin", "c00-z00", "--reason", reason, "--by", "ana")
    assert pinned.returncode == 0 and re.search(r"\[audit #\d+\]", pinned.stdout), pinned.stdout
    audit = cli(project, "audit")
    assert reason in said(audit), said(audit)
    refused(cli(project, "pin", "[bold]zone[/bold]"), "unknown stream '[bold]zone[/bold]'")


def test_escape_sequences_are_refused_in_names_and_reasons_and_shown_not_played_from_the_store(project):
    """`mlma unlock --reason $'l1\\x1b[31mRED' --by $'\\x1b[2J'` was stored, and `mlma audit` wrote the escape
    sequences to the reader's terminal (a cleared screen); a reason of 3,000 characters to unlock was a traceback.
    Both are refused, in a line; text the agent stored (a model's error message) is shown with them as \\uXXXX."""
    refused(cli(project, "unlock", "--reason", "l1\nl2\x1b[31mRED", "--by", "ana"),
            "--reason must not hold a control character ('\\x1b'): tabs and line breaks are the only")
    refused(cli(project, "unlock", "--reason", "host died", "--by", "\x1b[2J"),
            "--by must not hold a control character ('\\x1b')")
    refused(cli(project, "pin", "c00-z00", "--by", "ana\x07"), "--by must not hold a control character ('\\x07')")
    # Bytes that are not UTF-8 (a terminal in Latin-1) reach Python as lone surrogates, which no store can encode:
    # they were a UnicodeEncodeError traceback at the audit write.
    refused(cli(project, "unlock", "--reason", "host d\udce9d", "--by", "ana"),
            "--reason must not hold a byte that is not UTF-8 (\\xe9); write it in UTF-8")
    refused(cli(project, "pin", "c00-z00", "--by", "ren\udce9"), "--by must not hold a byte that is not UTF-8")
    refused(cli(project, "unlock", "--reason", "x" * 3000, "--by", "ana"), "--reason must be at most 2,000 characters")
    assert cli(project, "unlock", "--reason", "host died\non the night shift", "--by", "ana").returncode == 0
    with Store.open(load_config(project).store_url) as store:
        store.add_audit("agent", "fit-failed", "stream:c00-z00", {}, "\x1b[31mValueError\x1b[0m: bad\u202efit")
    shown = cli(project, "audit")
    assert "\x1b" not in shown.stdout and "\u202e" not in shown.stdout, repr(shown.stdout)
    assert "\\u001B[31mValueError\\u001B[0m: bad\\u202Efit" in said(shown), said(shown)
    assert "host died\\u000Aon the night shift" in said(shown)


def test_silence_names_what_is_wrong_with_its_duration(project):
    with Store.open(load_config(project).store_url) as store:
        store.add_escalations([Escalation(0, 27, "silent", 2, "no data")], tick=27)
        first = str(store.escalations()["id"].iloc[0])
    refused(cli(project, "silence", first, "--for", "-4h"), "a silence must last a positive time, got '-4h'")
    refused(cli(project, "silence", first, "--for", "1000000d"), "a silence of '1000000d' is too long")
    refused(cli(project, "silence", first, "--for", "4 parsecs"), "'4 parsecs' is not a duration such as 4h")
    refused(cli(project, "silence", first, "--for", "10 years"), "'10 years': months and years have no fixed length")
    refused(cli(project, "silence", first, "--for", "4h", "--until", "2030-01-01"), "not both")
    refused(cli(project, "silence", first, "--for", "tomorrow"),
            "until must be a duration such as 4h, 2d or 1h30min or an ISO 8601 date-time such as 2026-12-24T00:00, "
            "got 'tomorrow'")
    with Store.open(load_config(project).store_url) as store:
        assert store.escalations()["status"].tolist() == ["open"]


def test_a_key_before_any_section_is_said_to_be_outside_one(tmp_path):
    root = make_project(tmp_path / "p")
    (root / "mlma.toml").write_text("alpha = 0.1\n" + (root / "mlma.toml").read_text())
    with pytest.raises(ConfigError, match=r"key 'alpha' is outside any section; it belongs under \[monitor\]"):
        load_config(root)


def test_simulate_and_backtest_name_the_option_that_is_wrong(tmp_path):
    refused(run("simulate", "--days", "100000", "--zones", "2", "--out", str(tmp_path / "x.parquet")),
            "days must be at most 3,660")
    # Ignored, and the data had no campaign column at all.
    refused(run("simulate", "--days", "2", "--zones", "2", "--campaign-driver", "flag", "--out",
                str(tmp_path / "y.parquet")), "--campaign-driver flag needs --drivers")
    # 100,000,000 zones ended in a MemoryError traceback after minutes.
    refused(run("simulate", "--days", "10", "--zones", "100000000", "--out", str(tmp_path / "x.parquet")),
            "n_zones x days x 24 hourly rows must be at most 250,000,000")
    data = tmp_path / "fleet.parquet"
    assert run("simulate", "--days", "6", "--zones", "3", "--out", str(data)).returncode == 0
    # The data's missing column is named as the data's, not as its attributes sidecar's (fleet.streams.csv).
    refused(run("backtest", "--data", str(data), "--id-col", "zone", "--model", "seasonal-naive", "--no-frontier"),
            f"{data}: missing column 'zone' (id_col)")
    # --out "" wrote summary.json, the CSVs and report.html into the current folder, as --fit-cache "" did.
    for out in ("", "."):
        refused(run("backtest", "--data", str(data), "--out", out), "--out names no folder of its own")


def test_future_driver_values_off_the_grid_are_refused_and_far_ones_kept(project, fleet, tmp_path):
    day = fleet["ds"].min().normalize() + pd.Timedelta(days=29)
    zones = sorted(fleet["unique_id"].unique())

    def plan(stamps, name: str) -> Path:
        path = tmp_path / name
        pd.DataFrame([(z, t, 1.0) for z in zones for t in stamps], columns=["unique_id", "ds", "promo"]).to_csv(
            path, index=False)
        return path

    hours = pd.date_range(day, periods=24, freq="h")
    refused(cli(project, "ingest", "--future", str(plan(hours + pd.Timedelta(minutes=30), "half.csv"))),
            "future driver row(s) are off the project's grid", "nothing was written")
    with Store.open(load_config(project).store_url) as store:
        assert store.driver_values(["promo"]).empty
    assert cli(project, "ingest", "--future", str(plan(hours, "ok.csv"))).returncode == 0
    # A calendar years ahead is kept: the models read it once the actuals catch up.
    far = hours.map(lambda t: t.replace(year=t.year + 4))
    assert cli(project, "ingest", "--future", str(plan(far, "far.csv"))).returncode == 0


def test_compound_durations_and_dates_are_told_apart():
    from mlma.control import _until

    now = pd.Timestamp.now(tz="UTC")
    for text, hours in [("1h30min", 1.5), ("2d4h", 52), ("1 day 2 hours", 26), ("P2D", 48), ("90min", 1.5)]:
        assert abs((_until(text) - now).total_seconds() / 3600 - hours) < 0.1, text
    assert _until("2030-01-01T10:00") == pd.Timestamp("2030-01-01T10:00", tz="UTC")
    assert _until("20300101") == pd.Timestamp("2030-01-01", tz="UTC")


def test_an_ingest_without_a_declared_driver_column_says_so(tmp_path, fleet):
    root = make_project(tmp_path / "p")
    edit(root, "drivers", '["promo"]')
    done = cli(root, "ingest", str(write_csv(days(fleet, 0, 29), tmp_path / "history.csv")))
    assert done.returncode == 0
    assert "note: declared driver column(s) promo (mlma.toml [data]) are not in history.csv" in said(done)
    with_promo = write_csv(days(fleet, 29, 30).assign(promo=0.0), tmp_path / "day.csv")
    done = cli(root, "ingest", str(with_promo))
    assert done.returncode == 0 and "declared driver" not in said(done)


def test_a_store_url_naming_no_file_is_said_so_and_nothing_is_created(project, tmp_path):
    """A moved database or a typo in `[store] url`: every command says there is no file at that path and
    creates neither the file nor its folder (before, an empty database appeared there, and every command,
    this one and the next, said it had no mlma schema)."""
    for url in ("sqlite:///typo.db", "sqlite:///gone/mlma.db"):
        edit(project, "url", f'"{url}"')
        missing = project / url.removeprefix("sqlite:///")
        for command in (["status"], ["tick"], ["escalations"], ["upgrade"]):
            result = cli(project, *command)
            text = said(result)
            assert result.returncode == 5 and "Traceback" not in text, text
            assert f"there is no database file at {missing}" in text and "nothing was created" in text, text
            assert "[store] url in mlma.toml" in text, text
        assert not missing.exists() and not missing.parent.joinpath("mlma.db-journal").exists()
        assert missing.parent == project or not missing.parent.exists()
    with pytest.raises(Exception, match="no database file"):
        Store.open(f"sqlite:///{tmp_path / 'none.db'}")
    assert not (tmp_path / "none.db").exists()
    with Store.create(f"sqlite:///{tmp_path / 'new' / 'made.db'}") as store:  # creating still makes both
        assert store.last_done_tick() is None


@pytest.mark.parametrize("every, fragment", [
    ("3600", "--every needs a unit: '3600' would be read as nanoseconds; write e.g. 3600s"),
    ("60", "write e.g. 60s, 15min or 1h"),
    ("1us", "--every must be at least 10ms, got '1us'"),
    ("-1h", "--every must be at least 10ms"),
    ("soon", "--every must be a duration such as 15min, 1h or 1D, got 'soon'"),
    ("", "--every must be a duration such as 15min, 1h or 1D, got ''"),
    # Told to write "nans"; and a round longer than a duration holds was said not to be a duration.
    ("nan", "--every must be a duration such as 15min, 1h or 1D, got 'nan'"),
    ("1000000D", "--every must be at most 366 days, got '1000000D'"),
    ("400D", "--every must be at most 366 days, got '400D'"),
])
def test_a_service_interval_without_a_unit_or_too_short_is_refused(tmp_path, every, fragment):
    """pandas reads a bare `--every 3600` as 3,600 nanoseconds: the service crashed in time.sleep within seconds
    (a negative sleep) or read the store in a busy loop, 1,327 rounds in 20 s."""
    root = make_project(tmp_path / "p")
    refused(cli(root, "run", "--every", every, "--iterations", "1"), fragment)


@pytest.fixture(scope="module")
def small_platform(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("small") / "sim.csv"
    assert run("simulate", "--zones", "12", "--days", "21", "--out", str(data)).returncode == 0
    return data


def test_a_backtest_with_few_bootstrap_replicates_writes_every_output(small_platform, tmp_path):
    """A percentile interval of a few replicates may leave the point estimate outside it; the report drew it as
    offsets from the point and failed on a negative one, after summary.json and the CSVs were written, so a
    re-used folder held a new summary beside an old report."""
    out = tmp_path / "out"
    done = run("backtest", "--data", str(small_platform), "--model", "ridge", "--bootstrap", "3",
               "--policies", "never,periodic:3,always,mlma", "--out", str(out))
    assert done.returncode == 0, said(done)
    assert {p.name for p in out.iterdir()} >= {"summary.json", "report.html", "per_stream.csv"}


def test_outputs_are_moved_in_only_when_all_were_written(small_platform, tmp_path, monkeypatch):
    """A failure while writing (here the report) leaves the output folder as it was: no new summary.json beside
    an earlier run's report.html, and no folder of half-written files beside it."""
    import mlma.report

    out = tmp_path / "out"
    result = run_backtest(str(small_platform), BacktestConfig(policies=["never"], model=SeasonalNaive,
                                                              frontier=False, bootstrap=0))
    from mlma.backtest import write_outputs

    write_outputs(result, out)
    before = {p.name: sha(p) for p in out.iterdir()}
    assert "validation.csv" in before                                  # the simulator's data have findings

    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(mlma.report, "write_report", broken)
    with pytest.raises(OSError, match="No space left"):
        write_outputs(result, out)
    assert {p.name: sha(p) for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]            # the staging folder is gone
    monkeypatch.undo()
    write_outputs(dataclasses.replace(result, validation=None), out)
    assert not (out / "validation.csv").exists()                       # an earlier run's, not this one's


def test_streams_never_scored_are_said_and_a_backtest_that_scored_nothing_fails(small_platform, tmp_path):
    """The header named every stream while the MAEs came from a few (a stream whose history began after the
    others ended) or from none (every point marked abnormal), with exit 0 and no word."""
    frame = pd.read_csv(small_platform)
    late = frame[frame["unique_id"] == frame["unique_id"].iloc[0]].copy()
    late["unique_id"] = "late"
    late["ds"] = (pd.to_datetime(late["ds"]) + pd.Timedelta(days=30)).dt.strftime("%Y-%m-%d %H:%M:%S")
    shifted = tmp_path / "late.csv"
    pd.concat([frame, late]).to_csv(shifted, index=False)
    done = run("backtest", "--data", str(shifted), "--model", "seasonal-naive", "--no-frontier", "--bootstrap",
               "0", "--policies", "never,always", "--out", str(tmp_path / "o1"))
    assert done.returncode == 0, said(done)
    assert "warning: 12 of the 13 streams were never scored, under any policy" in said(done), said(done)
    everything = tmp_path / "abnormal.csv"
    everything.write_text("unique_id,start,end\n,1900-01-01,2100-01-01\n")
    done = run("backtest", "--data", str(small_platform), "--model", "seasonal-naive", "--no-frontier",
               "--bootstrap", "0", "--policies", "never", "--abnormal", str(everything), "--out", str(tmp_path / "o2"))
    assert done.returncode == 2 and "error: no point of the data was scored" in said(done), said(done)


def test_empty_options_and_unwritable_outputs_are_refused_by_name(small_platform, tmp_path):
    refused(run("backtest", "--data", str(small_platform), "--policies", "", "--out", str(tmp_path / "o")),
            "--policies is empty")
    refused(run("backtest", "--data", str(small_platform), "--fit-cache", "", "--out", str(tmp_path / "o")),
            "--fit-cache names no folder of its own")
    assert not (tmp_path / "o").exists()
    a_file = tmp_path / "afile"
    a_file.write_text("hi\n")
    refused(run("simulate", "--zones", "2", "--days", "3", "--out", str(a_file / "x.csv")), f"cannot write {a_file}")
    refused(run("dataset", "ansett", "--out", str(a_file / "x.csv")), f"cannot write {a_file}")


def test_a_comma_at_the_end_of_each_data_line_but_not_the_header_is_read_as_the_header_names_it(project, fleet,
                                                                                                 tmp_path):
    """A header `unique_id,ds,y` over lines `z0,2024-01-01,1.5,`: pandas took the ids for an index and moved every
    name one column on, so the file was refused as "ds holds numbers" (and `mlma attributes` stored each stream's
    city as its id). The fields are read as the header names them; a value past the last name is refused naming
    its line, not dropped."""
    day = days(fleet, 29, 30).assign(ds=lambda f: f["ds"].dt.strftime("%Y-%m-%d %H:%M:%S"))
    lines = ["unique_id,ds,y"] + [f"{r.unique_id},{r.ds},{r.y}," for r in day.itertuples()]
    (tmp_path / "trailing.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "valued.csv").write_text("\n".join(lines[:7] + [lines[7] + "3.5"] + lines[8:]) + "\n")
    with Store.open(load_config(project).store_url) as store:
        rows = len(store.observations())
    refused(cli(project, "ingest", str(tmp_path / "valued.csv")),
            "line 8 has a value past the header's 3 column names", "nothing was written")
    done = cli(project, "ingest", str(tmp_path / "trailing.csv"))
    assert done.returncode == 0 and "96 new" in said(done), said(done)
    uid = day["unique_id"].iloc[0]
    (tmp_path / "attributes.csv").write_text(f"unique_id,city\n{uid},Berlin,\n")
    assert cli(project, "attributes", str(tmp_path / "attributes.csv")).returncode == 0
    with Store.open(load_config(project).store_url) as store:
        stored = store.observations()
        assert len(stored) == rows + 96
        mine = stored[(stored["unique_id"] == uid) & (stored["ds"] == pd.Timestamp(day["ds"].iloc[0]))]
        assert mine["y"].tolist() == [pytest.approx(day["y"].iloc[0])], mine
        assert dict(zip(store.streams()["unique_id"], store.streams()["attributes"]))[uid] == {"city": "Berlin"}
