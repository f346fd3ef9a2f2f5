"""Tests of the self-contained HTML backtest report (mlma.report)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlma.report import policy_colors, render_report, write_report

POLICIES = ("never", "periodic:7", "always", "mlma", "adwin", "page-hinkley")


@dataclass
class FakeResult:
    """Stands in for the backtest's result: the report must only rely on these attributes."""

    summary: list[dict]
    per_stream: pd.DataFrame | None
    per_tick: pd.DataFrame | None
    forecasts: pd.DataFrame | None
    retrain_log: pd.DataFrame | None
    events: pd.DataFrame | None
    config: dict = field(default_factory=dict)


def make_result(
    policies: tuple[str, ...] = POLICIES,
    n_streams: int = 12,
    n_ticks: int = 20,
    n_samples: int = 3,
    steps_per_tick: int = 24,
    with_events: bool = True,
    seed: int = 0,
) -> FakeResult:
    """A plausible backtest result: hourly data, daily ticks, policies with different costs."""
    rng = np.random.default_rng(seed)
    stream_ids = [f"zone-{i:03d}" for i in range(n_streams)]
    start = pd.Timestamp("2024-01-01")
    tick_starts = pd.date_range(start, periods=n_ticks, freq="D")
    retrain_prob = {"never": 0.0, "always": 1.0, "periodic:7": 1 / 7}

    summary, per_stream, per_tick, logs, forecasts = [], [], [], [], []
    for k, policy in enumerate(policies):
        p = retrain_prob.get(policy, 0.05 + 0.02 * k)
        retrained = rng.random((n_ticks, n_streams)) < p
        mae_ticks = 2.0 + 0.1 * k + 0.2 * rng.standard_normal(n_ticks)
        monitors = policy not in retrain_prob
        per_tick.append(pd.DataFrame({
            "policy": policy, "tick": np.arange(n_ticks), "tick_start": tick_starts, "mae": mae_ticks,
            "n_scored": n_streams * steps_per_tick, "retrains": retrained.sum(axis=1),
            "compute_seconds": 0.01 * retrained.sum(axis=1),
            "n_degraded": rng.integers(0, 4, n_ticks).astype(float) if monitors else np.nan,
        }))
        mase = rng.lognormal(0.0, 0.3, n_streams)
        per_stream.append(pd.DataFrame({
            "policy": policy, "unique_id": stream_ids, "mae": mase * 2, "rmse": mase * 2.5, "mase": mase,
            "n_scored": n_ticks * steps_per_tick, "retrains": retrained.sum(axis=0),
            "compute_seconds": 0.01 * retrained.sum(axis=0),
        }))
        ticks, streams = np.nonzero(retrained)
        logs.append(pd.DataFrame({
            "policy": policy, "unique_id": np.asarray(stream_ids, dtype=object)[streams], "tick": ticks,
            "tick_start": tick_starts[ticks], "reason": "scheduled" if not monitors else "degraded",
        }))
        row = {
            "policy": policy, "mae": float(mae_ticks.mean()), "rmse": float(mae_ticks.mean() * 1.3),
            "mase": float(mase.mean()), "retrains": int(retrained.sum()),
            "compute_seconds": float(0.01 * retrained.sum()), "n_streams": n_streams,
            "n_scored": n_streams * n_ticks * steps_per_tick,
            "escalations": int(rng.integers(0, 5)) if monitors else None,
        }
        if with_events:
            row |= {"detection_precision": 0.5 + 0.05 * k if monitors else None,
                    "detection_recall": 0.4 + 0.05 * k if monitors else None,
                    "detection_delay_ticks": 2.0 - 0.1 * k if monitors else None}
        summary.append(row)
    ds = pd.date_range(start, periods=n_ticks * steps_per_tick, freq="h")
    for sid in stream_ids[:n_samples]:
        y = 10 + 3 * np.sin(np.arange(len(ds)) * 2 * np.pi / 24) + rng.standard_normal(len(ds))
        for policy in policies:
            forecasts.append(pd.DataFrame({"policy": policy, "unique_id": sid, "ds": ds, "y": y,
                                           "y_hat": y + rng.standard_normal(len(ds))}))
    events = None
    if with_events:
        events = pd.DataFrame({
            "event_id": [1, 2, 3],
            "kind": ["level_shift", "sensor_outage", "holiday"],
            "unique_id": [stream_ids[0], stream_ids[1 % n_streams], None],
            "start": [tick_starts[n_ticks // 3], tick_starts[n_ticks // 2], tick_starts[1]],
            "end": [pd.NaT, tick_starts[n_ticks // 2] + pd.Timedelta(hours=30), tick_starts[2]],
            "is_data_fault": [False, True, False],
            "relevant": [True, False, False],
            "description": ["demand +40 %", "counter stuck at 0", "public holiday"],
        })
    return FakeResult(
        summary=summary,
        per_stream=pd.concat(per_stream, ignore_index=True),
        per_tick=pd.concat(per_tick, ignore_index=True),
        forecasts=pd.concat(forecasts, ignore_index=True) if forecasts else None,
        retrain_log=pd.concat(logs, ignore_index=True),
        events=events,
        config={"title": "Backtest of a delivery platform", "data": "simulate", "n_streams": n_streams,
                "freq": "h", "tick": "1D", "horizon": 24, "model": "seasonal-naive",
                "policies": list(policies), "seed": seed},
    )


# ----------------------------------------------------------------------------------------------------------
# helpers

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class PageParser(HTMLParser):
    """Checks that tags nest and close, and collects what the tests look at."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.ids: list[str] = []
        self.results_rows: list[list[tuple[str, str]]] = []  # (cell class, text)
        self.results_header: list[str] = []
        self.figcaptions: list[str] = []
        self._in_results = False
        self._cell: list[str] | None = None
        self._cell_class = ""
        self._in_caption = False
        self._caption: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "table" and "results" in (attrs.get("class") or ""):
            self._in_results = True
        if self._in_results and tag == "tr":
            self.results_rows.append([])
        if self._in_results and tag in ("td", "th"):
            self._cell, self._cell_class = [], attrs.get("class") or ""
        if tag == "figcaption":
            self._in_caption, self._caption = True, []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "id" in attrs:
            self.ids.append(attrs["id"])

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}>, open: {self.stack[-3:]}")
            return
        self.stack.pop()
        if tag == "table":
            self._in_results = False
        if self._in_results and tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).strip()
            if tag == "th" and len(self.results_rows) == 1:
                self.results_header.append(text)
            else:
                self.results_rows[-1].append((self._cell_class, text))
            self._cell = None
        if tag == "figcaption":
            self._in_caption = False
            self.figcaptions.append("".join(self._caption))

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_caption:
            self._caption.append(data)


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    parser.close()
    assert not parser.errors, parser.errors[:5]
    assert parser.stack == [], parser.stack
    return parser


def results_table(parser: PageParser) -> dict[str, dict[str, tuple[str, str]]]:
    """policy -> column header -> (cell class, text)."""
    rows = [r for r in parser.results_rows if r]
    return {row[0][1]: dict(zip(parser.results_header[1:], row[1:], strict=True)) for row in rows}


def figure_count(parser: PageParser) -> int:
    figures = [a for t, a in parser.tags if t == "figure" and "plot" in (a.get("class") or "")]
    svgs = [t for t, _ in parser.tags if t == "svg"]
    assert len(figures) == len(svgs), "every figure holds exactly one inline SVG"
    return len(figures)


def render(result, tmp_path: Path, name: str = "report.html", **kwargs) -> tuple[str, PageParser]:
    path = write_report(result, tmp_path / name, **kwargs)
    assert path == tmp_path / name and path.is_file()
    page = path.read_text(encoding="utf-8")
    return page, parse(page)


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> tuple[FakeResult, str, PageParser]:
    result = make_result()
    page, parser = render(result, tmp_path_factory.mktemp("full"))
    return result, page, parser


# ----------------------------------------------------------------------------------------------------------
# the full report


def test_page_is_well_formed_html_with_title(full):
    result, page, parser = full
    assert page.startswith("<!DOCTYPE html>")
    titles = [t for t, _ in parser.tags if t == "title"]
    assert titles == ["title"]
    assert f"<title>{result.config['title']}</title>" in page
    assert f"<h1>{result.config['title']}</h1>" in page


def test_results_table_has_one_row_per_policy_with_the_metrics(full):
    result, _, parser = full
    table = results_table(parser)
    assert list(table) == [row["policy"] for row in result.summary]
    for header in ("MAE", "RMSE", "MASE", "re-trainings", "compute (s)", "escalations",
                   "detection precision", "detection recall", "detection delay (ticks)"):
        assert header in parser.results_header
    for row in result.summary:
        cells = table[row["policy"]]
        assert float(cells["MAE"][1]) == pytest.approx(row["mae"], abs=5e-4)
        assert float(cells["RMSE"][1]) == pytest.approx(row["rmse"], abs=5e-4)
        assert float(cells["MASE"][1]) == pytest.approx(row["mase"], abs=5e-4)
        assert int(cells["re-trainings"][1].replace(",", "")) == row["retrains"]
        if row["escalations"] is None:
            assert cells["escalations"] == ("na", "–")


def test_mae_is_shown_relative_to_always(full):
    result, _, parser = full
    table = results_table(parser)
    always = next(r for r in result.summary if r["policy"] == "always")
    for row in result.summary:
        rel = float(table[row["policy"]]["MAE / always"][1])
        assert rel == pytest.approx(row["mae"] / always["mae"], abs=5e-4)
    assert float(table["always"]["re-trainings / always"][1]) == 1.0


@pytest.mark.parametrize(("header", "key", "best"), [
    ("MAE", "mae", min), ("MASE", "mase", min), ("re-trainings", "retrains", min),
    ("detection precision", "detection_precision", max),
    ("detection delay (ticks)", "detection_delay_ticks", min),
])
def test_best_value_per_metric_is_highlighted(full, header, key, best):
    result, _, parser = full
    table = results_table(parser)
    values = {r["policy"]: r[key] for r in result.summary if r.get(key) is not None}
    winner = best(values, key=values.get)
    highlighted = [p for p, cells in table.items() if "best" in cells[header][0].split()]
    assert highlighted == [winner]


def test_escalations_and_counts_are_not_ranked(full):
    _, _, parser = full
    for cells in results_table(parser).values():
        for header in ("escalations", "streams", "forecasts scored"):
            assert "best" not in cells[header][0]


def test_no_external_resources(full):
    _, page, parser = full
    for tag, attrs in parser.tags:
        for name, value in attrs.items():
            if name in ("src", "href", "xlink:href", "action", "poster", "data") and value:
                assert not re.match(r"\s*(https?:)?//", value), (tag, name, value)
                if name != "href" or tag != "a":
                    assert value.startswith("#") or value.startswith("data:"), (tag, name, value)
    assert {t for t, _ in parser.tags}.isdisjoint({"script", "link", "iframe", "img", "object", "embed"})
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", page)
    assert "@import" not in page and "@font-face" not in page
    assert not re.search(r"(src|href)\s*=\s*['\"]?\s*(https?:)?//", page)


def test_expected_figures(full):
    result, _, parser = full
    n_samples = result.forecasts["unique_id"].nunique()
    # cost/accuracy, MAE per tick, re-trainings per tick, degraded per tick, MASE box + one per sample.
    assert figure_count(parser) == 5 + n_samples
    figure_ids = [a["id"] for t, a in parser.tags if t == "figure"]
    assert figure_ids[:5] == ["fig-cost-accuracy", "fig-mae-per-tick", "fig-retrains-per-tick",
                              "fig-degraded-per-tick", "fig-mase-per-stream"]


def test_ids_are_unique_across_inline_svgs(full):
    _, _, parser = full
    duplicated = {i for i in parser.ids if parser.ids.count(i) > 1}
    assert not duplicated


def test_policies_keep_their_colour_in_table_and_plots(full):
    result, page, parser = full
    colors = policy_colors(r["policy"] for r in result.summary)
    assert len(set(colors.values())) == len(colors)
    swatches = [a["style"] for t, a in parser.tags if t == "span" and a.get("class") == "swatch"]
    assert swatches == [f"background:{colors[r['policy']]}" for r in result.summary]
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.DOTALL)
    mae_per_tick, mase_box, first_sample = svgs[1], svgs[4], svgs[5]
    for color in colors.values():
        for svg in (mae_per_tick, mase_box, first_sample):
            assert color in svg


def test_every_policy_name_appears_in_plots(full):
    result, page, _ = full
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.DOTALL)
    for row in result.summary:
        assert f">{row['policy']}<" in svgs[0]  # cost/accuracy label
        assert f">{row['policy']}<" in svgs[1]  # legend


def test_sample_streams_shade_their_events_only(full):
    result, page, parser = full
    captions = {c.split(":")[0]: c for c in parser.figcaptions if c.startswith("Stream ")}
    assert set(captions) == {f"Stream {sid}" for sid in result.forecasts["unique_id"].unique()}
    # zone-000 has its own level shift plus the fleet-wide holiday; zone-002 only the holiday.
    assert "shaded: 2 ground-truth event(s)" in captions["Stream zone-000"]
    assert "shaded: 1 ground-truth event(s)" in captions["Stream zone-002"]
    assert "Ground-truth events" in page and "sensor_outage" in page
    assert ">data fault<" in page and ">relevant change<" in page


def test_rendering_is_deterministic(full):
    result, page, _ = full
    assert render_report(result) == page


# ----------------------------------------------------------------------------------------------------------
# edge cases


def test_one_policy_only(tmp_path):
    result = make_result(policies=("mlma",), n_samples=1)
    page, parser = render(result, tmp_path)
    table = results_table(parser)
    assert list(table) == ["mlma"]
    assert "MAE / always" not in parser.results_header
    # No highlight when there is nothing to compare with.
    assert not any("best" in cls for cells in table.values() for cls, _ in cells.values())
    assert figure_count(parser) == 5 + 1


def test_one_policy_without_monitoring_has_no_degraded_plot(tmp_path):
    page, parser = render(make_result(policies=("never",), n_samples=1), tmp_path)
    assert "fig-degraded-per-tick" not in parser.ids
    assert figure_count(parser) == 4 + 1


@pytest.mark.parametrize("empty", [None, "empty-frame", "missing"])
def test_no_forecast_sample(tmp_path, empty):
    result = make_result(n_samples=0)
    if empty == "empty-frame":
        result = replace(result, forecasts=pd.DataFrame(columns=["policy", "unique_id", "ds", "y", "y_hat"]))
    if empty == "missing":
        # Duck typing: an object without the attribute at all.
        class Bare:
            pass

        bare = Bare()
        for name in ("summary", "per_stream", "per_tick", "retrain_log", "events", "config"):
            setattr(bare, name, getattr(result, name))
        result = bare
    page, parser = render(result, tmp_path)
    assert figure_count(parser) == 5
    assert "The result holds no sample forecasts." in page


def test_no_events(tmp_path):
    result = make_result(with_events=False, n_samples=2)
    page, parser = render(result, tmp_path)
    assert result.events is None
    assert "events" not in parser.ids
    assert "detection precision" not in parser.results_header
    assert ">data fault<" not in page and ">relevant change<" not in page
    assert figure_count(parser) == 5 + 2


def test_nan_metrics(tmp_path):
    result = make_result(n_samples=1)
    result.summary[3]["mae"] = float("nan")
    result.summary[1]["mase"] = None
    result.summary[0]["rmse"] = np.nan
    per_stream = result.per_stream.copy()
    per_stream.loc[per_stream["policy"] == "adwin", "mase"] = np.nan
    per_stream.loc[per_stream.index[:3], "mase"] = np.inf
    per_tick = result.per_tick.copy()
    per_tick.loc[per_tick.index[::5], "mae"] = np.nan
    forecasts = result.forecasts.copy()
    forecasts.loc[forecasts.index[10:40], "y_hat"] = np.nan
    result = replace(result, per_stream=per_stream, per_tick=per_tick, forecasts=forecasts)
    page, parser = render(result, tmp_path)
    table = results_table(parser)
    assert table["mlma"]["MAE"] == ("na", "–")
    assert table["mlma"]["MAE / always"] == ("na", "–")
    assert table["periodic:7"]["MASE"] == ("na", "–")
    finite_mae = {r["policy"]: r["mae"] for r in result.summary if np.isfinite(r["mae"])}
    winner = min(finite_mae, key=finite_mae.get)
    assert [p for p, c in table.items() if "best" in c["MAE"][0]] == [winner]
    assert "(no data)" in page  # adwin's MASE box is empty but labelled
    assert figure_count(parser) == 5 + 1


def test_all_metrics_nan(tmp_path):
    summary = [{"policy": p, "mae": np.nan, "rmse": None, "mase": np.nan, "retrains": 0,
                "compute_seconds": 0.0, "n_streams": 0, "n_scored": 0} for p in ("never", "always")]
    result = FakeResult(summary=summary, per_stream=None, per_tick=None, forecasts=None, retrain_log=None,
                        events=None, config={})
    page, parser = render(result, tmp_path)
    assert list(results_table(parser)) == ["never", "always"]
    assert "MAE" not in parser.results_header  # a column with no value anywhere is left out
    assert figure_count(parser) == 1  # the cost/accuracy frame, with a note on what is missing
    assert "no MAE or re-trainings: never, always" in page
    assert "<title>mlma backtest report</title>" in page


def test_names_are_escaped(tmp_path):
    evil_policy = '<script>alert("p")</script>'
    evil_stream = "<script>alert('s')</script>&"
    result = make_result(policies=("always", evil_policy), n_streams=3, n_samples=0)
    for frame in (result.per_stream, result.retrain_log):
        frame.loc[frame["unique_id"] == "zone-000", "unique_id"] = evil_stream
    forecasts = pd.DataFrame({
        "policy": [evil_policy, "always"] * 24, "unique_id": evil_stream,
        "ds": np.repeat(pd.date_range("2024-01-01", periods=24, freq="h"), 2),
        "y": np.arange(48.0), "y_hat": np.arange(48.0) + 1,
    })
    events = result.events.assign(unique_id=[evil_stream, None, None],
                                  description=["<b>bold</b>", "$x$ & y", "<img src=http://x>"])
    result = replace(result, forecasts=forecasts, events=events,
                     config={**result.config, "title": "<script>t</script>", "model": "<i>m</i>"})
    page, parser = render(result, tmp_path)
    assert "<script" not in page.lower()
    assert "<b>" not in page and "<i>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&quot;p&quot;)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(&#x27;s&#x27;)&lt;/script&gt;&amp;" in page
    assert list(results_table(parser)) == ["always", evil_policy]
    assert {t for t, _ in parser.tags}.isdisjoint({"script", "b", "i", "img"})
    assert figure_count(parser) == 5 + 1  # the unnamed policy monitors, so it has a degraded plot


def test_long_series_are_downsampled(tmp_path):
    # One sample stream with 60 days of minutely data: 86,400 points per line before thinning.
    n = 60 * 24 * 60
    ds = pd.date_range("2024-01-01", periods=n, freq="min")
    rng = np.random.default_rng(3)
    y = rng.standard_normal(n)
    y[n // 3] = 50.0  # a spike the thinning must keep
    result = make_result(policies=("never", "mlma"), n_streams=2, n_samples=0)
    forecasts = pd.DataFrame({"policy": np.repeat(["never", "mlma"], n), "unique_id": "s",
                              "ds": np.tile(ds, 2), "y": np.tile(y, 2), "y_hat": np.tile(y, 2) * 0.9})
    result = replace(result, forecasts=forecasts)
    small, _ = render(result, tmp_path, "small.html", max_points=200)
    large, _ = render(result, tmp_path, "large.html", max_points=2000)
    assert len(small) < len(large) < 2_000_000
    assert len(large) - len(small) > 100_000
    # The one spike of 50 survives thinning to 200 points: the y axis still reaches it.
    sample_svg = re.findall(r"<svg.*?</svg>", small, flags=re.DOTALL)[-1]
    assert ">40<" in sample_svg and ">50<" in sample_svg


def test_report_for_300_streams_builds_quickly(tmp_path):
    result = make_result(n_streams=300, n_ticks=90, n_samples=6)
    start = time.perf_counter()
    page, parser = render(result, tmp_path)
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0, f"report took {elapsed:.1f} s"
    assert len(page.encode()) < 4_000_000
    assert figure_count(parser) == 5 + 6


def test_max_sample_streams_limits_the_plots(tmp_path):
    page, parser = render(make_result(n_samples=4), tmp_path, max_sample_streams=2)
    assert figure_count(parser) == 5 + 2
    assert "2 more sample stream(s)" in page


# ----------------------------------------------------------------------------------------------------------
# inputs and helpers


def test_invalid_inputs_are_rejected_with_helpful_messages(tmp_path):
    with pytest.raises(TypeError, match="summary"):
        write_report(object(), tmp_path / "r.html")
    with pytest.raises(ValueError, match=r"summary\[1\]"):
        render_report(FakeResult([{"policy": "a"}, {"mae": 1.0}], None, None, None, None, None))
    result = make_result(n_samples=0)
    with pytest.raises(ValueError, match="max_points"):
        render_report(result, max_points=3)
    with pytest.raises(ValueError, match="max_points"):
        render_report(result, max_points=500.0)
    assert render_report(result, max_points=np.int64(500)) == render_report(result, max_points=500)
    with pytest.raises(ValueError, match="max_sample_streams"):
        render_report(result, max_sample_streams=-1)
    with pytest.raises(ValueError, match=r"per_tick lacks column\(s\) \['tick'\]"):
        render_report(replace(result, per_tick=result.per_tick.drop(columns="tick")))
    with pytest.raises(TypeError, match="per_stream"):
        render_report(replace(result, per_stream=[1, 2]))
    with pytest.raises(TypeError, match="path"):
        write_report(result, 42)


def test_write_report_creates_parent_directories(tmp_path):
    path = write_report(make_result(n_samples=0, policies=("never",)), tmp_path / "a" / "b" / "r.html")
    assert path.is_file()


def test_policy_colors_are_stable_and_distinct():
    names = ["mlma", "always", "periodic:7", "periodic:1", *[f"custom-{i}" for i in range(20)]]
    colors = policy_colors(names)
    assert colors == policy_colors(names)
    assert len(set(colors.values())) == 22  # beyond that the palette has to repeat
    # A policy's colour does not depend on which other policies take part.
    assert policy_colors(["mlma"])["mlma"] == policy_colors(["never", "adwin", "mlma"])["mlma"]
    assert policy_colors(["periodic:30"])["periodic:30"] == colors["periodic:7"]


def test_downsample_keeps_extremes_and_order():
    from mlma.report import _downsample

    rng = np.random.default_rng(1)
    for n, max_points in [(50_000, 300), (1001, 1000), (777, 50)]:
        x = np.arange(n)
        y = rng.standard_cauchy(n)
        y[rng.integers(0, n, 20)] = np.nan
        xs, ys = _downsample(x, y, max_points)
        assert len(xs) <= max_points + 2 + np.isnan(y).sum()
        assert np.all(np.diff(xs) > 0)
        assert np.nanmax(ys) == np.nanmax(y) and np.nanmin(ys) == np.nanmin(y)
        assert xs[0] == 0 and xs[-1] == n - 1
        np.testing.assert_array_equal(ys, y[xs])


def test_ticks_without_timestamps_and_retrain_times_taken_from_ticks(tmp_path):
    result = make_result(policies=("always", "mlma"), n_samples=1)
    # The log knows only tick numbers: re-training times come from per_tick's tick_start.
    log_without_times = result.retrain_log.drop(columns="tick_start")
    page, parser = render(replace(result, retrain_log=log_without_times), tmp_path, "from-ticks.html")
    assert "markers underneath: re-trainings per policy" in parser.figcaptions[-1]
    # Without any timestamps the fleet plots fall back to tick numbers and the markers are left out.
    bare = replace(result, per_tick=result.per_tick.drop(columns="tick_start"),
                   retrain_log=result.retrain_log.drop(columns="tick_start"))
    page, parser = render(bare, tmp_path, "bare.html")
    assert figure_count(parser) == 5 + 1
    assert ">tick<" in re.findall(r"<svg.*?</svg>", page, flags=re.DOTALL)[1]
    assert "markers underneath" not in parser.figcaptions[-1]


def test_dollar_signs_in_names_are_shown_literally(tmp_path):
    page, _ = render(make_result(policies=("cost$5", "mlma$x$"), n_samples=1), tmp_path)
    svgs = "".join(re.findall(r"<svg.*?</svg>", page, flags=re.DOTALL))
    assert ">cost$5<" in svgs and ">mlma$x$<" in svgs


def test_summary_may_be_a_data_frame(tmp_path):
    result = make_result(n_samples=0)
    page, parser = render(replace(result, summary=pd.DataFrame(result.summary)), tmp_path)
    assert list(results_table(parser)) == [r["policy"] for r in result.summary]


def test_instant_events_are_drawn_as_lines_and_listed(tmp_path):
    result = make_result(policies=("never", "mlma"), n_samples=1)
    moment = result.forecasts["ds"].iloc[100]
    events = pd.DataFrame({"event_id": [7], "kind": ["level_shift"], "unique_id": ["zone-000"],
                           "start": [moment], "end": [moment], "is_data_fault": [False], "relevant": [True],
                           "permanent": [True], "description": ["orders x1.3 from here on"]})
    page, parser = render(replace(result, events=events), tmp_path)
    sample_svg = re.findall(r"<svg.*?</svg>", page, flags=re.DOTALL)[-1]
    assert "#c98a00" in sample_svg  # the dashed change-point line
    assert "orders x1.3 from here on (relevant, permanent)" in page
    # Outside the plotted window an instant event is not drawn.
    late = events.assign(start=moment + pd.Timedelta(days=400), end=moment + pd.Timedelta(days=400))
    page, _ = render(replace(result, events=late), tmp_path, "late.html")
    assert "#c98a00" not in re.findall(r"<svg.*?</svg>", page, flags=re.DOTALL)[-1]


def test_escalations_are_counted_per_kind_and_policy(tmp_path):
    result = make_result()
    result.escalation_log = pd.DataFrame({
        "policy": ["mlma", "mlma", "mlma", "never"],
        "unique_id": ["zone-001", "zone-002", "zone-001", "zone-003"],
        "kind": ["data-quality", "data-quality", "challenger-lost", "<script>x</script>"],
    })
    page, parser = render(result, tmp_path)
    assert 'id="escalations"' in page
    section = page[page.index('id="escalations"'):]
    section = section[:section.index("</table>")]
    headers = re.findall(r"<th>([^<]+)</th>", section)
    cells = dict(re.findall(r'<tr><td class="text">([^<]+)</td>((?:<td>[^<]*</td>)+)</tr>', section))
    counts = {kind: dict(zip(headers, map(int, re.findall(r"<td>(\d+)</td>", row)))) for kind, row in cells.items()}
    assert counts["data-quality"]["mlma"] == 2 and counts["data-quality"]["never"] == 0
    assert counts["challenger-lost"]["mlma"] == 1
    assert "<script>x" not in page and "&lt;script&gt;x" in page


def test_frontier_figure_with_sweeps_and_schedules_kept_out_of_the_other_sections(tmp_path):
    from mlma.backtest import BacktestConfig, run_backtest

    rng = np.random.default_rng(4)
    ds = pd.date_range("2025-03-03", periods=24 * 24, freq="h")
    frame = pd.concat([pd.DataFrame({"unique_id": f"s{i}", "ds": ds,
                                     "y": 10 * (1 + np.sin(np.arange(len(ds)) * 2 * np.pi / 24))
                                     + rng.normal(0, 2, len(ds)) + (8.0 if i % 2 else 0.0) * (ds >= ds[300])})
                       for i in range(12)], ignore_index=True)
    config = BacktestConfig(policies=["page-hinkley:threshold=3", "page-hinkley:threshold=30", "periodic:4:sync"],
                            model="ridge", initial_ticks=10, sample_streams=2, frontier=[2, 4], bootstrap=100)
    result = run_backtest(frame, config)
    page = render_report(result)
    figure_ids = re.findall(r'<figure class="plot" id="([^"]+)"', page)
    assert figure_ids[0] == "fig-frontier" and "fig-cost-accuracy" not in figure_ids
    frontier_svg = page[page.index('id="fig-frontier"'):].split("</figure>")[0]
    for name in ("never", "periodic:2", "periodic:4", "always", "periodic:4:sync"):
        assert f">{name}<" in frontier_svg
    # The two Page-Hinkley settings are one sweep in one colour: the legend names it, the points their settings.
    assert ">page-hinkley<" in frontier_svg
    assert ">threshold=3<" in frontier_svg and ">threshold=30<" in frontier_svg
    assert policy_colors(["page-hinkley"])["page-hinkley"] in frontier_svg
    # The added schedules are in the frontier figure only: the table and the other plots show what was asked.
    table = page[page.index('<table class="results"'):].split("</table>")[0]
    assert table.count("<tr>") == 1 + 3 and ">never<" not in table
    rows = {r["policy"]: r for r in result.summary}
    gap = rows["periodic:4:sync"]
    assert f"{gap['gap_pct']:+.2f} [{gap['gap_low']:+.2f}, {gap['gap_high']:+.2f}]" in table
    mae_svg = page[page.index('id="fig-mae-per-tick"'):].split("</figure>")[0]
    assert ">always<" not in mae_svg and ">periodic:4:sync<" in mae_svg


def test_without_gaps_the_plain_cost_accuracy_plot_stays(tmp_path):
    result = make_result(policies=("never", "mlma"), n_samples=0)
    page = render_report(result)
    assert 'id="fig-cost-accuracy"' in page and 'id="fig-frontier"' not in page


def events_table(page: str) -> dict[str, list[str]]:
    """The ground-truth events table: kind -> its cells, by the column headers."""
    section = page[page.index('id="events"'):]
    table = section[:section.index("</table>")]
    head = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", table)
    rows = re.findall(r"<tr>(<td.*?)</tr>", table)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]
    return {row[0]: dict(zip(head, row)) for row in cells}


def test_the_events_table_counts_events_not_the_rows_of_each_stream_they_hit(tmp_path):
    result = make_result(policies=("never", "mlma"), n_samples=1)
    start = result.forecasts["ds"].iloc[50]
    # The simulator writes an event once per stream it hits: a city's storm over five zones is five rows.
    events = pd.DataFrame({
        "event_id": [0, 0, 0, 0, 0, 4, 4, 5, 6, 9],
        "kind": ["storm"] * 5 + ["level_shift"] * 2 + ["outage_zeros"] * 2 + ["holiday"],
        "unique_id": [f"zone-00{i}" for i in range(5)] + ["zone-000", "zone-001", "zone-002", "zone-003", None],
        "start": start, "end": start + pd.Timedelta(hours=6),
        "is_data_fault": [False] * 7 + [True, True, False],
        "relevant": [False] * 5 + [True, True, False, False, False],
    })
    page, _ = render(replace(result, events=events), tmp_path)
    table = events_table(page)
    assert table["storm"] == {"kind": "storm", "events": "1", "stream rows": "5", "streams hit": "5",
                              "fleet-wide": "0", "relevant": "0", "data faults": "0"}
    assert (table["level_shift"]["events"], table["level_shift"]["relevant"]) == ("1", "1")
    assert (table["outage_zeros"]["events"], table["outage_zeros"]["data faults"]) == ("2", "2")
    assert (table["holiday"]["events"], table["holiday"]["fleet-wide"]) == ("1", "1")
