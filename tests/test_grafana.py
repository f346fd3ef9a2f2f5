"""The Grafana dashboard and the Prometheus alert rules in deploy/ against the metrics mlma really serves.

A small fleet (ticks, verdicts, promotions, a person's roll-back, escalations, an alert delivery) is served
by the real application; its ``/metrics`` is parsed with prometheus_client's parser, and every metric, label
and label value that a dashboard query or an alert expression names must be among those served.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mlma.api import create_app, create_token
from mlma.api.sample import build_sample_fleet
from mlma.control import Operations
from mlma.store import Store
from mlma.store import schema as S

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "mlma-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "mlma-alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "mlma-alerts.test.yml"
# Prometheus adds these to every series it scrapes (the target's labels), so queries may match on them.
TARGET_LABELS = {"job", "instance"}
# Series Prometheus makes itself for every target it scrapes (only these labels): queries may name them.
PROMETHEUS_SERIES = {"up": TARGET_LABELS}


# -- what /metrics serves ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A small fleet after its ticks, served by uvicorn on a free port; yields its URL and a viewer token."""
    import uvicorn

    folder = tmp_path_factory.mktemp("grafana")
    store = Store.create(f"sqlite:///{folder / 'mlma.db'}")
    fleet = build_sample_fleet(store, folder / "artifacts", n_streams=12, n_ticks=8)
    # A person rolls a promoted stream back: the audited action the roll-back panels count.
    Operations(store, artifacts=folder / "artifacts").rollback(fleet.promoted[0], None, by="user:ana",
                                                               reason="bad week")
    # One webhook delivery that failed after its attempts, as mlma.alerts records it (no receiver to reach).
    with store.engine.begin() as conn:
        conn.execute(sa.insert(S.alert_notifications).values(
            receiver="ops", group_key='{kind="silent"}', escalation_ids=[1], status="failed", attempts=3,
            created_at=dt.datetime.now(dt.timezone.utc)))
    _, token = create_token(store, "prometheus", "viewer", by="user:ana")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(store, artifacts=folder / "artifacts"), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "port": port, "token": token, "folder": folder}
    server.should_exit = True
    thread.join(10)
    store.close()


