"""The MLMA policy: re-train a stream only when its new loss batch is relevantly and significantly worse
than its own data-adaptive reference loss batch.

Per stream it keeps a **reference**: the loss batches of the serving model version's first out-of-sample
ticks (the stream is *warming up* until there are ``warmup_ticks`` of them), rolled forward while the stream
stays healthy so that slow, acceptable change is absorbed, and started afresh when a new version is promoted.
Batches flagged by the data-quality checks (:mod:`mlma.quality`) or marked abnormal never enter it.

Each tick, every stream with a full enough reference and a new batch is tested at once
(:func:`mlma.monitor.degradation_test`, one-sided, with a relevance margin ``delta``); the false discovery
rate across the streams tested in the tick is controlled (Benjamini-Hochberg by default). Rejections are the
triggers. Triggers are re-trained most severe first, at most ``budget`` per tick, the rest queued for the next
tick; a stream that was just re-trained or whose challenger lost cools down for ``cooldown_ticks``.

Escalations for the engineer: data-quality problems (no re-training on broken data), a stream that keeps
triggering (``repeat_limit`` triggers within ``repeat_window`` ticks), a stream gone silent, budget overflow.
"""

from __future__ import annotations

import math

import numpy as np

from mlma.escalations import Escalation
from mlma.monitor import degradation_test, fdr_control
from mlma.policy import Decision, Policy, TickObservation, Verdict
from mlma.quality import check_batch


