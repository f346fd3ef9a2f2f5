"""The synthetic workload of the monitoring benchmarks and the three things timed on it.

A fleet of ``n`` hourly streams whose ticks are days (24 losses per tick). Every stream has its own error
scale and level; errors follow an AR(1) process with Student-t innovations (losses are skewed, heavy-tailed
and autocorrelated, as real forecast losses are) and a daily pattern. A small share of streams degrades
each tick (their losses double) until the policy re-trains them, so that every branch of the decision
(rejections, budget, escalations, a new version's warm-up) is exercised, not only the quiet path.

What is timed:

* :func:`numpy_floor` - the least any per-stream test of one tick can cost in numpy: batch means, a
  Newey-West long-run variance with 5 lags, z, p and Benjamini-Hochberg, written plainly.
* :func:`test_and_fdr` - :func:`mlma.monitor.degradation_test` and :func:`mlma.monitor.fdr_control` on the
  same arrays (the statistics of the decision without its bookkeeping).
* ``MLMAPolicy.decide`` - the whole decision on a :class:`mlma.policy.TickObservation`, after warm-up.
"""

from __future__ import annotations

import math
import sys

import numpy as np
from scipy import special

from mlma.mlma_policy import MLMAPolicy
from mlma.monitor import degradation_test, fdr_control
from mlma.policy import TickObservation

STEPS = 24  # hourly data, one tick per day
SEASON = 24


class SyntheticFleet:
    """Streams of hourly losses and actuals, one tick (day) at a time, reproducible from ``seed``.

    Parameters
    ----------
    n_streams
        Number of streams.
    seed
        Seed of the random generator.
    phi
        AR(1) coefficient of the hourly errors.
    event_rate
        Share of healthy streams whose losses double at each tick (until :meth:`repair` is called).

    Examples
    --------
    >>> fleet = SyntheticFleet(3, seed=1)
    >>> actuals, losses = fleet.next_tick()
    >>> losses.shape, bool((losses >= 0).all())
    ((3, 24), True)
    """

    def __init__(self, n_streams: int, *, seed: int = 0, phi: float = 0.6, event_rate: float = 0.002):
        if n_streams < 1:
            raise ValueError(f"n_streams must be >= 1, got {n_streams!r}")
        self.n = int(n_streams)
        self.rng = np.random.default_rng(seed)
        self.phi = phi
        self.event_rate = event_rate
        self.scale = self.rng.lognormal(0.0, 0.8, self.n)
        self.level = 5.0 * self.scale + self.rng.gamma(2.0, 2.0, self.n)
        self.hourly = 1.0 + 0.5 * np.sin(2 * np.pi * (np.arange(STEPS) - 8) / STEPS)
        self.multiplier = np.ones(self.n)
        self._error = self.rng.standard_normal(self.n)

    def errors(self, hours: int) -> np.ndarray:
        """``(n, hours)`` AR(1) errors with t(5) innovations, continuing the previous call's."""
        out = np.empty((self.n, hours))
        innovation_scale = math.sqrt(1 - self.phi**2) / math.sqrt(5 / 3)  # t(5) has variance 5/3
        shocks = self.rng.standard_t(5, size=(self.n, hours)) * innovation_scale
        e = self._error
        for h in range(hours):
            e = self.phi * e + shocks[:, h]
            out[:, h] = e
        self._error = e
        return out

    def next_tick(self) -> tuple[np.ndarray, np.ndarray]:
        """Actuals and absolute losses ``(n, 24)`` of the next day; new degradations start here."""
        healthy = self.multiplier == 1.0
        starting = healthy & (self.rng.random(self.n) < self.event_rate)
        self.multiplier[starting] = 2.0
        e = self.errors(STEPS) * self.hourly
        actuals = np.maximum(self.level[:, None] + self.scale[:, None] * e, 0.0)
        losses = np.abs(e) * self.scale[:, None] * self.multiplier[:, None]
        return actuals, losses

    def reference(self, days: int) -> np.ndarray:
        """``(n, 24 * days)`` losses of healthy days (no degradation), oldest first."""
        e = self.errors(STEPS * days) * np.tile(self.hourly, days)
        return np.abs(e) * self.scale[:, None]

    def repair(self, streams: np.ndarray) -> None:
        """The re-trained streams' losses go back to normal."""
        self.multiplier[streams] = 1.0


def observation(tick: int, actuals: np.ndarray, losses: np.ndarray) -> TickObservation:
    """A :class:`TickObservation` of a fleet in which every stream has a serving model."""
    n = losses.shape[0]
    return TickObservation(
        tick=tick, actuals=actuals, losses=losses, scaled_losses=losses, has_model=np.ones(n, dtype=bool),
        ticks_since_fit=np.full(n, tick, dtype=np.int64), observed=np.isfinite(actuals).sum(axis=1))


