"""Baseline policies that re-train when a streaming drift detector fires on the stream's loss.

These are what a team would build from an off-the-shelf drift detection library: one detector per stream
(River's ADWIN [1]_ or Page-Hinkley [2]_), fed every new loss, and a re-training whenever it signals a
change. Losses are divided by the stream's seasonal-naive scale first, so that a detector's thresholds mean
the same for a zone with 2 orders an hour and one with 500. After a re-training the stream's detector is
started afresh, since the loss distribution of the new model is a new one.

Needs the optional ``river`` package (``pip install 'mlma[drift]'``).

References
----------
.. [1] Bifet, A. and Gavaldà, R. (2007). Learning from time-changing data with adaptive windowing. SDM.
.. [2] Page, E. S. (1954). Continuous inspection schemes. Biometrika 41(1/2), 100-115.
"""

from __future__ import annotations

import numpy as np

from mlma.policy import Decision, Policy, TickObservation, Verdict

DETECTORS = ("adwin", "page-hinkley")


def _detector_class(detector: str):
    if detector not in DETECTORS:
        raise ValueError(f"unknown drift detector {detector!r}; choose from {', '.join(DETECTORS)}")
    try:
        from river import drift
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise ValueError(f"the {detector} policy needs River: pip install 'mlma[drift]'") from exc
    return drift.ADWIN if detector == "adwin" else drift.PageHinkley


def detector_parameters(detector: str) -> dict:
    """The River detector's parameters, name -> (accepted types, default); see
    :func:`mlma.policy.parameter_types`. Page-Hinkley's ``mode`` defaults to ``"up"`` here."""
    from mlma.policy import parameter_types

    accepted = parameter_types(_detector_class(detector))
    if detector == "page-hinkley" and "mode" in accepted:
        accepted["mode"] = (accepted["mode"][0], "up")
    return accepted


# The values each River parameter takes, checked before any data: River checks few itself, and some values it
# takes crash its Rust core mid-run with a PanicException (ADWIN's clock=0 and max_buckets=0, River 0.26),
# which is no Exception and ends the whole backtest. Others run but mean nothing (Page-Hinkley's alpha > 1
# lets the cumulative sum grow without bound; threshold <= 0 fires at every loss).
_RANGES = {
    "adwin": {
        "delta": (lambda v: 0 < v < 1, "in (0, 1)"),
        "clock": (lambda v: v >= 1, "a whole number >= 1 (how many losses between two checks)"),
        "max_buckets": (lambda v: v >= 1, "a whole number >= 1"),
        "min_window_length": (lambda v: v >= 1, "a whole number >= 1 (losses in a sub-window)"),
        "grace_period": (lambda v: v >= 0, "a whole number >= 0 (losses before the first check)"),
    },
    "page-hinkley": {
        "threshold": (lambda v: 0 < v < float("inf"), "a finite number > 0"),
        "delta": (lambda v: 0 <= v < float("inf"), "a finite number >= 0"),
        "alpha": (lambda v: 0 < v <= 1, "in (0, 1] (the forgetting factor)"),
        "min_instances": (lambda v: v >= 1, "a whole number >= 1"),
    },
}


def _check_ranges(detector: str, params: dict) -> None:
    """Refuse a parameter value outside its range, naming the parameter and the range.

    >>> _check_ranges("adwin", {"clock": 0})
    Traceback (most recent call last):
    ...
    ValueError: policy adwin: clock must be a whole number >= 1 (how many losses between two checks), got 0
    >>> _check_ranges("page-hinkley", {"alpha": 1.0, "threshold": 20.0})
    """
    import numbers

    for key, value in params.items():
        rule = _RANGES.get(detector, {}).get(key)
        if rule is None:
            continue
        accepts, allowed = rule
        # NaN fails every comparison, so it is refused with the rest; a bool is no count.
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not accepts(value):
            raise ValueError(f"policy {detector}: {key} must be {allowed}, got {value!r}")


class DriftDetectorPolicy(Policy):
    """Re-train a stream when its drift detector signals a change in the (scaled) loss.

    Parameters
    ----------
    detector
        ``"adwin"`` or ``"page-hinkley"``.
    params
        Passed to the River detector (e.g. ``delta`` for ADWIN, ``threshold`` for Page-Hinkley); a name the
        detector does not take is an error listing the ones it does, a value outside the parameter's range
        (see ``_RANGES``: ADWIN's ``delta`` in (0, 1), ``clock``, ``max_buckets`` and ``min_window_length``
        >= 1, ``grace_period`` >= 0; Page-Hinkley's ``threshold`` > 0, ``delta`` >= 0, ``alpha`` in (0, 1],
        ``min_instances`` >= 1) an error naming the parameter and the range.
    """

    def __init__(self, detector: str = "adwin", **params) -> None:
        from mlma.policy import convert_params

        accepted = detector_parameters(detector)
        # Strings (from a spec) are converted; unknown names fail here rather than being dropped.
        self.params = convert_params(detector, params, accepted)
        self.detector = detector
        self.name = detector
        _check_ranges(detector, self.params)
        try:
            self._new_detector()  # River checks the values now, not at the first tick
        except (ValueError, TypeError) as exc:
            raise ValueError(f"policy {detector}: {exc}") from exc

    def _new_detector(self):
        from river import drift

        if self.detector == "adwin":
            return drift.ADWIN(**self.params)
        # Only increases of the loss matter: a model getting better needs no re-training.
        return drift.PageHinkley(**{"mode": "up", **self.params})

    def reset(self, n_streams: int, season_length: int, steps_per_tick: int) -> None:
        super().reset(n_streams, season_length, steps_per_tick)
        self._detectors: list = [None] * n_streams

    def grow(self, n_streams: int) -> None:
        self._detectors.extend([None] * (n_streams - len(self._detectors)))
        super().grow(n_streams)

    def on_new_model(self, streams: np.ndarray, tick: int) -> None:
        for s in streams:
            self._detectors[int(s)] = self._new_detector()

    def decide(self, obs: TickObservation) -> Decision:
        decision = Decision.nothing(obs.n_streams, Verdict.OK)
        decision.verdict[~obs.has_model] = Verdict.COLD
        scored = obs.scored & obs.has_model
        decision.verdict[obs.has_model & ~scored] = Verdict.NO_DATA
        for s in np.flatnonzero(scored):
            detector = self._detectors[s]
            if detector is None:
                detector = self._detectors[s] = self._new_detector()
            fired = False
            for value in obs.scaled_losses[s]:
                if np.isfinite(value):
                    detector.update(float(value))
                    fired = fired or detector.drift_detected
            if fired:
                decision.retrain[s] = True
                decision.verdict[s] = Verdict.DEGRADED
                decision.reason[s] = f"{self.detector} signalled a change in the loss"
        return decision
