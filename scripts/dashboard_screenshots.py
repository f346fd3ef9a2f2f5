"""Screenshots of the dashboard on a real project (e.g. the one ``mlma demo`` builds), for the docs.

Starts the dashboard with uvicorn on a free port in a thread, logs in through the real login page with
Debian's chromium (driven by Playwright, no browser download), and saves three pictures at a laptop
viewport (1440x900 by default):

- ``dashboard-demo-fleet.png``: the fleet overview (counts and all six per-tick charts);
- ``dashboard-demo-queue.png``: the engineer's queue;
- ``dashboard-demo-stream.png``: the page of a stream that degraded and was re-trained, down to its version
  table: the agent's promotions in the timeline and the challenger checks. Unless ``--stream`` names one,
  it is chosen from the data: among the members of the first queue items, the stream whose last 30 ticks
  hold the most promotions of a challenger that beat the serving model in shadow, after at least one
  degraded tick (ties: queue order).

The fleet and stream pictures run past the first screen when what they show needs it (at most 1.5 screens).

The script stops with an error, and saves nothing more, if the page raises a JavaScript error, asks for
anything outside the local server, gets an error for any request (the favicon's included), or a page lacks
what it should show (charts with data, tile subtexts not cut off, queue items, a version timeline whose
moves name their tick's data date, the Streams tab highlighted on a stream's page). The session key is
random, so nothing is written to the project folder except what logging in records (the token's last use).

Usage::

    mlma demo --out /tmp/demo --no-serve           # prints an admin token
    .venv/bin/python scripts/dashboard_screenshots.py /tmp/demo/project --token mlma_... --out docs/
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
#: How many ticks the stream page shows (the dashboard's default) and so where promotions must be to be seen.
STREAM_TICKS = 30
#: Queue items whose members are considered when choosing the stream to show.
QUEUE_ITEMS_SCANNED = 3
#: The tallest picture, in viewport heights (the fleet's six charts and a stream's version table need more
#: than one screen at 1440x900).
MAX_SCREENS = 1.5
FILES = {"fleet": "dashboard-demo-fleet.png", "queue": "dashboard-demo-queue.png",
         "stream": "dashboard-demo-stream.png"}


class ScreenshotError(RuntimeError):
    """The page did not show what the screenshot is meant to show."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(project: Path, group_by: str | None):
    """Serve the project's dashboard on a free local port; return (server, thread, base URL)."""
    import uvicorn

    from mlma.api.app import create_app
    from mlma.project import load_config

    # A random session key keeps the project's own key file (.mlma/session-key) untouched.
    app = create_app(load_config(project), group_by=group_by, secret=secrets.token_bytes(32))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ScreenshotError(f"uvicorn did not start on port {port}")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def get_json(base: str, path: str, token: str):
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}",
                                                           "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def shadow_promotions_after_degradation(detail: dict) -> int:
    """Promotions, in the shown ticks, of challengers that beat the serving model, after a degraded tick.

    Promotions of first models and of retried fall-back models did not win a challenger check and do not
    count: the picture is meant to show the agent's loop (degraded, re-trained, checked, promoted).
    """
    ticks = detail["ticks"]
    if not ticks:
        return 0
    first_degraded = next((t["tick"] for t in ticks if t["verdict"] == "degraded"), None)
    if first_degraded is None:
        return 0
    won = {v["version"] for v in detail["versions"] if (v.get("check") or {}).get("result") == "promoted"}
    return sum(1 for move in detail["champion_history"]
               if move["action"] == "promote" and move["version"] in won and move["tick"] is not None
               and move["tick"] > first_degraded and move["tick"] <= ticks[-1]["tick"])


def choose_stream(base: str, token: str) -> tuple[str, int]:
    """The stream to show and its count of shadow promotions after a degradation (see the module doc)."""
    queue = get_json(base, f"/api/escalations?per_page={QUEUE_ITEMS_SCANNED}&members=12", token)
    best, best_score, seen = None, 0, set()
    for item in queue["items"]:
        for member in item["members"]:
            uid = member.get("unique_id")
            if not uid or uid in seen:
                continue
            seen.add(uid)
            detail = get_json(base, f"/api/streams/{urllib.parse.quote(uid, safe='')}?ticks={STREAM_TICKS}", token)
            score = shadow_promotions_after_degradation(detail)
            if score > best_score:
                best, best_score = uid, score
    if best is None:
        raise ScreenshotError(f"no member of the first {QUEUE_ITEMS_SCANNED} queue items had a promotion after a "
                              f"degradation in its last {STREAM_TICKS} ticks; name one with --stream")
    return best, best_score


