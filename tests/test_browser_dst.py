"""The stream page's time axis in a browser whose time zone has daylight saving time, across its change.

Data times are naive and read as UTC (app.js dataMs), but the plots read them with ``Date.parse`` (the browser's
local time) and ticked and labelled them with ``setHours``/``getHours``: in Berlin, the day of the October change
has 25 hours, so the labels after it were a day off (one date twice) and the hours shifted (05h, 11h...). They are
read, ticked and labelled in UTC, whatever the browser's zone.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from test_browser import browser, checked_page, log_in, serving  # noqa: F401  (browser: the module's chromium fixture)

# Berlin leaves summer time on 2025-10-26 at 01:00 UTC.
WEEKS = ("two-weeks", pd.date_range("2025-10-20", "2025-11-02 23:00", freq="h"))
HOURS = ("two-days", pd.date_range("2025-10-25 12:00", "2025-10-27 06:00", freq="h"))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Two hourly streams around the change, no tick yet (the page shows their last 14 days), and an operator."""
    from mlma.api import create_app, create_token
    from mlma.store import Store

    folder = tmp_path_factory.mktemp("browser-dst")
    store = Store.create(f"sqlite:///{folder}/mlma.db")
    for uid, stamps in (WEEKS, HOURS):
        store.ingest_frame(pd.DataFrame({"unique_id": uid, "ds": stamps, "y": 10.0 + stamps.hour}), source=uid)
    token = create_token(store, "ana", "operator", by="user:root")[1]
    with serving(create_app(store, artifacts=folder / "artifacts")) as url:
        yield {"url": url, "tokens": {"operator": token}}
    store.close()


@pytest.fixture
def berlin(browser):  # noqa: F811  (the imported fixture)
    with checked_page(browser, timezone_id="Europe/Berlin") as page:
        yield page


def _axis(page, uid: str) -> tuple[list[tuple[str, float]], list[float]]:
    """The actuals chart's x labels with their places, and the x of each actual (the path's vertices)."""
    page.goto(page.url.split("#")[0] + f"#/stream/{uid}")
    page.wait_for_selector(f".stream-head h1:text-is('{uid}')")
    box = page.locator(".chart-box", has=page.locator("h3", has_text="Actuals and forecasts"))
    labels = box.evaluate("b => [...b.querySelectorAll('g.axis text[text-anchor=middle]:not(.label)')]"
                          ".map((t) => [t.textContent, +t.getAttribute('x')])")
    d = box.locator("path.series").first.get_attribute("d")
    return [tuple(x) for x in labels], [float(x) for x in re.findall(r"[ML]([-\d.]+),", d)]


def test_day_labels_after_the_change_are_midnights_in_utc_each_date_once(berlin, site):
    log_in(berlin, site)
    labels, points = _axis(berlin, WEEKS[0])
    names = [name for name, _ in labels]
    assert len(names) == len(set(names)), names                               # no date twice
    assert names == [f"{d:%m-%d}" for d in pd.date_range("2025-10-20", "2025-11-02", freq="D")], names
    # Each label stands where the data's midnight of its date is drawn: 24 hours apart, the 25th October too.
    stamps = list(WEEKS[1])
    for name, x in labels:
        midnight = stamps.index(pd.Timestamp(f"2025-{name}"))
        assert abs(points[midnight] - x) < 0.2, (name, x, points[midnight])
    gaps = {round(b[1] - a[1], 1) for a, b in zip(labels, labels[1:])}
    assert len(gaps) == 1, gaps


def test_hour_labels_across_the_change_stay_on_the_utc_hours(berlin, site):
    log_in(berlin, site)
    labels, points = _axis(berlin, HOURS[0])
    names = [name for name, _ in labels]
    assert names == ["10-25 12h", "10-25 18h", "10-26 00h", "10-26 06h", "10-26 12h", "10-26 18h", "10-27 00h",
                     "10-27 06h"], names
    stamps = list(HOURS[1])
    for name, x in labels:
        at = stamps.index(pd.Timestamp(f"2025-{name[:5]} {name[6:8]}:00"))
        assert abs(points[at] - x) < 0.2, (name, x, points[at])
