"""Project folders: mlma.toml validation, init, ingest idempotency and status through the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mlma.project import ConfigError, init_project, load_config

MLMA = str(Path(sys.executable).parent / "mlma")


def run(*args, cwd):
    return subprocess.run([MLMA, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_init_writes_a_valid_config_and_a_store(tmp_path):
    config = init_project(tmp_path / "p", model="ridge")
    assert config.model.spec == "ridge" and config.monitor.alpha == 0.01 and config.monitor.budget == 0
    assert (tmp_path / "p" / "mlma.db").exists() and config.artifacts_dir.is_dir()
    assert config.store_url == f"sqlite:///{(tmp_path / 'p' / 'mlma.db').resolve()}"
    with pytest.raises(ConfigError, match="exists already"):
        init_project(tmp_path / "p")


@pytest.mark.parametrize("text, message", [
    ("[monitr]\nalpha = 0.1\n", "unknown section \\[monitr\\]"),
    ("[monitor]\nalpha = 'high'\n", "alpha must be float"),
    ("[monitor]\nalpha = 1.5\n", "alpha must be in"),
    ("[monitor]\nfdr = 'holm'\n", "fdr must be"),
    ("[monitor]\nmax_age = -1\n", "max_age \\(the age backstop, in ticks, 0: off\\) must be a whole number from 0 to "
                                  "10,000"),
    ("[monitor]\nmax_age = 100000000\n", "max_age \\(the age backstop, in ticks, 0: off\\) must be a whole number"),
    ("[monitor]\nmax_age = 2.5\n", "max_age must be int"),
    ("[store]\nurl = 'mysql://x'\n", "url must be"),
    ("[model]\nspec = 'rigde'\n", "\\[model\\] spec 'rigde' is not a built-in model \\(lightgbm, mean, ridge"),
    ("[store]\nartifacts = ' '\n", "artifacts must name a folder for the model files other than the project"),
    ("[store]\nartifacts = './'\n", "artifacts must name a folder .* got './'; a project that kept"),
    ("[store]\nkeep = '1 year'\n", "\\[store\\] keep must be a whole number of days or weeks"),
    ("[store]\nkeep = '-4D'\n", "\\[store\\] keep must be a whole number of days or weeks"),
    ("[store]\nkeep = '400'\n", "\\[store\\] keep must be a whole number of days or weeks .* got '400'"),
    ("[store]\nkeep = '6m'\n", "\\[store\\] keep must be a whole number of days or weeks .* got '6m'"),
    ("[store]\nkeep = '0D'\n", "\\[store\\] keep must be a whole number of days or weeks .* got '0D'"),
    ("[store]\nkeep = '1000000D'\n", "keep must be a whole number of days or weeks .*at most 36,525 days"),
    ("[data\n", "not valid TOML"),
    ("[agent]\npolicy = 'sometimes'\n", "unknown policy 'sometimes'"),
    ("[agent]\npolicy = 'periodic:0'\n", "whole number of ticks from 1 to"),
    ("[agent]\npolicy = 'periodic:weekly'\n", "use 'periodic:K'"),
    ("[agent]\npolicy = 'ph'\n", "backtest baseline"),
    ("[data]\nmax_future = 'soon'\n", "\\[data\\] max_future must be a duration"),
    ("[data]\nmax_ahead_ticks = -2\n", "\\[data\\] max_ahead_ticks must be"),
    ("[data]\nmax_abs_value = 0.0\n", "\\[data\\] max_abs_value must be a positive"),
    ("[agent]\nhold_no_data_share = 0.0\n", "hold_no_data_share must be in"),
])
def test_bad_config_is_named(tmp_path, text, message):
    (tmp_path / "mlma.toml").write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(tmp_path)
    assert "mlma.toml" in str(info.value)


def test_missing_project_says_how_to_create_one(tmp_path):
    with pytest.raises(ConfigError, match="mlma init"):
        load_config(tmp_path)


def test_cli_init_ingest_twice_and_status(tmp_path):
    ds = pd.date_range("2025-01-01", periods=48, freq="h")
    frame = pd.concat([pd.DataFrame({"unique_id": uid, "ds": ds, "y": range(48)}) for uid in ("a", "b")],
                      ignore_index=True)
    frame.to_csv(tmp_path / "actuals.csv", index=False)
    assert run("init", "proj", "--model", "ridge", cwd=tmp_path).returncode == 0
    project = tmp_path / "proj"
    first = run("ingest", str(tmp_path / "actuals.csv"), cwd=project)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "96 new" in first.stdout and "2 new streams" in first.stdout
    again = run("ingest", str(tmp_path / "actuals.csv"), cwd=project)
    assert again.returncode == 0 and "nothing changed" in again.stdout
    # A corrected file: one value changed, the rest unchanged.
    frame.loc[frame.index[0], "y"] = 100
    frame.to_csv(tmp_path / "corrected.csv", index=False)
    fixed = run("ingest", str(tmp_path / "corrected.csv"), cwd=project)
    assert "1 revised" in fixed.stdout and "0 new" in fixed.stdout, fixed.stdout
    status = run("status", "--project", str(project), cwd=tmp_path)
    assert status.returncode == 0 and "streams" in status.stdout and " 2 " in status.stdout


def test_cli_ingest_outside_a_project_fails_clearly(tmp_path):
    done = run("ingest", "x.csv", cwd=tmp_path)
    assert done.returncode == 2 and "mlma init" in done.stdout


def test_the_boundary_settings_reach_the_ingest_limits(tmp_path):
    (tmp_path / "mlma.toml").write_text("[data]\nmax_future = 'off'\nmax_ahead_ticks = 3\nvalue_range_factor = 0\n")
    limits = load_config(tmp_path).ingest_limits()
    assert (limits.max_future, limits.max_ahead_ticks, limits.value_range_factor) == (None, 3, 0.0)



def test_an_mlma_spec_keeps_its_own_settings_and_takes_the_rest_from_monitor(tmp_path):
    (tmp_path / "mlma.toml").write_text("[agent]\npolicy = 'mlma:alpha=0.1'\n[monitor]\nalpha = 0.3\ndelta = 0.2\n")
    params = load_config(tmp_path).build_policy().get_params()
    assert params["alpha"] == 0.1 and params["delta"] == 0.2
    (tmp_path / "mlma.toml").write_text("[agent]\npolicy = 'mlma'\n[monitor]\nalpha = 0.3\n")
    assert load_config(tmp_path).build_policy().get_params()["alpha"] == 0.3
    assert load_config(tmp_path).build_policy().max_age == 365  # the default age backstop
    (tmp_path / "mlma.toml").write_text("[agent]\npolicy = 'mlma'\n[monitor]\nmax_age = 100\n")
    assert load_config(tmp_path).build_policy().max_age == 100
    (tmp_path / "mlma.toml").write_text("[agent]\npolicy = 'mlma:max_age=0'\n[monitor]\nmax_age = 100\n")
    assert load_config(tmp_path).build_policy().max_age == 0
    (tmp_path / "mlma.toml").write_text("[agent]\npolicy = 'periodic:5'\n[monitor]\nalpha = 0.3\n")
    assert load_config(tmp_path).build_policy().every == 5
