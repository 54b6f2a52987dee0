"""Burst level: fetch each date's bursts (TIFF + annotation XML) and build one SAFE with burst2safe.

The files of a date are staged in `data/raw/.partial/<SAFE prefix>/`; burst2safe's `Safe`
builds the SAFE there from our downloads (its own downloader and credential handling are not
used, so it never reads or writes ~/.netrc), the SAFE is read back with the pipeline's SAFE
reader, and only then moved into data/raw. A date whose SAFE is in data/raw is done.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from insar_pipeline.acquire.coverage import Acquisition
from insar_pipeline.acquire.fetch import PARTIAL_DIR, FileJob
from insar_pipeline.acquire.search import Granule
from insar_pipeline.errors import InputError, ServiceError
from insar_pipeline.inputs.safe import Product, read_product

if TYPE_CHECKING:
    from burst2safe.utils import BurstInfo  # imports GDAL: only when a SAFE is built

log = logging.getLogger(__name__)

# A burst SAFE of burst2safe is about the size of its burst TIFFs; built beside them.
BUILD_FACTOR = 2


def built_safe(raw_dir: Path, acquisition: Acquisition) -> Path | None:
    """The date's SAFE in data/raw, when it was built (its name ends in the manifest CRC)."""
    found = sorted(raw_dir.glob(f"{acquisition.name}*.SAFE")) if raw_dir.is_dir() else []
    return found[0] if found else None


def staging_dir(raw_dir: Path, acquisition: Acquisition) -> Path:
    return raw_dir / PARTIAL_DIR / acquisition.name.rstrip("_")


def burst_jobs(raw_dir: Path, acquisition: Acquisition) -> list[FileJob]:
    """The TIFF of each burst and the metadata XML of each scene they come from."""
    stage = staging_dir(raw_dir, acquisition)
    jobs = []
    xml_done: set[Path] = set()
    for burst in acquisition.granules:
        tiff = stage / f"{burst.name}.tiff"
        jobs.append(FileJob(burst.url, tiff, _part(tiff), burst.bytes))
        xml = metadata_path(stage, burst)
        if xml not in xml_done and burst.metadata_url:
            xml_done.add(xml)
            jobs.append(FileJob(burst.metadata_url, xml, _part(xml), None, check=_check_xml))
    return jobs


def _part(path: Path) -> Path:
    return path.with_name(f"{path.name}.part")


def metadata_path(stage: Path, burst: Granule) -> Path:
    """burst2safe's name for a burst's metadata file: `<scene>_<POL>.xml`."""
    return stage / f"{burst.slc_name}_{burst.polarization}.xml"


def _check_xml(path: Path) -> None:
    from lxml import etree

    try:
        etree.parse(str(path))
    except (etree.XMLSyntaxError, OSError) as err:
        raise ServiceError(f"{path.name}: not an XML document ({err})") from err


def build_safe(raw_dir: Path, acquisition: Acquisition) -> Path:
    """Build the date's SAFE from its staged files, check it, move it into data/raw."""
    from burst2safe.safe import Safe

    stage = staging_dir(raw_dir, acquisition)
    work = stage / "safe"
    shutil.rmtree(work, ignore_errors=True)  # a build cut half-way starts over
    work.mkdir(parents=True)
    infos = [burst_info(stage, burst) for burst in acquisition.granules]
    try:
        Safe.check_group_validity(infos)
        for info in infos:
            info.add_shape_info()
            info.add_start_stop_utc()
        with warnings.catch_warnings():
            # numpy's statistics of an all-zero burst (no valid sample) warn and give NaN in
            # burst2safe's manifest: harmless for topsApp.
            warnings.simplefilter("ignore", RuntimeWarning)
            path = Safe(infos, False, work).create_safe()
    except (ValueError, KeyError, AttributeError, IndexError) as err:
        raise ServiceError(
            f"burst2safe cannot build the SAFE of {acquisition.date} from its bursts ({err})"
        ) from err
    check_built(path, acquisition)
    final = raw_dir / path.name
    path.replace(final)
    shutil.rmtree(stage, ignore_errors=True)
    log.info("built %s from %d bursts", final.name, len(acquisition.granules))
    return final


def check_built(path: Path, acquisition: Acquisition) -> Product:
    """The SAFE as the pipeline reads it; ServiceError when it lacks a swath of its bursts."""
    try:
        product = read_product(path)
    except InputError as err:
        raise ServiceError(f"burst2safe built an unreadable SAFE: {err}") from err
    swaths = {burst.swath or 0 for burst in acquisition.granules}
    if not swaths <= set(product.swaths):
        raise ServiceError(f"{path.name}: swaths {sorted(swaths)} expected, {product.swaths} read")
    return product


def burst_info(stage: Path, burst: Granule) -> BurstInfo:
    """burst2safe's BurstInfo for one staged burst (what its create_burst_info reads)."""
    from burst2safe.utils import BurstInfo

    _, relative_id, swath = (burst.burst_id or "").split("_")
    return BurstInfo(
        granule=burst.name,
        slc_granule=burst.slc_name,
        swath=swath.upper(),
        polarization=burst.polarization,
        burst_id=int(relative_id),
        burst_index=burst.burst_index,
        direction=burst.flight_direction,
        absolute_orbit=burst.absolute_orbit,
        relative_orbit=burst.relative_orbit,
        date=datetime.strptime(burst.name.split("_")[3], "%Y%m%dT%H%M%S"),
        data_url=burst.url,
        data_path=stage / f"{burst.name}.tiff",
        metadata_url=burst.metadata_url,
        metadata_path=metadata_path(stage, burst),
    )
