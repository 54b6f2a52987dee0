"""DEM planning math: which boxes, on which grid, split into which OpenTopography requests.

Pure functions (data in, data out), no request and no file: `dem.py` does the I/O.

A DEM grid is held in whole arc-seconds so that rounding, containment and tiling are exact.
Pixel *centres* sit on multiples of the posting (GLO-30, SRTM and NASADEM are all posted that
way), and the grid's edges are pixel centres: ISCE2's DEM convention, where `startingValue` is
the centre of the first pixel and a box [S, N] holds (N - S) / posting + 1 rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from insar_pipeline.errors import InputError
from insar_pipeline.geo import BBox
from insar_pipeline.inputs.pairs import Pair

ARCSEC_PER_DEG = 3600
EARTH_RADIUS_KM = 6371.0072  # authalic radius: area of a lat/lon box on a sphere of equal area
# OpenTopography computes the request area its own way; stay this far under its limit.
AREA_SAFETY = 0.95
MAX_TILES = 400  # a box needing more requests than this is surely a mistake (a whole continent)
EGM2008 = "EGM2008"
EGM96 = "EGM96"


@dataclass(frozen=True)
class DemSpec:
    """What the pipeline knows about one OpenTopography `demtype`."""

    name: str
    posting_arcsec: int  # pixel spacing
    max_area_km2: float  # per-request area limit of the globaldem API
    geoid: str | None  # vertical datum of the heights; None: already WGS84 ellipsoid heights


_SMALL, _LARGE = 450_000.0, 4_050_000.0
DEM_SPECS: dict[str, DemSpec] = {
    spec.name: spec
    for spec in (
        DemSpec("COP30", 1, _SMALL, EGM2008),
        DemSpec("COP90", 3, _LARGE, EGM2008),
        DemSpec("NASADEM", 1, _SMALL, EGM96),
        DemSpec("SRTMGL1", 1, _SMALL, EGM96),
        DemSpec("SRTMGL3", 3, _LARGE, EGM96),
        DemSpec("AW3D30", 1, _SMALL, EGM96),
        DemSpec("SRTMGL1_E", 1, _SMALL, None),
        DemSpec("SRTMGL3_E", 3, _LARGE, None),
        DemSpec("AW3D30_E", 1, _SMALL, None),
    )
}


def dem_spec(dem_type: str) -> DemSpec:
    """The spec of a DEM type, or InputError for a type whose vertical datum we cannot convert."""
    spec = DEM_SPECS.get(dem_type)
    if spec is None:
        raise InputError(
            f"DEM_TYPE={dem_type}: the pipeline cannot turn this DEM into the WGS84 ellipsoid "
            f"heights ISCE2 needs (its grid or vertical datum is not one it handles); "
            f"use one of {', '.join(DEM_SPECS)} (COP30 is the default)"
        )
    return spec


@dataclass(frozen=True, order=True)
class DemGrid:
    """A north-up lat/lon grid in whole arc-seconds; edges are pixel centres."""

    south: int
    north: int
    west: int
    east: int
    posting: int

    @property
    def width(self) -> int:
        return (self.east - self.west) // self.posting + 1

    @property
    def length(self) -> int:
        return (self.north - self.south) // self.posting + 1

    @property
    def bbox(self) -> BBox:
        return BBox(
            *(value / ARCSEC_PER_DEG for value in (self.south, self.north, self.west, self.east))
        )

    @property
    def delta_deg(self) -> float:
        return self.posting / ARCSEC_PER_DEG

    def contains(self, other: DemGrid) -> bool:
        return (
            self.posting == other.posting
            and self.south <= other.south
            and other.north <= self.north
            and self.west <= other.west
            and other.east <= self.east
        )


def grid_around(box: BBox, posting: int) -> DemGrid:
    """The smallest grid of this posting whose edges hold `box` (rounded outward)."""

    # The tolerance keeps 33.95 * 3600 = 122219.99999999999 from rounding a whole step out.
    def down(deg: float) -> int:
        return math.floor(deg * ARCSEC_PER_DEG / posting + 1e-6) * posting

    def up(deg: float) -> int:
        return math.ceil(deg * ARCSEC_PER_DEG / posting - 1e-6) * posting

    return DemGrid(down(box.south), up(box.north), down(box.west), up(box.east), posting)


def area_km2(box: BBox) -> float:
    """Area of a lat/lon box on the authalic sphere."""
    band = math.sin(math.radians(box.north)) - math.sin(math.radians(box.south))
    return EARTH_RADIUS_KM**2 * math.radians(box.east - box.west) * band


def split_tiles(grid: DemGrid, max_area_km2: float) -> tuple[BBox, ...]:
    """The requests that fetch `grid`: equal rows x columns of tiles, each under the area limit.

    Each request is padded by one posting on every side so that the pixels on the grid's
    edges are inside whatever the service returns; the padding counts towards the limit.
    Tiles are listed north to south, west to east.
    """
    limit = max_area_km2 * AREA_SAFETY
    for count in range(1, MAX_TILES + 1):
        for rows in _divisors(count):
            split = _split(grid, rows, count // rows)
            if split is not None and _largest_area(*split) <= limit:
                bands, spans = split
                return tuple(BBox(*band, *span) for band in reversed(bands) for span in spans)
    raise InputError(
        f"the DEM box {grid.bbox} needs more than {MAX_TILES} OpenTopography requests; "
        "set a smaller ROI or process fewer regions per run"
    )


def _largest_area(bands: list[tuple[float, float]], spans: list[tuple[float, float]]) -> float:
    # Every latitude band holds one tile of each longitude span: the widest is its largest.
    widest = max(east - west for west, east in spans)
    sines = (
        math.sin(math.radians(north)) - math.sin(math.radians(south)) for south, north in bands
    )
    return EARTH_RADIUS_KM**2 * math.radians(widest) * max(sines)


def _divisors(count: int) -> list[int]:
    # Prefer splits whose tiles are close to square in degrees: fewer, larger requests.
    divisors = [d for d in range(1, count + 1) if count % d == 0]
    return sorted(divisors, key=lambda rows: abs(math.log(rows / (count // rows))))


def _split(
    grid: DemGrid, rows: int, columns: int
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]] | None:
    """(south, north) of each band and (west, east) of each column, padded, in degrees."""
    lat_edges = _edges(grid.south, grid.north, rows, grid.posting)
    lon_edges = _edges(grid.west, grid.east, columns, grid.posting)
    if lat_edges is None or lon_edges is None:
        return None
    pad, degree = grid.posting, ARCSEC_PER_DEG
    bands = [
        (max(-90 * degree, south - pad) / degree, min(90 * degree, north + pad) / degree)
        for south, north in zip(lat_edges, lat_edges[1:], strict=False)
    ]
    spans = [
        (max(-180 * degree, west - pad) / degree, min(180 * degree, east + pad) / degree)
        for west, east in zip(lon_edges, lon_edges[1:], strict=False)
    ]
    return bands, spans


def _edges(low: int, high: int, parts: int, posting: int) -> list[int] | None:
    steps = (high - low) // posting
    if parts > max(steps, 1):
        return None
    return [low + round(steps * k / parts) * posting for k in range(parts + 1)]


def check_box(box: BBox, what: str) -> None:
    """InputError when a DEM box wraps the antimeridian or reaches a pole."""
    if box.west <= -180 or box.east >= 180:
        raise InputError(
            f"{what}: the DEM box {box} reaches the antimeridian (±180° longitude), which "
            "the pipeline does not handle; process the scenes on each side separately"
        )
    if box.south <= -90 or box.north >= 90:
        raise InputError(
            f"{what}: the DEM box {box} reaches a pole, which the pipeline does not handle"
        )


def pair_box(pair: Pair) -> BBox:
    """The union of a pair's two footprints; InputError when a footprint crosses ±180°."""
    for product in pair.products:
        lons = [lon for _, lon in product.footprint]
        if max(lons) - min(lons) > 180:
            raise InputError(
                f"pairs.txt:{pair.line}: pair {pair.id}: {product.name} crosses the antimeridian "
                "(±180° longitude), which the pipeline does not handle"
            )
    return pair.reference.bbox.union(pair.secondary.bbox)


