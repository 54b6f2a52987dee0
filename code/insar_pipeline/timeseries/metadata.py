"""MintPy's attributes of a track, from the SAFE annotation and topsApp's own outputs.

Nothing is invented: the wavelength comes from the annotation's radar frequency, the heading and
pass from its product information, the near range and pixel sizes from its image information
(times the looks topsApp used), the platform's height and the Earth's radius along the heading
from the orbit state vector at mid-scene (WGS84, as MintPy's ISCE loader takes them from ISCE's
orbit), and every pair's perpendicular baseline from its `topsProc.xml` (ISCE2_CONTRACT.md:
`IW-n_Bperp_at_midrange_for_{first,last}_common_burst`).
"""

from __future__ import annotations

import fnmatch
import math
import re
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from lxml import etree

from insar_pipeline.errors import InputError

SPEED_OF_LIGHT = 299_792_458.0  # m/s
WGS84_A = 6_378_137.0  # m
WGS84_E2 = 6.694_379_990_14e-3
BPERP_RE = re.compile(
    r"<IW-\d_Bperp_at_midrange_for_(?:first|last)_common_burst>\s*([-+0-9.eE]+)\s*<"
)


@dataclass(frozen=True)
class Annotation:
    """What MintPy needs from one swath's annotation XML."""

    source: str
    mission: str
    swath: int
    radar_frequency: float  # Hz
    pass_direction: str  # ASCENDING / DESCENDING
    heading: float  # degrees clockwise from north
    slant_range_time: float  # two-way, s, first pixel
    range_pixel_spacing: float  # m
    azimuth_pixel_spacing: float  # m
    first_line: datetime
    last_line: datetime
    position: tuple[float, float, float]  # ECEF m, state vector nearest mid-scene

    @property
    def wavelength(self) -> float:
        return SPEED_OF_LIGHT / self.radar_frequency

    @property
    def near_range(self) -> float:
        return self.slant_range_time * SPEED_OF_LIGHT / 2


def read_annotations(product: Path, swaths: tuple[int, ...], polarization: str) -> list[Annotation]:
    """The annotations of these swaths of a `.SAFE` folder or `.zip` (InputError if unreadable)."""
    found = []
    for swath in swaths:
        pattern = f"*annotation/s1?-iw{swath}-slc-{polarization.lower()}-*.xml"
        name, data = _read_member(product, pattern)
        try:
            found.append(_parse(data, f"{product.name}/{name}", swath))
        except (etree.XMLSyntaxError, TypeError, ValueError) as err:
            raise InputError(
                f"{product}/{name}: not a readable Sentinel-1 annotation ({err}); the time"
                " series needs the SAFE's annotation files"
            ) from err
    return found


def _read_member(product: Path, pattern: str) -> tuple[str, bytes]:
    if product.suffix.lower() == ".zip":
        with zipfile.ZipFile(product) as archive:
            names = [n for n in archive.namelist() if fnmatch.fnmatch(n.lower(), pattern)]
            if names:
                return names[0], archive.read(names[0])
    else:
        names = sorted(
            str(p.relative_to(product))
            for p in product.glob("annotation/*.xml")
            if fnmatch.fnmatch(str(p.relative_to(product)).lower(), pattern)
        )
        if names:
            return names[0], (product / names[0]).read_bytes()
    raise InputError(f"{product}: no annotation matching {pattern}; is the product complete?")


def _parse(data: bytes, source: str, swath: int) -> Annotation:
    root = etree.fromstring(data)

    def text(path: str) -> str:
        value = root.findtext(path)
        if value is None:
            raise ValueError(f"no {path}")
        return value.strip()

    info = "generalAnnotation/productInformation/"
    image = "imageAnnotation/imageInformation/"
    first = _time(text(image + "productFirstLineUtcTime"))
    last = _time(text(image + "productLastLineUtcTime"))
    return Annotation(
        source=source,
        mission=text("adsHeader/missionId"),
        swath=swath,
        radar_frequency=float(text(info + "radarFrequency")),
        pass_direction=text(info + "pass").upper(),
        heading=float(text(info + "platformHeading")),
        slant_range_time=float(text(image + "slantRangeTime")),
        range_pixel_spacing=float(text(image + "rangePixelSpacing")),
        azimuth_pixel_spacing=float(text(image + "azimuthPixelSpacing")),
        first_line=first,
        last_line=last,
        position=_position_at(root, first + (last - first) / 2),
    )


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _position_at(root: etree._Element, when: datetime) -> tuple[float, float, float]:
    best = None
    for orbit in root.iterfind("generalAnnotation/orbitList/orbit"):
        gap = abs((_time(orbit.findtext("time", "")) - when).total_seconds())
        if best is None or gap < best[0]:
            position = tuple(float(orbit.findtext(f"position/{a}", "nan")) for a in "xyz")
            best = (gap, position)
    if best is None:
        raise ValueError("no orbit state vector")
    x, y, z = best[1]
    return (x, y, z)


