"""End-to-end backtest throughput per built-in model, and what MLMA saves against re-training always.

For each built-in model (``seasonal-naive``, ``ridge``, ``lightgbm``) on the simulated delivery platform
(``mlma.simulate``, seed 7, hourly data, daily ticks), this runs :func:`mlma.backtest.run_backtest`

* once per policy (``never``, ``always``, ``mlma``), each in its own call: the wall time a user would see for
  that policy alone, since a backtest of several policies runs them in lockstep and fits a model that two
  policies need only once;
* once with the three policies in lockstep, where the plan says so: what ``mlma backtest`` costs for all
  three, and a check that the single-policy runs scored the same points and got the same errors;

with the fits inline and, for some cases, on a local pool of two processes (``process:2``). It reports wall
time, stream-ticks per second (streams x scored ticks / wall seconds), the CPU seconds of every process
involved, the fit compute seconds and re-trainings of each policy (the backtest summary's
``compute_seconds`` and ``retrains``), the MAE of each policy, and the headline: compute saved by MLMA
against ``always`` (1 - mlma / always fit seconds) next to the accuracy it costs (mlma MAE / always MAE - 1).

Usage::

    .venv/bin/python benchmarks/bench_throughput.py --quick       # smoke run, under 2 minutes
    .venv/bin/python benchmarks/bench_throughput.py --write-docs --json /tmp/throughput.json
    .venv/bin/python benchmarks/bench_throughput.py --from-json /tmp/throughput.json --write-docs
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import re
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _docs import write_section  # noqa: E402
from _machine import REPO, load_average, machine_info, version  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- throughput-results:begin -->", "<!-- throughput-results:end -->"
MODELS = ("seasonal-naive", "ridge", "lightgbm")
POLICIES = ("never", "always", "mlma")
SEED = 7
DAYS = 84

# The goals docs/results.md measures MLMA against: MAE within 3 % of always-re-train with at most a fifth of
# its re-training work.
GOAL_ACCURACY_LOST = 0.03
GOAL_COMPUTE_SHARE = 0.2


# -- plans ---------------------------------------------------------------------------------------------------
def case(streams: int, model: str, executor: str = "inline", *, days: int = DAYS, lockstep: bool = True,
         policies: tuple[str, ...] = POLICIES) -> dict:
    return {"streams": streams, "days": days, "model": model, "executor": executor, "lockstep": lockstep,
            "policies": list(policies)}


def plan(quick: bool, large: bool = False) -> dict:
    """The cases of a run; a size's cases stay together so that one platform is simulated per size."""
    if quick:
        # 80 zones x 42 days: 21 scored ticks after a 21-day start; every model and both executors.
        cases = [case(80, "seasonal-naive", days=42), case(80, "ridge", days=42),
                 case(80, "lightgbm", days=42, lockstep=False),
                 case(80, "lightgbm", "process:2", days=42, lockstep=False, policies=("always", "mlma"))]
        return {"seed": SEED, "cases": cases}
    # The demo's platform (200 zones x 84 days) for every model. LightGBM's always-re-train run alone takes
    # 4-5 minutes on a busy 2-CPU machine, inline or on two processes, so it gets no lockstep run (that would
    # cost as much again); the single runs' scored points are still compared. 1,000 zones only for seasonal-naive, whose
    # fits cost next to nothing: the agent's own throughput at five times the streams, in about a minute.
    cases = [
        case(200, "seasonal-naive"),
        case(200, "ridge"),
        case(200, "lightgbm", lockstep=False),
        case(200, "lightgbm", "process:2", lockstep=False, policies=("always", "mlma")),
        case(1000, "seasonal-naive", lockstep=False),
    ]
    if large:
        # Ridge at 1,000 zones: several minutes more, most of them the always-only run.
        cases.append(case(1000, "ridge", lockstep=False))
    return {"seed": SEED, "cases": cases}


