"""Hourly panels of zones that run marketing campaigns, for the tests of driver effects.

Each zone's demand is Poisson around a level (four to twenty orders an hour at the evening peak) times a daily
profile times the campaigns' lifts; the test says when each zone's campaigns run, how much they lift demand
and what the ``campaign`` column announces.

>>> panel, means = campaign_panel(lambda s, day: ((np.where(day == 1, 1.5, 1.0),), (day == 1).astype(float)),
...                               n_streams=2, days=2, seed=0)
>>> # Highest over lowest mean: the evening peak (x 3), the second zone's level (x 2), the campaign (x 1.5).
>>> panel.groupby("unique_id")["campaign"].sum().tolist(), round(float(means["mu"].max() / means["mu"].min()), 6)
([24.0, 24.0], 9.0)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

#: ``(stream, day of each hour) -> (factors of the mean, the campaign column)``.
Campaigns = Callable[[int, np.ndarray], tuple[tuple[np.ndarray, ...], np.ndarray]]


def campaign_panel(campaigns: Campaigns, n_streams: int, days: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The panel (``unique_id, ds, y, campaign``) and its true mean (``unique_id, ds, mu``), ``days`` of hourly
    data for zones ``z00``, ``z01``, ...; ``campaigns`` gives each zone's lift factors (multiplied into the
    mean in their order) and its announced ``campaign`` values."""
    rng = np.random.default_rng(seed)
    ds = pd.date_range("2025-03-03", periods=24 * days, freq="h")
    hour = ds.hour.to_numpy()
    day = np.arange(ds.size) // 24
    profile = 1.0 + 2.0 * np.exp(-0.5 * ((hour - 18) / 2.5) ** 2)
    frames, means = [], []
    for s in range(n_streams):
        factors, driver = campaigns(s, day)
        mu = 4.0 * (1 + s % 5) * profile
        for factor in factors:
            mu = mu * factor
        frames.append(pd.DataFrame({"unique_id": f"z{s:02d}", "ds": ds, "y": rng.poisson(mu).astype(float),
                                    "campaign": driver}))
        means.append(pd.DataFrame({"unique_id": f"z{s:02d}", "ds": ds, "mu": mu}))
    return pd.concat(frames, ignore_index=True), pd.concat(means, ignore_index=True)
