"""Copernicus GLO-30 from its open bucket: only the windows a DEM needs, no account.

The bucket (COPERNICUS_DEM_URL, by default AWS's `copernicus-dem-30m`) holds one Cloud-Optimized
GeoTIFF per 1°x1° tile, `Copernicus_DSM_COG_10_N51_00_W130_00_DEM/<same>.tif`, named after its
south-west corner. GDAL reads them through `/vsicurl/` with HTTP range requests: the header
once, then only the 1024 px blocks under the DEM's box, so a 0.3° box reads a few blocks rather
than whole 20-50 MB tiles.

Registration: the tiles are pixel-is-point; their geotransform origin is half a pixel west and
north of the tile's corner, so pixel centres sit on whole arc-seconds (the pipeline's DemGrid)
and a tile holds the centres lat in (S, S+1], lon in [W, W+1). Below 50° the tiles are 3600 x
3600 (1"), and the DEM's pixels are the tiles' own (nearest on an aligned grid: exact copies).
Poleward the tiles are coarser in longitude (1.5" to 10", the GLO-30 handbook); those rows are
resampled bilinearly in longitude onto the 1" grid (rows stay exact: latitude is 1" everywhere).

A tile the bucket does not hold (HTTP 404: open sea) is read as 0 m above the geoid, like the
tiles' own sea pixels, so after the geoid -> ellipsoid conversion its heights are the geoid's
(sea level), not a hole. A box across the antimeridian (a DemGrid whose longitudes run past
±180°, continuous) is split: the tiles on the far side are read with their longitudes moved by
360°. The result is one GeoTIFF "piece" per 1° latitude band of the DEM, on the DEM's grid, which
`convert.write_ellipsoid_dem` then mosaics and converts exactly as it does OpenTopography's tiles.

Why GDAL's /vsicurl/ and not ACCESS' dem-stitcher: the pipeline already has GDAL (Debian's, or
conda-forge's in the image); dem-stitcher needs rasterio, whose wheels bundle a second GDAL/PROJ
beside python3-gdal's; it returns the whole DEM as one in-memory array (this module writes 1°
bands that the conversion streams); and it converts heights with its own EGM2008 raster, where
the pipeline uses PROJ's grid for both sources, so both give the same DEM to the bit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from osgeo import gdal

from insar_pipeline import __version__
from insar_pipeline._io import atomic_output, remove_partials
from insar_pipeline.dem.grid import ARCSEC_PER_DEG, DemGrid
from insar_pipeline.errors import ProvisioningError, ServiceError

gdal.UseExceptions()
log = logging.getLogger(__name__)

DEM_TYPE = "COP30"  # the only DEM type the bucket serves
TILE_ROWS = 3600
BLOCK_PX = 1024  # the tiles' COG block size
ESTIMATED_BYTES_PER_PIXEL = 2.0  # DEFLATE'd float32 heights: about half of 4 bytes
HEADER_BYTES = 32768  # what GDAL reads of a tile's header at open (GDAL_INGESTED_BYTES_AT_OPEN)
HTTP_CONNECT_TIMEOUT_S = 15
HTTP_STALL_S = 60  # a request slower than 1 byte/s for this long is dropped (and retried)
HTTP_MAX_RETRY = 4  # GDAL retries 429, 5xx and dropped connections this often
HTTP_RETRY_DELAY_S = 2.0  # GDAL doubles it between retries
_HTTP_STATUS = re.compile(r"HTTP response code:?\s*(\d{3})")


def tile_columns(lat: int) -> int:
    """Tile width (pixels) of the latitude band whose south edge is `lat` (the GLO-30 handbook:
    1" to 50°, 1.5" to 60°, 2" to 70°, 3" to 80°, 5" to 85°, 10" beyond)."""
    middle = abs(lat + 0.5)
    for limit, columns in ((50, 3600), (60, 2400), (70, 1800), (80, 1200), (85, 720)):
        if middle < limit:
            return columns
    return 360


def tile_stem(lat: int, lon: int) -> str:
    """The bucket's name of the tile whose south-west corner is (lat, lon), lon in [-180, 180)."""
    ns, ew = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
    return f"Copernicus_DSM_COG_10_{ns}{abs(lat):02d}_00_{ew}{abs(lon):03d}_00_DEM"


