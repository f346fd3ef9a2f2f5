"""Choosing a group on the page when there are many, and filtering by an attribute key that does not exist.

/api/attributes lists the 200 most common values per key, and the Fleet page's "Act ahead" form and the Streams
page's group filter offered only those: with 700 cities most could not be chosen. A group is now typed as
key=value, with the values the API finds for what is typed offered (a datalist fed by /api/attributes?q=), and
the API checks it: an unknown key in ``GET /api/streams?attr=key=value`` answered an empty list, and is a 422
naming ``attr`` and the key. The page splits key=value as the API does: at the first "=", both sides trimmed.
"""

from __future__ import annotations

import pandas as pd
import pytest

from test_browser import browser, checked_page, log_in, serving  # noqa: F401  (browser: the module's chromium fixture)

CITIES = 700


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Two streams in each of 700 cities (c000..c699, the last ones rarer than the first: 1 stream from c600 on),
    one stream whose note holds "=", and an operator."""
    from mlma.api import create_app, create_token
    from mlma.store import Store

    folder = tmp_path_factory.mktemp("browser-groups")
    store = Store.create(f"sqlite:///{folder}/mlma.db")
    cities = [f"c{i:03d}" for i in range(CITIES) for _ in range(2 if i < 600 else 1)]
    uids = [f"zone-{i:04d}" for i in range(len(cities))] + ["noted"]
    stamps = pd.date_range("2026-11-01", periods=3, freq="D")
    store.ingest_frame(pd.DataFrame({"unique_id": [u for u in uids for _ in stamps], "ds": list(stamps) * len(uids),
                                     "y": 1.0}), source="groups")
    store.set_attributes({**{u: {"city": c} for u, c in zip(uids, cities)}, "noted": {"city": "c000", "note": "a=b"}})
    token = create_token(store, "ana", "operator", by="user:root")[1]
    with serving(create_app(store, artifacts=folder / "artifacts")) as url:
        yield {"url": url, "store": store, "tokens": {"operator": token}}
    store.close()


@pytest.fixture
def page(browser):  # noqa: F811  (the imported fixture)
    with checked_page(browser) as tab:
        yield tab


def _offers(page, field: str) -> list[str]:
    return page.eval_on_selector_all(f"#{field}-values option", "os => os.map((o) => o.value)")


def _pinned(store, uid: str) -> bool:
    return store.streams().set_index("unique_id").loc[uid, "overrides"].get("pinned_until") == "forever"


def _mark_form(page) -> None:
    """Mark the form, so that its redraw after the action can be waited for (the old one is still there at first:
    a choice made in it is lost with it)."""
    page.evaluate("() => { document.getElementById('group-form').dataset.old = '1'; }")


def _wait_redrawn(page) -> None:
    page.wait_for_selector("#group-form:not([data-old])")


def test_the_act_ahead_form_acts_on_a_group_beyond_the_first_200_values(page, site):
    log_in(page, site)
    page.click("#nav a[href='#/fleet']")
    page.wait_for_selector("#group-form")
    assert "city=c650" not in _offers(page, "group-value")                # not among the 200 listed at first
    page.select_option("#group-scope", "group")
    page.select_option("#group-action", "pin")
    page.fill("#group-value", "c65")                                      # searched by the API as one types
    page.wait_for_selector("#group-value-values option[value='city=c650']", state="attached")
    assert set(_offers(page, "group-value")) == {f"city=c65{i}" for i in range(10)}
    page.fill("#group-value", "city=c650")
    page.fill("#group-form input.reason", "a rare city")
    _mark_form(page)
    page.click("#group-form button[type=submit]")
    page.wait_for_selector("#toast.show:has-text('pin by user:ana: 1 stream')")
    assert site["store"].audit_log().iloc[-1]["target"] == "group:city=c650"
    # key=value split as the API splits it: at the first "=", trimmed; a value may hold "=".
    _wait_redrawn(page)
    page.select_option("#group-scope", "group")
    page.select_option("#group-action", "pin")
    page.fill("#group-value", " note = a=b ")
    page.evaluate("() => { document.getElementById('toast').className = ''; }")
    _mark_form(page)
    page.click("#group-form button[type=submit]")
    page.wait_for_selector("#toast.show:has-text('pin by user:ana: 1 stream')")
    assert site["store"].audit_log().iloc[-1]["target"] == "group:note=a=b"
    assert _pinned(site["store"], "noted")
    # Not key=value: said on the page, nothing sent; an unknown group: refused by the API.
    _wait_redrawn(page)
    page.select_option("#group-scope", "group")
    page.select_option("#group-action", "pin")
    page.fill("#group-value", "c650")
    page.click("#group-form button[type=submit]")
    page.wait_for_selector("#toast.show.bad:has-text('is not key=value')")
    page.fill("#group-value", "city=nowhere")
    page.click("#group-form button[type=submit]")
    page.wait_for_selector("#toast.show.bad:has-text('pin refused')")


def test_the_streams_page_filters_by_any_group_and_says_when_a_key_is_unknown(page, site):
    log_in(page, site)
    page.goto(site["url"] + "/#/streams")
    page.wait_for_selector(".page[data-page=streams] #stream-attr")
    page.fill("#stream-attr", "city=c699")
    page.press("#stream-attr", "Enter")
    page.wait_for_selector(".page[data-page=streams] .muted:text-matches('^1 stream ·')")
    assert page.locator("table.streams a.stream-link").all_inner_texts() == ["zone-1299"]
    assert page.input_value("#stream-attr") == "city=c699"
    page.fill("#stream-attr", "note=a=b")
    page.press("#stream-attr", "Enter")
    page.wait_for_selector(".page[data-page=streams] table.streams a.stream-link:text-is('noted')")
    # A key no stream has: a 422 naming attr and the key, shown under the form (it was an empty list).
    page.fill("#stream-attr", "cty=c003")
    page.press("#stream-attr", "Enter")
    page.wait_for_selector(".page[data-page=streams] #filter-error")
    said = page.inner_text("#filter-error")
    assert "attr:" in said and "'cty'" in said, said
    assert page.input_value("#stream-attr") == "cty=c003"


def test_an_unknown_attribute_key_is_a_422_naming_it_and_an_unknown_value_an_empty_list(page, site):
    log_in(page, site)
    ask = "(u) => fetch(u).then(async (r) => [r.status, await r.json()])"
    status, body = page.evaluate(ask, "/api/streams?attr=cty=c003")
    assert status == 422 and body["detail"][0]["loc"] == ["query", "attr"], body
    assert "'cty'" in body["detail"][0]["msg"] and "city" in body["detail"][0]["msg"], body
    status, body = page.evaluate(ask, "/api/streams?attr=city=nowhere")
    assert status == 200 and body["total"] == 0, body
    status, body = page.evaluate(ask, "/api/attributes?q=C69&limit=3")
    assert status == 200 and [x["value"] for x in body["city"]] == ["c690", "c691", "c692"], body
    status, body = page.evaluate(ask, "/api/attributes")
    assert len(body["city"]) == 200