def region_groups(pairs: Sequence[Pair]) -> list[tuple[BBox, tuple[str, ...]]]:
    """Pairs whose footprints overlap, grouped (union-find); each group with its union box.

    Groups come in the order of their first pair; pair ids keep the input order.
    """
    boxes = [pair_box(pair) for pair in pairs]
    parent = list(range(len(pairs)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    for i in range(len(pairs)):
        for j in range(i + 1, len(pairs)):
            if boxes[i].intersects(boxes[j]):
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for index in range(len(pairs)):
        groups.setdefault(root(index), []).append(index)
    result = []
    for members in groups.values():
        union = boxes[members[0]]
        for index in members[1:]:
            union = union.union(boxes[index])
        result.append((union, tuple(pairs[index].id for index in members)))
    return result


def _lat_name(degrees: int) -> str:
    return f"{'N' if degrees >= 0 else 'S'}{abs(degrees):02d}"


def _lon_name(degrees: int) -> str:
    return f"{'E' if degrees >= 0 else 'W'}{abs(degrees):03d}"


def isce_stem(grid: DemGrid) -> str:
    """ISCE's DEM name for the whole degrees around the grid, e.g. demLat_N38_N41_Lon_E033_E038."""
    box = grid.bbox
    south, north = math.floor(box.south), math.ceil(box.north)
    west, east = math.floor(box.west), math.ceil(box.east)
    return f"demLat_{_lat_name(south)}_{_lat_name(north)}_Lon_{_lon_name(west)}_{_lon_name(east)}"
