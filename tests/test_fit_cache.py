"""The on-disk fit cache: what its key covers, and that a cached backtest gives the uncached results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlma.backtest import BacktestConfig, run_backtest
from mlma.models import Drivers, ForecastContext
from mlma.training import FitCache

from test_backtest import hourly_frame

CTX = ForecastContext("h", season_length=24, horizon=24)


def test_the_key_changes_with_everything_a_fit_depends_on():
    ds = np.arange("2025-01-01", "2025-01-03", dtype="datetime64[h]").astype("datetime64[ns]")
    y = np.arange(48.0)
    context = FitCache.context_digest("ridge", CTX, {})
    base = FitCache.key(context, "s0", ds, y)
    assert FitCache.key(FitCache.context_digest("ridge", CTX, {}), "s0", ds.copy(), y.copy()) == base
    changed_y = y.copy()
    changed_y[5] = np.nan  # a masked (abnormal) row
    variants = [
        FitCache.key(context, "s1", ds, y),                                   # another stream
        FitCache.key(context, "s0", ds + np.timedelta64(1, "h"), y),          # another window
        FitCache.key(context, "s0", ds[1:], y[1:]),                           # a shorter window
        FitCache.key(context, "s0", ds, changed_y),                           # other data
        FitCache.key(FitCache.context_digest("lightgbm", CTX, {}), "s0", ds, y),   # another model
        FitCache.key(FitCache.context_digest("ridge", CTX, {"alpha": 2.0}), "s0", ds, y),  # its parameters
        FitCache.key(FitCache.context_digest("ridge", ForecastContext("h", 24, 12), {}), "s0", ds, y),  # horizon
        FitCache.key(FitCache.context_digest("ridge", ForecastContext("h", 24, 24, drivers=Drivers(future="t")),
                                             {}), "s0", ds, y),                 # declared drivers
        FitCache.key(context, "s0", ds, y, np.zeros((48, 1))),                # driver values
        FitCache.key(context, "s0", ds, y, np.ones((48, 1))),                 # other driver values
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_an_unstable_model_spec_is_not_cached():
    class Model:  # default repr shows a memory address
        pass

    assert FitCache.context_digest(Model(), CTX, {}) is None


def test_a_second_backtest_takes_every_fit_from_the_cache_with_identical_results(tmp_path):
    frame = hourly_frame(n_streams=3, days=16)
    settings = dict(policies=["never", "periodic:3", "always", "mlma"], model="ridge", initial_ticks=10,
                    sample_streams=1, fit_cache=tmp_path / "fits")
    first = run_backtest(frame, BacktestConfig(**settings))
    assert first.config["fits_done"] > 0 and first.config["fits_from_cache"] == 0
    second = run_backtest(frame, BacktestConfig(**settings))
    assert second.config["fits_done"] == 0
    assert second.config["fits_from_cache"] == first.config["fits_done"]
    assert second.summary == first.summary
    pd.testing.assert_frame_equal(second.per_stream, first.per_stream)
    pd.testing.assert_frame_equal(second.forecasts, first.forecasts)
    pd.testing.assert_frame_equal(second.retrain_log, first.retrain_log)
    # Without the cache the same numbers come out (the cache changes nothing but the work done).
    plain = run_backtest(frame, BacktestConfig(**{**settings, "fit_cache": None}))
    pd.testing.assert_frame_equal(plain.per_stream.drop(columns="compute_seconds"),
                                  first.per_stream.drop(columns="compute_seconds"))


def test_changed_data_or_settings_miss_the_cache(tmp_path):
    frame = hourly_frame(n_streams=3, days=16)
    settings = dict(policies=["always"], model="ridge", initial_ticks=10, sample_streams=0,
                    fit_cache=tmp_path / "fits")
    first = run_backtest(frame, BacktestConfig(**settings))
    # One value of stream s1 changes at hour 200 (day 8, inside every 28-day window): s1's fits are new, the
    # other two streams' come from the cache.
    edited = frame.copy()
    row = edited.index[(edited.unique_id == "s1")][200]
    edited.loc[row, "y"] += 50.0
    second = run_backtest(edited, BacktestConfig(**settings))
    assert 3 * second.config["fits_done"] == first.config["fits_done"]
    assert second.config["fits_done"] + second.config["fits_from_cache"] == first.config["fits_done"]
    # Another training window: every fit is new.
    third = run_backtest(frame, BacktestConfig(**settings, train_window_ticks=9))
    assert third.config["fits_from_cache"] == 0


def test_a_cache_folder_that_cannot_be_used_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="cannot use .* as a fit cache"):
        FitCache(blocker)


def test_a_pickle_spec_whose_file_changes_misses_the_cache(tmp_path):
    import os
    import pickle

    from sklearn.linear_model import Ridge

    model = tmp_path / "model.pkl"
    model.write_bytes(pickle.dumps(Ridge(alpha=1.0)))
    frame = hourly_frame(n_streams=2, days=16)
    settings = dict(policies=["always"], model=f"pickle:{model}", initial_ticks=10, sample_streams=0,
                    fit_cache=tmp_path / "fits")
    first = run_backtest(frame, BacktestConfig(**settings))
    assert first.config["fits_done"] > 0
    assert run_backtest(frame, BacktestConfig(**settings)).config["fits_done"] == 0
    # Same path, another model: every fit is new. The mtime is moved on explicitly, as the model factory
    # memoises the unpickled object by it and two writes within a clock tick can share one.
    model.write_bytes(pickle.dumps(Ridge(alpha=1000.0)))
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = run_backtest(frame, BacktestConfig(**settings))
    assert third.config["fits_from_cache"] == 0
    assert third.config["fits_done"] == first.config["fits_done"]
    assert not third.per_stream["mae"].equals(first.per_stream["mae"])


def _user_package(root, base_body="pass"):
    """mypkg: api.py re-exports Reg from impl.py, whose base class lives in base.py (on scikit-learn's Ridge)."""
    package = root / "mypkg"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text(f"from sklearn.linear_model import Ridge\n\n\nclass Base(Ridge):\n"
                                     f"    {base_body}\n")
    (package / "impl.py").write_text("from mypkg.base import Base\n\n\nclass Reg(Base):\n    pass\n")
    (package / "api.py").write_text("from mypkg.impl import Reg  # noqa: F401\n")
    return package


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    import sys

    package = _user_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield package
    for name in [name for name in sys.modules if name == "mypkg" or name.startswith("mypkg.")]:
        del sys.modules[name]  # the next test's mypkg is another folder's


def test_a_model_class_from_another_module_is_part_of_the_key(user_package):
    before = FitCache.context_digest("mypkg.api:Reg", CTX, {})
    assert FitCache.context_digest("mypkg.api:Reg", CTX, {}) == before
    (user_package / "impl.py").write_text("from mypkg.base import Base\n\n\nclass Reg(Base):\n    extra = 1\n")
    after_impl = FitCache.context_digest("mypkg.api:Reg", CTX, {})
    assert after_impl != before  # the class's own module, not the one the spec names
    (user_package / "base.py").write_text("from sklearn.linear_model import Ridge\n\n\nclass Base(Ridge):\n"
                                          "    changed = True\n")
    assert FitCache.context_digest("mypkg.api:Reg", CTX, {}) not in (before, after_impl)  # the user's base class


def test_a_pipeline_holding_a_users_step_is_keyed_by_that_steps_source(user_package):
    """A pickled scikit-learn pipeline is an installed class: the user's transformer inside it was not hashed, so
    an edited step was served from old fits."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline

    from mlma.training import _user_class_files

    (user_package / "step.py").write_text("from sklearn.base import BaseEstimator, TransformerMixin\n\n\n"
                                          "class Shift(BaseEstimator, TransformerMixin):\n"
                                          "    def fit(self, X, y=None):\n        return self\n\n"
                                          "    def transform(self, X):\n        return X\n")
    from mypkg.step import Shift

    files = _user_class_files(Pipeline([("shift", Shift()), ("ridge", Ridge())]))
    assert files == [(user_package / "step.py").resolve()]


def test_a_built_in_model_with_options_imports_no_module_of_that_name(tmp_path, monkeypatch):
    """'ridge:alpha=2' is mlma's ridge with an option: the key imported a module called ridge, running a local
    ridge.py (a notebook's folder is on sys.path)."""
    from mlma.training import _model_code_digest, _spec_object

    (tmp_path / "ridge.py").write_text(f"open({str(tmp_path / 'ran.txt')!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _spec_object("ridge:alpha=2") is None and _spec_object("Seasonal_Naive:season_length=7") is None
    _model_code_digest("ridge:alpha=2")
    assert not (tmp_path / "ran.txt").exists()


def test_only_the_users_sources_of_a_model_class_are_hashed(user_package):
    from mlma.training import _spec_object, _user_class_files

    # Not scikit-learn's Ridge and its bases (an installed package) nor object (built in): hashing them would
    # read much of site-packages for nothing, as the library versions are in the key already.
    assert _user_class_files(_spec_object("mypkg.api:Reg:alpha=2")) == [(user_package / "impl.py").resolve(),
                                                                       (user_package / "base.py").resolve()]
    assert _user_class_files(_spec_object("sklearn:linear_model.Ridge")) == []
