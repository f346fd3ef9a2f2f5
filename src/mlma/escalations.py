"""Escalations: items for the engineer's queue, things the agent should not or could not fix alone."""

from __future__ import annotations

from dataclasses import dataclass

#: Kinds of escalation and what each asks of the engineer.
ESCALATION_KINDS = {
    "challenger-lost": "re-trained models lost to the serving one repeatedly; the champion keeps serving",
    "repeated-trigger": "the stream degraded again and again within a short window; re-training does not fix it",
    "data-quality": "the actuals look broken (outage, flat line, sudden zeros); no re-training on broken data",
    "silent": "the stream stopped reporting",
    "cold": "a new stream has too little history for its model and runs on a fall-back",
    "budget": "re-trainings were queued because the per-tick budget was spent",
    "fit-failed": "re-training failed or timed out repeatedly; the champion keeps serving",
    "approval-needed": "a re-trained model beat the serving one and waits for a person's approval",
    "artifact-broken": "a model file is missing or damaged; the stream fell back to an earlier version or was "
                       "re-fitted on its window",
    "fleet-retraining-lost": ("most re-trainings of one tick lost to the serving models, fleet-wide: a shared cause "
                              "(broken data in the training window, a feature the window cannot estimate)"),
}


@dataclass(frozen=True)
class Escalation:
    """One item for the engineer: which stream, when, what kind, how severe (1 low - 3 high), and why."""

    stream: int
    tick: int
    kind: str
    severity: int
    message: str

    def __post_init__(self) -> None:
        if self.kind not in ESCALATION_KINDS:
            raise ValueError(f"unknown escalation kind {self.kind!r}; known: {', '.join(ESCALATION_KINDS)}")
