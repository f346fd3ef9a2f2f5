"""`mlma table`: one folder's full table, or one table of gaps and labour over several folders."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mlma.cli import app


def write_summary(folder, policies):
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps({"config": {}, "policies": policies, "frontier": []}))


def test_table_over_several_runs_lists_each_run_and_policy(tmp_path):
    rows = [{"policy": "mlma", "mae": 1.1, "retrains": 2, "gap_pct": -0.5, "gap_low": -0.9, "gap_high": -0.1,
             "escalations_per_1k_stream_days": 0.4, "escalation_precision": 0.9,
             "queue_items_per_1k_stream_days": 0.2, "queue_item_precision": 0.8},
            {"policy": "always", "mae": 1.0, "retrains": 100, "gap_pct": 0.0, "frontier_only": True}]
    write_summary(tmp_path / "sim-7", rows)
    write_summary(tmp_path / "sim-11", rows)
    result = CliRunner().invoke(app, ["table", str(tmp_path / "sim-7"), str(tmp_path / "sim-11")])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[2] == ("| sim-7 | mlma | 1.100 | 0.020 | -0.50 [-0.90, -0.10] | - | - | 0.40 | - | - | 0.90 | 0.20 "
                        "| 0.80 |")
    assert lines[3].startswith("| sim-11 | mlma |") and len(lines) == 4  # the added schedule is left out
    everything = CliRunner().invoke(app, ["table", "--all", str(tmp_path / "sim-7"), str(tmp_path / "sim-11")])
    assert "| sim-7 | always |" in everything.output


def test_table_names_a_folder_without_summary(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["table", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no summary.json in" in result.output


# -- --pooled: several backtests' streams as one fleet --------------------------------------------------------
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from mlma.backtest import BacktestConfig, run_backtest, write_outputs  # noqa: E402
from mlma.evaluation import frontier_gaps, pool_runs  # noqa: E402
from mlma.simulate import simulate_platform  # noqa: E402


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory):
    """Two simulator seeds' backtests (40 zones, 40 days), written as `mlma backtest` writes them."""
    root = tmp_path_factory.mktemp("runs")
    folders = []
    for seed in (3, 4):
        sim = simulate_platform(40, 40, seed=seed)
        result = run_backtest(sim.data, BacktestConfig(policies=["mlma:alpha=0.2", "periodic:5"], model="ridge",
                                                       executor="inline", bootstrap=400, sample_streams=0,
                                                       frontier=True))
        write_outputs(result, root / f"seed-{seed}")
        folders.append(root / f"seed-{seed}")
    return folders


def test_pooling_one_run_gives_its_own_gaps_and_two_copies_a_narrower_interval(seed_runs):
    """Pooling is the same bootstrap over streams: one run pooled alone has exactly its own gaps and
    intervals; the same run twice (as if two seeds had drawn the same fleet) has the same point gap and an
    interval about 1 / sqrt(2) as wide."""
    frame = pd.read_csv(seed_runs[0] / "per_stream.csv")
    own = frontier_gaps(frame, n_boot=400)["gaps"]
    alone = frontier_gaps(pool_runs({"a": frame})[0], n_boot=400)["gaps"]
    assert alone == own
    twice = frontier_gaps(pool_runs({"a": frame, "b": frame})[0], n_boot=400)["gaps"]
    for policy in ("mlma:alpha=0.2", "periodic:5"):
        assert twice[policy]["gap_pct"] == pytest.approx(own[policy]["gap_pct"], abs=1e-3)
        ratio = ((twice[policy]["gap_high"] - twice[policy]["gap_low"])
                 / (own[policy]["gap_high"] - own[policy]["gap_low"]))
        assert 0.5 < ratio < 0.9, (policy, ratio)


