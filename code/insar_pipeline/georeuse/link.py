"""Take another pair's geometry instead of running `topo` (the I/O of ISCE2_CONTRACT.md §9).

The verified procedure: hard links of the donor's `geom_reference/IW*` (never `overlaps/`, where
ESD later writes new files), then `PICKLE/verifyDEM{.xml,}` copied to `PICKLE/topo{.xml,}`, and
topsApp carries on from `subsetoverlaps`. Hard links cost no disk and outlive the donor's
folder: cleaning or deleting the donor never breaks a pair that took its geometry.

A kill at any point leaves a state the rerun handles: the checkpoints are written last (the
`.xml` first, as topsApp does), and a `geom_reference/IW*` without `PICKLE/topo` is removed and
made again. Before `topo` runs in a folder, files it shares with other pairs are unlinked first:
topsApp rewrites its outputs in place, which through a hard link would change the other pairs'.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from insar_pipeline._io import atomic_output, write_bytes
from insar_pipeline.georeuse.key import BEFORE_TOPO, TOPO, guard, missing_geometry
from insar_pipeline.topsapp.clean import CleanResult, clean_pair
from insar_pipeline.topsapp.job import LOGS_DIR, PairJob, PhaseEvent, next_log_number
from insar_pipeline.topsapp.steps import Phase, checkpoint_paths, finished_steps, remaining_phases
from insar_pipeline.topsapp.xml import ORBIT_DIR

log = logging.getLogger(__name__)

GEOMETRY_DIR = "geom_reference"
# What cleaning keeps of a geometry other pairs may still link (PairJob.keep_geometry): the
# rasters, and the private orbit folder (hard links, no space) that the guard reads the
# donor's reference orbit from. topsApp.xml, PICKLE/ and reference/IW*.xml are always kept.
HOLD_PATTERNS = (f"{GEOMETRY_DIR}/IW*/**", f"{ORBIT_DIR}/*")
# Marks a folder cleaned with a hold (not one a user keeps whole with CLEAN=none): cleaning it
# again without the hold removes the geometry and this marker (it matches no keep pattern).
HELD_MARKER = ".geometry_held"
_REUSED = re.compile(r"^# insar-pipeline \S+: geometry reused from (\S+) ")


def link_geometry(donor_dir: Path, run_dir: Path) -> int:
    """Hard-link the donor's `geom_reference/IW*` into run_dir and mark `topo` finished.

    Returns the number of files linked. Raises OSError when a link fails (e.g. another file
    system); run_dir is then left without `PICKLE/topo`, so topo runs there as usual.
    """
    source = donor_dir / GEOMETRY_DIR
    target = run_dir / GEOMETRY_DIR
    _remove_swath_folders(target)  # a killed topo or an interrupted link: start over
    target.mkdir(exist_ok=True)
    linked = 0
    for swath in sorted(p for p in source.glob("IW*") if p.is_dir() and not p.is_symlink()):
        for root, folders, files in os.walk(swath):
            here = target / Path(root).relative_to(source)
            here.mkdir(exist_ok=True)
            for name in sorted(files):
                os.link(Path(root) / name, here / name, follow_symlinks=False)
                linked += 1
            folders.sort()
    # `--start=subsetoverlaps` loads PICKLE/topo: the pair's own state, which topo never changes.
    for done_state, copy in zip(
        checkpoint_paths(run_dir, BEFORE_TOPO), checkpoint_paths(run_dir, TOPO), strict=True
    ):
        _copy_atomic(done_state, copy)
    return linked


def clean_holding(run_dir: Path, level: str) -> CleanResult:
    """Clean a finished pair but keep its geometry for pairs that may still link it."""
    cleaned = clean_pair(run_dir, level, hold=HOLD_PATTERNS)
    if level != "none":
        write_bytes(run_dir / HELD_MARKER, b"geometry kept for pairs of this reference\n")
    return cleaned


def unshare_geometry(run_dir: Path) -> int:
    """Unlink geometry files run_dir shares with other folders before topo rewrites them."""
    unlinked = 0
    for path in (run_dir / GEOMETRY_DIR).glob("IW*/**/*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_nlink > 1:
            path.unlink()
            unlinked += 1
    return unlinked


def has_geometry(run_dir: Path) -> bool:
    """topo finished in run_dir and its geometry rasters are all there (not cleaned yet)."""
    return TOPO in finished_steps(run_dir) and not missing_geometry(run_dir)


def reused_from(run_dir: Path, phase: str = "geometry") -> str | None:
    """The pair whose geometry run_dir took, from its latest `logs/<phase>.N.log`; else None."""
    latest: tuple[int, Path] | None = None
    for path in (run_dir / LOGS_DIR).glob(f"{phase}.*.log"):
        middle = path.name[len(phase) + 1 : -len(".log")]
        if middle.isdigit() and (latest is None or int(middle) > latest[0]):
            latest = (int(middle), path)
    if latest is None:
        return None
    with latest[1].open("rb") as stream:
        found = _REUSED.match(stream.readline().decode("utf-8", errors="replace"))
    return found[1] if found else None


def take_geometry(
    job: PairJob, phase: Phase, on_event: Callable[[PhaseEvent], None]
) -> Phase | None:
    """The runner's step before a phase that runs topo: take a donor's geometry if one fits
    (then return what is left of the phase, None if nothing), else make sure topo will write
    only files of this pair and return the phase unchanged."""
    if phase.first == TOPO and job.geometry_donors:
        number = next_log_number(job.run_dir, phase.name)
        if share_geometry(job, phase, number, on_event):
            left = remaining_phases(job.run_dir, [phase])
            return left[0] if left else None
    unlinked = unshare_geometry(job.run_dir)
    if unlinked:
        log.info("unlinked %d geometry files shared with other pairs before topo", unlinked,
                 extra={"pair": job.pair_id, "phase": phase.name})  # fmt: skip
    return phase


def share_geometry(
    job: PairJob, phase: Phase, attempt: int, on_event: Callable[[PhaseEvent], None]
) -> str | None:
    """The runner's step before `phase` (which starts at topo): link the first donor whose guard
    passes and report the phase as done by linking; return that donor's pair id.

    Returns None when no donor fits or a link fails: each reason is logged and topo must run.
    """
    extra = {"pair": job.pair_id, "phase": phase.name}
    for donor in map(Path, job.geometry_donors):
        reasons = guard(donor, job.run_dir)
        if reasons:
            log.info("not reusing the geometry of %s: %s", donor.name, "; ".join(reasons),
                     extra=extra)  # fmt: skip
            continue
        log_path = job.run_dir / LOGS_DIR / f"{phase.name}.{attempt}.log"
        start = PhaseEvent(job.pair_id, phase.name, attempt, "start", time.time(),
                           log_path=str(log_path))  # fmt: skip
        on_event(start)
        began = time.monotonic()
        try:
            count = link_geometry(donor, job.run_dir)
        except OSError as err:
            _remove_swath_folders(job.run_dir / GEOMETRY_DIR)
            _write_log(log_path, donor, f"linking failed ({err}); topo runs instead")
            log.warning("cannot link the geometry of %s (%s); running topo", donor.name, err,
                        extra=extra)  # fmt: skip
            on_event(_end(start, began, ok=False, error=f"linking failed: {err}"))
            return None
        _write_log(log_path, donor, None, count)
        log.info("geometry reused from %s: %d files hard-linked, topo skipped", donor.name,
                 count, extra=extra)  # fmt: skip
        on_event(_end(start, began, ok=True, reused_from=donor.name))
        return donor.name
    if job.geometry_donors:
        log.info("no donor's geometry fits: running topo", extra=extra)
    return None


def _end(
    start: PhaseEvent,
    began: float,
    ok: bool,
    error: str | None = None,
    reused_from: str | None = None,
) -> PhaseEvent:
    return replace(
        start,
        kind="end",
        time=time.time(),
        wall_s=time.monotonic() - began,
        ok=ok,
        error=error,
        reused_from=reused_from,
    )


def _write_log(log_path: Path, donor: Path, failure: str | None, count: int = 0) -> None:
    # The first line is what `reused_from` reads back (status, ledger repair after a crash).
    now = f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}"
    if failure is not None:
        text = f"# insar-pipeline {now}: geometry of {donor.name} not reused: {failure}\n"
    else:
        text = (
            f"# insar-pipeline {now}: geometry reused from {donor.name} (no topsApp run)\n"
            f"hard-linked {count} files of {donor / GEOMETRY_DIR}/IW* into {GEOMETRY_DIR}/\n"
            f"copied PICKLE/{BEFORE_TOPO}.xml -> PICKLE/{TOPO}.xml and "
            f"PICKLE/{BEFORE_TOPO} -> PICKLE/{TOPO}\n"
            "guard passed: same reference product, orbit file, swaths, region of interest, "
            "WGS84 DEM, CPU topo, common-burst range and reference/IW*.xml "
            "(ISCE2_CONTRACT.md section 9)\n"
        )
    write_bytes(log_path, text.encode())


def _copy_atomic(source: Path, target: Path) -> None:
    with atomic_output(target, mode=None) as temporary:
        shutil.copy2(source, temporary)


def _remove_swath_folders(folder: Path) -> None:
    for path in folder.glob("IW*"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
