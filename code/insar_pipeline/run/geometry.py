"""The coordinator's duties for geometry reuse (GEOMETRY_REUSE, on by default).

`GeometrySharing` reads the pair folders once at the start of a run (`survey`), feeds the pure
`georeuse.plan.GeometryReuse` with the executor's messages, cleans the pairs whose held geometry
is no longer needed, keeps the ledger's `geometry_from` in step with the folders, and sums up
what reuse saved. It runs in the coordinator's main thread, the ledger's only writer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from insar_pipeline.errors import PipelineError
from insar_pipeline.georeuse.key import BEFORE_TOPO, TOPO, missing_geometry, predicted_key
from insar_pipeline.georeuse.link import GEOMETRY_DIR, HELD_MARKER, reused_from
from insar_pipeline.georeuse.plan import GeometryReuse, PairGeometry, topo_phase
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.pairs import Pair
from insar_pipeline.ledger.store import Ledger
from insar_pipeline.report.text import format_duration
from insar_pipeline.topsapp.clean import clean_pair
from insar_pipeline.topsapp.job import PairJob, PairResult, PhaseEvent
from insar_pipeline.topsapp.steps import Phase, finished_steps
from insar_pipeline.topsapp.xml import XML_NAME

log = logging.getLogger(__name__)

_CHAIN_LIMIT = 16  # donors of donors followed when estimating the time saved


def survey(runs: Mapping[str, Path], to_run: Iterable[str]) -> list[PairGeometry]:
    """Read each pair folder (pair id -> run folder) once."""
    queued = set(to_run)
    found = []
    for pair_id, run_dir in runs.items():
        prepared = (run_dir / XML_NAME).is_file()
        done = finished_steps(run_dir) if prepared else ()
        found.append(
            PairGeometry(
                pair_id=pair_id,
                run_dir=run_dir,
                key=predicted_key(run_dir) if prepared else None,
                topo_done=TOPO in done,
                has_geometry=TOPO in done
                and (run_dir / GEOMETRY_DIR).is_dir()
                and not missing_geometry(run_dir),
                held=(run_dir / HELD_MARKER).is_file(),
                at_topo=BEFORE_TOPO in done and TOPO not in done,
                to_run=pair_id in queued,
                reused_from=reused_from(run_dir) if prepared else None,
            )
        )
    return found


class GeometrySharing:
    """One run's geometry reuse: what the coordinator calls, in the order it calls it."""

    def __init__(self, settings: Settings, ledger: Ledger, phases: Sequence[Phase]) -> None:
        self.settings, self.ledger = settings, ledger
        self.phase = topo_phase(phases)
        self.reuse: GeometryReuse | None = None

    def plan(self, pairs: Sequence[Pair], jobs: list[PairJob]) -> list[PairJob]:
        """Group the pairs, sync the ledger with the folders; return the jobs, donors first."""
        if not self.settings.geometry_reuse or not jobs:
            return jobs
        if self.phase is None:
            log.info("geometry reuse is off: topo does not start a phase of its own")
            return jobs
        # The runs folder resolved once, not each pair folder (a realpath per pair of 100,000).
        base = self.settings.runs_dir.resolve()
        runs = {pair.id: base / pair.id for pair in pairs}
        found = survey(runs, [job.pair_id for job in jobs])
        self._sync_ledger(found)
        self.reuse = GeometryReuse(found, self.phase)
        self._clean_again(self.reuse.releases())
        by_id = {job.pair_id: job for job in jobs}
        return [by_id[pair_id] for pair_id in self.reuse.order(list(by_id))]

    def is_ready(self, pair_id: str) -> bool:
        return self.reuse is None or self.reuse.is_ready(pair_id)

    def job_for(self, job: PairJob) -> PairJob:
        return job if self.reuse is None else self.reuse.job_for(job)

    def on_event(self, event: PhaseEvent) -> None:
        if self.reuse is not None:
            self._clean_again(self.reuse.on_event(event))

    def on_result(self, result: PairResult) -> None:
        if self.reuse is not None:
            self._clean_again(self.reuse.on_result(result))

    def figures(self) -> tuple[int, int, float]:
        """(topo runs, topo runs avoided, topo seconds saved) in this run.

        The time saved is an estimate: each reuse saves what its donor's topo took.
        """
        if self.reuse is None:
            return 0, 0, 0.0
        sources: dict[str, str | None] = dict(self.ledger.geometry_sources())
        sources.update(self.reuse.reused)
        saved = sum(self._topo_wall(donor, sources) for donor in self.reuse.reused.values())
        return len(self.reuse.computed_s), len(self.reuse.reused), saved

    def summary_line(self) -> str | None:
        if self.reuse is None or not (self.reuse.reused or self.reuse.computed_s):
            return None
        runs, avoided, saved = self.figures()
        shown = format_duration(saved) if saved >= 60 else f"{saved:.1f} s"
        line = (
            f"geometry: topo ran {runs} time{'s' * (runs != 1)}, {avoided} pair"
            f"{'s' * (avoided != 1)} took a donor's geometry instead (about {shown} of topo saved)"
        )
        held = self.reuse.still_held()
        if held:
            line += f"; geometry of {', '.join(held)} kept for pairs still to run"
        return line

    def _sync_ledger(self, found: Sequence[PairGeometry]) -> None:
        """A coordinator killed right after a link may not have recorded it: folders win."""
        recorded = self.ledger.geometry_sources()
        for pair in found:
            # Every pair of the run is registered by now: an update of an unknown id is a no-op.
            if recorded.get(pair.pair_id) != pair.reused_from:
                self.ledger.set_pair(pair.pair_id, geometry_from=pair.reused_from)

    def _clean_again(self, folders: Sequence[Path]) -> None:
        """Clean finished pairs whose geometry was held for pairs that no longer need it."""
        for folder in folders:
            try:
                cleaned = clean_pair(folder, self.settings.clean)
            except (OSError, PipelineError) as err:
                log.warning("could not clean its held geometry: %s", err,
                            extra={"pair": folder.name})  # fmt: skip
                continue
            self.ledger.set_pair(folder.name, bytes_after_clean=cleaned.bytes_after)
            log.info("geometry no longer needed by other pairs: cleaned",
                     extra={"pair": folder.name})  # fmt: skip

    def _topo_wall(self, donor: str, sources: Mapping[str, str | None]) -> float:
        """How long the topo behind a donor's geometry took (this run, else the ledger)."""
        computed = self.reuse.computed_s if self.reuse is not None else {}
        for _ in range(_CHAIN_LIMIT):  # a donor may itself have taken its geometry
            if donor in computed:
                return computed[donor]
            earlier = sources.get(donor)
            if earlier is None:
                rows = [
                    row
                    for row in self.ledger.phase_rows(donor)
                    if row["phase"] == self.phase and row["ok"] and row["wall_s"]
                ]
                return float(str(rows[-1]["wall_s"])) if rows else 0.0
            donor = earlier
        return 0.0
