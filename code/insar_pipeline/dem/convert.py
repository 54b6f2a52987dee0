"""Tiles -> one ISCE DEM in WGS84 ellipsoid heights, streamed in row blocks.

The tiles are mosaicked by a GDAL VRT (nothing is copied), read a block of rows at a time,
shifted from geoid to ellipsoid heights (h = H + N, N the geoid undulation), nodata (ocean,
voids) set to 0 as ISCE2 expects, and appended to the raw float32 file. Memory stays at a few
blocks whatever the DEM size.

N comes from PROJ (`vgridshift` on the geoid grid PROJ has installed: EGM2008 or EGM96) at the
nodes of a lattice, and is interpolated bilinearly in between. PROJ itself interpolates its grid
bilinearly between nodes on multiples of 2.5' (EGM2008) or 15' (EGM96); the lattice holds every
multiple of LATTICE_ARCSEC (which divides both) plus the DEM's edges, so each lattice cell lies
inside one grid cell and the result equals PROJ's per-pixel value (tested), for a few hundred
PROJ calls per degree instead of millions. A missing grid is an error naming it, never a
silent "no correction".
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal, osr

from insar_pipeline._io import atomic_output
from insar_pipeline.dem.grid import EGM96, EGM2008, DemGrid
from insar_pipeline.errors import ProvisioningError
from insar_pipeline.isce_image import IsceDemImage, write_sidecars

gdal.UseExceptions()
osr.UseExceptions()
log = logging.getLogger(__name__)

BLOCK_PIXELS = 1 << 20  # pixels per block of rows (4 MB of float32)
LATTICE_ARCSEC = 30  # divides the 150" EGM2008 and 900" EGM96 grid spacings
GDAL_CACHE_BYTES = 32 << 20
ALIGN_TOLERANCE_PX = 1e-3

# PROJ's file names: the current CDN name first, then the legacy name older proj-data ships.
GEOID_GRIDS: dict[str, tuple[str, ...]] = {
    EGM2008: ("us_nga_egm08_25.tif", "egm08_25.gtx"),
    EGM96: ("us_nga_egm96_15.tif", "egm96_15.gtx"),
}


def find_geoid_grid(geoid: str) -> Path | None:
    """The installed PROJ grid file of a geoid model, searched where PROJ searches."""
    for folder in osr.GetPROJSearchPaths() or []:
        for name in GEOID_GRIDS[geoid]:
            candidate = Path(folder) / name
            if candidate.is_file():
                return candidate
    return None


def proj_network_enabled() -> bool:
    """Whether the user lets PROJ fetch grids from its CDN (PROJ_NETWORK=ON)."""
    if os.environ.get("PROJ_NETWORK", "").strip().upper() == "ON":
        return True
    try:
        return bool(osr.GetPROJEnableNetwork())
    except (AttributeError, RuntimeError):
        return False


def geoid_grid_to_use(geoid: str) -> Path | None:
    """The installed grid file; else, when PROJ_NETWORK=ON, the grid's bare name, which PROJ
    then reads from cdn.proj.org (only the parts it needs, cached in its cache.db); else None."""
    installed = find_geoid_grid(geoid)
    if installed is not None or not proj_network_enabled():
        return installed
    name = GEOID_GRIDS[geoid][0]
    log.info("PROJ's %s grid %s is not installed: PROJ_NETWORK=ON, PROJ fetches it", geoid, name)
    osr.SetPROJEnableNetwork(True)
    return Path(name)


def missing_grid_message(geoid: str, dem_type: str) -> str:
    name = GEOID_GRIDS[geoid][0]
    folders = ", ".join(osr.GetPROJSearchPaths() or []) or "PROJ's data folder"
    return (
        f"DEM_TYPE={dem_type} heights are above the {geoid} geoid and ISCE2 needs WGS84 "
        f"ellipsoid heights, but PROJ's {geoid} grid {name} is not installed (searched {folders}). "
        f"Get it with `projsync --file {name}` (needs internet), or download "
        f"https://cdn.proj.org/{name} into one of those folders, or install conda-forge's "
        "proj-data (the Docker image has it; Debian's proj-data lacks it); or set PROJ_NETWORK=ON "
        "in the environment to let PROJ fetch the parts it needs from cdn.proj.org while the DEM "
        "is made; or choose an ellipsoidal DEM_TYPE such as SRTMGL1_E."
    )


class GeoidUndulation:
    """N (metres) on the rows of a DemGrid, from PROJ at a lattice and linear in between."""

    def __init__(self, grid_file: Path, grid: DemGrid) -> None:
        options = osr.CoordinateTransformationOptions()
        options.SetOperation(
            "+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad "
            f"+step +proj=vgridshift +grids={grid_file} +multiplier=1 "
            "+step +proj=unitconvert +xy_in=rad +xy_out=deg"
        )
        try:
            transform = osr.CoordinateTransformation(None, None, options)
        except RuntimeError as err:
            raise ProvisioningError(f"PROJ cannot use the geoid grid {grid_file}: {err}") from err
        if transform is None:
            raise ProvisioningError(f"PROJ cannot use the geoid grid {grid_file}")
        self._transform = transform
        self._grid_file = grid_file
        self._grid = grid
        self._columns = _lattice(grid.west, grid.posting, grid.width)
        self._rows = _lattice(-grid.north, grid.posting, grid.length)
        # Across the antimeridian a grid's longitudes run past ±180°: PROJ wants them wrapped.
        longitudes = (grid.west + self._columns * grid.posting) / 3600.0
        self._longitudes = (longitudes + 180.0) % 360.0 - 180.0
        self._cache: dict[int, np.ndarray] = {}  # lattice rows already computed, by index

    def rows(self, first: int, count: int) -> np.ndarray:
        """N on rows first..first+count-1, shape (count, width), float32."""
        result = np.empty((count, self._grid.width), dtype=np.float32)
        low = int(np.searchsorted(self._rows, first, side="right")) - 1
        cache: dict[int, np.ndarray] = {}

        def lattice_row(index: int) -> np.ndarray:
            if index not in cache:
                cache[index] = (
                    self._cache[index] if index in self._cache else self._lattice_row(index)
                )
            return cache[index]

        row = first
        while row < first + count:
            # Lattice interval [upper, lower] holding `row`; fill all its rows in one go.
            interval = min(max(low, 0), len(self._rows) - 2)
            upper, lower = self._rows[interval], self._rows[interval + 1]
            end = min(first + count, lower + 1 if interval == len(self._rows) - 2 else lower)
            top, bottom = lattice_row(interval), lattice_row(interval + 1)
            weight = ((np.arange(row, end) - upper) / (lower - upper)).astype(np.float32)
            block = result[row - first : end - first]
            np.multiply.outer(weight, bottom - top, out=block)
            block += top
            row, low = end, interval + 1
        self._cache = cache  # the next block starts where this one ended
        return result

    def _lattice_row(self, index: int) -> np.ndarray:
        latitude = (self._grid.north - self._rows[index] * self._grid.posting) / 3600.0
        points = [(float(lon), latitude, 0.0) for lon in self._longitudes]
        heights = np.array([point[2] for point in self._transform.TransformPoints(points)])
        if not np.all(np.isfinite(heights)) or np.any(np.abs(heights) > 200):
            raise ProvisioningError(
                f"the geoid grid {self._grid_file} gives no valid undulation "
                f"at latitude {latitude:.4f}"
            )
        # Linear along the row between lattice columns; rows() does the same across rows.
        return np.interp(np.arange(self._grid.width), self._columns, heights).astype(np.float32)


def _lattice(start: int, posting: int, size: int) -> np.ndarray:
    """Pixel indices whose coordinate (start + i * posting, arc-seconds) is a multiple of
    LATTICE_ARCSEC, plus the first and last pixel."""
    coordinates = start + np.arange(size) * posting
    nodes = np.flatnonzero(coordinates % LATTICE_ARCSEC == 0)
    return np.unique(np.concatenate(([0], nodes, [size - 1])))


@contextlib.contextmanager
def gdal_cache(limit_bytes: int) -> Iterator[None]:
    """Bound GDAL's block cache (default: 5% of RAM) while we stream, then restore it."""
    previous = gdal.GetCacheMax()
    gdal.SetCacheMax(min(previous, limit_bytes))
    try:
        yield
    finally:
        gdal.SetCacheMax(previous)