# -- measuring -----------------------------------------------------------------------------------------------
def children_cpu() -> float:
    """CPU seconds of this process's finished children (the pool's workers, once it is shut down)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def points_digest(per_stream, policy: str) -> str:
    """A fingerprint of how many points of each stream were scored, to compare runs' scored points."""
    counts = per_stream.loc[per_stream["policy"] == policy, ["unique_id", "n_scored"]]
    counts = counts.sort_values("unique_id")
    payload = "\n".join(f"{u},{n}" for u, n in zip(counts["unique_id"], counts["n_scored"]))
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def time_run(data, model: str, policies: list[str], executor: str) -> dict:
    """One ``run_backtest`` call: wall and CPU seconds, and the summary row of each policy."""
    from mlma.backtest import BacktestConfig, run_backtest

    config = BacktestConfig(policies=list(policies), model=model, executor=executor, sample_streams=0,
                            title=f"throughput: {model}, {'+'.join(policies)}, {executor}")
    gc.collect()
    load_before = os.getloadavg()[0]
    cpu_started, children_started = time.process_time(), children_cpu()
    started = time.perf_counter()
    result = run_backtest(data, config)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    # run_backtest shuts a process pool down (and waits for it) before returning, so its workers count here.
    worker_cpu = children_cpu() - children_started
    cfg = result.config
    summary = {}
    for row in result.summary:
        summary[row["policy"]] = {
            "mae": row["mae"], "rmse": row["rmse"], "mase": row["mase"], "retrains": row["retrains"],
            "compute_seconds": row["compute_seconds"], "initial_fits": row["initial_fits"],
            "initial_compute_seconds": row["initial_compute_seconds"], "promotions": row["promotions"],
            "n_scored": row["n_scored"], "points": points_digest(result.per_stream, row["policy"]),
        }
    return {
        "policies": list(policies), "wall_seconds": wall, "cpu_seconds": cpu, "worker_cpu_seconds": worker_cpu,
        "load_before": load_before, "load_after": os.getloadavg()[0],
        "n_streams": cfg["n_streams"], "n_ticks": cfg["n_ticks"], "first_scored_tick": cfg["first_scored_tick"],
        "scored_ticks": cfg["n_ticks"] - cfg["first_scored_tick"], "fits_done": cfg["fits_done"],
        "summary": summary,
    }


def measure_case(c: dict, data, say) -> dict:
    runs = []
    for policy in c["policies"]:
        run = time_run(data, c["model"], [policy], c["executor"])
        runs.append(run)
        s = run["summary"][policy]
        say(f"{c['streams']:>5,} {c['model']:<14} {c['executor']:<9} {policy:<6} {run['wall_seconds']:7.1f} s "
            f"wall, {s['retrains']:>6,} re-trainings, {s['compute_seconds']:7.1f} s fits, MAE {s['mae']:.4f}")
    lockstep = None
    if c["lockstep"]:
        lockstep = time_run(data, c["model"], c["policies"], c["executor"])
        say(f"{c['streams']:>5,} {c['model']:<14} {c['executor']:<9} lockstep {lockstep['wall_seconds']:5.1f} s "
            f"wall, {lockstep['fits_done']:,} fits")
    return {**c, "runs": runs, "lockstep_run": lockstep}


# -- derived figures -----------------------------------------------------------------------------------------
def single(c: dict, policy: str) -> dict | None:
    """The run of ``policy`` on its own, if the case has one."""
    for run in c["runs"]:
        if run["policies"] == [policy]:
            return run
    return None


def policy_row(c: dict, policy: str) -> dict | None:
    """The summary row of ``policy``: from its own run, else from the lockstep run."""
    run = single(c, policy)
    if run is not None:
        return run["summary"][policy]
    if c.get("lockstep_run"):
        return c["lockstep_run"]["summary"].get(policy)
    return None


def consistency(c: dict) -> dict:
    """Did every run score the same points, and do the single-policy runs' MAEs match the lockstep run's?"""
    digests = {run["summary"][p]["points"] for run in c["runs"] for p in run["policies"]}
    lock = c.get("lockstep_run")
    if lock:
        digests |= {row["points"] for row in lock["summary"].values()}
    mae_diff = None
    if lock:
        diffs = [abs(run["summary"][p]["mae"] / lock["summary"][p]["mae"] - 1)
                 for run in c["runs"] for p in run["policies"] if p in lock["summary"]]
        mae_diff = max(diffs) if diffs else None
    return {"same_points": len(digests) == 1, "max_mae_rel_diff": mae_diff}


def headline(c: dict) -> dict:
    rows = {p: policy_row(c, p) for p in POLICIES}
    out: dict = {}
    always, mlma, never = rows["always"], rows["mlma"], rows["never"]
    if always and mlma:
        out["compute_saved"] = (1 - mlma["compute_seconds"] / always["compute_seconds"]
                                if always["compute_seconds"] > 0 else None)
        out["retrains_share"] = mlma["retrains"] / always["retrains"] if always["retrains"] else None
        out["accuracy_lost"] = mlma["mae"] / always["mae"] - 1
    if always and mlma and never:
        gap = never["mae"] - always["mae"]
        # Closing a gap below 0.1 % of the error is noise, not a result (seasonal-naive has none at all).
        out["gap_closed"] = (never["mae"] - mlma["mae"]) / gap if abs(gap) > 1e-3 * always["mae"] else None
    a, m = single(c, "always"), single(c, "mlma")
    if a and m:
        out["wall_saved"] = 1 - m["wall_seconds"] / a["wall_seconds"]
        out["throughput_gain"] = a["wall_seconds"] / m["wall_seconds"]
    return out


# -- rendering -----------------------------------------------------------------------------------------------
def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:,.0f} s" if s >= 100 else f"{s:.1f} s" if s >= 1 else f"{s:.2f} s"


