"""The seam between the one-pair runner and the schedulers (local threads, Dask workers).

Plain picklable records: a job goes to wherever the pair runs, events and the result come back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .topsapp import Phase

LOGS_DIR = "logs"  # in the pair folder: logs/<phase>.<attempt>.log


@dataclass(frozen=True)
class PairJob:
    """Everything a worker needs to run one pair (picklable)."""

    pair_id: str
    run_dir: Path  # absolute
    swaths: tuple[int, ...]
    phases: tuple[Phase, ...]  # the full phase table; finished steps are skipped
    topsapp: str  # the command, split like a shell line (quote a path with spaces)
    max_retries: int
    phase_timeout_s: float | None
    omp_threads: int
    clean_level: str  # none | standard | nuclear, applied after success
    retry_backoff_s: float = 5.0  # first backoff; doubles per retry
    env: tuple[tuple[str, str], ...] = ()  # extra environment for topsApp children
    term_grace_s: float = 10.0  # SIGTERM -> SIGKILL delay when stopping or timing out


@dataclass(frozen=True)
class PhaseEvent:
    """A phase attempt started or ended; the coordinator turns these into ledger rows."""

    pair_id: str
    phase: str
    attempt: int  # 1-based and numbered like logs/<phase>.<attempt>.log, across reruns too
    kind: str  # "start" | "end"
    time: float  # time.time()
    returncode: int | None = None  # on "end"; negative = killed by that signal
    ok: bool | None = None
    transient: bool | None = None  # on a failed "end": retried if attempts remain
    error: str | None = None  # one line
    log_path: str | None = None
    wall_s: float | None = None
    peak_rss_mb: float | None = None
    pid: int | None = None  # on "start": the topsApp process (its own process group)


@dataclass(frozen=True)
class PairResult:
    pair_id: str
    status: str  # "done" | "failed" | "interrupted"
    phases_done: tuple[str, ...]  # every phase finished in the folder, earlier runs included
    attempts: dict[str, int]  # phase -> attempts used in this call
    error: str | None  # one line, e.g. "geometry: topsApp killed by SIGKILL ... (3 attempts)"
    error_tail: str | None  # last lines of the failing log
    failed_phase: str | None
    bytes_before_clean: int | None
    bytes_after_clean: int | None
    phase_wall_s: dict[str, float] = field(default_factory=dict)


class PhaseGate(Protocol):
    """The scheduler's memory budget."""

    def acquire(self, pair_id: str, phase: Phase) -> None: ...  # blocks; raises Interrupted

    def release(self, pair_id: str, phase: Phase) -> None: ...
