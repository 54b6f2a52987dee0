"""The scheduler's side of geometry reuse: one `topo` per geometry key in a run.

Pairs are grouped by their predicted geometry key (`georeuse.predicted_key`). In each group the
first pair to start computes the geometry (the donor); the others may run their `preprocess`
meanwhile, then wait ("waiting") without holding a worker until a geometry exists, and are then
resubmitted with the folders holding one: their runner checks the guard and links, or runs topo
itself and logs why. If the donor fails or is stopped before its geometry exists, the next pair
of the group to start becomes the donor. Donors are dispatched first, the largest groups first,
then the other pairs that run topo, and the pairs that will take a geometry (the shortest) last.

A finished pair whose geometry others may still need is cleaned without its `geom_reference/IW*`
(`PairJob.keep_geometry`); once no pair of its group needs it any more, the coordinator cleans
it again (`releases`). A run stopped before that keeps the geometry for the rerun.

`GeometryReuse` is the pure state machine (data in, data out); `run/geometry.py` feeds it from the
pair folders and the executor's messages, and cleans what it releases.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from insar_pipeline.georeuse.key import TOPO, GeometryKey
from insar_pipeline.topsapp.job import PairJob, PairResult, PairStatus, PhaseEvent
from insar_pipeline.topsapp.steps import Phase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairGeometry:
    """What a pair folder says about its geometry at the start of a run."""

    pair_id: str
    run_dir: Path
    key: GeometryKey | None  # predicted; None: this pair never shares (e.g. GPU topo)
    topo_done: bool  # topo finished (computed or linked)
    has_geometry: bool  # ... and its rasters are all there (not cleaned)
    held: bool  # cleaned except its geometry, kept for other pairs (georeuse_link.HELD_MARKER)
    at_topo: bool  # verifyDEM finished, topo not: the next step is topo
    to_run: bool  # queued in this run
    reused_from: str | None  # the pair whose geometry it took, per its logs


@dataclass
class _Group:
    members: list[str]
    holders: list[str] = field(default_factory=list)  # folders with a complete geometry
    needers: set[str] = field(default_factory=set)  # queued pairs still without geometry
    donor: str | None = None  # submitted to compute topo, geometry not there yet
    parked: set[str] = field(default_factory=set)  # at topo, waiting for a geometry
    kept: set[str] = field(default_factory=set)  # done, geometry held for the needers


class GeometryReuse:
    """Which pair computes, which waits, which links, and when a held geometry is released."""

    def __init__(self, pairs: Sequence[PairGeometry], topo_phase: str) -> None:
        self.topo_phase = topo_phase
        self.run_dirs = {pair.pair_id: pair.run_dir for pair in pairs}
        self.groups: dict[str, _Group] = {}  # pair id -> its group (shared objects)
        by_key: dict[GeometryKey, _Group] = {}
        for pair in pairs:
            if pair.key is None:
                continue
            group = by_key.setdefault(pair.key, _Group(members=[]))
            group.members.append(pair.pair_id)
            if pair.has_geometry:
                group.holders.append(pair.pair_id)
            if pair.held and not pair.to_run:
                group.kept.add(pair.pair_id)  # finished, its geometry held by an earlier run
            if pair.to_run and not pair.topo_done:
                group.needers.add(pair.pair_id)
                if pair.at_topo:
                    group.parked.add(pair.pair_id)
            self.groups[pair.pair_id] = group
        self.held: set[str] = set()  # submitted with keep_geometry
        self.computed_s: dict[str, float] = {}  # pair id -> wall of the topo it ran
        self.reused: dict[str, str] = {}  # pair id -> donor, linked in this run

    def order(self, pair_ids: Sequence[str]) -> list[str]:
        """Donors first, largest groups first; then the other pairs that run topo; then the
        pairs expected to take a geometry (the shortest work: last, as longest-first packing
        wants), each part in the given order."""
        position = {pair_id: index for index, pair_id in enumerate(pair_ids)}
        donors: list[tuple[int, int, str]] = []
        takers: set[str] = set()
        for group in {id(g): g for g in map(self.groups.get, pair_ids) if g}.values():
            if group.holders:
                takers |= group.needers
            elif len(group.needers) > 1:
                # A pair already at topo reaches the geometry soonest.
                first = min(group.needers, key=lambda p: (p not in group.parked, position[p]))
                donors.append((-len(group.needers), position[first], first))
                takers |= group.needers - {first}
        chosen = [pair_id for _, _, pair_id in sorted(donors)]
        leading = set(chosen)
        rest = [p for p in pair_ids if p not in takers and p not in leading]
        return chosen + rest + [p for p in pair_ids if p in takers]

    def is_ready(self, pair_id: str) -> bool:
        """False only for a pair at topo while its group's donor computes the geometry."""
        group = self.groups.get(pair_id)
        if group is None or group.holders or group.donor in (None, pair_id):
            return True
        return pair_id not in group.parked

    def job_for(self, job: PairJob) -> PairJob:
        """The job to submit now: with donors to link from, as the donor, or to wait."""
        group = self.groups.get(job.pair_id)
        if group is None:
            return job
        keep = bool(group.needers - {job.pair_id})
        if keep:
            self.held.add(job.pair_id)
        else:
            self.held.discard(job.pair_id)
        donors: tuple[Path, ...] = job.geometry_donors
        wait = False
        if job.pair_id in group.needers:
            found = tuple(self.run_dirs[p] for p in group.holders if p != job.pair_id)
            if found:
                donors = found
            elif group.donor in (None, job.pair_id):
                group.donor = job.pair_id
                if keep:
                    log.info("computes the geometry of its reference for %d more pair(s)",
                             len(group.needers) - 1, extra={"pair": job.pair_id})  # fmt: skip
            else:
                wait = True
        return replace(job, keep_geometry=keep, wait_for_geometry=wait, geometry_donors=donors)

    def on_event(self, event: PhaseEvent) -> list[Path]:
        """A phase ended; returns folders to clean again (their geometry is no longer held)."""
        group = self.groups.get(event.pair_id)
        if group is None or event.phase != self.topo_phase or event.kind != "end" or not event.ok:
            return []
        pair_id = event.pair_id
        if event.reused_from:
            self.reused[pair_id] = event.reused_from
        else:
            self.computed_s[pair_id] = event.wall_s or 0.0
        group.needers.discard(pair_id)
        group.parked.discard(pair_id)
        if pair_id not in group.holders:
            group.holders.append(pair_id)
        if group.donor == pair_id:
            group.donor = None
        return self._release(group)

    def on_result(self, result: PairResult) -> list[Path]:
        """A pair's result; returns folders to clean again."""
        group = self.groups.get(result.pair_id)
        if group is None:
            return []
        pair_id = result.pair_id
        if result.status == PairStatus.WAITING:
            group.parked.add(pair_id)
            return []
        if group.donor == pair_id:  # failed or stopped before its geometry existed
            group.donor = None
        if result.status in (PairStatus.DONE, PairStatus.FAILED):
            group.needers.discard(pair_id)  # it needs nothing more in this run
        if result.status == PairStatus.DONE and pair_id in self.held:
            group.kept.add(pair_id)
        return self._release(group)

    def releases(self) -> list[Path]:
        """Held geometries no queued pair needs any more (e.g. at the start of a rerun)."""
        folders: list[Path] = []
        for group in {id(g): g for g in self.groups.values()}.values():
            folders += self._release(group)
        return folders

    def still_held(self) -> list[str]:
        """Pairs whose geometry stays held because pairs of their group are still to run."""
        return sorted(p for g in {id(g): g for g in self.groups.values()}.values() for p in g.kept)

    def _release(self, group: _Group) -> list[Path]:
        if group.needers or not group.kept:
            return []
        released = sorted(group.kept)
        group.kept.clear()
        group.holders = [p for p in group.holders if p not in released]
        return [self.run_dirs[pair_id] for pair_id in released]


def topo_phase(phases: Sequence[Phase]) -> str | None:
    """The phase that starts with topo (reuse skips it), or None: topo shares a phase with
    other steps and cannot be skipped alone."""
    return next((phase.name for phase in phases if phase.first == TOPO), None)
