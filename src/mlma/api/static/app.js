// The mlma dashboard: a single page over the JSON API (/api). Plain JavaScript, no build step, no CDN.
// Text from the server is only ever put in the page as text (textContent), never as HTML.
"use strict";

const VERDICT_COLORS = {
  "ok": "#3f9b5f", "degraded": "#d04a4a", "warming-up": "#7ea7d8", "cooling-down": "#e2a33b",
  "pinned": "#8c6bc1", "no-data": "#9a9a9a", "cold": "#4fb3b1", "abnormal": "#c47a3a", "unmonitored": "#c9c9c9",
};
const SEVERITY = { 1: "low", 2: "medium", 3: "high" };
// Who this tab is logged in as (GET /api/me or the log-in's answer), with the session's tag and the name of its
// CSRF cookie: both per server, learnt from it (two dashboards on one host keep separate cookies).
let me = null;
// The name of this server's CSRF cookie, kept when `me` is dropped after a log-in in another tab: the name is the
// server's, not the session's, and "Log out" in that tab must still send the header (it was refused, 403).
let csrfCookie = null;
function signedIn(who) {
  me = who;
  if (who && who.csrf_cookie) csrfCookie = who.csrf_cookie;
  return who;
}
// Each call of route() draws one page; only the newest may reach the screen. Without this, a page that loads
// slowly (the fleet page redrawn after an action) would replace a page the user navigated to meanwhile, or the
// login form after a logout.
let routeGeneration = 0;

// -- small helpers ------------------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
const fmt = (v) => Charts.fmt(v);
const pct = (a, b) => (b ? (100 * a / b).toFixed(1) + " %" : "–");
function when(iso) {
  if (!iso) return "–";
  const d = new Date(dataMs(iso));   // naive times are UTC: in the browser's zone they were shifted
  return isNaN(d) ? iso : d.toISOString().slice(0, 16).replace("T", " ") + (iso.endsWith("Z") || iso.includes("+") ? " UTC" : "");
}
function ds(iso) { return iso ? iso.replace("T", " ").slice(0, 16) : "–"; }
// Data timestamps without a zone are read as UTC, so a day is 24 hours whatever the browser's zone.
const dataMs = (iso) => Date.parse(/(Z|[+-]\d\d:?\d\d)$/.test(iso) ? iso : iso + "Z");
// The data a tick covered, [start, end): "2025-03-30" for one whole day, the first and last day for whole
// days, else the two timestamps. The tick's wall-clock time says when the agent ran, not which data it saw.
function dataSpan(start, end) {
  if (!start) return null;
  if (!end) return `from ${ds(start)}`;
  const a = ds(start), b = ds(end);
  const hours = (dataMs(end) - dataMs(start)) / 3600e3;
  if (a.endsWith("00:00") && b.endsWith("00:00") && hours >= 24 && hours % 24 === 0) {
    if (hours === 24) return a.slice(0, 10);
    const last = new Date(dataMs(end) - 86400e3).toISOString().slice(0, 10);
    return `${a.slice(0, 10)} – ${last}`;
  }
  return a.slice(0, 10) === b.slice(0, 10) ? `${a} – ${b.slice(11)}` : `${a} – ${b}`;
}
// "tick 76 · data 2025-03-23" when the tick's data bounds are known (bounds: Map tick -> [start, end]).
function tickData(tick, bounds) {
  if (tick === null || tick === undefined) return null;
  const b = bounds && bounds.get(tick);
  const span = b ? dataSpan(b[0], b[1]) : null;
  return span ? `tick ${tick} · data ${span}` : `tick ${tick}`;
}
// Text whose dates never break at their hyphens (Chromium breaks "2025-03-30" into "2025-" and "03-30" in a
// narrow box): each date goes into an unbreakable span, the rest wraps as usual. The text itself is unchanged.
function dated(text) {
  return String(text).split(/(\d{4}-\d\d-\d\d)/).filter((x) => x !== "")
    .map((x) => (/^\d{4}-\d\d-\d\d$/.test(x) ? h("span", { class: "nobr", text: x }) : x));
}
// Numbers with 4 significant digits (integers as they are), for check results and the like.
function num4(v) {
  if (typeof v !== "number" || !isFinite(v)) return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-4 || a >= 1e7) ? v.toExponential(3) : String(Number(v.toPrecision(4)));
}
function cookie(name) {
  const m = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return m ? decodeURIComponent(m.slice(name.length + 1)) : null;
}
const can = (role) => me && ["viewer", "operator", "admin"].indexOf(me.role) >= ["viewer", "operator", "admin"].indexOf(role);
function badge(verdict) {
  const b = h("span", { class: "badge verdict", text: verdict || "none", dataset: { verdict: verdict || "none" } });
  b.style.background = VERDICT_COLORS[verdict] || "#ddd";
  return b;
}
const sevBadge = (s) => h("span", { class: `badge sev sev${s}`, text: `S${s} ${SEVERITY[s] || ""}`.trim() });
const link = (href, text, cls) => h("a", { href, class: cls, text });
// Characters that reorder or hide text (bidi controls, zero-width and other control characters) are shown as
// \uXXXX in ids and messages: "zone\u202Eevil.exe" was read as "zoneexe.live". The text sent back is unchanged.
// The set of mlma/visible.py (HIDDEN_CHARS), which the alerts and the CLI use; tests/test_visible.py keeps them equal.
const HIDDEN_CHARS = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/g;
const shown = (text) => String(text).replace(HIDDEN_CHARS,
  (c) => "\\u" + c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0"));
const streamLink = (uid) => link(`#/stream/${encodeURIComponent(uid)}`, shown(uid), "stream-link");
const attrText = (attrs) => shown(Object.entries(attrs).map(([k, v]) => `${k}=${v}`).join(" "));

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function detailText(data, status) {
  if (!data || data.detail === undefined) return `request failed (${status})`;
  if (Array.isArray(data.detail)) {
    return data.detail.map((d) => {
      const field = (d.loc || []).filter((x) => x !== "body" && x !== "query").join(".");
      return field ? `${field}: ${d.msg}` : d.msg;
    }).join("; ");
  }
  return String(data.detail);
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfCookie) {
    const csrf = cookie(csrfCookie);
    if (csrf) headers["X-CSRF-Token"] = csrf;
  }
  // The session this tab was opened with: after a log-in in another tab (as someone else, perhaps) the server
  // refuses (409) rather than act, and audit, under a name this tab does not show.
  if (me && me.session) headers["X-MLMA-Session"] = me.session;
  const r = await fetch(path, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await r.json(); } catch (_) { /* empty body */ }
  if (r.status === 401 && path !== "/api/session") {
    me = null;
    renderLogin("Your session has ended: log in again.");
    throw new ApiError(401, detailText(data, 401));
  }
  if (r.status === 409 && r.headers.get("X-MLMA-Session-Changed")) {
    sessionChanged(detailText(data, 409));
    throw new ApiError(409, detailText(data, 409));
  }
  if (!r.ok) throw new ApiError(r.status, detailText(data, r.status));
  return data;
}

// The browser logged in again in another tab: this tab's page (and its header) belong to the old session.
function sessionChanged(message) {
  routeGeneration++;  // a page still loading must not replace the notice
  const was = me ? `${me.name} · ${me.role}` : "";
  me = null;
  document.getElementById("who").textContent = "logged in again in another tab";
  const notice = h("div", { class: "panel error", id: "session-changed", role: "alert" },
    h("p", { text: shown(`This tab was opened as ${was}. ${message}`) }),
    h("button", { type: "button", text: "Reload", onclick: () => location.reload() }));
  document.getElementById("main").replaceChildren(notice);
}

let toastTimer = null;
function toast(text, bad) {
  const t = document.getElementById("toast");
  t.textContent = shown(text);   // an answer quoting an id or a reason: its bidi and control characters visible
  t.className = bad ? "show bad" : "show";
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.className = ""; }, bad ? 9000 : 5000);
}