def drawn_series(page, scope: str) -> list[int]:
    """For each chart under ``scope``: how many data marks (line points, dots, bars, areas) it drew."""
    return page.eval_on_selector_all(
        f"{scope} svg.chart",
        """charts => charts.map(svg => {
            // Data marks as charts.js draws them: line vertices, dots, bars, stacked layers and bands.
            let marks = svg.querySelectorAll("circle.dot, rect.bar, polygon").length;
            for (const p of svg.querySelectorAll("path.series")) {
                marks += (p.getAttribute("d").match(/[ML]/g) || []).length;
            }
            return marks;
        })""")


def rest_mouse(page) -> None:
    """Move the pointer off the navigation so no link shows its hover colour in the picture."""
    size = page.viewport_size
    page.mouse.move(size["width"] - 2, size["height"] - 2)


def shoot_down_to(page, path: Path, selector: str, viewport_height: int) -> int:
    """Save the page from its top down to the end of ``selector`` (at least one screen, at most
    ``MAX_SCREENS`` screens): what a picture is meant to show may lie just below the first screen.
    Returns the picture's height in CSS pixels."""
    bottom = page.evaluate(f"document.querySelector({json.dumps(selector)}).getBoundingClientRect().bottom "
                           "+ window.scrollY")
    picture = min(round(MAX_SCREENS * viewport_height), max(viewport_height, round(bottom + 12)))
    width = page.viewport_size["width"]
    page.screenshot(path=str(path), full_page=True, clip={"x": 0, "y": 0, "width": width, "height": picture})
    return picture


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ScreenshotError(message)


