"""The REST API over a store filled like the live tick fills it: reads, every action, every role, sessions.

Each test runs on SQLite and on the real PostgreSQL server (``postgres_server`` in conftest.py). The store
is built once per backend with :func:`mlma.api.sample.build_sample_fleet` (real ``write_tick`` /
``ModelRegistry`` writes); tests that act check the effect in the store itself and in the audit log, and
the reads are compared with the same facts computed independently from the store's pandas readers.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import fastapi.routing
import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from mlma.api import auth, create_app, schemas
from mlma.api.sample import SampleFleet, build_sample_fleet
from mlma.registry import ModelRegistry
from mlma.store import Store
from mlma.store import queries
from mlma.store import schema as S
from mlma.store.testing import postgres_schema

ROLES = ("viewer", "operator", "admin")


@dataclass
class Env:
    store: Store
    client: TestClient
    fleet: SampleFleet
    tokens: dict[str, str]
    registry: ModelRegistry
    backend: str
    last_act: httpx.Response | None = None

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def get(self, path: str, role: str = "viewer", **kw) -> httpx.Response:
        return self.client.get(path, headers=self.auth(role), **kw)

    def act(self, name: str, body: dict, role: str = "operator") -> httpx.Response:
        self.last_act = self.client.post(f"/api/actions/{name}", json=body, headers=self.auth(role))
        return self.last_act

    def last_audit(self) -> pd.Series:
        return self.store.audit_log().iloc[-1]

    def overrides(self, uid: str) -> dict:
        table = self.store.streams()
        return table.loc[table["unique_id"] == uid, "overrides"].iloc[0] or {}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(request, tmp_path_factory) -> Env:
    folder = tmp_path_factory.mktemp(f"api-{request.param}")
    if request.param == "postgresql":
        schema = postgres_schema(request.getfixturevalue("postgres_server"))
        url = schema.__enter__()
        request.addfinalizer(lambda: schema.__exit__(None, None, None))
    else:
        url = f"sqlite:///{folder}/mlma.db"
    store = Store.create(url)
    request.addfinalizer(store.close)
    fleet = build_sample_fleet(store, folder / "artifacts", n_streams=24, n_ticks=8)
    tokens = {role: auth.create_token(store, f"{role}-1", role, by="user:root")[1] for role in ROLES}
    client = TestClient(create_app(store, artifacts=folder / "artifacts"))
    return Env(store, client, fleet, tokens, ModelRegistry(store, folder / "artifacts"), request.param)


# -- who may do what ---------------------------------------------------------------------------------------
READS = ["/api/me", "/api/fleet", "/api/streams", "/api/streams/zone-0001", "/api/attributes", "/api/escalations",
         "/api/escalations/items", "/api/actions", "/api/audit", "/api/abnormal-periods"]


@pytest.mark.parametrize("path", READS)
def test_reads_need_a_valid_token_and_a_viewer_may_read(env, path):
    missing = env.client.get(path)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert env.client.get(path, headers={"Authorization": "Bearer mlma_not-a-token"}).status_code == 401
    assert env.client.get(path, headers={"Authorization": "Basic dXNlcjpwdw=="}).status_code == 401
    assert env.get(path, "viewer").status_code == 200


def _valid_bodies(env: Env) -> dict[str, dict]:
    """A body each action would accept (for the role checks: none of them may be carried out)."""
    uid = env.fleet.unique_ids[3]
    return {"retrain": {"streams": [uid]}, "pin": {"streams": [uid]}, "unpin": {"streams": [uid]},
            "reset-reference": {"streams": [uid]}, "require-approval": {"streams": [uid]},
            "set-params": {"streams": [uid], "params": {"delta": 0.2}},
            "mark-abnormal": {"streams": [uid], "start": "2026-12-24", "end": "2026-12-25"},
            "cancel-abnormal": {"ids": [1]}, "cancel-action": {"ids": [1]},
            "rollback": {"stream": env.fleet.promoted[0]}, "promote": {"stream": uid, "version": 1},
            "approve": {"stream": uid}, "reject": {"stream": uid}, "silence": {"ids": [1], "until": "4h"},
            "acknowledge": {"ids": [1]}, "resolve": {"ids": [1]}, "reopen": {"ids": [1]}}


ACTIONS = ["retrain", "pin", "unpin", "reset-reference", "require-approval", "set-params", "mark-abnormal",
           "cancel-abnormal", "cancel-action", "rollback", "promote", "approve", "reject", "silence", "acknowledge",
           "resolve", "reopen"]


@pytest.mark.parametrize("action", ACTIONS)
def test_a_viewer_cannot_act_and_nobody_acts_without_a_token(env, action):
    body = _valid_bodies(env)[action]
    before = len(env.store.audit_log())
    denied = env.act(action, body, "viewer")
    assert denied.status_code == 403, denied.text
    assert "viewer" in denied.json()["detail"] and "operator" in denied.json()["detail"]
    assert env.client.post(f"/api/actions/{action}", json=body).status_code == 401
    assert env.client.post(f"/api/actions/{action}", json=body,
                           headers={"Authorization": "Bearer mlma_forged"}).status_code == 401
    assert len(env.store.audit_log()) == before


def test_only_an_admin_manages_tokens_and_tokens_are_stored_hashed(env):
    for role in ("viewer", "operator"):
        assert env.client.get("/api/tokens", headers=env.auth(role)).status_code == 403
        assert env.client.post("/api/tokens", json={"name": "x", "role": "viewer"},
                               headers=env.auth(role)).status_code == 403
        assert env.client.delete("/api/tokens/viewer-1", headers=env.auth(role)).status_code == 403
    made = env.client.post("/api/tokens", json={"name": "grafana", "role": "viewer"}, headers=env.auth("admin"))
    assert made.status_code == 201
    plain = made.json()["token"]
    with env.store._read() as conn:
        rows = conn.execute(sa.select(S.api_tokens.c.token_sha256).where(S.api_tokens.c.name == "grafana")).all()
    assert [r.token_sha256 for r in rows] == [auth.hash_token(plain)]
    listed = env.client.get("/api/tokens", headers=env.auth("admin")).json()
    assert "grafana" in [t["name"] for t in listed] and all("token" not in t for t in listed)
    assert plain not in env.client.get("/api/tokens", headers=env.auth("admin")).text
    assert env.client.post("/api/tokens", json={"name": "grafana", "role": "viewer"},
                           headers=env.auth("admin")).status_code == 409
    assert env.client.get("/api/me", headers={"Authorization": f"Bearer {plain}"}).json()["role"] == "viewer"
    assert env.client.delete("/api/tokens/grafana", headers=env.auth("admin")).status_code == 200
    assert env.client.get("/api/me", headers={"Authorization": f"Bearer {plain}"}).status_code == 401
    assert env.client.delete("/api/tokens/grafana", headers=env.auth("admin")).status_code == 404
    assert env.client.post("/api/tokens", json={"name": "bad name!", "role": "viewer"},
                           headers=env.auth("admin")).status_code == 422


def test_the_last_admin_token_cannot_be_revoked_over_the_api_and_names_differ_in_more_than_case(env):
    """An admin could revoke the last admin token, its own, and nobody could manage tokens over the API any
    more; and tokens `op` and `OP` could both be active, two people in the audit log who read as one."""
    admin = env.auth("admin")
    second = env.client.post("/api/tokens", json={"name": "admin-2", "role": "admin"}, headers=admin).json()["token"]
    too_long = env.client.delete("/api/tokens/admin-2", params={"reason": "x" * 3000}, headers=admin)
    assert too_long.status_code == 422 and too_long.json()["detail"][0]["loc"] == ["query", "reason"], too_long.text
    gone = env.client.delete("/api/tokens/admin-2", params={"reason": "left the team"},
                             headers={"Authorization": f"Bearer {second}"})
    assert gone.status_code == 200
    assert env.store.audit_log(action="token-revoke", target="token:admin-2")["reason"].tolist() == ["left the team"]
    refused = env.client.delete("/api/tokens/admin-1", headers=admin)
    assert refused.status_code == 409 and "the last active admin token" in refused.json()["detail"], refused.text
    assert env.client.get("/api/tokens", headers=admin).status_code == 200          # still an admin
    assert env.store.audit_log(action="token-revoke", target="token:admin-1").empty  # nothing audited
    taken = env.client.post("/api/tokens", json={"name": "Viewer-1", "role": "viewer"}, headers=admin)
    assert taken.status_code == 409 and "'viewer-1': names differ in more than case" in taken.text, taken.text
    audit = env.store.audit_log()
    assert {"token-create", "token-revoke"} <= set(audit["action"])
    # The revoked token's name is free again.
    again = env.client.post("/api/tokens", json={"name": "grafana", "role": "operator"}, headers=env.auth("admin"))
    assert again.status_code == 201 and again.json()["role"] == "operator"


def test_a_token_records_when_it_was_last_used(env):
    assert env.get("/api/me").status_code == 200          # the viewer's token, used by this test itself
    info = {t.name: t for t in auth.list_tokens(env.store)}
    assert info["viewer-1"].last_used_at is not None


def test_a_read_neither_waits_for_nor_fails_on_recording_its_tokens_use(tmp_path, monkeypatch):
    """Recording a token's last use is a write: while a tick's commit held SQLite's write lock, a scrape of
    /metrics or any read waited out the busy timeout and answered 500; on a read-only store every token's first
    request each minute did. Now the touch is made only if it can be at once, and tried again later."""
    import sqlite3

    import mlma.store.engine as engine

    path = tmp_path / "mlma.db"
    store = Store.create(f"sqlite:///{path}?timeout=1")
    _, plain = auth.create_token(store, "scraper", "viewer", by="user:test")
    client = TestClient(create_app(store), raise_server_exceptions=False)
    headers = {"Authorization": f"Bearer {plain}"}
    tick = sqlite3.connect(path, isolation_level=None)
    tick.execute("BEGIN IMMEDIATE")                        # what a tick's write transaction holds
    try:
        for route in ("/api/me", "/metrics"):
            answer = client.get(route, headers=headers)
            assert answer.status_code == 200, (route, answer.text)
    finally:
        tick.execute("ROLLBACK")
        tick.close()
    assert auth.list_tokens(store)[0].last_used_at is None  # not recorded while locked...
    assert client.get("/api/me", headers=headers).status_code == 200
    assert auth.list_tokens(store)[0].last_used_at is not None  # ...but by the next request, within the minute
    store.close()

    monkeypatch.setattr(engine, "sqlite_open_mode", lambda path: "mode=ro")  # as for a file this user cannot write
    read_only = Store.open(f"sqlite:///{path}")
    assert read_only.read_only
    client = TestClient(create_app(read_only), raise_server_exceptions=False)
    for _ in range(2):
        assert client.get("/api/fleet", headers=headers).status_code == 200
    read_only.close()


# -- bad input: 422 naming the field -----------------------------------------------------------------------
def _bad_inputs(env: Env) -> list[tuple[str, dict, str]]:
    uid = env.fleet.unique_ids[4]
    return [
        ("retrain", {}, "streams"),
        ("retrain", {"streams": []}, "streams"),
        ("retrain", {"streams": ["no-such-zone"]}, "streams"),
        ("retrain", {"group": {"city": "atlantis"}}, "group"),
        ("retrain", {"streams": [uid], "direct": "perhaps"}, "direct"),
        ("retrain", {"streams": [uid], "bogus": 1}, "bogus"),
        # Values only of their field's JSON type: a person's mistyped action is refused, not coerced.
        ("retrain", {"streams": [uid], "direct": "yes"}, "direct"),
        ("retrain", {"streams": [uid], "direct": 1}, "direct"),
        ("reset-reference", {"streams": [uid], "rebase": "true"}, "rebase"),
        ("rollback", {"stream": uid, "to_version": True}, "to_version"),
        ("promote", {"stream": uid, "version": "1"}, "version"),
        ("acknowledge", {"ids": ["1"]}, "ids"),
        ("set-params", {"streams": [uid], "params": {"delta": "0.1"}}, "delta"),
        ("pin", {"streams": [uid], "until": "next tuesday-ish"}, "until"),
        ("pin", {"streams": [uid], "group": {"city": "c01"}}, "streams"),
        ("unpin", {"group": {}}, "group"),
        ("set-params", {"streams": [uid], "params": {"delta": -1}}, "delta"),
        ("set-params", {"streams": [uid], "params": {"cooldown_ticks": 2.5}}, "cooldown_ticks"),
        ("set-params", {"streams": [uid], "params": {"alpha": 0.1}}, "params"),
        ("set-params", {"streams": [uid]}, "params"),
        ("set-params", {"streams": ["no-such-zone"], "params": {"delta": 0.2}}, "streams"),  # was put on params
        ("set-params", {"group": {"city": "atlantis"}, "params": {"delta": 0.2}}, "group"),
        ("reset-reference", {"streams": [uid], "rebase": [1]}, "rebase"),
        ("require-approval", {"streams": "zone-0001"}, "streams"),
        ("mark-abnormal", {"start": "2026-12-27", "end": "2026-12-24"}, "end"),
        ("mark-abnormal", {"start": "christmas", "end": "2026-12-24"}, "start"),
        ("mark-abnormal", {"start": "2026-12-24"}, "end"),
        ("cancel-abnormal", {"ids": [987654]}, "ids"),
        ("cancel-action", {"ids": [987654]}, "ids"),
        ("silence", {"ids": [1], "until": "-4h"}, "until"),
        ("silence", {"ids": [1]}, "until"),
        ("acknowledge", {"ids": []}, "ids"),
        ("acknowledge", {"ids": ["one"]}, "ids"),
        ("rollback", {"stream": "no-such-zone"}, "stream"),
        ("rollback", {"stream": uid, "to_version": 9}, "to_version"),
        ("rollback", {"stream": uid, "to_version": 0}, "to_version"),
        ("promote", {"stream": uid, "version": 9}, "version"),
        ("promote", {"stream": uid}, "version"),
        ("approve", {}, "stream"),
        ("reject", {"stream": "no-such-zone"}, "stream"),
        # Text no database can store is refused by the field it is in (it was named ["body"] alone).
        ("pin", {"streams": [uid], "reason": "a\x00b"}, "reason"),
        ("retrain", {"streams": [uid + "\x00"]}, "streams"),
        ("unpin", {"group": {"city": "c\x0001"}}, "group"),
        ("mark-abnormal", {"start": "2026-12-24\x00", "end": "2026-12-27"}, "start"),
    ]


@pytest.mark.parametrize("action", ["acknowledge", "resolve", "reopen"])
def test_unknown_escalation_ids_are_422_and_leave_no_audit_entry(env, action):
    before = len(env.store.audit_log())
    r = env.act(action, {"ids": [987654]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "ids"]
    assert len(env.store.audit_log()) == before


def test_bad_input_is_422_naming_the_field(env):
    before = len(env.store.audit_log())
    for action, body, field in _bad_inputs(env):
        r = env.act(action, body)
        assert r.status_code == 422, (action, body, r.status_code, r.text)
        # The field's name is in the error's loc: last, or before an index or a union member's type ("float").
        fields = {part for d in r.json()["detail"] for part in d["loc"][1:] if isinstance(part, str)}
        assert field in fields, (action, body, r.json())
    assert len(env.store.audit_log()) == before


@pytest.mark.parametrize("query, field", [("sort=bogus", "sort"), ("verdict=sideways", "verdict"),
                                          ("attr=city", "attr"), ("per_page=0", "per_page"), ("page=0", "page"),
                                          ("sort=--loss", "sort")])
def test_bad_query_parameters_are_422_naming_them(env, query, field):
    r = env.get(f"/api/streams?{query}")
    assert r.status_code == 422
    assert any(d["loc"][-1] == field for d in r.json()["detail"]), r.json()


@pytest.mark.parametrize("path", ["/api/actions", "/api/audit", "/api/abnormal-periods"])
def test_a_list_filtered_by_an_unknown_stream_is_422_not_empty(env, path):
    """An empty list for a misspelt stream reads as "nothing happened to it"."""
    r = env.get(path, params={"stream": "no-such-zone"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "stream"], r.json()
    assert "unknown stream 'no-such-zone'" in r.json()["detail"][0]["msg"]
    assert env.get(path, params={"stream": f" {env.fleet.unique_ids[0]} "}).status_code == 200


def test_unknown_stream_is_404(env):
    assert env.get("/api/streams/no-such-zone").status_code == 404


def test_a_stream_is_read_by_the_id_rule_its_actions_and_filters_follow(env):
    """`/api/stream?unique_id= zone-1` was a 404 while a pin of " zone-1 " and `audit?stream= zone-1` found it:
    reading one stream follows the ids' one rule too (here the white space around it)."""
    from urllib.parse import quote

    uid = env.fleet.unique_ids[0]
    for given in (f" {uid}", f"{uid}\t"):
        for answer in (env.get("/api/stream", params={"unique_id": given}),
                       env.get("/api/streams/" + quote(given, safe=""))):
            assert answer.status_code == 200 and answer.json()["unique_id"] == uid, (given, answer.text)
    assert env.get("/api/stream", params={"unique_id": uid + "x"}).status_code == 404


