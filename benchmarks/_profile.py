"""Where ``MLMAPolicy.decide``'s time goes, step by step, without editing the package.

The steps of the decision are wrapped for the duration of the measurement: the module-level functions
``mlma.mlma_policy`` calls (quality checks, the degradation test, BH), the policy's helper methods, and the
degradation test's own helpers. Each step's time is *exclusive* (time in the steps it calls is counted
there), so the rows add up to the whole decision. The helpers are private names of other modules; any that
no longer exist are simply not broken out.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np

import mlma.mlma_policy as policy_module
import mlma.monitor.degradation as degradation_module


class StepTimer:
    """Exclusive wall time per named step, over nested wrapped calls."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._children: list[float] = []
        self._calls_in_test = 0

    def wrap(self, name, function):
        def timed(*args, **kwargs):
            label = name(self) if callable(name) else name
            self._children.append(0.0)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                inner = self._children.pop()
                self.seconds[label] += elapsed - inner
                if self._children:
                    self._children[-1] += elapsed
        return timed


def _test_label(timer: StepTimer) -> str:
    timer._calls_in_test += 1
    return TEST_LABELS[0] if timer._calls_in_test == 1 else TEST_LABELS[1]


DECIDE_LABEL = "decide own lines (masks, verdicts, budget, escalations, reasons)"
TEST_LABELS = ("degradation_test, newest tick: own lines", "degradation_test, recent window: own lines")
POLICY_FUNCTIONS = {
    "check_batch": "quality checks (check_batch)",
    "fdr_control": "BH (fdr_control)",
}
POLICY_METHODS = {
    "_learn_typical": "typical-value EWMA (_learn_typical)",
    "_append": "reference ring-buffer writes (_append)",
    "_push_window": "probation window shift (_push_window)",
    "_ordered_reference": "reference gather + float64 copy (_ordered_reference)",
    "_test": "two-test combination (_test own lines: window slice + float64 copy)",
}
DEGRADATION_HELPERS = {
    "_as_loss_matrix": "in the tests: input validation + float64 (_as_loss_matrix)",
    "_split_blocks": "in the tests: blocking (_split_blocks)",
    "_masked_block_means": "in the tests: phase-matched block means (_masked_block_means)",
    "_nanmean_rows": "in the tests: row means (_nanmean_rows)",
    "_box_cox": "in the tests: Box-Cox transform (_box_cox)",
    "fit_variance_prior": "in the tests: fleet variance prior (fit_variance_prior)",
}


@contextmanager
def instrumented(policy, timer: StepTimer):
    """Wrap the decision's steps for ``timer`` while the block runs; restore everything afterwards."""
    saved_module, saved_degradation = {}, {}
    try:
        for attr, label in POLICY_FUNCTIONS.items():
            if hasattr(policy_module, attr):
                saved_module[attr] = getattr(policy_module, attr)
                setattr(policy_module, attr, timer.wrap(label, saved_module[attr]))
        if hasattr(policy_module, "degradation_test"):
            saved_module["degradation_test"] = policy_module.degradation_test
            policy_module.degradation_test = timer.wrap(_test_label, policy_module.degradation_test)
        for attr, label in DEGRADATION_HELPERS.items():
            if hasattr(degradation_module, attr):
                saved_degradation[attr] = getattr(degradation_module, attr)
                setattr(degradation_module, attr, timer.wrap(label, saved_degradation[attr]))
        for attr, label in POLICY_METHODS.items():
            if hasattr(policy, attr):
                method = getattr(policy, attr)
                if attr == "_test":
                    method = _resetting_test_counter(timer, method)
                setattr(policy, attr, timer.wrap(label, method))  # instance attribute shadows the method
        policy.decide = timer.wrap(DECIDE_LABEL, policy.decide)
        yield timer
    finally:
        for attr, value in saved_module.items():
            setattr(policy_module, attr, value)
        for attr, value in saved_degradation.items():
            setattr(degradation_module, attr, value)
        for attr in [*POLICY_METHODS, "decide"]:
            policy.__dict__.pop(attr, None)


def _resetting_test_counter(timer: StepTimer, method):
    def call(*args, **kwargs):
        timer._calls_in_test = 0
        return method(*args, **kwargs)
    return call


def profile_decide(run, ticks: int) -> tuple[list[tuple[str, float]], float]:
    """Mean exclusive milliseconds per tick of each step over ``ticks`` ticks of
    ``run`` (a warmed-up :class:`PolicyRun`), and the mean total (timed outside the wrappers)."""
    timer = StepTimer()
    totals = []
    with instrumented(run.policy, timer):
        for _ in range(ticks):
            obs = run.next_observation()
            start = time.perf_counter()
            decision = run.policy.decide(obs)
            totals.append(time.perf_counter() - start)
            run.after(decision)
    order = [DECIDE_LABEL, *POLICY_FUNCTIONS.values(), *POLICY_METHODS.values(), *TEST_LABELS,
             *DEGRADATION_HELPERS.values()]
    names = [name for name in order if name in timer.seconds]
    names += [name for name in timer.seconds if name not in names]
    rows = [(name, 1e3 * timer.seconds[name] / ticks) for name in names]
    return rows, 1e3 * float(np.mean(totals))
