"""Why announced campaigns still trigger re-trainings: MLMA's re-trainings in campaign stream-ticks, with and
without the campaign flag as a future driver, split by whether the serving model's training window held a
campaign of the stream's city (so that the flag could be learnt); and the MAE of the simulator's true mean
(an oracle forecast) during a zone's first campaign against the 14 days before it.

Usage (docs/results-drivers.md)::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_campaign_retrains.py 60 120 7 3 [POLICY [POWER]] \
        [--campaign-driver planned|flag] [--plan-sd SD]
    # zones days seed campaign-rate, policy spec (default "mlma", e.g. "mlma:loss=relative"), the explained
    # scale's exponent (default mlma.explained.DEFAULT_POWER); what the simulator's campaign column announces
    # (default "planned": the campaigns' planned uplift; "flag": 0/1 as before) and the planned uplift's error
    # (log-sd, default the simulator's 0.2); docs/simulator.md

Variants: "none" (no drivers), "campaign" (the flag as a future driver) and "events" (the flag also declared an
event driver, ``Drivers(events=...)``: the monitor divides the errors by the level change the model attributes
to it, to the power POWER; docs/monitoring.md "The loss").

It also replays the policy alone (no re-training) over the simulator's true mean, a perfect forecast that
knows every campaign, with the absolute and the relative loss, and counts triggers in campaign stream-ticks
and elsewhere ("oracle_triggers_*"); "oracle_triggers_explained" is the absolute loss divided by the campaigns'
true lift (the product of the running campaigns' magnitudes) to the power POWER: the explained scale of a
perfect multiplicative model.

"outcomes" says what came of the re-trainings of each cell (retrains.csv's ``outcome``): how many of them were
judged as challengers, how many were promoted, and their mean realised gain ``2 (champion - challenger) /
(champion + challenger)`` on the shadow tick (positive: the re-training paid).

"seen_flag_unchanged" counts the "seen" re-trainings at a campaign's start or end (within a day) while
another campaign runs across it: the 0/1 flag stays 1 there, so no driver can announce the change (the planned
uplift does change there); "unseen_overlap" counts the never-seen ones at such a moment.

"elsewhere" counts the re-trainings in all other scored stream-ticks (streams and days no campaign touched),
the rate a campaign the model knows about should not exceed.

The serving model of a stream-tick is taken to be the one fitted at the stream's last re-training before it
(or the first model); a re-trained candidate that was not promoted is not told apart, so "seen" is an
approximation.
"""
import json
import sys
import time

import numpy as np
import pandas as pd

from mlma.agent import AgentSettings
from mlma.backtest import BacktestConfig, run_backtest
from mlma.explained import DEFAULT_POWER
from mlma.models import Drivers
from mlma.simulate import simulate_platform

args = sys.argv[1:]
SIM = {}
for flag, key, kind in (("--campaign-driver", "campaign_driver", str), ("--plan-sd", "campaign_plan_sd", float)):
    if flag in args:
        i = args.index(flag)
        SIM[key] = kind(args[i + 1])
        del args[i:i + 2]
zones, days, seed, rate = int(args[0]), int(args[1]), int(args[2]), float(args[3])
POLICY = args[4] if len(args) > 4 else "mlma"
POWER = float(args[5]) if len(args) > 5 else DEFAULT_POWER
WINDOW = 28
sim = simulate_platform(zones, days, seed, drivers=True, campaign_rate=rate, **SIM)
data = sim.data
camp = sim.events[sim.events.kind == "campaign"]
day0 = data["ds"].min().normalize()
def dayn(t): return (pd.Timestamp(t) - day0) / pd.Timedelta("1D")
spans = {}
for r in camp.itertuples():
    spans.setdefault(r.unique_id, []).append((dayn(r.start), dayn(r.end)))
out = {}
for name, drivers in (("none", None), ("campaign", Drivers(future=("campaign",))),
                      ("events", Drivers(future=("campaign",), events=("campaign",)))):
    t0 = time.time()
    res = run_backtest(data, BacktestConfig(policies=[POLICY], model="ridge", executor="inline", drivers=drivers,
                                            agent=AgentSettings(explained_power=POWER)))
    first = int(res.config["first_scored_tick"]); n = int(res.config["n_ticks"])
    log = res.retrain_log
    re = {}
    for u, k in zip(log.unique_id, log.tick):
        re.setdefault(u, []).append(int(k))
    # What came of each re-training (retrains.csv's outcome): its challenger's realised gain on the shadow tick.
    paid = {(u, int(k)): (o, 2 * (cp - ch) / (cp + ch) if cp + ch > 0 else np.nan)
            for u, k, o, ch, cp in zip(log.unique_id, log.tick, log.outcome, log.challenger_loss, log.champion_loss)}
    outcomes = {"seen": [], "unseen": [], "elsewhere": []}
    cells = {True: [0, 0], False: [0, 0]}   # seen -> [campaign stream-ticks, retrains]
    # Seen re-trainings where a campaign starts or ends (within a day) while another one runs across that
    # moment: the 0/1 campaign flag stays 1, so no driver announces the change.
    hidden = 0
    hidden_unseen = 0
    scored_retrains = int(((log.tick >= first) & (log.tick < n)).sum())
    for u, sp in spans.items():
        ks = sorted(re.get(u, []))
        for t in range(first, n):
            # touched: tick t overlaps a campaign or is the day after it ends
            if not any(a < t + 1 and b + 1 > t for a, b in sp):
                continue
            fit_end = max([k + 1 for k in ks if k + 1 <= t] + [first])
            seen = any(a < fit_end and b > fit_end - WINDOW for a, b in sp)
            cells[seen][0] += 1
            cells[seen][1] += int(t in ks)
            if t in ks:
                outcomes["seen" if seen else "unseen"].append(paid[(u, t)])
                changes = [x for a, b in sp for x in (a, b) if t - 1 <= x < t + 1]
                overlap = any(a < x < b for x in changes for a, b in sp)
                if seen:
                    hidden += overlap
                else:
                    hidden_unseen += overlap
    counted = {(u, t) for u, sp in spans.items() for t in range(first, n)
               if any(a < t + 1 and b + 1 > t for a, b in sp)}
    outcomes["elsewhere"] = [v for (u, t), v in paid.items() if first <= t < n and (u, t) not in counted]

    def judged(cell):
        checked = [(o, g) for o, g in outcomes[cell] if o in ("promoted", "rejected")]
        gains = [g for _, g in checked if np.isfinite(g)]
        return {"promoted": sum(o == "promoted" for o, _ in checked), "judged": len(checked),
                "mean_gain": round(float(np.mean(gains)), 3) if gains else None}

    touched = cells[True][0] + cells[False][0]
    elsewhere = [data["unique_id"].nunique() * (n - first) - touched,
                 scored_retrains - cells[True][1] - cells[False][1]]
    out[name] = {"seen": cells[True], "unseen": cells[False], "elsewhere": elsewhere, "retrains": len(log),
                 "seen_flag_unchanged": hidden, "unseen_overlap": hidden_unseen,
                 "outcomes": {cell: judged(cell) for cell in outcomes},
                 "mae": res.summary[0]["mae"],
                 "s": round(time.time() - t0)}
    print(name, out[name], flush=True)

