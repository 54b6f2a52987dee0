"""A deformation truth for the topsApp double: what a time series from its pairs must find.

With `ISCE_DOUBLE_DEFORMATION` set (`lat=52.1,lon=-128.4,radius=0.03,rate=-40,seasonal=3,
noise=0.1`, every key optional), each date has a known line-of-sight displacement field: a
subsidence bowl (Gaussian, `radius` degrees) deepening at `rate` mm/yr, plus a seasonal term of
`seasonal` mm in the same bowl. A pair's geocoded unwrapped phase is the difference of its two
dates' fields in radians with Sentinel-1's wavelength, in topsApp's sign (reference first:
phase = -4 pi / wavelength x (d(secondary) - d(reference)), MintPy's convention), plus `noise`
radians. `ISCE_DOUBLE_UNWRAP_ERROR` names pair folders given a 2 pi unwrapping error in one
region (its own connected component, label 2). A strip along the grid's east edge is ISCE's zero
fill (outside the swath). Every pair's `topsProc.xml` holds perpendicular baselines: each date a
seeded orbit offset, a pair the difference (secondary minus reference).
Needs numpy only; importable as `isce_double.double_deformation` by tests.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

ENV_TRUTH = "ISCE_DOUBLE_DEFORMATION"
ENV_UNWRAP_ERROR = "ISCE_DOUBLE_UNWRAP_ERROR"
# Sentinel-1's radar frequency as its annotation gives it (radarFrequency, Hz).
WAVELENGTH = 299_792_458.0 / 5.405000454334350e9
EPOCH = date(2025, 1, 1)
FILL_FRACTION = 0.06  # east strip of zero fill
ERROR_BOX = (0.10, 0.30, 0.10, 0.30)  # rows and columns (fractions) of the unwrapping error
DATE_RE = re.compile(r"_(\d{8})T\d{6}_")


@dataclass(frozen=True)
class Truth:
    lat: float = 52.1
    lon: float = -128.4
    radius: float = 0.03  # degrees (Gaussian sigma)
    rate: float = -40.0  # mm/yr in the line of sight, at the bowl's centre
    seasonal: float = 3.0  # mm amplitude, annual, at the bowl's centre
    noise: float = 0.1  # radians

    def bowl(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        import numpy as np

        east = (lon - self.lon) * math.cos(math.radians(self.lat))
        return np.exp(-((lat - self.lat) ** 2 + east**2) / (2 * self.radius**2))

    def displacement_m(self, day: date, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """LOS displacement (m, towards the satellite positive) on a day."""
        years = (day - EPOCH).days / 365.25
        mm = self.rate * years + self.seasonal * math.sin(2 * math.pi * years)
        return self.bowl(lat, lon) * mm / 1000

    def velocity_mm_yr(self, days: list[date], lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """The least-squares line through the true displacements on these days (mm/yr)."""
        import numpy as np

        years = np.array([(d - EPOCH).days / 365.25 for d in days])
        mm = np.array([self.rate * y + self.seasonal * math.sin(2 * math.pi * y) for y in years])
        slope = np.polyfit(years, mm, 1)[0]
        return self.bowl(lat, lon) * slope


def parse_truth(text: str) -> Truth:
    values = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        values[key.strip()] = float(value)
    return Truth(**values)


def truth_from_env(environ: Mapping[str, str]) -> Truth | None:
    text = environ.get(ENV_TRUTH)
    return None if text is None else parse_truth(text)


def scene_date(name: str) -> date:
    found = DATE_RE.search(name)
    if found is None:
        raise ValueError(f"no date in {name}")
    return datetime.strptime(found[1], "%Y%m%d").date()


def coordinates(
    lines: int, width: int, grid: tuple[float, float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre latitude and longitude of a (west, north, dlon, dlat) grid."""
    import numpy as np

    west, north, dlon, dlat = grid
    rows, cols = np.mgrid[0:lines, 0:width].astype("float64")
    return north + (rows + 0.5) * dlat, west + (cols + 0.5) * dlon


def pair_fields(
    truth: Truth,
    reference: date,
    secondary: date,
    lines: int,
    width: int,
    grid: tuple[float, float, float, float],
    seed: int,
    unwrap_error: bool = False,
) -> dict[str, np.ndarray]:
    """phase, coherence, amplitude and conncomp of a pair on a geocoded grid."""
    import numpy as np

    lat, lon = coordinates(lines, width, grid)
    rng = np.random.default_rng(seed % 2**63)
    change = truth.displacement_m(secondary, lat, lon) - truth.displacement_m(reference, lat, lon)
    phase = -4 * math.pi / WAVELENGTH * change + rng.normal(0, truth.noise, lat.shape)
    coherence = np.clip(0.9 + rng.normal(0, 0.03, lat.shape), 0.05, 1)
    amplitude = 40 + rng.gamma(2, 4, lat.shape)
    conncomp = np.ones(lat.shape, "uint8")
    if unwrap_error:
        r0, r1, c0, c1 = (
            round(f * n) for f, n in zip(ERROR_BOX, (lines, lines, width, width), strict=True)
        )
        phase[r0:r1, c0:c1] += 2 * math.pi
        conncomp[r0:r1, c0:c1] = 2
    fill = np.zeros(lat.shape, bool)
    fill[:, width - max(1, round(FILL_FRACTION * width)) :] = True
    for layer in (phase, coherence, amplitude):
        layer[fill] = 0
    conncomp[fill] = 0
    return {"phase": phase, "coherence": coherence, "amplitude": amplitude, "conncomp": conncomp}


def date_bperp(day: date) -> float:
    """A date's perpendicular orbit offset (m), seeded by the date (within +-120 m)."""
    digest = hashlib.sha256(day.isoformat().encode()).digest()
    return (int.from_bytes(digest[:4], "little") / 2**32 - 0.5) * 240


def baseline_xml(reference_safe: str | None, secondary_safe: str | None, counts: list) -> str:
    """topsProc.xml's Bperp lines (as real topsApp writes them) for swaths with common bursts."""
    if not reference_safe or not secondary_safe:
        return ""
    bperp = date_bperp(scene_date(secondary_safe)) - date_bperp(scene_date(reference_safe))
    lines = []
    for swath, count in enumerate(counts, 1):
        if not count:
            continue
        for end in ("first", "last"):
            value = bperp + 0.3 * (swath - 2) + (0.1 if end == "last" else 0.0)
            tag = f"IW-{swath}_Bperp_at_midrange_for_{end}_common_burst"
            lines.append(f"    <{tag}>{value!r}</{tag}>\n")
    return "".join(lines)


def deformation_fields(
    environ: Mapping[str, str],
    state: Mapping[str, object],
    pair_folder: str,
    lines: int,
    width: int,
    grid: tuple[float, float, float, float],
    seed: int,
) -> dict[str, np.ndarray] | None:
    """The geocode step's fields when a deformation truth is set (None otherwise)."""
    truth = truth_from_env(environ)
    if truth is None:
        return None
    errors = {name.strip() for name in environ.get(ENV_UNWRAP_ERROR, "").split(",")}
    reference = scene_date(str(state["referencesafe"]))
    secondary = scene_date(str(state["secondarysafe"]))
    return pair_fields(truth, reference, secondary, lines, width, grid, seed, pair_folder in errors)
