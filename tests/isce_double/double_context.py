"""State and context shared by the steps of the topsApp double.

State that real topsApp keeps in its TopsProc object (and so in PICKLE/<step>.xml) is a `State`
dict here; a key never set reads as None, so a step run on the empty state left by a missing
checkpoint fails the way ISCE does: `TypeError: 'NoneType' object is not subscriptable`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from double_config import Config
from double_faults import Faults
from double_rasters import seed_of, write_noise

# Burst sizes of the real 3-swath pair of realdata (topsProc.xml): width, lines.
BURST_SHAPES = {1: (22612, 1502), 2: (26395, 1513), 3: (25384, 1518)}
# Geocoded pixels per full-resolution burst pixel in the real run of ISCE2_CONTRACT.md section 8
# (5951 x 1918 geocoded for 2 bursts of 22612 x 1502): what keeps merged/ at ~10 % of a run.
GEOCODED_PER_BURST_PIXEL = 5951 * 1918 / (2 * 22612 * 1502)
OVERLAP_FRACTION = 0.1  # lines of a burst shared with the next one
DEFAULT_GEOCODE_LIST = (
    "merged/phsig.cor",
    "merged/topophase.cor",
    "merged/filt_topophase.unw",
    "merged/los.rdr",
    "merged/topophase.flat",
    "merged/filt_topophase.flat",
    "merged/filt_topophase_2stage.unw",
)


class State(dict):
    """TopsProc state: unset attributes are None."""

    def __missing__(self, key: str) -> None:
        return None


class SwathError(Exception):
    """A swath could not be extracted; preprocess reports it and carries on (exit 0)."""


@dataclass
class Context:
    config: Config
    cwd: Path
    state: State
    faults: Faults
    scale: float
    bursts: int
    step: str = ""

    def wrote(self) -> None:
        self.faults.wrote_file(self.step)

    def burst_shape(self, swath: int) -> tuple[int, int]:
        width, lines = BURST_SHAPES[swath]
        return max(4, round(width * self.scale)), max(2, round(lines * self.scale))

    def common(self) -> list[tuple[int, int, int]]:
        """(swath, first burst index, burst count) of swaths with common bursts."""
        counts = self.state["numberofcommonbursts"]
        starts = self.state["commonburststartreferenceindex"]
        return [(n, starts[n - 1], counts[n - 1]) for n in range(1, 4) if counts[n - 1] > 0]

    def noise(self, path: str, isce_type: str, bands: int, width: int, length: int, *key) -> None:
        write_noise(
            self.cwd / path, width, length, isce_type, bands, seed_of(path, *key), self.wrote
        )

    def merged_shape(self, range_looks: int, azimuth_looks: int) -> tuple[int, int]:
        """The merged grid of the common bursts, multilooked."""
        common = self.common()
        width = sum(self.burst_shape(n)[0] for n, _, _ in common) * 0.92  # swaths overlap
        lines = max(self.burst_shape(n)[1] * count for n, _, count in common) * 0.95
        return max(2, math.ceil(width / range_looks)), max(2, math.ceil(lines / azimuth_looks))

    def multilooked_shape(self) -> tuple[int, int]:
        """The merged grid at the XML's looks (ISCE's defaults 19 x 7)."""
        looks = (self.config.get("range looks", 19), self.config.get("azimuth looks", 7))
        return self.merged_shape(int(looks[0]), int(looks[1]))

    @property
    def pair_seed(self) -> int:
        return seed_of(self.state["referencesafe"], self.state["secondarysafe"])

    def geometry_seed(self) -> int:
        """A digest of the geometry `topo` wrote for the common bursts.

        ISCE reads that geometry after topo (fine offsets from lat/lon/hgt, merged los/lat/lon,
        the flattened interferogram), so products made from another geometry differ, and a
        missing raster is an error (`FileNotFoundError`, exit 1) as it is for ISCE.
        """
        digest = hashlib.sha256()
        folder = self.cwd / str(self.state["geometrydirectoryname"] or "geom_reference")
        for swath, first, count in self.common():
            for index in range(first, first + count):
                for name in ("lat", "lon", "hgt", "los"):
                    digest.update(
                        (folder / f"IW{swath}" / f"{name}_{index + 1:02d}.rdr").read_bytes()
                    )
        return int.from_bytes(digest.digest()[:8], "little")

    @property
    def product_seed(self) -> int:
        """The seed of everything made after topo: the two dates and the geometry."""
        return seed_of(self.pair_seed, self.geometry_seed())