def test_a_read_on_a_postgresql_store_that_refuses_writes_does_not_fail_on_the_tokens_use(postgres_server):
    """A read-only PostgreSQL (a standby, default_transaction_read_only, a role that may not write) refused the
    last-use write with an error other than a lock's: the token's first request each minute answered 500."""
    with postgres_schema(postgres_server) as url:
        with Store.create(url) as store:
            _, plain = auth.create_token(store, "scraper", "viewer", by="user:test")
        parsed = sa.make_url(url)
        schema = parsed.query["options"].split("=", 1)[1]
        read_only = parsed.update_query_dict({"options": f"-csearch_path={schema} "
                                                         "-cdefault_transaction_read_only=on"})
        with Store.open(read_only.render_as_string(hide_password=False)) as store:
            client = TestClient(create_app(store), raise_server_exceptions=False)
            for route in ("/api/me", "/api/fleet", "/metrics"):
                answer = client.get(route, headers={"Authorization": f"Bearer {plain}"})
                assert answer.status_code == 200, (route, answer.text)


def test_an_unknown_query_parameter_is_refused_naming_it(env):
    """A misspelled filter was ignored: /api/streams?verdit=degraded answered every stream, which read as a
    filter that found them all. Every route refuses a parameter it does not take (as bodies refuse fields)."""
    answer = env.get("/api/streams", params={"verdit": "degraded"})
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"][0]
    assert detail["loc"] == ["query", "verdit"] and "unknown query parameter 'verdit'" in detail["msg"]
    assert "verdict" in detail["msg"]                               # what it takes, to mend the typo
    assert env.get("/api/streams", params={"verdict": "degraded"}).status_code == 200
    # Parameters of the route's dependencies count as its own; a route without any refuses every one.
    assert env.get("/api/streams/" + env.fleet.unique_ids[0], params={"ticks": 5}).status_code == 200
    assert env.get("/api/me", params={"x": "1"}).status_code == 422
    acted = env.client.post("/api/actions/pin", params={"dry_run": "1"}, headers=env.auth("operator"),
                            json={"streams": [env.fleet.unique_ids[0]]})
    assert acted.status_code == 422 and acted.json()["detail"][0]["loc"] == ["query", "dry_run"], acted.text
    assert not env.store.stream_overrides([env.fleet.unique_ids[0]])        # nothing was done


