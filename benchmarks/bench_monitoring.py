"""What does monitoring a fleet cost per tick? MLMA against a numpy floor and per-stream tools.

Measures, in one run and as ratios within it (see ``benchmarks/README.md``):

1. the monitoring cost of one tick without model fitting for 1,000 to 100,000 hourly streams with a week
   or two of reference losses and a 24-loss batch: the numpy floor, ``MLMAPolicy.decide`` after warm-up,
   and ``degradation_test`` + ``fdr_control`` alone; peak memory of one tick (in a subprocess per size)
   and the policy's bytes of state per stream;
2. per-stream alternatives on a sample of streams: an Evidently data-drift report per stream, River's
   ADWIN and Page-Hinkley per stream;
3. how the cost grows with the number of streams and with the reference length;
4. where ``decide``'s time goes, step by step, and what glibc's allocator settings change.

Usage::

    .venv/bin/python benchmarks/bench_monitoring.py --quick        # CI smoke run, under a minute
    .venv/bin/python benchmarks/bench_monitoring.py --write-docs --plot
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _docs import write_section  # noqa: E402
from _machine import REPO, load_average, machine_info  # noqa: E402
from _workload import (PolicyRun, SyntheticFleet, numpy_floor, policy_state_bytes,  # noqa: E402
                       test_and_fdr)

DOC = REPO / "docs" / "benchmarks.md"
PLOT = REPO / "docs" / "benchmark-scaling.png"
BEGIN, END = "<!-- benchmark-results:begin -->", "<!-- benchmark-results:end -->"
METHODS = ("floor", "test", "decide")
LABELS = {"floor": "numpy floor", "test": "degradation_test + BH", "decide": "MLMAPolicy.decide"}

GOAL_TICK_SECONDS = 2.0
GOAL_FLOOR_FACTOR = 5.0
GOAL_CHEAPER = 1000.0
GOAL_STATE_BYTES = 10_000


# -- plans ---------------------------------------------------------------------------------------------------
def plan(quick: bool) -> dict:
    if quick:
        return dict(main_sizes=[1_000, 10_000], main_days=[7, 14], scale_sizes=[1_000, 3_000, 10_000],
                    scale_days=14, days_scan=[4, 7, 14, 28], days_scan_streams=10_000,
                    memory=[(1_000, 7), (10_000, 14)], allocator=[(10_000, 14)], sample=10,
                    profile=(10_000, 14, 3), warm="ready",
                    repeats=3)
    return dict(main_sizes=[1_000, 10_000, 100_000], main_days=[7, 14],
                scale_sizes=[1_000, 3_000, 10_000, 30_000, 100_000], scale_days=14, days_scan=[4, 7, 14, 28],
                days_scan_streams=100_000,
                memory=[(n, d) for n in (1_000, 10_000, 100_000) for d in (7, 14)],
                allocator=[(100_000, 7), (100_000, 14), (100_000, 28)], sample=100,
                profile=(100_000, 14, 5), warm="fill", repeats=7)


def configurations(p: dict) -> list[tuple[int, int]]:
    wanted = {(n, d) for n in p["main_sizes"] for d in p["main_days"]}
    wanted |= {(n, p["scale_days"]) for n in p["scale_sizes"]}
    wanted |= {(p["days_scan_streams"], d) for d in p["days_scan"]}
    return sorted(wanted)


def repeats_for(n: int, base: int) -> int:
    # Small fleets take milliseconds, where scheduler noise dominates: more repeats cost little.
    return base * 3 if n <= 10_000 else base


# -- 1 and 3: time per tick ----------------------------------------------------------------------------------
def time_configuration(n: int, days: int, repeats: int, warm: str, seed: int = 0) -> dict:
    """Median seconds per tick of the three methods on the same ticks, interleaved, after warm-up."""
    fleet = SyntheticFleet(n, seed=seed)
    run = PolicyRun(fleet, days)
    warm_ticks = run.warm_ticks if warm == "fill" else run.ready_ticks
    started = time.perf_counter()
    run.warm_up(warm_ticks)
    warm_seconds = time.perf_counter() - started
    reference = fleet.reference(days)
    seconds = {m: [] for m in METHODS}
    tested, rejected = [], []
    first = run.next_observation()
    numpy_floor(first.losses, reference), test_and_fdr(first.losses, reference)  # untimed first calls
    run.after(run.policy.decide(first))
    for r in range(repeats):
        obs = run.next_observation()
        decision = None
        # Rotate the order so that no method always runs right after another's garbage.
        for m in METHODS[r % 3:] + METHODS[:r % 3]:
            gc.collect()
            start = time.perf_counter()
            if m == "floor":
                numpy_floor(obs.losses, reference)
            elif m == "test":
                test_and_fdr(obs.losses, reference)
            else:
                decision = run.policy.decide(obs)
            seconds[m].append(time.perf_counter() - start)
        tested.append(float(np.isfinite(decision.p_value).mean()))
        rejected.append(int(decision.retrain.sum()))
        run.after(decision)
    state = policy_state_bytes(run.policy)
    return {
        "n": n, "days": days, "repeats": repeats, "warm_ticks": warm_ticks, "warm_seconds": warm_seconds,
        "reference_fill": run.reference_fill(), "tested_share": float(np.mean(tested)),
        "retrained_per_tick": float(np.mean(rejected)),
        "seconds": {m: float(np.median(v)) for m, v in seconds.items()},
        "seconds_all": seconds,
        "ratio_to_floor": {m: float(np.median(np.array(v) / np.array(seconds["floor"])))
                           for m, v in seconds.items()},
        "state_bytes_per_stream": state["arrays"] / n,
        "list_bytes_per_stream": state["python_lists"] / n,
    }


# -- 1: memory, one subprocess per size ----------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    """A memory figure of this process from Linux's /proc (None elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_child(n: int, days: int) -> dict:
    """Runs in its own process: peak memory of one tick of each method, after a short warm-up."""
    fleet = SyntheticFleet(n, seed=1)
    run = PolicyRun(fleet, days)
    run.warm_up(run.ready_ticks)
    reference = fleet.reference(days)
    out = {"n": n, "days": days, "state_bytes_per_stream": policy_state_bytes(run.policy)["arrays"] / n}
    obs = run.next_observation()
    calls = {"floor": lambda: numpy_floor(obs.losses, reference),
             "test": lambda: test_and_fdr(obs.losses, reference),
             "decide": lambda: run.policy.decide(obs)}
    inputs = (reference.nbytes + obs.losses.nbytes + obs.actuals.nbytes) / 2**20
    out["inputs_mb"] = inputs
    for m, call in calls.items():
        # Peak RSS above the RSS just before the call (all inputs already in memory).
        gc.collect()
        can_reset = _reset_peak_rss()
        before = _status_kib("VmRSS")
        result = call()
        peak = _status_kib("VmHWM")
        del result
        # tracemalloc: peak bytes newly allocated by the call (numpy reports its buffers to tracemalloc).
        gc.collect()
        tracemalloc.start()
        result = call()
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del result
        measured = can_reset and before is not None and peak is not None
        out[m] = {"peak_rss_extra_mb": (peak - before) / 1024 if measured else None,
                  "tracemalloc_peak_mb": traced_peak / 2**20}
    return out