def geodetic(position: tuple[float, float, float]) -> tuple[float, float]:
    """WGS84 latitude (degrees) and height (m) of an ECEF position (Bowring, iterated)."""
    x, y, z = position
    p = math.hypot(x, y)
    lat = math.atan2(z, p * (1 - WGS84_E2))
    for _ in range(6):
        n = WGS84_A / math.sqrt(1 - WGS84_E2 * math.sin(lat) ** 2)
        height = p / math.cos(lat) - n
        lat = math.atan2(z, p * (1 - WGS84_E2 * n / (n + height)))
    n = WGS84_A / math.sqrt(1 - WGS84_E2 * math.sin(lat) ** 2)
    return math.degrees(lat), p / math.cos(lat) - n


def radius_along(lat_deg: float, heading_deg: float) -> float:
    """The WGS84 radius of curvature along a heading (ISCE's `pegRadCur`)."""
    lat, heading = math.radians(lat_deg), math.radians(heading_deg)
    w = 1 - WGS84_E2 * math.sin(lat) ** 2
    east = WGS84_A / math.sqrt(w)
    north = WGS84_A * (1 - WGS84_E2) / w**1.5
    return 1 / (math.cos(heading) ** 2 / north + math.sin(heading) ** 2 / east)


def track_attributes(
    annotations: list[Annotation], range_looks: int, azimuth_looks: int, polarization: str
) -> dict[str, str]:
    """MintPy's sensor attributes of a track, from its reference scene's annotations."""
    if not annotations:
        raise InputError("no annotation to take the time series attributes from")
    near = min(annotations, key=lambda a: a.slant_range_time)
    middle = annotations[len(annotations) // 2]
    lat, height = geodetic(middle.position)
    mid = middle.first_line + (middle.last_line - middle.first_line) / 2
    seconds = mid.hour * 3600 + mid.minute * 60 + mid.second + mid.microsecond / 1e6
    return {
        "PROCESSOR": "isce",
        "PLATFORM": "sen",
        "MISSION": middle.mission,
        "BEAM_MODE": "IW",
        "WAVELENGTH": repr(middle.wavelength),
        "ORBIT_DIRECTION": middle.pass_direction,
        "HEADING": repr(middle.heading),
        "ANTENNA_SIDE": "-1",
        "POLARIZATION": polarization.upper(),
        "STARTING_RANGE": repr(near.near_range),
        "RANGE_PIXEL_SIZE": repr(near.range_pixel_spacing * range_looks),
        "AZIMUTH_PIXEL_SIZE": repr(middle.azimuth_pixel_spacing * azimuth_looks),
        "RLOOKS": str(range_looks),
        "ALOOKS": str(azimuth_looks),
        "EARTH_RADIUS": repr(radius_along(lat, middle.heading)),
        "HEIGHT": repr(height),
        "CENTER_LINE_UTC": repr(seconds),
        "swathNumber": "".join(str(a.swath) for a in annotations),
    }


def perpendicular_baseline(topsproc: Path) -> float:
    """A pair's perpendicular baseline (m): the mean of topsApp's per-swath midrange values.

    topsProc.xml is not well-formed XML (ISCE writes tags such as
    `<Input_list_of_swaths_to_process:_>`), so its baseline elements are matched as text.
    """
    try:
        text = topsproc.read_text(errors="replace")
    except OSError as err:
        raise InputError(f"{topsproc}: cannot read it ({err}); is the pair finished?") from err
    values = [float(value) for value in BPERP_RE.findall(text)]
    if not values:
        raise InputError(f"{topsproc}: no perpendicular baseline (IW-n_Bperp_at_midrange_...)")
    return sum(values) / len(values)