class MLMAPolicy(Policy):
    """Statistically tested, budgeted re-training with escalations; see the module docstring.

    Parameters
    ----------
    alpha
        False discovery rate across the streams tested in one tick (or the per-family level for Bonferroni).
        The default, 0.2, is higher than the textbook 0.05 on purpose: a trigger only starts a challenger,
        which must still beat the champion in shadow before it serves, so a false trigger costs one fit,
        while a missed one leaves a degraded model serving (see docs/results.md for the trade-off measured).
    delta
        Relevance margin: H0 is "current mean loss <= (1 + delta) x reference mean loss"; 0.05 means a rise of
        under 5 % is not worth a re-training.
    fdr
        ``"bh"`` (Benjamini-Hochberg), ``"by"`` (Benjamini-Yekutieli), ``"bonferroni"`` or ``"none"``.
    reference_ticks
        How many ticks of losses the reference holds; default: two weekly cycles of sub-daily data
        (14 daily ticks), otherwise at least 48 losses and two seasons.
    warmup_ticks
        Ticks of a new version's losses needed before its stream is tested; default: at least one season
        and at least four ticks (the test's minimum number of reference blocks).
    cooldown_ticks
        Ticks without a new trigger after a re-training attempt.
    budget
        Most re-trainings per tick (``None``: no limit). The most severe triggers go first; the rest wait.
    loss
        ``"absolute"`` or ``"squared"``: the loss whose mean is tested.
    repeat_limit, repeat_window
        Escalate a stream that triggered ``repeat_limit`` times within ``repeat_window`` ticks.
    silent_ticks
        Escalate a stream with no actuals for this many ticks in a row.
    window_ticks
        Each tick two batches are tested against the reference: the newest tick alone (quick on abrupt
        change) and the stream's last ``window_ticks`` clean ticks (a sustained worsening gains evidence tick
        after tick); the smaller p-value, doubled (Bonferroni), is the stream's p-value. ``1`` tests the
        newest tick only.
    probation_ticks
        Healthy ticks roll forward into the reference, but only after this many ticks of probation (at least
        ``window_ticks``). A test p-value below ``reference_gate`` puts every tick in probation out of the
        reference for good. A sustained worsening is flagged before its first ticks finish probation, so the
        reference does not absorb it, even when it is not yet significant fleet-wide.
    reference_gate
        See ``probation_ticks``. Under no change it withholds a few per cent of ticks from the reference.
    """

    name = "mlma"
    checks_challenger = True

    def __init__(self, *, alpha: float = 0.2, delta: float = 0.05, fdr: str = "bh",
                 reference_ticks: int | None = None, warmup_ticks: int | None = None, cooldown_ticks: int = 2,
                 budget: int | None = None, loss: str = "absolute", repeat_limit: int = 3,
                 repeat_window: int = 14, silent_ticks: int = 3, window_ticks: int = 3,
                 probation_ticks: int = 7, reference_gate: float = 0.05) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        if delta < 0:
            raise ValueError(f"delta (the relevance margin) must be >= 0, got {delta!r}")
        if loss not in ("absolute", "squared"):
            raise ValueError(f"loss must be 'absolute' or 'squared', got {loss!r}")
        if budget is not None and budget < 1:
            raise ValueError(f"budget must be a whole number >= 1 or None, got {budget!r}")
        if not 0 <= reference_gate < 1:
            raise ValueError(f"reference_gate must be in [0, 1), got {reference_gate!r}")
        if window_ticks < 1:
            raise ValueError(f"window_ticks must be a whole number >= 1, got {window_ticks!r}")
        for name, value in (("cooldown_ticks", cooldown_ticks), ("repeat_limit", repeat_limit),
                            ("repeat_window", repeat_window), ("silent_ticks", silent_ticks)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        self.alpha, self.delta, self.fdr, self.loss = alpha, delta, fdr, loss
        self.reference_ticks, self.warmup_ticks = reference_ticks, warmup_ticks
        self.cooldown_ticks, self.budget = cooldown_ticks, budget
        self.repeat_limit, self.repeat_window, self.silent_ticks = repeat_limit, repeat_window, silent_ticks
        self.window_ticks = window_ticks
        self.probation_ticks = max(probation_ticks, window_ticks)
        self.reference_gate = reference_gate

    # -- state ----------------------------------------------------------------------------------------------
    def reset(self, n_streams: int, season_length: int, steps_per_tick: int) -> None:
        super().reset(n_streams, season_length, steps_per_tick)
        steps = max(steps_per_tick, 1)
        # The test needs at least four reference blocks; two weekly cycles of daily ticks give it far more
        # power (degrees of freedom) than one.
        capacity = self.reference_ticks or max(math.ceil(max(48, 2 * season_length) / steps),
                                               14 if steps >= 24 else 0, 4)
        warmup = self.warmup_ticks or max(math.ceil(season_length / steps), 4)
        self.capacity = int(capacity)
        self.warmup = int(min(warmup, capacity))
        self.steps = steps
        n = n_streams
        self.ref = np.full((n, self.capacity, steps), np.nan, dtype=np.float32)
        self.ref_len = np.zeros(n, dtype=np.int16)
        self.ref_next = np.zeros(n, dtype=np.int16)
        self.ref_version = np.zeros(n, dtype=np.int32)
        self.ref_first_tick = np.full(n, -1, dtype=np.int32)
        self.cooldown_until = np.full(n, -1, dtype=np.int32)
        self.queued = np.zeros(n, dtype=bool)
        self.queued_severity = np.zeros(n)
        self.trigger_ticks: list[list[int]] = [[] for _ in range(n)]
        self.silent_for = np.zeros(n, dtype=np.int32)
        self.flagged = np.zeros(n, dtype=bool)
        # What each stream normally reports, learnt from healthy ticks (EWMA), for the data-quality checks.
        self.typical_count = np.full(n, np.nan)
        self.typical_level = np.full(n, np.nan)
        self.typical_spread = np.full(n, np.nan)
        self.abnormal = np.zeros(n, dtype=bool)
        w = self.probation_ticks
        self.window = np.full((n, w, steps), np.nan, dtype=np.float32)
        self.window_len = np.zeros(n, dtype=np.int16)
        self.window_ok = np.zeros((n, w), dtype=bool)

    def on_new_model(self, streams: np.ndarray, tick: int) -> None:
        """A new version serves: its reference starts empty and fills with its own first losses."""
        streams = np.asarray(streams, dtype=np.int64)
        self.ref[streams] = np.nan
        self.ref_len[streams] = 0
        self.ref_next[streams] = 0
        self.ref_version[streams] += 1
        self.ref_first_tick[streams] = tick + 1
        self.window[streams] = np.nan
        self.window_len[streams] = 0
        self.window_ok[streams] = False
        self.queued[streams] = False
        self.cooldown_until[streams] = np.maximum(self.cooldown_until[streams], tick + self.cooldown_ticks)

    def on_challenger_lost(self, streams: np.ndarray, tick: int) -> None:
        streams = np.asarray(streams, dtype=np.int64)
        self.queued[streams] = False
        self.cooldown_until[streams] = tick + max(self.cooldown_ticks, 1)

    def reference_losses(self, s: int) -> np.ndarray:
        """Stream ``s``'s reference losses in time order (oldest first), NaN-free."""
        order = (self.ref_next[s] - self.ref_len[s] + np.arange(self.ref_len[s])) % self.capacity
        values = self.ref[s, order].ravel()
        return values[np.isfinite(values)]

    # -- the decision ---------------------------------------------------------------------------------------
    def decide(self, obs: TickObservation) -> Decision:
        n, k = obs.n_streams, obs.tick
        losses = obs.losses if self.loss == "absolute" else obs.losses ** 2
        current = _fit_width(losses, self.steps)
        decision = Decision.nothing(n, Verdict.OK)
        decision.p_value = np.full(n, np.nan)
        decision.effect = np.full(n, np.nan)
        escalations: list[Escalation] = []

        has_batch = np.isfinite(current).any(axis=1) & obs.has_model
        self.silent_for = np.where(obs.observed > 0, 0, self.silent_for + 1)
        for s in np.flatnonzero(self.silent_for == self.silent_ticks):
            escalations.append(Escalation(int(s), k, "silent", 1,
                                          f"no actuals for {self.silent_ticks} ticks in a row"))

        quality = check_batch(obs.actuals, self.typical_count, self.typical_level, self.typical_spread)
        suspect = quality.any & has_batch
        for s in np.flatnonzero(suspect & ~self.flagged):
            escalations.append(Escalation(int(s), k, "data-quality", 2,
                                          f"actuals look broken ({quality.describe(s)}); not used for "
                                          f"re-training or the reference"))
        self.flagged = suspect
        abnormal = self.abnormal if obs.abnormal is None else (self.abnormal | obs.abnormal)
        clean = has_batch & ~suspect & ~abnormal
        self._learn_typical(obs.actuals, clean)

        # Warm-up: a new version's first clean batches become its reference.
        warming = clean & (self.ref_len < self.warmup)
        self._append(warming, current)
        monitored = clean & ~warming
        cooling = monitored & (k <= self.cooldown_until)
        self._push_window(monitored, current, ok=~cooling)
        testable = monitored & ~cooling
        reject = np.zeros(n, dtype=bool)
        excess = np.zeros(n)
        idx = np.flatnonzero(testable)
        if len(idx):
            p, effect, excess_idx = self._test(idx, current)
            decision.p_value[idx] = p
            decision.effect[idx] = effect
            reject[idx] = _rejections(fdr_control(p, alpha=self.alpha, method=self.fdr))
            excess[idx] = excess_idx
            # Suspicious ticks stay out of the reference even when not significant fleet-wide.
            suspicious = idx[np.nan_to_num(p, nan=1.0) < self.reference_gate]
            self.window_ok[suspicious] = False
        self.window_ok[reject] = False

        decision.verdict[~obs.has_model] = Verdict.COLD
        decision.verdict[obs.has_model & ~has_batch] = Verdict.NO_DATA
        decision.verdict[warming | (suspect & (self.ref_len < self.warmup))] = Verdict.WARMING_UP
        decision.verdict[cooling] = Verdict.COOLING_DOWN
        decision.verdict[reject] = Verdict.DEGRADED
        decision.verdict[has_batch & abnormal & ~suspect] = Verdict.ABNORMAL

        # Severity in loss units: the excess loss per step, so big zones (big business) come first.
        severity = np.where(reject, excess, 0.0)
        candidates = reject | (self.queued & obs.has_model & ~suspect)
        severity = np.where(self.queued & ~reject, self.queued_severity, severity)
        chosen = _most_severe(candidates, severity, self.budget)
        waiting = candidates & ~chosen
        if waiting.any() and not (self.queued & waiting).all():
            escalations.append(Escalation(int(np.flatnonzero(waiting)[0]), k, "budget", 1,
                                          f"{int(waiting.sum())} re-trainings queued: budget of {self.budget} "
                                          f"per tick spent"))
        self.queued = waiting
        self.queued_severity = np.where(waiting, severity, 0.0)

        for s in np.flatnonzero(chosen):
            ticks = [t for t in self.trigger_ticks[s] if t > k - self.repeat_window] + [k]
            self.trigger_ticks[s] = ticks
            if len(ticks) == self.repeat_limit:
                escalations.append(Escalation(int(s), k, "repeated-trigger", 2,
                                              f"{len(ticks)} triggers within {self.repeat_window} ticks"))
        decision.retrain = chosen
        reasons = np.where(
            reject[chosen],
            [f"loss {e:.2f}x reference (p={p:.2g})" for e, p in zip(decision.effect[chosen],
                                                                   decision.p_value[chosen])],
            "queued by budget")
        decision.reason[chosen] = reasons
        decision.escalations = escalations
        return decision

    # -- helpers --------------------------------------------------------------------------------------------
    def _test(self, idx: np.ndarray, current: np.ndarray):
        """p-value, effect and excess loss of streams ``idx``: newest tick and window, Bonferroni-combined."""
        reference = self._ordered_reference(idx)
        newest = degradation_test(current[idx], reference, delta=self.delta, block_length=self.steps)
        p = np.asarray(newest.p_value, dtype=np.float64)
        effect = np.asarray(newest.effect, dtype=np.float64)
        excess = np.asarray(newest.current_mean) - np.asarray(newest.reference_mean)
        if self.window_ticks == 1:
            return p, effect, excess
        window = self.window[idx, -self.window_ticks:].reshape(len(idx), -1).astype(np.float64)
        sustained = degradation_test(window, reference, delta=self.delta, block_length=self.steps)
        p_window = np.asarray(sustained.p_value, dtype=np.float64)
        # Only streams with more than one tick in their window have a second, different test.
        two = (self.window_len[idx] > 1) & np.isfinite(p_window)
        use_window = two & (p_window < p)
        combined = np.where(two, np.minimum(1.0, 2 * np.fmin(p, p_window)), p)
        effect = np.where(use_window, sustained.effect, effect)
        excess = np.where(use_window, np.asarray(sustained.current_mean) - np.asarray(sustained.reference_mean),
                          excess)
        return combined, effect, excess

    def _ordered_reference(self, idx: np.ndarray) -> np.ndarray:
        """The reference batches of streams ``idx``, oldest first, flattened to ``(len(idx), losses)``."""
        slots = (self.ref_next[idx, None] - self.ref_len[idx, None] + np.arange(self.capacity)) % self.capacity
        ordered = np.take_along_axis(self.ref[idx], slots[:, :, None].astype(np.int64), axis=1)
        # Slots beyond a stream's length are still NaN, which the test ignores.
        return ordered.reshape(len(idx), -1).astype(np.float64)

    def _push_window(self, mask: np.ndarray, current: np.ndarray, ok: np.ndarray) -> None:
        """Shift ``current`` into the test window; a full window's oldest tick moves to the reference if
        no test flagged it."""
        idx = np.flatnonzero(mask)
        if not len(idx):
            return
        w = self.probation_ticks
        full = idx[self.window_len[idx] == w]
        leaving = full[self.window_ok[full, 0]]
        if len(leaving):
            out = np.zeros(len(mask), dtype=bool)
            out[leaving] = True
            spilled = np.full((len(mask), self.steps), np.nan)
            spilled[leaving] = self.window[leaving, 0]
            self._append(out, spilled)
        self.window[idx, :-1] = self.window[idx, 1:]
        self.window_ok[idx, :-1] = self.window_ok[idx, 1:]
        self.window[idx, -1] = current[idx]
        self.window_ok[idx, -1] = ok[idx]
        self.window_len[idx] = np.minimum(self.window_len[idx] + 1, w)

    def _append(self, mask: np.ndarray, current: np.ndarray) -> None:
        idx = np.flatnonzero(mask)
        if not len(idx):
            return
        self.ref[idx, self.ref_next[idx]] = current[idx]
        self.ref_next[idx] = (self.ref_next[idx] + 1) % self.capacity
        self.ref_len[idx] = np.minimum(self.ref_len[idx] + 1, self.capacity)

    def _learn_typical(self, actuals: np.ndarray, clean: np.ndarray, weight: float = 0.2) -> None:
        idx = np.flatnonzero(clean)
        if not len(idx):
            return
        a = actuals[idx]
        count = np.isfinite(a).sum(axis=1).astype(np.float64)
        level = np.nanmean(a, axis=1)
        spread = np.nanstd(a, axis=1)
        for name, value in (("typical_count", count), ("typical_level", level), ("typical_spread", spread)):
            old = getattr(self, name)[idx]
            getattr(self, name)[idx] = np.where(np.isfinite(old), (1 - weight) * old + weight * value, value)


def _fit_width(losses: np.ndarray, steps: int) -> np.ndarray:
    """Pad or cut a tick's losses to the reference's batch width."""
    if losses.shape[1] == steps:
        return losses
    out = np.full((losses.shape[0], steps), np.nan)
    width = min(steps, losses.shape[1])
    out[:, :width] = losses[:, :width]
    return out


def _rejections(result) -> np.ndarray:
    """Accept either a boolean mask or an object/tuple carrying one from the multiplicity control."""
    if isinstance(result, tuple):
        result = result[0]
    if hasattr(result, "reject"):
        result = result.reject
    return np.asarray(result, dtype=bool)


def _most_severe(candidates: np.ndarray, severity: np.ndarray, budget: int | None) -> np.ndarray:
    """The ``budget`` candidates with the highest severity (all of them without a budget)."""
    if budget is None or candidates.sum() <= budget:
        return candidates.copy()
    idx = np.flatnonzero(candidates)
    top = idx[np.argsort(-severity[idx], kind="stable")[:budget]]
    chosen = np.zeros_like(candidates)
    chosen[top] = True
    return chosen