def test_every_route_answers_the_same_with_a_trailing_slash_and_never_redirects(env):
    """``/api/fleet/`` was a redirect to an absolute URL built from the scheme the server sees, which behind a
    proxy that ends TLS is http: a client following it sent its token in the clear. Every route now answers
    with or without the slash, as it is."""
    proxied = {**env.auth("admin"), "X-Forwarded-Proto": "https"}
    routes = _api_routes(env.client.app)
    assert len(routes) >= 36, [r.path for r in routes]
    # A stream id may hold a slash: /api/streams/zone-1/ is the stream 'zone-1/', the stream route's path as it
    # is; /api/streams/ is the list (checked below: the stream route took it as the stream '', a 404).
    ids_take_slashes = tuple(r.path.split("{")[0] for r in routes if r.path.endswith(":path}"))
    for route in routes:
        path = route.path.replace("{name}", "no-such-token")
        if (path + "/").startswith(ids_take_slashes):
            continue
        for method in route.methods:
            # An empty body: every action and the log-in refuse it (422), so nothing is done twice.
            body = {} if method == "POST" else None
            plain = env.client.request(method, path, headers=proxied, json=body, follow_redirects=False)
            slashed = env.client.request(method, path + "/", headers=proxied, json=body, follow_redirects=False)
            assert "location" not in slashed.headers, (method, path, slashed.headers["location"])
            assert slashed.status_code == plain.status_code, (method, path, slashed.status_code, slashed.text)
    assert env.get("/api/fleet/").json() == env.get("/api/fleet").json()
    listed = env.get("/api/streams", params={"per_page": 5})
    assert listed.status_code == 200 and listed.json()["total"] > 0
    assert env.get("/api/streams/", params={"per_page": 5}).json() == listed.json()
    assert env.client.get("/api/nowhere/", headers=proxied, follow_redirects=False).status_code == 404


# -- every action, carried out by an operator --------------------------------------------------------------
def _check_audit(env: Env, action: str, target: str | None, reason: str | None,
                 answer: httpx.Response | None = None) -> pd.Series:
    """The audit log's last entry is the action's, and the action's answer (default: the last ``env.act``'s)
    names it."""
    entry = env.last_audit()
    assert (answer or env.last_act).json()["audit_id"] == int(entry["id"])
    assert entry["actor"] == "user:operator-1"
    assert entry["action"] == action
    if target is not None:
        assert entry["target"] == target
    assert (None if pd.isna(entry["reason"]) else entry["reason"]) == reason
    return entry


def test_retrain_one_stream_directly_and_a_group(env):
    uid = env.fleet.unique_ids[0]
    r = env.act("retrain", {"streams": [uid], "direct": True, "reason": "launch in this zone"})
    assert r.status_code == 200 and r.json()["queued"] == 1 and r.json()["by"] == "user:operator-1"
    _check_audit(env, "retrain", f"stream:{uid}", "launch in this zone")
    pending = env.client.get(f"/api/actions?status=pending&stream={uid}", headers=env.auth("viewer")).json()["items"]
    assert pending[0]["kind"] == "retrain" and pending[0]["params"] == {"direct": True}
    assert pending[0]["created_by"] == "user:operator-1"

    r = env.act("retrain", {"group": {"city": "c03"}, "reason": "new depot"})
    members = [u for u, c in zip(env.fleet.unique_ids, _cities(env)) if c == "c03"]
    assert sorted(r.json()["streams"]) == sorted(members) and r.json()["queued"] == len(members)
    _check_audit(env, "retrain", "group:city=c03", "new depot")


def _cities(env: Env) -> list[str]:
    table = env.store.streams().set_index("unique_id")
    return [table.loc[u, "attributes"]["city"] for u in env.fleet.unique_ids]


def test_pin_until_a_date_then_forever_then_unpin(env):
    uid = env.fleet.unique_ids[5]
    until = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=25)).strftime("%Y-%m-%d")   # pins end in the future
    r = env.act("pin", {"streams": [uid], "until": f"{until}T00:00", "reason": "holiday week"})
    assert r.status_code == 200
    assert env.overrides(uid)["pinned_until"].startswith(f"{until}T00:00:00")
    _check_audit(env, "pin", f"stream:{uid}", "holiday week")
    assert env.act("pin", {"streams": [uid]}).status_code == 200
    assert env.overrides(uid)["pinned_until"] == "forever"
    listed = env.get("/api/streams?pinned=true").json()
    assert uid in [s["unique_id"] for s in listed["items"]]
    assert env.act("unpin", {"streams": [uid], "reason": "holiday over"}).status_code == 200
    assert "pinned_until" not in env.overrides(uid)
    entry = _check_audit(env, "unpin", f"stream:{uid}", "holiday over")
    # Sent again (a retry), or on a stream that is not pinned: nothing changes and nothing is audited.
    again = env.act("unpin", {"streams": [uid], "reason": "holiday over"})
    assert again.status_code == 200 and again.json()["changed"] == 0 and again.json()["audit_id"] is None
    assert "nothing changed" in again.json()["detail"]["note"] and env.last_audit()["id"] == entry["id"]
    mixed = env.act("pin", {"streams": [uid, env.fleet.unique_ids[6]], "reason": "one of two"})
    env.act("pin", {"streams": [uid], "reason": "one of two"})
    assert mixed.json()["changed"] == 2 and env.last_act.json()["changed"] == 0
    both = env.act("unpin", {"streams": [uid, env.fleet.unique_ids[6]]})
    assert both.json()["changed"] == 2 and both.json()["audit_id"] == int(env.last_audit()["id"])


def test_pin_a_city_group(env):
    r = env.act("pin", {"group": {"city": "c02"}, "reason": "city festival"})
    assert r.status_code == 200
    members = [u for u, c in zip(env.fleet.unique_ids, _cities(env)) if c == "c02"]
    assert all(env.overrides(u).get("pinned_until") == "forever" for u in members)
    _check_audit(env, "pin", "group:city=c02", "city festival")
    assert env.act("unpin", {"group": {"city": "c02"}}).status_code == 200
    assert not any("pinned_until" in env.overrides(u) for u in members)


