"""Judging a policy at equal cost: the schedule frontier, each policy's gap to it, and its uncertainty.

The standard is ``/work/shared/EVALUATION.md`` (summarised in ``docs/backtest.md``):

- **Frontier**: the best *schedule* at each cost. The schedules are ``never``, staggered ``periodic:K`` for a
  range of K, and ``always``; each is a point (re-trainings, MAE). Schedules that another one beats at no more
  re-trainings are dropped, and the rest are joined by straight lines on a ``log(1 + re-trainings)`` axis.
  Past the most expensive schedule the frontier stays at its MAE; below the cheapest it is undefined.
- **Gap**: a policy's MAE minus the frontier's MAE at the policy's own re-training count, in % of
  ``always``'s MAE. Negative is better than any schedule at that cost.
- **Interval**: a bootstrap over streams. Each replicate draws streams with replacement and recomputes every
  policy's MAE and re-training count, the frontier and ``always`` on that same draw; the 2.5 % and 97.5 %
  quantiles of the replicates' gaps form the 95 % interval.

- **Clairvoyant bound**: what the same number of re-trainings buys when each stream's schedule is chosen
  in hindsight. Every stream may follow any of the schedules (``never``, ``periodic:K``, ``always``) and
  the oracle, knowing each stream's error under each, spends the re-trainings where they cut the error
  most (see :func:`clairvoyant_curve`). It shows what is left on the table at a policy's cost; it knows
  the future, so no policy should be expected to reach it. It is per stream, not per re-training: an oracle
  that also picked the ticks would go lower still.

Everything here is plain numpy on per-stream sums, so thousands of replicates take well under a second.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

SCHEDULE = re.compile(r"^(never|always|periodic:\d+)$")
"""Names of the policies that make up the frontier (staggered periodic only: ``periodic:K:sync`` is not)."""


def default_periods(scored_ticks: int, count: int = 10, longest: int = 16) -> list[int]:
    """The periods K of the frontier's ``periodic:K`` schedules for a backtest of ``scored_ticks`` ticks.

    ``count`` periods, geometric from 2 to ``longest`` times the scored ticks, so the frontier has a point at
    every order of magnitude of cost. Periods longer than the backtest are real schedules too: staggered, a
    share ``scored_ticks / K`` of the streams re-trains once within it, which puts schedules near the cheap
    end, where a straight line from ``never`` to a weekly schedule would be far too optimistic.

    >>> default_periods(54)
    [2, 4, 8, 15, 30, 58, 114, 224, 440, 864]
    >>> default_periods(3, count=4)
    [2, 6, 17, 48]
    """
    top = max(3, longest * scored_ticks)
    return sorted({int(round(k)) for k in np.geomspace(2, top, max(count, 2))})


def is_schedule(policy: str) -> bool:
    """Whether ``policy`` is one of the frontier's schedules.

    >>> [is_schedule(p) for p in ("never", "periodic:7", "periodic:7:sync", "always", "mlma")]
    [True, True, False, True, False]
    """
    return bool(SCHEDULE.match(policy))


def frontier_points(retrains, mae) -> tuple[np.ndarray, np.ndarray]:
    """The undominated schedules, sorted by cost: ``(log(1 + re-trainings), MAE)``.

    A schedule is dropped when another has no more re-trainings and a lower MAE.

    >>> x, y = frontier_points([0, 10, 100, 1000], [2.0, 1.5, 1.6, 1.2])
    >>> np.expm1(x).round().tolist(), y.tolist()
    ([0.0, 10.0, 1000.0], [2.0, 1.5, 1.2])
    """
    x = np.log1p(np.asarray(retrains, dtype=float))
    y = np.asarray(mae, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    order = np.lexsort((y, x))
    x, y = x[order], y[order]
    keep = np.zeros(len(x), dtype=bool)
    best = np.inf
    for i in range(len(x)):
        if y[i] < best:
            keep[i] = True
            best = y[i]
    return x[keep], y[keep]


def frontier_mae(retrains, mae, at) -> np.ndarray:
    """The frontier's MAE at ``at`` re-trainings (scalar or array); NaN below the cheapest schedule.

    >>> float(frontier_mae([0, 99, 9999], [2.0, 1.5, 1.0], 999))  # halfway between on log(1 + x)
    1.25
    >>> float(frontier_mae([0, 99], [2.0, 1.5], 10 ** 6)), float(frontier_mae([5, 99], [2.0, 1.5], 0))
    (1.5, nan)
    """
    x, y = frontier_points(retrains, mae)
    at_x = np.log1p(np.asarray(at, dtype=float))
    if not len(x):
        return np.full(np.shape(at_x), np.nan)
    out = np.interp(at_x, x, y)
    return np.where(at_x < x[0] - 1e-12, np.nan, out)


def gap_percent(policy_mae, policy_retrains, schedule_retrains, schedule_mae, always_mae) -> np.ndarray:
    """``(policy MAE - frontier MAE at its re-trainings) / always's MAE x 100``.

    >>> round(float(gap_percent(1.4, 99, [0, 99, 9999], [2.0, 1.5, 1.0], 1.0)), 9)
    -10.0
    """
    frontier = frontier_mae(schedule_retrains, schedule_mae, policy_retrains)
    return 100.0 * (np.asarray(policy_mae, dtype=float) - frontier) / always_mae


def stream_sums(per_stream: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """From a backtest's ``per_stream`` frame: policies, and streams x policies arrays of the sum of absolute
    errors, the number of scored points and the re-trainings."""
    frame = per_stream.copy()
    frame["abs_sum"] = np.where(frame["n_scored"] > 0, frame["mae"] * frame["n_scored"], 0.0)
    policies = list(dict.fromkeys(frame["policy"]))
    wide = frame.pivot(index="unique_id", columns="policy")
    abs_sum = wide["abs_sum"][policies].to_numpy(dtype=float)
    n = wide["n_scored"][policies].to_numpy(dtype=float)
    retrains = wide["retrains"][policies].to_numpy(dtype=float)
    return policies, np.nan_to_num(abs_sum), np.nan_to_num(n), np.nan_to_num(retrains)


MAX_BOOTSTRAP = 100_000
"""The most bootstrap replicates a run takes: far more than a 95 % interval's ends need (1,000 place them within
a few hundredths of a point), and 10**8, a typo, ran for an hour into 10 GB after the replay, with nothing
written yet."""

MIN_STREAMS_FOR_INTERVAL = 10
"""Fewer streams than this give no interval: resampling a handful of streams says little about the next.
Only streams with a scored point count."""


def frontier_gaps(per_stream: pd.DataFrame, *, n_boot: int = 1000, level: float = 0.95,
                  seed: int = 0) -> dict:
    """Each policy's gap to the schedule frontier with a bootstrap interval over streams.

    Parameters
    ----------
    per_stream
        Rows ``policy, unique_id, mae, n_scored, retrains`` (a backtest's ``per_stream``); must hold
        ``always`` and at least one other schedule.
    n_boot
        Bootstrap replicates; none are drawn for fewer than :data:`MIN_STREAMS_FOR_INTERVAL` streams with a
        scored point.
    level
        Coverage of the interval.
    seed
        Seed of the resampling, so a summary is reproducible.

    Returns
    -------
    dict
        ``{"frontier": [{"policy", "retrains", "mae", "dominated"}...], "gaps": {policy: {"gap_pct",
        "gap_low", "gap_high", "frontier_mae", "clairvoyant_mae", "headroom_pct"}}, "clairvoyant":
        [{"retrains", "mae"}...]}``; empty when there is no ``always`` or no second schedule.
    """
    policies, abs_sum, n, retrains = stream_sums(per_stream)
    schedules = [i for i, p in enumerate(policies) if is_schedule(p)]
    if "always" not in policies or len(schedules) < 2:
        return {}
    always = policies.index("always")

    def evaluate(weights: np.ndarray) -> np.ndarray:
        """Gaps (replicates x policies) for stream weights (replicates x streams)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mae = (weights @ abs_sum) / (weights @ n)
        cost = weights @ retrains
        gaps = np.full(mae.shape, np.nan)
        for b in range(len(weights)):
            gaps[b] = gap_percent(mae[b], cost[b], cost[b, schedules], mae[b, schedules], mae[b, always])
        return gaps

    # A stream with no scored point and no re-training under any policy (one that ended before scoring began,
    # or launched too late to get a model) weighs nothing in any MAE or cost: it is no stream of the panel
    # measured, so it neither counts towards the minimum for an interval nor takes a place in the resample.
    scored = n.sum(axis=1) > 0
    present = scored | (retrains.sum(axis=1) > 0)
    abs_sum, n, retrains = abs_sum[present], n[present], retrains[present]
    n_streams = len(abs_sum)
    if int(scored.sum()) < MIN_STREAMS_FOR_INTERVAL:
        n_boot = 0
    point = evaluate(np.ones((1, n_streams)))[0]
    rng = np.random.default_rng(seed)
    boots = []
    for start in range(0, n_boot, 200):  # in blocks, to bound memory for large fleets
        size = min(200, n_boot - start)
        boots.append(evaluate(rng.multinomial(n_streams, np.full(n_streams, 1.0 / n_streams), size=size)
                              .astype(float)))
    boot = np.concatenate(boots) if boots else np.empty((0, len(policies)))
    tail = (1 - level) / 2
    with np.errstate(invalid="ignore"):
        mae_all = abs_sum.sum(axis=0) / n.sum(axis=0)
    cost_all = retrains.sum(axis=0)
    def dominated(i: int) -> bool:
        return any(cost_all[j] <= cost_all[i] and mae_all[j] < mae_all[i] for j in schedules if j != i)

    out = {"frontier": [{"policy": policies[i], "retrains": int(cost_all[i]), "mae": float(mae_all[i]),
                         "dominated": dominated(i)}
                        for i in sorted(schedules, key=lambda i: cost_all[i])],
           "gaps": {}}
    frontier_at = frontier_mae(cost_all[schedules], mae_all[schedules], cost_all)
    oracle_at = clairvoyant_mae(per_stream, cost_all)
    for j, policy in enumerate(policies):
        finite = boot[:, j][np.isfinite(boot[:, j])]
        ok = np.isfinite(point[j]) and len(finite) >= 0.9 * len(boot) and len(boot)
        out["gaps"][policy] = {
            "gap_pct": round(float(point[j]), 3) if np.isfinite(point[j]) else None,
            "gap_low": round(float(np.quantile(finite, tail)), 3) if ok else None,
            "gap_high": round(float(np.quantile(finite, 1 - tail)), 3) if ok else None,
            "frontier_mae": float(frontier_at[j]) if np.isfinite(frontier_at[j]) else None,
            "clairvoyant_mae": float(oracle_at[j]) if np.isfinite(oracle_at[j]) else None,
            # What the oracle would cut below the frontier at this cost, in % of always's MAE.
            "headroom_pct": (round(float(100 * (frontier_at[j] - oracle_at[j]) / mae_all[always]), 3)
                             if np.isfinite(frontier_at[j] - oracle_at[j]) else None),
        }
    top = cost_all[schedules].max()
    grid = np.unique(np.round(np.expm1(np.linspace(0, np.log1p(top), 40))))
    out["clairvoyant"] = [{"retrains": int(c), "mae": float(m)} for c, m in zip(grid, clairvoyant_mae(per_stream,
                                                                                                     grid))]
    return out


def pool_runs(per_stream: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, list[str]]:
    """Several backtests' ``per_stream`` frames as one fleet, for :func:`frontier_gaps` over all their streams
    (e.g. the simulator's report seeds: 4 x 200 streams give one interval about half as wide as each seed's).

    Each stream is named ``run/unique_id``, so that runs over the same ids (seeds of one simulated platform)
    stay apart; only the policies every run holds are kept (returned second: the dropped ones). The streams of
    different runs are independent draws, so resampling them together is the same bootstrap over streams; the
    frontier is then the pooled fleet's, each schedule summed over the runs.

    >>> one = pd.DataFrame({"policy": ["always", "never", "mlma"], "unique_id": "a", "mae": [1.0, 2.0, 1.5],
    ...                     "n_scored": 10, "retrains": [5, 0, 1]})
    >>> pooled, dropped = pool_runs({"seed-1": one, "seed-2": one.iloc[:2]})
    >>> sorted(pooled["unique_id"].unique()), dropped
    (['seed-1/a', 'seed-2/a'], ['mlma'])
    """
    if not per_stream:
        raise ValueError("pool_runs needs at least one run")
    common = set.intersection(*(set(frame["policy"]) for frame in per_stream.values()))
    order = list(dict.fromkeys(p for frame in per_stream.values() for p in frame["policy"]))
    frames = []
    for name, frame in per_stream.items():
        kept = frame[frame["policy"].isin(common)].copy()
        kept["unique_id"] = f"{name}/" + kept["unique_id"].astype(str)
        frames.append(kept)
    return pd.concat(frames, ignore_index=True), [p for p in order if p not in common]


def clairvoyant_curve(abs_sum: np.ndarray, retrains: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The least total absolute error reachable with each total of re-trainings when every stream may take
    any of the schedules, chosen in hindsight: ``(total re-trainings, total absolute error)`` at the corners.

    ``abs_sum`` and ``retrains`` are streams x schedules. Each stream's options are reduced to their lower
    convex hull (an option a mix of two others beats is never worth it); starting from every stream's
    cheapest option, the steps along all streams' hulls are taken in order of error cut per re-training,
    best first. The corners are exact choices; between two corners the bound is the straight line (one
    stream part-way, the linear relaxation of the choice).

    >>> # Stream 0 cuts 10 with 2 re-trainings, stream 1 cuts 3 with 2, stream 2 nothing with 10.
    >>> cost, err = clairvoyant_curve(np.array([[20., 10.], [13., 10.], [14., 14.]]),
    ...                               np.array([[0, 2], [0, 2], [0, 10]]))
    >>> cost.tolist(), err.tolist()
    ([0.0, 2.0, 4.0], [47.0, 37.0, 34.0])
    """
    abs_sum = np.asarray(abs_sum, dtype=float)
    retrains = np.asarray(retrains, dtype=float)
    start_cost, start_err = 0.0, 0.0
    steps: list[tuple[float, float, float]] = []  # (error cut per re-training, re-trainings, error cut)
    for a, r in zip(abs_sum, retrains):
        ok = np.isfinite(a) & np.isfinite(r)
        if not ok.any():
            continue
        hull = _lower_hull(r[ok], a[ok])
        start_cost += hull[0][0]
        start_err += hull[0][1]
        for (r0, a0), (r1, a1) in zip(hull, hull[1:]):
            steps.append(((a0 - a1) / (r1 - r0), r1 - r0, a0 - a1))
    steps.sort(key=lambda step: -step[0])
    cost = [start_cost]
    err = [start_err]
    for _, dr, da in steps:
        cost.append(cost[-1] + dr)
        err.append(err[-1] - da)
    return np.array(cost), np.array(err)


def _lower_hull(cost: np.ndarray, err: np.ndarray) -> list[tuple[float, float]]:
    """The options on the lower-left convex hull of (cost, error), from the cheapest, error falling."""
    points = sorted(zip(cost.tolist(), err.tolist()))
    hull: list[tuple[float, float]] = []
    for c, e in points:
        if hull and c == hull[-1][0]:
            continue  # same cost, higher or equal error (sorted): never better
        if hull and e >= hull[-1][1]:
            continue  # costs more, cuts nothing
        while len(hull) >= 2:
            (c0, e0), (c1, e1) = hull[-2], hull[-1]
            # Drop the middle point when it lies on or above the line from hull[-2] to the new point.
            if (e1 - e0) * (c - c0) >= (e - e0) * (c1 - c0):
                hull.pop()
            else:
                break
        hull.append((c, e))
    return hull


def clairvoyant_mae(per_stream: pd.DataFrame, at) -> np.ndarray:
    """The clairvoyant bound's MAE at ``at`` re-trainings (see :func:`clairvoyant_curve`); NaN without
    schedules.

    >>> frame = pd.DataFrame({"policy": ["never", "always"] * 2, "unique_id": ["a", "a", "b", "b"],
    ...                       "mae": [2.0, 1.0, 1.0, 1.0], "n_scored": 10, "retrains": [0, 10, 0, 10]})
    >>> clairvoyant_mae(frame, [0, 5, 10, 20]).tolist()  # only stream a's re-trainings pay
    [1.5, 1.25, 1.0, 1.0]
    """
    policies, abs_sum, n, retrains = stream_sums(per_stream)
    schedules = [i for i, p in enumerate(policies) if is_schedule(p)]
    at = np.asarray(at, dtype=float)
    if not schedules:
        return np.full(at.shape, np.nan)
    cost, err = clairvoyant_curve(abs_sum[:, schedules], retrains[:, schedules])
    total = n[:, schedules[0]].sum()
    return np.interp(at, cost, err) / total if total else np.full(at.shape, np.nan)


def dominated_by(summary: list[dict]) -> dict[str, list[str]]:
    """For each policy, the other policies (not schedules) with no more re-trainings and a lower MAE, best
    first: a policy is dominated when one of them exists.

    >>> dominated_by([{"policy": "mlma", "mae": 2.0, "retrains": 10},
    ...               {"policy": "adwin:delta=0.1", "mae": 1.9, "retrains": 8},
    ...               {"policy": "adwin:delta=0.5", "mae": 1.8, "retrains": 20},
    ...               {"policy": "never", "mae": 1.0, "retrains": 0}])
    {'mlma': ['adwin:delta=0.1'], 'adwin:delta=0.1': [], 'adwin:delta=0.5': [], 'never': []}
    """
    rows = [r for r in summary if r.get("mae") is not None and r.get("retrains") is not None]
    out: dict[str, list[str]] = {}
    for row in rows:
        better = [o for o in rows if o is not row and not is_schedule(o["policy"])
                  and o["retrains"] <= row["retrains"] and o["mae"] < row["mae"]]
        out[row["policy"]] = [o["policy"] for o in sorted(better, key=lambda o: o["mae"])]
    return out