function reasonOf(root) {
  const input = (root || document).querySelector("input.reason");
  return input && input.value.trim() ? input.value.trim() : null;
}

// Carry out an action through the API (which calls mlma.control.Operations and audits it), then redraw.
// One press, one request: while an action is on its way the page's buttons are disabled (a double click, or
// Enter pressed twice in a form, queued and audited a re-training twice) and a further call sends nothing.
let acting = false;
async function act(name, body, opts) {
  if (acting) return null;
  acting = true;
  const held = [...document.querySelectorAll("#main button:not(:disabled)")];
  held.forEach((b) => { b.disabled = true; });
  try {
    const r = await api("POST", `/api/actions/${name}`, body);
    const what = r.n_streams ? `${r.n_streams} stream${r.n_streams === 1 ? "" : "s"}` : `${r.changed} item${r.changed === 1 ? "" : "s"}`;
    // changed 0 and nothing queued: the streams (or items) were so already; nothing was done or audited.
    if (!r.changed && !r.queued) {
      toast(`nothing to change: ${r.n_streams ? what : "the items"} already as asked`
        + ` (${r.action} by ${r.by}, not audited)`);
    } else {
      // detail.note: what the answer adds (streams left out, a challenger the action replaces...).
      toast(`${r.action} by ${r.by}: ${what}${r.queued ? " queued for the next tick" : ""}`
        + `${r.detail && r.detail.version ? `, version ${r.detail.version}` : ""}`
        + `${r.detail && r.detail.note ? `. ${r.detail.note}` : ""}`);
    }
    if (!opts || opts.redraw !== false) await route();
    return r;
  } catch (e) {
    toast(`${name} refused: ${e.message}`, true);
    return null;
  } finally {
    held.forEach((b) => { b.disabled = false; });   // those still on the page (a redraw replaces them)
    acting = false;
  }
}

function pager(data, go) {
  if (!data || data.pages <= 1) return h("div", { class: "pager muted", text: data ? `${data.total} in all` : "" });
  return h("div", { class: "pager" },
    h("button", { type: "button", disabled: data.page <= 1, onclick: () => go(data.page - 1), text: "← previous" }),
    h("span", { text: ` page ${data.page} of ${data.pages} (${data.total} in all) ` }),
    h("button", { type: "button", disabled: data.page >= data.pages, onclick: () => go(data.page + 1), text: "next →" }));
}

// A list read whose filters the API refuses (422: a search longer than any id, an unknown attribute key) answers
// { refused: why }: the page keeps its form, with what it says under it, instead of "Could not load this page".
async function refusable(request) {
  try {
    return await request;
  } catch (e) {
    if (e.status === 422) return { refused: e.message };
    throw e;
  }
}
const refusal = (data) => h("p", { class: "error", id: "filter-error", role: "alert",
  text: shown(`Not searched: ${data.refused}`) });

// "key=value" split as the API splits its attr filter (mlma.store.queries.parse_attributes): at the first "=", both
// sides trimmed; null without an "=" or a key.
function splitGroup(text) {
  const i = text.indexOf("=");
  return i > 0 && text.slice(0, i).trim() ? [text.slice(0, i).trim(), text.slice(i + 1).trim()] : null;
}

// A group typed as key=value, any of them: the values the API knows are offered as the user types, searched by the
// API (GET /api/attributes?q=), not only the 200 most common per key it lists at first. The API checks what is sent.
function groupField(id, attrs, value) {
  const list = h("datalist", { id: `${id}-values` });
  const fill = (found) => list.replaceChildren(...Object.entries(found).flatMap(([k, vs]) => vs.map((x) =>
    h("option", { value: `${k}=${x.value}`, label: shown(`${k}=${x.value} (${x.streams} streams)`) }))));
  fill(attrs);
  const input = h("input", { id, type: "search", list: list.id, autocomplete: "off", "aria-label": "group (key=value)",
    placeholder: "group: key=value, e.g. city=c03", value: value || "" });
  let timer = null, asked = 0;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const mine = ++asked, q = input.value.trim();
      try {
        const found = await api("GET", q ? `/api/attributes?${new URLSearchParams({ q, limit: 50 })}`
          : "/api/attributes");
        if (mine === asked) fill(found);
      } catch (e) { /* the offers stay as they were: they are only offers */ }
    }, 200);
  });
  return [input, list];
}

function table(headers, rows, cls) {
  return h("table", { class: cls || "grid" },
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { text: x })))),
    h("tbody", {}, rows));
}

function section(title, ...children) {
  return h("section", { class: "panel" }, h("h2", { text: title }), children);
}

function reasonField(placeholder) {
  return h("label", { class: "reason-label" }, "Reason (kept in the audit log): ",
    h("input", { class: "reason", type: "text", maxlength: "2000", placeholder: placeholder || "why?" }));
}

// -- log in -------------------------------------------------------------------------------------------------
function renderLogin(message) {
  routeGeneration++;  // a page still loading must not replace the login form
  document.body.classList.add("logged-out");
  document.getElementById("who").textContent = "";
  const main = document.getElementById("main");
  main.replaceChildren();
  const input = h("input", { id: "token", type: "password", autocomplete: "off", placeholder: "mlma_…", required: true });
  const error = h("p", { class: "error", role: "alert", text: message || "" });
  const form = h("form", { id: "login", class: "panel login" },
    h("h2", { text: "Log in" }),
    h("p", { class: "muted", text: "Paste an API token (mlma token create NAME --role operator). The page keeps a session cookie, not the token." }),
    input, h("button", { type: "submit", text: "Log in" }), error);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      signedIn(await api("POST", "/api/session", { token: input.value.trim() }));
      document.body.classList.remove("logged-out");
      if (!location.hash || location.hash === "#/login") location.hash = "#/queue"; else await route();
    } catch (e) {
      error.textContent = e.status === 401 ? "Unknown or revoked token." : shown(e.message);
    }
  });
  main.appendChild(form);
  input.focus();
}

async function logout() {
  try {
    await api("DELETE", "/api/session");
  } catch (e) {
    // 401: the session had ended already. Anything else: the browser is still logged in, so say so.
    if (e.status !== 401) { toast(`log out failed: ${e.message}`, true); return; }
  }
  me = null;
  renderLogin("Logged out.");
}

