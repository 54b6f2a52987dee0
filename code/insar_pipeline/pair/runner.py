"""Run one pair through topsApp, phase by phase (SPEC.md section 6).

`run_pair` runs anywhere (a coordinator thread or a Dask worker): each remaining phase is one
topsApp child process, retried with backoff while failures look transient, checked for ISCE's
silent failures, and the pair is cleaned when it is done. With `ESD=auto`, a coregistration
that fails for lack of coherent burst overlaps is run again from `subsetoverlaps` without ESD, the
pair's own decision (pair/decisions.py), not a retry. It holds no coordinator state: progress
leaves through `on_event`, the memory budget comes in through `gate`, and it never raises for a
pair's failure. The job and result types live in `pair_job`, `prepare_pair` (run by the
coordinator first) in `pair_prepare`; both are importable from here.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone

from insar_pipeline.errors import InputError, Interrupted
from insar_pipeline.georeuse.key import TOPO
from insar_pipeline.georeuse.link import clean_holding, reused_from, take_geometry
from insar_pipeline.pair.decisions import (
    DECISIONS_NAME,
    WITHOUT_ESD_NOTE,
    PairDecisions,
    read_decisions,
    record_decisions,
)
from insar_pipeline.topsapp.checks import (
    ESD_COHERENCE,
    Verdict,
    classify,
    missing_outputs,
    read_log,
    tail,
)
from insar_pipeline.topsapp.child import run_child
from insar_pipeline.topsapp.clean import clean_pair
from insar_pipeline.topsapp.job import (
    LOGS_DIR,
    PairJob,
    PairResult,
    PairStatus,
    PhaseEvent,
    PhaseGate,
    next_log_number,
)
from insar_pipeline.topsapp.steps import (
    STEPS,
    Phase,
    checkpoint_paths,
    discard_checkpoints,
    previous_step,
    remaining_phases,
    validate_phase_table,
)
from insar_pipeline.topsapp.xml import (
    XML_NAME,
    RunFacts,
    read_properties,
    run_facts,
    store_if_changed,
)

log = logging.getLogger(__name__)

ESD_FIRST_STEP = "subsetoverlaps"  # where coregistration starts again without ESD
# What the ESD steps leave behind (ISCE2_CONTRACT.md section 6); `<reference>/overlaps` too.
ESD_FOLDERS = ("coarse_offsets", "coarse_coreg", "coarse_interferogram", "ESD")


def run_pair(
    job: PairJob,
    on_event: Callable[[PhaseEvent], None] = lambda event: None,
    gate: PhaseGate | None = None,
    stop: threading.Event | None = None,
) -> PairResult:
    """Run the pair's remaining phases, retrying transient failures; clean it when done."""
    run = _PairRun(job, on_event, gate, stop)
    problem = run.preflight()
    if problem:
        return run.result(PairStatus.FAILED, error=problem)
    for phase in remaining_phases(job.run_dir, job.phases):
        if TOPO in phase.steps():
            if job.wait_for_geometry and not job.geometry_donors and phase.first == TOPO:
                return run.result(PairStatus.WAITING)  # the scheduler resubmits it with a donor
            left = take_geometry(job, phase, on_event)
            if left is None:
                continue
            phase = left
        status, verdict, text = run.phase(phase)
        if status != PairStatus.DONE:
            count = run.attempts.get(phase.name, 0)
            error = "interrupted" if status == PairStatus.INTERRUPTED else verdict.reason
            summary = f"{phase.name}: {error} ({count} attempt{'s' * (count != 1)})"
            return run.result(status, error=summary, tail_text=text, failed_phase=phase.name)
    return run.result(PairStatus.DONE, cleaned=run.clean())