def fmt_pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x * 100:+.{digits}f} %".replace("+-", "-")


def fmt_share(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x * 100:.{digits}f} %"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def label(c: dict) -> list[str]:
    return [f"{c['streams']:,}", c["model"], c["executor"]]


def throughput_rows(c: dict) -> list[list[str]]:
    rows = []
    runs = list(c["runs"]) + ([c["lockstep_run"]] if c.get("lockstep_run") else [])
    for run in runs:
        lockstep = len(run["policies"]) > 1
        name = "+".join(run["policies"]) + (" (lockstep)" if lockstep else "")
        stream_ticks = run["n_streams"] * run["scored_ticks"]
        fit_seconds = max(row["compute_seconds"] + row["initial_compute_seconds"]
                          for row in run["summary"].values()) if not lockstep else None
        cpu = run["cpu_seconds"] + run["worker_cpu_seconds"]
        rows.append(label(c) + [
            name, fmt_seconds(run["wall_seconds"]), f"{stream_ticks / run['wall_seconds']:,.0f}",
            f"{run['fits_done']:,}", fmt_seconds(fit_seconds), fmt_seconds(cpu),
            f"{run['load_before']:.1f} / {run['load_after']:.1f}",
        ])
    return rows


def stream_ticks_per_second(run: dict | None) -> float | None:
    return run["n_streams"] * run["scored_ticks"] / run["wall_seconds"] if run else None


def headline_rows(c: dict) -> list[list[str]]:
    h = headline(c)
    speeds = [stream_ticks_per_second(single(c, p)) for p in POLICIES]
    gain = h.get("throughput_gain")
    return [label(c) + ["-" if v is None else f"{v:,.0f}" for v in speeds] + [
        "-" if gain is None else f"{gain:.1f}x", fmt_share(h.get("compute_saved")),
        fmt_pct(h.get("accuracy_lost")), fmt_share(h.get("gap_closed"), 0)]]


def accuracy_rows(c: dict) -> list[list[str]]:
    rows = {p: policy_row(c, p) for p in POLICIES}
    check = consistency(c)

    def cell(p, text):
        return text(rows[p]) if rows[p] else "-"

    same = "yes" if check["same_points"] else "**no**"
    if check["max_mae_rel_diff"] is not None:
        same += f" (MAE {check['max_mae_rel_diff']:.0e})" if check["max_mae_rel_diff"] > 0 else " (MAE equal)"
    return [label(c) + [
        *(cell(p, lambda r: f"{r['mae']:.4f}") for p in POLICIES),
        cell("always", lambda r: f"{r['retrains']:,}"),
        cell("mlma", lambda r: f"{r['retrains']:,} ({r['promotions']:,})"),
        cell("always", lambda r: fmt_seconds(r["compute_seconds"])),
        cell("mlma", lambda r: fmt_seconds(r["compute_seconds"])),
        same]]


def goal_rows(results: dict) -> list[list[str]]:
    rows = []
    for c in results["cases"]:
        h = headline(c)
        if h.get("accuracy_lost") is None or h.get("compute_saved") is None:
            continue
        share = 1 - h["compute_saved"]
        met = h["accuracy_lost"] <= GOAL_ACCURACY_LOST and share <= GOAL_COMPUTE_SHARE
        rows.append(label(c) + [fmt_share(share), fmt_pct(h["accuracy_lost"]),
                                "yes" if met else "**no**" + (" (accuracy)" if share <= GOAL_COMPUTE_SHARE
                                                              else "")])
    return rows