@dataclass(frozen=True)
class _Source:
    band: gdal.Band
    x_offset: int
    y_offset: int
    nodata: float | None
    keep: tuple[gdal.Dataset, ...]  # datasets the band needs alive


@dataclass(frozen=True)
class _Box:
    south: float
    north: float
    west: float
    east: float

    def __str__(self) -> str:
        return f"{self.south:g},{self.north:g},{self.west:g},{self.east:g} (S,N,W,E)"


def _edges_of(grid: DemGrid) -> tuple[int, int, int, int]:
    return grid.south, grid.north, grid.west, grid.east


def _source_on_grid(tiles: Sequence[Path], grid: DemGrid) -> _Source:
    """The mosaic of the tiles, with the pixel offsets of the grid's first pixel in it."""
    first = gdal.Open(str(tiles[0]))
    nodata = first.GetRasterBand(1).GetNoDataValue()
    # Plain (not nodata-aware) sources: neighbours overlap with identical pixels, and GDAL's
    # nodata-aware compositing would cost as much again as the read itself.
    options = {"srcNodata": "None"} | ({} if nodata is None else {"VRTNodata": repr(nodata)})
    mosaic = gdal.BuildVRT("", [str(tile) for tile in tiles], **options)
    first = None
    x0, dx, _, y0, _, dy = mosaic.GetGeoTransform()
    # Plain degrees, not a BBox: a grid across the antimeridian runs past ±180°.
    delta, box = grid.delta_deg, _Box(*(value / 3600.0 for value in _edges_of(grid)))
    covered = (x0, y0 + dy * mosaic.RasterYSize, x0 + dx * mosaic.RasterXSize, y0)
    slack = delta * ALIGN_TOLERANCE_PX
    if not (
        covered[0] <= box.west - delta / 2 + slack
        and covered[1] <= box.south - delta / 2 + slack
        and covered[2] >= box.east + delta / 2 - slack
        and covered[3] >= box.north + delta / 2 - slack
    ):
        raise ProvisioningError(
            f"the DEM's rasters do not cover the DEM box {box}: they cover "
            f"W{covered[0]:.5f} S{covered[1]:.5f} E{covered[2]:.5f} N{covered[3]:.5f}"
        )
    # Pixel centres of the mosaic at x0 + (i + 0.5) dx; the grid's first centre must be one.
    column = (grid.west / 3600.0 - x0) / dx - 0.5
    row = (grid.north / 3600.0 - y0) / dy - 0.5
    aligned = (
        abs(dx - delta) < delta * 1e-6
        and abs(-dy - delta) < delta * 1e-6
        and abs(column - round(column)) < ALIGN_TOLERANCE_PX
        and abs(row - round(row)) < ALIGN_TOLERANCE_PX
    )
    if not aligned:
        # A service grid we did not expect: resample onto ours rather than shift by a fraction.
        log.warning(
            'the DEM tiles are not on the %d" grid of the DEM; resampling them (bilinear)',
            grid.posting,
        )
        half = delta / 2
        mosaic = gdal.Warp(
            "",
            mosaic,
            format="VRT",
            outputBounds=(box.west - half, box.south - half, box.east + half, box.north + half),
            width=grid.width,
            height=grid.length,
            resampleAlg="bilinear",
            dstSRS="EPSG:4326",
        )
        column = row = 0
    band = mosaic.GetRasterBand(1)
    return _Source(band, round(column), round(row), band.GetNoDataValue(), (mosaic,))