@pytest.fixture(scope="module")
def exposition(site) -> list:
    """The metric families of the server's /metrics, read as Prometheus reads it (with a viewer token)."""
    request = urllib.request.Request(site["url"] + "/metrics", headers={"Authorization": f"Bearer {site['token']}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return list(text_string_to_metric_families(response.read().decode("utf-8")))


@pytest.fixture(scope="module")
def served(exposition) -> dict[str, dict[str, set[str]]]:
    """{sample name: {label: values seen}}."""
    names: dict[str, dict[str, set[str]]] = {}
    for family in exposition:
        for sample in family.samples:
            labels = names.setdefault(sample.name, {})
            for key, value in sample.labels.items():
                labels.setdefault(key, set()).add(value)
    return names


def test_the_fixture_serves_every_family_with_samples(exposition, served):
    # The checks below are only as good as the fixture: a family without samples could not be named.
    assert len(exposition) >= 25
    assert [family.name for family in exposition if not family.samples] == []
    assert "rollback" in served["mlma_actions_total"]["action"]
    assert "user" in served["mlma_actions_total"]["actor"]


# -- PromQL: which metrics, labels and label values an expression names -----------------------------------
_TOKEN = re.compile(r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<number>(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)(?:ms|[smhdwy])*(?![\w:]))
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<var>\$\{?\w+(?::\w+)?\}?)
  | (?P<match>=~|!~|!=)
  | (?P<punct>==|>=|<=|[{}(),=+\-*/%^<>@])
  | (?P<space>\s+)
""", re.X)
# Keywords that take a parenthesised list of label names, and the other keywords of the language.
_LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"}


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot read PromQL at {expr[pos:pos + 20]!r} in {expr!r}")
        if m.lastgroup != "space":
            out.append((m.lastgroup, m.group()))
        pos = m.end()
    return out


def promql_selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """The vector selectors of a PromQL expression: [(metric, [(label, operator, value), ...]), ...].

    Functions and aggregations (any name followed by ``(`` or by ``by``/``without``), keywords, label lists of
    ``by``/``on``/... clauses, numbers, durations, ranges and Grafana variables are not metrics.
    """
    tokens = _tokens(expr)
    for opening, closing in ("()", "{}"):
        if sum(t[1] == opening for t in tokens) != sum(t[1] == closing for t in tokens):
            raise ValueError(f"unbalanced {opening}{closing} in {expr!r}")
    selectors = []
    i = 0

    def skip_group(start: int) -> int:   # tokens[start] is "(": the index after its matching ")"
        depth = 0
        for j in range(start, len(tokens)):
            depth += {"(": 1, ")": -1}.get(tokens[j][1], 0)
            if depth == 0:
                return j + 1
        raise ValueError(f"unbalanced parentheses in {expr!r}")

    def matchers(start: int) -> tuple[list[tuple[str, str, str]], int]:   # tokens[start] is "{"
        found, j = [], start + 1
        while tokens[j][1] != "}":
            if tokens[j][1] == ",":
                j += 1
                continue
            label, op, value = tokens[j], tokens[j + 1], tokens[j + 2]
            if label[0] != "ident" or op[1] not in ("=", "!=", "=~", "!~") or value[0] != "string":
                raise ValueError(f"cannot read the label matcher at {label[1]!r} in {expr!r}")
            found.append((label[1], op[1], value[1][1:-1]))
            j += 3
        return found, j + 1

    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "ident" and text in _LABEL_LIST_KEYWORDS:
            i = skip_group(i + 1) if following == "(" else i + 1
        elif kind == "ident" and (text in _KEYWORDS or following in ("(", "by", "without")):
            i += 1
        elif kind == "ident":
            found, i = matchers(i + 1) if following == "{" else ([], i + 1)
            selectors.append((text, found))
        elif text == "{":   # a selector without a name: only {__name__="..."} names a metric
            found, i = matchers(i)
            named = [v for label, op, v in found if label == "__name__" and op == "="]
            if not named:
                raise ValueError(f"a selector without a metric name in {expr!r}; name the metric")
            selectors.append((named[0], [m for m in found if m[0] != "__name__"]))
        else:
            i += 1
    return selectors


@pytest.mark.parametrize("expr, expected", [
    ('sum by (kind) (increase(mlma_escalations_created_total{job=~"$job",kind!="cold"}[$__rate_interval]))',
     [("mlma_escalations_created_total", [("job", "=~", "$job"), ("kind", "!=", "cold")])]),
    ("time() - max(mlma_last_tick_completed_timestamp_seconds) > 26 * 3600",
     [("mlma_last_tick_completed_timestamp_seconds", [])]),
    ('a{x="1"} > 0 and on (job, instance) b == 0', [("a", [("x", "=", "1")]), ("b", [])]),
    ("sum(rate(up[5m] offset 1h)) without (instance) / ignoring(le) group_left (zone) info",
     [("up", []), ("info", [])]),
    ('topk(3, sum without (job) (m)) or vector(0) unless {__name__="n", a="b"}', [("m", []), ("n", [("a", "=", "b")])]),
    ("histogram_quantile(0.9, rate(h_bucket[1h])) > bool 1.5e3", [("h_bucket", [])]),
])
def test_promql_selectors_are_read_robustly(expr, expected):
    assert promql_selectors(expr) == expected


@pytest.mark.parametrize("expr", ['{job="x"}', "sum(a", 'a{x=1}', "a ? b"])
def test_promql_that_cannot_be_read_is_an_error_not_a_pass(expr):
    with pytest.raises(ValueError):
        promql_selectors(expr)


def problems(exprs: dict[str, str], served: dict[str, dict[str, set[str]]]) -> list[str]:
    """Every metric, label or exact label value that ``exprs`` ({where: PromQL}) name and /metrics lacks."""
    found = []
    for where, expr in exprs.items():
        for metric, matchers in promql_selectors(expr):
            if metric in PROMETHEUS_SERIES:
                found += [f"{where}: {metric} has no label {label!r}" for label, _, _ in matchers
                          if label not in PROMETHEUS_SERIES[metric]]
                continue
            if metric not in served:
                found.append(f"{where}: {metric} is not served by /metrics")
                continue
            for label, op, value in matchers:
                if label in TARGET_LABELS:
                    continue
                if label not in served[metric]:
                    found.append(f"{where}: {metric} has no label {label!r}")
                elif op in ("=", "!=") and "$" not in value and value not in served[metric][label]:
                    found.append(f"{where}: {metric}{{{label}={value!r}}} is never served; served values: "
                                 f"{sorted(served[metric][label])}")
    return found


# -- the dashboard ---------------------------------------------------------------------------------------------
def dashboard_panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))   # a collapsed row keeps its panels inside
    return panels


def dashboard_queries(dashboard: dict) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """{where: PromQL} of every panel target and query variable, and the label each variable lists.

    Grafana's query variables read ``label_values(SELECTOR, LABEL)``: SELECTOR is checked like a query, and
    LABEL must be on its metric.
    """
    queries, variable_labels = {}, []
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            queries[f"panel {panel['title']!r} target {target['refId']}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert m, f"variable {variable['name']}: only label_values(selector, label) is checked, got {query!r}"
            where = f"variable {variable['name']}"
            queries[where] = m.group(1)
            variable_labels.extend((where, metric, m.group(2)) for metric, _ in promql_selectors(m.group(1)))
    return queries, variable_labels


def test_every_dashboard_query_names_a_served_metric(served):
    dashboard = json.loads(DASHBOARD.read_text())
    queries, variable_labels = dashboard_queries(dashboard)
    assert len(queries) >= 25
    assert problems(queries, served) == []
    assert [(w, m, label) for w, m, label in variable_labels
            if label not in TARGET_LABELS and label not in served.get(m, {})] == []


def test_a_misspelt_metric_label_or_value_is_caught(served):
    # The check must be able to fail: the dashboard's own queries, each with one mistake an editor might make.
    wrong = {
        "metric": 'sum(increase(mlma_retrain_total{job=~"$job"}[1h]))',
        "label": 'sum(mlma_escalations{state="open"})',
        "value": 'sum(mlma_streams{verdict="degrade"})',
        "up": 'up{job="mlma", status="down"} == 0',           # Prometheus' own series has only the target's labels
    }
    found = problems(wrong, served)
    assert [p.split(":")[0] for p in found] == ["metric", "label", "value", "up"], found
    assert problems({"up": 'up{job="mlma", instance="a"} == 0'}, served) == []


def test_the_dashboard_imports_into_any_grafana():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"

    def datasources(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource":
                    yield value
                else:
                    yield from datasources(value)
        elif isinstance(node, list):
            for item in node:
                yield from datasources(item)

    # No data source of the machine the dashboard was made on: every query uses the templated one.
    for source in datasources({k: v for k, v in dashboard.items() if k != "annotations"}):
        assert source == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, source
    panels = dashboard_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells = set()
    for panel in panels:
        box = panel["gridPos"]
        assert box["x"] >= 0 and box["w"] > 0 and box["x"] + box["w"] <= 24, panel["title"]
        covered = {(box["x"] + dx, box["y"] + dy) for dx in range(box["w"]) for dy in range(box["h"])}
        assert not covered & cells, f"panel {panel['title']!r} overlaps another"
        cells |= covered
        if panel["type"] == "row":
            continue
        assert panel["targets"] and all(t["expr"].strip() and t["refId"] for t in panel["targets"]), panel["title"]
        assert panel.get("description"), f"panel {panel['title']!r} should say what it shows"
    titles = " ".join(p["title"].lower() for p in panels)
    # What an operator looks for first.
    for topic in ("tick", "ingest", "verdict", "re-training", "roll-back", "escalations"):
        assert topic in titles, topic


def unfiltered(queries: dict[str, str], variable: str) -> list[str]:
    """The selectors of ``queries`` ({where: PromQL}) that do not match ``variable``'s label on its value."""
    return [f"{where}: {metric}" for where, expr in queries.items() for metric, matchers in promql_selectors(expr)
            if (variable, "=~", f"${variable}") not in matchers]


def test_the_dashboard_can_show_one_project_of_a_job():
    """One job may scrape several projects (docs/alerts.md), but the panels took max or sum over all of them:
    a project whose ticks stalled hid behind one that ticked on. Every panel now follows the Project variable
    (the instance), and the time since the last tick and ingest show the stalest project shown."""
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["instance"]["query"]["query"] == 'label_values(mlma_build_info{job=~"$job"}, instance)'
    assert variables["instance"]["includeAll"] and variables["instance"]["allValue"] == ".+"
    panels = {p["title"]: p for p in dashboard_panels(dashboard)}
    queries = {f"panel {p['title']!r} target {t['refId']}": t["expr"] for p in panels.values()
               for t in p.get("targets", [])}
    assert unfiltered(queries, "instance") == [] and unfiltered(queries, "job") == []
    # The check can fail: a query an editor adds without the variable is caught.
    assert unfiltered({"new": 'sum(mlma_known_streams{job=~"$job"})'}, "instance") == ["new: mlma_known_streams"]
    for title in ("Since last completed tick", "Since last ingest"):
        assert panels[title]["targets"][0]["expr"].startswith("time() - min("), title


# -- the alert rules -------------------------------------------------------------------------------------------
def alert_rules() -> list[dict]:
    document = yaml.safe_load(ALERTS.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert all(group.get("name") for group in document["groups"])
    return rules


def test_every_alert_expression_names_a_served_metric(served):
    rules = alert_rules()
    assert len(rules) >= 10
    assert problems({f"alert {r['alert']}": r["expr"] for r in rules}, served) == []


def test_alert_rules_are_complete():
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        if "for" in rule:
            assert re.fullmatch(r"(\d+[smhdwy])+", rule["for"]), rule["alert"]
    documented = (REPO / "docs" / "alerts.md").read_text()
    assert [n for n in names if n not in documented] == [], "docs/alerts.md should explain every alert"


# -- failure counters: none may go unwatched --------------------------------------------------------------------
FAILURE_COUNTER = re.compile(r"mlma_\w+_failures_total")


def unwatched(metrics: list[str], exprs: list[str]) -> list[str]:
    """The metrics that no expression of ``exprs`` names."""
    named = {metric for expr in exprs for metric, _ in promql_selectors(expr)}
    return [m for m in metrics if m not in named]


def test_every_failure_counter_has_an_alert_and_a_panel(served):
    # A new mlma_*_failures_total on /metrics fails this test until a rule and a panel watch it.
    failures = sorted(m for m in served if FAILURE_COUNTER.fullmatch(m))
    assert {"mlma_fit_failures_total", "mlma_forecast_failures_total", "mlma_tick_failures_total"} <= set(failures)
    panels = [t["expr"] for p in dashboard_panels(json.loads(DASHBOARD.read_text())) for t in p.get("targets", [])]
    assert unwatched(failures, [r["expr"] for r in alert_rules()]) == [], "failure counters without an alert rule"
    assert unwatched(failures, panels) == [], "failure counters without a dashboard panel"
    # The check can fail: a counter the server might add tomorrow is caught.
    assert unwatched([*failures, "mlma_ingest_failures_total"], panels) == ["mlma_ingest_failures_total"]


def test_the_failure_panel_shows_fits_and_forecasts():
    panel, = [p for p in dashboard_panels(json.loads(DASHBOARD.read_text()))
              if p["title"] == "Failed fits and forecasts per hour"]
    assert unwatched(["mlma_fit_failures_total", "mlma_forecast_failures_total"],
                     [t["expr"] for t in panel["targets"]]) == []


def _tool(name: str) -> str:
    """promtool or prometheus: on the PATH, or unpacked by `make prometheus`."""
    found = shutil.which(name) or shutil.which(name, path=str(REPO / ".mlma-cache" / "prometheus" / "usr" / "bin"))
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"no {name}: in CI (CI=true) the alert rules and the dashboard must be checked with it; "
                        "`make prometheus` unpacks it")
        pytest.skip(f"no {name} (`make prometheus`, or apt-get install prometheus) to check the alert rules and "
                    "the dashboard")
    return found


def test_promtool_accepts_the_rules_and_their_unit_tests_pass():
    promtool = _tool("promtool")
    checked = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", ALERT_TESTS.name], cwd=ALERT_TESTS.parent,
                            capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr


# -- a real Prometheus scraping the real server ----------------------------------------------------------------
@pytest.fixture(scope="module")
def prometheus(site, tmp_path_factory):
    """Prometheus scraping the site every second as job "mlma", with the alert rules loaded; yields its URL."""
    binary = _tool("prometheus")
    folder = tmp_path_factory.mktemp("prometheus")
    (folder / "token").write_text(site["token"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (folder / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "mlma", "authorization": {"credentials_file": str(folder / "token")},
                            "static_configs": [{"targets": [f"127.0.0.1:{site['port']}"]}]}],
    }))
    log = open(folder / "prometheus.log", "w")
    process = subprocess.Popen([binary, f"--config.file={folder / 'prometheus.yml'}",
                                f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        # Ready once three scrapes are in: every increase() over a window then has samples to work with.
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (folder / "prometheus.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Prometheus did not scrape mlma within 60 s: " + \
                (folder / "prometheus.log").read_text()[-3000:]
            try:
                result = _query(url, 'count_over_time(mlma_build_info{job="mlma"}[1m])')
                if result and float(result[0]["value"][1]) >= 3:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def _get(url: str, path: str, **params) -> dict:
    with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(params, doseq=True)}", timeout=30) as response:
        payload = json.loads(response.read())
    assert payload["status"] == "success", payload
    return payload["data"]


def _query(url: str, expr: str) -> list:
    return _get(url, "/api/v1/query", query=expr)["result"]


def test_every_dashboard_query_returns_data_in_a_real_prometheus(prometheus, site):
    dashboard = json.loads(DASHBOARD.read_text())
    queries, variable_labels = dashboard_queries(dashboard)
    # What Grafana puts in for its variables: "All" jobs and projects, and its rate interval.
    grafana = {"$job": ".+", "$instance": ".+", "$__rate_interval": "1m", "${DS_PROMETHEUS}": ""}
    empty = []
    for where, expr in queries.items():
        for variable, value in grafana.items():
            expr = expr.replace(variable, value)
        if not _query(prometheus, expr):
            empty.append(f"{where}: {expr}")
    assert empty == [], "queries without data: " + "; ".join(empty)
    for where, metric, label in variable_labels:
        values = _get(prometheus, f"/api/v1/label/{label}/values", **{"match[]": metric})
        assert values == ["mlma"] if label == "job" else values == [f"127.0.0.1:{site['port']}"], (where, values)


def test_the_alert_rules_load_and_evaluate_in_a_real_prometheus(prometheus):
    groups = _get(prometheus, "/api/v1/rules")["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(rules) == {r["alert"] for r in alert_rules()}
    deadline = time.monotonic() + 30
    while any(rule.get("lastEvaluation", "").startswith("0001") for rule in rules.values()):
        assert time.monotonic() < deadline, "rules were not evaluated within 30 s"
        time.sleep(0.5)
        rules = {rule["name"]: rule for group in _get(prometheus, "/api/v1/rules")["groups"] for rule in group["rules"]}
    assert {name: rule.get("lastError") for name, rule in rules.items() if rule["health"] != "ok"} == {}
    # The agent is scraped, its last tick just finished and its data is fresh: these must be quiet.
    for name in ("MlmaNotScraped", "MlmaTickOverdue", "MlmaDataStale", "MlmaTickAbandoned"):
        assert rules[name]["state"] == "inactive", (name, rules[name]["alerts"])
