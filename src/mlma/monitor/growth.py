"""Re-train a model fitted on a short history once its stream's history has grown: the **growth** trigger.

A stream launched a few days ago gets its first model as soon as it has a season of data; that model is
fitted on a fraction of the training window and is mediocre from day one, which a test against its own
reference never sees (its reference *is* its mediocre first ticks). A schedule refreshes such a model by
chance; a re-training on twice the data is usually the better model (its challengers won 57-100 % of their
checks on the simulator and the bundled panels, docs/results.md). So each stream remembers how many
rows its serving model was fitted on, and the trigger fires once a re-training would train on ``factor``
times as many (the history a re-training uses is capped by the training window, so a model fitted on a full
window never fires). A launched stream is thus re-trained at about ``factor``, ``factor**2``, ... times its
first history, until its window is full: ``log(window / first) / log(factor)`` re-trainings in its life, none
for a stream with a full window. The trigger costs nothing under no change. It is on in the MLMA policy
(``growth=2``) **only under a capped training window**: with all history as the window (the default for
monthly and coarser ticks) every re-training uses more rows than the last, nearly every model of a short
series is "young", and there a schedule spent the same fits better (m3-monthly, docs/results.md), so the agent
gives no row counts and the trigger is silent.

The rows are counted by the agent (those of the training window outside periods marked abnormal, which a fit
leaves out): :attr:`mlma.policy.TickObservation.train_rows` each tick, and for every model
it fits (re-trainings, first models, a person's forced re-trainings) the same count at the fit's tick, through
:meth:`mlma.policy.Policy.on_models_fitted`. A new model counts once it serves; until then (a challenger in
shadow, or waiting for approval) the stream is not due. A model whose rows are unknown (one a person put back in
service, a state saved before this trigger existed, a model fitted while the trigger was off) is taken to have
been fitted on the history before the tick just observed: conservative for a model older than that. A roll-back
while a challenger is in shadow takes the challenger's rows, so the trigger waits for a doubling from there.
"""

from __future__ import annotations

import numbers

import numpy as np


class HistoryGrowth:
    """Per-stream rows of the serving model's training data, and the trigger when the history has grown.

    Parameters
    ----------
    factor
        How many times the rows a re-training would use must exceed the serving model's before the stream
        is re-trained (> 1).

    Examples
    --------
    Three streams, each tick adding 24 rows (the window caps them at 672): a launched one whose first model was
    fitted on 24 rows, one whose model was fitted on a full window, and one whose model's rows are not known.

    >>> growth = HistoryGrowth(factor=2.0)
    >>> growth.reset(3)
    >>> growth.fitted(np.array([0, 1]), np.array([24.0, 672.0]))
    >>> growth.served(np.array([0, 1]))
    >>> growth.due(np.array([48.0, 672.0, 96.0]), observed=np.full(3, 24)).tolist()
    [True, False, False]

    The third stream's model is taken to have been fitted on the rows before this tick (72). The first is
    re-trained on its 48 rows; while that challenger is in shadow the stream is not due again, and when it
    loses, the stream waits for the history to double from the challenger's rows:

    >>> growth.fit_rows.tolist()
    [24.0, 672.0, 72.0]
    >>> growth.fitted(np.array([0]), np.array([48.0]))
    >>> growth.due(np.array([72.0, 672.0, 120.0]), observed=np.full(3, 24)).tolist()
    [False, False, False]
    >>> growth.lost(np.array([0]))
    >>> growth.due(np.array([96.0, 672.0, 144.0]), observed=np.full(3, 24)).tolist()
    [True, False, True]
    """

    #: Per-stream arrays that make up the state (saved with the policy's).
    STATE = ("growth_fit_rows", "growth_pending_rows")

    def __init__(self, factor: float = 2.0) -> None:
        if (isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not factor > 1
                or not np.isfinite(factor)):
            raise ValueError(f"the growth factor (how many times the history must grow before a model fitted on "
                             f"a short one is re-trained) must be a finite number > 1, got {factor!r}")
        self.factor = float(factor)
        self.reset(0)

    def reset(self, n_streams: int) -> None:
        # Rows the serving model was fitted on (NaN: not known yet), and those of a new model not serving yet
        # (a challenger in shadow or waiting for approval; NaN: none).
        self.growth_fit_rows = np.full(n_streams, np.nan)
        self.growth_pending_rows = np.full(n_streams, np.nan)

    @property
    def fit_rows(self) -> np.ndarray:
        return self.growth_fit_rows

    def due(self, rows: np.ndarray, observed: np.ndarray, has_model: np.ndarray | None = None) -> np.ndarray:
        """Streams whose re-training now would use at least ``factor`` times the serving model's rows, and
        that have no new model waiting to serve.

        ``rows``: the rows a re-training at the end of this tick would train on; ``observed``: the rows this
        tick added to them (0 on a tick marked abnormal; models whose rows are unknown are taken to have been
        fitted on ``rows - observed``).
        """
        rows = np.asarray(rows, dtype=np.float64)
        has_model = np.ones(len(rows), dtype=bool) if has_model is None else np.asarray(has_model, dtype=bool)
        unknown = has_model & ~np.isfinite(self.growth_fit_rows)
        before = rows - np.asarray(observed, dtype=np.float64)
        self.growth_fit_rows[unknown] = np.maximum(before[unknown], 0.0)
        fit = self.growth_fit_rows
        waiting = np.isfinite(self.growth_pending_rows)
        with np.errstate(invalid="ignore"):
            return has_model & ~waiting & np.isfinite(fit) & (fit > 0) & (rows >= self.factor * fit)

    def fitted(self, streams: np.ndarray, rows: np.ndarray) -> None:
        """New models of ``streams`` were fitted, on ``rows`` rows each (aligned with ``streams``); they count
        once they serve (:meth:`served`)."""
        streams = np.asarray(streams, dtype=np.int64)
        self.growth_pending_rows[streams] = np.asarray(rows, dtype=np.float64)

    def served(self, streams: np.ndarray) -> None:
        """New models serve on ``streams``: fitted on the rows :meth:`fitted` gave, else unknown until the
        next :meth:`due` (a model put back in service by a person)."""
        streams = np.asarray(streams, dtype=np.int64)
        self.growth_fit_rows[streams] = self.growth_pending_rows[streams]
        self.growth_pending_rows[streams] = np.nan

    def dropped(self, streams: np.ndarray) -> None:
        """The new models of ``streams`` were dropped unjudged (an artifact that cannot be loaded, a person's
        roll-back): the serving model's rows stand, and the trigger may fire again."""
        self.growth_pending_rows[np.asarray(streams, dtype=np.int64)] = np.nan

    def lost(self, streams: np.ndarray) -> None:
        """The new models of ``streams`` did not serve: the history must grow ``factor`` times beyond what
        they were fitted on before the trigger fires again (else it would fire again at once)."""
        streams = np.asarray(streams, dtype=np.int64)
        pending = self.growth_pending_rows[streams]
        self.growth_fit_rows[streams] = np.where(np.isfinite(pending), pending, self.growth_fit_rows[streams])
        self.growth_pending_rows[streams] = np.nan