oracle = simulate_platform(zones, days, seed, drivers=True, campaign_rate=rate, expected=True, **SIM).data
oracle["err"] = (oracle["y"] - oracle["expected"]).abs()
oracle["day"] = (oracle["ds"] - day0).dt.days
daily = oracle.groupby(["unique_id", "day"]).agg(err=("err", "mean"), camp=("campaign", "max")).reset_index()
ratios = []
for u, g in daily.groupby("unique_id"):
    g = g.set_index("day")
    on = g.index[g.camp > 0]
    if len(on):
        ratios.append(g.loc[on, "err"].mean() / g.loc[on.min() - 14:on.min() - 1, "err"].mean())
ratios = np.array(ratios)
ratios = ratios[np.isfinite(ratios)]
out["oracle_ratio_median"] = float(np.median(ratios))
out["oracle_share_above_margin"] = float((ratios > 1.05).mean())


# The policy alone, on a perfect forecast (the simulator's true mean, which knows every campaign): the share
# of campaign stream-ticks and of other stream-ticks whose tests trigger, per loss. Replayed tick by tick
# without re-training (the reference keeps rolling), from day 14 (warm-up and reference first).
# The campaigns' true lift per stream and hour (overlapping campaigns multiply), for the explained scale.
lift = pd.Series(1.0, index=pd.MultiIndex.from_frame(oracle[["unique_id", "ds"]]))
for r in camp.itertuples():
    hours = pd.date_range(r.start, r.end, freq="h", inclusive="left")
    at = pd.MultiIndex.from_product([[r.unique_id], hours])
    at = at[at.isin(lift.index)]
    lift.loc[at] *= r.magnitude
oracle["lift"] = lift.to_numpy()


def oracle_triggers(loss, explained=False):
    from mlma.mlma_policy import MLMAPolicy
    from mlma.policy import TickObservation, Verdict

    frame = oracle.assign(hour=oracle["ds"].dt.hour)
    ids = sorted(frame["unique_id"].unique())
    grid = pd.MultiIndex.from_product([ids, range(int(frame["day"].max()) + 1), range(24)])
    cube = frame.set_index(["unique_id", "day", "hour"])[["y", "expected", "lift"]].reindex(grid)
    y = cube["y"].to_numpy().reshape(len(ids), -1, 24)
    f = cube["expected"].to_numpy().reshape(len(ids), -1, 24)
    scale = np.nan_to_num(cube["lift"].to_numpy().reshape(len(ids), -1, 24), nan=1.0) ** POWER
    policy = MLMAPolicy(loss=loss)
    policy.reset(len(ids), 24, 24)
    hit = {True: [0, 0], False: [0, 0]}
    for t in range(y.shape[1]):
        e = y[:, t] - f[:, t]
        d = policy.decide(TickObservation(t, actuals=y[:, t], losses=np.abs(e), scaled_losses=np.abs(e),
                                          has_model=np.isfinite(f[:, t]).any(axis=1),
                                          ticks_since_fit=np.full(len(ids), t),
                                          observed=np.isfinite(y[:, t]).sum(axis=1), errors=e, forecasts=f[:, t],
                                          explained=scale[:, t] if explained else None))
        if t < 14:
            continue
        for i, u in enumerate(ids):
            if not np.isfinite(e[i]).any():
                continue
            touched = any(a < t + 1 and b + 1 > t for a, b in spans.get(u, []))
            hit[touched][0] += 1
            hit[touched][1] += int(d.verdict[i] == Verdict.DEGRADED)
    return {"campaign": hit[True], "elsewhere": hit[False]}


for loss in ("absolute", "relative"):
    out[f"oracle_triggers_{loss}"] = oracle_triggers(loss)
    print(loss, out[f"oracle_triggers_{loss}"], flush=True)
out["oracle_triggers_explained"] = oracle_triggers("absolute", explained=True)
print("explained", out["oracle_triggers_explained"], flush=True)
print(json.dumps({"zones": zones, "days": days, "seed": seed, "rate": rate, "policy": POLICY, "power": POWER,
                  "campaign_driver": SIM.get("campaign_driver", "planned"), "plan_sd": SIM.get("campaign_plan_sd", 0.2),
                  **out}))
