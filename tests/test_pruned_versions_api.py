"""The REST API and the dashboard's stream page with versions whose artifact version retention pruned
(`[registry] keep_versions`, `mlma prune --versions`): the version list says when, and a roll-back or promotion
to such a version is refused with 422 naming the stream, the version and the setting, moving nothing."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from mlma.api import auth, create_app, schemas
from mlma.api.sample import build_sample_fleet
from mlma.registry import ModelRegistry
from mlma.store import Store
from mlma.store.testing import postgres_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request, tmp_path):
    """A sample fleet behind the API; one promoted stream re-trained twice more (versions 3 and 4 promoted in
    turn: 4 serves, 3 is the roll-back target), then pruned to its newest version: 1 and 2 lose their files."""
    if request.param == "postgresql":
        schema = postgres_schema(request.getfixturevalue("postgres_server"))
        url = schema.__enter__()
        request.addfinalizer(lambda: schema.__exit__(None, None, None))
    else:
        url = f"sqlite:///{tmp_path}/mlma.db"
    store = Store.create(url)
    request.addfinalizer(store.close)
    artifacts = tmp_path / "artifacts"
    fleet = build_sample_fleet(store, artifacts, n_streams=8, n_ticks=6)
    registry = ModelRegistry(store, artifacts)
    uid = fleet.promoted[0]
    assert [v.version for v in registry.versions(uid)] == [1, 2] and registry.champion(uid).version == 2
    for n in (3, 4):
        registry.register(uid, {"sample": True, "version": n}, spec="seasonal-naive", promote=True)
    registry.prune_versions(1, by="user:ana", reason="disk")
    assert [v.version for v in registry.versions(uid) if v.pruned] == [1, 2]
    tokens = {role: auth.create_token(store, f"{role}-1", role, by="user:root")[1] for role in ("viewer", "operator")}
    client = TestClient(create_app(store, artifacts=artifacts))
    return {"store": store, "registry": registry, "uid": uid, "client": client, "tokens": tokens,
            "headers": {role: {"Authorization": f"Bearer {token}"} for role, token in tokens.items()}}


def test_the_stream_page_says_when_a_versions_artifact_was_pruned(site):
    uid, registry = site["uid"], site["registry"]
    answer = site["client"].get(f"/api/streams/{uid}", headers=site["headers"]["viewer"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    schemas.StreamDetail.model_validate(body)
    listed = {v["version"]: v["artifact_pruned_at"] for v in body["versions"]}
    assert listed == {1: registry.version(uid, 1).artifact_pruned_at.isoformat(),
                      2: registry.version(uid, 2).artifact_pruned_at.isoformat(), 3: None, 4: None}
    assert [v["serving"] for v in body["versions"]] == [False, False, False, True]
    # The typed answer declares it (the OpenAPI schema clients generate their code from).
    version = site["client"].get("/openapi.json").json()["components"]["schemas"]["ModelVersion"]
    assert "artifact_pruned_at" in version["required"]
    assert {"type": "null"} in version["properties"]["artifact_pruned_at"]["anyOf"]


@pytest.mark.browser
@pytest.mark.parametrize("site", ["sqlite"], indirect=True)
def test_the_dashboards_version_list_says_which_artifacts_were_pruned_and_offers_them_no_move(site):
    """In a real browser (as tests/test_browser.py, skipped like it without chromium)."""
    from test_browser import CHROMIUM, playwright_api, serving

    uid, registry = site["uid"], site["registry"]
    day = f"{registry.version(uid, 1).artifact_pruned_at:%Y-%m-%d}"
    with serving(site["client"].app) as url, playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url + "/")
            page.fill("#token", site["tokens"]["operator"])
            page.click("#login button[type=submit]")
            page.wait_for_selector(".page[data-page=queue]")
            page.goto(url + f"/#/stream/{uid}")
            rows = page.locator(".page[data-page=stream] section:has(h2:text-is('Model versions')) tbody tr")
            rows.first.wait_for()
            texts = [" ".join(text.split()) for text in rows.all_inner_texts()]   # newest first
            buttons = [rows.nth(i).locator("button").all_inner_texts() for i in range(rows.count())]
        finally:
            browser.close()
    assert not errors, errors
    assert [text.split()[0] for text in texts] == ["v4", "v3", "v2", "v1"], texts
    assert [f"(artifact pruned {day})" in text for text in texts] == [False, False, True, True], texts
    assert buttons == [[], ["Roll back to v3"], [], []]


@pytest.mark.parametrize(("action", "body", "field"), [
    ("rollback", {"to_version": 1, "reason": "v4 over-forecasts"}, "to_version"),
    ("rollback", {"to_version": 2, "from_version": 4}, "to_version"),
    ("promote", {"version": 2, "reason": "try"}, "version"),
])
def test_putting_a_pruned_version_back_in_service_is_422_naming_the_stream_the_version_and_the_setting(
        site, action, body, field):
    uid, registry, store = site["uid"], site["registry"], site["store"]
    audited = len(store.audit_log())
    version = body.get("to_version", body.get("version"))
    refused = site["client"].post(f"/api/actions/{action}", json={"stream": uid, **body},
                                  headers=site["headers"]["operator"])
    assert refused.status_code == 422, refused.text
    problem = refused.json()["detail"][0]
    assert problem["loc"] == ["body", field]
    said = problem["msg"]
    doing = "roll back" if action == "rollback" else "promote"
    assert f"cannot {doing} stream {uid!r} to version {version}" in said, said
    assert f"version {version}'s artifact was pruned on" in said and "[registry] keep_versions" in said, said
    assert registry.champion(uid).version == 4 and len(store.audit_log()) == audited   # nothing moved or audited
    # The roll-back target kept its file: rolling back to it works.
    done = site["client"].post("/api/actions/rollback", json={"stream": uid, "from_version": 4},
                               headers=site["headers"]["operator"])
    assert done.status_code == 200 and done.json()["detail"] == {"version": 3}, done.text
