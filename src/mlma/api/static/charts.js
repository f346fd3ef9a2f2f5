// Small SVG charts for the mlma dashboard: lines with bands and markers, stacked shares, bars.
// No library and nothing fetched: each chart is an <svg> built with DOM calls (safe with a strict CSP).
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const M = { left: 56, right: 14, top: 12, bottom: 30 };
  // Half the width (px) of what stands for one lone point of a reference or band, which has no line to draw.
  const SINGLE = 10;
  // The drawing size of the chart being built (set by each public function; pages are single-threaded).
  let W = 760, H = 210;
  function size(o) { W = o.width || 760; H = o.height || 210; }

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) node.setAttribute(k, v);
    }
    if (parent) parent.appendChild(node);
    return node;
  }

  function tip(node, text) {
    const t = el("title", {}, node);
    t.textContent = text;
    return node;
  }

  function svgRoot(container, label) {
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": label || "chart" });
    container.appendChild(svg);
    return svg;
  }

  // "Nice" tick values between lo and hi; a zero-width range has one tick (two would be drawn at one place).
  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) return isFinite(lo) ? [lo] : [];
    const raw = (hi - lo) / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    if (a >= 100) return v.toFixed(0);
    if (a >= 1) return v.toFixed(2).replace(/\.?0+$/, "");
    if (a === 0) return "0";
    if (a >= 0.001) return v.toPrecision(2);
    return v.toExponential(0);
  }

  // Time axes show data times, which are naive and read as UTC (app.js dataMs): labelled and ticked in UTC, never
  // in the browser's zone (where a daylight-saving change made a 23- or 25-hour day and repeated a date).
  function fmtTime(ms, span) {
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, "0");
    const day = `${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())}`;
    return span < 3 * 86400e3 ? `${day} ${p(d.getUTCHours())}h` : day;
  }

  // Scales for an x domain and a y domain (log or linear) onto the plot area.
  function scales(xlo, xhi, ylo, yhi, log) {
    const pw = W - M.left - M.right, ph = H - M.top - M.bottom;
    const xs = (x) => M.left + (xhi === xlo ? pw / 2 : ((x - xlo) / (xhi - xlo)) * pw);
    let ys;
    if (log) {
      const a = Math.log10(ylo), b = Math.log10(yhi);
      ys = (y) => M.top + ph - ((Math.log10(Math.max(y, ylo)) - a) / (b - a || 1)) * ph;
    } else {
      ys = (y) => M.top + ph - ((y - ylo) / (yhi - ylo || 1)) * ph;
    }
    return { xs, ys, pw, ph };
  }

  function axes(svg, sc, opts) {
    const { xlo, xhi, ylo, yhi, log, xType, yLabel, xTicks, yInteger } = opts;
    const g = el("g", { class: "axis" }, svg);
    let yt = log ? logTicks(ylo, yhi) : niceTicks(ylo, yhi, 4);
    // Counts have no half streams: keep whole-number ticks (niceTicks gives at least 0 and 1 when yhi >= 1).
    if (yInteger) yt = yt.filter(Number.isInteger);
    for (const v of yt) {
      const y = sc.ys(v);
      el("line", { x1: M.left, x2: W - M.right, y1: y, y2: y, class: "grid" }, g);
      const t = el("text", { x: M.left - 6, y: y + 4, "text-anchor": "end" }, g);
      t.textContent = log ? (v >= 0.01 ? String(v) : "1e" + Math.round(Math.log10(v))) : fmt(v);
    }
    const xt = xTicks || (xType === "time" ? timeTicks(xlo, xhi) : niceTicks(xlo, xhi, 8).filter(Number.isInteger));
    for (const v of xt) {
      const x = sc.xs(v);
      el("line", { x1: x, x2: x, y1: H - M.bottom, y2: H - M.bottom + 4, class: "tick" }, g);
      const t = el("text", { x, y: H - M.bottom + 16, "text-anchor": "middle" }, g);
      t.textContent = xType === "time" ? fmtTime(v, xhi - xlo) : String(v);
    }
    el("line", { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom, class: "base" }, g);
    if (yLabel) {
      const t = el("text", { x: 12, y: M.top + (H - M.top - M.bottom) / 2, "text-anchor": "middle",
        transform: `rotate(-90 12 ${M.top + (H - M.top - M.bottom) / 2})`, class: "label" }, g);
      t.textContent = yLabel;
    }
  }

  function logTicks(lo, hi) {
    const out = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      const v = Math.pow(10, e);
      if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v);
    }
    return out.length > 6 ? out.filter((_, i) => i % 2 === 0) : out;
  }

  function timeTicks(lo, hi) {
    const day = 86400e3, span = hi - lo;
    const step = span <= 2 * day ? 6 * 3600e3 : span <= 16 * day ? day : span <= 60 * day ? 7 * day : 30 * day;
    const out = [];
    const first = new Date(lo); first.setUTCHours(0, 0, 0, 0);
    for (let v = first.getTime(); v <= hi; v += step) if (v >= lo) out.push(v);
    return out;
  }

  function legend(container, items) {
    const box = document.createElement("div");
    box.className = "legend";
    for (const it of items) {
      const span = document.createElement("span");
      const sw = document.createElement("i");
      sw.className = "swatch " + (it.kind || "");
      sw.dataset.color = it.color;
      span.appendChild(sw);
      span.appendChild(document.createTextNode(it.name));
      box.appendChild(span);
    }
    container.appendChild(box);
    // Colours are set through the CSSOM, which a strict CSP allows (style attributes it would not).
    box.querySelectorAll("i.swatch").forEach((i) => { i.style.background = i.dataset.color; });
  }

  function empty(container, text) {
    const p = document.createElement("p");
    p.className = "muted chart-empty";
    p.textContent = text || "no data yet";
    container.appendChild(p);
  }

  // Lines (with optional dots), bands (lo/hi areas), vertical markers, shaded spans and reference lines.
  function line(container, o) {
    size(o);
    const series = (o.series || []).map((s) => ({ ...s, points: s.points.filter((p) => p[1] !== null && isFinite(p[1])) }));
    const bands = o.bands || [];
    const xsAll = [], ysAll = [];
    for (const s of series) for (const [x, y] of s.points) { xsAll.push(x); ysAll.push(y); }
    for (const b of bands) for (const [x, lo, hi] of b.points) {
      if (lo !== null && hi !== null) { xsAll.push(x); ysAll.push(lo, hi); }
    }
    for (const r of o.refs || []) ysAll.push(r.y);
    if (!xsAll.length) { empty(container, o.empty); return; }
    let xlo = o.xmin ?? Math.min(...xsAll), xhi = o.xmax ?? Math.max(...xsAll);
    let xTicks = o.xTicks;
    if (!(xhi > xlo)) {
      // One x (a page of one tick, a stream with one actual): a span around it, its one label in the middle.
      const half = o.xType === "time" ? 12 * 3600e3 : 0.5;
      xTicks = xTicks || [xlo];
      xlo -= half; xhi += half;
    }
    let ylo = o.ymin ?? Math.min(...ysAll), yhi = o.ymax ?? Math.max(...ysAll);
    if (o.log) { ylo = Math.max(ylo, o.logFloor || 1e-6); ylo = Math.pow(10, Math.floor(Math.log10(ylo))); yhi = Math.max(1, yhi); }
    else {
      if (o.zero !== false) ylo = Math.min(0, ylo);
      const pad = (yhi - ylo) * 0.06 || 1; yhi += pad;
    }
    const svg = svgRoot(container, o.label);
    const sc = scales(xlo, xhi, ylo, yhi, o.log);
    axes(svg, sc, { xlo, xhi, ylo, yhi, log: o.log, xType: o.xType, yLabel: o.yLabel, xTicks });
    for (const sp of o.spans || []) {
      const x0 = sc.xs(Math.max(sp.x0, xlo)), x1 = sc.xs(Math.min(sp.x1, xhi));
      if (x1 > x0) tip(el("rect", { x: x0, y: M.top, width: x1 - x0, height: H - M.top - M.bottom, fill: sp.color, class: "span" }, svg), sp.label || "");
    }
    for (const b of bands) {
      const pts = b.points.filter((p) => p[1] !== null && p[2] !== null);
      if (!pts.length) continue;
      if (pts.length === 1) {
        // One x: a polygon of two points has no area, so the band the legend lists drew nothing.
        const [x, lo, hi] = pts[0];
        tip(el("rect", { x: sc.xs(x) - SINGLE, y: sc.ys(hi), width: 2 * SINGLE,
          height: Math.max(1, sc.ys(lo) - sc.ys(hi)), fill: b.color, class: "band" }, svg), b.name);
        continue;
      }
      const top = pts.map((p) => `${sc.xs(p[0])},${sc.ys(p[2])}`);
      const bottom = pts.slice().reverse().map((p) => `${sc.xs(p[0])},${sc.ys(p[1])}`);
      tip(el("polygon", { points: top.concat(bottom).join(" "), fill: b.color, class: "band" }, svg), b.name);
    }
    for (const r of o.refs || []) {
      const y = sc.ys(r.y);
      el("line", { x1: M.left, x2: W - M.right, y1: y, y2: y, stroke: r.color || "#888", class: "ref" }, svg);
      if (r.label) { const t = el("text", { x: W - M.right - 4, y: y - 4, "text-anchor": "end", class: "ref-label" }, svg); t.textContent = r.label; }
    }
    for (const mk of o.markers || []) {
      if (mk.x < xlo || mk.x > xhi) continue;
      const x = sc.xs(mk.x);
      tip(el("line", { x1: x, x2: x, y1: M.top, y2: H - M.bottom, class: "marker", stroke: mk.color || "#555" }, svg), mk.title || mk.label);
      const t = el("text", { x: x + 3, y: M.top + 10, class: "marker-label" }, svg); t.textContent = mk.label;
    }
    for (const s of series) {
      if (s.line !== false) {
        // Break the line at gaps wider than maxGap (e.g. missing hours).
        let d = "", prev = null, run = 0;
        const alone = [];   // points with no neighbour to join: a line through them draws nothing
        s.points.forEach((p, i) => {
          const jump = prev === null || (s.maxGap && p[0] - prev > s.maxGap);
          if (jump && run === 1) alone.push(s.points[i - 1]);
          run = jump ? 1 : run + 1;
          d += `${jump ? "M" : "L"}${sc.xs(p[0]).toFixed(1)},${sc.ys(p[1]).toFixed(1)}`;
          prev = p[0];
        });
        if (run === 1) alone.push(s.points[s.points.length - 1]);
        if (s.points.length > 1) {
          el("path", { d, fill: "none", stroke: s.color, "stroke-width": s.width || 1.6, "stroke-dasharray": s.dash,
            class: "series" }, svg);
        }
        // Drawn as a dot, or (single: "segment", a reference level) as a short level segment; series with dots
        // of their own show them anyway.
        for (const [x, y] of s.dots ? [] : alone) {
          if (s.single === "segment") {
            const seg = el("line", { x1: sc.xs(x) - SINGLE, x2: sc.xs(x) + SINGLE, y1: sc.ys(y), y2: sc.ys(y),
              stroke: s.color, "stroke-width": (s.width || 1.6) + 0.8, "stroke-dasharray": s.dash,
              class: "series single" }, svg);
            tip(seg, `${s.name}: ${fmt(y)}`);
          } else {
            const dot = el("circle", { cx: sc.xs(x), cy: sc.ys(y), r: 2.6, fill: s.color, class: "dot single" }, svg);
            tip(dot, `${s.name}: ${fmt(y)}`);
          }
        }
      }
      if (s.dots) {
        s.points.forEach((p, i) => {
          const c = s.dotColor ? s.dotColor(p, i) : s.color;
          tip(el("circle", { cx: sc.xs(p[0]), cy: sc.ys(p[1]), r: s.r || 3.2, fill: c, class: "dot" }, svg),
            s.dotTitle ? s.dotTitle(p, i) : `${s.name}: ${fmt(p[1])}`);
        });
      }
    }
    legend(container, [
      ...series.filter((s) => s.name).map((s) => ({ name: s.name, color: s.color, kind: s.dash ? "dashed" : "" })),
      ...bands.map((b) => ({ name: b.name, color: b.color, kind: "area" })),
      ...(o.extraLegend || []),
    ]);
  }

  // Stacked shares (0..1) per x: layers = [{name, color, values: []}] aligned with xs.
  function stacked(container, o) {
    size(o);
    const xs = o.xs;
    if (!xs.length) { empty(container, o.empty); return; }
    const totals = xs.map((_, i) => o.layers.reduce((a, l) => a + (l.values[i] || 0), 0) || 1);
    const svg = svgRoot(container, o.label);
    const xlo = xs[0], xhi = xs[xs.length - 1];
    const sc = scales(xlo, xhi, 0, 1, false);
    axes(svg, sc, { xlo, xhi, ylo: 0, yhi: 1, xType: o.xType, yLabel: o.yLabel || "share of streams" });
    const base = xs.map(() => 0);
    for (const layer of o.layers) {
      const lo = base.slice();
      const hi = base.map((b, i) => b + (layer.values[i] || 0) / totals[i]);
      if (hi.every((v, i) => v === lo[i])) continue;
      let pts;
      if (xs.length === 1) {
        pts = [`${M.left},${sc.ys(hi[0])}`, `${W - M.right},${sc.ys(hi[0])}`, `${W - M.right},${sc.ys(lo[0])}`, `${M.left},${sc.ys(lo[0])}`];
      } else {
        pts = xs.map((x, i) => `${sc.xs(x)},${sc.ys(hi[i])}`).concat(xs.slice().reverse().map((x, j) => {
          const i = xs.length - 1 - j; return `${sc.xs(x)},${sc.ys(lo[i])}`;
        }));
      }
      const last = xs.length - 1;
      tip(el("polygon", { points: pts.join(" "), fill: layer.color, class: "layer" }, svg),
        `${layer.name}: ${layer.values[last] || 0} streams at tick ${xs[last]}`);
      for (let i = 0; i < base.length; i++) base[i] = hi[i];
    }
    legend(container, o.layers.map((l) => ({ name: l.name, color: l.color, kind: "area" })));
  }

  // Bars per x, optionally stacked: layers = [{name, color, values: []}].
  // Options: minY (a floor for the axis top, e.g. 1 for counts, so one event does not fill the plot),
  // integer (whole-number axis ticks only), scaleExclude (x values whose bars do not set the scale: they
  // are cut at the top with a break mark and their total written beside them).
  function bars(container, o) {
    size(o);
    const xs = o.xs;
    if (!xs.length) { empty(container, o.empty); return; }
    const sums = xs.map((_, i) => o.layers.reduce((a, l) => a + Math.max(0, l.values[i] || 0), 0));
    const excluded = new Set(o.scaleExclude || []);
    let scaled = sums.filter((_, i) => !excluded.has(xs[i]));
    if (!scaled.length) scaled = sums;
    const top = Math.max(o.minY ?? 0, ...scaled);
    const yhi = (top > 0 ? top : 1) * 1.08;
    const svg = svgRoot(container, o.label);
    const xlo = xs[0] - 0.5, xhi = xs[xs.length - 1] + 0.5;
    const sc = scales(xlo, xhi, 0, yhi, false);
    const xt = niceTicks(xs[0], xs[xs.length - 1], 8).filter(Number.isInteger);
    axes(svg, sc, { xlo, xhi, ylo: 0, yhi, yLabel: o.yLabel, xTicks: xt, yInteger: o.integer });
    const bw = Math.max(1, Math.min(28, (sc.pw / xs.length) * 0.7));
    xs.forEach((x, i) => {
      let acc = 0;
      const parts = [];
      for (const l of o.layers) {
        const v = Math.max(0, l.values[i] || 0);
        if (!v) continue;
        parts.push(`${l.name} ${fmt(v)}`);
        if (acc >= yhi) { acc += v; continue; }
        const y0 = sc.ys(acc), y1 = sc.ys(Math.min(acc + v, yhi));
        tip(el("rect", { x: sc.xs(x) - bw / 2, y: y1, width: bw, height: Math.max(0.5, y0 - y1), fill: l.color, class: "bar" }, svg),
          `tick ${x}: ${l.name} ${fmt(v)}`);
        acc += v;
      }
      if (acc > yhi) {
        // A bar taller than the scale: two white strokes across it say "cut", the label gives its size.
        const x0 = sc.xs(x) - bw / 2 - 1, x1 = sc.xs(x) + bw / 2 + 1, y = M.top + 7;
        for (const dy of [0, 4]) el("line", { x1: x0, x2: x1, y1: y + dy + 2, y2: y + dy - 2, class: "cut" }, svg);
        // Written beside the bar, on its left when the bar is near the right edge.
        const right = sc.xs(x) > M.left + sc.pw * 0.75;
        const t = el("text", { x: right ? x0 - 2 : x1 + 2, y: M.top + 9, "text-anchor": right ? "end" : "start", class: "cut-label" }, svg);
        t.textContent = `${fmt(acc)} (off scale)`;
        tip(t, `tick ${x}: ${parts.join(", ")}`);
      }
    });
    if (o.layers.length > 1 || o.legend) legend(container, o.layers.map((l) => ({ name: l.name, color: l.color, kind: "area" })));
  }

  return { line, stacked, bars, fmt, fmtTime };
})();
