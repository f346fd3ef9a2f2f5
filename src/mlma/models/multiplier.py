"""Multiplicative effects of drivers known in advance: ``y = base x exp(drivers . beta)``.

A campaign, a holiday or a cold front multiplies a zone's demand: a zone with ten times the orders gains ten
times the orders from the same campaign. A regression that adds a driver's effect must learn one lift per
level, which a per-stream model fitted on a 28-day window cannot. :class:`DriverMultiplier` estimates the
factor ``exp(d . beta)`` by which the drivers ``d`` scale a base forecast, by penalised Poisson regression with
the base forecast as offset (a log-link generalised linear model): the natural model for counts, defined for
zero actuals, and solved by a few Newton steps.

The regression models use it through ``driver_effect="multiplicative"``
(:class:`~mlma.models.regression.FeatureForecaster`): they deflate the history by the fitted factor, fit
their features on the deflated series, and multiply the forecast by the factor of the drivers' future values.
"""

from __future__ import annotations

import copy
from typing import Self

import numpy as np

__all__ = ["DriverMultiplier"]

# The linear predictor is clipped so that one extreme driver value cannot overflow the factor.
_MAX_LOG_FACTOR = 5.0


class DriverMultiplier:
    """The factor ``exp((d - center) . beta)`` by which driver values ``d`` scale a base forecast.

    Parameters
    ----------
    alpha
        Ridge penalty on ``beta``, in units of the information of one average row at a driver change of the
        driver's typical size (the root mean square of its non-zero values in the training rows: 1 for a 0/1
        flag, about 0.3 for a campaign's planned uplift of +30 %, so that the penalty does not depend on the
        unit a driver is announced in): ``alpha=1`` weighs like one extra row saying "no effect", so a two-day
        campaign in hourly data is barely shrunk while a driver seen in a handful of rows is.
    max_iter
        Newton steps; the objective is convex and a handful suffice.
    prior
        Prior mean of ``beta``, one per driver (NaN: none, i.e. 0): the penalty is
        ``alpha x (beta - prior)^2``, so a driver seen in a handful of rows is shrunk toward the prior rather
        than toward "no effect". A driver that does not vary in the training rows cannot be estimated at all:
        its ``beta`` is the prior, and its values are not clipped to the (single) training value, so that a
        future value that differs gets the prior's effect. None (default) or zeros: the plain ridge penalty,
        exactly as without a prior. The agent passes the fleet's estimate (``ForecastContext.driver_prior``).
        The prior of the fit is only where the fit starts: :meth:`with_prior` gives the drivers the fit did not
        see vary (``varied_`` False) a later prior, the fleet's estimate at forecast time.
        Beyond the range of values the training rows saw, a driver with a prior acts with the prior's effect
        per unit (``outer_``) rather than stopping at the range's edge: a window that saw a campaign of
        planned uplift 0.2 forecasts one of 0.5 with its own effect up to 0.2 and the fleet's for the rest.
        Without a prior (or with a zero one) values are clipped to the range, as before.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> base = rng.uniform(5, 50, 4000)                     # streams of very different levels
    >>> campaign = (rng.random(4000) < 0.1).astype(float)   # a 0/1 flag, on for 10 % of the rows
    >>> y = rng.poisson(base * np.exp(np.log(1.3) * campaign))  # a campaign lifts demand by 30 %
    >>> m = DriverMultiplier().fit(campaign[:, None], base, y)
    >>> lift = float(np.exp(m.beta_[0]))   # the lift, recovered (about 10,000 campaign orders: 1 % error)
    >>> abs(lift - 1.3) < 0.03
    True
    >>> m.factor(np.array([[0.0], [1.0]])).round(2).tolist()  # relative to the training rows' mean flag
    [0.97, 1.25]

    A window where the campaign never ran learns nothing; with the fleet's estimate as prior, the campaign
    still lifts the forecast:

    >>> off = np.zeros((500, 1))
    >>> DriverMultiplier().fit(off, base[:500], y[:500]).factor(np.array([[0.0], [1.0]])).tolist()
    [1.0, 1.0]
    >>> prior = DriverMultiplier(prior=[np.log(1.3)]).fit(off, base[:500], y[:500])
    >>> prior.factor(np.array([[0.0], [1.0]])).round(2).tolist(), prior.information_.tolist()
    ([1.0, 1.3], [0.0])

    The fleet's estimate moves on after the fit: a driver the window never saw vary follows it, a driver it saw
    keeps its own estimate inside the range it saw:

    >>> alone = DriverMultiplier().fit(off, base[:500], y[:500])
    >>> alone.varied_.tolist(), alone.with_prior([np.log(1.4)]).factor(np.array([[0.0], [1.0]])).round(2).tolist()
    ([False], [1.0, 1.4])
    >>> m.with_prior([np.log(1.4)]).factor(np.array([[0.0], [1.0]])).round(2).tolist()
    [0.97, 1.25]

    A driver's value is an intensity: the effect is per unit (a campaign planned at +40 % lifts more than one at
    +20 %). Values beyond the training range get the prior's effect per unit for the part beyond it, none
    without a prior:

    >>> planned = np.where(campaign > 0, 0.2, 0.0)           # every campaign in the window planned at +20 %
    >>> y2 = rng.poisson(base * np.exp(1.2 * planned))        # lift exp(1.2 x 0.2) = 1.27
    >>> own = DriverMultiplier().fit(planned[:, None], base, y2)
    >>> own.factor(np.array([[0.0], [0.2], [0.5]])).round(2).tolist()   # 0.5 clipped to 0.2
    [0.97, 1.25, 1.25]
    >>> fleet = DriverMultiplier(prior=[1.2]).fit(planned[:, None], base, y2)
    >>> fleet.factor(np.array([[0.0], [0.2], [0.5]])).round(2).tolist()  # 1.25 x exp(1.2 x 0.3)
    [0.97, 1.25, 1.79]
    """

    #: Which drivers the training rows saw vary (set by :meth:`fit`). None in a factor pickled before it was
    #: recorded, where :meth:`with_prior` reads it from the clipping bounds.
    varied_: np.ndarray | None = None
    #: Effect per unit of a driver's value beyond the training range (the prior; 0: clipped). None in a factor
    #: pickled before it was kept: clipped.
    outer_: np.ndarray | None = None

    def __init__(self, alpha: float = 1.0, max_iter: int = 8, prior=None):
        if not np.isfinite(alpha) or alpha < 0:
            raise ValueError(f"driver_alpha must be a non-negative number, got {alpha!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
        self.alpha = float(alpha)
        self.max_iter = int(max_iter)
        if prior is not None:
            prior = np.nan_to_num(_prior_array(prior), nan=0.0)
        self.prior = prior

    def fit(self, D: np.ndarray, base: np.ndarray, y: np.ndarray) -> Self:
        """Fit ``y ~ Poisson(base x exp((D - center) . beta))`` on the rows where all three are finite.

        ``base`` is floored at 5 % of its mean so that a zero or negative base forecast stays a valid offset.
        """
        D = np.asarray(D, dtype=np.float64)
        base = np.asarray(base, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        keep = np.isfinite(D).all(axis=1) & np.isfinite(base) & np.isfinite(y)
        D, base, y = D[keep], base[keep], y[keep]
        k = D.shape[1]
        prior = np.zeros(k) if self.prior is None else self.prior
        if prior.shape != (k,):
            raise ValueError(f"prior has {prior.size} value(s), the drivers {k} column(s)")
        self.center_ = D.mean(axis=0) if D.shape[0] else np.zeros(k)
        self.low_ = D.min(axis=0) if D.shape[0] else np.zeros(k)
        self.high_ = D.max(axis=0) if D.shape[0] else np.zeros(k)
        # A driver constant in the window (or with no rows) has no estimate: it takes the prior, and a future
        # value that differs from the window's is not clipped back to it (else the prior would never act).
        flat = (self.low_ == self.high_) & (prior != 0)
        self.low_ = np.where(flat, -np.inf, self.low_)
        self.high_ = np.where(flat, np.inf, self.high_)
        self.beta_ = prior.copy()
        self.outer_ = prior.copy()
        #: Fisher information of each ``beta`` at the fit (0 where the driver did not vary): how much the
        #: window said about the effect, for pooling it across the fleet.
        self.information_ = np.zeros(k)
        self.varied_ = np.zeros(k, dtype=bool)
        if D.shape[0] == 0:
            return self
        floor = 0.05 * max(float(np.abs(base).mean()), 1e-12)
        base = np.maximum(base, floor)
        # A free intercept (first column, not penalised) takes up any bias of the base's level, so that
        # beta is the drivers' effect alone; the factor leaves it out (the base is the level's model).
        A = np.column_stack([np.ones(D.shape[0]), D - self.center_])
        # The penalty per driver in units of its typical non-zero size (RMS of the non-zero values; 1 for a 0/1
        # flag, bit for bit, and for a driver that is all zeros).
        n_nonzero = (D != 0).sum(axis=0)
        size2 = np.where(n_nonzero > 0, (D ** 2).sum(axis=0) / np.maximum(n_nonzero, 1), 1.0)
        penalty = self.alpha * float(base.mean()) * np.diag(np.r_[0.0, size2])
        # Shrunk toward the prior: the penalty acts on coef - target (a zero prior subtracts exact zeros).
        target = np.r_[0.0, prior]
        coef = target.copy()
        for _ in range(self.max_iter):
            mu = base * np.exp(np.clip(A @ coef, -_MAX_LOG_FACTOR, _MAX_LOG_FACTOR))
            grad = A.T @ (mu - y) + penalty @ (coef - target)
            hess = (A * mu[:, None]).T @ A + penalty + 1e-9 * np.eye(k + 1)
            step = np.linalg.solve(hess, grad)
            coef = coef - step
            if np.abs(step).max() < 1e-8:
                break
        varied = self.high_ > self.low_
        varied &= np.isfinite(self.high_)
        # (Where the prior is 0 the estimate stands as it is, so that a zero prior is bit for bit no prior.)
        self.beta_ = np.where(varied | (prior == 0), coef[1:], prior)
        self.varied_ = varied
        mu = base * np.exp(np.clip(A @ coef, -_MAX_LOG_FACTOR, _MAX_LOG_FACTOR))
        self.information_ = np.where(varied, ((A[:, 1:] ** 2) * mu[:, None]).sum(axis=0), 0.0)
        return self

    def with_prior(self, prior) -> DriverMultiplier:
        """This fit with ``prior`` (one log-factor per driver, NaN: none) in force for the drivers its training
        rows did not see vary: their ``beta`` is the prior and their values are not clipped (as if fitted with
        it; such a driver left no trace in the rest of the fit, its training column being constant). The
        drivers the fit saw vary keep their own estimate inside the range they saw, and take the prior's
        effect per unit beyond it (``outer_``); a NaN keeps the fit's values. Returns this factor itself when
        nothing changes, else a copy (this one is not modified).

        The model service calls it, through the model's :meth:`~mlma.models.BaseForecaster.for_context`, with
        the fleet's current estimate at every forecast, so that a model fitted before the fleet knew a
        campaign's lift applies the lift the fleet knows now.
        """
        prior = _prior_array(prior)
        if not hasattr(self, "beta_"):
            raise RuntimeError("DriverMultiplier is not fitted: call fit first")
        if prior.shape != self.beta_.shape:
            raise ValueError(f"prior has {prior.size} value(s), the drivers {self.beta_.size} column(s)")
        varied = self.varied_
        if varied is None:  # fitted before varied_ was kept: a varied driver has finite, distinct bounds
            varied = (self.high_ > self.low_) & np.isfinite(self.high_)
        unseen = ~varied & np.isfinite(prior)
        beta = np.where(unseen, prior, self.beta_)
        opened = unseen & (prior != 0)
        low = np.where(opened, -np.inf, self.low_)
        high = np.where(opened, np.inf, self.high_)
        outer = np.zeros_like(self.beta_) if self.outer_ is None else self.outer_
        outer = np.where(np.isfinite(prior), prior, outer)
        if (np.array_equal(beta, self.beta_) and np.array_equal(low, self.low_)
                and np.array_equal(high, self.high_)
                and (np.array_equal(outer, self.outer_) or (self.outer_ is None and not outer.any()))):
            return self
        out = copy.copy(self)
        out.beta_, out.low_, out.high_, out.varied_, out.outer_ = beta, low, high, varied, outer
        return out

    def factor(self, D: np.ndarray) -> np.ndarray:
        """The multiplicative factor of each row of driver values; a row with a missing value gets 1.

        Values outside the range seen in training are clipped to it: an effect estimated from January's
        temperatures is not extrapolated to May's (a model that is not re-trained would drift with it). The
        part beyond the range acts with the prior's effect per unit (``outer_``, the fleet's estimate), where
        there is one: the fleet's effect rather than the stream's own extrapolated, or none."""
        D = np.asarray(D, dtype=np.float64)
        inside = np.clip(D, self.low_, self.high_)
        eta = (inside - self.center_) @ self.beta_
        if self.outer_ is not None and self.outer_.any():
            eta = eta + (D - inside) @ self.outer_
        eta = np.clip(eta, -_MAX_LOG_FACTOR, _MAX_LOG_FACTOR)
        return np.where(np.isfinite(eta), np.exp(eta), 1.0)


def _prior_array(prior) -> np.ndarray:
    """``prior`` as a 1-D float array of finite numbers or NaN (no prior for that driver)."""
    prior = np.asarray(prior, dtype=np.float64)
    if prior.ndim != 1 or np.isinf(prior).any():
        raise ValueError(f"prior must be a 1-D array of finite numbers or NaN (no prior), got {prior!r}")
    return prior
