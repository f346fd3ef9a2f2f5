"""Per-observation forecast losses on fleet arrays, and scaling them by each stream's own naive error.

Every function works elementwise on ``(n_streams, n_values)`` arrays padded with NaN (a NaN actual or
forecast gives a NaN loss, which the tests read as "no value"), and broadcasts like numpy.

Scaling by the in-sample error of the seasonal naive forecast makes losses of streams with different units
comparable, as in the mean absolute scaled error (Hyndman & Koehler 2006 [1]_). The degradation test does
not need it (it is scale-free per stream), but fleet-wide summaries and rankings do.

References
----------
.. [1] Hyndman, R. J., & Koehler, A. B. (2006). Another look at measures of forecast accuracy.
   International Journal of Forecasting, 22(4), 679-688.
.. [2] Koenker, R., & Bassett, G. (1978). Regression quantiles. Econometrica, 46(1), 33-50.
"""

from __future__ import annotations

import numpy as np

__all__ = ["absolute_loss", "squared_loss", "relative_loss", "forecast_level", "pinball_loss", "seasonal_naive_scale",
           "scaled_loss"]


def absolute_loss(y: np.ndarray, y_hat: np.ndarray) -> np.ndarray:
    """Absolute error ``|y - y_hat|``, elementwise; NaN where either is NaN.

    Examples
    --------
    >>> absolute_loss(np.array([[1.0, 2.0, np.nan]]), np.array([[1.5, 1.0, 3.0]]))
    array([[0.5, 1. , nan]])
    """
    return np.abs(np.asarray(y, dtype=np.float64) - np.asarray(y_hat, dtype=np.float64))


def squared_loss(y: np.ndarray, y_hat: np.ndarray) -> np.ndarray:
    """Squared error ``(y - y_hat) ** 2``, elementwise; NaN where either is NaN.

    Examples
    --------
    >>> squared_loss(np.array([[1.0, 2.0]]), np.array([[1.5, 0.0]]))
    array([[0.25, 4.  ]])
    """
    diff = np.asarray(y, dtype=np.float64) - np.asarray(y_hat, dtype=np.float64)
    return diff * diff


def forecast_level(y_hat: np.ndarray, floor: np.ndarray | float = 0.0) -> np.ndarray:
    """Each row's forecast level: the mean ``|y_hat|`` over its finite forecasts, raised to ``floor``.

    The denominator of :func:`relative_loss`. One number per row (per stream and tick), not one per
    timestamp: dividing each hour by its own forecast would weight the quiet night hours, where a count's
    relative noise is largest, far above the busy ones and make the tick's mean loss noisy.

    Parameters
    ----------
    y_hat
        ``(n_streams, n_values)`` forecasts, NaN where none.
    floor
        Smallest level used (scalar or one per row; NaN counts as 0): a forecast of (nearly) nothing would
        make any error look infinitely large.

    Returns
    -------
    numpy.ndarray
        ``(n_streams,)`` levels; NaN for a row without forecasts or whose level and floor are both zero
        (such a row has no relative loss).

    Examples
    --------
    >>> forecast_level(np.array([[2.0, 4.0, np.nan], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), np.array([0.0, 0.5, 0.0]))
    array([3. , 0.5, nan])
    """
    values = np.abs(np.asarray(y_hat, dtype=np.float64))
    if values.ndim == 1:
        values = values[None, :]
    finite = np.isfinite(values)
    count = finite.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        level = np.where(count > 0, np.where(finite, values, 0.0).sum(axis=1) / np.maximum(count, 1), np.nan)
    low = np.nan_to_num(np.abs(np.asarray(floor, dtype=np.float64)), nan=0.0, posinf=0.0)
    level = np.where(np.isfinite(level), np.maximum(level, low), np.nan)
    return np.where(level > 0, level, np.nan)


def relative_loss(y: np.ndarray, y_hat: np.ndarray, floor: np.ndarray | float = 0.0) -> np.ndarray:
    """Absolute error divided by the forecast's own level, ``|y - y_hat| / forecast_level(y_hat, floor)``.

    Scale-free in the way count data need: the noise of a count grows with its volume (a Poisson count's
    standard deviation with the square root of its mean), so the absolute error of even a perfect forecast
    rises when demand rises. Divided by the forecast's level, a rise the model *forecast* (a promotion it
    was told about) leaves the loss unchanged or lower (``sqrt(level) / level`` falls), while a change it
    did not forecast still raises it: after an unannounced jump or drop the forecast keeps its old level, so
    the denominator stays and the error grows. Dividing by the actual instead (as the MAPE does) would
    reward under-forecasting and make a level drop *raise* every ratio whether forecast or not.

    Examples
    --------
    >>> relative_loss(np.array([[9.0, 12.0]]), np.array([[10.0, 10.0]]))
    array([[0.1, 0.2]])
    >>> relative_loss(np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]]), floor=0.5)
    array([[2., 0.]])
    """
    level = forecast_level(y_hat, floor)
    return absolute_loss(y, y_hat) / level[:, None]


