"""The dashboard's abnormal-period forms send the project's kind of data times, in a real browser.

An abnormal period's start and end are data times: where the project's data came with time zones they are kept
in UTC and the API requires an offset (mlma.params.data_time); where they came tz-naive it refuses one. The
forms sent the datetime-local value as typed, so a project with zoned data answered every period 422. The page
now reads ``time_zones`` from /api/abnormal-periods, labels the fields UTC or the data files' own clock, and
sends the typed time with ``Z`` (zoned) or as typed (naive). The browser runs in Berlin's time zone (UTC+1 in
January): the typed time is data time, never converted from the browser's wall clock.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from test_browser import browser, checked_page, log_in, serving  # noqa: F401  (browser: the module's chromium fixture)

STREAMS = ("z1", "z2")


def _project(folder: Path, ds_text) -> dict:
    """A store with two hourly streams ingested from a CSV file whose ds are written by ``ds_text`` (so that the
    project knows its kind of timestamps), served by uvicorn, with an operator's token."""
    from mlma.api import create_app, create_token
    from mlma.store import Store

    store = Store.create(f"sqlite:///{folder}/mlma.db")
    ds = list(pd.date_range("2025-01-01", periods=72, freq="h"))
    frame = pd.DataFrame({"unique_id": [STREAMS[0]] * 72 + [STREAMS[1]] * 72, "ds": [ds_text(d) for d in ds] * 2,
                          "y": [10.0 + i % 24 for i in range(144)]})
    frame.to_csv(folder / "actuals.csv", index=False)
    store.ingest_file(folder / "actuals.csv")
    token = create_token(store, "ana", "operator", by="user:root")[1]
    return {"store": store, "tokens": {"operator": token}, "app": create_app(store, artifacts=folder / "artifacts")}


@pytest.fixture(scope="module", params=["zoned", "naive"])
def site(request, tmp_path_factory):
    """A served project whose actuals came with UTC offsets (``Z`` and ``+00:00``), or tz-naive."""
    folder = tmp_path_factory.mktemp(f"browser-{request.param}")
    written = {"zoned": lambda d: d.strftime("%Y-%m-%dT%H:%M:%S") + ("Z" if d.hour % 2 else "+00:00"),
               "naive": lambda d: d.strftime("%Y-%m-%d %H:%M:%S")}[request.param]
    project = _project(folder, written)
    assert project["store"].time_zones() == request.param
    with serving(project.pop("app")) as url:
        yield {**project, "url": url, "kind": request.param}
    project["store"].close()


@pytest.fixture
def tab(browser):  # noqa: F811  (the imported fixture)
    """A page in a browser whose wall clock is Berlin's (UTC+1 in January), failing on a JavaScript error."""
    with checked_page(browser, timezone_id="Europe/Berlin") as page:
        yield page


def last_period(store) -> tuple:
    periods = store.abnormal_periods(active_only=False).sort_values("id")
    row = periods.iloc[-1]
    return row["unique_id"], pd.Timestamp(row["start"]), pd.Timestamp(row["end"])


def answer(tab) -> str:
    """The toast that answers the action, done or refused (a refusal names the field and why)."""
    tab.wait_for_selector("#toast.show:has-text('mark-abnormal')")
    return tab.inner_text("#toast")


def clock_label(site) -> str:
    return "(UTC)" if site["kind"] == "zoned" else "(data time)"


def test_the_fleet_form_marks_the_typed_period_in_the_project_s_data_time(tab, site):
    log_in(tab, site)
    tab.click("#nav a[href='#/fleet']")
    tab.wait_for_selector("#group-form")
    tab.select_option("#group-scope", "fleet")
    tab.select_option("#group-action", "mark-abnormal")
    labels = tab.locator("#group-form label.data-clock").all_inner_texts()
    assert [text.strip() for text in labels] == [f"from {clock_label(site)}", f"to {clock_label(site)}"], labels
    tab.fill("#group-form input[name=start]", "2025-01-02T06:00")
    tab.fill("#group-form input[name=end]", "2025-01-02T09:30")
    tab.fill("#group-form input.reason", "depot outage")
    tab.click("#group-form button[type=submit]")
    said = answer(tab)
    assert said.startswith("mark-abnormal by user:ana: 1 item"), said  # one period, for the fleet
    uid, start, end = last_period(site["store"])
    assert pd.isna(uid)  # the whole fleet
    assert (start, end) == (pd.Timestamp("2025-01-02 06:00"), pd.Timestamp("2025-01-02 09:30"))
    # The page's source for the project's kind of timestamps: the abnormal periods' list, which it loads.
    shown = tab.evaluate("fetch('/api/abnormal-periods?per_page=1').then((r) => r.json()).then((p) => p.time_zones)")
    assert shown == site["kind"]


def test_the_stream_form_marks_the_typed_period_in_the_project_s_data_time(tab, site):
    log_in(tab, site)
    tab.goto(site["url"] + f"/#/stream/{STREAMS[1]}")
    tab.wait_for_selector("#abnormal-start")
    labels = tab.locator("#stream-actions label.data-clock").all_inner_texts()
    assert [text.strip() for text in labels] == [f"from {clock_label(site)}", f"to {clock_label(site)}"], labels
    tab.fill("#abnormal-start", "2025-01-03T01:00")
    tab.fill("#abnormal-end", "2025-01-03T02:15")
    tab.click("#btn-abnormal")
    said = answer(tab)
    assert said.startswith("mark-abnormal by user:ana: 1 stream"), said
    assert last_period(site["store"]) == (STREAMS[1], pd.Timestamp("2025-01-03 01:00"),
                                          pd.Timestamp("2025-01-03 02:15"))
