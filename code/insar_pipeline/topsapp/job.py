"""The seam between the one-pair runner and the schedulers (local threads, Dask workers).

Plain picklable records: a job goes to wherever the pair runs, events and the result come back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Literal, Protocol, TypeAlias

from insar_pipeline.topsapp.steps import Phase

LOGS_DIR = "logs"  # in the pair folder: logs/<phase>.<attempt>.log

PhaseKind: TypeAlias = Literal["start", "end"]
CleanLevel: TypeAlias = Literal["none", "standard", "nuclear"]


class PairStatus(StrEnum):
    """A pair's status: in the ledger (pending, running, done, failed) and as a runner's result
    (done, failed, interrupted, waiting). Written once here; compares equal to its value."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # stopped (a signal, a time-out of the run): pending again
    WAITING = "waiting"  # stopped before topo for a donor's geometry (georeuse): resubmitted


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
    clean_level: CleanLevel  # applied after success
    retry_backoff_s: float = 5.0  # first backoff; doubles per retry
    env: tuple[tuple[str, str], ...] = ()  # extra environment for topsApp children
    term_grace_s: float = 10.0  # SIGTERM -> SIGKILL delay when stopping or timing out
    # Geometry reuse (georeuse): folders of pairs whose finished geometry this pair may take
    # instead of running topo, tried in order, each checked by the guard first; with
    # wait_for_geometry and no donor, stop before topo (status "waiting") for the scheduler to
    # resubmit once a donor's geometry exists; keep_geometry keeps geom_reference/IW* at
    # cleaning because other pairs may still take it.
    geometry_donors: tuple[Path, ...] = ()
    wait_for_geometry: bool = False
    keep_geometry: bool = False
    # ESD=auto: the pair's topsApp.xml without ESD (pair/decisions.py), which the runner
    # switches to when coregistration fails for lack of coherent burst overlaps; None when
    # ESD is not the pair's to drop (ESD=true or false, or already dropped).
    no_esd_xml: bytes | None = None


@dataclass(frozen=True)
class PhaseEvent:
    """A phase attempt started or ended; the coordinator turns these into ledger rows."""

    pair_id: str
    phase: str
    attempt: int  # 1-based and numbered like logs/<phase>.<attempt>.log, across reruns too
    kind: PhaseKind
    time: float  # time.time()
    returncode: int | None = None  # on "end"; negative = killed by that signal
    ok: bool | None = None
    transient: bool | None = None  # on a failed "end": retried if attempts remain
    error: str | None = None  # one line
    log_path: str | None = None
    wall_s: float | None = None
    peak_rss_mb: float | None = None
    pid: int | None = None  # on "start": the topsApp process (its own process group)
    reused_from: str | None = None  # on "end": done by taking this pair's geometry (no topsApp)


@dataclass(frozen=True)
class PairResult:
    pair_id: str
    status: PairStatus  # done | failed | interrupted | waiting (stopped before topo, see job)
    phases_done: tuple[str, ...]  # every phase finished in the folder, earlier runs included
    attempts: dict[str, int]  # phase -> attempts used in this call
    error: str | None  # one line, e.g. "geometry: topsApp killed by SIGKILL ... (3 attempts)"
    error_tail: str | None  # last lines of the failing log
    failed_phase: str | None
    bytes_before_clean: int | None
    bytes_after_clean: int | None
    phase_wall_s: dict[str, float] = field(default_factory=dict)
    geometry_from: str | None = None  # the pair whose geometry this one took (hard links)
    without_esd: bool = False  # coregistered without ESD by the pair's own decision (ESD=auto)


# What an executor hands the coordinator: events while a pair runs, then its one result.
Message = PhaseEvent | PairResult


class PhaseGate(Protocol):
    """The scheduler's memory budget."""

    def acquire(self, pair_id: str, phase: Phase) -> None: ...  # blocks; raises Interrupted

    def release(self, pair_id: str, phase: Phase) -> None: ...


def next_log_number(run_dir: Path, phase: str) -> int:
    """1 + the highest N of logs/<phase>.N.log, so a rerun keeps earlier logs."""
    numbers = [0]
    for path in (run_dir / LOGS_DIR).glob(f"{phase}.*.log"):
        middle = path.name[len(phase) + 1 : -len(".log")]
        if middle.isdigit():
            numbers.append(int(middle))
    return max(numbers) + 1