// -- fleet overview -----------------------------------------------------------------------------------------
async function renderFleet(main) {
  const [f, attrs, periods] = await Promise.all([api("GET", "/api/fleet?ticks=200"), api("GET", "/api/attributes"),
    api("GET", "/api/abnormal-periods?per_page=50")]);
  const s = (f.latest && f.latest.summary) || {};
  const v = f.verdicts || {};
  const n = f.n_streams;
  const kpi = (label, value, sub, cls) => h("div", { class: `kpi ${cls || ""}`, title: `${label}: ${value}${sub ? ` (${sub})` : ""}` },
    h("div", { class: "kpi-value", text: value }), h("div", { class: "kpi-label", text: label }),
    sub ? h("div", { class: "kpi-sub" }, dated(sub)) : null);
  main.append(
    h("h1", { text: "Fleet" }),
    h("div", { class: "kpis" },
      kpi("streams", fmt(n), f.last_tick === null ? "no tick yet" : tickData(f.last_tick, new Map([[f.latest.tick, [f.latest.start_ds, f.latest.end_ds]]]))),
      kpi("healthy (ok)", pct(v.ok || 0, n), `${v.ok || 0} streams`, "good"),
      kpi("degraded", String(v.degraded || 0), pct(v.degraded || 0, n), (v.degraded || 0) ? "bad" : ""),
      kpi("warming up", String(v["warming-up"] || 0), pct(v["warming-up"] || 0, n)),
      kpi("pinned", String(f.pinned_streams), `${v.pinned || 0} with verdict pinned`),
      kpi("open escalations", String(f.escalations.open), Object.entries(f.escalations.open_by_severity).map(([k, c]) => `S${k}: ${c}`).join(" · ") || "none", f.escalations.open ? "warn" : ""),
      kpi("loss / reference", s.loss_ratio === undefined ? "–" : fmt(s.loss_ratio), "fleet, last tick"),
      kpi("re-trainings", String(s.retrains ?? "–"), `promoted ${s.promoted ?? "–"} · rejected ${s.rejected ?? "–"}`),
      kpi("compute", s.compute_seconds === undefined ? "–" : `${fmt(s.compute_seconds)} s`, `tick took ${fmt(s.duration_seconds)} s`),
      kpi("queued actions", String(f.pending_actions), `${f.abnormal_periods} abnormal period(s)`),
      kpi("agent", f.agent ? "running" : (f.running ? "tick running" : "idle"), f.agent ? f.agent.holder : (f.latest ? `last tick ${when(f.latest.finished_at)}` : "")),
    ));
  const done = f.series.filter((t) => t.status === "done" && t.summary);
  const xs = done.map((t) => t.tick);
  const get = (key) => done.map((t) => (t.summary[key] === undefined ? null : t.summary[key]));
  const vget = (label) => done.map((t) => ((t.summary.verdicts || {})[label] || 0));
  const grid = h("div", { class: "charts" });
  main.appendChild(grid);
  const chart = (title, draw) => { const box = h("div", { class: "panel chart-box" }, h("h3", { text: title })); grid.appendChild(box); draw(box); };
  const other = done.map((t) => { const c = t.summary.verdicts || {}; return (c["no-data"] || 0) + (c.cold || 0) + (c.abnormal || 0) + (c.unmonitored || 0); });
  chart("Streams by verdict (share, per tick)", (box) => Charts.stacked(box, { xs, label: "verdict shares", layers: [
    { name: "ok", color: VERDICT_COLORS.ok, values: vget("ok") },
    { name: "degraded", color: VERDICT_COLORS.degraded, values: vget("degraded") },
    { name: "warming up", color: VERDICT_COLORS["warming-up"], values: vget("warming-up") },
    { name: "cooling down", color: VERDICT_COLORS["cooling-down"], values: vget("cooling-down") },
    { name: "pinned", color: VERDICT_COLORS.pinned, values: vget("pinned") },
    { name: "no data / cold / abnormal / unmonitored", color: VERDICT_COLORS["no-data"], values: other }] }));
  // The start-up tick fits a first model for every stream (hundreds) while re-trainings are a handful per
  // tick: on one scale the re-trainings would not show. Ticks where most streams got their first model are
  // left out of the scale (their bar is cut) as long as they would dwarf the others; the caption names them.
  const fits = get("initial_fits"), retrains = get("retrains");
  const total = (i) => (fits[i] || 0) + (retrains[i] || 0);
  const startup = done.map((t, i) => i).filter((i) => (fits[i] || 0) >= Math.max(2, (done[i].summary.n_streams || 0) / 2));
  const others = done.map((_, i) => i).filter((i) => !startup.includes(i));
  const restTop = Math.max(1, ...others.map(total));
  const cut = others.length ? startup.filter((i) => total(i) > restTop * 1.08) : [];
  chart("Re-trainings per tick", (box) => {
    Charts.bars(box, { xs, yLabel: "streams", label: "re-trainings", legend: true, minY: 1, integer: true,
      scaleExclude: cut.map((i) => xs[i]), layers: [
        { name: "re-trained", color: "#5b7fbd", values: retrains },
        { name: "initial fits", color: "#b9c7de", values: fits }] });
    if (cut.length) {
      box.appendChild(h("p", { class: "caption muted", id: "retrain-caption", text: cut.length === 1
        ? `Tick ${xs[cut[0]]}, the start-up (${fits[cut[0]]} initial fits), is left out of the scale: its bar is cut.`
        : `Ticks ${cut.map((i) => xs[i]).join(", ")}, where most streams got their first model, are left out of the scale: their bars are cut.` }));
    }
  });
  chart("Fleet loss relative to the references", (box) => Charts.line(box, { xType: "linear", yLabel: "loss / reference",
    label: "loss ratio", refs: [{ y: 1, label: "reference", color: "#888" }], zero: false,
    series: [{ name: "fleet loss / reference loss", color: "#c0504d", points: xs.map((x, i) => [x, get("loss_ratio")[i]]), dots: true }] }));
  chart("Promotions and rejected challengers", (box) => Charts.bars(box, { xs, yLabel: "models", label: "promotions", legend: true, minY: 1, integer: true, layers: [
    { name: "promoted", color: "#3f9b5f", values: get("promoted") },
    { name: "rejected", color: "#d08a4a", values: get("rejected") }] }));
  chart("Compute spent per tick", (box) => Charts.bars(box, { xs, yLabel: "CPU seconds", label: "compute", layers: [
    { name: "compute seconds", color: "#7a6fb0", values: get("compute_seconds") }] }));
  chart("New escalations per tick", (box) => Charts.bars(box, { xs, yLabel: "escalations", label: "escalations", minY: 1, integer: true, layers: [
    { name: "escalations", color: "#d0a040", values: get("escalations") }] }));

  const more = periods.total > periods.items.length
    ? h("p", { class: "muted", text: `the newest ${periods.items.length} of ${fmt(periods.total)} active periods; all of them: mlma abnormal list --limit 500 --page N, or GET /api/abnormal-periods?page=N` })
    : null;
  main.appendChild(section("Abnormal periods",
    periods.items.length ? table(["id", "scope", "stream", "from", "to", "by", "reason", ""], periods.items.map((p) => h("tr", {},
      h("td", { text: p.id }), h("td", { text: shown(p.scope) }), h("td", {}, p.unique_id ? streamLink(p.unique_id) : "all"),
      h("td", { text: ds(p.start) }), h("td", { text: ds(p.end) }), h("td", { text: p.created_by }),
      h("td", { text: shown(p.reason || "") }),
      h("td", {}, can("operator") ? h("button", { type: "button", class: "small", text: "cancel",
        onclick: () => act("cancel-abnormal", { ids: [p.id], reason: reasonOf(main) }) }) : null)))) : h("p", { class: "muted", text: "none active" }), more));
  if (can("operator")) main.appendChild(groupActionForm(attrs, periods.time_zones));
}

