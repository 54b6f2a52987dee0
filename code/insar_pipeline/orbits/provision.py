"""Orbit provisioning for a run (SPEC.md section 5): cache first, then the sources in order.

Once per run, before any pair starts: every scene gets the orbit file `select_orbit` picks,
from `data/orbit_data` when a good one is there (no request at all), else from the first
source of ORBIT_SOURCES that has one. Downloads go to a hidden temp file in the same folder,
are checked, then renamed; a lock on the folder makes concurrent runs and processes wait for
each other instead of downloading the same file twice. A scene no source can serve is a
failure entry (its pairs fail, the others run); refused credentials raise CredentialError.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from insar_pipeline._io import folder_lock, remove_partials
from insar_pipeline.download import Download
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.safe import Product
from insar_pipeline.orbits.cache import OrbitCache
from insar_pipeline.orbits.fetch import Fetcher
from insar_pipeline.orbits.files import OrbitFile, precise_expected

log = logging.getLogger(__name__)

LOCK_NAME = ".orbits.lock"


@dataclass(frozen=True)
class OrbitProvision:
    files: dict[str, Path]  # product name -> the chosen .EOF in settings.orbit_dir
    failures: dict[str, str]  # product name -> one-line reason (no secrets)


def provision_orbits(
    settings: Settings,
    products: Iterable[Product],
    on_download: Callable[[Download], None] | None = None,
    *,
    now: datetime | None = None,
) -> OrbitProvision:
    """Give every product an orbit file in `settings.orbit_dir`, downloading what is missing.

    Parameters
    ----------
    settings
        The run's settings (orbit_dir, orbit_sources, the services' URLs, CDSE credentials).
    products
        The scenes of all pairs of the run; duplicates are fine.
    on_download
        Called (in the calling thread) with each file downloaded, for the run's ledger.
    now
        The current time (tests fix it): decides whether a precise file should exist yet.

    Returns
    -------
    OrbitProvision
        The chosen file per product name, and a one-line reason for each product without one.

    Raises
    ------
    CredentialError
        Copernicus Data Space refused the CDSE credentials (they are named, never shown).
    ProvisioningError
        The orbit folder cannot be created or locked.
    """
    scenes = _unique(products)
    now = now or datetime.now(timezone.utc)
    files, pending = _settle(OrbitCache(settings.orbit_dir), scenes, now)
    failures: dict[str, str] = {}
    if pending:
        waiting = f"waiting for another process downloading orbit files into {settings.orbit_dir}"
        with folder_lock(settings.orbit_dir / LOCK_NAME, waiting):
            remove_partials(settings.orbit_dir)  # under the lock: leftovers of a killed run
            cache = OrbitCache(settings.orbit_dir)  # again: another process may have filled it
            files, pending = _settle(cache, scenes, now)
            if pending:
                fetcher = Fetcher(settings, cache, now, _reporter(on_download))
                fetched, failures = fetcher.run(pending)
                files.update(fetched)
    log.info(
        "orbits: %d scenes, %d served by the cache, %d fetched, %d without orbit",
        len(scenes), len(scenes) - len(pending), len(pending) - len(failures), len(failures),
    )  # fmt: skip
    return OrbitProvision(files, failures)


def describe_orbit_plan(
    settings: Settings, products: Iterable[Product], *, now: datetime | None = None
) -> dict[str, str]:
    """What `provision_orbits` would do per scene, without a request or a write.

    Returns
    -------
    dict[str, str]
        Product name -> "cached: <file name>", or "download: first try <source>" (with
        "(else cached <file>)" when a restituted file is cached but a precise one should
        exist by now).
    """
    now = now or datetime.now(timezone.utc)
    cache = OrbitCache(settings.orbit_dir)
    first = settings.orbit_sources[0]
    plan = {}
    for scene in _unique(products):
        best = cache.best(scene)
        if best is not None and _final(best, scene, now):
            plan[scene.name] = f"cached: {best.name}"
        elif best is not None:
            plan[scene.name] = f"download: first try {first} (else cached {best.name})"
        else:
            plan[scene.name] = f"download: first try {first}"
    return plan


def _reporter(
    on_download: Callable[[Download], None] | None,
) -> Callable[[OrbitFile, str, int], None]:
    def report(orbit: OrbitFile, source: str, size: int) -> None:
        if on_download is not None and orbit.path is not None:
            on_download(Download(orbit.name, source, size, orbit.path))

    return report


def _unique(products: Iterable[Product]) -> list[Product]:
    return list({product.name: product for product in products}.values())


def _final(orbit: OrbitFile, scene: Product, now: datetime) -> bool:
    """A cached file ends the search unless it is a RESORB and a POEORB should exist by now."""
    return orbit.kind == "POEORB" or not precise_expected(scene.stop, now)


def _settle(
    cache: OrbitCache, scenes: list[Product], now: datetime
) -> tuple[dict[str, Path], list[Product]]:
    files: dict[str, Path] = {}
    pending = []
    for scene in scenes:
        best = cache.best(scene)
        if best is not None and best.path is not None and _final(best, scene, now):
            files[scene.name] = best.path
        else:
            pending.append(scene)
    return files, pending
