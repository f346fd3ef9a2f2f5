"""Self-contained HTML report of a backtest.

A backtest replays history through several re-training policies (``never``, ``periodic:7``, ``always``,
``mlma``, drift-detector baselines such as ``adwin`` or ``page-hinkley``) and measures what each one costs
(re-trainings, compute) and what it buys (forecast error). :func:`write_report` turns the result of such a
run into one HTML file that can be mailed, attached to a ticket or opened from a laptop without a network:

* the title and the run's configuration;
* the results table, one row per policy, with the best value of each metric highlighted and, when the
  ``always`` policy took part, MAE and re-trainings relative to it;
* the cost/accuracy trade-off against the schedule frontier (x: re-trainings on a log(1 + x) axis, y: MAE):
  the frontier of ``never``, staggered ``periodic:K`` and ``always`` as a curve, each policy a point with its
  gap's 95 % interval, several settings of one policy (a sweep) joined as a curve; without gaps in the
  summary, a plain scatter of re-trainings against MAE. Schedules the backtest added only for the frontier
  (``frontier_only``) appear in this plot only;
* MAE per tick, re-trainings per tick and, for policies that monitor, the number of streams flagged as
  degraded per tick;
* the distribution of per-stream MASE per policy (box plot);
* for each sample stream: actuals and every policy's forecasts over time, the re-trainings of each policy
  as a strip of markers underneath and, for simulated data, the ground-truth events shaded.

The file has no external resource at all: the plots are inline SVG drawn by matplotlib (text kept as
text, so the file stays small and searchable), the CSS is inline and uses the system font stack. Each
policy keeps its colour in every plot (see :func:`policy_colors`). Long series are thinned with a min/max
envelope before plotting so that spikes survive and the file stays a few megabytes at most. All text that
comes from data (policy names, stream ids, config values, event descriptions) is HTML-escaped.

The ``result`` argument is duck-typed: any object with the attributes below works (the backtest's own
result class, a dataclass in a test, a ``types.SimpleNamespace``). Only ``summary`` is required; a missing
attribute, ``None`` or an empty frame drops the sections that need it.

=============== =======================================================================================
attribute       content
=============== =======================================================================================
``summary``     list of dicts, one per policy: ``policy``, ``mae``, ``rmse``, ``mase``, ``retrains``,
                ``compute_seconds``, ``n_streams``, ``n_scored``; optionally ``escalations``,
                ``detection_precision``, ``detection_recall``, ``detection_delay_ticks``, ``gap_pct``,
                ``gap_low``, ``gap_high``, ``frontier_only``
``per_stream``  frame: ``policy, unique_id, mae, rmse, mase, n_scored, retrains, compute_seconds``
``per_tick``    frame: ``policy, tick, tick_start, mae, n_scored, retrains, compute_seconds, n_degraded``
``forecasts``   frame: ``policy, unique_id, ds, y, y_hat`` for a handful of sample streams
``retrain_log`` frame: ``policy, unique_id, tick, tick_start, reason``
``events``      frame of ground-truth events (simulated data) or ``None``: ``event_id, kind, unique_id,
                start, end, is_data_fault, relevant, description``; a missing ``unique_id`` means the
                event hits every stream
``config``      dict of run settings; ``config["title"]`` becomes the page title
=============== =======================================================================================

Examples
--------
>>> import tempfile, types
>>> from pathlib import Path
>>> result = types.SimpleNamespace(summary=[
...     {"policy": "always", "mae": 2.0, "rmse": 2.5, "mase": 0.9, "retrains": 90, "compute_seconds": 4.0,
...      "n_streams": 3, "n_scored": 270},
...     {"policy": "mlma", "mae": 2.1, "rmse": 2.6, "mase": 0.95, "retrains": 6, "compute_seconds": 0.5,
...      "n_streams": 3, "n_scored": 270}], config={"title": "demo"})
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = write_report(result, Path(tmp) / "report.html")
...     page = path.read_text(encoding="utf-8")
>>> "<title>demo</title>" in page and "mlma" in page
True
>>> "http://" in page.split("<body>")[0]  # nothing fetched by the page head
False
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

__all__ = ["policy_colors", "render_report", "write_report"]

#: Colours of the policies mlma ships, by the part of the name before ":". Colour-blind friendly enough
#: (tab10) and stable: the same policy has the same colour in every report.
_NAMED_COLORS: dict[str, str] = {
    "mlma": "#1f77b4",
    "always": "#d62728",
    "never": "#7f7f7f",
    "periodic": "#ff7f0e",
    "adwin": "#2ca02c",
    "page-hinkley": "#9467bd",
}
_SPARE_COLORS: tuple[str, ...] = (
    "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
    "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5", "#393b79", "#637939", "#8c6d31",
)

# Rendering settings: text stays text in the SVG (small, searchable, no embedded glyphs), and ids are
# derived from a fixed salt so the same input gives the same file.
_RC: dict[str, Any] = {
    "svg.fonttype": "none",
    "svg.image_inline": True,
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "text.usetex": False,
}
# None drops matplotlib's Dublin Core block, which carries a date (not reproducible) and URLs.
_SVG_METADATA: dict[str, None] = {"Creator": None, "Date": None, "Format": None, "Type": None}

_FIGSIZE = (9.0, 3.4)

# matplotlib 3.10 replaced boxplot's `vert` with `orientation` (and deprecates `vert`).
_HORIZONTAL: dict[str, Any] = (
    {"orientation": "horizontal"}
    if tuple(int(p) for p in re.findall(r"\d+", matplotlib.__version__)[:2]) >= (3, 10)
    else {"vert": False}
)

# (key, header, kind, better): kind picks the number format, better = "lower" | "higher" | None.
_TABLE_COLUMNS: tuple[tuple[str, str, str, str | None], ...] = (
    ("mae", "MAE", "float", "lower"),
    ("rel_mae", "MAE / always", "ratio", "lower"),
    ("rmse", "RMSE", "float", "lower"),
    ("mase", "MASE", "float", "lower"),
    ("retrains", "re-trainings", "int", "lower"),
    ("rel_retrains", "re-trainings / always", "ratio", "lower"),
    ("compute_seconds", "compute (s)", "float", "lower"),
    ("gap_pct", "gap to frontier, % of always [95% CI]", "gap", "lower"),
    ("escalations", "escalations", "int", None),
    ("escalations_per_1k_stream_days", "escalations / 1,000 stream-days", "float", "lower"),
    ("data_escalations_per_1k_stream_days", "of them about data", "float", None),
    ("retraining_escalations_per_1k_stream_days", "of them about re-training", "float", "lower"),
    ("escalation_precision", "escalation precision", "float", "higher"),
    ("queue_items_per_1k_stream_days", "queue items / 1,000 stream-days", "float", "lower"),
    ("queue_item_precision", "queue item precision", "float", "higher"),
    ("detection_precision", "detection precision", "float", "higher"),
    ("detection_recall", "detection recall", "float", "higher"),
    ("detection_delay_ticks", "detection delay (ticks)", "float", "lower"),
    ("n_streams", "streams", "int", None),
    ("n_scored", "forecasts scored", "int", None),
)

_CSS = """
:root { --fg: #1d2430; --muted: #5b6575; --line: #d9dee6; --best: #dff3e4; --bg-alt: #f6f8fb; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.2em; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.0em; margin: 20px 0 6px; }
p.lead, p.note, figcaption { color: var(--muted); }
p.note, figcaption { font-size: 0.88em; }
nav { font-size: 0.9em; margin: 8px 0 0; }
nav a { margin-right: 14px; color: #1f5fa8; text-decoration: none; }
table { border-collapse: collapse; font-size: 0.88em; margin: 6px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { background: var(--bg-alt); font-weight: 600; vertical-align: bottom; }
td.text, th.text { text-align: left; white-space: normal; }
td.best { background: var(--best); font-weight: 600; }
td.na { color: #a0a8b5; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.scroll { overflow-x: auto; }
table.config td, table.config th { text-align: left; white-space: normal; }
figure { margin: 18px 0; }
figure svg { display: block; max-width: 100%; height: auto; }
"""


# ----------------------------------------------------------------------------------------------------------
# public API


def policy_colors(policies: Iterable[str]) -> dict[str, str]:
    """Give each policy a colour that is the same in every plot and every report.

    Policies that mlma knows (``mlma``, ``always``, ``never``, ``periodic:*``, ``adwin``,
    ``page-hinkley``) have fixed colours; a second policy of the same family (``periodic:1`` next to
    ``periodic:7``) and unknown policies take the next unused spare colour, in the given order.

    Parameters
    ----------
    policies
        Policy names, in the order they should claim colours.

    Returns
    -------
    dict
        Hex colour per policy name.

    Examples
    --------
    >>> colors = policy_colors(["never", "periodic:7", "periodic:1", "mlma", "mine"])
    >>> colors["mlma"], colors["periodic:7"]
    ('#1f77b4', '#ff7f0e')
    >>> len(set(colors.values()))
    5
    """
    colors: dict[str, str] = {}
    used: set[str] = set()
    pending: list[str] = []
    for name in policies:
        if name in colors or name in pending:
            continue
        family = str(name).split(":", 1)[0].strip().lower()
        color = _NAMED_COLORS.get(family)
        if color is not None and color not in used:
            colors[name] = color
            used.add(color)
        else:
            pending.append(name)
    spares = [c for c in (*_SPARE_COLORS, *_NAMED_COLORS.values()) if c not in used]
    for i, name in enumerate(pending):
        colors[name] = spares[i] if i < len(spares) else _SPARE_COLORS[i % len(_SPARE_COLORS)]
    return colors


def write_report(
    result: Any,
    path: str | Path,
    *,
    max_points: int = 1000,
    max_sample_streams: int = 8,
) -> Path:
    """Write the backtest report as one self-contained HTML file.

    Parameters
    ----------
    result
        A backtest result: any object with a ``summary`` attribute and, optionally, ``per_stream``,
        ``per_tick``, ``forecasts``, ``retrain_log``, ``events`` and ``config`` (see the module
        docstring for their columns).
    path
        Where to write; parent directories are created.
    max_points
        Most points drawn per line (and re-training markers per policy row) in a plot; longer series are
        thinned with a min/max envelope so peaks stay visible and the file stays small.
    max_sample_streams
        Most sample streams drawn, in the order they appear in ``result.forecasts``.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a str or pathlib.Path, got {type(path).__name__}: {path!r}")
    page = render_report(result, max_points=max_points, max_sample_streams=max_sample_streams)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def render_report(result: Any, *, max_points: int = 1000, max_sample_streams: int = 8) -> str:
    """Build the HTML of the backtest report (what :func:`write_report` writes).

    Parameters are those of :func:`write_report`.

    Returns
    -------
    str
        A complete HTML5 document.

    Examples
    --------
    >>> import types
    >>> page = render_report(types.SimpleNamespace(summary=[{"policy": "never", "mae": float("nan")}]))
    >>> page.startswith("<!DOCTYPE html>") and "never" in page
    True
    """
    if not _is_whole(max_points) or max_points < 10:
        raise ValueError(f"max_points must be a whole number >= 10, got {max_points!r}")
    if not _is_whole(max_sample_streams) or max_sample_streams < 0:
        raise ValueError(f"max_sample_streams must be a whole number >= 0, got {max_sample_streams!r}")
    max_points, max_sample_streams = int(max_points), int(max_sample_streams)

    all_rows = _summary_frame(result)
    summary = _asked_for(all_rows)
    config = _config_dict(result)
    shown = set(summary["policy"])
    per_stream = _only(_optional_frame(result, "per_stream", ("policy", "mase")), shown)
    per_tick = _only(_optional_frame(result, "per_tick", ("policy", "tick")), shown)
    forecasts = _only(_optional_frame(result, "forecasts", ("policy", "unique_id", "ds", "y", "y_hat")), shown)
    retrain_log = _only(_optional_frame(result, "retrain_log", ("policy", "unique_id")), shown)
    events = _optional_frame(result, "events", ("start",))

    policies = _policy_order(summary, per_tick, per_stream, forecasts)
    colors = policy_colors(policies)
    title = str(config.get("title") or "mlma backtest report")

    figures = _FigureCounter()
    sections: list[str] = []
    nav: list[tuple[str, str]] = []

    sections.append(_section("config", "Configuration", _config_html(config)))
    nav.append(("config", "Configuration"))
    sections.append(_section("results", "Results", _results_html(summary, colors)))
    nav.append(("results", "Results"))

    fleet_parts: list[str] = []
    frontier_figure = figures.render(
        "frontier", _frontier_figure, (all_rows, colors, getattr(result, "clairvoyant", None)),
        "Cost and accuracy against the schedule frontier: MAE per policy at its total re-trainings, on a "
        "log(1 + re-trainings) axis. Grey line: the frontier, the best of never, staggered periodic:K and "
        "always at each cost (hollow grey: schedules beaten at no more re-trainings). Bars: the 95 % bootstrap "
        "interval of the policy's gap to the frontier, drawn around its MAE. Several settings of one policy "
        "are joined in a line (a sweep). Below the frontier is better than any schedule at that cost. Dashed: "
        "the clairvoyant bound, each stream's schedule chosen in hindsight (what is left on the table; no "
        "policy can know the future).",
    )
    fleet_parts.append(frontier_figure or figures.render(
        "cost-accuracy", _cost_accuracy_figure, (summary, colors),
        "Cost and accuracy: total re-trainings against MAE, one point per policy. Down and to the left "
        "is better.",
    ))
    if per_tick is not None:
        x_col = _time_column(per_tick, "tick_start", "tick")
        if "mae" in per_tick:
            fleet_parts.append(figures.render(
                "mae-per-tick", _per_tick_figure,
                (per_tick, x_col, "mae", "MAE", policies, colors, max_points),
                "Fleet MAE per tick: the forecasts scored in each tick, per policy.",
            ))
        if "retrains" in per_tick:
            fleet_parts.append(figures.render(
                "retrains-per-tick", _per_tick_figure,
                (per_tick, x_col, "retrains", "re-trainings", policies, colors, max_points),
                "Re-trainings per tick, per policy (symmetric log scale when the policies differ by orders "
                "of magnitude).",
            ))
        if "n_degraded" in per_tick and _has_finite(per_tick["n_degraded"]):
            fleet_parts.append(figures.render(
                "degraded-per-tick", _per_tick_figure,
                (per_tick, x_col, "n_degraded", "streams flagged degraded", policies, colors, max_points),
                "Streams whose loss the monitor flagged as degraded per tick (policies that monitor only).",
            ))
    if per_stream is not None:
        fleet_parts.append(figures.render(
            "mase-per-stream", _mase_box_figure, (per_stream, policies, colors),
            "Per-stream MASE per policy: box = quartiles, line = median, whiskers = 1.5 IQR, dots = streams "
            "beyond; dashed: MASE 1, the error of the naive benchmark MASE is scaled by.",
        ))
    fleet_parts = [p for p in fleet_parts if p]
    if fleet_parts:
        sections.append(_section("fleet", "Fleet over time", "".join(fleet_parts)))
        nav.append(("fleet", "Fleet over time"))

    escalations = _optional_frame(result, "escalation_log", ("policy", "kind"))
    if escalations is not None:
        sections.append(_section("escalations", "Escalations", _escalations_html(escalations, policies)))
        nav.append(("escalations", "Escalations"))

    if events is not None:
        sections.append(_section("events", "Ground-truth events", _events_html(events)))
        nav.append(("events", "Ground-truth events"))

    sample_parts: list[str] = []
    if forecasts is not None:
        stream_ids = list(pd.unique(forecasts["unique_id"]))
        shown = stream_ids[:max_sample_streams]
        sample_parts.extend(
            _sample_stream_html(sid, forecasts, retrain_log, events, per_tick, policies, colors, max_points,
                                figures)
            for sid in shown
        )
        if len(stream_ids) > len(shown):
            sample_parts.append(
                f'<p class="note">{len(stream_ids) - len(shown)} more sample stream(s) in the result are not '
                f"drawn (max_sample_streams={max_sample_streams}).</p>"
            )
    if not sample_parts:
        sample_parts.append('<p class="note">The result holds no sample forecasts.</p>')
    sections.append(_section("samples", "Sample streams", "".join(sample_parts)))
    nav.append(("samples", "Sample streams"))

    return _page(title, _lead_line(summary, per_tick, config), nav, sections)


# ----------------------------------------------------------------------------------------------------------
# inputs


def _is_whole(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _summary_frame(result: Any) -> pd.DataFrame:
    if not hasattr(result, "summary"):
        raise TypeError(f"result must have a 'summary' attribute (list of dicts per policy), "
                        f"got {type(result).__name__}")
    summary = result.summary
    if isinstance(summary, pd.DataFrame):
        rows = summary.to_dict("records")
    elif isinstance(summary, Sequence) and not isinstance(summary, (str, bytes)):
        rows = list(summary)
    else:
        raise TypeError(f"result.summary must be a list of dicts, got {type(summary).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or "policy" not in row:
            raise ValueError(f"result.summary[{i}] must be a dict with a 'policy' key, got {row!r}")
    frame = pd.DataFrame([dict(row) for row in rows])
    if frame.empty:
        frame = pd.DataFrame({"policy": pd.Series([], dtype=object)})
    frame["policy"] = frame["policy"].astype(str)
    return frame


def _config_dict(result: Any) -> dict[str, Any]:
    config = getattr(result, "config", None)
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise TypeError(f"result.config must be a dict, got {type(config).__name__}")
    return dict(config)


def _optional_frame(result: Any, name: str, required: tuple[str, ...]) -> pd.DataFrame | None:
    frame = getattr(result, name, None)
    if frame is None:
        return None
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"result.{name} must be a pandas DataFrame or None, got {type(frame).__name__}")
    if frame.empty:
        return None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"result.{name} lacks column(s) {missing}; it has {list(frame.columns)}")
    if "policy" in frame.columns:
        frame = frame.assign(policy=frame["policy"].astype(str))
    if "unique_id" in frame.columns and name != "events":
        frame = frame.assign(unique_id=frame["unique_id"].astype(str))
    return frame


def _asked_for(summary: pd.DataFrame) -> pd.DataFrame:
    """The policies asked for: without the schedules a backtest added only to draw the frontier."""
    if "frontier_only" not in summary:
        return summary
    added = summary["frontier_only"].fillna(False).astype(bool)
    return summary[~added].reset_index(drop=True)


def _only(frame: pd.DataFrame | None, policies: set[str]) -> pd.DataFrame | None:
    if frame is None or "policy" not in frame:
        return frame
    kept = frame[frame["policy"].isin(policies)]
    return kept if len(kept) else None


def _policy_order(summary: pd.DataFrame, *frames: pd.DataFrame | None) -> list[str]:
    order = list(dict.fromkeys(summary["policy"]))
    for frame in frames:
        if frame is not None:
            order.extend(p for p in pd.unique(frame["policy"]) if p not in order)
    return order


def _has_finite(values: Any) -> bool:
    arr = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    return bool(np.isfinite(arr).any())


def _time_column(frame: pd.DataFrame, preferred: str, fallback: str) -> str:
    if preferred in frame and frame[preferred].notna().any():
        return preferred
    return fallback


# ----------------------------------------------------------------------------------------------------------
# HTML pieces


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, lead: str, nav: list[tuple[str, str]], sections: list[str]) -> str:
    from mlma import __version__

    links = "".join(f'<a href="#{_esc(anchor)}">{_esc(label)}</a>' for anchor, label in nav)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{_esc(title)}</h1>\n<p class=\"lead\">{lead}</p>\n<nav>{links}</nav>\n"
        + "\n".join(sections)
        + f'\n<p class="note">Generated by mlma {_esc(__version__)}.</p>\n</main>\n</body>\n</html>\n'
    )


def _section(anchor: str, heading: str, body: str) -> str:
    return f'<section id="{_esc(anchor)}">\n<h2>{_esc(heading)}</h2>\n{body}\n</section>'


def _lead_line(summary: pd.DataFrame, per_tick: pd.DataFrame | None, config: Mapping[str, Any]) -> str:
    parts = [f"{len(summary)} polic{'y' if len(summary) == 1 else 'ies'}"]
    n_streams = config.get("n_streams")
    if n_streams is None and "n_streams" in summary and _has_finite(summary["n_streams"]):
        n_streams = int(np.nanmax(pd.to_numeric(summary["n_streams"], errors="coerce")))
    if n_streams is not None:
        parts.append(f"{n_streams} streams")
    if per_tick is not None and "tick" in per_tick:
        parts.append(f"{per_tick['tick'].nunique()} ticks")
    for key in ("data", "source", "freq", "model"):
        if config.get(key) not in (None, ""):
            parts.append(f"{key} {config[key]}")
    return _esc(" · ".join(str(p) for p in parts))


def _as_float(value: Any) -> float:
    if value is None or isinstance(value, (str, bytes)):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _format_number(value: float, kind: str) -> str:
    if not math.isfinite(value):
        return "–"
    if kind == "int" and float(value).is_integer():
        return f"{int(value):,}"
    if kind == "ratio":
        return f"{value:.3f}"
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.2f}"
    if magnitude >= 0.001:
        return f"{value:.3f}"
    return f"{value:.2e}"


def _results_html(summary: pd.DataFrame, colors: Mapping[str, str]) -> str:
    if summary.empty:
        return '<p class="note">The result holds no policies.</p>'
    table = summary.copy()
    policies = list(table["policy"])
    values: dict[str, np.ndarray] = {
        key: np.array([_as_float(v) for v in table[key]], dtype=float)
        for key, *_ in _TABLE_COLUMNS if key in table
    }
    notes: list[str] = []
    if "always" in policies:
        ref = policies.index("always")
        for base in ("mae", "retrains"):
            if base in values and math.isfinite(values[base][ref]) and values[base][ref] > 0:
                values[f"rel_{base}"] = values[base] / values[base][ref]
        notes.append("“/ always” columns divide by the value of the policy that re-trains every stream "
                     "every tick.")
    # A column only earns its place if some policy has a value in it (detection metrics exist for
    # simulated data only, escalations for monitoring policies only).
    columns = [c for c in _TABLE_COLUMNS if c[0] in values and np.isfinite(values[c[0]]).any()]
    best: dict[str, np.ndarray] = {}
    for key, _, _, better in columns:
        v = values[key]
        finite = np.isfinite(v)
        if better is None or finite.sum() < 2:
            continue
        target = np.nanmin(v) if better == "lower" else np.nanmax(v)
        best[key] = finite & np.isclose(v, target, rtol=1e-9, atol=0.0)

    head = '<th class="text">policy</th>' + "".join(f"<th>{_esc(h)}</th>" for _, h, _, _ in columns)
    body_rows: list[str] = []
    for i, policy in enumerate(policies):
        swatch = f'<span class="swatch" style="background:{colors.get(policy, "#000")}"></span>'
        cells = [f'<td class="text">{swatch}{_esc(policy)}</td>']
        for key, _, kind, _ in columns:
            v = values[key][i]
            classes = []
            if key in best and best[key][i]:
                classes.append("best")
            if not math.isfinite(v):
                classes.append("na")
            cls = f' class="{" ".join(classes)}"' if classes else ""
            text = _format_number(v, kind)
            if kind == "gap" and math.isfinite(v):
                low, high = (_as_float(table[c].iloc[i]) if c in table else math.nan
                             for c in ("gap_low", "gap_high"))
                text = f"{v:+.2f}" + (f" [{low:+.2f}, {high:+.2f}]" if math.isfinite(low + high) else "")
            cells.append(f"<td{cls}>{_esc(text)}</td>")
        body_rows.append("<tr>" + "".join(cells) + "</tr>")
    notes.insert(0, "Highlighted: the best value of each column (lowest, except detection precision and "
                    "recall: highest). “–”: not available.")
    if "escalations_per_1k_stream_days" in values and np.isfinite(values["escalations_per_1k_stream_days"]).any():
        notes.append("Escalations per 1,000 stream-days of scored data, split into those about the data (silent "
                     "stream, broken actuals, a new stream that cannot get its model) and those about the agent's "
                     "own re-training (repeated triggers, lost challengers, failed fits, budget): the labour to "
                     "cut. Escalation precision "
                     "(simulated data): the share whose stream had an event a person must act on (data fault, "
                     "closure, launch) in the 7 ticks before. Queue items: the escalations as the engineer's "
                     "queue shows them, one item per kind, tick and group of streams (the attribute the backtest "
                     "grouped by, city for the simulator; without one, per kind and tick); an item's precision is "
                     "its escalations' share, averaged over items.")
    if "gap_pct" in values and np.isfinite(values["gap_pct"]).any():
        notes.append("Gap: the policy's MAE minus the schedule frontier's at the policy's own number of "
                     "re-trainings, in % of always's MAE; negative beats every schedule at that cost. In "
                     "brackets its 95 % bootstrap interval over streams; an interval covering 0 is no evidence "
                     "either way.")
    return (
        f'<div class="scroll"><table class="results"><thead><tr>{head}</tr></thead>'
        f'<tbody>{"".join(body_rows)}</tbody></table></div>'
        + "".join(f'<p class="note">{_esc(n)}</p>' for n in notes)
    )


def _config_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_config_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(_config_value(v) for v in value)
    return str(value)


def _config_html(config: Mapping[str, Any]) -> str:
    rows = [(k, v) for k, v in config.items() if k != "title"]
    if not rows:
        return '<p class="note">No configuration recorded.</p>'
    body = "".join(f'<tr><th>{_esc(k)}</th><td>{_esc(_config_value(v))}</td></tr>' for k, v in rows)
    return f'<table class="config"><tbody>{body}</tbody></table>'


def _escalations_html(escalations: pd.DataFrame, policies: Sequence[str]) -> str:
    """Counts of the engineer's queue items per kind (rows) and policy (columns)."""
    counts = pd.crosstab(escalations["kind"].astype(str), escalations["policy"].astype(str))
    columns = [p for p in policies if p in counts.columns] + [p for p in counts.columns if p not in policies]
    head = '<th class="text">kind</th>' + "".join(f"<th>{_esc(p)}</th>" for p in columns)
    rows = "".join(
        f'<tr><td class="text">{_esc(kind)}</td>'
        + "".join(f"<td>{int(counts.loc[kind, p]):,}</td>" for p in columns) + "</tr>"
        for kind in counts.index
    )
    return (
        f'<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
        '<p class="note">What each policy put in front of a person: data-quality problems, silent streams, '
        "new streams on a fall-back model, challengers that lost, streams that keep degrading, budget "
        "overflow. The full list with messages is in <code>escalations.csv</code>.</p>"
    )


def _events_html(events: pd.DataFrame) -> str:
    frame = events.copy()
    kind = frame["kind"].astype(str) if "kind" in frame else pd.Series("event", index=frame.index)
    fault = _bool_column(frame, "is_data_fault")
    relevant = _bool_column(frame, "relevant")
    if "unique_id" in frame:
        fleet_wide = frame["unique_id"].isna()
        streams = frame["unique_id"].where(~fleet_wide).astype(object)
    else:
        fleet_wide = pd.Series(True, index=frame.index)
        streams = pd.Series(None, index=frame.index, dtype=object)
    # The simulator writes one row per (event, stream): a city's storm is one event over many rows. Events are
    # counted by event_id; a row without one is an event of its own.
    row_label = pd.Series([f"row {i}" for i in range(len(frame))], index=frame.index, dtype=object)
    event = frame["event_id"].astype(object).where(frame["event_id"].notna(), row_label) \
        if "event_id" in frame else row_label
    grouped = pd.DataFrame({"kind": kind, "fault": fault, "relevant": relevant, "fleet": fleet_wide,
                            "stream": streams, "event": event}).groupby("kind", sort=True)
    rows = []
    for name, g in grouped:
        rows.append(
            f'<tr><td class="text">{_esc(name)}</td><td>{g["event"].nunique():,}</td><td>{len(g):,}</td>'
            f'<td>{g["stream"].nunique():,}</td><td>{g.loc[g["fleet"], "event"].nunique():,}</td>'
            f'<td>{g.loc[g["relevant"], "event"].nunique():,}</td><td>{g.loc[g["fault"], "event"].nunique():,}</td>'
            "</tr>"
        )
    head = ('<th class="text">kind</th><th>events</th><th>stream rows</th><th>streams hit</th>'
            "<th>fleet-wide</th><th>relevant</th><th>data faults</th>")
    return (
        f'<table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        '<p class="note">Events are counted once however many streams they hit (stream rows: one per event and '
        "stream in the events file). Relevant events change the data so that re-training should help; data "
        "faults should be escalated to a person rather than trained on. Sample stream plots shade the events "
        "that hit them.</p>"
    )


def _bool_column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame:
        return pd.Series(False, index=frame.index)
    return frame[name].astype(object).where(frame[name].notna(), False).astype(bool)


# ----------------------------------------------------------------------------------------------------------
# figures


class _FigureCounter:
    """Renders figures to inline SVG, numbered so that their ids never clash in one page."""

    def __init__(self) -> None:
        self.count = 0

    def render(self, anchor: str, builder: Any, args: tuple, caption: str) -> str:
        with matplotlib.rc_context({**_RC, "svg.hashsalt": f"mlma-report-{self.count}"}):
            fig = builder(*args)
            if fig is None:
                return ""
            buffer = io.StringIO()
            fig.savefig(buffer, format="svg", metadata=_SVG_METADATA)
        svg = _clean_svg(buffer.getvalue(), f"f{self.count}-")
        self.count += 1
        return (f'<figure class="plot" id="fig-{_esc(anchor)}">{svg}'
                f"<figcaption>{_esc(caption)}</figcaption></figure>")


_SVG_COMMENT = re.compile(r"<!--.*?-->\s*", re.DOTALL)
_SVG_TAG = re.compile(r"<[^<>]+>")
_SVG_ID_REF = re.compile(r'(\bid="|href="#|url\(#)')


def _clean_svg(svg: str, prefix: str) -> str:
    """Make matplotlib's SVG document fit inline in a page that holds several of them.

    The XML prolog and DOCTYPE are dropped (not allowed inside HTML), comments (they only repeat the
    text) too, and every id and reference to one gets ``prefix`` so that the figures' ids
    (``line2d_1``, clip paths, markers) do not clash. Text content cannot be touched by mistake:
    matplotlib escapes ``<`` and ``>`` in it, so the tag pattern only matches real tags.

    Examples
    --------
    >>> _clean_svg('<?xml version="1.0"?><svg><!-- a --><g id="g1" clip-path="url(#p1)">'
    ...            '<use xlink:href="#m1"/><text>id="x"</text></g></svg>', "f0-")
    '<svg><g id="f0-g1" clip-path="url(#f0-p1)"><use xlink:href="#f0-m1"/><text>id="x"</text></g></svg>'
    """
    svg = svg[svg.index("<svg"):]
    svg = _SVG_COMMENT.sub("", svg)
    return _SVG_TAG.sub(lambda tag: _SVG_ID_REF.sub(lambda m: m.group(1) + prefix, tag.group(0)), svg)


def _mpl_text(value: Any) -> str:
    # matplotlib reads $...$ as mathtext; names from data must show literally.
    return str(value).replace("$", r"\$")


def _new_figure(height: float = _FIGSIZE[1]) -> Figure:
    return Figure(figsize=(_FIGSIZE[0], height), layout="constrained")


def _downsample(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Thin a series to about ``max_points`` points, keeping each bucket's minimum and maximum.

    Equal-count buckets over the (sorted) points; for each bucket the first index of its minimum and of
    its maximum survive, as do buckets that hold only NaN (so gaps stay gaps) and both end points.

    Examples
    --------
    >>> y = np.zeros(10_000); y[4321] = 5.0
    >>> xs, ys = _downsample(np.arange(10_000), y, 100)
    >>> len(ys) <= 102, 5.0 in ys, xs[0], xs[-1]
    (True, True, np.int64(0), np.int64(9999))
    """
    n = len(y)
    if n <= max_points:
        return x, y
    n_buckets = max(max_points // 2, 1)
    starts = np.unique(np.linspace(0, n, n_buckets, endpoint=False).astype(np.int64))
    bucket = np.searchsorted(starts, np.arange(n), side="right") - 1
    values = np.asarray(y, dtype=float)
    keep = [np.array([0, n - 1])]
    with np.errstate(invalid="ignore"):
        for reducer in (np.fmin, np.fmax):
            extreme = reducer.reduceat(values, starts)
            hits = np.flatnonzero(values == extreme[bucket])
            _, first = np.unique(bucket[hits], return_index=True)
            keep.append(hits[first])
    all_nan = np.isnan(np.fmin.reduceat(values, starts))
    keep.append(starts[all_nan])
    idx = np.unique(np.concatenate(keep))
    return x[idx], y[idx]


def _thin_positions(positions: np.ndarray, max_points: int) -> np.ndarray:
    """Keep one marker per 1/max_points of the range: closer markers would overlap on screen anyway."""
    if len(positions) <= max_points:
        return positions
    lo, hi = positions.min(), positions.max()
    if hi <= lo:
        return positions[:1]
    bins = np.floor((positions - lo) / (hi - lo) * (max_points - 1))
    _, first = np.unique(bins, return_index=True)
    return positions[np.sort(first)]


def _x_values(series: pd.Series) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(series):
        return series.to_numpy(dtype="datetime64[ns]")
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)


def _legend(fig: Figure, handles: list, labels: list[str]) -> None:
    if not handles:
        return
    # As many columns as fit across the figure (estimated from label lengths at 8 pt), so that short
    # legends take one row and long ones wrap instead of running off the edge.
    width_pt, ncols, used = _FIGSIZE[0] * 72 - 40, 0, 0.0
    for label in labels:
        used += 4.4 * len(label) + 30
        if used > width_pt and ncols:
            break
        ncols += 1
    fig.legend(handles, labels, loc="outside upper center", ncols=ncols, fontsize=8, handlelength=1.6,
               columnspacing=1.2)


def _wide_range(maxima: Iterable[float]) -> bool:
    """Whether positive maxima differ by more than ~30x, so that a linear axis would flatten the small."""
    positive = [m for m in maxima if math.isfinite(m) and m > 0]
    return len(positive) >= 2 and max(positive) / max(min(positive), 1.0) > 30


def _cost_accuracy_figure(summary: pd.DataFrame, colors: Mapping[str, str]) -> Figure | None:
    if "mae" not in summary or "retrains" not in summary:
        return None
    x = np.array([_as_float(v) for v in summary["retrains"]])
    y = np.array([_as_float(v) for v in summary["mae"]])
    ok = np.isfinite(x) & np.isfinite(y)
    fig = _new_figure(3.6)
    ax = fig.subplots()
    for policy, xi, yi, good in zip(summary["policy"], x, y, ok, strict=True):
        if not good:
            continue
        ax.scatter([xi], [yi], s=46, color=colors[policy], zorder=3, edgecolor="white", linewidth=0.8)
        ax.annotate(_mpl_text(policy), (xi, yi), xytext=(6, 4), textcoords="offset points", fontsize=8.5,
                    color=colors[policy])
    missing = [p for p, good in zip(summary["policy"], ok, strict=True) if not good]
    if missing:
        ax.text(0.99, 0.02, _mpl_text("no MAE or re-trainings: " + ", ".join(missing)),
                transform=ax.transAxes,
                ha="right", va="bottom", fontsize=7.5, color="#5b6575")
    if ok.any() and _wide_range([v for v in x[ok]] + [1.0]):
        ax.set_xscale("symlog", linthresh=1.0)
    if ok.any():
        ax.margins(x=0.12, y=0.15)
    ax.set_xlabel("re-trainings (total)")
    ax.set_ylabel("MAE")
    return fig


def _frontier_figure(summary: pd.DataFrame, colors: Mapping[str, str], clairvoyant: Any = None) -> Figure | None:
    """MAE against re-trainings on log(1 + x): the schedule frontier as a curve, each policy a point with its
    gap interval, sweeps of one policy as lines. ``None`` when the summary has no gaps (no frontier)."""
    from mlma.evaluation import frontier_points, is_schedule

    if "gap_pct" not in summary or not _has_finite(summary["gap_pct"]):
        return None
    rows = summary.assign(x=[_as_float(v) for v in summary["retrains"]], y=[_as_float(v) for v in summary["mae"]])
    rows = rows[np.isfinite(rows["x"]) & np.isfinite(rows["y"])]
    # Boolean masks, not lists: an empty list would select no columns (a run whose MAE is not finite).
    schedules = rows[np.array([is_schedule(p) for p in rows["policy"]], dtype=bool)]
    if schedules.empty:
        return None
    fx, fy = frontier_points(schedules["x"], schedules["y"])
    fig = _new_figure(4.2)
    ax = fig.subplots()
    ax.set_xscale("function", functions=(np.log1p, np.expm1))
    grey = "#8a93a3"
    ax.plot(np.expm1(fx), fy, color=grey, linewidth=1.6, zorder=2, label="schedule frontier")
    if clairvoyant:
        oracle = pd.DataFrame(list(clairvoyant))
        ax.plot(oracle["retrains"], oracle["mae"], color=grey, linewidth=1.0, linestyle="--", zorder=2)
        ax.annotate("clairvoyant", (oracle["retrains"].iloc[-1], oracle["mae"].iloc[-1]), xytext=(4, -10),
                    textcoords="offset points", fontsize=7, color=grey)
    on_line = set(zip(np.round(np.expm1(fx)).astype(int), fy))
    for _, row in schedules.iterrows():
        dominated = (int(round(row["x"])), row["y"]) not in on_line
        ax.scatter([row["x"]], [row["y"]], s=22, zorder=3, color="white" if dominated else grey, edgecolor=grey)
        ax.annotate(_mpl_text(row["policy"]), (row["x"], row["y"]), xytext=(4, -10), textcoords="offset points",
                    fontsize=7, color=grey)
    always = rows.loc[rows["policy"] == "always", "y"]
    scale = float(always.iloc[0]) / 100 if len(always) else math.nan
    others = rows[np.array([not is_schedule(p) for p in rows["policy"]], dtype=bool)]
    handles, labels = [], []
    for family, members in others.groupby(others["policy"].str.split(":").str[0], sort=False):
        color = colors.get(members["policy"].iloc[0], "#000")  # one colour per family: a sweep reads as a curve
        sweep = len(members) >= 2
        if sweep:
            line = members.sort_values("x")
            ax.plot(line["x"], line["y"], color=color, linewidth=1.0, alpha=0.7, zorder=3)
        for _, row in members.iterrows():
            gap, low, high = (_as_float(row.get(k)) for k in ("gap_pct", "gap_low", "gap_high"))
            if math.isfinite(gap + low + high + scale):
                # The interval drawn from its ends, not as offsets from the point: a percentile interval of a
                # few bootstrap replicates may leave the point outside it (errorbar refused negative offsets,
                # and the report, with every output, was lost).
                ends = [row["y"] + (low - gap) * scale, row["y"] + (high - gap) * scale]
                ax.plot([row["x"]] * 2, ends, color=color, linewidth=1.0, zorder=4, marker="_", markersize=8)
            point = ax.scatter([row["x"]], [row["y"]], s=40, color=color, zorder=5, edgecolor="white",
                               linewidth=0.8)
            # In a sweep the legend names the policy and each point its setting.
            name, _, setting = row["policy"].partition(":")
            label = (setting or "default") if sweep else row["policy"]
            ax.annotate(_mpl_text(label), (row["x"], row["y"]), xytext=(5, 4), textcoords="offset points",
                        fontsize=7.5, color=color)
        handles.append(point)
        labels.append(_mpl_text(family))
    if handles:
        ax.legend(handles, labels, loc="upper right", fontsize=8)
    ax.set_xlim(left=0)
    ax.margins(x=0.08, y=0.12)
    top = max(float(rows["x"].max()), 1.0)
    ticks = [t for t in (0, 1, 3, 10, 30, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000,
                         3_000_000, 10_000_000) if t <= top * 1.5]
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
    ax.set_xlabel("re-trainings (total), log(1 + x) scale")
    ax.set_ylabel("MAE")
    return fig


def _per_tick_figure(
    per_tick: pd.DataFrame,
    x_col: str,
    y_col: str,
    label: str,
    policies: Sequence[str],
    colors: Mapping[str, str],
    max_points: int,
) -> Figure | None:
    frame = per_tick.sort_values(["policy", x_col], kind="stable")
    groups = dict(tuple(frame.groupby("policy", sort=False)))
    fig = _new_figure()
    ax = fig.subplots()
    handles, labels, maxima = [], [], []
    for policy in policies:
        group = groups.get(policy)
        if group is None:
            continue
        y = pd.to_numeric(group[y_col], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(y).any():
            continue
        xs, ys = _downsample(_x_values(group[x_col]), y, max_points)
        # Counts are per tick, so steps show them truthfully; MAE reads better as a line.
        (line,) = ax.plot(xs, ys, color=colors.get(policy, "#000"), linewidth=1.3,
                          drawstyle="default" if y_col == "mae" else "steps-mid")
        handles.append(line)
        labels.append(_mpl_text(policy))
        maxima.append(float(np.nanmax(y)))
    if not handles:
        return None
    _legend(fig, handles, labels)
    if y_col != "mae":
        if _wide_range(maxima):
            ax.set_yscale("symlog", linthresh=1.0)
        else:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(label)
    ax.set_xlabel("tick start" if x_col == "tick_start" else "tick")
    return fig


def _mase_box_figure(per_stream: pd.DataFrame, policies: Sequence[str], colors: Mapping[str, str]) -> Figure:
    present = [p for p in policies if p in set(per_stream["policy"])]
    data = []
    for policy in present:
        v = pd.to_numeric(per_stream.loc[per_stream["policy"] == policy, "mase"], errors="coerce")
        v = v.to_numpy(dtype=float)
        data.append(v[np.isfinite(v)])
    fig = _new_figure(max(2.6, 0.9 + 0.32 * len(present)))
    ax = fig.subplots()
    positions = np.arange(len(present))[::-1]  # first policy on top, like the table
    if any(len(d) for d in data):
        parts = ax.boxplot(data, positions=positions, widths=0.6, patch_artist=True, showfliers=True,
                           **_HORIZONTAL,
                           flierprops={"markersize": 2.5, "alpha": 0.5, "markeredgewidth": 0.5},
                           medianprops={"color": "black", "linewidth": 1.2})
        for patch, policy in zip(parts["boxes"], present, strict=True):
            patch.set_facecolor(colors.get(policy, "#000"))
            patch.set_alpha(0.55)
        for fliers, policy in zip(parts["fliers"], present, strict=True):
            fliers.set_markeredgecolor(colors.get(policy, "#000"))
        finite = np.concatenate([d for d in data if len(d)])
        if finite.min() > 0 and finite.max() / finite.min() > 50:
            ax.set_xscale("log")
        ax.axvline(1.0, color="#5b6575", linewidth=0.8, linestyle="--")
    else:
        ax.text(0.5, 0.5, "no finite per-stream MASE", transform=ax.transAxes, ha="center", va="center",
                color="#5b6575")
    ax.set_yticks(positions, [_mpl_text(p) + ("" if len(d) else " (no data)") for p, d in
                              zip(present, data, strict=True)])
    ax.set_ylim(-0.7, len(present) - 0.3)
    ax.set_xlabel("per-stream MASE")
    ax.grid(axis="y", visible=False)
    return fig


def _sample_stream_html(
    stream_id: str,
    forecasts: pd.DataFrame,
    retrain_log: pd.DataFrame | None,
    events: pd.DataFrame | None,
    per_tick: pd.DataFrame | None,
    policies: Sequence[str],
    colors: Mapping[str, str],
    max_points: int,
    figures: _FigureCounter,
) -> str:
    rows = forecasts[forecasts["unique_id"] == stream_id]
    retrains = None
    if retrain_log is not None:
        retrains = _retrain_times(retrain_log[retrain_log["unique_id"] == stream_id], per_tick)
    stream_events = _stream_events(events, stream_id)
    caption = f"Stream {stream_id}: actuals (black) and each policy's forecasts"
    if retrains is not None and not retrains.empty:
        caption += "; markers underneath: re-trainings per policy"
    if stream_events is not None:
        caption += f"; shaded: {len(stream_events)} ground-truth event(s)"
    figure = figures.render(f"stream-{figures.count}", _sample_stream_figure,
                            (rows, retrains, stream_events, policies, colors, max_points), caption + ".")
    listing = ""
    if stream_events is not None:
        items = []
        ordered = stream_events.sort_values("start", kind="stable", na_position="last",
                                             key=lambda c: pd.to_datetime(c, errors="coerce"))
        for _, event in ordered.head(12).iterrows():
            what = " · ".join(str(event[c]) for c in ("kind", "description")
                              if c in event and pd.notna(event[c]))
            flags = [f for f, c in (("data fault", "is_data_fault"), ("relevant", "relevant"),
                                    ("permanent", "permanent"))
                     if c in event and pd.notna(event[c]) and bool(event[c])]
            span = f"{_short_time(event['start'])} – {_short_time(event.get('end'))}"
            suffix = f" ({', '.join(flags)})" if flags else ""
            items.append(f"<li>{_esc(span)}: {_esc(what + suffix)}</li>")
        more = len(stream_events) - 12
        if more > 0:
            items.append(f"<li>… and {more} more</li>")
        listing = f'<ul class="note">{"".join(items)}</ul>'
    return f"<h3>{_esc(stream_id)}</h3>{figure}{listing}"


def _short_time(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "open"
    stamp = pd.Timestamp(value)
    return str(stamp.date()) if stamp == stamp.normalize() else str(stamp)


def _retrain_times(log: pd.DataFrame, per_tick: pd.DataFrame | None) -> pd.DataFrame | None:
    if log.empty:
        return None
    times = log["tick_start"] if "tick_start" in log else pd.Series(pd.NaT, index=log.index)
    times = pd.to_datetime(times, errors="coerce")
    if times.isna().any() and "tick" in log and per_tick is not None and "tick_start" in per_tick:
        lookup = per_tick.drop_duplicates("tick").set_index("tick")["tick_start"]
        times = times.fillna(pd.to_datetime(log["tick"].map(lookup), errors="coerce"))
    out = pd.DataFrame({"policy": log["policy"].to_numpy(), "time": times.to_numpy()}).dropna()
    return out if not out.empty else None


def _stream_events(events: pd.DataFrame | None, stream_id: str) -> pd.DataFrame | None:
    if events is None:
        return None
    if "unique_id" in events:
        hit = events["unique_id"].isna() | (events["unique_id"].astype(object).astype(str) == stream_id)
        events = events[hit]
    return events if not events.empty else None


def _sample_stream_figure(
    rows: pd.DataFrame,
    retrains: pd.DataFrame | None,
    events: pd.DataFrame | None,
    policies: Sequence[str],
    colors: Mapping[str, str],
    max_points: int,
) -> Figure:
    with_rug = retrains is not None
    rug_policies = [p for p in policies if with_rug and p in set(retrains["policy"])]
    fig = _new_figure(3.4 + (0.16 * len(rug_policies) + 0.3 if rug_policies else 0.0))
    if rug_policies:
        ax, rug = fig.subplots(2, 1, sharex=True,
                               height_ratios=[3.4, 0.16 * len(rug_policies) + 0.3])
    else:
        ax, rug = fig.subplots(), None

    rows = rows.assign(ds=pd.to_datetime(rows["ds"]))
    actuals = rows.groupby("ds", sort=True)["y"].first()
    handles, labels = [], []
    xs, ys = _downsample(actuals.index.to_numpy(), actuals.to_numpy(dtype=float), max_points)
    # Actuals on top of the forecasts: they are what every line is judged against.
    (line,) = ax.plot(xs, ys, color="black", linewidth=1.1, zorder=3)
    handles.append(line)
    labels.append("actuals")
    for policy in policies:
        sub = rows[rows["policy"] == policy]
        if sub.empty:
            continue
        # Several forecasts for one timestamp (overlapping horizons) are averaged: one line per policy.
        y_hat = pd.to_numeric(sub["y_hat"], errors="coerce").groupby(sub["ds"], sort=True).mean()
        xs, ys = _downsample(y_hat.index.to_numpy(), y_hat.to_numpy(dtype=float), max_points)
        (line,) = ax.plot(xs, ys, color=colors.get(policy, "#000"), linewidth=0.9, alpha=0.8, zorder=2)
        handles.append(line)
        labels.append(_mpl_text(policy))

    lo, hi = actuals.index.min(), actuals.index.max()
    if events is not None:
        handles_ev = _shade_events(ax, events, lo, hi)
        for label, handle in handles_ev.items():
            handles.append(handle)
            labels.append(label)

    if pd.notna(lo) and hi > lo:
        ax.set_xlim(lo, hi)
    if rug is not None:
        for row, policy in enumerate(rug_policies):
            times = retrains.loc[retrains["policy"] == policy, "time"].to_numpy(dtype="datetime64[ns]")
            # Only the re-trainings within the plotted window; the log covers the whole run.
            if pd.notna(lo):
                times = times[(times >= lo.to_datetime64()) & (times <= hi.to_datetime64())]
            times = np.sort(times)
            thinned = _thin_positions(times.astype(np.int64), max_points).astype("datetime64[ns]")
            level = len(rug_policies) - 1 - row
            rug.plot(thinned, np.full(len(thinned), level), linestyle="none", marker="|", markersize=7,
                     markeredgewidth=1.2, color=colors.get(policy, "#000"))
        rug.set_yticks(range(len(rug_policies))[::-1], [_mpl_text(p) for p in rug_policies], fontsize=7.5)
        rug.set_ylim(-0.6, len(rug_policies) - 0.4)
        rug.grid(axis="y", visible=False)
        rug.set_xlabel("time")
        rug.spines["left"].set_visible(False)
        rug.tick_params(axis="y", length=0)
        ax.tick_params(axis="x", labelbottom=False)
    else:
        ax.set_xlabel("time")
    ax.set_ylabel("y")
    _legend(fig, handles, labels)
    return fig


_EVENT_STYLES = {
    "data fault": {"facecolor": "#9aa3ad", "alpha": 0.28, "hatch": "///", "edgecolor": "#6b7480",
                   "linewidth": 0},
    "relevant change": {"facecolor": "#f2c14e", "alpha": 0.30, "linewidth": 0},
    "other event": {"facecolor": "#cfd5dc", "alpha": 0.35, "linewidth": 0},
}
# Events without duration (a permanent level shift takes effect at one instant) are drawn as lines, in a
# darker tone of their span colour so that they stand out against the data.
_EVENT_LINE_COLORS = {"data fault": "#6b7480", "relevant change": "#c98a00", "other event": "#9aa3ad"}


def _shade_events(ax: Any, events: pd.DataFrame, lo: pd.Timestamp, hi: pd.Timestamp) -> dict[str, Patch]:
    if pd.isna(lo) or pd.isna(hi):
        return {}
    starts = pd.to_datetime(events["start"], errors="coerce")
    ends = (pd.to_datetime(events["end"], errors="coerce") if "end" in events
            else pd.Series(pd.NaT, index=events.index))
    fault = _bool_column(events, "is_data_fault")
    relevant = _bool_column(events, "relevant")
    used: dict[str, Patch] = {}
    for start, end, is_fault, is_relevant in zip(starts, ends, fault, relevant, strict=True):
        if pd.isna(start):
            continue
        end = hi if pd.isna(end) else end
        start, end = max(start, lo), min(end, hi)
        if end < start:
            continue
        style = "data fault" if is_fault else "relevant change" if is_relevant else "other event"
        # A zero-length event (a spike at one timestamp) would be invisible as a span.
        if end == start:
            ax.axvline(start, color=_EVENT_LINE_COLORS[style], linewidth=1.6, linestyle="--", zorder=4)
        else:
            ax.axvspan(start, end, zorder=0, **_EVENT_STYLES[style])
        used.setdefault(style, Patch(label=style, **_EVENT_STYLES[style]))
    return used
