"""The DEMs already in `data/dem/`: which are complete, what grid and type each holds, and names.

A DEM is named like ISCE's, after the whole degrees around it, plus its type:
`demLat_N33_N35_Lon_W119_W117_COP30.dem.wgs84` (`_2`, `_3`… when another box of the same
degrees exists). Its grid is read back from its `.xml`, so any complete DEM of the same type
whose grid holds the wanted one is reused, whoever made it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from insar_pipeline.dem.grid import DEM_SPECS, DemGrid, isce_stem
from insar_pipeline.errors import ProvisioningError
from insar_pipeline.isce_image import read_xml

log = logging.getLogger(__name__)

SUFFIX = ".dem.wgs84"
_NAME = re.compile(r"^demLat_[NS]\d{2}_[NS]\d{2}_Lon_[EW]\d{3}_[EW]\d{3}_(?P<rest>[A-Za-z0-9_]+)$")


@dataclass(frozen=True)
class ExistingDem:
    path: Path
    dem_type: str
    grid: DemGrid


def existing_dems(dem_dir: Path) -> list[ExistingDem]:
    """Complete DEMs in `dem_dir`: a readable WGS84 `.xml` and a raster of the size it states."""
    found = []
    for xml in sorted(dem_dir.glob(f"demLat_*{SUFFIX}.xml")):
        raster = xml.with_suffix("")
        dem_type = _type_of(raster.name.removesuffix(SUFFIX))
        if dem_type is None:
            continue
        try:
            image = read_xml(xml).dem_image()
        except (OSError, ValueError, KeyError) as err:
            log.warning("%s: unreadable DEM sidecar, ignored (%s)", xml, err)
            continue
        if (
            image.reference != "WGS84"
            or not raster.is_file()
            or raster.stat().st_size != image.file_size
        ):
            log.warning("%s: incomplete or not in ellipsoid heights, ignored", raster)
            continue
        posting = round(image.delta_longitude * 3600)
        west, north = round(image.first_longitude * 3600), round(image.first_latitude * 3600)
        grid = DemGrid(
            north - (image.length - 1) * posting,
            north,
            west,
            west + (image.width - 1) * posting,
            posting,
        )
        found.append(ExistingDem(raster, dem_type, grid))
    return found


def _type_of(stem: str) -> str | None:
    match = _NAME.match(stem)
    if not match:
        return None
    rest = match["rest"]
    for candidate in (rest, re.sub(r"_\d+$", "", rest)):
        if candidate in DEM_SPECS:
            return candidate
    return None


def best_cached(
    existing: Sequence[ExistingDem], dem_type: str, grid: DemGrid
) -> ExistingDem | None:
    holders = [dem for dem in existing if dem.dem_type == dem_type and dem.grid.contains(grid)]
    return min(holders, key=lambda dem: dem.grid.width * dem.grid.length, default=None)


def free_path(
    dem_dir: Path, grid: DemGrid, dem_type: str, existing: Sequence[ExistingDem], taken: set[Path]
) -> Path:
    """The first DEM name not held by another DEM (complete or being written)."""
    used = {dem.path for dem in existing} | taken
    base = f"{isce_stem(grid)}_{dem_type}"
    for number in range(1, 1000):
        stem = base if number == 1 else f"{base}_{number}"
        path = dem_dir / f"{stem}{SUFFIX}"
        # A same-named file without a usable xml is a leftover of an interrupted run: reuse it.
        if path not in used:
            return path
    raise ProvisioningError(f"{dem_dir}: too many DEMs named {base}_*")
