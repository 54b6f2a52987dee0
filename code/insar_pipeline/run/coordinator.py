"""The coordinator of one `run`: plan from checkpoints, provision, prepare, dispatch, summarize.

It lives in the main thread and is the ledger's only writer: executors hand it `PhaseEvent`s and
`PairResult`s through `Executor.poll`, and it turns them into ledger rows, log lines (one per
phase start/end, with pair and phase) and progress.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from insar_pipeline.errors import Interrupted, PipelineError
from insar_pipeline.georeuse.link import clean_holding
from insar_pipeline.georeuse.plan import topo_phase
from insar_pipeline.inputs.config import Settings
from insar_pipeline.ledger.reconcile import reconcile
from insar_pipeline.ledger.store import Ledger
from insar_pipeline.report.text import format_duration, text_table
from insar_pipeline.run.budget import (
    Machine,
    MemoryBudget,
    Parallelism,
    phase_weights,
    plan_parallelism,
)
from insar_pipeline.run.dispatch import (
    DispatchQueue,
    PairPlan,
    dispatch_order,
    exit_code_of,
    plan_pair,
)
from insar_pipeline.run.geometry import GeometrySharing
from insar_pipeline.run.progress import Progress
from insar_pipeline.run.signals import StopRequest
from insar_pipeline.topsapp.clean import clean_pair
from insar_pipeline.topsapp.steps import remaining_phases

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often the coordinator wakes without news (signals, progress lines)


@dataclass(frozen=True)
class Provision:
    """What provisioning gives the pairs: an orbit per scene (or why not), a DEM per pair."""

    orbit_files: Mapping[str, Path]
    orbit_failures: Mapping[str, str]
    dems: Mapping[str, Path]


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


@dataclass
class Coordinator:
    """One run's coordinator (see the module docstring)."""

    settings: Settings
    pairs: Sequence[Any]
    phases: Sequence[Any]
    machine: Machine
    ledger: Ledger
    stop: StopRequest
    progress: Progress
    write_report: bool = True
    run_id: int = 0
    started: float = field(default_factory=time.monotonic)
    outcome: dict[str, str] = field(default_factory=dict)  # pair id -> done|failed|pending
    errors: dict[str, str] = field(default_factory=dict)
    downloads: list[Any] = field(default_factory=list)  # appended from provisioning threads
    # Whether a queued pair may start now; a pair held back stays queued, keeping its place
    # (geometry reuse holds a pair at topo until a donor's geometry exists).
    is_ready: Callable[[str], bool] = lambda pair_id: True
    geometry: GeometrySharing | None = None
    queued: DispatchQueue | None = None
    jobs: dict[str, Any] = field(default_factory=dict)  # pair id -> its prepared job
    # Finished per checkpoints but not per ledger (killed before the result): never cleaned.
    unrecorded: list[str] = field(default_factory=list)

    def execute(
        self, provision: Callable, prepare: Callable, make_executor: Callable
    ) -> RunSummary:
        plans = self._plan()
        todo = dispatch_order(plans)
        parallelism = plan_parallelism(
            self.machine,
            self.settings.workers,
            self.settings.memory_per_worker_gb,
            self.settings.memory_reserve_gb,
            pairs_to_run=len(todo),
        )
        self.run_id = self.ledger.start_run(
            workers=parallelism.workers,
            omp_threads=parallelism.omp_threads,
            budget_gb=parallelism.budget_gb,
            pairs_total=len(plans),
            executor=self.settings.executor,
        )
        status, exit_code = "failed", 1
        try:
            jobs = self._prepare(todo, provision, prepare, parallelism) if todo else []
            self._clean_unrecorded(hold=bool(jobs) and self.settings.geometry_reuse)
            self.geometry = GeometrySharing(self.settings, self.ledger, self.phases)
            jobs = self.geometry.plan(self.pairs, jobs)
            self.is_ready = self.geometry.is_ready
            log.info(
                "%d pairs: %d done before, %d to run on %d workers x %d threads, %.1f GB budget",
                len(plans),
                len(plans) - len(todo),
                len(todo),
                parallelism.workers,
                parallelism.omp_threads,
                parallelism.budget_gb,
            )
            self._dispatch(jobs, make_executor, parallelism)
            summary = self._summary()
            status = "interrupted" if self.stop.requested else "finished"
            exit_code = summary.exit_code
        except Interrupted:
            status, exit_code = "interrupted", 130
            raise
        except PipelineError as err:
            status, exit_code = "failed", err.exit_code
            raise
        finally:
            self.ledger.end_run(self.run_id, status, exit_code)
        print(self._summary_text(summary), file=sys.stdout, flush=True)
        report = self._report() if self.write_report else None
        return RunSummary(**{**summary.__dict__, "report": report})

    def _plan(self) -> list[PairPlan]:
        plans = [
            plan_pair(
                pair.id,
                index,
                self.phases,
                remaining_phases(self.settings.run_dir(pair.id), self.phases),
            )
            for index, pair in enumerate(self.pairs)
        ]
        self.ledger.register_pairs(
            [(p.id, p.reference.name, p.secondary.name, p.line) for p in self.pairs],
            phases_total=len(self.phases),
            unlist_others=not self.settings.only,
        )
        recorded = {row.pair_id: row.status for row in self.ledger.pairs(listed_only=False)}
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

    def _prepare(
        self,
        todo: Sequence[PairPlan],
        provision: Callable,
        prepare: Callable,
        parallelism: Parallelism,
    ) -> list[Any]:
        by_id = {pair.id: pair for pair in self.pairs}
        wanted = [by_id[plan.pair_id] for plan in todo]
        self.progress.downloads_begin()
        try:
            provided = provision(self.settings, wanted, self._on_download)
        finally:
            self.progress.downloads_end()
            self._flush_downloads()
        jobs = []
        for pair in wanted:
            missing = [p.name for p in pair.products if p.name not in provided.orbit_files]
            if missing:
                reason = "; ".join(
                    f"no orbit for {name}: {provided.orbit_failures.get(name, 'not found')}"
                    for name in missing
                )
                self._fail_before_start(pair.id, reason)
                continue
            orbits = {p.name: provided.orbit_files[p.name] for p in pair.products}
            jobs.append(
                prepare(
                    self.settings, pair, orbits, provided.dems[pair.id], parallelism.omp_threads
                )
            )
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

    def _on_download(self, download: Any) -> None:
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

    def _dispatch(self, jobs: list[Any], make_executor: Callable, parallelism: Parallelism) -> None:
        weights = phase_weights(
            [p.name for p in self.phases],
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
        executor = make_executor(self.settings, parallelism, gate)
        self.stop.graceful = True
        cancelled = False
        try:
            while (len(waiting) and not self.stop.requested) or executor.active:
                while not self.stop.requested and executor.active < executor.slots:
                    job = waiting.pop_ready(self.is_ready)
                    if job is None:
                        break
                    executor.submit(self.geometry.job_for(job) if self.geometry else job)
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
        finally:
            executor.shutdown()
            # Nothing left to stop gracefully: a Ctrl-C during the summary or report is plain.
            self.stop.graceful = False

    def _handle(self, message: Any) -> None:
        if hasattr(message, "kind"):
            self.ledger.record_event(self.run_id, message)
            _log_event(message, self.progress.phase_level)
            self._track_child(message)
            self.progress.phase_event(message)
            if self.geometry is not None:
                self.geometry.on_event(message)
            return
        if message.status == "waiting":
            self._park(message)
            return
        self.ledger.record_result(self.run_id, message)
        if self.geometry is not None:  # after the result: it may clean this pair again
            self.geometry.on_result(message)
        state = {"done": "done", "failed": "failed"}.get(message.status, "pending")
        self.outcome[message.pair_id] = state
        if state == "failed":
            self.errors[message.pair_id] = message.error or "failed"
            log.error("failed: %s", message.error, extra={"pair": message.pair_id})
        else:
            log.info(
                "%s",
                "done" if state == "done" else "stopped; a rerun resumes it",
                extra={"pair": message.pair_id},
            )
        self.progress.pair_result(message)

    def _park(self, result: Any) -> None:
        """A pair stopped before topo to wait for a donor's geometry: queue it again."""
        if self.geometry is not None:
            self.geometry.on_result(result)
        done = {"phases_done": result.phases_done} if result.phases_done else {}
        self.ledger.set_pair(result.pair_id, status="pending", phase=None, **done)
        self.progress.pair_result(result)
        log.info("waits for the geometry of its reference", extra={"pair": result.pair_id})
        if self.queued is not None:
            self.queued.requeue(self.jobs[result.pair_id])

    def _track_child(self, event: Any) -> None:
        # topsApp process groups, for a second Ctrl-C that must not leave them running.
        pid = getattr(event, "pid", None)
        if event.kind == "start" and pid:
            self.stop.process_groups[event.pair_id] = pid
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
        )

    def _summary_text(self, summary: RunSummary) -> str:
        rows = self.ledger.pairs(listed_only=False)
        wanted = set(self.outcome)
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
        totals = (
            f"{len(summary.done)} done, {len(summary.failed)} failed, {len(summary.pending)} "
            f"pending of {len(wanted)} pairs in {format_duration(summary.wall_s)}"
        )
        if summary.pending:
            totals += " (interrupted: run the same command again to resume)"
        geometry = self.geometry.summary_line() if self.geometry else None
        return f"{table}\n{totals}" + (f"\n{geometry}" if geometry else "")

    def _report(self) -> Path | None:
        from insar_pipeline.report.html import write_report

        try:
            return write_report(self.settings)
        except (OSError, RuntimeError, ValueError, PipelineError) as err:
            log.error("could not write the report: %s", err)  # noqa: TRY400 (the run stands)
            return None


def _log_event(event: Any, level: int) -> None:
    """One line per phase start/end (the runner itself warns about failures and retries)."""
    extra = {"pair": event.pair_id, "phase": event.phase, "attempt": event.attempt}
    if event.kind == "start":
        log.log(level, "start (attempt %d)", event.attempt, extra=extra)
    elif event.ok:
        log.log(level, "done in %s", format_duration(event.wall_s), extra=extra)
    else:
        kind = "transient" if event.transient else "fatal"
        log.log(level, "attempt %d failed (%s): %s", event.attempt, kind, event.error, extra=extra)
