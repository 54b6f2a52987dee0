"""One lat/lon grid per track: read each pair's geocoded grid, pick the common one, resample.

Pairs of a track share their grid when they share the DEM and the geocode bounding box (the
default for a track: GEOCODE_BBOX, else REGION_OF_INTEREST). When grids still differ, the pairs
not on the common grid are resampled onto it with GDAL (nearest neighbour for connected
components, bilinear for phase and coherence) and reported. Grids follow GDAL's geotransform:
(X_FIRST, Y_FIRST) is the outer corner of the first pixel, as MintPy's ARIA loader takes it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from insar_pipeline.errors import InputError

if TYPE_CHECKING:
    from osgeo import gdal

log = logging.getLogger(__name__)

TOLERANCE_PX = 1e-3  # grids closer than this fraction of a pixel are the same grid
RESAMPLING = {"connectComponent": "near", "unwrapPhase": "bilinear", "coherence": "bilinear"}


@dataclass(frozen=True)
class Grid:
    """A north-up lat/lon grid (degrees)."""

    x_first: float
    y_first: float
    x_step: float
    y_step: float  # negative: north up
    width: int
    length: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north)."""
        east = self.x_first + self.x_step * self.width
        south = self.y_first + self.y_step * self.length
        return (self.x_first, south, east, self.y_first)

    def same_as(self, other: Grid) -> bool:
        if (self.width, self.length) != (other.width, other.length):
            return False
        return all(
            abs(a - b) <= TOLERANCE_PX * abs(step)
            for a, b, step in (
                (self.x_first, other.x_first, self.x_step),
                (self.y_first, other.y_first, self.y_step),
                (self.x_step, other.x_step, self.x_step),
                (self.y_step, other.y_step, self.y_step),
            )
        )

    def attributes(self) -> dict[str, str]:
        """MintPy's grid attributes."""
        return {
            "X_FIRST": repr(self.x_first),
            "Y_FIRST": repr(self.y_first),
            "X_STEP": repr(self.x_step),
            "Y_STEP": repr(self.y_step),
            "X_UNIT": "degrees",
            "Y_UNIT": "degrees",
            "WIDTH": str(self.width),
            "LENGTH": str(self.length),
            "FILE_LENGTH": str(self.length),
            "EPSG": "4326",
        }

    def lat_lon(self, row: float, col: float) -> tuple[float, float]:
        """Latitude and longitude of a pixel's centre."""
        return (
            self.y_first + (row + 0.5) * self.y_step,
            self.x_first + (col + 0.5) * self.x_step,
        )

    def row_col(self, lat: float, lon: float) -> tuple[int, int]:
        return (
            int(np.floor((lat - self.y_first) / self.y_step)),
            int(np.floor((lon - self.x_first) / self.x_step)),
        )


def raster_path(product: Path) -> str:
    """What GDAL opens for an ISCE product: its `.vrt` beside it when there is one."""
    vrt = product.with_name(product.name + ".vrt")
    return str(vrt if vrt.exists() else product)


def read_grid(product: Path) -> Grid:
    """The grid of a geocoded ISCE product (InputError when it is missing or not geocoded)."""
    from osgeo import gdal

    dataset = _open(product)
    x0, dx, rx, y0, ry, dy = dataset.GetGeoTransform()
    if rx or ry or dy >= 0:
        raise InputError(f"{product}: not a north-up lat/lon grid; was it geocoded?")
    grid = Grid(x0, y0, dx, dy, dataset.RasterXSize, dataset.RasterYSize)
    del dataset
    gdal.ErrorReset()
    return grid


def common_grid(grids: Mapping[str, Grid]) -> Grid:
    """The grid most pairs are on (ties: the earliest pair's)."""
    counts: Counter[int] = Counter()
    representatives: list[Grid] = []
    for grid in grids.values():
        for index, known in enumerate(representatives):
            if known.same_as(grid):
                counts[index] += 1
                break
        else:
            representatives.append(grid)
            counts[len(representatives) - 1] += 1
    best = max(range(len(representatives)), key=lambda i: (counts[i], -i))
    return representatives[best]


def off_grid(grids: Mapping[str, Grid], target: Grid) -> list[str]:
    """Pairs whose grid is not the target's, in the mapping's order."""
    return [pair_id for pair_id, grid in grids.items() if not grid.same_as(target)]


def read_on_grid(product: Path, band: int, target: Grid, method: str) -> np.ndarray:
    """One band of a product as float32 on the target grid (resampled when it is elsewhere).

    Zero is ISCE's fill value: it stays out of the interpolation and comes back as zero.
    """
    from osgeo import gdal

    source = _open(product)
    x0, dx, _, y0, _, dy = source.GetGeoTransform()
    here = Grid(x0, y0, dx, dy, source.RasterXSize, source.RasterYSize)
    if here.same_as(target):
        return source.GetRasterBand(band).ReadAsArray().astype(np.float32, copy=False)
    # One band, in memory (GDAL 3.6's Warp has no band selection). Not an unnamed VRT: its
    # sources, relative to the ISCE .vrt, would be looked up in the current folder.
    single = gdal.Translate(
        "", source, options=gdal.TranslateOptions(format="MEM", bandList=[band])
    )
    warped = gdal.Warp(
        "",
        single,
        options=gdal.WarpOptions(
            format="MEM",
            outputBounds=target.bounds,
            width=target.width,
            height=target.length,
            resampleAlg=method,
            srcNodata=0,
            dstNodata=0,
            outputType=gdal.GDT_Float32,
        ),
    )
    if warped is None:
        raise InputError(f"{product}: GDAL could not resample it: {gdal.GetLastErrorMsg()}")
    return warped.GetRasterBand(1).ReadAsArray().astype(np.float32, copy=False)


def _open(product: Path) -> gdal.Dataset:
    from osgeo import gdal

    gdal.UseExceptions()
    try:
        return gdal.Open(raster_path(product), gdal.GA_ReadOnly)
    except RuntimeError as err:
        raise InputError(f"{product}: GDAL cannot open it ({err}); is the pair finished?") from err


def grid_notes(track_of: Mapping[str, str], dem_of: Mapping[str, Path]) -> list[str]:
    """For `plan`: tracks whose pairs will not share one geocoded grid (pure).

    Pairs of a track share the grid when they share the DEM (the geocode box is a setting, the
    same for every pair); one line per track that uses several DEMs.
    """
    dems: dict[str, set[Path]] = {}
    for pair_id, track in track_of.items():
        if pair_id in dem_of:
            dems.setdefault(track, set()).add(dem_of[pair_id])
    return [
        f"time series: the pairs of relative orbit {track} use {len(paths)} DEMs, so their"
        " geocoded grids differ; `timeseries` resamples them onto one grid (set GEOCODE_BBOX"
        " and one ROI to avoid it)"
        for track, paths in sorted(dems.items())
        if len(paths) > 1
    ]


def describe_resampled(track: str, pair_ids: Sequence[str], target: Grid) -> list[str]:
    if not pair_ids:
        return []
    return [
        f"track {track}: {len(pair_ids)} pair(s) not on the track's grid"
        f" ({target.width} x {target.length} px from {target.x_first:.6f}, {target.y_first:.6f})"
        f" were resampled onto it: {', '.join(pair_ids)}"
    ]
