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


def pair_boxes(pairs: Sequence[Pair]) -> list[BBox]:
    """`pair_box` of each pair, each product's footprint read once (a scene is in many pairs)."""
    products: dict[str, BBox] = {}
    result = []
    for pair in pairs:
        if pair.reference.name not in products or pair.secondary.name not in products:
            pair_box(pair)  # the antimeridian check, once per new product
            for product in pair.products:
                products.setdefault(product.name, product.bbox)
        result.append(products[pair.reference.name].union(products[pair.secondary.name]))
    return result


def region_groups(pairs: Sequence[Pair]) -> list[tuple[BBox, tuple[str, ...]]]:
    """Pairs whose footprints overlap, grouped; each group with its union box.

    Two pairs are in one group when a chain of pairs with overlapping boxes links them (the
    transitive closure of `BBox.intersects`). About linear in pairs (`overlap_components`).
    Groups come in the order of their first pair; pair ids keep the input order.
    """
    boxes = pair_boxes(pairs)
    labels = overlap_components(boxes)
    groups: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(label, []).append(index)
    result = []
    for members in groups.values():
        member_boxes = [boxes[index] for index in members]
        union = BBox(
            min(box.south for box in member_boxes),
            max(box.north for box in member_boxes),
            min(box.west for box in member_boxes),
            max(box.east for box in member_boxes),
        )
        result.append((union, tuple(pairs[index].id for index in members)))
    return result


def overlap_components(boxes: Sequence[BBox]) -> list[int]:
    """A component label per box: boxes linked by a chain of overlaps share one (pure).

    Union-find over the distinct boxes, found through a grid of cells about half a typical box
    wide: boxes that both cover a whole cell overlap (joined without a test), and only the boxes
    that cover a cell partly are tested against each other, skipping those already joined. So
    the boxes of one frame (thousands of slightly different footprints) cost about one step
    each, not one test per pair of them. Labels are indices of the distinct boxes.
    """
    distinct: dict[BBox, int] = {}
    of_box = [distinct.setdefault(box, len(distinct)) for box in boxes]
    unique = list(distinct)
    forest = _Forest(len(unique))
    if len(unique) > 1:
        _join_by_cells(unique, forest)
    return [forest.root(index) for index in of_box]


MAX_CELLS_PER_BOX = 4096  # a box much larger than the cells is tested against every box


class _Forest:
    """Union-find with path halving."""

    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def root(self, index: int) -> int:
        parent = self.parent
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    def join(self, first: int, second: int) -> None:
        a, b = self.root(first), self.root(second)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def _join_by_cells(boxes: list[BBox], forest: _Forest) -> None:
    sizes = sorted(min(box.north - box.south, box.east - box.west) for box in boxes)
    cell = max(sizes[len(sizes) // 2] / 2, 1e-6)
    full: dict[tuple[int, int], list[int]] = {}
    partial: dict[tuple[int, int], list[int]] = {}
    large = []
    for index, box in enumerate(boxes):
        # One cell more where a float edge may round: a partial member is always tested.
        rows = range(math.floor(box.south / cell - 1e-9), math.floor(box.north / cell + 1e-9) + 1)
        cols = range(math.floor(box.west / cell - 1e-9), math.floor(box.east / cell + 1e-9) + 1)
        if len(rows) * len(cols) > MAX_CELLS_PER_BOX:
            large.append(index)
            continue
        for row in rows:
            inside_rows = box.south <= row * cell and (row + 1) * cell <= box.north
            for col in cols:
                covers = inside_rows and box.west <= col * cell and (col + 1) * cell <= box.east
                (full if covers else partial).setdefault((row, col), []).append(index)
    for members in full.values():  # all cover one cell of positive area: they overlap
        for index in members[1:]:
            forest.join(members[0], index)
    for key, members in partial.items():
        covering = full.get(key)
        if covering:
            anchor = boxes[covering[0]]
            rest = [index for index in members if not _joined_if(boxes, forest, index, anchor,
                                                                  covering[0])]  # fmt: skip
        else:
            rest = members
        _join_tested(boxes, forest, rest)
    for index in large:
        for other in range(len(boxes)):
            if other != index and boxes[index].intersects(boxes[other]):
                forest.join(index, other)


def _joined_if(boxes: list[BBox], forest: _Forest, index: int, anchor: BBox, at: int) -> bool:
    if boxes[index].intersects(anchor):
        forest.join(index, at)
        return True
    return False


def _join_tested(boxes: list[BBox], forest: _Forest, members: list[int]) -> None:
    """Test the boxes of one cell against each other, except those already joined."""
    if len(members) < 2:
        return
    components = len({forest.root(index) for index in members})
    for position, index in enumerate(members):
        box = boxes[index]
        for other in members[position + 1 :]:
            if components == 1:
                return
            if forest.root(index) != forest.root(other) and box.intersects(boxes[other]):
                forest.join(index, other)
                components -= 1


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