class _PairRun:
    """One call of run_pair: its environment, counters and the attempt loop."""

    def __init__(
        self,
        job: PairJob,
        on_event: Callable[[PhaseEvent], None],
        gate: PhaseGate | None,
        stop: threading.Event | None,
    ) -> None:
        self.job, self.on_event, self.gate, self.stop = job, on_event, gate, stop
        self.attempts: dict[str, int] = {}
        self.reruns: dict[str, int] = {}  # attempts that were not retries (ESD dropped)
        self.walls: dict[str, float] = {}
        self.env = {**os.environ, "OMP_NUM_THREADS": str(job.omp_threads), **dict(job.env)}
        self.argv: list[str] = []
        self.facts: RunFacts = run_facts({})  # ISCE's defaults until preflight reads the XML
        self.extra = {"pair": job.pair_id}

    def preflight(self) -> str | None:
        """What stops the pair before any topsApp runs, or None."""
        try:
            validate_phase_table(self.job.phases)
        except InputError as err:
            return str(err)
        xml = self.job.run_dir / XML_NAME
        if not xml.is_file():
            return f"{xml} is missing: prepare the pair first"
        self.facts = run_facts(read_properties(xml.read_bytes()))
        argv = shlex.split(self.job.topsapp)
        executable = shutil.which(argv[0], path=self.env.get("PATH")) if argv else None
        if executable is None:
            return f"topsApp command {self.job.topsapp!r} not found (TOPSAPP; is ISCE2 on PATH?)"
        self.argv = [executable, *argv[1:]]
        return None

    def phase(self, phase: Phase) -> tuple[PairStatus, Verdict, str]:
        """Attempts of one phase until done, fatal, out of retries or stopped.

        Returns (status, verdict of the last attempt, tail of its log).
        """
        number = next_log_number(self.job.run_dir, phase.name)
        while True:
            todo = remaining_phases(self.job.run_dir, [phase])
            if not todo:  # the last attempt was killed after writing its last checkpoint
                return PairStatus.DONE, Verdict(True), ""
            if not self._acquire(phase):
                return PairStatus.INTERRUPTED, Verdict(False), ""
            self.attempts[phase.name] = self.attempts.get(phase.name, 0) + 1
            try:
                verdict, text, stopped = self.attempt(phase, todo[0], number)
            finally:
                if self.gate is not None:
                    self.gate.release(self.job.pair_id, phase)
            if stopped:
                return PairStatus.INTERRUPTED, verdict, tail(text)
            if verdict.ok:
                return PairStatus.DONE, verdict, ""
            no_esd_xml = self._no_esd_xml(verdict, phase)
            if no_esd_xml is not None:
                self._drop_esd(phase, no_esd_xml)
                self.reruns[phase.name] = self.reruns.get(phase.name, 0) + 1
                number += 1
                continue  # at once, and not a retry: MAX_RETRIES is for transient failures
            retries = self.attempts[phase.name] - self.reruns.get(phase.name, 0)
            if not verdict.transient or retries > self.job.max_retries:
                return PairStatus.FAILED, verdict, tail(text)
            backoff = self.job.retry_backoff_s * 2 ** (retries - 1)
            log.info(
                "%s: retry %d of %d in %.3g s",
                phase.name,
                retries,
                self.job.max_retries,
                backoff,
                extra={**self.extra, "phase": phase.name},
            )
            if self._stopped_within(backoff):
                return PairStatus.INTERRUPTED, verdict, tail(text)
            number += 1

    def _no_esd_xml(self, verdict: Verdict, phase: Phase) -> bytes | None:
        """The XML to go on without ESD when that answers this failure (ESD=auto), else None."""
        if verdict.cause == ESD_COHERENCE and self.facts.do_esd and ESD_FIRST_STEP in phase.steps():
            return self.job.no_esd_xml
        return None

    def _drop_esd(self, phase: Phase, xml: bytes) -> None:
        """ESD=auto and no coherent overlap: coregister again from subsetoverlaps without ESD.

        Order matters for a kill at any point: the checkpoints go first (a rerun then redoes
        the ESD steps with the old XML and lands here again), then the decision (from then on
        `pair_settings` gives the no-ESD XML), then the XML itself.
        """
        run_dir = self.job.run_dir
        discard_checkpoints(run_dir, STEPS[STEPS.index(ESD_FIRST_STEP) :])
        for folder in (*ESD_FOLDERS, f"{self.facts.reference_dir}/overlaps"):
            shutil.rmtree(run_dir / folder, ignore_errors=True)
        shutil.rmtree(run_dir / "geom_reference" / "overlaps", ignore_errors=True)
        reason = self._esd_reason()
        record_decisions(run_dir, PairDecisions(esd_disabled=True, reason=reason))
        store_if_changed(run_dir / XML_NAME, xml)
        self.facts = run_facts(read_properties(xml))
        log.info(
            "%s: topsApp.xml now has do ESD False (%s)",
            phase.name,
            DECISIONS_NAME,
            extra={**self.extra, "phase": phase.name},
        )

    def _esd_reason(self) -> str:
        return (
            "ESD found no burst-overlap pixel with coherence above ESD_COHERENCE_THRESHOLD="
            f"{self.facts.esd_coherence_threshold:g} (ESD=auto)"
        )

    def _acquire(self, phase: Phase) -> bool:
        """Take the gate unless stopping; False means stop (nothing is held then)."""
        if self.stop is not None and self.stop.is_set():
            return False
        if self.gate is None:
            return True
        try:
            self.gate.acquire(self.job.pair_id, phase)
        except Interrupted:
            return False
        if self.stop is not None and self.stop.is_set():  # set while we waited for memory
            self.gate.release(self.job.pair_id, phase)
            return False
        return True

    def _stopped_within(self, seconds: float) -> bool:
        if self.stop is None:
            time.sleep(seconds)
            return False
        return self.stop.wait(seconds)

    def attempt(self, whole: Phase, phase: Phase, number: int) -> tuple[Verdict, str, bool]:
        """Run topsApp once for `phase` (`whole` trimmed to its unfinished steps).

        Returns (verdict, log text, stopped). Outputs are checked for the whole phase: a step
        finished by an earlier, killed attempt may have failed silently too.
        """
        job, name = self.job, phase.name
        log_path = job.run_dir / LOGS_DIR / f"{name}.{number}.log"
        shown = f"{LOGS_DIR}/{log_path.name}"
        event = PhaseEvent(job.pair_id, name, number, "start", time.time(), log_path=str(log_path))
        argv = [*self.argv, XML_NAME, f"--start={phase.first}", f"--end={phase.last}"]
        previous = previous_step(phase.first)
        if previous and not all(p.is_file() for p in checkpoint_paths(job.run_dir, previous)):
            self.on_event(event)
            verdict = Verdict(
                False, False, f"cannot start at {phase.first}: PICKLE/{previous}.xml is missing"
            )
            self._end(event, verdict)
            return verdict, "", False
        log.debug(
            "%s: topsApp --start=%s --end=%s (attempt %d)",
            name,
            phase.first,
            phase.last,
            number,
            extra={**self.extra, "phase": name},
        )
        header = (
            f"# insar-pipeline {datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}: "
            f"{shlex.join(argv)} (OMP_NUM_THREADS={job.omp_threads})\n"
        )
        try:
            ended = run_child(
                argv,
                cwd=job.run_dir,
                env=self.env,
                log_path=log_path,
                header=header,
                timeout_s=job.phase_timeout_s,
                stop=self.stop,
                term_grace_s=job.term_grace_s,
                on_start=lambda pid: self.on_event(replace(event, pid=pid, time=time.time())),
            )
        except OSError as err:
            verdict = Verdict(False, False, f"cannot start topsApp: {err}")
            self._end(event, verdict)
            return verdict, "", False
        self.walls[name] = self.walls.get(name, 0.0) + ended.wall_s
        text = read_log(log_path)
        if ended.stopped:
            verdict = Verdict(False, False, "interrupted")
        else:
            missing = self._missing(whole) if ended.returncode == 0 else ()
            verdict = classify(
                ended.returncode,
                text,
                missing,
                timed_out=ended.timed_out,
                timeout_s=job.phase_timeout_s,
                log_name=shown,
                steps=whole.steps(),
                facts=self.facts,
            )
            if ended.returncode == 0 and not verdict.ok:
                discard_checkpoints(job.run_dir, whole.steps())  # a rerun must redo them
            if self._no_esd_xml(verdict, whole) is not None:  # not the user's to fix: say so
                verdict = replace(
                    verdict,
                    reason=f"{self._esd_reason()}; rerunning from {ESD_FIRST_STEP} without ESD: "
                    f"{WITHOUT_ESD_NOTE}; see {shown}",
                )
        self._end(event, verdict, ended.returncode, ended.wall_s, ended.peak_rss_mb)
        return verdict, text, ended.stopped

    def _missing(self, phase: Phase) -> tuple[tuple[str, str], ...]:
        missing = missing_outputs(self.job.run_dir, phase.steps(), self.facts)
        if not all(path.is_file() for path in checkpoint_paths(self.job.run_dir, phase.last)):
            missing += ((phase.last, f"PICKLE/{phase.last}.xml"),)
        return missing

    def _end(
        self,
        start: PhaseEvent,
        verdict: Verdict,
        returncode: int | None = None,
        wall_s: float | None = None,
        peak_rss_mb: float | None = None,
    ) -> None:
        if not verdict.ok:
            log.warning(
                "%s: %s", start.phase, verdict.reason, extra={**self.extra, "phase": start.phase}
            )
        self.on_event(
            replace(
                start,
                kind="end",
                time=time.time(),
                returncode=returncode,
                ok=verdict.ok,
                transient=None if verdict.ok else verdict.transient,
                error=verdict.reason,
                wall_s=wall_s,
                peak_rss_mb=peak_rss_mb,
            )
        )

    def clean(self) -> tuple[int | None, int | None]:
        try:
            clean = clean_holding if self.job.keep_geometry else clean_pair
            cleaned = clean(self.job.run_dir, self.job.clean_level)
        except OSError as err:
            # The products are complete: the pair is done, only its disk use is not reduced.
            log.warning("cleaning failed: %s", err, extra=self.extra)
            return None, None
        return cleaned.bytes_before, cleaned.bytes_after

    def result(
        self,
        status: PairStatus,
        *,
        error: str | None = None,
        tail_text: str | None = None,
        failed_phase: str | None = None,
        cleaned: tuple[int | None, int | None] = (None, None),
    ) -> PairResult:
        remaining = {p.name for p in remaining_phases(self.job.run_dir, self.job.phases)}
        return PairResult(
            pair_id=self.job.pair_id,
            status=status,
            phases_done=tuple(p.name for p in self.job.phases if p.name not in remaining),
            attempts=dict(self.attempts),
            error=error,
            error_tail=tail_text or None,
            failed_phase=failed_phase,
            bytes_before_clean=cleaned[0],
            bytes_after_clean=cleaned[1],
            phase_wall_s=dict(self.walls),
            geometry_from=reused_from(self.job.run_dir, _topo_phase(self.job.phases)),
            without_esd=self._without_esd(),
        )

    def _without_esd(self) -> bool:
        """Whether the pair runs without ESD by its own decision (not the user's ESD=false)."""
        try:
            decided = read_decisions(self.job.run_dir).esd_disabled
        except InputError:
            return False
        return decided and not self.facts.do_esd


def _topo_phase(phases: tuple[Phase, ...]) -> str:
    return next((phase.name for phase in phases if TOPO in phase.steps()), "geometry")
