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

import inspect
import math

import numpy as np

from mlma.escalations import Escalation
from mlma.monitor import degradation_test, fdr_control
from mlma.monitor.degradation import _as_loss_matrix, _masked_block_means, _test_block_means
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
        # Per-slot sum and count of the finite reference losses, kept as batches enter the ring: the test of
        # a fully observed batch needs only the block means, so the ring is not re-read every tick.
        self.ref_sum = np.zeros((n, self.capacity))
        self.ref_count = np.zeros((n, self.capacity))
        self.ref_len = np.zeros(n, dtype=np.int16)
        self.ref_next = np.zeros(n, dtype=np.int16)
        self.ref_version = np.zeros(n, dtype=np.int32)
        self.ref_first_tick = np.full(n, -1, dtype=np.int32)
        self.cooldown_until = np.full(n, -1, dtype=np.int32)
        self.queued = np.zeros(n, dtype=bool)
        self.queued_severity = np.zeros(n)
        # The last repeat_limit trigger ticks of each stream (-inf-like when unused), oldest first.
        self.trigger_ticks = np.full((n, max(self.repeat_limit, 1)), _NO_TICK, dtype=np.int32)
        # Per-stream overrides (NaN / -1: the policy's own value), set by Agent controls.
        self.delta_override = np.full(n, np.nan)
        self.cooldown_override = np.full(n, -1, dtype=np.int32)
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
        self.window_sum = np.zeros((n, w))
        self.window_count = np.zeros((n, w))

    def on_new_model(self, streams: np.ndarray, tick: int) -> None:
        """A new version serves: its reference starts empty and fills with its own first losses."""
        streams = np.asarray(streams, dtype=np.int64)
        self._clear_reference(streams, tick)
        self.ref_version[streams] += 1
        self.cooldown_until[streams] = np.maximum(self.cooldown_until[streams], tick + self._cooldown(streams))

    def on_challenger_lost(self, streams: np.ndarray, tick: int) -> None:
        streams = np.asarray(streams, dtype=np.int64)
        self.queued[streams] = False
        self.cooldown_until[streams] = tick + np.maximum(self._cooldown(streams), 1)

    def _cooldown(self, streams: np.ndarray) -> np.ndarray:
        own = self.cooldown_override[streams]
        return np.where(own >= 0, own, self.cooldown_ticks)

    def set_overrides(self, *, delta: np.ndarray | None = None, cooldown_ticks: np.ndarray | None = None) -> None:
        """Per-stream monitoring parameters (NaN or negative: the policy's own), e.g. from ``mlma set-params``."""
        n = len(self.ref_len)
        self.delta_override = np.full(n, np.nan) if delta is None else np.asarray(delta, dtype=np.float64)
        self.cooldown_override = (np.full(n, -1, dtype=np.int32) if cooldown_ticks is None
                                  else np.asarray(cooldown_ticks, dtype=np.int32))

    def reset_reference(self, streams: np.ndarray, tick: int, *, rebase: bool = False) -> None:
        """Start the streams' references afresh (reset), or from their recent losses (re-base).

        Reset: the next clean batches of the serving model build a new reference (the stream warms up
        again). Re-base: the ticks in the probation window, flagged or not, become the reference at once,
        accepting the stream's recent behaviour as its new normal.
        """
        streams = np.asarray(streams, dtype=np.int64)
        if not len(streams):
            return
        recent = {int(s): (self.window[s, -self.window_len[s]:].copy(), self.window_sum[s, -self.window_len[s]:].copy(),
                           self.window_count[s, -self.window_len[s]:].copy())
                  for s in streams if rebase and self.window_len[s] > 0}
        self._clear_reference(streams, tick)
        for s, (batches, sums, counts) in recent.items():
            for b, total, count in zip(batches, sums, counts):
                self._append_rows(np.array([s]), b[None, :], np.array([total]), np.array([count]))
            self.ref_first_tick[s] = tick + 1 - len(batches)

    def _clear_reference(self, streams: np.ndarray, tick: int) -> None:
        """Empty the streams' reference ring and probation window; the reference restarts after ``tick``."""
        self.ref[streams] = np.nan
        self.ref_sum[streams] = 0.0
        self.ref_count[streams] = 0.0
        self.ref_len[streams] = 0
        self.ref_next[streams] = 0
        self.ref_first_tick[streams] = tick + 1
        self.window[streams] = np.nan
        self.window_len[streams] = 0
        self.window_ok[streams] = False
        self.window_sum[streams] = 0.0
        self.window_count[streams] = 0.0
        self.queued[streams] = False

    def reference_mean(self) -> np.ndarray:
        """Each stream's mean reference loss (NaN while it has none)."""
        count = self.ref_count.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, self.ref_sum.sum(axis=1) / np.maximum(count, 1), np.nan)

    #: Per-stream arrays that make up the policy's state (saved and restored by live operation).
    STATE = ("ref", "ref_sum", "ref_count", "ref_len", "ref_next", "ref_version", "ref_first_tick", "cooldown_until",
             "queued", "queued_severity", "trigger_ticks", "silent_for", "flagged", "typical_count",
             "typical_level", "typical_spread", "abnormal", "window", "window_len", "window_ok", "window_sum",
             "window_count")

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
        # Only a stream that has reported before (it has a model) can go silent; one not launched yet is not.
        self.silent_for = np.where(obs.observed > 0, 0, np.where(obs.has_model, self.silent_for + 1, 0))
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
            reject[idx], _ = fdr_control(p, alpha=self.alpha, method=self.fdr)
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

        picked = np.flatnonzero(chosen)
        if len(picked):
            earlier = self.trigger_ticks[picked]
            # The ring holds repeat_limit ticks, so a count that reaches the limit is exact, and a larger one
            # (no new escalation) stays larger.
            count = (earlier > k - self.repeat_window).sum(axis=1) + 1
            self.trigger_ticks[picked, :-1] = earlier[:, 1:]
            self.trigger_ticks[picked, -1] = k
            for s, c in zip(picked, count):
                if c == self.repeat_limit:
                    escalations.append(Escalation(int(s), k, "repeated-trigger", 2,
                                                  f"{c} triggers within {self.repeat_window} ticks"))
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
        """p-value, effect and excess loss of streams ``idx``: newest tick and window, Bonferroni-combined.

        The same tests as :func:`mlma.monitor.degradation_test` on the time-ordered reference (daily blocks,
        default parameters apart from ``delta``), computed from the block sums kept in the ring: the
        block-means test does not depend on the order of the blocks, and only streams whose batch misses
        positions (hours) need the reference re-read to phase-match its blocks.
        """
        cur = _as_loss_matrix(current[idx], "current")
        # Block means of the reference over all positions, shared by both tests.
        full_means = _usable_means(self.ref_sum[idx], self.ref_count[idx], self.steps)
        n_reference = self.ref_count[idx].sum(axis=1)
        finite = np.isfinite(cur)
        n_current = finite.sum(axis=1)
        # One current block: the test's coverage rule keeps it whenever it has a value.
        cur_means = np.where(n_current > 0, np.where(finite, cur, 0.0).sum(axis=1) / np.maximum(n_current, 1),
                             np.nan)[:, None]
        ref_means = self._phase_matched(idx, full_means, finite)
        newest = self._block_test(cur_means, ref_means, n_current, n_reference, idx)
        p = newest.p_value
        effect = newest.effect
        excess = newest.current_mean - newest.reference_mean
        if self.window_ticks == 1:
            return p, effect, excess
        recent = slice(-self.window_ticks, None)
        counts = self.window_count[idx, recent]
        # A window with one complete tick covers every position; only the others need their positions
        # read from the losses.
        positions = np.ones((len(idx), self.steps), dtype=bool)
        gappy = np.flatnonzero(~(counts >= self.steps).any(axis=1))
        if len(gappy):
            positions[gappy] = np.isfinite(self.window[idx[gappy], recent]).any(axis=1)
        window_means = _usable_means(self.window_sum[idx, recent], counts,
                                     positions.sum(axis=1, keepdims=True))
        ref_means = self._phase_matched(idx, full_means, positions)
        sustained = self._block_test(window_means, ref_means, counts.sum(axis=1), n_reference, idx)
        p_window = sustained.p_value
        # Only streams with more than one tick in their window have a second, different test.
        two = (self.window_len[idx] > 1) & np.isfinite(p_window)
        use_window = two & (p_window < p)
        combined = np.where(two, np.minimum(1.0, 2 * np.fmin(p, p_window)), p)
        effect = np.where(use_window, sustained.effect, effect)
        excess = np.where(use_window, sustained.current_mean - sustained.reference_mean, excess)
        return combined, effect, excess

    def _block_test(self, cur_means, ref_means, n_current, n_reference, idx=None):
        delta = self.delta
        if idx is not None:
            own = self.delta_override[idx]
            if np.isfinite(own).any():
                delta = np.where(np.isfinite(own), own, self.delta)[:, None]
        return _test_block_means(cur_means, ref_means, n_current, n_reference, delta=delta,
                                 **_TEST_DEFAULTS)

    def _phase_matched(self, idx: np.ndarray, full_means: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Reference block means over ``positions`` (the hours the current batch has): the kept full-block
        means where the batch has every hour, the ring re-read for the few streams that miss some."""
        partial = ~positions.all(axis=1)
        if not partial.any():
            return full_means
        rows = np.flatnonzero(partial)
        blocks = self.ref[idx[rows]].astype(np.float64)
        means = full_means.copy()
        means[rows] = _masked_block_means(blocks, positions[rows].astype(np.float64),
                                          _MIN_COVERAGE)
        return means

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
            self._append_rows(leaving, self.window[leaving, 0], self.window_sum[leaving, 0],
                              self.window_count[leaving, 0])
        # Slot by slot, in place: shifting the selected rows with fancy indexing would build a temporary
        # copy of the whole window every tick (tens of MB for a large fleet, fresh pages each time).
        rows = mask[:, None]
        for j in range(w - 1):
            for buffer in (self.window_sum, self.window_count, self.window_ok):
                np.copyto(buffer[:, j], buffer[:, j + 1], where=mask)
            np.copyto(self.window[:, j], self.window[:, j + 1], where=rows)
        stored = current[idx].astype(np.float32)
        self.window[idx, -1] = stored
        self.window_ok[idx, -1] = ok[idx]
        self.window_sum[idx, -1], self.window_count[idx, -1] = _finite_sum_count(stored)
        self.window_len[idx] = np.minimum(self.window_len[idx] + 1, w)

    def _append(self, mask: np.ndarray, current: np.ndarray) -> None:
        idx = np.flatnonzero(mask)
        if len(idx):
            stored = current[idx].astype(np.float32)
            self._append_rows(idx, stored, *_finite_sum_count(stored))

    def _append_rows(self, idx: np.ndarray, stored: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> None:
        """Write batches ``stored`` (float32, as the ring keeps them) of streams ``idx`` into the reference
        ring, with their sums and counts of finite losses."""
        slots = self.ref_next[idx]
        self.ref[idx, slots] = stored
        self.ref_sum[idx, slots] = sums
        self.ref_count[idx, slots] = counts
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


#: The degradation test's parameters other than ``delta`` (its defaults), as the policy uses them.
_TEST_PARAMETERS = inspect.signature(degradation_test).parameters
_TEST_DEFAULTS = {name: parameter.default for name, parameter in _TEST_PARAMETERS.items()
                  if parameter.kind is inspect.Parameter.KEYWORD_ONLY
                  and name not in ("delta", "block_length", "min_coverage")}
_MIN_COVERAGE = _TEST_PARAMETERS["min_coverage"].default


_NO_TICK = np.iinfo(np.int32).min // 2


def _finite_sum_count(stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum and count of the finite values of each row, in float64 from the stored (float32) values, as the
    test reads them."""
    values = stored.astype(np.float64)
    finite = np.isfinite(values)
    return np.where(finite, values, 0.0).sum(axis=1), finite.sum(axis=1).astype(np.float64)


def _usable_means(sums: np.ndarray, counts: np.ndarray, wanted) -> np.ndarray:
    """Block means from sums and counts of finite values, NaN for blocks that cover less than the test's
    ``min_coverage`` of the ``wanted`` positions (the same rule as the test's phase-matched means)."""
    needed = _MIN_COVERAGE * np.asarray(wanted, dtype=np.float64)
    usable = (counts > 0) & (counts >= needed - 1e-9)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(usable, sums / np.where(usable, counts, 1.0), np.nan)


def _fit_width(losses: np.ndarray, steps: int) -> np.ndarray:
    """Pad or cut a tick's losses to the reference's batch width."""
    if losses.shape[1] == steps:
        return losses
    out = np.full((losses.shape[0], steps), np.nan)
    width = min(steps, losses.shape[1])
    out[:, :width] = losses[:, :width]
    return out


def _most_severe(candidates: np.ndarray, severity: np.ndarray, budget: int | None) -> np.ndarray:
    """The ``budget`` candidates with the highest severity (all of them without a budget)."""
    if budget is None or candidates.sum() <= budget:
        return candidates.copy()
    idx = np.flatnonzero(candidates)
    top = idx[np.argsort(-severity[idx], kind="stable")[:budget]]
    chosen = np.zeros_like(candidates)
    chosen[top] = True
    return chosen