// The pro-active form: act on the whole fleet or a group of streams before a known event.
function groupActionForm(attrs, zones) {
  const scope = h("select", { name: "scope", id: "group-scope" },
    h("option", { value: "fleet", text: "the whole fleet (abnormal periods only)" }),
    h("option", { value: "group", text: "a group (key=value):" }),
    h("option", { value: "streams", text: "streams named below…" }));
  const [group, groupValues] = groupField("group-value", attrs);
  // One unique_id per line, each line taken whole: an id may hold commas ("Sydney, NSW") and spaces.
  const streams = h("textarea", { name: "streams", rows: "3", cols: "40", "aria-label": "stream ids, one per line",
    placeholder: "one unique_id per line, e.g.\nzone-1\nSydney, NSW" });
  const action = h("select", { name: "action", id: "group-action" },
    [["mark-abnormal", "mark a period abnormal"], ["pin", "pin (no automatic re-training)"], ["unpin", "unpin"],
      ["retrain", "force re-training at the next tick"], ["reset-reference", "reset the reference"],
      ["rebase-reference", "re-base the reference (accept a new normal)"], ["require-approval", "require approval of promotions"],
      ["no-approval", "stop requiring approval"]].map(([v, t]) => h("option", { value: v, text: t })));
  const start = h("input", { name: "start", type: "datetime-local" });
  const end = h("input", { name: "end", type: "datetime-local" });
  const until = h("input", { name: "until", type: "datetime-local" });
  const direct = h("input", { name: "direct", type: "checkbox" });
  const rows = {
    period: h("div", { class: "row" }, periodFields(start, end, zones)),
    until: h("div", { class: "row" }, h("label", {}, "pinned until (your local time; empty: until unpinned) ", until)),
    direct: h("div", { class: "row" }, h("label", {}, direct, " promote directly (skip the challenger check)")),
  };
  const form = h("form", { class: "panel", id: "group-form" }, h("h2", { text: "Act ahead: a holiday, a promotion, an outage" }),
    h("div", { class: "row" }, h("label", {}, "Streams: ", scope), group, groupValues, streams),
    h("div", { class: "row" }, h("label", {}, "Action: ", action)),
    rows.period, rows.until, rows.direct, reasonField("e.g. public holiday in c03"), h("button", { type: "submit", text: "Apply" }));
  const sync = () => {
    const a = action.value;
    rows.period.hidden = a !== "mark-abnormal";
    rows.until.hidden = a !== "pin";
    rows.direct.hidden = a !== "retrain";
    streams.hidden = scope.value !== "streams";
    group.hidden = scope.value !== "group";
  };
  action.addEventListener("change", sync);
  scope.addEventListener("change", sync);
  sync();
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { reason: reasonOf(form) };
    if (scope.value === "streams") body.streams = streams.value.split(/\r?\n/).filter((x) => x.trim() !== "");
    else if (scope.value === "group") {
      const kv = splitGroup(group.value);
      if (!kv) { toast(`group: ${JSON.stringify(group.value.trim())} is not key=value, e.g. city=c03`, true); return; }
      body.group = { [kv[0]]: kv[1] };
    }
    else if (action.value !== "mark-abnormal") { toast("only abnormal periods apply to the whole fleet: choose a group", true); return; }
    const a = action.value;
    if (a === "mark-abnormal") {
      body.start = dataTime(start.value, zones); body.end = dataTime(end.value, zones);
      return act("mark-abnormal", body);
    }
    if (a === "pin") { if (until.value) body.until = localToUtc(until.value); return act("pin", body); }
    if (a === "retrain") { body.direct = direct.checked; return act("retrain", body); }
    if (a === "rebase-reference") { body.rebase = true; return act("reset-reference", body); }
    if (a === "require-approval" || a === "no-approval") { body.required = a === "require-approval"; return act("require-approval", body); }
    return act(a, body);
  });
  return form;
}

// -- the engineer's queue -----------------------------------------------------------------------------------
async function renderQueue(main, params) {
  const status = params.get("status") || "open";
  const groupBy = params.get("group_by");
  const page = +(params.get("page") || 1);
  const q = new URLSearchParams({ status, page, per_page: 20, members: 12 });
  if (groupBy !== null) q.set("group_by", groupBy);
  const [data, attrs] = await Promise.all([api("GET", `/api/escalations?${q}`), api("GET", "/api/attributes")]);
  const go = (changes) => { const p = new URLSearchParams(params); for (const [k, v] of Object.entries(changes)) p.set(k, v); location.hash = `#/queue?${p}`; };
  const statusSel = h("select", { id: "queue-status", "aria-label": "items that are", onchange: (e) => go({ status: e.target.value, page: 1 }) },
    ["open", "acknowledged", "silenced", "resolved"].map((x) => h("option", { value: x, text: x, selected: x === status })));
  const groupSel = h("select", { id: "queue-group", "aria-label": "group items by", onchange: (e) => go({ group_by: e.target.value, page: 1 }) },
    [...new Set([data.group_by || "", ...Object.keys(attrs)])].filter((x) => x).map((k) => h("option", { value: k, text: `group by ${k}`, selected: k === data.group_by })),
    h("option", { value: "", text: "no grouping by attribute", selected: !data.group_by }));
  const silenceFor = h("select", { id: "silence-for", title: "how long Silence hides an item", "aria-label": "silence for" },
    ["4h", "1d", "3d", "7d"].map((x) => h("option", { value: x, text: `silence for ${x}` })));
  main.append(h("h1", { text: "Queue" }),
    h("p", { class: "muted", text: "Escalations of one kind raised in one tick by streams that share the group attribute are one item. Ranked by severity, then by business size (the members' reference loss, in the target's units)." }),
    h("div", { class: "toolbar" }, statusSel, groupSel, can("operator") ? [silenceFor, reasonField("e.g. known depot outage")] : null));
  if (!data.items.length) main.appendChild(h("p", { class: "empty", text: `Nothing ${status}.` }));
  for (const item of data.items) {
    const group = item.group_value !== null && item.group_value !== undefined ? { [item.group_by]: item.group_value } : null;
    const buttons = !can("operator") ? null : h("div", { class: "buttons" },
      status !== "acknowledged" ? h("button", { type: "button", text: `Acknowledge (${item.count})`, onclick: () => act("acknowledge", { ids: item.ids, reason: reasonOf(main) }) }) : null,
      h("button", { type: "button", text: `Resolve (${item.count})`, onclick: () => act("resolve", { ids: item.ids, reason: reasonOf(main) }) }),
      h("button", { type: "button", text: "Silence", onclick: () => act("silence", { ids: item.ids, until: silenceFor.value, reason: reasonOf(main) }) }),
      status !== "open" ? h("button", { type: "button", text: "Re-open", onclick: () => act("reopen", { ids: item.ids, reason: reasonOf(main) }) }) : null,
      group ? h("button", { type: "button", class: "secondary", text: `Pin ${shown(item.scope)}`, onclick: () => act("pin", { group, reason: reasonOf(main) }) }) : null,
      group ? h("button", { type: "button", class: "secondary", text: `Re-train ${shown(item.scope)}`, onclick: () => act("retrain", { group, reason: reasonOf(main) }) }) : null);
    main.appendChild(h("article", { class: `queue-item sev${item.severity}`, dataset: { kind: item.kind, scope: item.scope } },
      h("div", { class: "queue-head" }, sevBadge(item.severity), h("strong", { text: item.kind }),
        h("span", { class: "scope", text: shown(item.scope) }), h("span", { class: "count", text: item.scope === "fleet" ? "fleet-wide" : `${item.count} stream${item.count === 1 ? "" : "s"}` }),
        h("span", { class: "muted", text: `size ${fmt(item.size)} · tick ${item.tick ?? "–"}${item.tick_start_ds ? " · data " + item.tick_start_ds.slice(0, 10) : ""} · ${when(item.last_created_at)}` })),
      h("div", { class: "muted kind-text", text: item.kind_text }),
      h("div", { class: "message", text: shown(item.message || "") + (item.other_messages ? ` (+${item.other_messages} other message${item.other_messages === 1 ? "" : "s"}: each stream's is on its name)` : "") }),
      h("div", { class: "members" }, item.members.map((m) => h("span", { class: "member", title: m.message ? shown(m.message) : null },
        m.unique_id ? streamLink(m.unique_id) : h("span", { text: "fleet" }), m.verdict ? badge(m.verdict) : null,
        h("span", { class: "muted", text: ` ${fmt(m.size)}` }))), item.more ? h("span", { class: "muted", text: ` +${item.more} more` }) : null),
      buttons));
  }
  main.appendChild(pager(data, (p) => go({ page: p })));
}

