"""The `plan` command: validate settings, pairs and products, and print what `run` would do.

Nothing is downloaded and nothing is written but data/runs/pipeline.log. `plan_command` runs the
same `validate` and `preflight` as `run` (run/preflight.py): the same problems stop it (exit 2),
the same pairs are excluded and the same warnings shown. `build_plan` and `render_plan` are
pure. The phases come from `topsapp.phase_table`; what is left of them from each run folder's
checkpoints.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from insar_pipeline import logs
from insar_pipeline.dem.provision import DemPlan
from insar_pipeline.errors import InputError
from insar_pipeline.inputs.pairs import Pair
from insar_pipeline.inputs.safe import Product, is_product_path
from insar_pipeline.orbits.provision import describe_orbit_plan
from insar_pipeline.run.preflight import isce2_notes, preflight, validate
from insar_pipeline.timeseries.grid import grid_notes
from insar_pipeline.topsapp.steps import Phase, phase_table

if TYPE_CHECKING:
    from insar_pipeline.inputs.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairPreview:
    """What `run` would do for one pair."""

    pair: Pair
    phases: tuple[Phase, ...]  # phases still to run, the first trimmed to where it resumes
    total: int  # phases of a whole run of this pair


@dataclass(frozen=True)
class Plan:
    """What `run` would do, as data."""

    pairs_file: Path
    data_dir: Path
    settings: tuple[tuple[str, str], ...]  # (label, value) lines of the settings that matter
    pairs: tuple[PairPreview, ...]
    orbits: Mapping[str, str] = field(default_factory=dict)  # scene name -> cached / source
    dems: tuple[DemPlan, ...] = ()
    blockers: tuple[str, ...] = ()  # what would stop provisioning (missing key, geoid grid)
    geometry_reuse: bool = False
    excluded: Mapping[str, str] = field(default_factory=dict)  # by preflight: pair id -> reason
    warnings: tuple[str, ...] = ()  # preflight's (e.g. the disk)
    isce2: str = ""  # the ISCE2 line: the version the image has

    @property
    def scenes(self) -> frozenset[Path]:
        return frozenset(p.path for item in self.pairs for p in item.pair.products)

    @property
    def phase_count(self) -> int:
        return sum(len(item.phases) for item in self.pairs)


def build_plan(
    settings: Settings,
    pairs: list[Pair],
    left: Mapping[str, tuple[Phase, ...]] | None = None,
    orbits: Mapping[str, str] | None = None,
    dems: tuple[DemPlan, ...] = (),
    blockers: tuple[str, ...] = (),
    excluded: Mapping[str, str] | None = None,
    warnings: tuple[str, ...] = (),
    isce2: str = "",
) -> Plan:
    """The plan of a run of these validated pairs (pure).

    `left` maps a pair id to its phases still to run (from its run folder's checkpoints); a pair
    absent from it has every phase to run. `orbits` and `dems` are what provisioning would do.
    """
    table = phase_table(settings.ionosphere)
    left = left or {}
    return Plan(
        pairs_file=settings.pairs_file,
        data_dir=settings.data_dir,
        settings=_settings_summary(settings),
        pairs=tuple(PairPreview(pair, left.get(pair.id, table), len(table)) for pair in pairs),
        orbits=dict(orbits or {}),
        dems=dems,
        blockers=blockers,
        geometry_reuse=settings.geometry_reuse,
        excluded=dict(excluded or {}),
        warnings=warnings,
        isce2=isce2,
    )


def _settings_summary(settings: Settings) -> tuple[tuple[str, str], ...]:
    unwrap = settings.unwrapper if settings.unwrap else "off"
    region = settings.region_of_interest or "whole scenes"
    return (
        ("swaths", ",".join(f"IW{s}" for s in settings.swaths)),
        ("polarization", settings.polarization.upper()),
        ("looks", f"{settings.range_looks} range x {settings.azimuth_looks} azimuth"),
        ("unwrap", unwrap),
        ("ionosphere", "on" if settings.ionosphere else "off"),
        ("region", str(region)),
        ("workers", "auto" if settings.workers is None else str(settings.workers)),
        ("executor", settings.executor),
        ("clean", settings.clean),
    )


def render_plan(plan: Plan) -> str:
    """The plan as the text `plan` prints (pure)."""
    tracks = sorted({item.pair.reference.relative_orbit for item in plan.pairs})
    lines = [
        f"Plan: {_count(len(plan.pairs), 'pair')}, {_count(len(plan.scenes), 'scene')}, "
        f"{_count(len(tracks), 'track')} ({', '.join(map(str, tracks))}) from {plan.pairs_file};"
        f" data folder {plan.data_dir}",
        "settings: " + "  ".join(f"{label} {value}" for label, value in plan.settings),
    ]
    if plan.isce2:
        lines.append(plan.isce2)
    for item in plan.pairs:
        lines += ["", *_render_pair(item, plan.pairs_file, plan.orbits)]
        if item.pair.id in plan.excluded:
            lines.append(f"  excluded   {plan.excluded[item.pair.id]}")
    lines += _render_dems(plan.dems)
    lines += [f"warning: {blocker}" for blocker in (*plan.blockers, *plan.warnings)]
    lines += _render_geometry(plan)
    lines += grid_notes(
        {item.pair.id: str(item.pair.reference.relative_orbit) for item in plan.pairs},
        {pair_id: dem.path for dem in plan.dems for pair_id in dem.pair_ids},
    )
    runs = [item for item in plan.pairs if item.phases and item.pair.id not in plan.excluded]
    phases = sum(len(item.phases) for item in runs)
    done = sum(1 for item in plan.pairs if not item.phases)
    excluded = f", {len(plan.excluded)} excluded" if plan.excluded else ""
    lines += [
        "",
        f"`run` would run {_count(phases, 'phase')} for {_count(len(runs), 'pair')}"
        f" ({done} already done{excluded}). Nothing was downloaded.",
    ]
    return "\n".join(lines) + "\n"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _render_geometry(plan: Plan) -> list[str]:
    todo = [
        item.pair
        for item in plan.pairs
        if any(p.name == "geometry" for p in item.phases) and item.pair.id not in plan.excluded
    ]
    if not todo:
        return []
    if not plan.geometry_reuse:
        return [
            "",
            f"geometry: topo runs for each of {_count(len(todo), 'pair')} (GEOMETRY_REUSE=false)",
        ]
    # Pairs sharing a reference scene and swaths share geometry when their guard holds
    # (same orbit, region, DEM and common bursts: checked after preprocess).
    references = {(pair.reference.name, pair.swaths) for pair in todo}
    return [
        "",
        f"geometry: topo runs at most {_count(len(references), 'time')} for"
        f" {_count(len(todo), 'pair')}: pairs sharing a reference reuse its geometry",
    ]


def _render_dems(dems: tuple[DemPlan, ...]) -> list[str]:
    lines = ["", f"DEM: {_count(len(dems), 'DEM')}"] if dems else []
    for dem in dems:
        state = "cached" if dem.cached else dem.fetch_summary
        lines.append(
            f"  {dem.path.name}  box {dem.bbox}  {state}  for {_count(len(dem.pair_ids), 'pair')}"
        )
    return lines


def _render_pair(item: PairPreview, pairs_file: Path, orbits: Mapping[str, str]) -> list[str]:
    pair = item.pair
    days = (pair.secondary.date - pair.reference.date).days
    where = f"{pairs_file}:{pair.line}" if pair.line else "generated"
    return [
        f"{pair.id}  ({where}, relative orbit {pair.reference.relative_orbit}, {days} days)",
        *_render_scene("reference", pair.reference, orbits.get(pair.reference.name)),
        *_render_scene("secondary", pair.secondary, orbits.get(pair.secondary.name)),
        f"  swaths     {' '.join(f'IW{s}' for s in pair.swaths)}",
        f"  phases     {_render_phases(item)}",
    ]


def _render_phases(item: PairPreview) -> str:
    if not item.phases:
        return "none left: the pair is done"
    names = " ".join(phase.name for phase in item.phases)
    if len(item.phases) == item.total and item.phases[0].first == "startup":
        return names
    return f"{names}  (resumes at topsApp step {item.phases[0].first})"


@functools.lru_cache(maxsize=4096)  # a scene is in many pairs: its lines are made once
def _render_scene(role: str, product: Product, orbit: str | None) -> tuple[str, ...]:
    lines = [
        f"  {role:<9}  {product.path.name}",
        f"             {product.start:%Y-%m-%d %H:%M:%S.%f} to {product.stop:%H:%M:%S.%f} UTC",
    ]
    if orbit:
        lines.append(f"             orbit {orbit}")
    return tuple(lines)


def plan_command(settings: Settings, args: argparse.Namespace) -> int:
    """Validate everything `run` needs and print the plan; exit 0, or InputError (exit 2)."""
    if show_acquisition(settings):  # AOI set: the search, and data/raw's share of it
        return 0
    if not settings.data_dir.is_dir():
        raise InputError(
            f"data folder {settings.data_dir} does not exist; create it with a raw/ folder"
            " holding the Sentinel-1 products, or pass --data DIR"
        )
    logs.attach_pipeline_log(settings.runs_dir)
    check_raw_dir(settings.raw_dir)
    checked = preflight(settings, validate(settings))  # the same checks as `run`
    pairs = list(checked.pairs)
    products = [product for pair in pairs for product in pair.products]
    # The entrypoint of the image exports the ISCE2 version conda-forge gave it.
    isce2, isce2_warnings = isce2_notes(
        os.environ.get("ISCE2_VERSION"), {product.mission for product in products}
    )
    plan = build_plan(
        settings,
        pairs,
        checked.left,
        orbits=describe_orbit_plan(settings, products),
        dems=checked.dems,
        blockers=checked.blockers,
        excluded=checked.excluded,
        warnings=(*checked.warnings, *isce2_warnings),
        isce2=isce2,
    )
    log.debug("plan: %d pairs, %d phases", len(plan.pairs), plan.phase_count)
    sys.stdout.write(render_plan(plan))
    return 0


def show_acquisition(settings: Settings) -> bool:
    """Print the search result when AOI is set; True when `run` would download first (no
    pairs.txt yet), so that there is nothing more to plan."""
    from insar_pipeline.acquire.stage import describe

    text = describe(settings)
    if text is None:
        return False
    sys.stdout.write(text)
    if settings.pairs_file.exists():
        sys.stdout.write(f"\n{settings.pairs_file} exists: `run` processes its pairs.\n\n")
        return False
    sys.stdout.write(
        f"\n`run` would download what is missing, write {settings.pairs_file} from this network,"
        " then process it. Nothing was downloaded.\n"
    )
    return True


def check_raw_dir(raw_dir: Path) -> None:
    """InputError with what to do when data/raw is missing or holds no product."""
    if not raw_dir.is_dir():
        raise InputError(
            f"{raw_dir} does not exist; create it and put the Sentinel-1 .SAFE folders"
            " or .zip files there"
        )
    if not any(is_product_path(entry) for entry in raw_dir.iterdir()):
        raise InputError(
            f"{raw_dir} holds no .SAFE folder or .zip file; put the Sentinel-1 IW SLC products"
            " of pairs.txt there"
        )