def measure_memory(pairs: list[tuple[int, int]]) -> list[dict]:
    results = []
    for n, days in pairs:
        # A fixed mmap threshold makes glibc hand every freed buffer of 64 kB or more back to the system at
        # once, so that the resident size before each call is the live memory, not the last call's garbage.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--memory-child", str(n),
                               str(days)], capture_output=True, text=True, timeout=1800, env=env)
        if proc.returncode:
            raise RuntimeError(f"memory measurement for {n} streams failed:\n{proc.stderr[-2000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


# -- the allocator: the same timings with glibc keeping freed memory ------------------------------------------
KEEP_MEMORY = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}


def measure_allocator(pairs: list[tuple[int, int]], repeats: int, warm: str) -> list[dict]:
    """Time the methods again in a subprocess whose glibc serves large buffers from a heap it never trims,
    so that a tick's temporaries reuse memory that is already mapped instead of faulting in fresh pages."""
    results = []
    for n, days in pairs:
        env = {**os.environ, **KEEP_MEMORY}
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--timing-child", str(n),
                               str(days), str(repeats), warm], capture_output=True, text=True, timeout=3600,
                              env=env)
        if proc.returncode:
            raise RuntimeError(f"allocator timing for {n} streams failed:\n{proc.stderr[-2000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


# -- 2: per-stream alternatives ------------------------------------------------------------------------------
def measure_alternatives(sample: int, days: int = 7) -> dict:
    from _alternatives import evidently_seconds_per_stream, river_seconds_per_stream

    fleet = SyntheticFleet(sample, seed=2)
    reference = fleet.reference(days)
    fleet.multiplier[: sample // 10] = 2.0  # a tenth of the sample got worse, so there is something to find
    _, current = fleet.next_tick()
    out = {"sample": sample, "days": days}
    runs = {
        "evidently DataDriftPreset report": lambda: evidently_seconds_per_stream(reference, current,
                                                                                 kind="preset"),
        "evidently ValueDrift report": lambda: evidently_seconds_per_stream(reference, current, kind="value"),
        "river ADWIN": lambda: river_seconds_per_stream(reference, current, detector="adwin"),
        "river Page-Hinkley": lambda: river_seconds_per_stream(reference, current, detector="page-hinkley"),
    }
    for name, call in runs.items():
        try:
            seconds, flagged, *state = call()
        except ImportError as exc:
            out[name] = {"error": f"not installed ({exc})"}
            continue
        except Exception as exc:  # a tool's API changed: report it in the table, keep the run going
            out[name] = {"error": f"failed: {type(exc).__name__}: {exc}"[:200]}
            continue
        out[name] = {"median_seconds": float(np.median(seconds)), "mean_seconds": float(np.mean(seconds)),
                     "flagged": int(flagged), "state_bytes": state[0] if state else None}
    return out


# -- 4: profile ----------------------------------------------------------------------------------------------
def measure_profile(n: int, days: int, ticks: int, warm: str) -> dict:
    from _profile import profile_decide

    run = PolicyRun(SyntheticFleet(n, seed=3), days)
    run.warm_up(run.warm_ticks if warm == "fill" else run.ready_ticks)
    rows, total_ms = profile_decide(run, ticks)
    return {"n": n, "days": days, "ticks": ticks, "rows": rows, "total_ms": total_ms}


# -- rendering -----------------------------------------------------------------------------------------------
def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


def fmt_ratio(r: float) -> str:
    if r >= 100:
        return f"{r:,.0f}"
    return f"{r:.2g}" if r < 10 else f"{r:.1f}"


def fmt_count(n: int) -> str:
    return f"{n:,}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render(results: dict) -> str:
    info, p = results["machine"], results["plan"]
    timings = {(t["n"], t["days"]): t for t in results["timings"]}
    parts = []

    blas = "; ".join(f"{pool.get('library', '?')}: {pool.get('internal_api', '?')} {pool.get('version', '?')}, "
                     f"{pool.get('num_threads', '?')} threads, {pool.get('architecture', '?')} kernels"
                     for pool in info["blas"]) or "unknown"
    pk = info["packages"]
    parts.append("\n".join([
        f"Run of {info['date']} ({'quick' if results['quick'] else 'full'} run): "
        f"{info['nproc']} CPUs ({info['cpu']}), {info['platform']}, Python {info['python']}, "
        f"numpy {pk['numpy']}, scipy {pk['scipy']}, pandas {pk['pandas']}, river {pk['river']}, "
        f"evidently {pk['evidently']}; BLAS: {blas}. Code: {info['code']}. Load average (1, 5, 15 min) "
        f"{info['load_average_start']} at the start, {results['load_average_end']} at the end. "
        f"Allocator: {malloc_setting(info)}. Times are "
        f"medians of {p['repeats']} ticks (x3 for 10,000 streams and fewer); "
        f"references warmed up by {'filling them' if p['warm'] == 'fill' else 'the warm-up and probation ticks'}.",
    ]))

    # 1. main table
    rows = []
    for days in p["main_days"]:
        for n in p["main_sizes"]:
            t = timings[(n, days)]
            s, r = t["seconds"], t["ratio_to_floor"]
            rows.append([fmt_count(n), f"{days}x24", fmt_time(s["floor"]), fmt_time(s["test"]),
                         fmt_time(s["decide"]), f"{r['test']:.1f}x", f"{r['decide']:.1f}x",
                         f"{s['decide'] / n * 1e6:.2f} us", f"{t['state_bytes_per_stream']:,.0f} B",
                         f"{t['reference_fill']:.0%}", f"{t['tested_share']:.0%}"])
    lists = max(t["list_bytes_per_stream"] for t in results["timings"])
    parts.append("### Cost of one monitoring tick\n\n" + table(
        ["streams", "reference", "numpy floor", "test + BH", "decide", "test / floor", "decide / floor",
         "decide per stream", "state per stream", "reference fill", "tested"], rows)
        + f"\n\nState per stream: the policy's numpy arrays divided by the streams; its Python lists (each "
          f"stream's recent trigger ticks) add about {lists:,.0f} B per stream. Reference fill: the mean share "
          f"of the reference capacity holding losses during the timed ticks; tested: the share of streams "
          f"tested in them.")

    # memory
    if results.get("memory"):
        rows = []
        for m in results["memory"]:
            def mb(x):
                return "n/a" if x is None else f"{x:,.1f} MB"
            rows.append([fmt_count(m["n"]), f"{m['days']}x24", f"{m['inputs_mb']:,.0f} MB",
                         *(f"{mb(m[k]['peak_rss_extra_mb'])} / {mb(m[k]['tracemalloc_peak_mb'])}"
                           for k in METHODS),
                         f"{m['state_bytes_per_stream'] * m['n'] / 2**20:,.1f} MB"])
        parts.append("### Peak memory of one tick\n\nEach size in its own process. Per method: the peak resident "
                     "set size above the resident size just before the call (Linux `VmHWM` after resetting "
                     "it through `/proc/self/clear_refs`) / the peak of memory newly allocated during the "
                     "call as `tracemalloc` sees it. Inputs: reference, losses and actuals of the tick.\n\n"
                     + table(["streams", "reference", "inputs", *(LABELS[m] for m in METHODS),
                              "policy state"], rows))

    # allocator
    if results.get("allocator"):
        rows = []
        for kept in results["allocator"]:
            base = timings.get((kept["n"], kept["days"]))
            if base is None:
                continue
            rows.append([fmt_count(kept["n"]), f"{kept['days']}x24",
                         *(f"{fmt_time(base['seconds'][m])} / {fmt_time(kept['seconds'][m])}" for m in METHODS),
                         f"{base['ratio_to_floor']['decide']:.1f}x / {kept['ratio_to_floor']['decide']:.1f}x"])
        parts.append("### The memory allocator\n\nA tick allocates large temporary arrays. With glibc's defaults "
                     "(first figure) buffers this large are mapped fresh and returned to the system on every "
                     "call, so each tick pays again for the kernel to fault in and zero its pages; the second "
                     "figure is the same configuration timed in a process started with "
                     + ", ".join(f"`{k}={v}`" for k, v in KEEP_MEMORY.items())
                     + " (freed memory stays in the process and is reused).\n\n"
                     + table(["streams", "reference", *(LABELS[m] for m in METHODS), "decide / floor"], rows))

    # 2. alternatives
    alt = results.get("alternatives")
    if alt:
        n_big = max(p["main_sizes"])
        mlma_week = timings[(n_big, 7)]["seconds"]["decide"] / n_big if (n_big, 7) in timings else None
        mlma_default = timings[(n_big, 14)]["seconds"]["decide"] / n_big if (n_big, 14) in timings else None
        n_small = min(p["main_sizes"])
        mlma_small = timings[(n_small, 7)]["seconds"]["decide"] / n_small if (n_small, 7) in timings else None
        state = timings[(n_big, 7)]["state_bytes_per_stream"]
        rows = [["MLMA `decide`, whole fleet", f"{fmt_count(n_big)} streams", fmt_time(mlma_week), "1",
                 fmt_ratio(mlma_small / mlma_week), f"{state:,.0f} B (numpy arrays)", "-"]]
        for name, a in alt.items():
            if not isinstance(a, dict):
                continue
            if "error" in a:
                rows.append([name, a["error"], "-", "-", "-", "-", "-"])
                continue
            s = a["median_seconds"]
            kept = (f"{a['state_bytes']:,.0f} B (pickled detector)" if a.get("state_bytes")
                    else f"the {alt['days'] * 24} reference losses")
            rows.append([name, f"sample of {alt['sample']} streams", fmt_time(s), fmt_ratio(s / mlma_week),
                         fmt_ratio(s / mlma_small), kept, f"{a['flagged']} of {alt['sample']}"])
        parts.append(f"### Per stream: MLMA against per-stream tools\n\nMedian cost per stream of one tick "
                     f"(reference: a week of hourly losses, current: the tick's 24 losses). MLMA's cost per "
                     f"stream is `decide`'s time for the whole fleet divided by its streams "
                     f"(with 14x24 references: {fmt_time(mlma_default) if mlma_default else 'n/a'}). "
                     f"The ratio columns: cost per stream divided by MLMA's at {fmt_count(n_big)} and at "
                     f"{fmt_count(n_small)} streams (MLMA's fixed cost per tick weighs more in a small "
                     f"fleet). A tenth of the sample's streams had their losses doubled in the tick; "
                     f"'flagged' counts the streams the tool flagged (MLMA's own detection power is in "
                     f"`docs/statistics.md`).\n\n"
                     + table(["method", "measured on", "per stream and tick", f"/ MLMA at {fmt_count(n_big)}",
                              f"/ MLMA at {fmt_count(n_small)}", "kept per stream", "flagged"], rows))

    # 3. scaling
    rows = []
    for n in p["scale_sizes"]:
        t = timings[(n, p["scale_days"])]
        s = t["seconds"]
        rows.append([fmt_count(n), *(fmt_time(s[m]) for m in METHODS),
                     *(f"{s[m] / n * 1e6:.2f}" for m in METHODS)])
    parts.append(f"### Growth with the number of streams ({p['scale_days']}x24 reference)\n\n" + table(
        ["streams", *(LABELS[m] for m in METHODS), *(f"{LABELS[m]}, us/stream" for m in METHODS)], rows))
    rows = []
    n = p["days_scan_streams"]
    for days in p["days_scan"]:
        t = timings[(n, days)]
        s = t["seconds"]
        rows.append([f"{days} days ({days * 24} losses)", *(fmt_time(s[m]) for m in METHODS),
                     f"{t['ratio_to_floor']['decide']:.1f}x", f"{t['state_bytes_per_stream']:,.0f} B"])
    parts.append(f"### Growth with the reference length ({fmt_count(n)} streams)\n\n" + table(
        ["reference", *(LABELS[m] for m in METHODS), "decide / floor", "state per stream"], rows))

    # 4. profile
    prof = results.get("profile")
    if prof:
        rows = [[name, f"{ms:,.1f}", f"{ms / prof['total_ms']:.0%}"] for name, ms in prof["rows"]]
        rows.append(["**total (timed around decide)**", f"**{prof['total_ms']:,.1f}**", "100%"])
        parts.append(f"### Where `decide`'s time goes ({fmt_count(prof['n'])} streams, {prof['days']}x24 "
                     f"reference, mean of {prof['ticks']} ticks)\n\nExclusive time per step: time spent in "
                     f"a step's callees is counted in the callee's row. The wrappers add a few microseconds "
                     f"per call.\n\n" + table(["step", "ms per tick", "share"], rows))

    # goals
    parts.append("### Goals\n\n" + table(["goal", "measured", "met"], goal_rows(results)))
    return "\n\n".join(parts) + "\n"


def malloc_setting(info: dict) -> str:
    env = info.get("malloc_env") or {}
    return ("glibc defaults" if not env
            else "glibc with " + ", ".join(f"`{k}={v}`" for k, v in sorted(env.items())))


def goal_rows(results: dict) -> list[list[str]]:
    p = results["plan"]
    timings = {(t["n"], t["days"]): t for t in results["timings"]}
    n_big = max(p["main_sizes"])
    rows = []
    for days in p["main_days"]:
        t = timings[(n_big, days)]
        s = t["seconds"]["decide"]
        slowest = max(t["seconds_all"]["decide"])
        rows.append([f"one tick of {fmt_count(n_big)} streams ({days}x24 reference) in under "
                     f"{GOAL_TICK_SECONDS:g} s", f"{fmt_time(s)} (median; slowest of {t['repeats']}: "
                     f"{fmt_time(slowest)})", "yes" if s < GOAL_TICK_SECONDS else "no"])
    kept = {(k["n"], k["days"]): k for k in results.get("allocator") or []}
    for days in p["main_days"]:
        r = timings[(n_big, days)]["ratio_to_floor"]["decide"]
        measured = f"{r:.1f}x"
        if (n_big, days) in kept:
            measured += f" ({kept[(n_big, days)]['ratio_to_floor']['decide']:.1f}x with memory kept)"
        rows.append([f"`decide` within {GOAL_FLOOR_FACTOR:g}x of the numpy floor ({fmt_count(n_big)} streams, "
                     f"{days}x24)", measured, "yes" if r <= GOAL_FLOOR_FACTOR else "no"])
    alt = results.get("alternatives") or {}
    for name in ("evidently DataDriftPreset report", "evidently ValueDrift report"):
        report = alt.get(name, {})
        if "median_seconds" in report and (n_big, 7) in timings:
            ratio = report["median_seconds"] / (timings[(n_big, 7)]["seconds"]["decide"] / n_big)
            rows.append([f"over {GOAL_CHEAPER:,.0f}x cheaper per stream than a per-stream drift report "
                         f"({name.replace('evidently ', 'Evidently ')}, {fmt_count(n_big)} streams, 7x24)",
                         f"{ratio:,.0f}x", "yes" if ratio > GOAL_CHEAPER else "no"])
    if (n_big, 7) in timings:
        b = timings[(n_big, 7)]["state_bytes_per_stream"]
        rows.append([f"state under {GOAL_STATE_BYTES / 1000:g} kB per stream with a week of hourly reference "
                     "losses", f"{b:,.0f} B", "yes" if b < GOAL_STATE_BYTES else "no"])
    return rows


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = results["plan"]
    timings = {(t["n"], t["days"]): t for t in results["timings"]}
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    sizes = p["scale_sizes"]
    for m in METHODS:
        left.plot(sizes, [timings[(n, p["scale_days"])]["seconds"][m] for n in sizes], "o-", label=LABELS[m])
    left.axhline(GOAL_TICK_SECONDS, color="grey", ls=":", lw=1, label=f"goal: {GOAL_TICK_SECONDS:g} s")
    left.set(xscale="log", yscale="log", xlabel="streams", ylabel="seconds per tick",
             title=f"{p['scale_days']}x24 reference losses")
    left.legend(fontsize=8, loc="upper left")
    days = p["days_scan"]
    n = p["days_scan_streams"]
    for m in METHODS:
        right.plot(days, [timings[(n, d)]["seconds"][m] for d in days], "o-", label=LABELS[m])
    kept = sorted((k["days"], k["seconds"]["decide"]) for k in results.get("allocator") or []
                  if k["n"] == n)
    if kept:
        right.plot(*zip(*kept), "s--", color="C2", alpha=0.6, label=f"{LABELS['decide']}, memory kept")
    right.legend(fontsize=8, loc="upper left")
    right.set(xlabel="reference length (days of hourly losses)", ylabel="seconds per tick",
              title=f"{n:,} streams", xticks=days)
    fig.suptitle(f"Monitoring cost per tick ({results['machine']['nproc']} CPUs, {results['machine']['date']})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_docs(text: str, path: Path = DOC) -> None:
    write_section(path, BEGIN, END, text, append=False)


# -- main ----------------------------------------------------------------------------------------------------
def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small fleets, few repeats: a smoke run for CI (under a minute)")
    parser.add_argument("--repeats", type=int, help="ticks timed per configuration (median reported)")
    parser.add_argument("--sample", type=int, help="streams in the per-stream tools' sample")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--no-alternatives", action="store_true", help="skip Evidently and River")
    parser.add_argument("--no-profile", action="store_true", help="skip the step-by-step profile")
    parser.add_argument("--write-docs", action="store_true",
                        help=f"put the tables into {DOC.relative_to(REPO)} between its markers")
    parser.add_argument("--plot", action="store_true", help=f"draw {PLOT.relative_to(REPO)}")
    parser.add_argument("--json", type=Path, help="also save the raw results here")
    parser.add_argument("--from-json", type=Path, metavar="PATH",
                        help="render (and write) the tables of results saved earlier with --json; measure nothing")
    parser.add_argument("--no-allocator", action="store_true",
                        help="skip timing the largest fleets again with glibc keeping freed memory")
    parser.add_argument("--memory-child", nargs=2, type=int, metavar=("STREAMS", "DAYS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--timing-child", nargs=4, metavar=("STREAMS", "DAYS", "REPEATS", "WARM"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.sample is not None and args.sample < 3:
        parser.error(f"--sample must be >= 3, got {args.sample}")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child)))
        return 0
    if args.timing_child:
        n, days, repeats, warm = args.timing_child
        print(json.dumps(time_configuration(int(n), int(days), int(repeats), warm)))
        return 0
    started = time.perf_counter()
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        for t in results["timings"]:
            t["n"], t["days"] = int(t["n"]), int(t["days"])
        publish(render(results), results, args)
        return 0
    p = plan(args.quick)
    if args.repeats:
        p["repeats"] = args.repeats
    if args.sample:
        p["sample"] = args.sample
    results = {"quick": args.quick, "plan": p, "machine": machine_info(), "timings": []}

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    for n, days in configurations(p):
        t = time_configuration(n, days, repeats_for(n, p["repeats"]), p["warm"])
        results["timings"].append(t)
        s = t["seconds"]
        say(f"{n:>7,} streams {days:>2}d: floor {fmt_time(s['floor'])}, test {fmt_time(s['test'])}, "
            f"decide {fmt_time(s['decide'])} (warm-up {t['warm_seconds']:.1f} s)")
    if not args.no_allocator:
        results["allocator"] = measure_allocator(p["allocator"], p["repeats"], p["warm"])
        say("allocator comparison measured")
    if not args.no_memory:
        results["memory"] = measure_memory(p["memory"])
        say("memory measured")
    if not args.no_alternatives:
        results["alternatives"] = measure_alternatives(p["sample"])
        say("per-stream alternatives measured")
    if not args.no_profile:
        n, days, ticks = p["profile"]
        results["profile"] = measure_profile(n, days, ticks, p["warm"])
        say("profile measured")
    results["load_average_end"] = load_average()
    results["seconds"] = time.perf_counter() - started
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))
    publish(render(results), results, args)
    say("done")
    return 0


def publish(text: str, results: dict, args: argparse.Namespace) -> None:
    print(text)
    if args.write_docs:
        write_docs(text)
        print(f"wrote {DOC.relative_to(REPO)}", file=sys.stderr)
    if args.plot:
        plot(results, PLOT)
        print(f"wrote {PLOT.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
