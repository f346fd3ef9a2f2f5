"""Store reads built column-wise (mlma.store.frames) give the frames the row-wise build gave: the same
values, dtypes, NaN and None, for empty results and under every filter, on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlma.policy import Verdict
from mlma.store import Store, TickRecord
from mlma.store import frames
from mlma.store import store as store_module


def rowwise(monkeypatch, read):
    """What ``read()`` returned when the store built its frames row by row (the reference)."""
    with monkeypatch.context() as m:
        m.setattr(store_module, "rows_frame", frames.rowwise_frame)
        m.setattr(store_module, "verdict_labels", frames.rowwise_verdict_labels)
        return read()


def write_verdicts(store: Store, n: int = 9) -> None:
    store.stream_ids([f"zone-{i}" for i in range(n)])
    rng = np.random.default_rng(3)
    ids = np.arange(n)
    # Tick 1: NaN and None mixed into every nullable column, versions on some streams only.
    p_value = rng.uniform(size=n)
    p_value[::4] = np.nan
    store.write_tick(TickRecord(1, verdicts=pd.DataFrame({
        "stream_id": ids, "verdict": ids % len(Verdict), "p_value": p_value, "effect": rng.normal(size=n),
        "retrain": ids % 2 == 0, "reason": [None if i % 3 else f"loss up {i}%" for i in ids],
        "loss": rng.gamma(2.0, size=n), "reference_loss": np.where(ids < 2, np.nan, 1.0),
        "model_version": pd.array([None if i == 4 else i + 1 for i in ids], dtype="Int64")})))
    # Tick 2: every nullable column NULL throughout (no test ran, no reason, no loss), every version known.
    store.write_tick(TickRecord(2, verdicts=pd.DataFrame({
        "stream_id": ids, "verdict": np.full(n, int(Verdict.COLD)), "retrain": np.zeros(n, dtype=bool),
        "model_version": ids + 1})))


@pytest.mark.parametrize("tick, streams", [(None, None), (1, None), (2, None), (1, ["zone-4", "zone-0"]),
                                           (None, [3]), (7, None), (1, [])])
def test_verdicts_equal_the_row_wise_frame(store, monkeypatch, tick, streams):
    write_verdicts(store)
    new = store.verdicts(tick, streams)
    old = rowwise(monkeypatch, lambda: store.verdicts(tick, streams))
    pd.testing.assert_frame_equal(new, old, check_exact=True)
    assert list(new.columns) == ["tick", "stream_id", "unique_id", "verdict", "label", "p_value", "effect",
                                 "retrain", "reason", "loss", "reference_loss", "model_version"]
    if tick == 1 and streams is None:
        # The case that could go wrong: NULLs in numeric columns are NaN in float64 columns, like before.
        assert new["p_value"].dtype == np.float64 and new["p_value"].isna().sum() == 3
        assert new["model_version"].dtype == np.float64 and new["model_version"].isna().sum() == 1
        assert new["reason"].isna().sum() == 6 and new["retrain"].dtype == bool
        assert new["label"].tolist() == [Verdict(i % len(Verdict)).label for i in range(9)]
    if tick == 2:
        assert new["model_version"].dtype == np.int64 and new["p_value"].isna().all()
    if tick == 7 or streams == []:
        assert new.empty


def test_an_empty_store_reads_an_empty_frame_as_before(store, monkeypatch):
    pd.testing.assert_frame_equal(store.verdicts(), rowwise(monkeypatch, store.verdicts))


def test_an_unknown_verdict_code_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"unknown verdict code\(s\) \[42\]"):
        frames.verdict_labels(np.array([0, 42]))


def test_rows_and_columns_must_agree():
    with pytest.raises(ValueError, match="rows have 2 values, but 3 columns"):
        frames.rows_frame([(1, 2)], {"a": frames.INT, "b": frames.INT, "c": frames.INT})
    with pytest.raises(ValueError, match="unknown column kind 'date'"):
        frames.rows_frame([(1,)], {"a": "date"})


def test_a_tick_committing_between_two_statements_of_a_read_is_not_seen_by_it(store):
    """Every statement of one read sees the same commits: a summary whose tick list was read before a tick
    committed and whose "last done tick" after it named a tick its list did not hold (READ COMMITTED on
    PostgreSQL; SQLite's read transactions were snapshots already)."""
    import sqlalchemy as sa

    from mlma.store import queries

    write_verdicts(store, n=3)
    committed = []

    def commit_a_tick_once(conn, cursor, statement, parameters, context, executemany):
        # After the read's first query (SQLite's BEGIN takes its snapshot at the first read, not at BEGIN).
        if conn.get_execution_options().get("mlma_read") and statement.startswith("SELECT") and not committed:
            committed.append(True)
            store.write_tick(TickRecord(3))   # from another connection, while the read's is open

    sa.event.listen(store.engine, "after_cursor_execute", commit_a_tick_once)
    try:
        summary = queries.fleet_summary(store)
    finally:
        sa.event.remove(store.engine, "after_cursor_execute", commit_a_tick_once)
    assert committed   # the tick did commit in the middle of the read
    assert summary["last_tick"] == summary["latest"]["tick"] == summary["series"][-1]["tick"] == 2
    assert queries.fleet_summary(store)["last_tick"] == 3   # and the next read sees it
