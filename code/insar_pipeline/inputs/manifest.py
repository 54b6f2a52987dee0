"""manifest.safe of a Sentinel-1 product: the fields the pipeline needs, parsed with lxml.

ESA's real namespaces are used (test data: ../shared/realdata/s1_slc and s1_burst_safe). Parsing is
pure (bytes in, fields out) and is the slow part of reading a product, so it walks the tree once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath

from lxml import etree

from insar_pipeline.errors import InputError

NS = {
    "xfdu": "urn:ccsds:schema:xfdu:1",
    "safe": "http://www.esa.int/safe/sentinel-1.0",
    "s1sarl1": "http://www.esa.int/safe/sentinel-1.0/sentinel-1/sar/level-1",
    "gml": "http://www.opengis.net/gml",
}


@dataclass(frozen=True)
class ManifestFields:
    """What manifest.safe says; None where it is silent."""

    mission: str | None
    mode: str | None
    product_type: str | None
    polarizations: tuple[str, ...]
    absolute_orbit: int | None
    relative_orbit: int | None
    start: datetime | None
    stop: datetime | None
    footprint: tuple[tuple[float, float], ...]
    measurements: tuple[str, ...]  # measurement file paths listed, relative to the SAFE folder


def parse_manifest(xml: bytes, source: str) -> ManifestFields:
    """Parse the fields the pipeline needs out of manifest.safe's bytes (pure)."""
    try:
        root = etree.fromstring(
            xml, parser=etree.XMLParser(resolve_entities=False, no_network=True)
        )
    except etree.XMLSyntaxError as err:
        raise InputError(f"{source}: not valid XML ({err}); download the product again") from None
    # One pass over the tree: reading thousands of manifests is the slow part of `plan`.
    seen: dict[str, list] = {field: [] for field in _FIELDS.values()}
    for element in root.iter(*_FIELDS):
        seen[_FIELDS[element.tag]].append(element)

    def text(field: str, parent: str | None = None, kind: str | None = None) -> str | None:
        for element in seen[field]:
            if parent and element.getparent().tag != parent:
                continue
            if kind and element.get("type") != kind:
                continue
            return (element.text or "").strip() or None
        return None

    family, number = text("family", _PLATFORM), text("number", _PLATFORM)
    hrefs = [element.get("href", "") for element in seen["href"]]
    return ManifestFields(
        mission=f"S1{number}" if family == "SENTINEL-1" and number else None,
        mode=text("mode"),
        product_type=text("product_type"),
        polarizations=tuple(
            (e.text or "").strip().lower() for e in seen["polarization"] if (e.text or "").strip()
        ),
        absolute_orbit=_int(text("absolute_orbit", kind="start"), source),
        relative_orbit=_int(text("relative_orbit", kind="start"), source),
        start=_utc(text("start"), source),
        stop=_utc(text("stop"), source),
        footprint=_footprint(text("footprint"), source),
        measurements=tuple(
            str(PurePosixPath(h.lstrip("./"))) for h in hrefs if "measurement/" in h
        ),
    )


_SAFE, _L1, _GML = (f"{{{NS[prefix]}}}" for prefix in ("safe", "s1sarl1", "gml"))
_PLATFORM = f"{_SAFE}platform"
_FIELDS = {
    f"{_SAFE}familyName": "family",
    f"{_SAFE}number": "number",
    f"{_L1}mode": "mode",
    f"{_L1}productType": "product_type",
    f"{_L1}transmitterReceiverPolarisation": "polarization",
    f"{_SAFE}orbitNumber": "absolute_orbit",
    f"{_SAFE}relativeOrbitNumber": "relative_orbit",
    f"{_SAFE}startTime": "start",
    f"{_SAFE}stopTime": "stop",
    f"{_GML}coordinates": "footprint",
    # The data object section is unqualified in ESA manifests, xfdu-qualified in some others.
    "fileLocation": "href",
    f"{{{NS['xfdu']}}}fileLocation": "href",
}


def _int(value: str | None, source: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError(f"{source}: orbit number {value!r} is not a number") from None


def _utc(value: str | None, source: str) -> datetime | None:
    """ISO time without zone (the manifest's UTC), microseconds kept."""
    if value is None:
        return None
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6})\d*)?Z?", value)
    if match is None:
        raise InputError(f"{source}: sensing time {value!r} is not an ISO time")
    whole = datetime.fromisoformat(match[1])
    micro = int((match[2] or "0").ljust(6, "0"))
    return whole.replace(microsecond=micro, tzinfo=timezone.utc)


def _footprint(value: str | None, source: str) -> tuple[tuple[float, float], ...]:
    if value is None:
        return ()
    try:
        points = tuple(
            (float(lat), float(lon)) for lat, lon in (pair.split(",") for pair in value.split())
        )
    except ValueError:
        raise InputError(f"{source}: footprint {value!r} is not 'lat,lon lat,lon ...'") from None
    if len(points) < 3 or any(abs(lat) > 90 or abs(lon) > 180 for lat, lon in points):
        raise InputError(f"{source}: footprint {value!r} is not a polygon of lat,lon points")
    return points