// -- streams ------------------------------------------------------------------------------------------------
async function renderStreams(main, params) {
  const q = new URLSearchParams();
  for (const k of ["q", "verdict", "attr", "sort", "page", "pinned"]) if (params.get(k)) q.set(k, params.get(k));
  q.set("per_page", params.get("per_page") || "50");
  const [data, attrs] = await Promise.all([refusable(api("GET", `/api/streams?${q}`)), api("GET", "/api/attributes")]);
  const go = (changes) => { const p = new URLSearchParams(params); for (const [k, v] of Object.entries(changes)) { if (v === "" || v === null) p.delete(k); else p.set(k, v); } location.hash = `#/streams?${p}`; };
  const search = h("input", { id: "stream-search", "aria-label": "search streams", type: "search", placeholder: "search unique_id", value: params.get("q") || "" });
  const verdict = h("select", { id: "stream-verdict", "aria-label": "verdict" }, h("option", { value: "", text: "any verdict" }),
    Object.keys(VERDICT_COLORS).map((x) => h("option", { value: x, text: x, selected: params.get("verdict") === x })));
  const [attr, attrValues] = groupField("stream-attr", attrs, params.get("attr"));
  const sorts = [["unique_id", "name"], ["-effect", "effect ↓"], ["p_value", "p-value ↑"], ["-reference_loss", "size (reference loss) ↓"],
    ["-loss", "loss ↓"], ["-escalations", "open escalations ↓"], ["verdict", "verdict"], ["-last_ds", "latest data ↓"], ["-champion", "serving version ↓"]];
  const sort = h("select", { id: "stream-sort", "aria-label": "sort by" }, sorts.map(([v, t]) => h("option", { value: v, text: `sort: ${t}`, selected: (params.get("sort") || "unique_id") === v })));
  const pinned = h("select", { id: "stream-pinned", "aria-label": "pinned" }, [["", "pinned or not"], ["true", "pinned only"], ["false", "not pinned"]].map(([v, t]) => h("option", { value: v, text: t, selected: (params.get("pinned") || "") === v })));
  const form = h("form", { class: "toolbar", id: "stream-filters" }, search, verdict, attr, attrValues, pinned, sort,
    h("button", { type: "submit", text: "Filter" }));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    go({ q: search.value.trim(), verdict: verdict.value, attr: attr.value.trim(), sort: sort.value,
      pinned: pinned.value, page: 1 });
  });
  [verdict, sort, pinned].forEach((s) => s.addEventListener("change", () => form.requestSubmit()));
  if (data.refused) { main.append(h("h1", { text: "Streams" }), form, refusal(data)); return; }
  main.append(h("h1", { text: "Streams" }), form,
    h("p", { class: "muted", text: `${data.total} stream${data.total === 1 ? "" : "s"} · verdicts of tick ${data.tick ?? "–"}` }),
    // "effect" is the test's: the recent losses against the reference, matched by season over the test's
    // window, so it differs from this tick's loss / reference.
    table(["stream", "group", "verdict", "effect", "p-value", "loss", "reference", "serving version", "escalations", "pinned", "latest data"],
      data.items.map((s) => h("tr", {},
        h("td", {}, streamLink(s.unique_id)), h("td", { text: attrText(s.attributes) }),
        h("td", {}, badge(s.verdict)), h("td", { class: "num", text: fmt(s.effect) }), h("td", { class: "num", text: fmt(s.p_value) }),
        h("td", { class: "num", text: fmt(s.loss) }), h("td", { class: "num", text: fmt(s.reference_loss) }),
        h("td", { class: "num", text: s.champion ?? "–" }), h("td", { class: "num", text: s.open_escalations || "" }),
        h("td", { text: s.pinned_until ? (s.pinned_until === "forever" ? "until unpinned" : `until ${when(s.pinned_until)}`) : "" }),
        h("td", { text: ds(s.last_ds) }))), "grid streams"),
    pager(data, (p) => go({ page: p })));
}

// -- one stream ---------------------------------------------------------------------------------------------
async function renderStream(main, params, uid) {
  // The id in the query, not the path: a browser resolves the path segments "." and ".." (also %2e) away.
  const query = new URLSearchParams({ unique_id: uid, ticks: params.get("ticks") || 30 });
  const s = await api("GET", `/api/stream?${query}`);
  const bounds = await tickBounds(s);
  const delta = s.params.delta ?? 0.05;
  const champ = s.champion;
  main.append(
    h("div", { class: "stream-head" },
      h("h1", { text: shown(s.unique_id) }), badge(s.verdict),
      h("span", { class: "muted", text: attrText(s.attributes) }),
      champ ? h("span", { class: "chip", id: "serving-chip",
        title: `v${champ.version} serves since ${champ.tick !== null ? `tick ${champ.tick}, ` : ""}recorded ${when(champ.since)} by ${champ.moved_by}`,
        text: `serving v${champ.version} since ${[tickData(champ.tick, bounds), when(champ.since)].filter(Boolean).join(" · ")}` })
        : h("span", { class: "chip", text: "no model yet" }),
      s.pinned_until ? h("span", { class: "chip pinned", id: "pinned-chip", text: s.pinned_until === "forever" ? "pinned until unpinned" : `pinned until ${when(s.pinned_until)}` }) : null,
      s.needs_approval ? h("span", { class: "chip", text: "promotions need approval" }) : null,
      h("span", { class: "muted", text: `δ ${s.params.delta ?? "–"} · cooldown ${s.params.cooldown_ticks ?? "–"} ticks` })));
  const grid = h("div", { class: "charts" });
  main.appendChild(grid);
  const chart = (title, draw, wide) => {
    const box = h("div", { class: `panel chart-box${wide ? " wide" : ""}` }, h("h3", { text: title }));
    grid.appendChild(box);
    draw(box);
  };
  // Data times are naive: read as UTC (dataMs), as the axis labels are drawn, whatever the browser's zone (read as
  // local time, a day after a daylight-saving change was 23 or 25 hours long and its labels were a day off).
  const t = dataMs;
  const markers = [];
  for (let i = 1; i < s.forecasts.ds.length; i++) {
    const a = s.forecasts.model_version[i - 1], b = s.forecasts.model_version[i];
    if (a !== b && b !== null) markers.push({ x: t(s.forecasts.ds[i]), label: `v${b}`, title: `version ${b} forecasts from ${ds(s.forecasts.ds[i])}` });
  }
  const spans = s.abnormal_periods.map((p) => ({ x0: t(p.start), x1: t(p.end), color: "#f3d9b8",
    label: shown(`abnormal (${p.scope}): ${p.reason || ""}`) }));
  // A line breaks where more than three of the data's own steps are missing (hourly data: 3 h; daily: 3 days).
  const maxGap = 3 * typicalStep((s.actuals.ds.length > 1 ? s.actuals.ds : s.forecasts.ds).map(t));
  chart("Actuals and forecasts", (box) => Charts.line(box, { xType: "time", label: "actuals and forecasts", markers, spans, width: 1520, height: 250,
    series: [
      { name: "actual", color: "#222", points: s.actuals.ds.map((d, i) => [t(d), s.actuals.y[i]]), maxGap },
      { name: "forecast", color: "#3a73c4", dash: "5 3", points: s.forecasts.ds.map((d, i) => [t(d), s.forecasts.y_hat[i]]), maxGap }],
    extraLegend: spans.length ? [{ name: "abnormal period", color: "#f3d9b8", kind: "area" }] : [] }), true);
  const ticks = s.ticks;
  const vm = [];
  for (let i = 1; i < ticks.length; i++) if (ticks[i].model_version !== ticks[i - 1].model_version && ticks[i].model_version !== null) vm.push({ x: ticks[i].tick, label: `v${ticks[i].model_version}` });
  const span = ticks.length ? { xmin: ticks[0].tick, xmax: ticks[ticks.length - 1].tick } : {};
  chart("Loss per tick against the reference", (box) => Charts.line(box, { ...span, xType: "linear", yLabel: "mean loss", label: "loss per tick", markers: vm,
    bands: [{ name: `reference … +δ (${delta})`, color: "#cfe3cf", points: ticks.map((x) => [x.tick, x.reference_loss, x.reference_loss === null ? null : x.reference_loss * (1 + delta)]) }],
    series: [
      { name: "reference loss", color: "#3f9b5f", single: "segment",
        points: ticks.map((x) => [x.tick, x.reference_loss]) },
      { name: "loss", color: "#555", points: ticks.map((x) => [x.tick, x.loss]), dots: true,
        dotColor: (p, i) => VERDICT_COLORS[ticks.filter((x) => x.loss !== null)[i].verdict] || "#555",
        dotTitle: (p, i) => {
          const x = ticks.filter((y) => y.loss !== null)[i];
          return shown(`tick ${x.tick}: loss ${fmt(x.loss)}, reference ${fmt(x.reference_loss)}, ${x.verdict}`
            + `${x.reason ? " – " + x.reason : ""}`);
        } }] }));
  chart("Test p-values (log scale; colour: verdict)", (box) => Charts.line(box, { ...span, xType: "linear", log: true, logFloor: 1e-8, yLabel: "p-value", label: "p-values",
    refs: s.params.alpha ? [{ y: s.params.alpha, label: `α ${s.params.alpha} (fleet FDR level)`, color: "#c0504d" }] : [],
    series: [{ name: "p-value", color: "#999", line: false, dots: true, points: ticks.map((x) => [x.tick, x.p_value]),
      dotColor: (p) => VERDICT_COLORS[(ticks.find((x) => x.tick === p[0]) || {}).verdict] || "#555",
      dotTitle: (p) => `tick ${p[0]}: p = ${fmt(p[1])}` }] }));
  // Full width under the two charts: in a half-width panel the cells of 30 ticks wrap onto two lines.
  grid.appendChild(h("div", { class: "panel chart-box wide verdict-box" }, h("div", { class: "verdict-strip", id: "verdict-strip" },
    h("span", { class: "muted", text: "verdict per tick: " }), ticks.map((x) => {
    const cell = h("span", { class: "cell", text: String(x.tick),
      title: shown(`${tickData(x.tick, bounds)}: ${x.verdict}${x.reason ? " – " + x.reason : ""}`) });
    cell.style.background = VERDICT_COLORS[x.verdict] || "#eee";
    return cell;
  }))));

  // Versions and the champion's moves with who and why.
  main.appendChild(section("Model versions", versionTimeline(s, bounds), versionTable(s, main, bounds)));

  // The project's kind of data times (the abnormal periods' list says it), for the form's abnormal period.
  if (can("operator")) {
    const zones = (await api("GET", "/api/abnormal-periods?per_page=1")).time_zones;
    main.appendChild(streamActions(s, zones));
  }

  main.appendChild(section("Escalations", s.escalations.length ? table(["id", "tick", "severity", "kind", "status", "message", ""],
    s.escalations.map((e) => h("tr", {}, h("td", { text: e.id }), h("td", { text: e.tick ?? "–" }), h("td", {}, sevBadge(e.severity)),
      h("td", { text: e.kind }), h("td", { text: e.status + (e.status === "silenced" ? ` until ${when(e.silenced_until)}` : "") }),
      h("td", { text: shown(e.message) }), h("td", {}, can("operator") ? escalationButtons(e, main) : null)))) : h("p", { class: "muted", text: "none" })));
  main.appendChild(section("Queued and applied actions", actionsTable(s.actions, main)));
  main.appendChild(section("Audit log of this stream", auditTable(s.audit)));
}

