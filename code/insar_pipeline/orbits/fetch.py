"""Fetching the orbit files the cache lacks: the sources in order, each file downloaded once.

Runs under the orbit folder's lock (orbits.py). For each source in turn, the scenes still
without a file are resolved (which file?) and the distinct files downloaded in parallel; a
scene the source cannot serve waits for the next source. Lookups go out in parallel too, one
scene per mission and day at a time: the precise file found for one scene usually serves the
others of its day, which then need no lookup of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from insar_pipeline._http import HttpClient, download
from insar_pipeline.errors import CredentialError, ProvisioningError
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.safe import Product
from insar_pipeline.orbits.cache import OrbitCache
from insar_pipeline.orbits.files import OrbitFile, qualifies, read_eof, select_orbit
from insar_pipeline.orbits.sources import OrbitSource, RemoteOrbit

log = logging.getLogger(__name__)

DOWNLOAD_WORKERS = 4
LOOKUP_WORKERS = 4

Fetched = Callable[[OrbitFile, str, int], None]  # file (in the folder), source name, bytes
Plan = dict[str, tuple[Product, RemoteOrbit]]  # scene name -> (scene, file to download)


def open_sources(settings: Settings, http: HttpClient, now: datetime) -> list[OrbitSource]:
    """The clients of settings.orbit_sources, in that order."""
    from insar_pipeline.orbits.cdse import CdseSource
    from insar_pipeline.orbits.sources import AsfSource, AwsSource

    makers: dict[str, Callable[[], OrbitSource]] = {
        "asf": lambda: AsfSource(settings, http),
        "aws": lambda: AwsSource(settings, http, now),
        "cdse": lambda: CdseSource(settings, http),
    }
    return [makers[name]() for name in settings.orbit_sources]


def describe_window(scene: Product) -> str:
    return f"{scene.mission} {scene.start:%Y-%m-%dT%H:%M:%S}/{scene.stop:%H:%M:%S}"


class Fetcher:
    """Asks the sources, in order, for the scenes the cache cannot serve, and downloads."""

    def __init__(self, settings: Settings, cache: OrbitCache, now: datetime, fetched: Fetched):
        self._settings = settings
        self._cache = cache
        self._now = now
        self._fetched = fetched
        self._files: dict[str, Path] = {}
        self._reasons: dict[str, list[str]] = {}

    def run(self, scenes: list[Product]) -> tuple[dict[str, Path], dict[str, str]]:
        """Product name -> file, and product name -> why none (CredentialError propagates)."""
        self._reasons = {scene.name: [] for scene in scenes}
        http = HttpClient()
        try:
            for source in open_sources(self._settings, http, self._now):
                pending = [scene for scene in scenes if scene.name not in self._files]
                if not pending:
                    break
                self._download_all(source, self._resolve(source, pending))
        finally:
            http.close()
        failures = {}
        for scene in scenes:
            if scene.name in self._files:
                continue
            fallback = self._cache.best(scene)  # a cached RESORB beats nothing
            if fallback is not None and fallback.path is not None:
                log.info("%s: no precise orbit found; using cached %s", scene.name, fallback.name)
                self._files[scene.name] = fallback.path
            else:
                reasons = "; ".join(self._reasons[scene.name]) or "no source tried"
                failures[scene.name] = f"no orbit file for {describe_window(scene)}: {reasons}"
                log.warning("%s: %s", scene.name, failures[scene.name])
        return self._files, failures

    def _resolve(self, source: OrbitSource, scenes: list[Product]) -> Plan:
        plan: Plan = {}
        todo = list(scenes)
        while todo:
            todo = [scene for scene in todo if not self._at_hand(scene, plan)]
            firsts: dict[tuple[str, object], Product] = {}
            for scene in todo:
                firsts.setdefault((scene.mission, scene.start.date()), scene)
            wave = list(firsts.values())
            if not wave:
                break
            with ThreadPoolExecutor(min(LOOKUP_WORKERS, len(wave))) as pool:
                found = list(pool.map(lambda scene: self._find(source, scene), wave))
            for scene, remote in zip(wave, found, strict=True):
                if remote is not None:
                    self._settle(scene, remote, plan)
            asked = {scene.name for scene in wave}
            todo = [scene for scene in todo if scene.name not in asked]
        return plan

    def _at_hand(self, scene: Product, plan: Plan) -> bool:
        """Settle a scene with a precise file already cached or planned, if one serves it."""
        cached = self._cache.best(scene, precise_only=True)
        if cached is not None and cached.path is not None:
            self._files[scene.name] = cached.path
            return True
        planned = {remote.orbit.name: remote for _, remote in plan.values()}
        precise = [remote.orbit for remote in planned.values() if remote.orbit.kind == "POEORB"]
        reuse = select_orbit(precise, scene.mission, scene.start, scene.stop)
        if reuse is not None:
            plan[scene.name] = (scene, planned[reuse.name])
        return reuse is not None

    def _settle(self, scene: Product, remote: RemoteOrbit, plan: Plan) -> None:
        cached = self._cache.get(remote.orbit.name)
        if cached is None and remote.orbit.kind == "RESORB":
            cached = self._cache.best(scene)  # keep the RESORB we have rather than fetch another
        if cached is not None and cached.path is not None:
            self._files[scene.name] = cached.path
        else:
            plan[scene.name] = (scene, remote)

    def _find(self, source: OrbitSource, scene: Product) -> RemoteOrbit | None:
        reasons = self._reasons[scene.name]
        try:
            remote = source.find(scene)
        except CredentialError:
            raise
        except ProvisioningError as err:
            reasons.append(str(err))
            return None
        if remote is None:
            reasons.append(f"{source.name}: has no orbit file for this scene")
            return None
        if not qualifies(remote.orbit, scene.mission, scene.start, scene.stop):
            reasons.append(f"{source.name}: offered {remote.orbit.name}, too short for the scene")
            return None
        return remote

    def _download_all(self, source: OrbitSource, plan: Plan) -> None:
        distinct = {remote.orbit.name: remote for _, remote in plan.values()}
        if not distinct:
            return
        results: dict[str, OrbitFile | ProvisioningError] = {}
        with ThreadPoolExecutor(min(DOWNLOAD_WORKERS, len(distinct))) as pool:
            futures = {name: pool.submit(self._download, source, r) for name, r in distinct.items()}
        for name, future in futures.items():
            try:
                orbit, size = future.result()
            except ProvisioningError as err:  # CredentialError too: raised below, once the
                results[name] = err  # files that did arrive are recorded
                continue
            results[name] = orbit
            self._cache.add(orbit)
            self._fetched(orbit, source.name, size)
        refused = [err for err in results.values() if isinstance(err, CredentialError)]
        if refused:
            raise refused[0]
        for scene_name, (scene, remote) in plan.items():
            result = results[remote.orbit.name]
            if isinstance(result, ProvisioningError):
                self._reasons[scene_name].append(str(result))
            elif result.path is not None and qualifies(result, *_window(scene)):
                self._files[scene_name] = result.path  # the content's window, checked again

    def _download(self, source: OrbitSource, remote: RemoteOrbit) -> tuple[OrbitFile, int]:
        name = remote.orbit.name
        target = self._settings.orbit_dir / name
        orbit, size = download(
            target,
            lambda temporary: source.fetch(remote, temporary),
            # EofError (a ValueError, retried): an HTML page, a cut body, another file
            lambda temporary: read_eof(temporary.read_bytes(), name),
            f"{source.name}: download of {name}",
        )
        log.info("orbit %s downloaded from %s (%d bytes)", name, source.name, size)
        return orbit.at(target), size


def _window(scene: Product) -> tuple[str, datetime, datetime]:
    return scene.mission, scene.start, scene.stop