def test_the_pooled_table_has_a_row_per_policy_every_run_holds(seed_runs, tmp_path):
    result = CliRunner().invoke(app, ["table", "--pooled", "--bootstrap", "300", *map(str, seed_runs)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Pooled over 2 runs (seed-3, seed-4), 80 streams, 300 bootstrap replicates")
    rows = [line for line in result.output.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0][2:] for row in rows] == ["mlma:alpha=0.2", "periodic:5"]  # not never, always
    frames = {folder.name: pd.read_csv(folder / "per_stream.csv") for folder in seed_runs}
    expected = frontier_gaps(pool_runs(frames)[0], n_boot=300)["gaps"]["mlma:alpha=0.2"]
    assert f"{expected['gap_pct']:+.2f} [{expected['gap_low']:+.2f}, {expected['gap_high']:+.2f}]" in rows[0]
    total = sum(int(f.loc[f.policy == "mlma:alpha=0.2", "retrains"].sum()) for f in frames.values())
    assert f"| {total:,} |" in rows[0]
    # A policy missing from one run is left out, and said so.
    other = tmp_path / "seed-x"
    other.mkdir()
    frames["seed-3"][frames["seed-3"].policy != "periodic:5"].to_csv(other / "per_stream.csv", index=False)
    partial = CliRunner().invoke(app, ["table", "--pooled", str(seed_runs[0]), str(other)])
    assert partial.exit_code == 0 and "Not in every run, left out: periodic:5." in partial.output


def test_the_pooled_table_names_what_it_cannot_read(seed_runs, tmp_path):
    (tmp_path / "empty").mkdir()
    missing = CliRunner().invoke(app, ["table", "--pooled", str(seed_runs[0]), str(tmp_path / "empty")])
    assert missing.exit_code == 2 and "no per_stream.csv in" in " ".join(missing.output.split())
    (tmp_path / "bad").mkdir()
    pd.DataFrame({"policy": ["mlma"], "unique_id": ["a"]}).to_csv(tmp_path / "bad" / "per_stream.csv", index=False)
    bad = CliRunner().invoke(app, ["table", "--pooled", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "lacks mae, n_scored, retrains" in " ".join(bad.output.split())
    (tmp_path / "text").mkdir()
    pd.DataFrame({"policy": ["mlma", "mlma"], "unique_id": ["a", "b"], "mae": [1.0, "abc"], "n_scored": [3, 3],
                  "retrains": [0, 1]}).to_csv(tmp_path / "text" / "per_stream.csv", index=False)
    text = CliRunner().invoke(app, ["table", "--pooled", str(tmp_path / "text")])
    assert text.exit_code == 2 and f"{tmp_path / 'text' / 'per_stream.csv'}: column mae holds 'abc' (row 3), not a " \
        "number" in " ".join(text.output.split()), text.output
    twin = tmp_path / "again" / seed_runs[0].name
    twin.parent.mkdir()
    twin.mkdir()
    (twin / "per_stream.csv").write_bytes((seed_runs[0] / "per_stream.csv").read_bytes())
    same = CliRunner().invoke(app, ["table", "--pooled", str(seed_runs[0]), str(twin)])
    assert same.exit_code == 2 and "two folders are named" in " ".join(same.output.split())


def test_values_that_could_not_be_computed_print_as_a_dash_not_nan(tmp_path):
    # summary.json files written before non-finite values became null hold the bare word NaN.
    folder = tmp_path / "const"
    folder.mkdir()
    (folder / "summary.json").write_text(
        '{"config": {}, "frontier": [], "policies": ['
        '{"policy": "always", "mae": NaN, "retrains": 10, "gap_pct": 0.0, "headroom_pct": NaN},'
        '{"policy": "mlma", "mae": 0.0, "retrains": 1, "gap_pct": NaN, "gap_low": NaN, "gap_high": NaN,'
        ' "headroom_pct": Infinity}]}')
    single = CliRunner().invoke(app, ["table", str(folder)])
    several = CliRunner().invoke(app, ["table", str(folder), str(folder)])
    for result in (single, several):
        assert result.exit_code == 0, result.output
        assert "nan" not in result.output.lower() and "inf" not in result.output.lower()
    lines = several.output.strip().splitlines()
    assert lines[3].startswith("| const | mlma | - | 0.100 | - | - |")
    assert "| always | - | - | 10 | 1.000 | +0.00 | - |" in single.output


def test_the_pooled_table_prints_a_dash_where_always_has_no_error(tmp_path):
    """On constant data always's MAE is 0: the pooled table divided by it and printed nan."""
    import pandas as pd

    from mlma.backtest import BacktestConfig, run_backtest, write_outputs

    ds = pd.date_range("2025-01-06", periods=24 * 50, freq="h")
    data = pd.concat([pd.DataFrame({"unique_id": f"z{i}", "ds": ds, "y": 5.0}) for i in range(4)])
    config = BacktestConfig(model="seasonal-naive", policies=("never", "always", "periodic:7"), bootstrap=0)
    write_outputs(run_backtest(data, config), tmp_path / "const")
    pooled = CliRunner().invoke(app, ["table", "--pooled", "--bootstrap", "20", str(tmp_path / "const")])
    assert pooled.exit_code == 0, pooled.output
    assert "nan" not in pooled.output.lower() and "| always | 1 | 4 |" in pooled.output, pooled.output


def test_the_pooled_table_keeps_stream_ids_that_read_as_the_same_number_apart(tmp_path):
    """'01' and '1' are two streams (and 'NA' one): read as numbers they were one, and pooling stopped."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    ids = [f"{i:02d}" for i in range(12)] + ["1", "NA"]
    for run in ("a", "b"):
        folder = tmp_path / run
        folder.mkdir()
        rows = [pd.DataFrame({"policy": policy, "unique_id": ids, "mae": factor * rng.gamma(20, 1 / 20, len(ids)),
                              "n_scored": 50, "retrains": cost})
                for policy, factor, cost in (("never", 1.2, 0), ("periodic:4", 1.1, 5), ("always", 1.0, 20),
                                             ("mlma", 1.1, 2))]
        pd.concat(rows).to_csv(folder / "per_stream.csv", index=False)
    pooled = CliRunner().invoke(app, ["table", "--pooled", "--bootstrap", "20", str(tmp_path / "a"),
                                      str(tmp_path / "b")])
    assert pooled.exit_code == 0, pooled.output
    assert "| mlma | 2 | 28 |" in pooled.output, pooled.output


@pytest.mark.parametrize("policies", ['[{"x": 1}]', '"abc"', "[1, 2]", '[{"policy": 3}]'])
def test_a_summary_whose_policies_are_not_rows_is_named_not_a_traceback(tmp_path, policies):
    """`{"policies": [{"x": 1}]}` ended in KeyError: 'policy' with a traceback (exit 1)."""
    (tmp_path / "summary.json").write_text(f'{{"config": {{}}, "policies": {policies}}}')
    result = CliRunner().invoke(app, ["table", str(tmp_path)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "is not a backtest summary: its 'policies' must be a list of rows" in " ".join(result.output.split())


def test_the_pooled_tables_bootstrap_is_bounded_and_only_the_pooled_table_takes_one(tmp_path):
    """--bootstrap 99999999999999999999 was taken, and never finished; --bootstrap -5 without --pooled was
    ignored."""
    single = CliRunner().invoke(app, ["table", str(tmp_path), "--bootstrap", "-5"])
    assert single.exit_code == 2 and "--bootstrap goes with --pooled" in " ".join(single.output.split())
    result = CliRunner().invoke(app, ["table", "--pooled", str(tmp_path), "--bootstrap", "100000001"])
    assert result.exit_code == 2, result.output
    assert "--bootstrap must be a whole number of replicates from 0 to 100,000, got 100000001" in \
        " ".join(result.output.split())