// Tick number -> [start_ds, end_ds] for the ticks the stream page names: the ticks shown come with their
// bounds; older ones (the first model's tick, say) are read from the fleet's tick list when not too far back.
async function tickBounds(s) {
  const bounds = new Map(s.ticks.filter((t) => t.start_ds).map((t) => [t.tick, [t.start_ds, t.end_ds]]));
  const named = [s.champion && s.champion.tick, ...s.champion_history.map((c) => c.tick), ...s.versions.map((m) => m.created_tick)]
    .filter((t) => t !== null && t !== undefined);
  const missing = named.filter((t) => !bounds.has(t));
  if (!missing.length) return bounds;
  const newest = Math.max(...named, ...s.ticks.map((t) => t.tick));
  // A few ticks of slack for ticks begun after the stream's last verdict; at most 2000 summaries.
  const count = Math.min(2000, newest - Math.min(...missing) + 6);
  try {
    const f = await api("GET", `/api/fleet?ticks=${count}`);
    for (const t of f.series) if (t.start_ds && !bounds.has(t.tick)) bounds.set(t.tick, [t.start_ds, t.end_ds]);
  } catch (e) {
    if (e.status === 401) throw e;   // the page shows only tick numbers for those ticks otherwise
  }
  return bounds;
}

function versionTimeline(s, bounds) {
  return h("ol", { class: "timeline", id: "timeline" }, s.champion_history.slice().reverse().map((c) => h("li", {},
    h("strong", { text: `${c.action === "rollback" ? "roll-back to" : "promotion of"} v${c.version}` }),
    c.previous_version ? h("span", { class: "muted", text: ` (from v${c.previous_version})` }) : null,
    h("span", { text: ` by ${c.moved_by}` }),
    c.tick !== null ? h("span", { class: "tick-data", text: ` · ${tickData(c.tick, bounds)}` }) : null,
    h("span", { class: "muted", text: ` · recorded ${when(c.at)}` }),
    c.reason ? h("div", { class: "why", text: shown(c.reason) }) : null)));
}

// The challenger check as people read it: "promoted · challenger mean loss 7.273 · champion mean loss 10.02 ·
// p-value 0.07633 · shadow ticks 1" rather than the stored keys and full floats.
const CHECK_LABELS = { p_value: "p-value", looks: "shadow ticks" };
const CHECK_ORDER = ["challenger_mean_loss", "champion_mean_loss", "p_value", "looks"];
function checkText(check) {
  if (!check || !Object.keys(check).length) return "–";
  const show = (v) => (typeof v === "number" ? num4(v) : typeof v === "boolean" ? (v ? "yes" : "no")
    : v === null || v === undefined ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v));
  const rank = (k) => { const i = CHECK_ORDER.indexOf(k); return i < 0 ? CHECK_ORDER.length : i; };
  const head = check.result === undefined ? null
    : show(check.result).replace(/-/g, " ") + (check.why !== undefined ? `: ${show(check.why)}` : "");
  const rest = Object.keys(check).filter((k) => k !== "result" && !(k === "why" && head !== null))
    .sort((a, b) => rank(a) - rank(b)).map((k) => `${CHECK_LABELS[k] || k.replace(/_/g, " ")} ${show(check[k])}`);
  return [head, ...rest].filter(Boolean).join(" · ");
}

// A datetime-local field's value (the browser's wall clock) as the UTC instant the API takes: a pin ends at an
// instant, unlike abnormal periods, which are in the data's own time (dataTime).
const localToUtc = (value) => new Date(value).toISOString();

// A datetime-local field's value (no zone) as the data time the API takes for an abnormal period, by the project's
// kind of timestamps (`time_zones` of /api/abnormal-periods): where its data came with time zones, data times
// are kept in UTC and the API requires an offset, so the time typed is UTC ("Z"); otherwise they are on the clock
// of the data files and take no offset: sent as typed. Never the browser's zone: data time is not its wall clock.
const dataTime = (value, zones) => (value && zones === "zoned" ? `${value}Z` : value);
// An abnormal period's two fields, each labelled with what its time is (UTC, or the data files' own clock).
function periodFields(start, end, zones) {
  const [clock, why] = zones === "zoned" ? ["UTC", "data time in UTC, as this project's data times are kept"]
    : ["data time", "data time on the clock of this project's data files, as in its ds column"];
  return [h("label", { class: "data-clock", title: why }, `from (${clock}) `, start),
    h("label", { class: "data-clock", title: why }, ` to (${clock}) `, end),
    h("span", { class: "muted", text: ` (${why})` })];
}

// The median spacing of sorted instants (ms); an hour when there are fewer than two.
function typicalStep(times) {
  const steps = [];
  for (let i = 1; i < times.length; i++) if (times[i] > times[i - 1]) steps.push(times[i] - times[i - 1]);
  if (!steps.length) return 3600e3;
  steps.sort((a, b) => a - b);
  return steps[Math.floor(steps.length / 2)];
}

