"""The orbit files already in `data/orbit_data`, as candidates for `select_orbit`.

Names are read once; a file's contents are checked (header + complete) only when it is about
to be chosen, so a warm run over hundreds of scenes reads a few kB per distinct file.
"""

from __future__ import annotations

import bisect
import logging
from datetime import datetime, timedelta
from pathlib import Path

from insar_pipeline.inputs.safe import Product
from insar_pipeline.orbits.files import (
    EofError,
    OrbitFile,
    parse_orbit_name,
    read_eof_header,
    select_orbit,
)

log = logging.getLogger(__name__)


class OrbitCache:
    """Orbit files in one folder, by name. A missing folder is an empty cache."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._files: dict[str, OrbitFile] = {}
        self._checked: set[str] = set()
        self._bad: set[str] = set()
        # mission -> (valid starts, files, longest validity), sorted by start; built lazily
        self._index: dict[str, tuple[list[datetime], list[OrbitFile], timedelta]] | None = None
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                orbit = parse_orbit_name(path.name, path)
                if orbit is not None and path.is_file():
                    self._files[orbit.name] = orbit

    def files(self) -> list[OrbitFile]:
        """Every file that looks like an orbit file and has not been found broken."""
        return [orbit for name, orbit in self._files.items() if name not in self._bad]

    def best(self, scene: Product, precise_only: bool = False) -> OrbitFile | None:
        """The file `select_orbit` picks for the scene among the sound cached files."""
        candidates = [
            o
            for o in self._around(scene.mission, scene.start)
            if o.name not in self._bad and (not precise_only or o.kind == "POEORB")
        ]
        while True:
            best = select_orbit(candidates, scene.mission, scene.start, scene.stop)
            if best is None or self._sound(best):
                return best
            candidates.remove(best)

    def _around(self, mission: str, start: datetime) -> list[OrbitFile]:
        """The files of `mission` valid from a time no earlier than the longest file before
        `start`: the only ones that may cover it (a bisection, not a scan of the folder:
        thousands of scenes against thousands of files)."""
        if self._index is None:
            self._index = {}
            for orbit in sorted(self._files.values(), key=lambda o: (o.valid_start, o.name)):
                starts, files, span = self._index.get(orbit.mission, ([], [], timedelta(0)))
                starts.append(orbit.valid_start)
                files.append(orbit)
                span = max(span, orbit.valid_stop - orbit.valid_start)
                self._index[orbit.mission] = (starts, files, span)
        starts, files, span = self._index.get(mission, ([], [], timedelta(0)))
        low = bisect.bisect_left(starts, start - span - timedelta(days=1))
        high = bisect.bisect_right(starts, start)
        return files[low:high]

    def get(self, name: str) -> OrbitFile | None:
        orbit = self._files.get(name)
        return orbit if orbit is not None and self._sound(orbit) else None

    def add(self, orbit: OrbitFile) -> None:
        """Record a file just downloaded (and fully checked) into the folder."""
        self._files[orbit.name] = orbit
        self._index = None  # rebuilt on the next look-up
        self._checked.add(orbit.name)
        self._bad.discard(orbit.name)

    def _sound(self, orbit: OrbitFile) -> bool:
        if orbit.name in self._checked:
            return True
        if orbit.name in self._bad or orbit.path is None:
            return False
        try:
            read_eof_header(orbit.path)
        except EofError as err:
            log.warning("ignoring a broken orbit file: %s", err)
            self._bad.add(orbit.name)
            return False
        self._checked.add(orbit.name)
        return True
