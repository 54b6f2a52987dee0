"""The search: one asf_search query for the settings' area, dates and track, as `Granule`s.

`search_granules` is the only call that reaches CMR (`CMR_HOST`); perpendicular baselines come
from asf_search's baseline stack computed on the same results (orbit state vectors in the
records), so a search costs one query whatever the network. `granule_from_product` is pure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

from insar_pipeline.errors import InputError, ServiceError

if TYPE_CHECKING:
    from insar_pipeline.inputs.config import Settings

log = logging.getLogger(__name__)

PLATFORM_NAMES = {"S1A": "SENTINEL-1A", "S1B": "SENTINEL-1B", "S1C": "SENTINEL-1C",
                  "S1D": "SENTINEL-1D"}  # fmt: skip


@dataclass(frozen=True)
class Granule:
    """One searchable file: a whole SLC scene, or one burst (TIFF + its metadata XML)."""

    name: str  # scene name, or burst granule name (S1_372326_IW3_20141017T151617_VV_3B42-BURST)
    url: str  # the zip, or the burst TIFF
    bytes: int | None
    md5: str | None
    start: datetime
    platform: str  # S1A
    relative_orbit: int
    absolute_orbit: int
    frame: int | None
    flight_direction: str
    polarization: str  # as CMR lists it: VV, VV+VH
    footprint: tuple[tuple[float, float], ...]  # (lon, lat) ring
    burst_id: str | None = None  # 174_372326_IW3
    burst_index: int = 0
    slc_name: str | None = None  # the scene a burst is cut from
    metadata_url: str | None = None  # a burst's annotation XML
    bperp: float | None = None  # perpendicular baseline to the stack reference, metres

    @property
    def date(self) -> date:
        return self.start.date()

    @property
    def swath(self) -> int | None:
        return int(self.burst_id[-1]) if self.burst_id else None

    @property
    def filename(self) -> str:
        return f"{self.name}.tiff" if self.burst_id else f"{self.name}.zip"


def search_requested(settings: Settings) -> bool:
    """Whether the settings ask for a search (an AOI is set)."""
    return settings.aoi is not None


def check_search_settings(settings: Settings) -> None:
    """InputError naming what a search still needs."""
    missing = [
        key
        for key, value in (
            ("AOI", settings.aoi), ("START", settings.start),
            ("RELATIVE_ORBIT", settings.relative_orbit),
        )
        if value is None
    ]  # fmt: skip
    if missing:
        raise InputError(
            f"a search needs {', '.join(missing)} in .env (with AOI, START, END and"
            " RELATIVE_ORBIT the pipeline finds and downloads the data itself)"
        )


def search_options(settings: Settings) -> dict[str, Any]:
    """asf_search keyword arguments for the settings (pure)."""
    options: dict[str, Any] = {
        "intersectsWith": settings.aoi,
        "start": f"{settings.start}T00:00:00Z",
        "relativeOrbit": settings.relative_orbit,
        "platform": [PLATFORM_NAMES[name] for name in settings.platforms],
        "beamMode": "IW",
    }
    if settings.end is not None:
        options["end"] = f"{settings.end}T23:59:59Z"
    if settings.flight_direction is not None:
        options["flightDirection"] = settings.flight_direction
    if settings.frame is not None:
        options["asfFrame"] = settings.frame
    if settings.input_level == "burst":
        options["processingLevel"] = "BURST"
        options["polarization"] = settings.polarization.upper()
    else:
        options["processingLevel"] = "SLC"
    return options


def search_granules(settings: Settings) -> list[Granule]:
    """Query CMR once; the granules with their perpendicular baselines."""
    import asf_search
    from asf_search.exceptions import ASFError

    check_search_settings(settings)
    asf_search.REPORT_ERRORS = False  # no error report leaves the machine
    session = asf_search.ASFSession()
    session.auth = _no_netrc  # the search is anonymous: never send ~/.netrc credentials
    try:
        options = asf_search.ASFSearchOptions(host=settings.cmr_host, session=session)
        results = asf_search.search(opts=options, **search_options(settings))
    except ASFError as err:
        raise ServiceError(f"the search at {settings.cmr_host} failed: {err}") from err
    finally:
        session.close()
    products = [product for product in results if _usable(product)]
    log.info("search at %s: %d granules", settings.cmr_host, len(products))
    _add_baselines(products)
    return sorted(
        (granule_from_product(product) for product in products),
        key=lambda granule: (granule.start, granule.name),
    )


def _no_netrc(request: Any) -> Any:
    return request


def _usable(product: Any) -> bool:
    properties = product.properties
    return bool(properties.get("url")) and properties.get("processingLevel") in ("SLC", "BURST")


def _add_baselines(products: list[Any]) -> None:
    """Perpendicular baselines from asf_search's baseline stack, in place (None without
    state vectors)."""
    from asf_search.baseline.stack import get_baseline_from_stack

    stackable = [product for product in products if product.baseline is not None]
    if not stackable:
        return
    reference = stackable[len(stackable) // 2]
    try:
        get_baseline_from_stack(reference, stackable)
    except (ValueError, KeyError, TypeError) as err:
        log.warning("perpendicular baselines not computed: %s", err)


def granule_from_product(product: Any) -> Granule:
    """A Granule from an asf_search product (pure)."""
    p = product.properties
    burst = p.get("burst") or {}
    urls = p.get("additionalUrls") or []
    inputs = (getattr(product, "umm", None) or {}).get("InputGranules") or []
    bperp = p.get("perpendicularBaseline")
    return Granule(
        name=p["fileID"] if burst else p["sceneName"],
        url=p["url"],
        bytes=int(p["bytes"]) if p.get("bytes") else None,
        md5=p.get("md5sum") or None,
        start=_utc(p["startTime"]),
        platform="S1" + p["platform"][-1].upper(),
        relative_orbit=int(p["pathNumber"]),
        absolute_orbit=int(p["orbit"]),
        frame=int(p["frameNumber"]) if p.get("frameNumber") is not None else None,
        flight_direction=str(p.get("flightDirection") or "").upper(),
        polarization=str(p.get("polarization") or "").upper(),
        footprint=_ring(product.geometry),
        burst_id=burst.get("fullBurstID"),
        burst_index=int(burst.get("burstIndex", 0)),
        slc_name=inputs[0].split("-")[0] if inputs else None,
        metadata_url=urls[0] if burst and urls else None,
        bperp=float(bperp) if bperp is not None else None,
    )


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _ring(geometry: dict[str, Any]) -> tuple[tuple[float, float], ...]:
    coordinates = geometry["coordinates"]
    if geometry["type"] == "MultiPolygon":
        coordinates = coordinates[0]
    return tuple((float(lon), float(lat)) for lon, lat, *_ in coordinates[0])