function versionTable(s, root, bounds) {
  const serving = s.champion ? s.champion.version : null;
  const button = (m) => {
    // A version whose model file version retention deleted cannot be put in service (the API refuses it).
    if (!can("operator") || m.serving || m.artifact_pruned_at) return null;
    if (serving !== null && m.version < serving) {
      return h("button", { type: "button", class: "small", text: `Roll back to v${m.version}`,
        // from_version: what this page shows serving, so a move made since the page loaded is not undone blind
        onclick: () => act("rollback", { stream: s.unique_id, to_version: m.version, from_version: serving,
          reason: reasonOf(root) }) });
    }
    return h("button", { type: "button", class: "small", text: `Promote v${m.version}`,
      // from_version as for a roll-back (0: no version serves), so a tab left open does not replace a model put in
      // service since it loaded (by the agent or a colleague): the API refuses it, 422 on from_version
      onclick: () => act("promote", { stream: s.unique_id, version: m.version, from_version: serving ?? 0,
        reason: reasonOf(root) }) });
  };
  return table(["version", "model", "trained on", "created", "challenger check", ""], s.versions.slice().reverse().map((m) =>
    h("tr", { class: m.serving ? "serving" : "" },
      h("td", { text: `v${m.version}${m.serving ? " (serving)" : ""}` }),
      h("td", {}, shown(m.spec), m.artifact_pruned_at ? h("span", { class: "muted pruned", text: ` (artifact pruned ${
        m.artifact_pruned_at.slice(0, 10)})`, title: "its model file was deleted by version retention ([registry] "
        + `keep_versions) at ${when(m.artifact_pruned_at)}: history only, it cannot be put back in service` }) : null),
      h("td", {}, dated(m.train_end ? `${ds(m.train_start)} → ${ds(m.train_end)}` : "–")),
      h("td", {}, dated([tickData(m.created_tick, bounds), when(m.created_at)].filter(Boolean).join(" · "))),
      // Each "label value" pair stays on one line (short ones; a long free-text reason may wrap).
      h("td", { class: "check" }, shown(checkText(m.check)).split(" · ").map((part, i) => [i ? " · " : null,
        part.length <= 40 ? h("span", { class: "nobr", text: part }) : part])),
      h("td", {}, button(m)))));
}

function escalationButtons(e, root) {
  return h("span", { class: "buttons" },
    e.status !== "acknowledged" && e.status !== "resolved" ? h("button", { type: "button", class: "small", text: "ack", onclick: () => act("acknowledge", { ids: [e.id], reason: reasonOf(root) }) }) : null,
    e.status !== "resolved" ? h("button", { type: "button", class: "small", text: "resolve", onclick: () => act("resolve", { ids: [e.id], reason: reasonOf(root) }) }) : null,
    e.status !== "silenced" && e.status !== "resolved" ? h("button", { type: "button", class: "small", text: "silence 1d", onclick: () => act("silence", { ids: [e.id], until: "1d", reason: reasonOf(root) }) }) : null,
    e.status !== "open" ? h("button", { type: "button", class: "small", text: "re-open", onclick: () => act("reopen", { ids: [e.id], reason: reasonOf(root) }) }) : null);
}

function streamActions(s, zones) {
  const one = { streams: [s.unique_id] };
  const box = h("section", { class: "panel actions", id: "stream-actions" }, h("h2", { text: "Act on this stream" }));
  const reason = reasonField("e.g. promotion week in this zone");
  const until = h("input", { id: "pin-until", type: "datetime-local" });
  const direct = h("input", { id: "retrain-direct", type: "checkbox" });
  const start = h("input", { id: "abnormal-start", type: "datetime-local" });
  const end = h("input", { id: "abnormal-end", type: "datetime-local" });
  // Text fields, read by numberIn: a number field hides what was typed ("0,1" became 01, "1e400" an empty value).
  const delta = h("input", { id: "param-delta", type: "text", inputmode: "decimal", size: "8",
    placeholder: String(s.params.delta ?? ""), value: s.overrides.delta ?? "" });
  const cooldown = h("input", { id: "param-cooldown", type: "text", inputmode: "numeric", size: "6",
    placeholder: String(s.params.cooldown_ticks ?? ""), value: s.overrides.cooldown_ticks ?? "" });
  const setParams = () => {
    let params;
    try {
      params = { delta: numberIn(delta, "δ (delta)", false),
        cooldown_ticks: numberIn(cooldown, "cooldown ticks", true) };
    } catch (e) {
      toast(`set-params refused: ${e.message}; nothing was sent`, true);
      return null;
    }
    return act("set-params", { ...one, reason: r(), params });
  };
  const r = () => reasonOf(box);
  box.append(reason,
    h("div", { class: "row" },
      h("button", { type: "button", id: "btn-pin", text: "Pin", onclick: () => act("pin", { ...one, until: until.value ? localToUtc(until.value) : null, reason: r() }) }),
      h("label", {}, " until ", until, h("span", { class: "muted", text: " (your local time; empty: until unpinned) " })),
      h("button", { type: "button", id: "btn-unpin", text: "Unpin", disabled: !s.pinned_until, onclick: () => act("unpin", { ...one, reason: r() }) })),
    h("div", { class: "row" },
      h("button", { type: "button", id: "btn-retrain", text: "Re-train at the next tick", onclick: () => act("retrain", { ...one, direct: direct.checked, reason: r() }) }),
      h("label", {}, direct, " promote directly (skip the challenger check)")),
    h("div", { class: "row" },
      h("button", { type: "button", text: "Reset reference", onclick: () => act("reset-reference", { ...one, rebase: false, reason: r() }) }),
      h("button", { type: "button", text: "Re-base reference (accept the new normal)", onclick: () => act("reset-reference", { ...one, rebase: true, reason: r() }) })),
    h("div", { class: "row" },
      h("button", { type: "button", id: "btn-abnormal", text: "Mark abnormal", onclick: () => act("mark-abnormal", {
        ...one, start: dataTime(start.value, zones), end: dataTime(end.value, zones), reason: r() }) }),
      " ", periodFields(start, end, zones)),
    h("div", { class: "row" },
      h("button", { type: "button", text: s.needs_approval ? "Stop requiring approval" : "Require approval of promotions",
        onclick: () => act("require-approval", { ...one, required: !s.needs_approval, reason: r() }) }),
      h("button", { type: "button", text: "Approve the waiting challenger", onclick: () => act("approve", { stream: s.unique_id, reason: r() }) }),
      h("button", { type: "button", text: "Reject it", onclick: () => act("reject", { stream: s.unique_id, reason: r() }) })),
    h("div", { class: "row" },
      h("button", { type: "button", id: "btn-params", text: "Set parameters", onclick: setParams }),
      h("label", {}, " δ ", delta), h("label", {}, " cooldown ticks ", cooldown), h("span", { class: "muted", text: " (empty: the project's default)" })));
  return box;
}

// A parameter field's value: null for a field left empty (the project's default, as the form says), else the
// number written in it, plainly (0.05, 1e-3; a point, not a comma). Anything else throws an Error naming the field:
// never sent as null (which restores the default) nor as another number.
function numberIn(input, label, integer) {
  const text = input.value.trim();
  input.removeAttribute("aria-invalid");
  let why = null;
  if (input.validity.badInput) why = "is not a number the browser could read";
  else if (text === "") return null;
  else if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text)) why = "is not a number (write it with a point: 0.1)";
  else if (!isFinite(Number(text))) why = "is out of range";
  else if (integer && !Number.isInteger(Number(text))) why = "is not a whole number";
  if (why === null) return Number(text);
  input.setAttribute("aria-invalid", "true");
  input.focus();
  throw new Error(`${label}: ${JSON.stringify(text)} ${why}`);
}

