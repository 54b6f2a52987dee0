"""The coordinator's view of pair tasks on Dask: worker event messages -> ledger `PhaseEvent`s.

Pure bookkeeping, no Dask. A task whose worker is lost (killed, node preempted) is rerun by Dask,
and the rerun's `run_pair` resumes from the checkpoints (its attempt numbers continue from the
log files, so they need no change). `Executions` keeps the ledger's story straight across such
reruns: the phase the lost worker was running gets a failed "end", late messages of the lost
execution are dropped, and the final result counts the attempts and wall time of every execution.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from insar_pipeline.run.dask.task import TaskOutcome
    from insar_pipeline.topsapp.job import PairResult, PhaseEvent

log = logging.getLogger(__name__)

LOST_WORKER = "Dask worker lost while running this phase (the pair was rescheduled)"


@dataclass
class _Pair:
    token: str | None = None  # the execution whose events count now
    tokens: set[str] = field(default_factory=set)
    seen: set[tuple[str, int]] = field(default_factory=set)  # (token, seq) already ingested
    open: PhaseEvent | None = None  # the last "start" without its "end"
    starts: dict[str, set[tuple[str, int]]] = field(default_factory=dict)  # token -> attempts
    walls: dict[str, dict[str, float]] = field(default_factory=dict)  # token -> phase -> s


class Executions:
    """Tracks each submitted pair's executions (Dask task runs) and their events."""

    def __init__(self) -> None:
        self._pairs: dict[str, _Pair] = {}

    def begin(self, pair_id: str) -> None:
        self._pairs[pair_id] = _Pair()

    def tracks(self, pair_id: str) -> bool:
        return pair_id in self._pairs

    def started(self, pair_id: str) -> bool:
        """Whether any execution of the pair has reported an event."""
        state = self._pairs.get(pair_id)
        return state is not None and state.token is not None

    def received(self, token: str, pair_id: str) -> int:
        state = self._pairs.get(pair_id)
        return sum(1 for seen_token, _ in state.seen if seen_token == token) if state else 0

    def ingest(self, message: Mapping[str, Any], now: float) -> list[PhaseEvent]:
        """The ledger events of one worker message (none for a duplicate or a stale one)."""
        from insar_pipeline.topsapp.job import PhaseEvent

        state = self._pairs.get(message["pair"])
        token, seq = message["token"], int(message["seq"])
        if state is None or (token, seq) in state.seen:
            return []
        if token in state.tokens and token != state.token:
            log.debug("late event of an earlier execution ignored", extra={"pair": message["pair"]})
            return []
        state.seen.add((token, seq))
        events = self._switch(state, message["pair"], token, now)
        event = PhaseEvent(**message["event"])
        if event.kind == "start":
            state.open = event
            state.starts[token].add((event.phase, event.attempt))
        else:
            state.open = None
            if event.wall_s is not None:
                walls = state.walls[token]
                walls[event.phase] = walls.get(event.phase, 0.0) + event.wall_s
        return [*events, event]

    def _switch(self, state: _Pair, pair_id: str, token: str, now: float) -> list[PhaseEvent]:
        """A first message from a new execution: the previous one was lost."""
        if token == state.token:
            return []
        lost = []
        if state.token is not None:
            log.warning("the pair's task was rerun on another Dask worker; it resumes from its "
                        "checkpoints", extra={"pair": pair_id})  # fmt: skip
            lost = self.lost(pair_id, LOST_WORKER, now)
        state.token = token
        state.tokens.add(token)
        state.starts[token], state.walls[token] = set(), {}
        return lost

    def lost(self, pair_id: str, reason: str, now: float) -> list[PhaseEvent]:
        """A failed "end" for the phase left open by an execution that will never report again."""
        state = self._pairs.get(pair_id)
        if state is None or state.open is None:
            return []
        start, state.open = state.open, None
        return [
            replace(start, kind="end", time=now, ok=False, transient=True, error=reason,
                    wall_s=round(now - start.time, 3))
        ]  # fmt: skip

    def finish(
        self, pair_id: str, outcome: TaskOutcome, now: float
    ) -> tuple[list[PhaseEvent], PairResult]:
        """The pair's final result, its attempts and wall times summed over its executions."""
        state = self._pairs[pair_id]
        # A rerun that sent no event at all still ends the lost execution's open phase.
        events = self._switch(state, pair_id, outcome.token, now)
        del self._pairs[pair_id]
        result = outcome.result
        earlier = [token for token in state.tokens if token != outcome.token]
        attempts = _count_attempts(state, earlier)
        for phase, count in result.attempts.items():
            attempts[phase] = attempts.get(phase, 0) + count
        walls = _sum_walls(state, earlier)
        for phase, wall in result.phase_wall_s.items():
            walls[phase] = walls.get(phase, 0.0) + wall
        return events, replace(result, attempts=attempts, phase_wall_s=walls)

    def abandon(
        self, pair_id: str, reason: str, now: float
    ) -> tuple[list[PhaseEvent], dict[str, int], str | None]:
        """Stop tracking a pair whose task ended without a result (lost for good, cancelled).

        Returns the closing events, the attempts every execution made and the phase left open.
        """
        state = self._pairs.get(pair_id)
        if state is None:
            return [], {}, None
        open_phase = state.open.phase if state.open is not None else None
        events = self.lost(pair_id, reason, now)
        del self._pairs[pair_id]
        return events, _count_attempts(state, state.tokens), open_phase


def _count_attempts(state: _Pair, tokens: Iterable[str]) -> dict[str, int]:
    attempts: dict[str, int] = {}
    for token in tokens:
        for phase, _ in state.starts.get(token, ()):
            attempts[phase] = attempts.get(phase, 0) + 1
    return attempts


def _sum_walls(state: _Pair, tokens: Iterable[str]) -> dict[str, float]:
    walls: dict[str, float] = {}
    for token in tokens:
        for phase, wall in state.walls.get(token, {}).items():
            walls[phase] = walls.get(phase, 0.0) + wall
    return walls
