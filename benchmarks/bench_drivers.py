"""What exogenous drivers are worth on the simulated platform, and whether announced campaigns still trigger
re-trainings when the model knows about them.

Simulates a platform with weather and campaign columns (``simulate_platform(..., drivers=True)``), then runs
the same backtest three times: without drivers, with them as *historical* drivers (only their value at the
forecast origin, lag ``horizon``) and as *future* drivers (their value at the forecast time: a perfect weather
forecast and the announced campaign calendar). Prints a markdown table per variant and, for each policy, the
re-trainings that fall in ticks touched by a campaign of the stream's city against those elsewhere.

    .venv/bin/python benchmarks/bench_drivers.py --zones 200 --days 150 --seed 7 --model ridge
    .venv/bin/python benchmarks/bench_drivers.py --zones 200 --days 150 --seed 7 --campaign-rate 3 \
        --variants "no drivers,future drivers"

The numbers in docs/results-drivers.md come from this command.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mlma.backtest import BacktestConfig, run_backtest
from mlma.models import Drivers
from mlma.simulate import simulate_platform

DRIVER_COLUMNS = ("temperature", "rain", "campaign")
VARIANTS = {
    "no drivers": Drivers(),
    "historical drivers (lag only)": Drivers(historical=DRIVER_COLUMNS),
    "future drivers": Drivers(future=DRIVER_COLUMNS),
    "future weather only": Drivers(future=("temperature", "rain")),
}


def campaign_ticks(events: pd.DataFrame, boundaries: pd.DatetimeIndex) -> set[tuple[str, int]]:
    """(stream, tick) pairs whose tick overlaps a campaign of the stream, or is the tick right after one
    ends (the drop back to normal is a change too)."""
    pairs = set()
    starts, ends = boundaries[:-1], boundaries[1:]
    for row in events[events["kind"] == "campaign"].itertuples():
        end = pd.Timestamp(row.end) + pd.Timedelta(days=1)
        touched = np.flatnonzero((starts < end) & (ends > pd.Timestamp(row.start)))
        pairs.update((row.unique_id, int(k)) for k in touched)
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zones", type=int, default=200)
    parser.add_argument("--days", type=int, default=150)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model", default="ridge")
    parser.add_argument("--policies", default="never,periodic:7,always,mlma")
    parser.add_argument("--executor", default="inline")
    parser.add_argument("--campaign-rate", type=float, default=1.0, help="Scales how often campaigns run.")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="Comma-separated variant names.")
    parser.add_argument("--campaign-driver", default="planned", choices=("planned", "flag"),
                        help="What the campaign column announces: the planned uplift (default) or the 0/1 flag "
                             "of the results measured before it (docs/simulator.md).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the measurements here.")
    args = parser.parse_args()

    sim = simulate_platform(args.zones, args.days, args.seed, drivers=True, campaign_rate=args.campaign_rate,
                            campaign_driver=args.campaign_driver)
    data = sim.data
    n_campaigns = sim.events.loc[sim.events["kind"] == "campaign", "event_id"].nunique()
    print(f"simulated {args.zones} zones x {args.days} days, seed {args.seed}: {len(data):,} rows, "
          f"{n_campaigns} campaigns")
    results = {}
    for name in args.variants.split(","):
        drivers = VARIANTS[name]
        started = time.perf_counter()
        config = BacktestConfig(policies=args.policies.split(","), model=args.model, executor=args.executor,
                                drivers=drivers, title=name)
        result = run_backtest(data, config, events=sim.events)
        first = int(result.config["first_scored_tick"])
        # Daily ticks from the first midnight of the data (the simulator starts at midnight).
        boundaries = pd.date_range(data["ds"].min().normalize(), periods=result.config["n_ticks"] + 1, freq="D")
        assert boundaries[first] == pd.Timestamp(result.config["first_scored_at"])
        touched = campaign_ticks(sim.events, boundaries)
        log = result.retrain_log
        in_campaign = np.array([(u, int(t)) in touched for u, t in zip(log["unique_id"], log["tick"])], bool) \
            if len(log) else np.zeros(0, bool)
        scored_touched = sum(1 for _, k in touched if k >= first)
        rows = []
        for summary in result.summary:
            policy = summary["policy"]
            mine = (log["policy"] == policy).to_numpy() if len(log) else np.zeros(0, bool)
            rows.append({"policy": policy, "mae": summary["mae"], "retrains": int(mine.sum()),
                         "retrains_in_campaign_ticks": int((mine & in_campaign).sum())})
        results[name] = {"rows": rows, "campaign_stream_ticks": scored_touched,
                         "stream_ticks": int(args.zones * (result.config["n_ticks"] - first)),
                         "seconds": round(time.perf_counter() - started, 1),
                         "driver_values_filled": result.config.get("driver_values_filled", 0)}
        print(f"\n### {name} ({results[name]['seconds']} s)\n")
        print("| policy | MAE | re-trainings | of which in campaign stream-ticks |")
        print("| --- | ---: | ---: | ---: |")
        for r in rows:
            print(f"| {r['policy']} | {r['mae']:.4f} | {r['retrains']:,} | {r['retrains_in_campaign_ticks']:,} |")
        print(f"\ncampaign stream-ticks scored: {scored_touched:,} of {results[name]['stream_ticks']:,}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results},
                                        indent=2))


if __name__ == "__main__":
    main()