function actionsTable(items, root) {
  if (!items.length) return h("p", { class: "muted", text: "none" });
  return table(["id", "stream", "kind", "parameters", "status", "by", "when", "reason", "outcome", ""], items.map((a) => h("tr", { class: `action-${a.status}` },
    h("td", { text: a.id }), h("td", {}, streamLink(a.unique_id)), h("td", { text: a.kind }),
    h("td", { text: shown(Object.entries(a.params).map(([k, v]) => `${k}=${v}`).join(" ")) }),
    h("td", { text: a.status + (a.applied_tick !== null ? ` (tick ${a.applied_tick})` : "") }),
    h("td", { text: a.created_by }), h("td", { text: when(a.created_at) }), h("td", { text: shown(a.reason || "") }),
    h("td", { text: shown(a.outcome || "") }),
    h("td", {}, a.status === "pending" && can("operator") ? h("button", { type: "button", class: "small", text: "cancel", onclick: () => act("cancel-action", { ids: [a.id], reason: reasonOf(root) }) }) : null))));
}

function auditTable(items) {
  if (!items.length) return h("p", { class: "muted", text: "nothing yet" });
  return table(["#", "when", "who", "action", "target", "parameters", "reason"], items.map((a) => h("tr", {},
    h("td", { text: a.id }), h("td", { text: when(a.at) }), h("td", { text: a.actor }), h("td", { class: "audit-action", text: a.action }),
    h("td", {}, a.target && a.target.startsWith("stream:") ? streamLink(a.target.slice(7)) : h("span", { text: shown(a.target || "") })),
    h("td", { class: "params", text: shown(JSON.stringify(a.params)) }),
    h("td", { text: shown(a.reason || "") }))), "grid audit");
}

// -- actions, audit, tokens ---------------------------------------------------------------------------------
async function renderActions(main, params) {
  const status = params.get("status") || "";
  const q = new URLSearchParams({ page: params.get("page") || 1, per_page: 50 });
  if (status) q.set("status", status);
  const data = await api("GET", `/api/actions?${q}`);
  const go = (changes) => { const p = new URLSearchParams(params); for (const [k, v] of Object.entries(changes)) p.set(k, v); location.hash = `#/actions?${p}`; };
  main.append(h("h1", { text: "Actions" }),
    h("p", { class: "muted", text: "Re-trainings, reference resets and approvals wait here until the next tick carries them out." }),
    h("div", { class: "toolbar" }, h("select", { "aria-label": "actions that are", onchange: (e) => go({ status: e.target.value, page: 1 }) },
      [["", "all"], ["pending", "pending"], ["applied", "applied"], ["cancelled", "cancelled"]].map(([v, t]) => h("option", { value: v, text: t, selected: v === status }))),
    can("operator") ? reasonField() : null),
    actionsTable(data.items, main), pager(data, (p) => go({ page: p })));
}

async function renderAudit(main, params) {
  const q = new URLSearchParams({ page: params.get("page") || 1, per_page: 50 });
  for (const k of ["actor", "action", "q"]) if (params.get(k)) q.set(k, params.get(k));
  const data = await refusable(api("GET", `/api/audit?${q}`));
  const go = (changes) => { const p = new URLSearchParams(params); for (const [k, v] of Object.entries(changes)) { if (v) p.set(k, v); else p.delete(k); } location.hash = `#/audit?${p}`; };
  const actor = h("input", { type: "text", "aria-label": "actor", placeholder: "who (user:ana, agent)", value: params.get("actor") || "" });
  const action = h("input", { type: "text", "aria-label": "action", placeholder: "action (pin, rollback…)", value: params.get("action") || "" });
  const text = h("input", { type: "search", "aria-label": "target or reason contains", placeholder: "target or reason contains", value: params.get("q") || "" });
  const form = h("form", { class: "toolbar" }, actor, action, text, h("button", { type: "submit", text: "Filter" }));
  form.addEventListener("submit", (ev) => { ev.preventDefault(); go({ actor: actor.value.trim(), action: action.value.trim(), q: text.value.trim(), page: 1 }); });
  main.append(h("h1", { text: "Audit log" }), h("p", { class: "muted", text: "Every action, by whom, when and why. Append-only: the database refuses changes to it." }),
    form, ...(data.refused ? [refusal(data)] : [auditTable(data.items), pager(data, (p) => go({ page: p }))]));
}

async function renderTokens(main) {
  const tokens = await api("GET", "/api/tokens?include_revoked=true");
  const name = h("input", { type: "text", "aria-label": "token name", placeholder: "name (a person or a system)", required: true });
  const role = h("select", { "aria-label": "role" }, ["viewer", "operator", "admin"].map((x) => h("option", { value: x, text: x })));
  const shown = h("div", { class: "secret", role: "status" });
  const form = h("form", { class: "toolbar" }, name, role, h("button", { type: "submit", text: "Create token" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const t = await api("POST", "/api/tokens", { name: name.value.trim(), role: role.value });
      await route();
      document.querySelector(".secret").replaceChildren(h("strong", { text: `Token for ${t.name} (${t.role}), shown once: ` }), h("code", { text: t.token }));
    } catch (e) { toast(e.message, true); }
  });
  main.append(h("h1", { text: "Tokens" }), form, shown,
    table(["name", "role", "created", "by", "last used", "state", ""], tokens.map((t) => h("tr", {},
      h("td", { text: t.name }), h("td", { text: t.role }), h("td", { text: when(t.created_at) }), h("td", { text: t.created_by }),
      h("td", { text: when(t.last_used_at) }), h("td", { text: t.active ? "active" : `revoked ${when(t.revoked_at)}` }),
      h("td", {}, t.active ? h("button", { type: "button", class: "small", text: "revoke", onclick: async () => {
        try { await api("DELETE", `/api/tokens/${encodeURIComponent(t.name)}`); toast(`revoked ${t.name}`); await route(); } catch (e) { toast(e.message, true); }
      } }) : null)))));
}

// -- routing ------------------------------------------------------------------------------------------------
async function route() {
  const generation = ++routeGeneration;
  const hash = location.hash.replace(/^#/, "") || "/queue";
  const [path, query] = hash.split("?");
  const parts = path.split("/").filter(Boolean);
  const params = new URLSearchParams(query || "");
  if (!me) {
    try { signedIn(await api("GET", "/api/me")); } catch (e) { if (e.status !== 401) renderLogin(e.message); return; }
    if (generation !== routeGeneration) return;  // a newer navigation draws the page (and the tabs)
  }
  document.body.classList.remove("logged-out");
  document.getElementById("who").textContent = `${me.name} · ${me.role}`;
  // A stream's page belongs to the Streams tab.
  const tab = parts[0] === "stream" ? "streams" : (parts[0] || "queue");
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.getAttribute("href") === `#/${tab}`));
  document.querySelector("#nav a[href='#/tokens']").hidden = !can("admin");
  const main = document.getElementById("main");
  const fresh = h("div", { class: "page", dataset: { page: parts[0] || "queue" } });
  const pages = { fleet: renderFleet, queue: renderQueue, streams: renderStreams, actions: renderActions, audit: renderAudit, tokens: renderTokens };
  try {
    if (parts[0] === "stream" && parts.length > 1) await renderStream(fresh, params, decodeURIComponent(parts.slice(1).join("/")));
    else await (pages[parts[0]] || renderQueue)(fresh, params);
    if (generation === routeGeneration) main.replaceChildren(fresh);
  } catch (e) {
    if (e.status === 401 || generation !== routeGeneration) return;
    main.replaceChildren(h("div", { class: "panel error", role: "alert",
      text: shown(`Could not load this page: ${e.message}`) }));
  }
}

window.addEventListener("hashchange", route);
// Another tab may have logged in again (as someone else) meanwhile: ask when this tab is looked at again, so its
// header does not go on naming the old user (an action would be refused anyway: X-MLMA-Session).
function recheck() {
  if (me && document.visibilityState === "visible") api("GET", "/api/me").catch(() => { /* shown by api() */ });
}
document.addEventListener("visibilitychange", recheck);
window.addEventListener("focus", recheck);
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("logout").addEventListener("click", logout);
  route();
});
