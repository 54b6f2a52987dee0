"""DEM provisioning (SPEC.md section 5): plan the boxes, reuse or download, write ISCE DEMs.

`plan_dems` is read-only: the DEM boxes (ROI, or one per region of overlapping pairs), where
each comes from (DEM_SOURCE: OpenTopography's requests, or the windows of the open Copernicus
bucket's tiles, `copernicus.py`), and whether an existing DEM already covers it.
`provision_dems` runs once per run, before any pair: under a lock on `data/dem/` it plans again
(another run may just have finished a DEM), checks the key and the geoid grids of every DEM it
must build, then downloads, converts and writes them. Tiles are kept until their DEM is
complete, so a crash costs no second download.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from insar_pipeline._http import HttpClient
from insar_pipeline._io import folder_lock, remove_partials
from insar_pipeline.dem import convert as dem_convert
from insar_pipeline.dem import copernicus
from insar_pipeline.dem.cache import SUFFIX, best_cached, existing_dems, free_path
from insar_pipeline.dem.fetch import KEY_HINT, check_geotiff, fetch_tile, tile_url
from insar_pipeline.dem.grid import (
    DemGrid,
    check_box,
    dem_spec,
    grid_around,
    pair_box,
    region_groups,
    split_tiles,
)
from insar_pipeline.download import Download
from insar_pipeline.errors import CredentialError, InputError, PipelineError, ProvisioningError
from insar_pipeline.geo import BBox
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.pairs import Pair
from insar_pipeline.isce_image import read_xml

log = logging.getLogger(__name__)

LOCK_NAME = ".provision.lock"
OPENTOPOGRAPHY = "opentopography"
COPERNICUS = "copernicus"
TILES_DIR = ".tiles"


@dataclass(frozen=True)
class DemPlan:
    bbox: BBox  # the DEM box (rounded outward)
    tiles: tuple[BBox, ...]  # one OpenTopography request each
    pair_ids: tuple[str, ...]  # pairs that use this DEM
    path: Path  # the ISCE binary, e.g. data/dem/demLat_N51_N53_Lon_W131_W125_COP30.dem.wgs84
    cached: bool  # an existing DEM covering bbox will be used (path points at it)
    source: str = OPENTOPOGRAPHY  # where an uncached DEM comes from: OPENTOPOGRAPHY or COPERNICUS
    read_bytes: int = 0  # COPERNICUS: about how many bytes its tile windows cost

    @property
    def fetch_summary(self) -> str:
        """How an uncached DEM will be fetched, for `plan`."""
        count = len(self.tiles)
        if self.source == COPERNICUS:
            return (
                f"read from the Copernicus bucket: windows of {count} tile(s), "
                f"about {self.read_bytes / 1e6:.1f} MB"
            )
        return f"download from OpenTopography in {count} request{'s' if count != 1 else ''}"


def dem_source(settings: Settings) -> str:
    """DEM_SOURCE resolved: auto is OpenTopography with a key, else the bucket (COP30 only)."""
    has_key = bool(settings.opentopo_api_key and settings.opentopo_api_key.get_secret_value())
    if settings.dem_source == "copernicus" or (
        settings.dem_source == "auto" and not has_key and settings.dem_type == copernicus.DEM_TYPE
    ):
        if settings.dem_type != copernicus.DEM_TYPE:
            raise InputError(
                f"DEM_SOURCE=copernicus: the Copernicus bucket serves DEM_TYPE="
                f"{copernicus.DEM_TYPE} only, not {settings.dem_type}; set DEM_TYPE="
                f"{copernicus.DEM_TYPE}, or DEM_SOURCE=opentopography with OPENTOPO_API_KEY"
            )
        return COPERNICUS
    return OPENTOPOGRAPHY


def plan_dems(settings: Settings, pairs: Sequence[Pair]) -> list[DemPlan]:
    """The DEMs `run` needs, and which of them exist already. No request, no write."""
    spec = dem_spec(settings.dem_type)
    _geocode_factor(settings)  # an InputError now rather than after the downloads
    source = dem_source(settings)
    existing = existing_dems(settings.dem_dir)
    plans = []
    taken: set[Path] = set()
    for box, pair_ids in dem_boxes(settings, pairs):
        grid = grid_around(box, spec.posting_arcsec)
        cached = best_cached(existing, settings.dem_type, grid)
        if cached is not None:
            path = cached.path
        else:
            path = free_path(settings.dem_dir, grid, settings.dem_type, existing, taken)
            taken.add(path)
        if source == COPERNICUS:
            tiles = tuple(
                BBox(tile.lat, tile.lat + 1, tile.lon, tile.lon + 1)
                for tile in copernicus.tiles_for(grid)
            )
            read_bytes = copernicus.estimate_read_bytes(grid)
        else:
            tiles, read_bytes = split_tiles(grid, spec.max_area_km2), 0
        plans.append(
            DemPlan(grid.bbox, tiles, pair_ids, path, cached is not None, source, read_bytes)
        )
    return plans


def dem_boxes(settings: Settings, pairs: Sequence[Pair]) -> list[tuple[BBox, tuple[str, ...]]]:
    """(box, pair ids) per DEM: the ROI for every pair, or one buffered box per region."""
    if settings.roi is not None:
        check_box(settings.roi, "ROI")
        outside = [pair for pair in pairs if not _inside(settings.roi, pair)]
        if outside:
            lines = [
                f"pairs.txt:{pair.line}: pair {pair.id} covers {pair_box(pair)}, "
                f"not inside ROI {settings.roi}"
                for pair in outside
            ]
            raise InputError(
                "\n".join([*lines, "enlarge ROI in .env, or unset it to get a DEM per region"])
            )
        if settings.region_of_interest and not settings.roi.contains(settings.region_of_interest):
            raise InputError(
                f"REGION_OF_INTEREST {settings.region_of_interest} must lie inside "
                f"ROI {settings.roi}"
            )
        return [(settings.roi, tuple(pair.id for pair in pairs))] if pairs else []
    boxes = []
    for union, pair_ids in region_groups(pairs):
        # buffered() clamps at ±90/±180, so a box that would wrap lands on the limit.
        box = union.buffered(settings.dem_buffer_deg)
        check_box(box, f"pairs {', '.join(pair_ids[:3])}{'…' if len(pair_ids) > 3 else ''}")
        boxes.append((box, pair_ids))
    return boxes


def _inside(roi: BBox, pair: Pair) -> bool:
    return roi.contains(pair_box(pair))


def provision_dems(
    settings: Settings,
    pairs: Sequence[Pair],
    on_download: Callable[[Download], None] | None = None,
) -> dict[str, Path]:
    """Make sure every pair has its DEM; pair id -> DEM raster (its .xml and .vrt beside it).

    Raises InputError (boxes), CredentialError (no key, or 401/403), ProvisioningError (400,
    bad bodies, missing geoid grid, retries exhausted): all before any pair starts.
    """
    settings.dem_dir.mkdir(parents=True, exist_ok=True)
    # GDAL caches up to 5% of RAM by default; tile checks and conversion stream, so bound it.
    waiting = f"another process is provisioning DEMs in {settings.dem_dir}; waiting for it"
    with (
        folder_lock(settings.dem_dir / LOCK_NAME, waiting),
        dem_convert.gdal_cache(dem_convert.GDAL_CACHE_BYTES),
    ):
        remove_partials(settings.dem_dir)  # under the lock: leftovers of a killed run
        plans = plan_dems(settings, pairs)
        to_build = [plan for plan in plans if not plan.cached]
        geoid_grid = _check_prerequisites(settings, to_build)
        key = settings.opentopo_api_key.get_secret_value() if settings.opentopo_api_key else ""
        dems: dict[str, Path] = {}
        for plan in plans:
            if plan.cached:
                log.info("DEM %s covers %s: reused", plan.path.name, plan.bbox)
                _refresh_sidecars(plan.path)
            else:
                _build(settings, plan, key, geoid_grid, on_download)
            geocode_dem(settings, plan.path)
            dems.update({pair_id: plan.path for pair_id in plan.pair_ids})
    return dems


def missing_prerequisites(settings: Settings, plans: Sequence[DemPlan]) -> list[str]:
    """What would stop `provision_dems` from building the uncached DEMs (for `plan` to show)."""
    try:
        _check_prerequisites(settings, [plan for plan in plans if not plan.cached])
    except PipelineError as err:
        return [str(err)]
    return []


def _check_prerequisites(settings: Settings, to_build: Sequence[DemPlan]) -> Path | None:
    """The geoid grid file the conversion needs; errors for a missing key or grid."""
    if not to_build:
        return None
    has_key = settings.opentopo_api_key and settings.opentopo_api_key.get_secret_value()
    if any(plan.source == OPENTOPOGRAPHY for plan in to_build) and not has_key:
        names = ", ".join(plan.path.name for plan in to_build)
        raise CredentialError(f"the DEM {names} must be downloaded from OpenTopography: {KEY_HINT}")
    geoid = dem_spec(settings.dem_type).geoid
    if geoid is None:
        return None
    grid_file = dem_convert.geoid_grid_to_use(geoid)
    if grid_file is None:
        raise ProvisioningError(dem_convert.missing_grid_message(geoid, settings.dem_type))
    return grid_file


def _build(
    settings: Settings,
    plan: DemPlan,
    key: str,
    geoid_grid: Path | None,
    on_download: Callable[[Download], None] | None,
) -> None:
    spec = dem_spec(settings.dem_type)
    grid = grid_around(plan.bbox, spec.posting_arcsec)
    tiles_dir = settings.dem_dir / TILES_DIR / _grid_key(settings.dem_type, grid)
    tiles_dir.mkdir(parents=True, exist_ok=True)
    if plan.source == COPERNICUS:
        log.info(
            "DEM %s: %s from the Copernicus bucket %s: windows of %d tile(s)",
            plan.path.name,
            plan.bbox,
            settings.copernicus_dem_url,
            len(plan.tiles),
        )
        tiles = _read_bucket(settings, plan, grid, tiles_dir, on_download)
    else:
        log.info(
            "DEM %s: %s from OpenTopography %s in %d request(s)",
            plan.path.name,
            plan.bbox,
            settings.dem_type,
            len(plan.tiles),
        )
        tiles = _download_tiles(settings, plan, key, tiles_dir, on_download)
    log.info(
        "DEM %s: converting to WGS84 ellipsoid heights%s",
        plan.path.name,
        f" with {geoid_grid.name}" if geoid_grid else " (already ellipsoidal)",
    )
    dem_convert.write_ellipsoid_dem(tiles, grid, geoid_grid, plan.path)
    shutil.rmtree(tiles_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        tiles_dir.parent.rmdir()  # only when no other DEM's tiles are waiting there


def _download_tiles(
    settings: Settings,
    plan: DemPlan,
    key: str,
    tiles_dir: Path,
    on_download: Callable[[Download], None] | None,
) -> list[Path]:
    paths = []
    http = HttpClient(slow=True)  # the service builds a tile before its first byte
    try:
        for number, tile in enumerate(plan.tiles, start=1):
            path = tiles_dir / f"tile_{number:03d}.tif"
            url = tile_url(settings.opentopo_url, settings.dem_type, tile, key)
            needed = _needed(tile, dem_spec(settings.dem_type).posting_arcsec)
            if path.is_file():
                try:
                    check_geotiff(path, path.name, covers=needed)
                    log.info("tile %d/%d already downloaded", number, len(plan.tiles))
                    paths.append(path)
                    continue
                except ProvisioningError:
                    log.warning("tile %s was damaged; downloading it again", path)
            fetched = fetch_tile(url, path, http, covers=needed)
            log.info("tile %d/%d: %.1f MB", number, len(plan.tiles), fetched.bytes / 1e6)
            if on_download is not None:
                name = f"{plan.path.name} tile {number}/{len(plan.tiles)}"
                on_download(Download(name, fetched.source, fetched.bytes, plan.path, kind="dem"))
            paths.append(path)
    finally:
        http.close()
    return paths


def _read_bucket(
    settings: Settings,
    plan: DemPlan,
    grid: DemGrid,
    tiles_dir: Path,
    on_download: Callable[[Download], None] | None,
) -> list[Path]:
    reads: list[copernicus.TileRead] = []

    def record(read: copernicus.TileRead) -> None:
        reads.append(read)
        if on_download is not None and read.present:
            name = f"{plan.path.name} tile {read.url.rsplit('/', 1)[-1].removesuffix('.tif')}"
            on_download(Download(name, read.url, read.bytes, plan.path, kind="dem"))

    pieces = copernicus.read_pieces(settings.copernicus_dem_url, grid, tiles_dir, record)
    if reads:
        log.info("DEM %s: %s", plan.path.name, copernicus.read_summary(reads))
    return pieces


def _needed(tile: BBox, posting_arcsec: int) -> BBox:
    """What a tile must cover: its request less its one-posting pad, plus the half pixel
    beyond the pixel centres on its edges."""
    half = posting_arcsec / 3600 / 2
    return BBox(tile.south + half, tile.north - half, tile.west + half, tile.east - half)


def _grid_key(dem_type: str, grid: DemGrid) -> str:
    # Tiles belong to one (type, grid), whatever name their DEM ends up with.
    return f"{dem_type}_{grid.south}_{grid.north}_{grid.west}_{grid.east}_{grid.posting}"


def _refresh_sidecars(raster: Path) -> None:
    """Rewrite .xml/.vrt when the DEM folder moved (FILE_NAME is absolute), as fixImageXml does."""
    from insar_pipeline.isce_image import write_sidecars

    xml = read_xml(raster.with_name(raster.name + ".xml"))
    if Path(xml.properties.get("FILE_NAME", "")) != raster.resolve():
        log.info("DEM %s moved: rewriting its .xml and .vrt", raster.name)
        write_sidecars(raster, xml.dem_image())


def geocode_dem_path(settings: Settings, dem: Path) -> Path:
    """The DEM topsApp geocodes on: `dem` itself, or its coarser version at GEOCODE_DEM_ARCSEC."""
    factor = _geocode_factor(settings)
    if factor == 1:
        return dem
    stem = dem.name.removesuffix(SUFFIX)
    return dem.with_name(f"{stem}.{settings.geocode_dem_arcsec}arcsec{SUFFIX}")


def _geocode_factor(settings: Settings) -> int:
    """How many DEM pixels a geocoding-DEM pixel spans (1: geocode on the DEM itself)."""
    if not settings.geocode_dem_arcsec:
        return 1
    posting = dem_spec(settings.dem_type).posting_arcsec
    factor, remainder = divmod(settings.geocode_dem_arcsec, posting)
    if remainder:
        raise InputError(
            f"GEOCODE_DEM_ARCSEC={settings.geocode_dem_arcsec} must be a multiple of the "
            f'{posting}" posting of DEM_TYPE={settings.dem_type}'
        )
    return factor


def geocode_dem(settings: Settings, dem: Path) -> Path:
    """Make (once) the coarser DEM topsApp geocodes on, when the settings ask for one."""
    coarse = geocode_dem_path(settings, dem)
    if coarse != dem and not coarse.with_name(coarse.name + ".xml").is_file():
        log.info('DEM %s: %d" version for geocoding', dem.name, settings.geocode_dem_arcsec)
        image = read_xml(dem.with_name(dem.name + ".xml")).dem_image()
        dem_convert.write_coarse_dem(dem, image, _geocode_factor(settings), coarse)
    return coarse
