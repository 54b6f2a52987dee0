"""The coordinator of one `run`: the stages after the lock, in the order the driver calls them.

`start` plans from checkpoints and records the run (and the pairs preflight excluded); then
`provision`, `prepare`, `dispatch`, `summarise` and `report`. `recorded` brackets the stages: the
run's ledger row gets its final status and exit code whatever happens, and an unexpected error
leaves no pair "running". The coordinator lives in the main thread and is the ledger's only
writer: executors hand it `PhaseEvent`s and `PairResult`s (`topsapp.job.Message`) through
`Executor.poll`, and it turns them into ledger rows, log lines (one per phase start/end, with
pair and phase) and progress.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from insar_pipeline.download import Download
from insar_pipeline.errors import (
    EXIT_INTERNAL,
    InputError,
    InternalError,
    Interrupted,
    PipelineError,
)
from insar_pipeline.georeuse.link import clean_holding
from insar_pipeline.georeuse.plan import topo_phase
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.pairs import Pair
from insar_pipeline.ledger.reconcile import reconcile
from insar_pipeline.ledger.store import Ledger, PairRow
from insar_pipeline.pair.decisions import without_esd_line
from insar_pipeline.report.text import format_duration, text_table
from insar_pipeline.run.budget import (
    MemoryBudget,
    Parallelism,
    phase_weights,
)
from insar_pipeline.run.dispatch import (
    DispatchQueue,
    PairPlan,
    dispatch_order,
    exit_code_of,
    plan_pair,
)
from insar_pipeline.run.geometry import GeometrySharing
from insar_pipeline.run.local import Executor
from insar_pipeline.run.preflight import Preflight
from insar_pipeline.run.progress import Progress
from insar_pipeline.run.signals import StopRequest
from insar_pipeline.topsapp.clean import clean_pair
from insar_pipeline.topsapp.job import Message, PairJob, PairResult, PhaseEvent
from insar_pipeline.topsapp.steps import Phase

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often the coordinator wakes without news (signals, progress lines)
SUMMARY_TABLE_MAX = 200  # pairs in the end-of-run table; beyond, failed and unfinished ones
EXCLUDED = "excluded before start"  # the ledger error of a pair preflight excluded begins so
INTERNAL_STOP = "stopped by an internal error of the run (see data/runs/pipeline.log)"


@dataclass(frozen=True)
class Provision:
    """What provisioning gives the pairs: an orbit per scene (or why not), a DEM per pair."""

    orbit_files: Mapping[str, Path]
    orbit_failures: Mapping[str, str]
    dems: Mapping[str, Path]


# The stages tests (and benchmarks) may swap: constructor arguments of the coordinator.
ProvisionFn = Callable[[Settings, Sequence[Pair], Callable[[Download], None]], Provision]
PrepareFn = Callable[[Settings, Pair, Mapping[str, Path], Path, int], PairJob]
MakeExecutor = Callable[[Settings, Parallelism, MemoryBudget], Executor]


@dataclass(frozen=True)
class RunSummary:
    """The outcome of one `run` (pairs of this run only)."""

    run_id: int
    exit_code: int
    done: tuple[str, ...]
    failed: Mapping[str, str]  # pair id -> one-line reason
    pending: tuple[str, ...]  # not finished because the run was interrupted
    wall_s: float
    report: Path | None = None
    topo_runs: int = 0  # geometry reuse: topo computed in this run...
    topo_avoided: int = 0  # ...and taken from a donor instead
    topo_saved_s: float = 0.0  # estimate: the donors' topo time, once per taker
    excluded: Mapping[str, str] = field(default_factory=dict)  # by preflight: pair id -> reason


@dataclass
class Coordinator:
    """One run's coordinator (see the module docstring)."""

    settings: Settings
    checked: Preflight
    ledger: Ledger
    stop: StopRequest
    provision_inputs: ProvisionFn
    prepare_job: PrepareFn
    make_executor: MakeExecutor
    progress: Progress = field(default_factory=Progress)
    write_report: bool = True
    run_id: int = 0
    started: float = field(default_factory=time.monotonic)
    outcome: dict[str, str] = field(default_factory=dict)  # pair id -> done|failed|pending
    errors: dict[str, str] = field(default_factory=dict)
    downloads: list[Download] = field(default_factory=list)  # appended by provisioning threads
    todo: list[PairPlan] = field(default_factory=list)  # pairs to run, in dispatch order
    # Whether a queued pair may start now; a pair held back stays queued, keeping its place
    # (geometry reuse holds a pair at topo until a donor's geometry exists).
    is_ready: Callable[[str], bool] = lambda pair_id: True
    geometry: GeometrySharing | None = None
    queued: DispatchQueue | None = None
    jobs: dict[str, PairJob] = field(default_factory=dict)  # pair id -> its prepared job
    # Finished per checkpoints but not per ledger (killed before the result): never cleaned.
    unrecorded: list[str] = field(default_factory=list)
    stage: str = "start"  # the stage running now, named when an unexpected error stops it

    @property
    def pairs(self) -> tuple[Pair, ...]:
        return self.checked.pairs

    @property
    def phases(self) -> tuple[Phase, ...]:
        return self.checked.phases

    # ---- the stages ------------------------------------------------------------------------

    def start(self) -> None:
        """Plan from checkpoints, record the run, fail the pairs preflight excluded."""
        plans = self._plan()
        self.todo = [plan for plan in dispatch_order(plans) if plan.pair_id not in self.excluded]
        parallelism = self.checked.parallelism  # preflight's, for these same pairs
        self.run_id = self.ledger.start_run(
            workers=parallelism.workers,
            omp_threads=parallelism.omp_threads,
            budget_gb=parallelism.budget_gb,
            pairs_total=len(plans),
            executor=self.settings.executor,
        )
        for pair_id, reason in self.excluded.items():
            self._fail_before_start(pair_id, f"{EXCLUDED}: {reason}")

    @property
    def excluded(self) -> Mapping[str, str]:
        return self.checked.excluded

    @contextmanager
    def recorded(self) -> Iterator[None]:
        """The run's final status and exit code in the ledger, whatever ends the stages."""
        status, exit_code = "failed", 1
        try:
            yield
            status = "interrupted" if self.stop.requested else "finished"
            exit_code = self._summary().exit_code
        except Interrupted:
            status, exit_code = "interrupted", 130
            raise
        except PipelineError as err:
            status, exit_code = "failed", err.exit_code
            raise
        except Exception as err:
            status, exit_code = "failed", EXIT_INTERNAL
            self._abandon_running()
            raise InternalError(f"{self.stage} failed: {type(err).__name__}: {err}") from err
        finally:
            self._end_run(status, exit_code)

    def provision(self) -> Provision | None:
        """Orbits and DEMs of the pairs to run, once (None when nothing is left to run)."""
        self.stage = "provisioning (orbits, DEM)"
        if not self.todo:
            return None
        by_id = {pair.id: pair for pair in self.pairs}
        self.progress.downloads_begin()
        try:
            return self.provision_inputs(
                self.settings, [by_id[plan.pair_id] for plan in self.todo], self._on_download
            )
        finally:
            self.progress.downloads_end()
            self._flush_downloads()

    def prepare(self, provided: Provision | None) -> list[PairJob]:
        """Each pair's folder and job; finished-but-unrecorded pairs cleaned; geometry planned."""
        self.stage = "preparing the pair folders"
        jobs = self._prepare(provided) if provided is not None else []
        self._clean_unrecorded(hold=bool(jobs) and self.settings.geometry_reuse)
        self.geometry = GeometrySharing(self.settings, self.ledger, self.phases)
        jobs = self.geometry.plan(self.pairs, jobs)
        self.is_ready = self.geometry.is_ready
        return jobs

    def dispatch(self, jobs: list[PairJob]) -> None:
        """Run the jobs on the executor until each has reported its result (or a stop)."""
        self.stage = "running the pairs"
        parallelism = self.checked.parallelism
        log.info(
            "%d pairs: %d done before, %d excluded, %d to run on %d workers x %d threads, "
            "%.1f GB budget",
            len(self.pairs),
            sum(state == "done" for state in self.outcome.values()),
            len(self.excluded),
            len(jobs),
            parallelism.workers,
            parallelism.omp_threads,
            parallelism.budget_gb,
        )
        self._dispatch(jobs, parallelism)

    def summarise(self) -> RunSummary:
        """The run's outcome, printed as a table with totals."""
        self.stage = "the summary"
        summary = self._summary()
        print(self._summary_text(summary), file=sys.stdout, flush=True)
        return summary

    def timeseries(self) -> None:
        """TIMESERIES=true: the stacks and MintPy after the pairs (a failure leaves the run)."""
        if not self.settings.timeseries or self.stop.requested:
            return
        self.stage = "the time series"
        from insar_pipeline.timeseries.command import run_timeseries, summary_text

        try:
            for result in run_timeseries(self.settings):
                print(summary_text(result), end="", file=sys.stdout, flush=True)
        except (OSError, RuntimeError, ValueError, PipelineError) as err:
            log.error("time series not written: %s", err)  # noqa: TRY400 (the run stands)

    def report(self, summary: RunSummary) -> RunSummary:
        """report.html (unless the driver was asked not to write it)."""
        report = self._report() if self.write_report else None
        return RunSummary(**{**summary.__dict__, "report": report})

    # ---- the work behind the stages ----------------------------------------------------------

    def _end_run(self, status: str, exit_code: int) -> None:
        try:
            self.ledger.end_run(self.run_id, status, exit_code)
        except sqlite3.Error as err:
            log.error("could not record the end of the run in the ledger: %s", err)  # noqa: TRY400

    def _abandon_running(self) -> None:
        """After an unexpected error: no pair of this run stays "running" in the ledger."""
        try:
            left = self.ledger.abandon_running(self.run_id, INTERNAL_STOP)
        except sqlite3.Error as err:
            log.error("could not update the ledger after the error: %s", err)  # noqa: TRY400
            return
        for pair_id in left:
            self.outcome[pair_id], self.errors[pair_id] = "failed", INTERNAL_STOP

    def _plan(self) -> list[PairPlan]:
        plans = [
            plan_pair(
                pair.id,
                index,
                self.phases,
                self.checked.left[pair.id],  # from the checkpoints, read by preflight
            )
            for index, pair in enumerate(self.pairs)
        ]
        self.ledger.register_pairs(
            [(p.id, p.reference.name, p.secondary.name, p.line) for p in self.pairs],
            phases_total=len(self.phases),
            unlist_others=not self.settings.only,
        )
        recorded = self.ledger.pair_statuses()
        reconcile(
            self.ledger,
            {plan.pair_id: plan.phases_done for plan in plans},
            [phase.name for phase in self.phases],
        )
        for plan in plans:
            if plan.finished:
                self.outcome[plan.pair_id] = "done"
                if recorded.get(plan.pair_id) != "done":
                    self.unrecorded.append(plan.pair_id)
        return plans

    def _prepare(self, provided: Provision) -> list[PairJob]:
        by_id = {pair.id: pair for pair in self.pairs}
        omp_threads = self.checked.parallelism.omp_threads
        jobs = []
        for pair in (by_id[plan.pair_id] for plan in self.todo):
            missing = [p.name for p in pair.products if p.name not in provided.orbit_files]
            if missing:
                reason = "; ".join(
                    f"no orbit for {name}: {provided.orbit_failures.get(name, 'not found')}"
                    for name in missing
                )
                self._fail_before_start(pair.id, reason)
                continue
            orbits = {p.name: provided.orbit_files[p.name] for p in pair.products}
            try:
                job = self.prepare_job(
                    self.settings, pair, orbits, provided.dems[pair.id], omp_threads
                )
            except InputError as err:  # this pair only (preflight found the known cases)
                self._fail_before_start(pair.id, str(err))
                continue
            jobs.append(job)
        return jobs

    def _clean_unrecorded(self, hold: bool) -> None:
        """Clean the pairs that finished after the ledger last heard of them, as the runner
        would have; their geometry is held (`hold`) while geometry reuse may still link it,
        and `GeometrySharing.plan` releases it when no pair of this run needs it."""
        hold = hold and topo_phase(self.phases) is not None
        for pair_id in self.unrecorded:
            run_dir = self.settings.run_dir(pair_id).resolve()
            try:
                cleaned = (clean_holding if hold else clean_pair)(run_dir, self.settings.clean)
            except (OSError, PipelineError) as err:
                log.warning("finished, but cleaning failed: %s", err, extra={"pair": pair_id})
                continue
            self.ledger.set_pair(
                pair_id,
                bytes_before_clean=cleaned.bytes_before,
                bytes_after_clean=cleaned.bytes_after,
            )
            log.info("finished before its result was recorded: cleaned", extra={"pair": pair_id})

    def _on_download(self, download: Download) -> None:
        # Provisioning may call this from its download threads: queue it for the main thread.
        self.downloads.append(download)
        self.progress.download(download)

    def _flush_downloads(self) -> None:
        while self.downloads:
            self.ledger.record_download(self.run_id, self.downloads.pop(0))

    def _fail_before_start(self, pair_id: str, reason: str) -> None:
        log.error("cannot start: %s", reason, extra={"pair": pair_id})
        self.ledger.fail_pair(self.run_id, pair_id, reason)
        self.outcome[pair_id], self.errors[pair_id] = "failed", reason

    def _dispatch(self, jobs: list[PairJob], parallelism: Parallelism) -> None:
        weights = phase_weights(
            [p.name for p in self.checked.phases],
            self.settings.range_looks,
            self.settings.azimuth_looks,
            parallelism.budget_gb,
        )
        gate = MemoryBudget(parallelism.budget_gb, weights)
        waiting = DispatchQueue(jobs, key=lambda job: job.pair_id)
        self.queued, self.jobs = waiting, {job.pair_id: job for job in jobs}
        for job in jobs:
            self.outcome[job.pair_id] = "pending"
        self.ledger.mark_pending([job.pair_id for job in jobs])
        self.progress.pairs_begin(
            len(self.pairs),
            done=sum(v == "done" for v in self.outcome.values()),
            failed=sum(v == "failed" for v in self.outcome.values()),
        )
        if not jobs:
            return
        executor = self.make_executor(self.settings, parallelism, gate)
        self.stop.graceful = True
        cancelled = False
        try:
            while (len(waiting) and not self.stop.requested) or executor.active:
                while not self.stop.requested and executor.active < executor.slots:
                    ready: PairJob | None = waiting.pop_ready(self.is_ready)
                    if ready is None:
                        break
                    executor.submit(self.geometry.job_for(ready) if self.geometry else ready)
                if self.stop.requested and not cancelled:
                    log.warning(
                        "%s: stopping; running phases are being terminated (press Ctrl-C "
                        "again to exit at once)",
                        self.stop.requested,
                    )
                    executor.cancel()
                    cancelled = True
                for message in executor.poll(POLL_S):
                    self._handle(message)
                self.progress.tick()
        except (PipelineError, KeyboardInterrupt):
            raise
        except Exception:
            # A bug or a failing ledger in this thread: stop the pairs rather than orphan them.
            executor.cancel()
            raise
        finally:
            executor.shutdown()
            # Nothing left to stop gracefully: a Ctrl-C during the summary or report is plain.
            self.stop.graceful = False

    def _handle(self, message: Message) -> None:
        match message:
            case PhaseEvent():
                self._on_event(message)
            case PairResult(status="waiting"):
                self._park(message)
            case PairResult():
                self._on_result(message)

    def _on_event(self, event: PhaseEvent) -> None:
        self.ledger.record_event(self.run_id, event)
        _log_event(event, self.progress.phase_level)
        self._track_child(event)
        self.progress.phase_event(event)
        if self.geometry is not None:
            self.geometry.on_event(event)

    def _on_result(self, result: PairResult) -> None:
        self.ledger.record_result(self.run_id, result)
        if self.geometry is not None:  # after the result: it may clean this pair again
            self.geometry.on_result(result)
        state = {"done": "done", "failed": "failed"}.get(result.status, "pending")
        self.outcome[result.pair_id] = state
        if state == "failed":
            self.errors[result.pair_id] = result.error or "failed"
            log.error("failed: %s", result.error, extra={"pair": result.pair_id})
        else:
            log.info(
                "%s",
                "done" if state == "done" else "stopped; a rerun resumes it",
                extra={"pair": result.pair_id},
            )
        self.progress.pair_result(result)

    def _park(self, result: PairResult) -> None:
        """A pair stopped before topo to wait for a donor's geometry: queue it again."""
        if self.geometry is not None:
            self.geometry.on_result(result)
        done = {"phases_done": result.phases_done} if result.phases_done else {}
        self.ledger.set_pair(result.pair_id, status="pending", phase=None, **done)
        self.progress.pair_result(result)
        log.info("waits for the geometry of its reference", extra={"pair": result.pair_id})
        if self.queued is not None:
            self.queued.requeue(self.jobs[result.pair_id])

    def _track_child(self, event: PhaseEvent) -> None:
        # topsApp process groups, for a second Ctrl-C that must not leave them running.
        if event.kind == "start" and event.pid:
            self.stop.process_groups[event.pair_id] = event.pid
        elif event.kind == "end":
            self.stop.process_groups.pop(event.pair_id, None)

    def _summary(self) -> RunSummary:
        done = tuple(pid for pid, state in self.outcome.items() if state == "done")
        pending = tuple(pid for pid, state in self.outcome.items() if state == "pending")
        failed = {
            pid: self.errors.get(pid, "failed") for pid, s in self.outcome.items() if s == "failed"
        }
        interrupted = bool(self.stop.requested) and bool(pending)
        runs, avoided, saved = self.geometry.figures() if self.geometry else (0, 0, 0.0)
        return RunSummary(
            run_id=self.run_id,
            exit_code=exit_code_of(len(done), len(failed), interrupted),
            done=done,
            failed=failed,
            pending=pending,
            wall_s=time.monotonic() - self.started,
            topo_runs=runs,
            topo_avoided=avoided,
            topo_saved_s=saved,
            excluded=dict(self.excluded),
        )

    def _summary_text(self, summary: RunSummary) -> str:
        wanted = set(self.outcome)
        rows: Iterable[PairRow] = self.ledger.iter_pairs(listed_only=False)
        hidden = ""
        if len(wanted) > SUMMARY_TABLE_MAX:  # a large batch: the pairs that need attention
            rows = [
                *self.ledger.iter_pairs(False, ("failed",), SUMMARY_TABLE_MAX // 2),
                *self.ledger.iter_pairs(False, ("pending", "running"), SUMMARY_TABLE_MAX // 2),
            ]
            listed = sum(row.pair_id in wanted for row in rows)
            hidden = f"\n({len(wanted) - listed} more pairs not listed: `status --all` lists them)"
        table = text_table(
            ("pair", "state", "phases", "wall", "error"),
            [
                (
                    row.pair_id,
                    row.status,
                    f"{len(row.phases_done)}/{row.phases_total or '?'}",
                    format_duration(row.wall_s),
                    row.error or "",
                )
                for row in rows
                if row.pair_id in wanted
            ],
        )
        table += hidden
        totals = (
            f"{len(summary.done)} done, {len(summary.failed)} failed, {len(summary.pending)} "
            f"pending of {len(wanted)} pairs in {format_duration(summary.wall_s)}"
        )
        if summary.pending:
            totals += " (interrupted: run the same command again to resume)"
        if summary.excluded:
            totals += f"; {len(summary.excluded)} excluded before start (see the error column)"
        geometry = self.geometry.summary_line() if self.geometry else None
        without_esd = [pair_id for pair_id in self.ledger.without_esd() if pair_id in wanted]
        notes = [geometry] if geometry else []
        if without_esd:
            notes.append(without_esd_line(without_esd))
        return "\n".join([table, totals, *notes])

    def _report(self) -> Path | None:
        from insar_pipeline.report.html import write_report

        try:
            return write_report(self.settings)
        except (OSError, RuntimeError, ValueError, PipelineError) as err:
            log.error("could not write the report: %s", err)  # noqa: TRY400 (the run stands)
            return None


def _log_event(event: PhaseEvent, level: int) -> None:
    """One line per phase start/end (the runner itself warns about failures and retries)."""
    extra = {"pair": event.pair_id, "phase": event.phase, "attempt": event.attempt}
    if event.kind == "start":
        log.log(level, "start (attempt %d)", event.attempt, extra=extra)
    elif event.ok:
        log.log(level, "done in %s", format_duration(event.wall_s), extra=extra)
    else:
        kind = "transient" if event.transient else "fatal"
        log.log(level, "attempt %d failed (%s): %s", event.attempt, kind, event.error, extra=extra)
