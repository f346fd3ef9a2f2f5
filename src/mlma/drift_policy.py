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


class DriftDetectorPolicy(Policy):
    """Re-train a stream when its drift detector signals a change in the (scaled) loss.

    Parameters
    ----------
    detector
        ``"adwin"`` or ``"page-hinkley"``.
    params
        Passed to the River detector (e.g. ``delta`` for ADWIN, ``threshold`` for Page-Hinkley).
    """

    def __init__(self, detector: str = "adwin", **params) -> None:
        if detector not in DETECTORS:
            raise ValueError(f"unknown drift detector {detector!r}; choose from {', '.join(DETECTORS)}")
        try:
            from river import drift  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the optional extra
            raise ValueError(f"the {detector} policy needs River: pip install 'mlma[drift]'") from exc
        self.detector = detector
        self.params = params
        self.name = detector

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