@dataclass(frozen=True)
class BucketTile:
    lat: int  # south edge, degrees
    lon: int  # west edge as the bucket names it, in [-180, 180)
    shift: int  # degrees added to its longitudes to sit in the DEM's grid (±360 across ±180°)

    @property
    def key(self) -> str:
        stem = tile_stem(self.lat, self.lon)
        return f"{stem}/{stem}.tif"

    def url(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/{self.key}"


def tiles_for(grid: DemGrid) -> list[BucketTile]:
    """The tiles holding the grid's pixel centres, north to south, west to east.

    A tile holds centres lat in (S, S+1] and lon in [W, W+1): the row on a whole degree belongs
    to the tile below it, the column on a whole degree to the tile east of it."""
    if grid.posting != 1:
        raise ProvisioningError(f'the Copernicus bucket holds 1" tiles, not {grid.posting}"')
    lats = range(_ceil_deg(grid.north) - 1, _ceil_deg(grid.south) - 2, -1)
    lons = range(grid.west // ARCSEC_PER_DEG, grid.east // ARCSEC_PER_DEG + 1)
    tiles = []
    for lat in lats:
        for lon in lons:
            named = (lon + 180) % 360 - 180
            tiles.append(BucketTile(lat, named, lon - named))
    return tiles


def _ceil_deg(arcsec: int) -> int:
    return -(-arcsec // ARCSEC_PER_DEG)


def band_grids(grid: DemGrid) -> list[tuple[int, DemGrid]]:
    """(tile latitude, the grid's rows in that tile band), north to south."""
    bands = []
    for lat in range(_ceil_deg(grid.north) - 1, _ceil_deg(grid.south) - 2, -1):
        top = min(grid.north, (lat + 1) * ARCSEC_PER_DEG)
        bottom = max(grid.south, lat * ARCSEC_PER_DEG + grid.posting)
        if bottom <= top:
            bands.append((lat, DemGrid(bottom, top, grid.west, grid.east, grid.posting)))
    return bands


def estimate_read_bytes(grid: DemGrid) -> int:
    """About how many bytes reading the grid costs: the tile headers plus every block under it
    (tiles the bucket lacks cost less: their one request fails)."""
    total = 0
    for tile in tiles_for(grid):
        columns = tile_columns(tile.lat)
        # The grid's window in the tile's pixels (row 0 = lat S+1; column 0 = lon W).
        north = (tile.lat + 1) * ARCSEC_PER_DEG
        west = (tile.lon + tile.shift) * ARCSEC_PER_DEG
        first_row = max(0, north - grid.north)
        last_row = min(TILE_ROWS - 1, north - grid.south)
        scale = columns / ARCSEC_PER_DEG
        first_column = max(0, math.floor((grid.west - west) * scale))
        last_column = min(columns - 1, math.ceil((grid.east - west) * scale))
        if first_row > last_row or first_column > last_column:
            continue
        blocks = (last_row // BLOCK_PX - first_row // BLOCK_PX + 1) * (
            last_column // BLOCK_PX - first_column // BLOCK_PX + 1
        )
        total += HEADER_BYTES + round(blocks * BLOCK_PX**2 * ESTIMATED_BYTES_PER_PIXEL)
    return total


def gdal_http_options() -> dict[str, str]:
    """GDAL settings for reading the bucket: no directory listing, no sidecar probes (.aux.xml,
    .ovr, .msk), the header in one request, consecutive blocks in one range, retries."""
    return {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif",
        "GDAL_INGESTED_BYTES_AT_OPEN": str(HEADER_BYTES),
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_HTTP_MULTIRANGE": "YES",  # parallel single-range GETs: S3 has no multipart ranges
        "GDAL_HTTP_CONNECTTIMEOUT": str(HTTP_CONNECT_TIMEOUT_S),
        "GDAL_HTTP_LOW_SPEED_TIME": str(HTTP_STALL_S),
        "GDAL_HTTP_LOW_SPEED_LIMIT": "1",
        "GDAL_HTTP_MAX_RETRY": str(HTTP_MAX_RETRY),
        "GDAL_HTTP_RETRY_DELAY": str(HTTP_RETRY_DELAY_S),
        "GDAL_HTTP_USERAGENT": f"insar-pipeline/{__version__}",
        "CPL_VSIL_NETWORK_STATS_ENABLED": "YES",
    }


@contextlib.contextmanager
def gdal_options(options: dict[str, str]) -> Iterator[None]:
    """Set GDAL configuration options for a block, then restore the previous values."""
    previous = {name: gdal.GetConfigOption(name) for name in options}
    for name, value in options.items():
        gdal.SetConfigOption(name, value)
    try:
        yield
    finally:
        for name, value in previous.items():
            gdal.SetConfigOption(name, value)


@dataclass(frozen=True)
class TileRead:
    url: str
    bytes: int  # bytes GDAL downloaded from it (0 for a tile the bucket lacks)
    present: bool


def read_pieces(
    base_url: str,
    grid: DemGrid,
    folder: Path,
    on_tile: Callable[[TileRead], None] | None = None,
) -> list[Path]:
    """One GeoTIFF per latitude band of `grid` in `folder`, on `grid`'s pixels, geoid heights.

    A piece already in `folder` (an interrupted run) is kept. Raises ServiceError when the
    bucket cannot be read (after GDAL's retries) and ProvisioningError for a tile that is not
    a 1-band geographic raster.
    """
    folder.mkdir(parents=True, exist_ok=True)
    remove_partials(folder)  # a killed run's half-written piece (the caller holds the DEM lock)
    pieces = []
    with gdal_options(gdal_http_options()):
        gdal.VSICurlClearCache()  # no stale answers (a tile found missing before, say)
        gdal.NetworkStatsReset()
        try:
            for lat, band in band_grids(grid):
                piece = folder / f"band_{'n' if lat >= 0 else 's'}{abs(lat):02d}.tif"
                if not _usable_piece(piece, band):
                    _write_piece(base_url, lat, band, piece, on_tile)
                pieces.append(piece)
        finally:
            gdal.VSICurlClearCache()
    return pieces


def _usable_piece(piece: Path, band: DemGrid) -> bool:
    if not piece.is_file():
        return False
    try:
        dataset = gdal.Open(str(piece))
        x0, _, _, y0, _, _ = dataset.GetGeoTransform()
        ok = (dataset.RasterXSize, dataset.RasterYSize) == (band.width, band.length) and (
            abs(x0 - (band.west - 0.5) / ARCSEC_PER_DEG) < 1e-9
            and abs(y0 - (band.north + 0.5) / ARCSEC_PER_DEG) < 1e-9
        )
        dataset.GetRasterBand(1).Checksum()
    except RuntimeError:
        ok = False
    if not ok:
        log.warning("%s is damaged; reading it again", piece)
        piece.unlink(missing_ok=True)
    return ok


def _write_piece(
    base_url: str,
    lat: int,
    band: DemGrid,
    piece: Path,
    on_tile: Callable[[TileRead], None] | None,
) -> None:
    tiles = [tile for tile in tiles_for(band) if tile.lat == lat]
    sources: list[gdal.Dataset] = []
    keep: list[gdal.Dataset] = []
    postings = set()
    for tile in tiles:
        url = tile.url(base_url)
        dataset = _open_tile(url)
        if dataset is None:
            log.info("%s: not in the bucket (open sea): sea level there", tile.key.split("/")[0])
            if _maybe_unreleased_land(tile):
                log.warning(
                    "%s is not in the bucket, but GLO-30 also lacks land tiles over Armenia and "
                    "Azerbaijan (not released at 30 m): if the DEM box holds land there, its "
                    "heights are wrong (sea level); use DEM_SOURCE=opentopography with "
                    "DEM_TYPE=NASADEM or COP90 there",
                    tile.key.split("/")[0],
                )
            if on_tile is not None:
                on_tile(TileRead(url, 0, False))
            continue
        keep.append(dataset)
        x0, dx, _, y0, _, dy = dataset.GetGeoTransform()
        postings.add(round(dx * ARCSEC_PER_DEG, 6))
        if tile.shift:
            shifted = gdal.Translate(
                "",
                dataset,
                format="VRT",
                outputBounds=[
                    x0 + tile.shift,
                    y0,
                    x0 + tile.shift + dx * dataset.RasterXSize,
                    y0 + dy * dataset.RasterYSize,
                ],
            )
            keep.append(shifted)
            dataset = shifted
        sources.append(dataset)
    half = band.delta_deg / 2
    bounds = (
        band.west / ARCSEC_PER_DEG - half,
        band.south / ARCSEC_PER_DEG - half,
        band.east / ARCSEC_PER_DEG + half,
        band.north / ARCSEC_PER_DEG + half,
    )
    creation = ["TILED=YES", "COMPRESS=DEFLATE", "ZLEVEL=1", "PREDICTOR=3", "BIGTIFF=IF_SAFER"]
    with atomic_output(piece) as partial:
        if not sources:  # the whole band is sea: zeros
            dataset = gdal.GetDriverByName("GTiff").Create(
                str(partial), band.width, band.length, 1, gdal.GDT_Float32, creation
            )
            dataset.SetGeoTransform((bounds[0], band.delta_deg, 0, bounds[3], 0, -band.delta_deg))
            dataset.SetProjection("EPSG:4326")
            dataset.GetRasterBand(1).Fill(0.0)
            dataset = None
        else:
            mosaic = gdal.BuildVRT("", sources)
            # Same 1" grid: nearest copies the tiles' pixels; coarser longitudes: bilinear.
            algorithm = "near" if postings == {1.0} else "bilinear"
            try:
                gdal.Warp(
                    str(partial),
                    mosaic,
                    format="GTiff",
                    outputBounds=bounds,
                    width=band.width,
                    height=band.length,
                    dstSRS="EPSG:4326",
                    resampleAlg=algorithm,
                    outputType=gdal.GDT_Float32,
                    warpOptions=["INIT_DEST=0"],
                    creationOptions=creation,
                )
            except RuntimeError as err:
                raise ServiceError(
                    f"reading the Copernicus DEM tiles at latitude {lat} from {base_url} "
                    f"failed: {err}; the bucket may be unreachable, try again later"
                ) from None
            mosaic = None
    if on_tile is not None:
        sent = _bytes_by_file()
        for dataset in keep:
            url = dataset.GetDescription().removeprefix("/vsicurl/")
            if url in sent:
                on_tile(TileRead(url, sent[url], True))


def _maybe_unreleased_land(tile: BucketTile) -> bool:
    return 38 <= tile.lat <= 41 and 43 <= tile.lon <= 50


def _open_tile(url: str) -> gdal.Dataset | None:
    """The tile opened through /vsicurl/, or None when the bucket does not hold it (404)."""
    try:
        dataset = gdal.OpenEx(
            f"/vsicurl/{url}", gdal.OF_RASTER | gdal.OF_READONLY, allowed_drivers=["GTiff"]
        )
    except RuntimeError as err:
        match = _HTTP_STATUS.search(str(err))
        status = int(match[1]) if match else None
        if status == 404:
            return None
        if status in (401, 403):
            raise ProvisioningError(
                f"the Copernicus DEM bucket refused {url} (HTTP {status}); check "
                "COPERNICUS_DEM_URL (the bucket's root, e.g. "
                "https://copernicus-dem-30m.s3.amazonaws.com)"
            ) from None
        raise ServiceError(
            f"cannot read {url} from the Copernicus DEM bucket: {err}; "
            "check COPERNICUS_DEM_URL and the network, or try again later"
        ) from None
    if dataset.RasterCount != 1:
        raise ProvisioningError(f"{url}: {dataset.RasterCount} bands, not a GLO-30 tile")
    reference = dataset.GetSpatialRef()
    if reference is None or not reference.IsGeographic():
        raise ProvisioningError(f"{url}: not in geographic coordinates, not a GLO-30 tile")
    return dataset


def _bytes_by_file() -> dict[str, int]:
    """Bytes downloaded per URL since the last reset (GDAL's network statistics)."""
    try:
        stats = json.loads(gdal.NetworkStatsGetAsSerializedJSON() or "{}")
    except ValueError:
        return {}
    files = stats.get("handlers", {}).get("vsicurl", {}).get("files", {})
    result = {}
    for name, entry in files.items():
        methods = entry.get("methods", {})
        size = sum(int(method.get("downloaded_bytes", 0)) for method in methods.values())
        result[name.removeprefix("/vsicurl/")] = size
    return result


def read_summary(tiles: Sequence[TileRead]) -> str:
    present = [tile for tile in tiles if tile.present]
    missing = len(tiles) - len(present)
    read = sum(tile.bytes for tile in present)
    sea = f", {missing} not in the bucket (sea level)" if missing else ""
    return f"{len(present)} tile(s) read, {read / 1e6:.1f} MB{sea}"
