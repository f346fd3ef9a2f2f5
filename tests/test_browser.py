"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against a real uvicorn server.

The engineer's path: log in with a token, find a degraded stream in the queue, open it, pin it, and see the
pin in the audit log. Set ``MLMA_SCREENSHOT=docs/dashboard-screenshot.png`` to keep the stream page's
screenshot for the docs. Skipped only when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import pandas as pd
import pytest

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    # `make test` installs chromium (Makefile target `browser`); in CI the browser tests must run.
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"no chromium at {CHROMIUM}: in CI (CI=true) the browser tests must run; `make browser` "
                    "installs it", pytrace=False)
    pytest.skip(f"no chromium at {CHROMIUM} (`make browser` or apt-get install chromium) to drive the dashboard",
                allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (pip install "
                                                                     "playwright; no browser download needed)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A sample fleet served by uvicorn on a free port, with an operator and a viewer token."""
    from mlma.api import create_app, create_token
    from mlma.api.sample import build_sample_fleet
    from mlma.store import Store

    folder = tmp_path_factory.mktemp("browser")
    store = Store.create(f"sqlite:///{folder}/mlma.db")
    fleet = build_sample_fleet(store, folder / "artifacts", n_streams=24, n_ticks=10)
    tokens = {role: create_token(store, name, role, by="user:root")[1]
              for role, name in (("operator", "ana"), ("viewer", "vic"))}
    with serving(create_app(store, artifacts=folder / "artifacts")) as url:
        yield {"url": url, "store": store, "fleet": fleet, "tokens": tokens, "artifacts": folder / "artifacts"}
    store.close()


@contextlib.contextmanager
def serving(app):
    """``app`` served by uvicorn on a free port of 127.0.0.1; yields its URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@contextlib.contextmanager
def checked_page(browser, **options):
    """A page in a new browser context (``options``: e.g. ``timezone_id``), failing on a JavaScript error."""
    context = browser.new_context(viewport={"width": 1366, "height": 800}, **options)
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(browser):
    with checked_page(browser) as tab:
        yield tab


def log_in(page, site, role="operator"):
    page.goto(site["url"] + "/")
    page.fill("#token", site["tokens"][role])
    page.click("#login button[type=submit]")
    page.wait_for_selector(".page[data-page=queue]")


def test_log_in_find_a_degraded_stream_in_the_queue_pin_it_and_see_it_audited(page, site):
    log_in(page, site)
    assert page.inner_text("#who") == "ana · operator"
    # The queue: the grouped item whose members include a degraded stream.
    degraded = page.locator(".queue-item .member", has=page.locator(".badge[data-verdict=degraded]"))
    assert degraded.count() >= 1
    uid = degraded.first.locator("a.stream-link").inner_text()
    assert uid in site["fleet"].degraded_now
    degraded.first.locator("a.stream-link").click()
    page.wait_for_selector(".page[data-page=stream]")
    assert page.inner_text(".stream-head h1") == uid
    assert page.locator(".stream-head .badge[data-verdict=degraded]").count() == 1
    assert page.locator("svg.chart").count() >= 3                     # actuals/forecasts, loss, p-values
    assert page.locator("#timeline li").count() >= 1                   # the champion's history

    page.fill("#stream-actions input.reason", "repeated trigger, waiting for the new depot data")
    page.click("#btn-pin")
    page.wait_for_selector("#pinned-chip")
    assert "pinned until unpinned" in page.inner_text("#pinned-chip")
    assert "pin by user:ana" in page.inner_text("#toast")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot = os.environ.get("MLMA_SCREENSHOT")
    page.screenshot(path=screenshot or str(Path(site["store"].engine.url.database).parent / "stream.png"),
                    full_page=False)

    page.click("#nav a[href='#/audit']")
    page.wait_for_selector(".page[data-page=audit]")
    first = page.locator("table.audit tbody tr").first
    cells = first.locator("td").all_inner_texts()
    assert cells[2:5] == ["user:ana", "pin", uid]
    assert cells[6] == "repeated trigger, waiting for the new depot data"

    table = site["store"].streams().set_index("unique_id")
    assert table.loc[uid, "overrides"]["pinned_until"] == "forever"
    entry = site["store"].audit_log().iloc[-1]
    assert (entry["actor"], entry["action"], entry["target"]) == ("user:ana", "pin", f"stream:{uid}")


def test_a_fleet_wide_item_in_the_queue_says_so_instead_of_counting_one_stream(page, site):
    from mlma.escalations import Escalation

    store = site["store"]
    tick = int(store.last_done_tick())
    [fleet_item] = store.add_escalations([Escalation(-1, tick, "tick-failed", 3, "tick 99 failed: a test")])
    try:
        log_in(page, site)
        item = page.locator(".queue-item[data-kind=tick-failed]")
        assert item.count() == 1 and item.get_attribute("data-scope") == "fleet"
        assert item.locator(".count").inner_text() == "fleet-wide"
        assert page.locator(".queue-item[data-scope=fleet] .count").all_inner_texts() == ["fleet-wide"] * len(
            page.locator(".queue-item[data-scope=fleet]").all())
        others = page.locator(".queue-item:not([data-scope=fleet]) .count").all_inner_texts()
        assert others and all(re.fullmatch(r"\d+ streams?", text) for text in others), others
    finally:
        store.set_escalation_status([fleet_item], "resolved", by="user:test")


def test_a_grouped_item_whose_members_failed_each_their_own_way_shows_each_message(page, site):
    """A city's forecast-failed item showed the largest member's error as if it were every member's."""
    from mlma.escalations import Escalation

    store = site["store"]
    tick = int(store.last_done_tick())
    streams = store.streams()
    city = streams[streams["attributes"].map(lambda a: a.get("city")) == "c00"].head(2)
    errors = [f"ValueError: broken input {i}" for i in range(2)]
    ids = store.add_escalations([Escalation(int(s), tick, "forecast-failed", 2, e)
                                 for s, e in zip(city["id"], errors)])
    try:
        log_in(page, site)
        item = page.locator(".queue-item[data-kind=forecast-failed]")
        assert item.count() == 1
        message = item.locator(".message").inner_text()
        assert message in (f"{e} (+1 other message: each stream's is on its name)" for e in errors), message
        titles = sorted(item.locator(".member").evaluate_all("nodes => nodes.map((n) => n.title)"))
        assert titles == errors, titles
    finally:
        store.set_escalation_status(ids, "resolved", by="user:test")


def test_every_form_control_on_every_page_has_a_name_a_screen_reader_can_say(page, site):
    """The queue's and the stream list's filter drop-downs had no label: a screen reader said "combo box"."""
    from mlma.api.auth import create_token, revoke_token

    admin = create_token(site["store"], "adam", "admin", by="user:root")[1]   # the tokens page is an admin's
    try:
        page.goto(site["url"] + "/")
        page.fill("#token", admin)
        page.click("#login button[type=submit]")
        page.wait_for_selector(".page[data-page=queue]")
        unnamed = _unnamed_controls(page, site)
    finally:
        revoke_token(site["store"], "adam", by="user:root", reason="the test is over", last_admin=True)
    assert not unnamed, unnamed


def _unnamed_controls(page, site) -> dict[str, list[str]]:
    uid = site["fleet"].unique_ids[0]
    unnamed = {}
    for where in ("fleet", "queue", "streams", f"stream/{uid}", "actions", "audit", "tokens"):
        page.goto(site["url"] + "/#/" + where)
        page.wait_for_selector(f".page[data-page={where.split('/')[0]}]")
        # The accessible name's sources a control may have: a <label>, aria-label, or a title.
        names = page.locator("main select, main input, main textarea").evaluate_all(
            "nodes => nodes.filter((n) => n.type !== 'hidden' && !(n.labels.length || n.getAttribute('aria-label')"
            " || n.title)).map((n) => n.id || n.name || n.outerHTML.slice(0, 80))")
        if names:
            unnamed[where] = names
    return unnamed


def test_a_wrong_token_is_refused_and_a_viewer_gets_no_buttons(page, site):
    page.goto(site["url"] + "/")
    page.fill("#token", "mlma_not-a-token")
    page.click("#login button[type=submit]")
    page.wait_for_selector("#login .error:has-text('Unknown or revoked token')")
    log_in(page, site, "viewer")
    assert page.locator(".queue-item button").count() == 0
    page.goto(site["url"] + f"/#/stream/{site['fleet'].unique_ids[1]}")
    page.wait_for_selector(".page[data-page=stream]")
    assert page.locator("#stream-actions").count() == 0
    assert page.locator("#nav a[href='#/tokens']").is_hidden()


def test_fleet_overview_streams_pages_and_a_group_action(page, site):
    log_in(page, site)
    page.click("#nav a[href='#/fleet']")
    page.wait_for_selector(".page[data-page=fleet]")
    assert page.locator("svg.chart").count() == 6
    assert re.search(r"\d+(\.\d)? %", page.inner_text(".kpi.good .kpi-value"))
    # Pro-actively: pin a city for a holiday, from the fleet page's group form.
    page.select_option("#group-scope", "group")
    page.fill("#group-value", "city=c03")
    page.select_option("#group-action", "pin")
    page.fill("#group-form input.reason", "public holiday in c03")
    page.click("#group-form button[type=submit]")
    page.wait_for_selector("#toast.show:has-text('pin by user:ana: 6 streams')")
    assert site["store"].audit_log().iloc[-1]["target"] == "group:city=c03"

    page.goto(site["url"] + "/#/streams?per_page=10&sort=-effect")
    page.wait_for_selector(".page[data-page=streams]")
    assert "page 1 of 3" in page.inner_text(".pager")
    rows = page.locator("table.streams tbody tr")
    assert rows.count() == 10
    page.click(".pager button:has-text('next')")
    page.wait_for_selector(".pager:has-text('page 2 of 3')")
    page.select_option("#stream-verdict", "degraded")
    page.wait_for_selector(".page[data-page=streams] .muted:has-text('2 streams')")
    names = page.locator("table.streams tbody tr td:first-child").all_inner_texts()
    assert sorted(names) == sorted(site["fleet"].degraded_now)


def test_a_roll_back_clicked_on_a_page_older_than_the_last_move_is_refused_not_made_blind(page, site):
    """The version table's roll-back sends the version the page shows serving: when a colleague put another
    version in service since the page loaded, the click is refused, saying what serves, instead of replacing a
    version the person never saw; on the reloaded page the same click rolls back."""
    from mlma.registry import ModelRegistry

    uid = site["fleet"].promoted[0]
    registry = ModelRegistry(site["store"], site["artifacts"])
    assert registry.champion(uid).version == 2
    log_in(page, site)
    page.goto(site["url"] + f"/#/stream/{uid}")
    page.wait_for_selector(".page[data-page=stream] button:has-text('Roll back to v1')")
    registry.register(uid, {"sample": True, "version": 3}, spec="seasonal-naive", promote=True,
                      reason="a colleague's fix")                       # behind the page's back
    page.click("button:has-text('Roll back to v1')")
    page.wait_for_selector("#toast.show:has-text('rollback refused')")
    assert "version 2 does not serve stream" in page.inner_text("#toast")
    assert registry.champion(uid).version == 3
    page.reload()
    page.wait_for_selector(".page[data-page=stream] button:has-text('Roll back to v2')")
    page.click("button:has-text('Roll back to v1')")
    page.wait_for_selector("#toast.show:has-text('rollback by user:ana')")
    assert registry.champion(uid).version == 1 and registry.history(uid)[-1].previous_version == 3


def test_a_promotion_clicked_on_a_page_older_than_the_last_move_is_refused_not_made_blind(page, site):
    """The version table's "Promote vN" sent no from_version: a tab left open while the agent put another version
    in service replaced it unseen. It sends the version the page shows serving, as the roll-back does: the API
    refuses the stale click (422 on from_version) and the toast says so; nothing moves."""
    from mlma.registry import ModelRegistry

    uid = site["fleet"].rejected[0]                      # v1 serves, v2 lost its challenger check
    registry = ModelRegistry(site["store"], site["artifacts"])
    assert registry.champion(uid).version == 1
    log_in(page, site)
    page.goto(site["url"] + f"/#/stream/{uid}")
    page.wait_for_selector(".page[data-page=stream] button:has-text('Promote v2')")
    sent = []
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/api/actions/promote") else None)
    registry.register(uid, {"sample": True, "version": 3}, spec="seasonal-naive", promote=True,
                      reason="the agent's promotion")                   # behind the page's back
    page.click("button:has-text('Promote v2')")
    page.wait_for_selector("#toast.show:has-text('promote refused')")
    assert sent and sent[0]["from_version"] == 1 and sent[0]["version"] == 2, sent
    said = page.inner_text("#toast")
    assert "from_version" in said and "version 1 does not serve stream" in said, said
    assert registry.champion(uid).version == 3                          # nothing moved


def test_set_parameters_refuses_a_number_it_cannot_read_instead_of_restoring_the_default(page, site):
    """"1e400" (too large for a number) and "0,1" (a decimal comma, which a number field turned into 01) were sent
    as null, which restores the project's default, or as another number, with a success toast: refused, naming
    the field, and nothing is sent; a plain number still is."""
    uid = site["fleet"].unique_ids[9]
    log_in(page, site)
    page.goto(site["url"] + f"/#/stream/{uid}")
    page.wait_for_selector("#param-delta")
    sent = []
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/api/actions/set-params") else None)
    page.fill("#param-delta", "0.2")
    page.click("#btn-params")
    page.wait_for_selector("#toast.show:has-text('set-params by user:ana')")
    assert sent[-1]["params"] == {"delta": 0.2, "cooldown_ticks": None}
    page.wait_for_selector("#param-delta[value='0.2']")                  # the page redrawn with the override
    for field, typed in (("#param-delta", "1e400"), ("#param-delta", "0,1"), ("#param-cooldown", "1.5"),
                         ("#param-cooldown", "two")):
        page.evaluate("document.getElementById('toast').className = ''")
        before = len(sent)
        page.fill(field, typed)
        page.click("#btn-params")
        page.wait_for_selector("#toast.show.bad")
        said = page.inner_text("#toast")
        name = "δ (delta)" if field == "#param-delta" else "cooldown ticks"
        assert said.startswith(f"set-params refused: {name}: \"{typed}\""), said
        assert page.get_attribute(field, "aria-invalid") == "true"
        page.wait_for_timeout(200)
        assert len(sent) == before, sent                                  # nothing was sent
        page.fill(field, "0.2" if field == "#param-delta" else "")
    overrides = site["store"].streams().set_index("unique_id").loc[uid, "overrides"]
    assert overrides["delta"] == 0.2


def on_a_fleet_page_that_loads_slowly(page, site) -> None:
    """Log in, open the fleet page, then hold its data back for a second from now on, so that a redraw of it
    ends after whatever the user does next."""
    log_in(page, site)
    page.click("#nav a[href='#/fleet']")
    page.wait_for_selector(".page[data-page=fleet]")
    page.evaluate("""() => {
      const fetchNow = window.fetch;
      window.fetch = async (url, options) => {
        const response = await fetchNow(url, options);
        if (String(url).startsWith("/api/fleet")) await new Promise((resolve) => setTimeout(resolve, 1000));
        return response;
      };
    }""")


def test_a_slow_redraw_never_replaces_the_page_navigated_to(page, site):
    """An action redraws the page it was taken on; if that page loads slowly (the fleet page's 200 ticks) and
    the user has moved on meanwhile, the late drawing must not replace the page the user is on."""
    on_a_fleet_page_that_loads_slowly(page, site)
    # As act() does after an action: redraw the current page; the user goes to the streams page meanwhile.
    page.evaluate("() => { window.redraw = route(); location.hash = '#/streams?per_page=10'; }")
    page.wait_for_selector(".page[data-page=streams] .pager")
    page.evaluate("() => window.redraw")                 # the fleet page's redraw has finished (or given way)
    assert page.locator(".page[data-page=fleet]").count() == 0
    assert "page 1 of 3" in page.inner_text(".page[data-page=streams] .pager")


def test_a_page_still_loading_at_logout_never_replaces_the_login_form(page, site):
    on_a_fleet_page_that_loads_slowly(page, site)
    page.evaluate("() => { window.redraw = route(); }")
    page.click("#logout")
    page.wait_for_selector("#login")
    page.evaluate("() => window.redraw")                 # the fleet page's data arrived after the logout
    assert page.locator("#login").is_visible() and page.locator(".page[data-page=fleet]").count() == 0


def test_the_page_survives_a_logout(page, site):
    log_in(page, site)
    page.click("#logout")
    page.wait_for_selector("#login")
    assert "Logged out" in page.inner_text("#login .error")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert not [name for name in cookies if name.startswith("mlma_session")]


def test_the_session_cookie_is_http_only_and_lax(page, site):
    log_in(page, site)
    cookies = {c["name"]: c for c in page.context.cookies()}
    [session] = [c for name, c in cookies.items() if name.startswith("mlma_session_")]
    [csrf] = [c for name, c in cookies.items() if name.startswith("mlma_csrf_")]
    assert session["httpOnly"] is True and session["sameSite"] == "Lax"
    assert csrf["httpOnly"] is False
    assert page.evaluate("document.cookie").count("mlma_session") == 0      # scripts cannot read the session


def test_a_daily_stream_s_chart_draws_its_actuals_as_a_line(page, site):
    """A stream of daily data gets its actuals drawn as a line: the chart broke the line at every gap of more
    than three hours, so a daily series drew nothing. It adds a stream to the module's fleet: the tests
    after it do not count streams."""
    days = pd.date_range("2026-10-20", "2026-11-10", freq="D")
    site["store"].ingest_frame(pd.DataFrame({"unique_id": "daily-zone", "ds": days, "y": 50.0 + (days.day % 7)}),
                               source="daily-zone")
    log_in(page, site)
    page.goto(site["url"] + "/#/stream/daily-zone")
    page.wait_for_selector(".page[data-page=stream]")
    assert page.inner_text(".stream-head h1") == "daily-zone"
    drawn = page.evaluate("""() => {
      const box = [...document.querySelectorAll('.chart-box')].find((b) => /Actuals and forecasts/.test(b.textContent));
      return [...box.querySelectorAll('path.series')].map((p) => (p.getAttribute('d').match(/L/g) || []).length);
    }""")
    shown = sum(1 for d in days if d >= pd.Timestamp(site["fleet"].start))
    assert drawn and drawn[0] == shown - 1, drawn   # one line through the page's daily actuals


def test_a_pin_until_typed_in_the_browser_s_time_zone_ends_at_that_instant(browser, site):
    """The pin's end is typed in the browser's wall clock (Berlin: UTC+1 in January) and sent as that instant
    in UTC; it was sent as typed, so the pin ended an hour late."""
    context = browser.new_context(viewport={"width": 1366, "height": 800}, timezone_id="Europe/Berlin")
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    try:
        uid = site["fleet"].unique_ids[11]
        log_in(tab, site)
        tab.goto(site["url"] + f"/#/stream/{uid}")
        tab.wait_for_selector("#pin-until")
        tab.fill("#pin-until", "2027-01-01T12:00")
        tab.click("#btn-pin")
        # The toast, not the chip: the stream may be pinned already by another test of the module.
        tab.wait_for_selector("#toast.show:has-text('pin by user:ana: 1 stream')")
        overrides = site["store"].streams().set_index("unique_id").loc[uid, "overrides"]
        assert pd.Timestamp(overrides["pinned_until"]) == pd.Timestamp("2027-01-01T11:00:00Z")
    finally:
        context.close()


def test_two_dashboards_on_one_host_do_not_log_each_other_out(browser, site):
    """Cookies ignore the port: a second dashboard (another project, another session key) on the same host set
    the same cookie names, so logging in to one logged the browser out of the other."""
    from mlma.api import create_app

    context = browser.new_context(viewport={"width": 1366, "height": 800})
    try:
        with serving(create_app(site["store"])) as other_url:           # its own random session key
            first, second = context.new_page(), context.new_page()
            uid = site["fleet"].unique_ids[15]
            log_in(first, site)
            first.goto(site["url"] + f"/#/stream/{uid}")
            first.wait_for_selector("#btn-retrain")
            log_in(second, {**site, "url": other_url}, "viewer")
            assert second.inner_text("#who") == "vic · viewer"
            first.fill("#stream-actions input.reason", "the first dashboard still acts")
            first.click("#btn-retrain")
            first.wait_for_selector("#toast.show:has-text('retrain by user:ana')")
            second.reload()
            second.wait_for_selector(".page[data-page=queue]")
            assert second.inner_text("#who") == "vic · viewer"
            assert len([c for c in context.cookies() if c["name"].startswith("mlma_")]) == 4
    finally:
        context.close()


def _sent(page, path: str) -> list[str]:
    """The requests the page sends to ``path`` from now on (their methods)."""
    seen: list[str] = []
    page.on("request", lambda r: path in r.url and seen.append(r.method))
    return seen


def test_a_double_click_or_a_second_enter_sends_an_action_once(page, site):
    """An action's button and its form are disabled while the request is on its way: a double click on Re-train,
    or Enter pressed twice in the fleet form, queued and audited the action twice."""
    uid = site["fleet"].unique_ids[16]
    log_in(page, site)
    page.goto(site["url"] + f"/#/stream/{uid}")
    page.wait_for_selector("#btn-retrain")
    audited = len(site["store"].audit_log())
    retrains = _sent(page, "/api/actions/retrain")
    page.dblclick("#btn-retrain")
    page.wait_for_selector("#toast.show:has-text('retrain by user:ana')")
    page.wait_for_timeout(500)
    assert retrains == ["POST"] and len(site["store"].audit_log()) == audited + 1

    page.click("#nav a[href='#/fleet']")
    page.wait_for_selector("#group-form")
    page.select_option("#group-scope", "group")
    page.fill("#group-value", "city=c01")
    page.select_option("#group-action", "reset-reference")
    resets = _sent(page, "/api/actions/reset-reference")
    page.fill("#group-form input.reason", "twice by mistake")
    page.press("#group-form input.reason", "Enter")
    page.press("#group-form input.reason", "Enter")
    page.wait_for_selector("#toast.show:has-text('reset-reference by user:ana')")
    page.wait_for_timeout(500)
    assert resets == ["POST"] and len(site["store"].audit_log()) == audited + 2


def test_an_action_that_changes_nothing_says_so(page, site):
    """Pinning a pinned stream answers changed 0 and audits nothing: the toast said "pin by user:ana: 1 stream"."""
    uid = site["fleet"].unique_ids[17]
    log_in(page, site)
    page.goto(site["url"] + f"/#/stream/{uid}")
    page.wait_for_selector("#btn-pin")
    page.click("#btn-pin")
    page.wait_for_selector("#pinned-chip")
    audited = len(site["store"].audit_log())
    page.click("#btn-pin")
    page.wait_for_selector("#toast.show:has-text('nothing to change')")
    assert "pin by" not in page.inner_text("#toast").split("(")[0]
    assert len(site["store"].audit_log()) == audited
    page.click("#btn-unpin")
    page.wait_for_selector("#toast.show:has-text('unpin by user:ana')")


def test_a_tab_of_a_browser_that_logged_in_again_as_someone_else_does_not_act(browser, site):
    """Tab A shows "ana · operator"; tab B of the same browser logs out and in as bob: tab A's pin was audited as
    bob under ana's name in its header. Now it is refused, nothing is done, and the tab says why."""
    from mlma.api import create_token

    _, bob = create_token(site["store"], "bob", "operator", by="user:root")
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    try:
        first, second = context.new_page(), context.new_page()
        uid = site["fleet"].unique_ids[18]
        log_in(first, site)
        first.goto(site["url"] + f"/#/stream/{uid}")
        first.wait_for_selector("#btn-pin")
        second.goto(site["url"] + "/")
        second.wait_for_selector(".page[data-page=queue]")                # the same session (cookie)
        second.click("#logout")
        second.fill("#token", bob)
        second.click("#login button[type=submit]")
        second.wait_for_selector(".page[data-page=queue]")
        assert second.inner_text("#who") == "bob · operator"
        audited = len(site["store"].audit_log())
        first.fill("#stream-actions input.reason", "ana pins this")
        first.click("#btn-pin")
        first.wait_for_selector("#session-changed")
        assert "user:bob" in first.inner_text("#session-changed") and "ana" in first.inner_text("#session-changed")
        assert "ana" not in first.inner_text("#who")
        assert len(site["store"].audit_log()) == audited
        assert "pinned_until" not in (site["store"].streams().set_index("unique_id").loc[uid, "overrides"] or {})
        first.click("#session-changed button")                            # reload: the tab is bob's now
        first.wait_for_selector(".page[data-page=stream]")
        assert first.inner_text("#who") == "bob · operator"
    finally:
        context.close()


def test_log_out_in_a_tab_opened_for_another_session_logs_the_browser_out(browser, site):
    """After a log-in in another tab, "Log out" in the first one sent no CSRF header (the page had forgotten its
    cookie's name with the old session): refused, 403, swallowed, and the page said "Logged out." while the
    browser stayed logged in as the other user."""
    from mlma.api import create_token

    _, carl = create_token(site["store"], "carl", "operator", by="user:root")
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    try:
        first, second = context.new_page(), context.new_page()
        log_in(first, site)
        second.goto(site["url"] + "/")
        second.wait_for_selector(".page[data-page=queue]")
        second.click("#logout")
        second.fill("#token", carl)
        second.click("#login button[type=submit]")
        second.wait_for_selector(".page[data-page=queue]")
        first.bring_to_front()
        first.evaluate("window.dispatchEvent(new Event('focus'))")      # the tab looked at again: it asks
        first.wait_for_selector("#session-changed")
        first.click("#logout")
        first.wait_for_selector("#login")
        assert "Logged out." in first.inner_text("#login")
        second.reload()
        second.wait_for_selector("#login")                                # the browser's session ended
    finally:
        context.close()


# The tests below add streams with hostile names to the module's fleet: the tests above count streams.
def _add_stream(site, uid: str, days: int = 5) -> None:
    stamps = pd.date_range(pd.Timestamp(site["fleet"].start) + pd.Timedelta("1D"), periods=days, freq="D")
    site["store"].ingest_frame(pd.DataFrame({"unique_id": uid, "ds": stamps, "y": 10.0 + stamps.day}), source="t")


def open_stream(page, site, uid: str) -> None:
    page.goto(site["url"] + "/#/queue")                # a page of another kind first: the wait below is for this one
    page.wait_for_selector(".page[data-page=queue]")
    page.goto(site["url"] + "/#/stream/" + urllib.parse.quote(uid, safe=""))
    page.wait_for_selector(".page[data-page=stream], .panel.error")


def test_streams_named_dot_and_dot_dot_open_from_the_list_and_by_their_hash(page, site):
    """The page read a stream at /api/streams/<id>, which the browser resolves for "." and ".." (also %2e)."""
    for uid in (".", ".."):
        _add_stream(site, uid)
    log_in(page, site)
    for uid in (".", ".."):
        open_stream(page, site, uid)
        assert page.locator(".panel.error").count() == 0, page.inner_text(".panel.error")
        assert page.inner_text(".stream-head h1") == uid
    page.goto(site["url"] + "/#/streams?q=..")
    page.locator("table.streams a.stream-link", has_text=re.compile(r"^\.\.$")).click()
    page.wait_for_selector(".page[data-page=stream]")
    assert page.inner_text(".stream-head h1") == ".."


def _x_labels(page, title: str) -> list[tuple[str, str]]:
    box = page.locator(".chart-box", has=page.locator("h3", has_text=title))
    return box.evaluate("b => [...b.querySelectorAll('g.axis text[text-anchor=middle]:not(.label)')]"
                        ".map((t) => [t.textContent, t.getAttribute('x')])")


def test_charts_of_one_tick_or_one_point_draw_it(page, site):
    """A one-point series drew nothing, a one-tick loss chart no reference or band (the legend listed them), and
    a zero-width x range put two labels at one place."""
    _add_stream(site, "one-point", days=1)
    log_in(page, site)
    open_stream(page, site, "one-point")
    actuals = page.locator(".chart-box", has=page.locator("h3", has_text="Actuals and forecasts"))
    assert actuals.locator("circle.dot").count() == 1
    places = [x for _, x in _x_labels(page, "Actuals and forecasts")]
    assert places and len(places) == len(set(places)), places

    uid = site["fleet"].unique_ids[3]
    page.goto(site["url"] + f"/#/stream/{uid}?ticks=1")
    page.wait_for_selector(f".stream-head h1:text-is('{uid}')")
    loss = page.locator(".chart-box", has=page.locator("h3", has_text="Loss per tick"))
    assert loss.locator("line.series.single").count() == 1                       # the reference level
    width = loss.locator("rect.band").evaluate("r => r.getBBox().width")          # the reference … +δ band
    assert width > 0
    assert loss.locator("circle.dot").count() == 1                                # the loss
    labels = _x_labels(page, "Loss per tick")
    assert len(labels) == 1, labels


def test_a_long_unbroken_id_or_message_does_not_widen_the_page(page, site):
    """A 300-character id and a 3,000-character message widened the page to thousands of pixels."""
    from mlma.escalations import Escalation

    uid = "L" * 300
    _add_stream(site, uid)
    store = site["store"]
    sid = int(store.streams().set_index("unique_id").loc[uid, "id"])
    [item] = store.add_escalations([Escalation(sid, int(store.last_done_tick()), "repeated-trigger", 3, "x" * 3000)])
    try:
        log_in(page, site)
        assert page.locator(".queue-item .message", has_text="x" * 100).count() == 1
        widths = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
        assert widths[0] <= widths[1], widths
        open_stream(page, site, uid)
        assert page.inner_text(".stream-head h1") == uid
        widths = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
        assert widths[0] <= widths[1], widths
    finally:
        store.set_escalation_status([item], "resolved", by="user:test")


def test_bidi_controls_in_an_id_are_shown_and_cannot_reorder_the_text_around_it(page, site):
    """"zone\\u202eevil.exe" was shown as "zoneexe.live": the control characters are shown as \\u202E, and ids
    are isolated (unicode-bidi: isolate) from the text beside them."""
    uid = "zone\u202eevil.exe"
    _add_stream(site, uid)
    log_in(page, site)
    page.goto(site["url"] + "/#/streams?q=evil")
    link = page.locator("table.streams a.stream-link").first
    assert link.inner_text() == "zone\\u202Eevil.exe"
    assert link.evaluate("a => getComputedStyle(a).unicodeBidi") == "isolate"
    link.click()
    page.wait_for_selector(".page[data-page=stream]")
    assert page.inner_text(".stream-head h1") == "zone\\u202Eevil.exe"
    assert page.locator(".stream-head h1").evaluate("e => getComputedStyle(e).unicodeBidi") == "isolate"


def act_on_named_streams(page, site, action: str, lines: str) -> None:
    """Log in and send ``action`` from the fleet page's form for the streams named in ``lines``."""
    log_in(page, site)
    page.click("#nav a[href='#/fleet']")
    page.wait_for_selector("#group-form")
    page.select_option("#group-scope", "streams")
    page.select_option("#group-action", action)
    page.fill("#group-form textarea[name=streams]", lines)
    page.click("#group-form button[type=submit]")


def test_the_fleet_form_takes_one_stream_id_per_line_commas_and_all(page, site):
    """The streams field was split on commas, so "Sydney, NSW" could not be named: a line is one id, whole."""
    _add_stream(site, "Sydney, NSW")
    other = site["fleet"].unique_ids[19]
    act_on_named_streams(page, site, "pin", f"Sydney, NSW\n{other}\n")
    page.wait_for_selector("#toast.show:has-text('pin by user:ana: 2 streams')")
    table = site["store"].streams().set_index("unique_id")
    assert table.loc["Sydney, NSW", "overrides"]["pinned_until"] == "forever"
    assert table.loc[other, "overrides"]["pinned_until"] == "forever"


def test_the_toast_says_which_streams_an_action_left_out(page, site):
    """A re-training of streams some of which have no model yet leaves those out and says so in the answer's note;
    the page showed only the count acted on."""
    _add_stream(site, "no-model-yet")
    other = site["fleet"].unique_ids[17]
    act_on_named_streams(page, site, "retrain", f"no-model-yet\n{other}\n")
    page.wait_for_selector("#toast.show:has-text('retrain by user:ana: 1 stream queued')")
    assert "left out (no-model-yet): no model yet" in page.inner_text("#toast")


def test_a_search_as_long_as_the_longest_id_finds_it_and_a_longer_one_is_refused_in_the_form(page, site):
    """Ids up to MAX_ID_LENGTH characters are allowed, but the streams' and the audit log's search stopped at 200:
    searching a 400-character id replaced the page with "Could not load this page". The search takes as much as
    an id; a longer one is refused under the form, which stays."""
    from mlma.data import MAX_ID_LENGTH

    uid = "W" * 400
    _add_stream(site, uid)
    log_in(page, site)
    page.goto(site["url"] + f"/#/streams?q={uid}")
    page.wait_for_selector(".page[data-page=streams] table.streams")
    assert page.locator("table.streams a.stream-link").all_inner_texts() == [uid]
    too_long = "W" * (MAX_ID_LENGTH + 1)
    page.goto(site["url"] + f"/#/streams?q={too_long}")
    page.wait_for_selector(".page[data-page=streams] #filter-error")
    assert page.locator(".panel.error").count() == 0
    assert "q:" in page.inner_text("#filter-error")
    assert page.input_value("#stream-search") == too_long                 # the form stays, to be corrected
    page.fill("#stream-search", uid)
    page.press("#stream-search", "Enter")
    page.wait_for_selector(".page[data-page=streams] table.streams a.stream-link")
    assert page.locator("#filter-error").count() == 0

    page.goto(site["url"] + f"/#/audit?q={uid}")
    page.wait_for_selector(".page[data-page=audit]")
    assert page.locator(".panel.error, #filter-error").count() == 0
    page.goto(site["url"] + f"/#/audit?q={too_long}")
    page.wait_for_selector(".page[data-page=audit] #filter-error")
    assert page.locator(".page[data-page=audit] form.toolbar").count() == 1


def test_bidi_controls_in_a_toast_and_in_the_audit_log_are_shown(page, site):
    """toast() and the audit log's reason and parameters columns put text in the page as it came, so a refusal
    quoting "zone\u202eevil.exe", or a reason holding U+202E, was displayed reversed."""
    uid = "toast\u202ezone.exe"
    _add_stream(site, uid)
    log_in(page, site)
    open_stream(page, site, uid)
    page.click("button:has-text('Approve the waiting challenger')")     # no challenger: refused, naming the stream
    page.wait_for_selector("#toast.show.bad")
    said = page.inner_text("#toast")
    assert "\u202e" not in said and "toast\\u202Ezone.exe" in said, ascii(said)
    page.click("#nav a[href='#/fleet']")
    page.wait_for_selector("#group-form")
    page.select_option("#group-scope", "streams")
    page.select_option("#group-action", "pin")
    page.fill("#group-form textarea[name=streams]", uid)
    page.fill("#group-form input.reason", "hold\u202eon")
    page.click("#group-form button[type=submit]")
    page.wait_for_selector("#toast.show:has-text('pin by user:ana: 1 stream')")
    page.goto(site["url"] + "/#/audit?action=pin&q=zone.exe")
    page.wait_for_selector(".page[data-page=audit] table.audit")
    cells = page.locator("table.audit tbody tr").first.locator("td").all_inner_texts()
    assert "\u202e" not in "".join(cells) and cells[6] == "hold\\u202Eon", ascii(cells)    # the reason
    # Parameters hold text too (a model's name in a policy change, driver columns): written by the agent here.
    site["store"].add_audit("agent", "policy-change", "fleet", {"to": "naive\u202eexe.ltm"}, "a test")
    page.goto(site["url"] + "/#/audit?action=policy-change")
    page.wait_for_selector(".page[data-page=audit] table.audit td.params:has-text('naive')")
    cells = page.locator("table.audit tbody tr").first.locator("td").all_inner_texts()
    assert "\u202e" not in "".join(cells) and "naive\\u202Eexe.ltm" in cells[5], ascii(cells)
