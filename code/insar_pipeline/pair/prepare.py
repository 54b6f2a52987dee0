"""Make a pair folder ready for topsApp (in the coordinator, before any pair runs).

The folder gets `logs/`, a private `orbits/` folder and `topsApp.xml`. A rerun with unchanged
settings rewrites nothing; settings that changed after topsApp already used them would mix two
configurations in one product, so they are refused with what to do instead. `spoiling_change`
is that check on its own: the run's preflight asks it of every pair before anything is
downloaded, and excludes (only) the pairs it refuses.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from insar_pipeline.dem.provision import geocode_dem_path
from insar_pipeline.errors import InputError
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.pairs import Pair
from insar_pipeline.pair.decisions import PairDecisions, apply_decisions, pair_settings
from insar_pipeline.topsapp.job import LOGS_DIR, PairJob
from insar_pipeline.topsapp.steps import finished_steps, phase_table
from insar_pipeline.topsapp.xml import (
    ORBIT_DIR,
    XML_NAME,
    link_orbit_files,
    read_properties,
    setting_changes,
    store_if_changed,
    topsapp_xml,
)

log = logging.getLogger(__name__)


def prepare_pair(
    settings: Settings, pair: Pair, orbit_files: Mapping[str, Path], dem: Path, omp_threads: int
) -> PairJob:
    """Make data/runs/<pair>/ ready to run and return its job.

    `orbit_files` maps product names to their orbit files. Raises InputError when an input is
    missing or when settings changed in a way that spoils finished steps.
    """
    run_dir = settings.run_dir(pair.id).resolve()
    requested, settings = settings, pair_settings(settings, run_dir)
    _check_inputs(pair, orbit_files, dem)
    (run_dir / LOGS_DIR).mkdir(parents=True, exist_ok=True)
    finished = finished_steps(run_dir)
    data = pair_xml(settings, pair, run_dir, dem)
    refused = _spoiling(settings, pair, run_dir / XML_NAME, data, finished)
    if refused:
        raise InputError(refused)
    _link_orbits(pair, run_dir, orbit_files, finished)
    store_if_changed(run_dir / XML_NAME, data)
    return PairJob(
        pair_id=pair.id,
        run_dir=run_dir,
        swaths=pair.swaths,
        phases=phase_table(settings.ionosphere),
        topsapp=settings.topsapp,
        max_retries=settings.max_retries,
        retry_backoff_s=settings.retry_backoff_s,
        phase_timeout_s=settings.phase_timeout_s,
        omp_threads=omp_threads,
        clean_level=settings.clean,
        # ESD=auto and ESD still on: the XML the pair switches to if it must drop ESD.
        no_esd_xml=pair_xml(
            apply_decisions(requested, PairDecisions(esd_disabled=True)), pair, run_dir, dem
        )
        if requested.esd == "auto" and settings.esd != "false"
        else None,
    )


def _check_inputs(pair: Pair, orbit_files: Mapping[str, Path], dem: Path) -> None:
    dem_xml = dem if dem.suffix == ".xml" else dem.with_name(dem.name + ".xml")
    needed: list[tuple[str, Path | None]] = [(f"product {p.name}", p.path) for p in pair.products]
    needed += [(f"orbit file of {p.name}", orbit_files.get(p.name)) for p in pair.products]
    needed.append(("DEM sidecar", dem_xml))
    for what, path in needed:
        if path is None or not Path(path).exists():
            raise InputError(f"pair {pair.id}: {what} is missing ({path or 'none chosen'})")


def pair_xml(settings: Settings, pair: Pair, run_dir: Path, dem: Path) -> bytes:
    """The pair's topsApp.xml for these (the pair's own) settings and its DEM (pure): the
    geocoding DEM is the coarse one when GEOCODE_DEM_ARCSEC asks for it."""
    return topsapp_xml(settings, pair, run_dir, dem, geocode_dem_path(settings, dem))


def spoiling_change(settings: Settings, pair: Pair, dem: Path) -> str | None:
    """Why the pair's finished steps forbid its new topsApp.xml, or None (nothing written).

    `settings` are the run's; the pair's own decisions are applied here. `dem` is the DEM the
    pair will get (from DEM planning, before any download).
    """
    run_dir = settings.run_dir(pair.id).resolve()
    finished = finished_steps(run_dir)
    xml = run_dir / XML_NAME
    if not finished or not xml.is_file():
        return None
    try:
        own = pair_settings(settings, run_dir)
        return _spoiling(own, pair, xml, pair_xml(own, pair, run_dir, dem), finished)
    except InputError as err:
        return str(err)


def _spoiling(
    settings: Settings, pair: Pair, xml: Path, data: bytes, finished: tuple[str, ...]
) -> str | None:
    existing = xml.read_bytes() if finished and xml.is_file() else data
    if existing == data:
        return None
    redo = (
        f"delete {settings.run_dir(pair.id)} (or move it) to redo it with the new settings, "
        "or restore the old value"
    )
    try:
        old = read_properties(existing)
    except ValueError as err:
        return f"pair {pair.id}: {xml} is {err}; {redo}"
    changes = setting_changes(old, read_properties(data))
    spoiling = [change for change in changes if change.step in finished]
    if spoiling:
        described = "; ".join(change.describe() for change in spoiling)
        return (
            f"pair {pair.id}: settings changed since its steps up to {finished[-1]} finished: "
            f"{described}. To avoid mixing results, {redo}"
        )
    for change in changes:
        log.info(
            "pair %s: %s changed before topsApp used it; the new value applies",
            pair.id,
            change.describe(),
            extra={"pair": pair.id},
        )
    return None


def _link_orbits(
    pair: Pair, run_dir: Path, orbit_files: Mapping[str, Path], finished: tuple[str, ...]
) -> None:
    chosen = [orbit_files[product.name] for product in pair.products]
    orbit_dir = run_dir / ORBIT_DIR
    kept = sorted(p.name for p in orbit_dir.glob("*")) if orbit_dir.is_dir() else []
    if "preprocess" in finished and kept and kept != sorted(p.name for p in chosen):
        # preprocess baked the old orbits into reference/IW*.xml: keep the folder consistent.
        log.warning(
            "pair %s keeps orbit files %s of its finished preprocessing (now chosen: %s); "
            "delete its run folder to reprocess with them",
            pair.id,
            ", ".join(kept),
            ", ".join(p.name for p in chosen),
            extra={"pair": pair.id},
        )
        return
    link_orbit_files(orbit_dir, chosen)
