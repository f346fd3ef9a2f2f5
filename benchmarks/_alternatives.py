"""What monitoring each stream on its own costs with off-the-shelf tools, per stream and tick.

* Evidently: one data-drift report per stream on its loss column, reference losses against the tick's
  losses, built from the stream's arrays (a DataFrame each) and read back for the drift verdict. Both the
  preset a team would reach for first (``Report([DataDriftPreset()])``) and the lightest single-column
  metric (``Report([ValueDrift(column="loss")])``) are timed.
* River: ADWIN and Page-Hinkley detectors, one per stream, fed the tick's losses one at a time after they
  were fed the reference losses (untimed), as :class:`mlma.drift_policy.DriftDetectorPolicy` feeds them.

Evidently 0.7 imports ``pandas.core.dtypes.common.infer_dtype_from_object``, which pandas 3 removed; the
import is only used by a legacy data-integrity test that the reports timed here never run, so a stand-in
is installed before importing Evidently (see :func:`import_evidently`).
"""

from __future__ import annotations

import os
import pickle
import time

import numpy as np


def import_evidently():
    """Import Evidently's current (0.7+) API under pandas 3; returns ``(module, Report, DataDriftPreset,
    ValueDrift)`` or raises ImportError with the reason."""
    # Evidently's usage telemetry belongs to its UI service, but make sure nothing is sent from a benchmark.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    import pandas.core.dtypes.common as pandas_common

    if not hasattr(pandas_common, "infer_dtype_from_object"):
        # Removed in pandas 3; Evidently 0.7 imports it at module level for one legacy test only.
        pandas_common.infer_dtype_from_object = lambda dtype: np.dtype(dtype).type
    import evidently
    from evidently import Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    return evidently, Report, DataDriftPreset, ValueDrift


def evidently_seconds_per_stream(reference: np.ndarray, current: np.ndarray, *, kind: str = "preset",
                                 warm: int = 2) -> tuple[np.ndarray, int]:
    """Seconds per stream of one Evidently drift report on the loss column, and how many streams drifted.

    ``kind`` is ``"preset"`` (``DataDriftPreset``) or ``"value"`` (``ValueDrift(column="loss")``).
    """
    import pandas as pd

    _, Report, DataDriftPreset, ValueDrift = import_evidently()

    def one(ref_row: np.ndarray, cur_row: np.ndarray) -> bool:
        ref_frame = pd.DataFrame({"loss": ref_row})
        cur_frame = pd.DataFrame({"loss": cur_row})
        if kind == "preset":
            snapshot = Report([DataDriftPreset()]).run(cur_frame, ref_frame)
            metrics = snapshot.dict()["metrics"]
            count = next(m["value"]["count"] for m in metrics if "DriftedColumnsCount" in m["metric_name"])
            return count > 0
        snapshot = Report([ValueDrift(column="loss")]).run(cur_frame, ref_frame)
        metric = snapshot.dict()["metrics"][0]
        # The value is the test's p-value for the default K-S test (a distance for other methods).
        threshold = metric["config"].get("threshold") or 0.05
        return float(metric["value"]) < threshold

    if kind not in ("preset", "value"):
        raise ValueError(f"kind must be 'preset' or 'value', got {kind!r}")
    for i in range(min(warm, len(reference))):  # first runs pay for lazy imports and registries
        one(reference[i], current[i])
    seconds, drifted = np.empty(len(reference)), 0
    for i in range(len(reference)):
        start = time.perf_counter()
        drifted += one(reference[i], current[i])
        seconds[i] = time.perf_counter() - start
    return seconds, drifted


def river_seconds_per_stream(reference: np.ndarray, current: np.ndarray, *,
                             detector: str = "adwin") -> tuple[np.ndarray, int, float]:
    """Seconds per stream of feeding one tick's losses to a River detector already fed the reference, how
    many detectors fired in the tick, and the median size of a detector's pickled state in bytes."""
    from river import drift

    def new():
        if detector == "adwin":
            return drift.ADWIN()
        if detector == "page-hinkley":
            return drift.PageHinkley(mode="up")
        raise ValueError(f"detector must be 'adwin' or 'page-hinkley', got {detector!r}")

    detectors = []
    for row in reference:
        d = new()
        for value in row.tolist():
            d.update(value)
        detectors.append(d)
    seconds, fired_streams = np.empty(len(reference)), 0
    for i, d in enumerate(detectors):
        start = time.perf_counter()
        fired = False
        for value in current[i].tolist():
            d.update(value)
            fired = fired or d.drift_detected
        seconds[i] = time.perf_counter() - start
        fired_streams += fired
    state = float(np.median([len(pickle.dumps(d)) for d in detectors]))
    return seconds, fired_streams, state