def numpy_floor(current: np.ndarray, reference: np.ndarray, *, lags: int = 5, alpha: float = 0.05):
    """The plain z-test of every stream's current mean loss against its reference mean, with a Newey-West
    (Bartlett kernel) long-run variance of the reference, one-sided normal p-values and BH. No NaN handling,
    no validation: the least one tick's test can cost in numpy.

    Returns the rejection mask and the p-values.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> reject, p = numpy_floor(np.abs(rng.normal(size=(4, 24))) * [[1], [1], [1], [3]],
    ...                         np.abs(rng.normal(size=(4, 168))))
    >>> reject.tolist()
    [False, False, False, True]
    """
    n, n_ref = reference.shape
    n_cur = current.shape[1]
    mean_ref = reference.mean(axis=1)
    mean_cur = current.mean(axis=1)
    centred = reference - mean_ref[:, None]
    long_run = np.einsum("ij,ij->i", centred, centred) / n_ref
    for lag in range(1, lags + 1):
        weight = 1.0 - lag / (lags + 1.0)
        long_run += 2.0 * weight * np.einsum("ij,ij->i", centred[:, lag:], centred[:, :-lag]) / n_ref
    z = (mean_cur - mean_ref) / np.sqrt(np.maximum(long_run, 1e-300) * (1.0 / n_cur + 1.0 / n_ref))
    p = special.ndtr(-z)
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    reject = np.empty(n, dtype=bool)
    reject[order] = ranked <= alpha
    return reject, p


def test_and_fdr(current: np.ndarray, reference: np.ndarray, *, alpha: float = 0.05):
    """One :func:`degradation_test` (newest tick, daily blocks) and BH across the fleet: the statistics of
    one decision without its bookkeeping. (``MLMAPolicy.decide`` runs two tests per tick: the newest tick
    and the recent window.)"""
    result = degradation_test(current, reference, block_length=STEPS)
    return fdr_control(result.p_value, alpha=alpha).reject, result.p_value


test_and_fdr.__test__ = False  # not a pytest test, should anyone collect this folder


def make_policy(days: int, **params) -> MLMAPolicy:
    """An :class:`MLMAPolicy` whose reference holds ``days`` daily ticks of hourly losses."""
    return MLMAPolicy(reference_ticks=days, **params)


class PolicyRun:
    """An :class:`MLMAPolicy` driven tick by tick on a :class:`SyntheticFleet`, as the agent drives it.

    Streams the policy chooses to re-train are treated as promoted at once: ``on_new_model`` starts their
    references afresh and their losses return to normal (the agent's fitting and challenger check are not
    part of the monitoring cost).
    """

    def __init__(self, fleet: SyntheticFleet, days: int, **params):
        self.fleet = fleet
        self.policy = make_policy(days, **params)
        self.policy.reset(fleet.n, SEASON, STEPS)
        self.policy.on_new_model(np.arange(fleet.n), -1)
        self.tick = 0

    @property
    def warm_ticks(self) -> int:
        """Ticks until the references are full: warm-up, then probation, then roll-forward to capacity."""
        p = self.policy
        return p.warmup + p.probation_ticks + (p.capacity - p.warmup)

    @property
    def ready_ticks(self) -> int:
        """Ticks until every stream is tested with a full probation window (references partly filled)."""
        p = self.policy
        return p.warmup + p.probation_ticks + 1

    def next_observation(self) -> TickObservation:
        actuals, losses = self.fleet.next_tick()
        return observation(self.tick, actuals, losses)

    def after(self, decision) -> None:
        """What the agent would do with the decision, outside the timed region."""
        chosen = np.flatnonzero(decision.retrain)
        if len(chosen):
            self.policy.on_new_model(chosen, self.tick)
            self.fleet.repair(chosen)
        self.tick += 1

    def step(self):
        decision = self.policy.decide(self.next_observation())
        self.after(decision)
        return decision

    def warm_up(self, ticks: int) -> None:
        for _ in range(ticks):
            self.step()

    def reference_fill(self) -> float:
        """Mean share of the reference capacity that holds losses."""
        return float(np.mean(self.policy.ref_len) / self.policy.capacity)


def policy_state_bytes(policy: MLMAPolicy) -> dict[str, int]:
    """Bytes of the policy's per-stream state: its numpy arrays, and separately its Python lists."""
    arrays = sum(v.nbytes for v in vars(policy).values() if isinstance(v, np.ndarray))
    lists = 0
    for value in vars(policy).values():
        if isinstance(value, list):
            lists += sys.getsizeof(value) + sum(sys.getsizeof(item) for item in value)
    return {"arrays": int(arrays), "python_lists": int(lists)}