def test_a_refused_pin_names_the_streams_it_was_for(env):
    members = [u for u, c in zip(env.fleet.unique_ids, _cities(env)) if c == "c02"]
    before = len(env.store.audit_log())
    r = env.act("pin", {"group": {"city": "c02"}, "until": "2020-01-01T00:00"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "until"], r.json()
    named = f"nothing was pinned (group:city=c02, {len(members)} streams: {', '.join(members[:3])} and "
    assert "until must be in the future" in r.json()["detail"][0]["msg"] and named in r.json()["detail"][0]["msg"]
    r = env.act("pin", {"streams": members[:1], "until": "2020-01-01T00:00"})
    assert r.json()["detail"][0]["msg"].endswith(f"; nothing was pinned (1 stream: {members[0]})"), r.json()
    assert len(env.store.audit_log()) == before and not any("pinned_until" in env.overrides(u) for u in members)


def test_require_approval_and_approve_or_reject(env):
    uid = env.fleet.unique_ids[6]
    assert env.act("require-approval", {"streams": [uid], "reason": "big client"}).status_code == 200
    assert env.overrides(uid)["needs_approval"] is True
    _check_audit(env, "require-approval", f"stream:{uid}", "big client")
    for action in ("approve", "reject"):  # nothing waits yet: refused, rather than queued to do nothing
        r = env.act(action, {"stream": uid, "reason": "too early"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "stream"]
        assert "no model waiting for approval" in r.json()["detail"][0]["msg"]
    waiting = env.registry.register(uid, {"sample": True}, spec="seasonal-naive",
                                    check={"result": "awaiting-approval"})
    for action in ("approve", "reject"):
        r = env.act(action, {"stream": uid, "reason": f"{action} after a look"})
        assert r.status_code == 200 and r.json()["queued"] == 1
        _check_audit(env, action, f"stream:{uid}", f"{action} after a look")
    kinds = [a["kind"] for a in env.get(f"/api/actions?stream={uid}&status=pending").json()["items"]]
    assert kinds[:2] == ["reject", "approve"]
    for action in ("reject", "approve"):
        env.act("cancel-action", {"ids": [a["id"] for a in env.get(
            f"/api/actions?stream={uid}&status=pending").json()["items"] if a["kind"] == action][:1]})
    # Put in service by hand: its check still reads awaiting-approval (as stores of older versions keep it),
    # but nothing newer than the serving version waits.
    env.registry.promote(uid, waiting.version, by="user:ana", reason="by hand")
    assert env.act("approve", {"stream": uid}).status_code == 422
    assert env.act("require-approval", {"streams": [uid], "required": False}).status_code == 200
    assert "needs_approval" not in env.overrides(uid)


def test_set_params_and_restore_the_default(env):
    uid = env.fleet.unique_ids[7]
    r = env.act("set-params", {"streams": [uid], "params": {"delta": 0.15, "cooldown_ticks": 4}, "reason": "noisy"})
    assert r.status_code == 200
    assert env.overrides(uid)["delta"] == 0.15 and env.overrides(uid)["cooldown_ticks"] == 4
    detail = env.get(f"/api/streams/{uid}").json()
    assert detail["params"]["delta"] == 0.15 and detail["params"]["cooldown_ticks"] == 4
    _check_audit(env, "set-params", f"stream:{uid}", "noisy")
    restored = env.act("set-params", {"streams": [uid], "params": {"delta": None, "cooldown_ticks": None}})
    assert restored.status_code == 200
    assert "delta" not in env.overrides(uid)
    assert env.get(f"/api/streams/{uid}").json()["params"]["delta"] == 0.05


def test_reset_and_rebase_reference_are_queued(env):
    uid = env.fleet.unique_ids[8]
    assert env.act("reset-reference", {"streams": [uid]}).status_code == 200
    _check_audit(env, "reset-reference", f"stream:{uid}", None)
    assert env.act("reset-reference", {"streams": [uid], "rebase": True, "reason": "new normal"}).status_code == 200
    _check_audit(env, "rebase-reference", f"stream:{uid}", "new normal")
    items = env.get(f"/api/actions?stream={uid}").json()["items"]
    assert [(a["kind"], a["params"]) for a in items[:2]] == [("reset-reference", {"rebase": True}),
                                                             ("reset-reference", {"rebase": False})]
    # The log filtered by the action as the API names it finds both (the re-base was missed).
    found = env.get("/api/audit", params={"action": "reset-reference", "stream": uid}).json()["items"]
    assert [a["action"] for a in found[:2]] == ["rebase-reference", "reset-reference"], found


def test_a_misspelt_grouping_key_is_422_not_a_queue_without_groups(env):
    """`escalations?group_by=citi` answered a queue whose items had no group: a 422 naming the field and the
    keys there are, as a misspelt `attr` key is."""
    r = env.get("/api/escalations", params={"group_by": "citi"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "group_by"], r.text
    assert "no stream has the attribute 'citi' (group_by=citi); the keys are: city" in r.text
    assert env.get("/api/escalations", params={"group_by": "city"}).json()["group_by"] == "city"


def test_cancel_a_queued_action(env):
    uid = env.fleet.unique_ids[9]
    env.act("retrain", {"streams": [uid]})
    action_id = env.get(f"/api/actions?stream={uid}&status=pending").json()["items"][0]["id"]
    assert env.act("cancel-action", {"ids": [action_id], "reason": "not needed"}).status_code == 200
    assert env.get(f"/api/actions?stream={uid}").json()["items"][0]["status"] == "cancelled"
    _check_audit(env, "cancel-action", None, "not needed")
    assert env.act("cancel-action", {"ids": [action_id]}).status_code == 422


def test_mark_a_stream_and_the_fleet_abnormal_and_cancel(env):
    uid = env.fleet.unique_ids[10]
    r = env.act("mark-abnormal", {"streams": [uid], "start": "2026-12-24", "end": "2026-12-27", "reason": "holiday"})
    assert r.status_code == 200
    _check_audit(env, "mark-abnormal", f"stream:{uid}", "holiday")
    r = env.act("mark-abnormal", {"start": "2026-11-05 06:00", "end": "2026-11-05 09:00", "reason": "feed outage"})
    assert r.status_code == 200
    _check_audit(env, "mark-abnormal", "fleet", "feed outage")
    periods = env.get("/api/abnormal-periods").json()["items"]
    mine = [p for p in periods if p["unique_id"] == uid]
    fleet = [p for p in periods if p["scope"] == "fleet" and p["reason"] == "feed outage"]
    assert mine[0]["start"] == "2026-12-24T00:00:00" and fleet[0]["end"] == "2026-11-05T09:00:00"
    # The stream page shows its own and the fleet-wide periods.
    shown = {p["id"] for p in env.get(f"/api/streams/{uid}").json()["abnormal_periods"]}
    assert {mine[0]["id"], fleet[0]["id"]} <= shown
    assert env.act("cancel-abnormal", {"ids": [mine[0]["id"]], "reason": "plan changed"}).status_code == 200
    assert mine[0]["id"] not in [p["id"] for p in env.get("/api/abnormal-periods").json()["items"]]
    assert mine[0]["id"] in [p["id"] for p in env.get("/api/abnormal-periods?active=false").json()["items"]]


def test_abnormal_periods_are_paged_with_their_total(env):
    """A city's holiday is a period per zone: the list is paged with its total (it was cut at 500 without a
    word, and the older periods could be neither seen nor cancelled), newest first, and filters by stream."""
    members = [u for u, c in zip(env.fleet.unique_ids, _cities(env)) if c == "c01"]
    marked = env.act("mark-abnormal", {"group": {"city": "c01"}, "start": "2027-01-01", "end": "2027-01-02",
                                       "reason": "new year"}).json()
    everything = env.get("/api/abnormal-periods?per_page=500").json()
    pages = [env.get(f"/api/abnormal-periods?per_page=2&page={k}").json() for k in (1, 2)]
    assert pages[0]["total"] == everything["total"] >= len(members) and pages[0]["pages"] == -(-pages[0]["total"] // 2)
    ids = [p["id"] for page in pages for p in page["items"]]
    assert ids == [p["id"] for p in everything["items"]][:4] and ids == sorted(ids, reverse=True)
    one = env.get("/api/abnormal-periods", params={"stream": members[0], "per_page": 500}).json()
    assert {p["unique_id"] for p in one["items"]} <= {members[0], None} and members[0] in {
        p["unique_id"] for p in one["items"]}
    assert env.get("/api/abnormal-periods?stream=no-such-zone").status_code == 422
    listed = [p["id"] for p in everything["items"] if p["reason"] == "new year"]
    assert len(listed) == len(members) == len(marked["streams"])
    env.act("cancel-abnormal", {"ids": listed, "reason": "not needed"})


def test_mark_a_city_group_abnormal(env):
    members = [u for u, c in zip(env.fleet.unique_ids, _cities(env)) if c == "c00"]
    r = env.act("mark-abnormal", {"group": {"city": "c00"}, "start": "2026-12-24", "end": "2026-12-27",
                                  "reason": "holiday in c00"})
    assert r.status_code == 200, r.text
    assert sorted(r.json()["streams"]) == sorted(members)
    _check_audit(env, "mark-abnormal", "group:city=c00", "holiday in c00")


def test_an_action_on_many_streams_is_found_from_each_of_them(env):
    """A pin of two named streams (target ``streams:2``) or of a city (``group:city=c02``) is one audit entry;
    each stream it touched finds it on its page, with ``?stream=``, and in ``Store.audit_log(stream=)``; a
    stream it did not touch does not."""
    city = [u for u, c in zip(env.fleet.unique_ids, _cities(env)) if c == "c02"]
    other = [u for u in env.fleet.unique_ids if u not in city]
    two = env.act("set-params", {"streams": other[:2], "params": {"delta": 0.15}, "reason": "two noisy zones"})
    assert two.status_code == 200, two.text
    _check_audit(env, "set-params", "streams:2", "two noisy zones", two)
    group = env.act("require-approval", {"group": {"city": "c02"}, "reason": "c02 depot move"})
    _check_audit(env, "require-approval", "group:city=c02", "c02 depot move", group)
    found = {two.json()["audit_id"]: other[:2], group.json()["audit_id"]: city}
    for entry, members in found.items():
        for uid in members + other[2:4]:
            named = uid in members
            assert (entry in [a["id"] for a in env.get(f"/api/streams/{uid}").json()["audit"]]) == named, uid
            page = env.get("/api/audit", params={"stream": uid, "per_page": 200}).json()
            assert (entry in [a["id"] for a in page["items"]]) == named, uid
            assert (entry in env.store.audit_log(stream=uid)["id"].tolist()) == named, uid
    unknown = env.get("/api/audit", params={"stream": "no-such-zone"})
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["query", "stream"]
    env.act("require-approval", {"group": {"city": "c02"}, "required": False, "reason": "done"})
    env.act("set-params", {"streams": other[:2], "params": {"delta": None}, "reason": "done"})


def test_rollback_and_promote_move_the_champion_with_who_and_why(env):
    uid = env.fleet.promoted[0]
    assert env.registry.champion(uid).version == 2
    r = env.act("rollback", {"stream": uid, "reason": "v2 over-forecasts"})
    assert r.status_code == 200 and r.json()["detail"] == {"version": 1}
    assert env.registry.champion(uid).version == 1
    _check_audit(env, "rollback", f"stream:{uid}", "v2 over-forecasts")
    history = env.get(f"/api/streams/{uid}").json()["champion_history"]
    assert (history[-1]["action"], history[-1]["version"], history[-1]["moved_by"], history[-1]["reason"]) == (
        "rollback", 1, "user:operator-1", "v2 over-forecasts")
    again = env.act("rollback", {"stream": uid, "to_version": 1})       # a retry of a chosen version: a no-op
    assert again.status_code == 200 and again.json()["changed"] == 0 and again.json()["audit_id"] is None
    r = env.act("promote", {"stream": uid, "version": 2, "reason": "fixed the feature"})
    assert r.status_code == 200 and env.registry.champion(uid).version == 2
    _check_audit(env, "promote", f"stream:{uid}", "fixed the feature")


def test_a_retried_rollback_with_from_version_changes_nothing_and_a_stale_one_is_refused(env):
    """Without from_version, "roll back to the previous version" sent twice (a client's retry after a timeout)
    rolls back from the version the first one put in service: it undoes the first. With it, the second changes
    nothing; and a roll-back from a version that no longer serves, because another move came between, is
    refused naming the move."""
    uid = env.fleet.promoted[0]
    assert env.registry.champion(uid).version == 2
    moves = len(env.registry.history(uid))
    first = env.act("rollback", {"stream": uid, "from_version": 2, "reason": "v2 over-forecasts"})
    assert first.status_code == 200 and first.json()["changed"] == 1 and env.registry.champion(uid).version == 1
    retry = env.act("rollback", {"stream": uid, "from_version": 2, "reason": "v2 over-forecasts"})
    assert retry.status_code == 200 and retry.json()["changed"] == 0 and retry.json()["audit_id"] is None
    assert env.registry.champion(uid).version == 1 and len(env.registry.history(uid)) == moves + 1
    env.act("promote", {"stream": uid, "version": 2, "reason": "fixed"})
    env.act("rollback", {"stream": uid, "to_version": 1, "reason": "not fixed"})
    stale = env.act("rollback", {"stream": uid, "from_version": 2, "to_version": 1})  # v2 serves no more, and
    assert stale.status_code == 200 and stale.json()["changed"] == 0                # this roll-back was made
    env.act("promote", {"stream": uid, "version": 2, "reason": "fixed again"})
    env.act("promote", {"stream": uid, "version": 1, "reason": "a person's promotion, not a roll-back"})
    refused = env.act("rollback", {"stream": uid, "from_version": 2})
    assert refused.status_code == 422 and env.registry.champion(uid).version == 1
    problem = refused.json()["detail"][0]
    assert problem["loc"] == ["body", "from_version"]
    assert "version 2 does not serve stream" in problem["msg"] and "promotion of version 1" in problem["msg"]
    without = env.act("rollback", {"stream": uid})                      # the old way: a retry toggles
    assert without.status_code == 200 and env.registry.champion(uid).version == 2


def test_a_promotion_from_a_stale_view_is_refused_and_one_from_the_serving_version_moves(env):
    """A page left open offered "Promote v2" while v1 served; meanwhile the agent put v3 in service, and the click
    replaced v3, unseen. With from_version (what the page showed serving) such a promotion is refused, naming
    the move that came between; a promotion from the version that serves, or a retry, goes as before."""
    uid = env.fleet.promoted[0]
    assert env.registry.champion(uid).version == 2
    moves = len(env.registry.history(uid))
    fresh = env.act("promote", {"stream": uid, "version": 1, "from_version": 2})
    assert fresh.status_code == 200 and fresh.json()["changed"] == 1    # from the version that serves: it moves
    env.act("promote", {"stream": uid, "version": 2, "reason": "another tab, or the agent"})
    refused = env.act("promote", {"stream": uid, "version": 1, "from_version": 1})
    assert refused.status_code == 422 and env.registry.champion(uid).version == 2
    assert len(env.registry.history(uid)) == moves + 2
    problem = refused.json()["detail"][0]
    assert problem["loc"] == ["body", "from_version"]
    assert "version 1 does not serve stream" in problem["msg"] and "nothing was promoted" in problem["msg"]
    retry = env.act("promote", {"stream": uid, "version": 2, "from_version": 1})   # it serves already: a no-op
    assert retry.status_code == 200 and retry.json()["changed"] == 0
    assert env.act("promote", {"stream": uid, "version": 1, "from_version": -1}).status_code == 422


def test_a_promotion_from_a_version_on_a_stream_no_version_served_is_refused_not_an_error(tmp_path):
    """A promotion "from version 1" on a stream whose versions never served ended in an IndexError (a 500)."""
    from mlma.control import ActionError, Operations
    from mlma.store import Store

    with Store.create(f"sqlite:///{tmp_path / 'mlma.db'}") as store:
        ops = Operations(store, artifacts=tmp_path / "artifacts")
        store.stream_ids(["never-served"])
        ops.registry.register("never-served", {"a model": 1}, spec="ridge", promote=False)
        with pytest.raises(ActionError, match=r"^version 1 does not serve stream 'never-served': no version does; "
                                              r"nothing was promoted$"):
            ops.promote("never-served", 1, by="user:ana", from_version=1)
        assert ops.promote("never-served", 1, by="user:ana", from_version=0).changed == 1


def test_escalations_acknowledge_silence_resolve_reopen(env):
    ids = [int(i) for i in env.store.escalations(status="open")["id"].head(2)]
    assert env.act("acknowledge", {"ids": ids, "reason": "looking"}).status_code == 200
    _check_audit(env, "escalation-acknowledged", None, "looking")
    frame = env.store.escalations().set_index("id")
    assert (frame.loc[ids, "status"] == "acknowledged").all()
    r = env.act("silence", {"ids": ids[:1], "until": "2h", "reason": "depot closed"})
    assert r.status_code == 200
    _check_audit(env, "escalation-silenced", None, "depot closed")
    frame = env.store.escalations().set_index("id")
    until = frame.loc[ids[0], "silenced_until"]
    assert frame.loc[ids[0], "status"] == "silenced"
    assert pd.Timedelta(hours=1.9) < until - pd.Timestamp.now(tz="UTC") < pd.Timedelta(hours=2.1)
    assert env.act("silence", {"ids": ids[:1], "until": "2030-01-01T00:00"}).status_code == 200
    assert env.act("resolve", {"ids": ids}).status_code == 200
    _check_audit(env, "escalation-resolved", None, None)
    assert (env.store.escalations().set_index("id").loc[ids, "status"] == "resolved").all()
    r = env.act("resolve", {"ids": ids})  # a retried request: nothing changed, no entry to name
    assert r.status_code == 200 and (r.json()["changed"], r.json()["audit_id"]) == (0, None)
    assert env.act("reopen", {"ids": ids, "reason": "came back"}).status_code == 200
    _check_audit(env, "escalation-open", None, "came back")
    assert (env.store.escalations().set_index("id").loc[ids, "status"] == "open").all()
    # The log is filtered by the action's name as the API and CLI give it, or as the log records it.
    for named, recorded in (("silence", "escalation-silenced"), ("reopen", "escalation-open")):
        by_name = env.get("/api/audit", params={"action": named}).json()["items"]
        assert by_name and {a["action"] for a in by_name} == {recorded}
        assert by_name == env.get("/api/audit", params={"action": recorded}).json()["items"]


# -- reads, against the store's own readers --------------------------------------------------------------------
def test_fleet_summary_matches_the_store(env):
    f = env.get("/api/fleet").json()
    last = env.store.last_done_tick()
    verdicts = env.store.verdicts(last)
    assert f["n_streams"] == len(env.fleet.unique_ids) and f["last_tick"] == last == env.fleet.n_ticks - 1
    assert {k: v for k, v in f["verdicts"].items() if v} == verdicts["label"].value_counts().to_dict()
    assert [t["tick"] for t in f["series"]] == list(range(env.fleet.n_ticks))
    assert f["latest"]["summary"]["retrains"] == 0 and f["series"][env.fleet.event_tick]["summary"]["retrains"] > 0
    assert f["escalations"]["open"] == len(env.store.escalations(status="open"))
    assert len(env.get("/api/fleet?ticks=3").json()["series"]) == 3


def test_the_fleet_summary_keeps_the_last_done_tick_when_the_newest_failed(tmp_path):
    """A failed (or running) newest tick: ``latest`` is still the last done tick's, whatever ``ticks`` asks,
    and ``verdicts`` has every label, zeros included."""
    from mlma.api.sample import build_sample_fleet
    from mlma.store import Store, queries

    with Store.create(f"sqlite:///{tmp_path}/mlma.db") as store:
        fleet = build_sample_fleet(store, tmp_path / "artifacts", n_streams=8, n_ticks=6)
        store.begin_tick(fleet.n_ticks)
        store.fail_tick(fleet.n_ticks, RuntimeError("the database went away"))
        summary = queries.fleet_summary(store, ticks=1)
    assert [t["status"] for t in summary["series"]] == ["failed"]
    assert summary["last_tick"] == summary["latest"]["tick"] == fleet.n_ticks - 1
    assert list(summary["verdicts"]) == list(queries.VERDICT_LABELS.values()) and sum(summary["verdicts"].values()) == 8


def test_stream_list_pages_sort_and_filter_like_pandas(env):
    last = env.store.verdicts(env.store.last_done_tick())
    everything = []
    page = 1
    while True:
        body = env.get(f"/api/streams?per_page=5&page={page}").json()
        assert body["total"] == len(env.fleet.unique_ids) and body["pages"] == 5
        everything += [s["unique_id"] for s in body["items"]]
        if page == body["pages"]:
            break
        page += 1
    assert everything == sorted(env.fleet.unique_ids)

    by_effect = env.get("/api/streams?sort=-effect&per_page=500").json()["items"]
    expected = last.sort_values(["effect", "stream_id"], ascending=[False, True], na_position="last")
    assert [s["unique_id"] for s in by_effect] == expected["unique_id"].tolist()
    assert np.allclose([s["effect"] for s in by_effect], expected["effect"].to_numpy(), equal_nan=True)
    # model_version sorts by the version the verdict scored (the field of that name), champion by the serving
    # one; they differ for a stream a person rolled back since the last tick.
    moved = env.fleet.promoted[-1]
    assert env.registry.champion(moved).version == 2
    env.registry.rollback(moved, 1, by="user:ana", reason="sorting check")
    try:
        for key in ("model_version", "champion"):
            items = env.get(f"/api/streams?sort=-{key}&per_page=500").json()["items"]
            values = [s[key] for s in items if s[key] is not None]
            assert values == sorted(values, reverse=True) and len(set(values)) > 1, key
            mine = next(s for s in items if s["unique_id"] == moved)
            assert (mine["model_version"], mine["champion"]) == (2, 1)
    finally:
        env.registry.promote(moved, 2, by="user:ana", reason="sorting check done")

    degraded = env.get("/api/streams?verdict=degraded").json()
    assert sorted(s["unique_id"] for s in degraded["items"]) == sorted(last.loc[last["label"] == "degraded",
                                                                                "unique_id"])
    assert sorted(s["unique_id"] for s in degraded["items"]) == sorted(env.fleet.degraded_now)
    both = env.get("/api/streams?verdict=degraded,no-data").json()
    assert both["total"] == int(last["label"].isin(["degraded", "no-data"]).sum())

    city = env.get("/api/streams?attr=city=c01&per_page=100").json()
    members = sorted(u for u, c in zip(env.fleet.unique_ids, _cities(env)) if c == "c01")
    assert sorted(s["unique_id"] for s in city["items"]) == members and city["total"] == len(members)
    assert env.get("/api/streams?q=ZONE-001").json()["total"] == 10
    assert env.get("/api/streams?q=%25").json()["total"] == 0                  # a literal %, not a wildcard


def test_a_search_folds_the_case_of_any_letter_on_both_backends(env):
    """``q`` ignores case beyond ASCII on SQLite as on PostgreSQL (SQLite's lower() folded ASCII only)."""
    entry = env.store.add_audit("user:ana", "note", "fleet", {}, reason="Überschwemmung in ÅRHUS")
    for q in ("überschwemmung", "århus", "ÜBERSCHWEMMUNG IN århus"):
        found = env.get("/api/audit", params={"q": q}).json()["items"]
        assert [a["id"] for a in found] == [entry], q


def test_stream_detail_matches_store_and_registry(env):
    uid = env.fleet.promoted[1]
    d = env.get(f"/api/streams/{uid}?ticks=5").json()
    assert [t["tick"] for t in d["ticks"]] == list(range(env.fleet.n_ticks - 5, env.fleet.n_ticks))
    verdicts = env.store.verdicts(streams=[uid]).set_index("tick")
    for t in d["ticks"]:
        row = verdicts.loc[t["tick"]]
        assert t["verdict"] == row["label"] and t["model_version"] == row["model_version"]
        assert t["loss"] == pytest.approx(row["loss"]) and t["reference_loss"] == pytest.approx(row["reference_loss"])
    start = pd.Timestamp(d["ticks"][0]["start_ds"])
    obs = env.store.observations(start=start, streams=[uid])
    assert d["actuals"]["y"] == pytest.approx(obs["y"].tolist())
    assert len(d["forecasts"]["ds"]) == 6 * 24                  # 5 ticks scored + the day ahead, hourly
    assert d["forecasts"]["model_version"][-1] == 2
    moves = env.registry.history(uid)
    assert [(c["version"], c["action"], c["moved_by"]) for c in d["champion_history"]] == [
        (m.version, m.action, m.moved_by) for m in moves]
    assert [v["version"] for v in d["versions"]] == [1, 2] and d["versions"][1]["check"]["result"] == "promoted"


def test_a_stream_page_with_more_actuals_than_it_shows_keeps_the_newest(env, monkeypatch):
    """High-frequency data gives a page more actuals than it draws: it keeps the newest (the oldest made the
    chart stop days before the data did), and its forecasts start where its actuals do."""
    from mlma.store import queries

    uid = env.fleet.promoted[1]
    start = pd.Timestamp(env.get(f"/api/streams/{uid}?ticks=5").json()["ticks"][0]["start_ds"])
    every = env.store.observations(start=start, streams=[uid])
    monkeypatch.setattr(queries, "MAX_ACTUALS", 30)
    d = env.get(f"/api/streams/{uid}?ticks=5").json()
    assert d["actuals"]["y"] == pytest.approx(every["y"].tail(30).tolist())
    assert pd.Timestamp(d["actuals"]["ds"][-1]) == every["ds"].max()
    assert min(pd.Timestamp(t) for t in d["forecasts"]["ds"]) == pd.Timestamp(d["actuals"]["ds"][0])


def _expected_queue(env: Env) -> pd.DataFrame:
    """The queue computed with pandas from the store's readers: open escalations grouped by kind, tick and
    city, ranked by highest severity, then the members' reference loss in the last tick, then count."""
    open_ = env.store.escalations(status="open")
    streams = env.store.streams().set_index("id")
    last = env.store.verdicts(env.store.last_done_tick()).set_index("stream_id")
    size = last["reference_loss"].fillna(last["loss"]).fillna(0.0)
    open_["city"] = [None if pd.isna(s) else streams.loc[int(s), "attributes"].get("city") for s in open_["stream_id"]]
    open_["fleet"] = open_["stream_id"].isna().astype(int)
    open_["size"] = [0.0 if pd.isna(s) else float(size.get(int(s), 0.0)) for s in open_["stream_id"]]
    grouped = (open_.groupby(["kind", "tick", "city", "fleet"], dropna=False)
               .agg(n=("id", "size"), severity=("severity", "max"), size=("size", "sum"), newest=("id", "max"),
                    ids=("id", lambda s: sorted(int(i) for i in s)), messages=("message", "nunique"))
               .reset_index())
    return grouped.sort_values(["severity", "size", "n", "newest"], ascending=False).reset_index(drop=True)


def test_the_queue_groups_and_ranks_like_pandas(env):
    expected = _expected_queue(env)
    queue = env.get("/api/escalations?members=1&per_page=500").json()
    assert queue["total"] == len(expected) and queue["group_by"] == "city"
    assert [(i["kind"], i["count"], i["severity"]) for i in queue["items"]] == list(
        zip(expected["kind"], expected["n"], expected["severity"]))
    assert [sorted(i["ids"]) for i in queue["items"]] == expected["ids"].tolist()
    assert np.allclose([i["size"] for i in queue["items"]], expected["size"])
    # The header shows one message and counts the others (a grouped item showed one member's error for all).
    assert [i["other_messages"] for i in queue["items"]] == (expected["messages"] - 1).tolist()
    assert (expected["messages"] > 1).any()
    for item in queue["items"]:
        assert len(item["members"]) == min(1, item["count"]) and item["more"] == item["count"] - len(item["members"])
    # Each item carries its tick's data date, as the ticks table has it.
    starts = env.store.ticks().set_index("tick")["start_ds"]
    dated = [i for i in queue["items"] if i["tick"] is not None]
    assert dated and all(pd.Timestamp(i["tick_start_ds"]) == pd.Timestamp(starts[i["tick"]]) for i in dated)
    # The city's failed challengers are one item; the fleet-wide escalation is its own.
    lost = [i for i in queue["items"] if i["kind"] == "challenger-lost"]
    if lost:
        assert len(lost) == 1 and lost[0]["scope"] == "city=c01"
    flat = env.get("/api/escalations?group_by=&per_page=500").json()
    assert flat["group_by"] is None
    assert sum(i["count"] for i in flat["items"]) == sum(i["count"] for i in queue["items"])
    page2 = env.get("/api/escalations?per_page=1&page=2").json()
    if queue["total"] >= 2:
        assert page2["items"][0]["key"] == queue["items"][1]["key"]


def test_items_actions_audit_and_attributes_pages(env):
    items = env.get("/api/escalations/items?per_page=2").json()
    assert items["total"] == len(env.store.escalations()) and len(items["items"]) == 2
    # Filtered by a stream as a person names it, and by kind; a mistyped one is a 422, not "no escalations".
    some = next(i for i in env.get("/api/escalations/items?per_page=500").json()["items"] if i["unique_id"])
    uid, kind = some["unique_id"], some["kind"]
    mine = env.get(f"/api/escalations/items?stream={uid}%20&kind={kind}&per_page=500").json()["items"]
    expected = env.store.escalations()
    expected = expected[(expected["unique_id"] == uid) & (expected["kind"] == kind)]
    assert sorted(i["id"] for i in mine) == sorted(expected["id"]) and mine
    for query, field, words in ((f"stream={uid}x", "stream", f"unknown stream '{uid}x'"),
                                ("kind=data_quality", "kind", "kind must be one of")):
        refused = env.get(f"/api/escalations/items?{query}")
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["query", field]
        assert words in refused.json()["detail"][0]["msg"], refused.json()
    assert items["items"][0]["id"] > items["items"][1]["id"]
    audit = env.store.audit_log()
    page = env.get("/api/audit?per_page=3").json()
    assert page["total"] == len(audit) and [a["id"] for a in page["items"]] == audit["id"].tolist()[::-1][:3]
    mine = env.get("/api/audit?actor=user:operator-1&action=pin").json()
    assert mine["total"] == int(((audit["actor"] == "user:operator-1") & (audit["action"] == "pin")).sum())
    assert env.get("/api/actions?status=finished").status_code == 422
    attrs = env.get("/api/attributes").json()
    assert sorted(v["value"] for v in attrs["city"]) == sorted(set(_cities(env)))
    assert sum(v["streams"] for v in attrs["city"]) == len(env.fleet.unique_ids)


# -- the web page's session --------------------------------------------------------------------------------
def test_session_cookie_login_csrf_and_logout(env):
    client = TestClient(env.client.app)
    assert client.post("/api/session", json={"token": "mlma_wrong"}).status_code == 401
    login = client.post("/api/session", json={"token": env.tokens["operator"]})
    assert login.status_code == 200 and login.json()["role"] == "operator"
    cookies = login.headers.get_list("set-cookie")
    names = env.client.app.state.mlma.session_cookie, env.client.app.state.mlma.csrf_cookie
    session = next(c for c in cookies if c.startswith(names[0] + "="))
    csrf_cookie = next(c for c in cookies if c.startswith(names[1] + "="))
    assert "httponly" in session.lower() and "samesite=lax" in session.lower()
    assert "httponly" not in csrf_cookie.lower() and "samesite=lax" in csrf_cookie.lower()
    assert client.get("/api/me").json()["name"] == "operator-1"
    uid = env.fleet.unique_ids[11]
    body = {"streams": [uid], "reason": "from the page"}
    refused = client.post("/api/actions/pin", json=body)
    assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["detail"]
    assert client.post("/api/actions/pin", json=body, headers={"X-CSRF-Token": "guess"}).status_code == 403
    assert "pinned_until" not in env.overrides(uid)
    ok = client.post("/api/actions/pin", json=body, headers={"X-CSRF-Token": login.json()["csrf"]})
    assert ok.status_code == 200 and env.overrides(uid)["pinned_until"] == "forever"
    _check_audit(env, "pin", f"stream:{uid}", "from the page", answer=ok)
    # A forged or altered cookie is no session.
    forged = TestClient(env.client.app)
    value = client.cookies.get(names[0])
    payload, mac = value.split(".")
    forged.cookies.set(names[0], payload + "." + mac[::-1])
    assert forged.get("/api/me").status_code == 401
    assert client.delete("/api/session").status_code == 403                 # logging out needs the CSRF header
    ended = client.delete("/api/session", headers={"X-CSRF-Token": login.json()["csrf"]})
    assert ended.status_code == 200 and ended.json() == {"logged_out": True}
    # A bearer request has no session: it is not told it logged out (its token still works; revoke it to stop it).
    bearer = env.client.delete("/api/session", headers=env.auth("viewer"))
    assert bearer.status_code == 200 and bearer.json() == {"logged_out": False}, bearer.text
    assert env.get("/api/me").status_code == 200
    assert client.get("/api/me").status_code == 401


def test_a_session_ends_when_its_token_is_revoked_and_viewer_sessions_cannot_act(env):
    _, plain = auth.create_token(env.store, f"temp-{env.backend}", "viewer", by="user:root")
    client = TestClient(env.client.app)
    csrf = client.post("/api/session", json={"token": plain}).json()["csrf"]
    denied = client.post("/api/actions/pin", json={"streams": [env.fleet.unique_ids[0]]},
                         headers={"X-CSRF-Token": csrf})
    assert denied.status_code == 403 and "viewer" in denied.json()["detail"]
    assert client.get("/api/fleet").status_code == 200
    auth.revoke_token(env.store, f"temp-{env.backend}", by="user:root")
    assert client.get("/api/fleet").status_code == 401


def test_two_servers_with_their_own_session_keys_keep_their_own_cookies(env):
    """Cookies ignore the port: two dashboards on one host (two projects) set the same cookie names and logged
    each other out. The names now come from the session key; the page learns the CSRF cookie's from the server."""
    one = TestClient(create_app(env.store, secret=b"1" * 32))
    other = create_app(env.store, secret=b"2" * 32)
    assert one.app.state.mlma.session_cookie != other.state.mlma.session_cookie
    assert create_app(env.store, secret=b"1" * 32).state.mlma.csrf_cookie == one.app.state.mlma.csrf_cookie
    login = one.post("/api/session", json={"token": env.tokens["operator"]}).json()
    assert login["csrf_cookie"] == one.app.state.mlma.csrf_cookie == one.get("/api/me").json()["csrf_cookie"]
    # The other server's log-in, in the same cookie jar (one browser), leaves the first server's session alone.
    other_client = TestClient(other, cookies=one.cookies)
    assert other_client.post("/api/session", json={"token": env.tokens["viewer"]}).status_code == 200
    one.cookies.update(other_client.cookies)
    assert one.get("/api/me").json()["name"] == "operator-1"
    assert other_client.get("/api/me").json()["name"] == "viewer-1"
    csrf = one.cookies.get(login["csrf_cookie"])
    assert csrf == login["csrf"]
    assert one.delete("/api/session", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert env.get("/api/me", "viewer").json()["csrf_cookie"] is None          # a bearer token has no cookie


def test_a_page_opened_for_another_session_is_refused_409_and_nothing_is_done(env):
    """Tab A showed "operator-1 · operator"; tab B of the same browser logged out and in as someone else: tab A's
    actions were audited under the other name. The page names its session (X-MLMA-Session): refused, 409."""
    client = TestClient(env.client.app)
    first = client.post("/api/session", json={"token": env.tokens["operator"]}).json()
    assert client.get("/api/me", headers={auth.SESSION_HEADER: first["session"]}).json()["session"] == first["session"]
    second = client.post("/api/session", json={"token": env.tokens["admin"]}).json()   # "another tab"
    assert second["session"] != first["session"]
    uid = env.fleet.unique_ids[13]
    before = len(env.store.audit_log())
    stale = client.post("/api/actions/pin", json={"streams": [uid]},
                        headers={"X-CSRF-Token": second["csrf"], auth.SESSION_HEADER: first["session"]})
    assert stale.status_code == 409 and stale.headers[auth.SESSION_CHANGED_HEADER] == "1"
    assert "logged in again" in stale.json()["detail"] and "user:admin-1" in stale.json()["detail"]
    assert len(env.store.audit_log()) == before and "pinned_until" not in env.overrides(uid)
    assert client.get("/api/me", headers={auth.SESSION_HEADER: first["session"]}).status_code == 409
    assert client.get("/api/me", headers={auth.SESSION_HEADER: second["session"]}).json()["name"] == "admin-1"
    assert client.get("/api/me").status_code == 200            # clients that do not name a session are not asked
    bearer = env.client.get("/api/me", headers={**env.auth("viewer"), auth.SESSION_HEADER: "x"})
    assert bearer.status_code == 200                                           # nor bearer ones
    client.delete("/api/session", headers={"X-CSRF-Token": second["csrf"]})


def test_a_stream_named_dot_or_dot_dot_is_read_by_the_query_form(tmp_path):
    """A browser resolves "." and ".." path segments (also %2e) before it sends the URL, so the page could not
    read streams so named; /api/stream?unique_id= is the same read (the same handler) with the id in the query."""
    store = Store.create(f"sqlite:///{tmp_path}/ids.db")
    ids = [".", "..", "a/../b", "what?x=1&y=2", "%2e"]
    days = pd.date_range("2026-01-01", periods=4, freq="D")
    store.ingest_frame(pd.concat([pd.DataFrame({"unique_id": u, "ds": days, "y": 1.0}) for u in ids]), source="t")
    token = auth.create_token(store, "ana", "viewer", by="user:root")[1]
    client = TestClient(create_app(store))
    head = {"Authorization": f"Bearer {token}"}
    for uid in ids:
        read = client.get("/api/stream", params={"unique_id": uid, "ticks": 5}, headers=head)
        assert read.status_code == 200 and read.json()["unique_id"] == uid, (uid, read.text)
    same = client.get("/api/streams/a%2F..%2Fb", headers=head)
    assert same.json() == client.get("/api/stream", params={"unique_id": "a/../b"}, headers=head).json()
    assert client.get("/api/stream", params={"unique_id": "nope"}, headers=head).status_code == 404
    assert client.get("/api/stream", headers=head).status_code == 422
    store.close()


def test_expired_session_is_refused():
    secret = b"s" * 32
    value, _ = auth.sign_session(secret, 1, seconds=-1)
    assert auth.read_session(secret, value) is None


# -- the app shell ---------------------------------------------------------------------------------------------
def test_openapi_schema_no_cdn_docs_and_security_headers(env):
    schema = env.client.get("/openapi.json").json()
    for path in ("/api/fleet", "/api/streams", "/api/escalations", "/api/actions/pin", "/api/actions/rollback",
                 "/api/tokens", "/api/session", "/metrics"):
        assert path in schema["paths"], path
    assert env.client.get("/docs").status_code == 404 and env.client.get("/redoc").status_code == 404
    page = env.client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert env.client.get("/healthz").json() == {"status": "ok", "schema": env.store.schema_revision()}
    assert env.client.head("/healthz").status_code == 200        # load balancers probe with HEAD too


def _api_routes(app) -> list:
    """The app's FastAPI routes with their full paths. Newer FastAPI keeps an included router as one entry of
    ``app.routes``, which ``iter_route_contexts`` walks into; older versions listed each route there."""
    walk = getattr(fastapi.routing, "iter_route_contexts", list)
    return [r for r in walk(app.routes) if isinstance(getattr(r, "original_route", r), APIRoute)]


def test_every_json_endpoint_declares_a_model_and_the_openapi_schema_shows_it():
    """Every endpoint but the page and /metrics (HTML, Prometheus text) has a response model: /openapi.json
    names a model for its answer, not a free-form object, and the model forbids keys it does not declare."""
    with Store.create("sqlite://") as store:
        app = create_app(store)
        schema = TestClient(app).get("/openapi.json").json()
    components = schema["components"]["schemas"]
    # HEAD /healthz answers without a body (the probe of a load balancer), outside the schema.
    # Aliases kept out of the schema (/api/streams/ for /api/streams) are the routes they stand for.
    routes = [r for r in _api_routes(app) if r.path not in ("/", "/metrics") and r.methods != {"HEAD"}
              and r.include_in_schema]
    assert len(routes) >= 33, [r.path for r in routes]   # 10 reads, 17 actions, 5 session and token ones, /healthz
    for route in routes:
        assert route.response_model is not None, route.path
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)   # /api/streams/{unique_id:path} in the schema
        for method in route.methods:
            answers = schema["paths"][path][method.lower()]["responses"]
            success = [answers[code] for code in ("200", "201") if code in answers]
            assert len(success) == 1, (method, path, answers)
            body = success[0]["content"]["application/json"]["schema"]
            if body.get("type") == "array":
                body = body["items"]
            assert set(body) == {"$ref"}, (method, path, body)
            model = components[body["$ref"].rsplit("/", 1)[1]]
            # Attributes is the one map: its values are typed (a list of a model) instead.
            closed = model.get("additionalProperties") is False or "$ref" in str(model.get("additionalProperties"))
            assert model["type"] == "object" and closed, (method, path, model)


def _typed(value):
    """``value`` with every leaf tagged by its type: Python finds 1, 1.0 and True equal, a JSON client may not."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return type(value).__name__, value


def _as_served_before(answer: dict) -> dict:
    """What the API sent for a query's dict before it had models: FastAPI's encoding, through JSON."""
    return json.loads(json.dumps(jsonable_encoder(answer)))


def _stream(env: Env, which: str) -> str:
    """A stream whose page has much to show: one with a promoted model, or one with escalations."""
    if which == "promoted":
        return env.fleet.promoted[1]
    return next(e["unique_id"] for e in queries.escalation_items(env.store, per_page=500)["items"] if e["unique_id"])


def _detail(env: Env, which: str) -> dict:
    return queries.stream_detail(env.store, _stream(env, which), ticks=5, defaults=env.client.app.state.mlma.defaults)


ALL_STATUSES = ["open", "acknowledged", "resolved", "silenced"]
RICH_READS = {
    "/api/fleet": (schemas.Fleet, lambda env: queries.fleet_summary(env.store)),
    "/api/streams?per_page=500&sort=-loss": (
        schemas.StreamPage, lambda env: queries.list_streams(env.store, per_page=500, sort="-loss")),
    "/api/streams/{promoted}?ticks=5": (schemas.StreamDetail, lambda env: _detail(env, "promoted")),
    "/api/streams/{escalated}?ticks=5": (schemas.StreamDetail, lambda env: _detail(env, "escalated")),
    f"/api/escalations?status={','.join(ALL_STATUSES)}&per_page=500": (
        schemas.EscalationQueue,
        lambda env: queries.escalation_queue(env.store, status=ALL_STATUSES, group_by="city", per_page=500)),
}


@pytest.mark.parametrize("path", list(RICH_READS))
def test_rich_answers_are_their_models_and_the_queries_dicts_key_for_key(env, path):
    """The models change nothing in what clients get: no key dropped, renamed or added, no whole number turned
    into a float, and times as the query writes them (the agent's lease too)."""
    model, query = RICH_READS[path]
    lease = env.store.acquire_lock("agent@test:1")   # so that the fleet's "agent" is not None
    try:
        answer = env.get(path.format(promoted=_stream(env, "promoted"), escalated=_stream(env, "escalated")))
        assert answer.status_code == 200, answer.text
        expected = _as_served_before(query(env))
    finally:
        lease.release()
    model.model_validate(answer.json())
    assert _typed(answer.json()) == _typed(expected)
    body = answer.json()
    if path == "/api/fleet":
        assert body["agent"]["holder"] == "agent@test:1" and body["latest"]["summary"]
    elif "{promoted}" in path:
        assert len(body["versions"]) == 2 and body["champion_history"] and body["champion"]
    elif "{escalated}" in path:
        assert body["escalations"]
    else:
        assert len(body["items"]) > 1


def test_a_tick_summary_s_optional_keys_are_sent_only_when_the_tick_recorded_them(tmp_path):
    """A summary leaves out ``driver_values_filled`` and ``next_tick`` when None: the answer leaves them out
    too (rather than sending null), and sends them when a tick recorded them."""
    from mlma.store.records import TickSummary

    with Store.create(f"sqlite:///{tmp_path}/mlma.db") as store:
        fleet = build_sample_fleet(store, tmp_path / "artifacts", n_streams=8, n_ticks=6)
        full = TickSummary(n_streams=8, driver_values_filled=3, next_tick={
            "tick": fleet.n_ticks, "start": "2026-12-03 00:00:00", "end": "2026-12-04 00:00:00",
            "complete_at": "2026-12-03 23:00:00"}).to_json()
        with store._write() as conn:   # as a tick of a project with future drivers would have written it
            conn.execute(sa.update(S.ticks).where(S.ticks.c.tick == fleet.n_ticks - 1).values(summary=full))
        _, token = auth.create_token(store, "ana", "viewer", by="user:root")
        answer = TestClient(create_app(store)).get("/api/fleet", headers={"Authorization": f"Bearer {token}"})
        expected = _as_served_before(queries.fleet_summary(store))
    assert answer.status_code == 200 and _typed(answer.json()) == _typed(expected)
    before, last = (t["summary"] for t in answer.json()["series"][-2:])
    assert "next_tick" not in before and "driver_values_filled" not in before
    assert last["next_tick"] == full["next_tick"] and last["driver_values_filled"] == 3


def test_the_page_loads_nothing_from_other_sites():
    static = Path(__import__("mlma.api.app", fromlist=["STATIC"]).STATIC)
    files = sorted(static.iterdir())
    assert {f.name for f in files} >= {"index.html", "app.js", "charts.js", "style.css"}
    for f in files:
        text = f.read_text()
        # The SVG namespace is an identifier, not a download.
        outside = re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text.replace("http://www.w3.org/2000/svg", ""))
        assert not outside, (f.name, outside)
        assert "innerHTML" not in text and "eval(" not in text


def test_metrics_need_a_viewer_unless_public(env):
    pytest.importorskip("mlma.metrics", reason="src/mlma/metrics.py (render_metrics) is not in this tree yet")
    assert env.client.get("/metrics").status_code == 401
    r = env.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "mlma_" in r.text
    public = TestClient(create_app(env.store, public_metrics=True, secret=b"k" * 32))
    assert public.get("/metrics").status_code == 200


def test_a_real_server_answers_curl_style_requests(env, tmp_path):
    if env.backend != "sqlite":
        pytest.skip("one real-server run is enough; the backend makes no difference to HTTP")
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(env.client.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get("/api/fleet").status_code == 401
            fleet = http.get("/api/fleet", headers=env.auth("viewer"))
            assert fleet.status_code == 200 and fleet.json()["n_streams"] == len(env.fleet.unique_ids)
            uid = env.fleet.unique_ids[12]
            done = http.post("/api/actions/pin", json={"streams": [uid], "reason": "over HTTP"},
                             headers=env.auth("operator"))
            assert done.status_code == 200 and env.overrides(uid)["pinned_until"] == "forever"
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_accepted_ranges_shown_in_docs_are_the_codes():
    from mlma.params import markdown_table

    text = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
    assert markdown_table() in text, "docs/api.md must show `python -m mlma.params`'s table"


def test_a_group_value_nan_chooses_only_streams_whose_attribute_says_so(env):
    """A group's value was compared with each stream's as pandas text, in which a stream without the attribute
    became NaN: ``{"depot": "nan"}`` chose every stream without a depot (39 of 40 in a hostile probe). Only a
    stream with that attribute is chosen, and none has it as "nan"."""
    uid = env.fleet.unique_ids[11]
    env.store.set_attributes({uid: {"depot": "north"}})
    try:
        before = len(env.store.audit_log())
        for value in ("nan", "None", float("nan")):
            r = env.client.post("/api/actions/pin", content=json.dumps({"group": {"depot": value}}),
                                headers={**env.auth("operator"), "Content-Type": "application/json"})
            assert r.status_code == 422 and "no stream has the attributes" in r.text, (value, r.text)
        assert len(env.store.audit_log()) == before
        assert env.act("pin", {"group": {"depot": "north"}, "reason": "one depot"}).json()["streams"] == [uid]
        assert env.act("unpin", {"group": {"depot": "north"}}).status_code == 200
    finally:
        env.store.set_attributes({uid: {"depot": None}})


def test_cancel_refuses_unknown_ids_and_audits_only_what_it_cancelled(env):
    """An unknown id among those to cancel was passed over without a word, and the audit listed every id given
    as cancelled: now an unknown id refuses the whole request (nothing cancelled, nothing audited), and of known
    ids the audit names those cancelled and the answer those no longer pending."""
    uids = env.fleet.unique_ids[12:14]
    env.act("retrain", {"streams": list(uids)})
    pending = [a["id"] for u in uids for a in env.get(f"/api/actions?stream={u}&status=pending").json()["items"]]
    assert len(pending) == 2
    before = len(env.store.audit_log())
    r = env.act("cancel-action", {"ids": [pending[0], 987654]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "ids"], r.text
    assert "no action with id(s) [987654]; nothing was cancelled" in r.text
    assert len(env.store.audit_log()) == before
    assert {a["status"] for u in uids for a in env.get(f"/api/actions?stream={u}").json()["items"][:1]} == {"pending"}
    assert env.act("cancel-action", {"ids": [pending[0]]}).status_code == 200
    r = env.act("cancel-action", {"ids": pending})
    assert r.status_code == 200 and r.json()["changed"] == 1, r.text
    assert r.json()["detail"] == {"not_pending": [pending[0]]}
    assert env.last_audit()["target"] == f"actions:{pending[1]}"
    period = env.act("mark-abnormal", {"streams": [uids[0]], "start": "2027-03-01", "end": "2027-03-02"})
    assert period.status_code == 200
    periods = env.get("/api/abnormal-periods").json()["items"]
    mine = [p["id"] for p in periods if p["unique_id"] == uids[0] and p["start"] == "2027-03-01T00:00:00"]
    r = env.act("cancel-abnormal", {"ids": mine + [987654]})
    assert r.status_code == 422 and "no abnormal period with id(s) [987654]" in r.text, r.text
    assert mine[0] in [p["id"] for p in env.get("/api/abnormal-periods").json()["items"]]


def test_a_deeply_nested_body_is_a_422_not_a_500(env):
    """A validation error echoes the input it refused; a body nested hundreds of levels deep made encoding that
    echo recurse past Python's limit (a 500 with a traceback), also on the login, which needs no token."""
    deep = "[" * 900 + "]" * 900
    for path, body, headers in [("/api/session", '{"token":' + deep + "}", {}),
                                ("/api/actions/retrain", '{"streams":["x"],"group":' + deep + "}",
                                 env.auth("operator"))]:
        r = env.client.post(path, content=body, headers={**headers, "Content-Type": "application/json"})
        assert r.status_code == 422, (path, r.status_code, r.text[:300])
        assert len(r.text) < 2_000


@pytest.mark.parametrize("name, field", [("silence must", "streams"), ("a group is a mapping", "streams"),
                                         ("no escalation with id 5", "streams")])
def test_the_field_of_a_refusal_is_not_read_from_a_stream_name_in_it(env, name, field):
    """The 422 names its field by patterns on the message, which quotes the stream given: a stream called
    "silence must" was reported as a wrong ``until``."""
    r = env.act("pin", {"streams": [name]})
    assert r.status_code == 422 and f"unknown stream '{name}'" in r.text, r.text
    assert r.json()["detail"][0]["loc"] == ["body", field]


def test_one_attribute_given_twice_in_a_filter_is_refused(env):
    """``attr`` is repeatable, one per attribute; a second value for the same attribute replaced the first
    without a word (the list looked filtered by both)."""
    r = env.get("/api/streams?attr=city=c00&attr=city=c01")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "attr"], r.text
    assert "city" in r.text