def pinball_loss(y: np.ndarray, q_hat: np.ndarray, q: float | np.ndarray) -> np.ndarray:
    """Pinball (quantile) loss of a forecast ``q_hat`` of the ``q``-quantile [2]_, elementwise.

    ``q * (y - q_hat)`` when the actual is above the forecast, ``(1 - q) * (q_hat - y)`` when below.

    Parameters
    ----------
    y, q_hat
        Actuals and quantile forecasts, same shape (or broadcastable), NaN for no value.
    q
        The quantile level(s) in (0, 1), a scalar or an array broadcastable against ``y``.

    Examples
    --------
    >>> pinball_loss(np.array([[10.0, 10.0]]), np.array([[8.0, 12.0]]), q=0.9)
    array([[1.8, 0.2]])
    >>> pinball_loss(np.array([1.0]), np.array([1.0]), q=1.5)
    Traceback (most recent call last):
    ...
    ValueError: q must be a quantile level strictly between 0 and 1, got 1.5
    """
    levels = np.asarray(q, dtype=np.float64)
    if not np.all((levels > 0) & (levels < 1)):
        raise ValueError(f"q must be a quantile level strictly between 0 and 1, got {q!r}")
    diff = np.asarray(y, dtype=np.float64) - np.asarray(q_hat, dtype=np.float64)
    return np.maximum(levels * diff, (levels - 1.0) * diff)


def seasonal_naive_scale(y_2d: np.ndarray, season_length: int, *, min_pairs: int = 1) -> np.ndarray:
    """Each stream's mean absolute seasonal difference ``mean |y[t] - y[t - season_length]|``.

    This is the in-sample error of the seasonal naive forecast, the denominator of the MASE [1]_.

    Parameters
    ----------
    y_2d
        ``(n_streams, n_values)`` history on a regular time grid (column ``t`` is one period after column
        ``t - 1``), NaN where a value is missing. Pairs with a NaN on either side are skipped.
    season_length
        Periods per season (24 for hourly data with a daily pattern, 7 for daily data, 1 for the plain
        naive forecast).
    min_pairs
        Streams with fewer usable pairs get NaN.

    Returns
    -------
    numpy.ndarray
        ``(n_streams,)`` scales; ``0.0`` for a stream whose history repeats exactly (see
        :func:`scaled_loss` for how zero scales are handled).

    Examples
    --------
    >>> y = np.array([[1.0, 2.0, 4.0, 3.0, np.nan, 5.0],
    ...               [5.0, 5.0, 5.0, 5.0, 5.0, 5.0],
    ...               [1.0, np.nan, np.nan, np.nan, np.nan, np.nan]])
    >>> seasonal_naive_scale(y, season_length=2)
    array([ 2.,  0., nan])
    """
    y = np.asarray(y_2d, dtype=np.float64)
    if y.ndim == 1:
        y = y[None, :]
    if y.ndim != 2:
        raise ValueError(f"y_2d must be a 2-D array (n_streams, n_values), got shape {y.shape}")
    if not isinstance(season_length, (int, np.integer)) or season_length < 1:
        raise ValueError(f"season_length must be a whole number >= 1, got {season_length!r}")
    if not isinstance(min_pairs, (int, np.integer)) or min_pairs < 1:
        raise ValueError(f"min_pairs must be a whole number >= 1, got {min_pairs!r}")
    if y.shape[1] <= season_length:
        return np.full(y.shape[0], np.nan)
    diffs = np.abs(y[:, season_length:] - y[:, :-season_length])
    pairs = np.isfinite(diffs).sum(axis=1)
    total = np.nansum(diffs, axis=1)
    return np.where(pairs >= min_pairs, total / np.maximum(pairs, 1), np.nan)


def scaled_loss(loss: np.ndarray, scale: np.ndarray | float, *, min_scale: float = 0.0,
                fallback: float = np.nan) -> np.ndarray:
    """Divide each stream's losses by its scale, with a defined answer for zero or missing scales.

    Parameters
    ----------
    loss
        ``(n_streams, n_values)`` losses.
    scale
        ``(n_streams,)`` per-stream scales (e.g. from :func:`seasonal_naive_scale`) or a scalar.
    min_scale
        Scales at or below this (and NaN or infinite ones) are unusable: a stream whose history repeats
        exactly has scale 0 and any error would be infinitely large relative to it.
    fallback
        Scale used instead of an unusable one. The default NaN makes those streams' scaled losses NaN, so
        that downstream tests mark them untestable instead of seeing infinities; ``1.0`` keeps their raw
        losses.

    Examples
    --------
    >>> losses = np.array([[1.0, 2.0], [1.0, 3.0], [4.0, np.nan]])
    >>> scaled_loss(losses, np.array([2.0, 0.0, 4.0]))
    array([[0.5, 1. ],
           [nan, nan],
           [1. , nan]])
    >>> scaled_loss(losses, np.array([2.0, 0.0, 4.0]), fallback=1.0)[1]
    array([1., 3.])
    """
    values = np.asarray(loss, dtype=np.float64)
    scales = np.asarray(scale, dtype=np.float64)
    if not np.isfinite(min_scale) or min_scale < 0:
        raise ValueError(f"min_scale must be a finite number >= 0, got {min_scale!r}")
    if not np.isnan(fallback) and not (np.isfinite(fallback) and fallback > 0):
        raise ValueError(f"fallback must be NaN or a positive finite scale, got {fallback!r}")
    if scales.ndim == 1:
        if values.ndim != 2 or scales.shape[0] != values.shape[0]:
            raise ValueError(f"scale has {scales.shape[0]} entries but loss has shape {values.shape}; "
                             "pass one scale per stream (row)")
        scales = scales[:, None]
    usable = np.isfinite(scales) & (scales > min_scale)
    return values / np.where(usable, scales, fallback)