def write_ellipsoid_dem(
    tiles: Sequence[Path], grid: DemGrid, geoid_grid: Path | None, raster: Path
) -> IsceDemImage:
    """Mosaic `tiles` onto `grid`, convert to ellipsoid heights, write raster + .vrt + .xml."""
    with gdal_cache(GDAL_CACHE_BYTES), atomic_output(raster) as partial:
        source = _source_on_grid(tiles, grid)
        undulation = GeoidUndulation(geoid_grid, grid) if geoid_grid else None
        rows_per_block = max(1, BLOCK_PIXELS // grid.width)
        with partial.open("wb") as stream:
            for first in range(0, grid.length, rows_per_block):
                count = min(rows_per_block, grid.length - first)
                _block(source, undulation, grid, first, count).tofile(stream)
    image = IsceDemImage(
        width=grid.width,
        length=grid.length,
        first_longitude=grid.west / 3600.0,
        first_latitude=grid.north / 3600.0,
        delta_longitude=grid.delta_deg,
        delta_latitude=-grid.delta_deg,
    )
    write_sidecars(raster, image)
    return image


def _block(
    source: _Source, undulation: GeoidUndulation | None, grid: DemGrid, first: int, count: int
) -> np.ndarray:
    heights = source.band.ReadAsArray(
        source.x_offset, source.y_offset + first, grid.width, count, buf_type=gdal.GDT_Float32
    )
    invalid = ~np.isfinite(heights)
    if source.nodata is not None and np.isfinite(source.nodata):
        invalid |= heights == np.float32(source.nodata)
    if undulation is not None:
        heights += undulation.rows(first, count)
    # ISCE2 takes 0 for "no data" (its own stitcher fills ocean and voids that way).
    heights[invalid] = 0.0
    return heights.astype("<f4", copy=False)


def write_coarse_dem(fine: Path, image: IsceDemImage, factor: int, raster: Path) -> IsceDemImage:
    """A DEM `factor` times coarser (block means of factor x factor pixels), for geocoding."""
    width, length = image.width // factor, image.length // factor
    if width < 2 or length < 2:
        raise ProvisioningError(
            f"the DEM {fine.name} is too small for a DEM {factor} times coarser"
        )
    rows_per_block = max(1, BLOCK_PIXELS // (image.width * factor))
    row_bytes = image.width * 4
    with atomic_output(raster) as partial, fine.open("rb") as source, partial.open("wb") as stream:
        for first in range(0, length, rows_per_block):
            count = min(rows_per_block, length - first)
            source.seek(first * factor * row_bytes)
            fine_rows = np.fromfile(source, dtype="<f4", count=count * factor * image.width)
            block = fine_rows.reshape(count, factor, image.width)[:, :, : width * factor]
            means = block.reshape(count, factor, width, factor).mean(axis=(1, 3), dtype=np.float64)
            stream.write(means.astype("<f4").tobytes())
    # A coarse pixel is the mean of fine pixels k*f .. k*f+f-1: its centre is (f-1)/2 further.
    shift = (factor - 1) / 2
    coarse = IsceDemImage(
        width=width,
        length=length,
        first_longitude=image.first_longitude + shift * image.delta_longitude,
        first_latitude=image.first_latitude + shift * image.delta_latitude,
        delta_longitude=image.delta_longitude * factor,
        delta_latitude=image.delta_latitude * factor,
    )
    write_sidecars(raster, coarse)
    return coarse
