"""Make a pair folder ready for topsApp (in the coordinator, before any pair runs).

The folder gets `logs/`, a private `orbits/` folder and `topsApp.xml`. A rerun with unchanged
settings rewrites nothing; settings that changed after topsApp already used them would mix two
configurations in one product, so they are refused with what to do instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from insar_pipeline.errors import InputError
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.pairs import Pair
from insar_pipeline.pair.decisions import pair_settings
from insar_pipeline.pair.job import LOGS_DIR, PairJob
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
    settings = pair_settings(settings, run_dir)
    _check_inputs(pair, orbit_files, dem)
    (run_dir / LOGS_DIR).mkdir(parents=True, exist_ok=True)
    finished = finished_steps(run_dir)
    data = topsapp_xml(settings, pair, run_dir, dem)
    _refuse_spoiling_changes(settings, pair, run_dir / XML_NAME, data, finished)
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
    )


def _check_inputs(pair: Pair, orbit_files: Mapping[str, Path], dem: Path) -> None:
    dem_xml = dem if dem.suffix == ".xml" else dem.with_name(dem.name + ".xml")
    needed: list[tuple[str, Path | None]] = [(f"product {p.name}", p.path) for p in pair.products]
    needed += [(f"orbit file of {p.name}", orbit_files.get(p.name)) for p in pair.products]
    needed.append(("DEM sidecar", dem_xml))
    for what, path in needed:
        if path is None or not Path(path).exists():
            raise InputError(f"pair {pair.id}: {what} is missing ({path or 'none chosen'})")


def _refuse_spoiling_changes(
    settings: Settings, pair: Pair, xml: Path, data: bytes, finished: tuple[str, ...]
) -> None:
    existing = xml.read_bytes() if finished and xml.is_file() else data
    if existing == data:
        return
    redo = (
        f"delete {settings.run_dir(pair.id)} (or move it) to redo it with the new settings, "
        "or restore the old value"
    )
    try:
        old = read_properties(existing)
    except ValueError as err:
        raise InputError(f"pair {pair.id}: {xml} is {err}; {redo}") from None
    changes = setting_changes(old, read_properties(data))
    spoiling = [change for change in changes if change.step in finished]
    if spoiling:
        described = "; ".join(change.describe() for change in spoiling)
        raise InputError(
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