def take_screenshots(base: str, token: str, out: Path, stream: str, width: int, height: int) -> dict[str, str]:
    from playwright.sync_api import sync_playwright

    notes: dict[str, str] = {}
    host = urllib.parse.urlsplit(base).netloc
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
            page = context.new_page()
            page.set_default_timeout(30_000)
            errors: list[str] = []
            outside: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            failed: list[str] = []
            # A failed request is reported with its address by the response hook, not by the console's text.
            page.on("console", lambda msg: errors.append(msg.text)
                    if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
            # No exception for /favicon.ico: the page declares an empty icon, so the browser asks for none.
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.on("request", lambda r: outside.append(r.url)
                    if urllib.parse.urlsplit(r.url).netloc not in (host, "") else None)

            def check_page(name: str) -> None:
                require(not errors, f"{name}: JavaScript errors on the page: {errors}")
                require(not outside, f"{name}: the page asked for resources outside the server: {outside}")
                require(not failed, f"{name}: requests that failed: {failed}")

            # Log in the way a person does: paste the token into the login form.
            page.goto(base + "/")
            page.fill("#token", token)
            page.click("#login button[type=submit]")
            page.wait_for_selector(".page[data-page=queue]")
            # Before logging in the page's probe of /api/me is refused (401), as it should be.
            failed.clear()

            page.click("#nav a[href='#/fleet']")
            page.wait_for_selector(".page[data-page=fleet]")
            marks = drawn_series(page, ".page[data-page=fleet]")
            require(len(marks) == 6 and all(m > 0 for m in marks), f"fleet: charts with nothing drawn: {marks}")
            # Tile subtexts wrap; one wider than its tile would be cut off at the edge.
            cut_tiles = page.eval_on_selector_all(
                ".kpi-sub", "subs => subs.filter(d => d.scrollWidth > d.clientWidth + 1).map(d => d.textContent)")
            require(not cut_tiles, f"fleet: tile subtexts wider than their tile: {cut_tiles}")
            caption = page.locator("#retrain-caption")
            caption_text = caption.inner_text().rstrip(".") if caption.count() else "no start-up tick in view"
            check_page("fleet")
            rest_mouse(page)
            tall = shoot_down_to(page, out / FILES["fleet"], ".page[data-page=fleet] .charts", height)
            notes["fleet"] = (f"{len(marks)} charts, data marks per chart {marks}; re-trainings chart: {caption_text}; "
                              f"picture {width}x{tall}")

            page.click("#nav a[href='#/queue']")
            page.wait_for_selector(".page[data-page=queue]")
            items = page.locator(".queue-item").count()
            members = page.locator(".queue-item .member").count()
            require(items > 0 and members > 0, f"queue: {items} items, {members} member streams shown")
            check_page("queue")
            rest_mouse(page)
            page.screenshot(path=str(out / FILES["queue"]))
            notes["queue"] = f"{items} items on the first page, {members} member streams listed"

            page.goto(f"{base}/#/stream/{urllib.parse.quote(stream, safe='')}")
            page.wait_for_selector(".page[data-page=stream]")
            require(page.inner_text(".stream-head h1") == stream, f"stream: the page is not {stream}'s")
            marks = drawn_series(page, ".page[data-page=stream]")
            moves = page.locator("#timeline li").count()
            require(len(marks) >= 3 and all(m > 0 for m in marks), f"stream: charts with nothing drawn: {marks}")
            require(moves >= 2, f"stream: the version timeline has {moves} entries, expected a promotion")
            # The replay runs a year of data in minutes: each move must name its tick's data, not only the clock.
            dated = page.locator("#timeline li .tick-data:has-text('data ')").count()
            require(dated == moves, f"stream: {moves - dated} of {moves} timeline entries lack their tick's data date")
            require(page.locator("#nav a.active[href='#/streams']").count() == 1,
                    "stream: the Streams tab is not highlighted")
            check_page("stream")
            # Down to the end of the version table: the timeline and the challenger checks in the picture.
            rest_mouse(page)
            tall = shoot_down_to(page, out / FILES["stream"], "#timeline + table", height)
            notes["stream"] = (f"{stream}: {len(marks)} charts, data marks per chart {marks}, {moves} champion "
                               f"moves in the timeline, all with data dates; picture {width}x{tall}")
            context.close()
        finally:
            browser.close()
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", type=Path, help="project folder (with mlma.toml), e.g. DIR/project of mlma demo")
    parser.add_argument("--token", required=True, help="an API token of the project (viewer is enough to look; "
                                                       "an operator's pages show the buttons too)")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNG files (default: docs)")
    parser.add_argument("--stream", help="unique_id of the stream to show (default: chosen from the queue)")
    parser.add_argument("--group-by", default="city", help="attribute grouping the queue (default: city; '' none)")
    parser.add_argument("--width", type=int, default=1440, help="viewport width in CSS pixels (default 1440)")
    parser.add_argument("--height", type=int, default=900, help="viewport height in CSS pixels (default 900)")
    args = parser.parse_args(argv)

    if not (args.project / "mlma.toml").is_file():
        parser.error(f"{args.project} has no mlma.toml: give the project folder (e.g. DIR/project of mlma demo)")
    if not Path(CHROMIUM).exists():
        parser.error(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    if args.width < 800 or args.height < 500:
        parser.error(f"viewport {args.width}x{args.height} is too small for the dashboard (at least 800x500)")
    args.out.mkdir(parents=True, exist_ok=True)

    server, thread, base = start_server(args.project, args.group_by or None)
    try:
        try:
            get_json(base, "/api/me", args.token)
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                parser.error("the token is unknown or revoked for this project "
                             "(mlma token create NAME --role operator --project DIR)")
            raise
        stream = args.stream
        if stream is not None:
            try:
                get_json(base, f"/api/streams/{urllib.parse.quote(stream, safe='')}?ticks=1", args.token)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    parser.error(f"--stream {stream!r} is not a stream of this project")
                raise
        else:
            stream, score = choose_stream(base, args.token)
            print(f"stream chosen: {stream} ({score} shadow promotion(s) after a degradation in its last "
                  f"{STREAM_TICKS} ticks)")
        notes = take_screenshots(base, args.token, args.out, stream, args.width, args.height)
    except ScreenshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.should_exit = True
        thread.join(10)
    for name, note in notes.items():
        print(f"{args.out / FILES[name]}: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
