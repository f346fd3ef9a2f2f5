"""`mlma backtest --project`: a project's own stored history, replayed under its mlma.toml settings against the
schedules at equal compute. The replay is the backtest of the same data and settings given as a file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlma.backtest import BacktestConfig, run_backtest
from mlma.control import Operations
from mlma.live import LiveAgent
from mlma.project import ConfigError, init_project, load_config
from mlma.simulate import simulate_platform
from mlma.store import Store


@pytest.fixture(scope="module")
def platform():
    return simulate_platform(16, 45, seed=5, drivers=True)


def _project(root: Path, platform, *, monitor: str = "", model: str = "ridge", holidays: str = "") -> Path:
    init_project(root, model=model)
    toml = root / "mlma.toml"
    text = toml.read_text().replace('executor = "process"', 'executor = "inline"')
    text = text.replace("drivers = []", 'drivers = ["temperature"]', 1).replace('holidays = ""', f'holidays = "{holidays}"')
    toml.write_text(text + monitor)
    with Store.open(load_config(root).store_url) as store:
        store.ingest_file(_csv(root.parent / "history.csv", platform.data))
        store.set_attributes({row.unique_id: {"city": row.city} for row in platform.streams.itertuples()})
        Operations(store).mark_abnormal("2024-01-20", "2024-01-21", by="user:test", reason="a storm")
    return root


def _csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def test_a_project_replays_as_the_backtest_of_its_data_and_settings_given_as_a_file(tmp_path, platform):
    root = _project(tmp_path / "p", platform, monitor="")
    with LiveAgent(load_config(root), executor="inline") as live:
        history = live.history()
    assert history.policy == "mlma" and history.settings["model"] == "ridge"
    assert (history.settings["freq"], history.settings["tick"]) == ("h", "D")
    assert sorted(history.data.columns) == ["ds", "temperature", "unique_id", "y"]
    assert len(history.data) == len(platform.data) and history.data["temperature"].notna().all()
    assert history.attributes.set_index("unique_id")["city"].to_dict() == platform.streams.set_index(
        "unique_id")["city"].to_dict()
    assert history.abnormal[["start", "end"]].values.tolist() == [[pd.Timestamp("2024-01-20"),
                                                                  pd.Timestamp("2024-01-21")]]
    assert history.abnormal["unique_id"].isna().all()
    settings = dict(history.settings)
    config = BacktestConfig(policies=["mlma", "periodic:7"], frontier=False, bootstrap=0, **settings)
    replay = run_backtest(history.data, config, abnormal=history.abnormal, attributes=history.attributes)
    direct = run_backtest(platform.data[["unique_id", "ds", "y", "temperature"]], config,
                          abnormal=pd.DataFrame({"unique_id": [None], "start": [pd.Timestamp("2024-01-20")],
                                                 "end": [pd.Timestamp("2024-01-21")]}),
                          attributes=platform.streams)
    columns = ["policy", "mae", "retrains", "escalations"]
    pd.testing.assert_frame_equal(replay.summary_frame()[columns], direct.summary_frame()[columns])
    assert replay.summary_frame().set_index("policy").loc["mlma", "retrains"] > 0


def test_the_projects_settings_name_its_policy_and_model(tmp_path, platform):
    root = _project(tmp_path / "p", platform, monitor="", holidays="DE")
    toml = root / "mlma.toml"
    toml.write_text(toml.read_text().replace("budget = 0 ", "budget = 0.05 ").replace("max_age = 365 ",
                                                                                        "max_age = 0 "))
    with LiveAgent(load_config(root), executor="inline") as live:
        history = live.history(sample=5)
        again = live.history(sample=5)
        other = live.history(sample=5, seed=1)
    assert history.policy == "mlma:budget=0.05:max_age=0"
    assert history.settings["model"] == "ridge:holidays=DE"
    assert history.data["unique_id"].nunique() == 5 == len(history.attributes)
    # The same seed draws the same streams; their driver values and attributes are theirs only.
    pd.testing.assert_frame_equal(history.data, again.data)
    assert set(other.data["unique_id"]) != set(history.data["unique_id"])
    assert set(history.attributes["unique_id"]) == set(history.data["unique_id"])
    assert history.data["temperature"].notna().all()
    full = platform.data.set_index(["unique_id", "ds"])["temperature"]
    np.testing.assert_allclose(history.data.set_index(["unique_id", "ds"])["temperature"],
                               full.loc[history.data.set_index(["unique_id", "ds"]).index])
    toml.write_text(toml.read_text().replace('spec = "ridge"', 'spec = "sklearn:linear_model.Ridge"'))
    with LiveAgent(load_config(root), executor="inline") as live:
        with pytest.raises(ConfigError, match="holidays = 'DE' is given to the built-in models in a backtest"):
            live.history()
        assert live.history(model="ridge").settings["model"] == "ridge"     # --model: the way past it


def test_mlma_backtest_project_writes_the_report_and_refuses_options_of_a_file(tmp_path, platform):
    root = _project(tmp_path / "p", platform)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mlma.cli", "backtest", *args], capture_output=True, text=True,
                              timeout=600, env={"COLUMNS": "250", "PATH": "/usr/bin:/bin"}, cwd=tmp_path)

    done = cli("--project", str(root), "--policies", "project,page-hinkley:threshold=200", "--bootstrap", "50",
               "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stdout + done.stderr
    said = " ".join(done.stdout.split())
    assert "project p: 16 streams, model ridge" in said and "page-hinkley:threshold=200" in said
    summary = pd.read_json(tmp_path / "out" / "summary.json", typ="series")
    assert {row["policy"] for row in summary["policies"]} >= {"mlma", "page-hinkley:threshold=200"}
    assert np.isfinite([row["gap_pct"] for row in summary["policies"] if row["policy"] == "mlma"]).all()
    for args, message in ((("--project", str(root), "--data", "x.csv"), "give one of --data FILE or --project"),
                          ((), "give one of --data FILE or --project"),
                          (("--project", str(root), "--tick", "7D"), "--tick: with --project the data, its clock"),
                          (("--project", str(root), "--id-col", "zone"), "--id-col: with --project"),
                          (("--data", "x.csv", "--sample", "3"), "--sample goes with --project")):
        refused = cli(*args)
        assert refused.returncode == 2 and message in " ".join((refused.stdout + refused.stderr).split()), args
