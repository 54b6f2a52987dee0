"""The `timeseries` command, and the final stage of `run` when TIMESERIES=true.

Per track (relative orbit): the ledger's pairs → the network → one grid → the stack and the
geometry in `data/timeseries/<track>/inputs/` → smallbaselineApp.cfg → MintPy → the report page.
`run_timeseries` reads as those stages; each is a function of this package.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from insar_pipeline.errors import InputError
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.safe import Product, read_product, scan_raw
from insar_pipeline.ledger.store import Ledger, PairRow
from insar_pipeline.timeseries import grid as grids
from insar_pipeline.timeseries.metadata import (
    perpendicular_baseline,
    read_annotations,
    track_attributes,
)
from insar_pipeline.timeseries.mintpy_app import (
    MintpyRun,
    config_text,
    parse_lalo,
    run_smallbaseline,
    write_config,
)
from insar_pipeline.timeseries.network import Link, Network, build_network, describe
from insar_pipeline.timeseries.page import TIMESERIES_FOLDER, write_track_page
from insar_pipeline.timeseries.stack import (
    GEOMETRY_NAME,
    STACK_NAME,
    UNW,
    StackPair,
    StackUpdate,
    write_geometry,
    write_stack,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Track:
    """The pairs of one relative orbit, with their products."""

    name: str  # e.g. track_108
    rows: tuple[PairRow, ...]
    products: dict[str, Product] = field(repr=False)  # product name -> product


@dataclass(frozen=True)
class TrackResult:
    track: str
    work_dir: Path
    network: Network
    resampled: tuple[str, ...]
    update: StackUpdate | None
    mintpy: MintpyRun | None
    notes: tuple[str, ...]


def timeseries_dir(settings: Settings) -> Path:
    return settings.data_dir / TIMESERIES_FOLDER


def timeseries_command(settings: Settings, args: argparse.Namespace) -> int:
    """The `timeseries` command of the CLI: 0, or 1 when MintPy failed on a track."""
    results = run_timeseries(settings)
    for result in results:
        sys.stdout.write(summary_text(result))
    ran = [r.mintpy for r in results if r.mintpy is not None and r.mintpy.returncode is not None]
    return 0 if all(mintpy.ok for mintpy in ran) else 1


def run_timeseries(settings: Settings, run_mintpy: bool = True) -> list[TrackResult]:
    """Every track's stack (created or grown), MintPy on it, and its report page."""
    parse_lalo(settings.reference_lalo)  # a bad REFERENCE_LALO is exit 2 before any write
    results = []
    for track in collect_tracks(settings):
        result = process_track(settings, track, run_mintpy)
        for note in result.notes:
            log.warning("%s", note)
        write_track_page(result)
        results.append(result)
    return results


def collect_tracks(settings: Settings) -> list[Track]:
    """The listed pairs of the ledger, grouped by the relative orbit of their products."""
    ledger = Ledger.open_reader(settings.runs_dir)
    if ledger is None:
        raise InputError(f"{settings.runs_dir}: no ledger; `run` the pairs before `timeseries`")
    try:
        rows = [r for r in ledger.pairs() if r.status in ("done", "failed")]
    finally:
        ledger.close()
    paths = scan_raw(settings.raw_dir) if settings.raw_dir.is_dir() else {}
    products: dict[str, Product] = {}
    by_track: dict[str, list[PairRow]] = {}
    for row in rows:
        for name in (row.reference, row.secondary):
            if name and name not in products:
                if name not in paths:
                    raise InputError(
                        f"pair {row.pair_id}: product {name} is not in {settings.raw_dir};"
                        " the time series reads its annotation"
                    )
                products[name] = read_product(paths[name])
        if row.reference and row.secondary:
            track = f"track_{products[row.reference].relative_orbit:03d}"
            by_track.setdefault(track, []).append(row)
    return [Track(name, tuple(rows), products) for name, rows in sorted(by_track.items())]


def _links(track: Track) -> list[Link]:
    return [
        Link(
            row.pair_id,
            f"{track.products[str(row.reference)].start:%Y%m%d}",
            f"{track.products[str(row.secondary)].start:%Y%m%d}",
            row.status == "done",
        )
        for row in track.rows
    ]


