"""The expected gain of a re-training, learned from the fleet's own past re-trainings.

Every re-training the agent checks ends in a comparison: the challenger and the champion forecast the same
ticks, which neither was fitted on, so ``2 (champion - challenger) / (champion + challenger)`` of their mean
losses is what that re-training paid (relative, symmetric: 0 when both are equal, bounded by +-2). The
:class:`GainModel` regresses these realised gains on what the policy knew when it decided: the model's age
and the evidence of the stream's tests, and predicts the gain of re-training any stream now. It is a
Bayesian linear regression (ridge towards a prior), refitted from sufficient statistics, so it costs a few
array sums per tick whatever the fleet's size.

The sufficient statistics are kept per stream (each stream's own contributions) so that they are saved,
restored and grown with the rest of the per-stream state; the fleet's model sums them.
"""

from __future__ import annotations

import numpy as np

#: The features of a decision, in order: a constant, the model's age (in refresh periods, capped at 1.5),
#: the degradation test's evidence and the bias test's evidence (normal quantiles of their p-values,
#: divided by 4 and capped at 1).
FEATURES = ("intercept", "age", "degradation", "bias")


def decision_features(age_periods: np.ndarray, degradation_p: np.ndarray, bias_p: np.ndarray) -> np.ndarray:
    """``(n, 4)`` features (see :data:`FEATURES`); a NaN p-value (not tested) counts as no evidence.

    >>> decision_features(np.array([0.5, 3.0]), np.array([np.nan, 0.5]), np.array([1e-6, np.nan])).round(2)
    array([[1. , 0.5, 0. , 1. ],
           [1. , 1.5, 0. , 0. ]])
    """
    from scipy.special import ndtri

    def evidence(p):
        p = np.clip(np.nan_to_num(np.asarray(p, dtype=np.float64), nan=1.0), 1e-12, 1.0)
        return np.clip(ndtri(1.0 - p) / 4.0, 0.0, 1.0)

    n = len(age_periods)
    out = np.empty((n, len(FEATURES)))
    out[:, 0] = 1.0
    out[:, 1] = np.clip(np.asarray(age_periods, dtype=np.float64), 0.0, 1.5)
    out[:, 2] = evidence(degradation_p)
    out[:, 3] = evidence(bias_p)
    return out


def realised_gain(challenger_loss: np.ndarray, champion_loss: np.ndarray) -> np.ndarray:
    """``2 (champion - challenger) / (champion + challenger)``: symmetric, so its mean is 0 when a
    re-training changes nothing (a plain ratio would be biased by Jensen's inequality); 0 when both are 0.

    >>> realised_gain(np.array([1.0, 3.0, 0.0]), np.array([3.0, 1.0, 0.0]))
    array([ 1., -1.,  0.])
    """
    ch = np.asarray(challenger_loss, dtype=np.float64)
    cp = np.asarray(champion_loss, dtype=np.float64)
    total = ch + cp
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = np.where(total > 0, 2.0 * (cp - ch) / np.where(total > 0, total, 1.0), 0.0)
    return np.where(np.isfinite(gain), gain, np.nan)


class GainModel:
    """Expected relative gain of a re-training from :func:`decision_features`, learned from realised gains.

    Parameters
    ----------
    prior
        Prior coefficients (one per feature): what is believed before the fleet has re-trained anything.
    prior_strength
        Weight of the prior, in realised gains: the coefficients move halfway to the data's after about
        this many re-trainings (per feature direction).
    """

    #: Per-stream arrays that make up the state (saved with the policy's).
    STATE = ("gain_xtx", "gain_xty", "gain_pending")

    def __init__(self, prior, prior_strength: float) -> None:
        prior = np.asarray(prior, dtype=np.float64)
        if prior.shape != (len(FEATURES),) or not np.isfinite(prior).all():
            raise ValueError(f"the gain prior needs {len(FEATURES)} finite coefficients ({', '.join(FEATURES)}), "
                             f"got {prior.tolist()!r}")
        if not prior_strength > 0:
            raise ValueError(f"gain_prior_strength must be > 0, got {prior_strength!r}")
        self.prior = prior
        self.prior_strength = float(prior_strength)
        self._beta: np.ndarray | None = None

    def reset(self, n_streams: int) -> None:
        f = len(FEATURES)
        self.gain_xtx = np.zeros((n_streams, f, f))
        self.gain_xty = np.zeros((n_streams, f))
        # The features of each stream's decision whose outcome is not known yet (NaN: none pending).
        self.gain_pending = np.full((n_streams, f), np.nan)
        self._beta = None

    def grow(self, n_streams: int) -> None:
        old = len(self.gain_xty)
        if n_streams <= old:
            return
        f = len(FEATURES)
        self.gain_xtx = np.concatenate([self.gain_xtx, np.zeros((n_streams - old, f, f))])
        self.gain_xty = np.concatenate([self.gain_xty, np.zeros((n_streams - old, f))])
        self.gain_pending = np.concatenate([self.gain_pending, np.full((n_streams - old, f), np.nan)])

    def state_changed(self) -> None:
        """Forget the cached coefficients (after the state was loaded)."""
        self._beta = None

    def decided(self, streams: np.ndarray, features: np.ndarray) -> None:
        """Remember the features of the re-trainings decided for ``streams``."""
        self.gain_pending[streams] = features

    def learn(self, streams: np.ndarray, gains: np.ndarray) -> None:
        """Add the realised ``gains`` of the streams' pending re-trainings to the fleet's evidence."""
        streams = np.asarray(streams, dtype=np.int64)
        x = self.gain_pending[streams]
        ok = np.isfinite(x).all(axis=1) & np.isfinite(gains)
        s, x, y = streams[ok], x[ok], np.asarray(gains, dtype=np.float64)[ok]
        np.add.at(self.gain_xtx, s, x[:, :, None] * x[:, None, :])
        np.add.at(self.gain_xty, s, x * y[:, None])
        self.gain_pending[streams] = np.nan
        if len(s):
            self._beta = None

    @property
    def n_learned(self) -> float:
        """How many realised gains the model has learned from."""
        return float(self.gain_xtx[:, 0, 0].sum())

    def coefficients(self) -> np.ndarray:
        if self._beta is None:
            f = len(FEATURES)
            lam = self.prior_strength
            a = self.gain_xtx.sum(axis=0) + lam * np.eye(f)
            b = self.gain_xty.sum(axis=0) + lam * self.prior
            self._beta = np.linalg.solve(a, b)
        return self._beta

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Expected relative gain (0.02: the loss 2 % lower) of re-training with these features."""
        return np.asarray(features, dtype=np.float64) @ self.coefficients()