def render(results: dict) -> str:
    info = results["machine"]
    pk = info["packages"]
    blas = "; ".join(f"{pool.get('library', '?')}: {pool.get('internal_api', '?')} {pool.get('version', '?')}, "
                     f"{pool.get('num_threads', '?')} threads" for pool in info["blas"]) or "unknown"
    first = results["cases"][0]
    parts = [
        f"Run of {info['date']} ({'quick' if results['quick'] else 'full'} run, {results['seconds'] / 60:.1f} "
        f"minutes): {info['nproc']} CPUs ({info['cpu']}), {info['platform']}, Python {info['python']}, "
        f"numpy {pk['numpy']}, pandas {pk['pandas']}, scikit-learn {results['versions']['scikit-learn']}, "
        f"LightGBM {results['versions']['lightgbm']}; BLAS: {blas}. Code: {info['code']}. Load average "
        f"(1, 5, 15 min) {info['load_average_start']} at the start, {results['load_average_end']} at the end. "
        f"Data: `simulate_platform(zones, {first['days']}, seed={results['plan']['seed']})`, hourly, daily ticks, "
        f"{first['runs'][0]['scored_ticks']} scored ticks per stream; one run per row, no repeats.",
    ]
    through = [r for c in results["cases"] for r in throughput_rows(c)]
    parts.append("### Throughput, one `run_backtest` call per row\n\n" + table(
        ["streams", "model", "executor", "policies", "wall", "stream-ticks / s", "fits", "fit CPU",
         "CPU, all processes", "load before / after"], through)
        + "\n\nStream-ticks / s: streams x scored ticks / wall seconds. Fits: models fitted, first fits "
          "included. Fit CPU: the policy's re-training plus first-fit CPU seconds (as the summary counts them; "
          "blank for a lockstep run, which shares fits). CPU, all processes: this process and the pool's "
          "workers. Load: the 1-minute load average before and after the run (2 means both CPUs busy).")
    heads = [r for c in results["cases"] for r in headline_rows(c)]
    parts.append("### Headline: throughput, compute saved, accuracy lost\n\n" + table(
        ["streams", "model", "executor", "stream-ticks / s, never", "always", "mlma",
         "mlma speed-up over always", "fit compute saved", "accuracy lost", "gap closed"], heads)
        + "\n\nEach policy in its own run. Speed-up: wall of the always-only run / wall of the mlma-only run. "
          "Fit compute saved: 1 - mlma / always re-training fit CPU seconds (the summary's "
          "`compute_seconds`, first fits excluded). Accuracy lost: mlma MAE / always MAE - 1. Gap closed: the "
          "share of the MAE gap between never and always that MLMA closes (\"-\" where the gap is under 0.1 %).")
    accuracy = [r for c in results["cases"] for r in accuracy_rows(c)]
    parts.append("### Accuracy and re-training work\n\n" + table(
        ["streams", "model", "executor", "MAE never", "MAE always", "MAE mlma", "re-trainings always",
         "re-trainings mlma (promoted)", "fit s always", "fit s mlma", "same points"], accuracy)
        + "\n\nFrom each policy's own run. Re-trainings of mlma are the challengers it fitted; in brackets, "
          "those promoted into service. Same points: whether every run of the case scored the same number of "
          "points on every stream; where a lockstep run exists, the largest relative difference between a "
          "policy's MAE in its own run and in the lockstep run.")
    goals = goal_rows(results)
    if goals:
        parts.append("### Against the goal\n\n" + table(
            ["streams", "model", "executor", "mlma fit compute / always",
             f"accuracy lost (goal: within {GOAL_ACCURACY_LOST * 100:g} %)", "goal met"], goals)
            + f"\n\nThe goal of [results.md](results.md): MAE within {GOAL_ACCURACY_LOST * 100:g} % of `always` "
              f"with at most {GOAL_COMPUTE_SHARE * 100:g} % of its re-training work (measured here as fit CPU "
              "seconds).")
    return "\n\n".join(parts) + "\n"


def write_docs(text: str, path: Path = DOC) -> None:
    write_section(path, BEGIN, END, text, append=True)


# -- main ----------------------------------------------------------------------------------------------------
def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="80 zones x 42 days: a smoke run, under 2 minutes")
    parser.add_argument("--large", action="store_true",
                        help="add ridge on 1,000 zones (several minutes more); ignored with --quick")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated models to run, out of the plan's (default: all)")
    parser.add_argument("--write-docs", action="store_true",
                        help=f"put the tables into {DOC.relative_to(REPO)} between its throughput markers")
    parser.add_argument("--json", type=Path, help="also save the raw measurements here")
    parser.add_argument("--from-json", type=Path, metavar="PATH",
                        help="render (and write) the tables of measurements saved with --json; measure nothing")
    args = parser.parse_args(argv)
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in MODELS]
    if unknown or not wanted:
        parser.error(f"--models takes some of {', '.join(MODELS)}, got {args.models!r}")
    args.models = wanted
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        publish(render(results), args)
        return 0
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    from mlma.simulate import simulate_platform

    p = plan(args.quick, args.large)
    p["cases"] = [c for c in p["cases"] if c["model"] in args.models]
    results = {"quick": args.quick, "plan": p, "machine": machine_info(),
               "versions": {k: version(k) for k in ("scikit-learn", "lightgbm")}, "cases": []}
    platforms: dict[tuple[int, int], object] = {}
    for c in p["cases"]:
        size = (c["streams"], c["days"])
        if size not in platforms:
            platforms.clear()  # one platform in memory at a time; the plan keeps a size's cases together
            platforms[size] = simulate_platform(c["streams"], c["days"], seed=p["seed"]).data
        results["cases"].append(measure_case(c, platforms[size], say))
    results["load_average_end"] = load_average()
    results["seconds"] = time.perf_counter() - started
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))
    publish(render(results), args)
    say("done")
    return 0


def publish(text: str, args: argparse.Namespace) -> None:
    print(text)
    if args.write_docs:
        write_docs(text)
        print(f"wrote {DOC.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