def process_track(settings: Settings, track: Track, run_mintpy: bool = True) -> TrackResult:
    work_dir = timeseries_dir(settings) / track.name
    links = _links(track)
    runs = {link.pair_id: settings.run_dir(link.pair_id) for link in links if link.finished}
    pair_grids, bperps, notes = _read_pairs(track.name, runs)
    # A finished pair whose products cannot be read counts as failed for the network.
    links = [replace(k, finished=k.finished and k.pair_id in pair_grids) for k in links]
    network = build_network(links)
    notes += describe(network, track.name)
    if not network.links:
        notes.append(f"{track.name}: no finished pair; no time series")
        return TrackResult(track.name, work_dir, network, (), None, None, tuple(notes))
    target = grids.common_grid(pair_grids)
    resampled = tuple(grids.off_grid(pair_grids, target))
    notes += grids.describe_resampled(track.name, resampled, target)
    pairs = [
        StackPair(
            link.pair_id,
            link.reference,
            link.secondary,
            runs[link.pair_id],
            bperps[link.pair_id],
            network.keeps(link),
        )
        for link in network.links
    ]
    attributes = _attributes(settings, track, network)
    inputs = work_dir / "inputs"
    update = write_stack(inputs / STACK_NAME, pairs, target, attributes)
    geometry = inputs / GEOMETRY_NAME
    if update.rewritten or not geometry.exists():
        first_on_grid = next(p for p in pairs if p.pair_id not in resampled)
        write_geometry(geometry, first_on_grid.run_dir, target, attributes)
    excluded = [p.date12 for p in pairs if not p.keep]
    current = {p.date12 for p in pairs}
    excluded += [d for d in update.kept if d not in current]
    write_config(work_dir, config_text(sorted(excluded), settings.reference_lalo))
    mintpy = run_smallbaseline(work_dir) if run_mintpy else None
    return TrackResult(track.name, work_dir, network, resampled, update, mintpy, tuple(notes))


def _read_pairs(
    track: str, runs: dict[str, Path]
) -> tuple[dict[str, grids.Grid], dict[str, float], list[str]]:
    """Each finished pair's grid and perpendicular baseline; a pair that lacks them is named."""
    pair_grids, bperps, notes = {}, {}, []
    for pair_id, run_dir in runs.items():
        try:
            grid = grids.read_grid(run_dir / UNW)
            bperps[pair_id] = perpendicular_baseline(run_dir / "topsProc.xml")
        except InputError as err:
            notes.append(f"{track}: pair {pair_id} is left out: {err}")
            continue
        pair_grids[pair_id] = grid
    return pair_grids, bperps, notes


def _attributes(settings: Settings, track: Track, network: Network) -> dict[str, str]:
    """MintPy's sensor attributes from the reference scene of the track's first finished pair."""
    first = min(network.links, key=lambda link: link.date12)
    row = next(r for r in track.rows if r.pair_id == first.pair_id)
    product = track.products[str(row.reference)]
    swaths = tuple(s for s in settings.swaths if s in product.swaths) or product.swaths
    annotations = read_annotations(product.path, swaths, settings.polarization)
    attributes = track_attributes(
        annotations, settings.range_looks, settings.azimuth_looks, settings.polarization
    )
    attributes["PROJECT_NAME"] = track.name
    attributes["RELATIVE_ORBIT"] = str(product.relative_orbit)
    return attributes


def summary_text(result: TrackResult) -> str:
    network = result.network
    lines = [
        f"{result.track}: {len(network.dates)} dates, {len(network.links)} pairs"
        f" ({len(network.dropped)} dropped, {len(network.failed)} failed), "
        f"{len(network.components)} piece(s); stack {result.work_dir / 'inputs' / STACK_NAME}",
    ]
    if result.update is not None:
        lines.append(
            f"  {len(result.update.added)} pair(s) written, {len(result.update.kept)} already there"
        )
    if result.resampled:
        lines.append(f"  resampled onto the track's grid: {', '.join(result.resampled)}")
    mintpy = result.mintpy
    if mintpy is not None:
        state = "not installed" if mintpy.returncode is None else ("ok" if mintpy.ok else "FAILED")
        lines.append(f"  MintPy {state} in {mintpy.wall_s:.1f} s; log {mintpy.log_path}")
    lines += [f"  note: {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


def track_names(settings: Settings) -> Sequence[str]:
    folder = timeseries_dir(settings)
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
