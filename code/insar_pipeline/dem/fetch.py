"""OpenTopography globaldem requests: one GeoTIFF per tile, retried, checked, never leaking the key.

Retries (a timeout, a dropped connection, a cut body, a 429 or a 5xx), time-outs and the temp
file are the HTTP layer's (`_http.py`); a 400 (area too large, bad parameters) or a 401/403 (key)
is not retried. Every body is opened with GDAL before it is kept: the service can answer 200
with an HTML or text error page, which other tools save as `.tif` and only fail on much later.
The API key travels in the query string (the API takes it nowhere else), so URLs are masked
before they reach a message; log lines (urllib3's request lines) are masked by the CLI's filter.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from osgeo import gdal

from insar_pipeline._http import HttpClient, download, stream_to
from insar_pipeline.errors import CredentialError, ProvisioningError, ServiceError
from insar_pipeline.geo import BBox
from insar_pipeline.logs import mask_secrets

gdal.UseExceptions()
log = logging.getLogger(__name__)

KEY_HINT = (
    "set OPENTOPO_API_KEY in .env (a free key: https://portal.opentopography.org, myOpenTopo)"
)


def _key_of(url: str) -> str | None:
    values = parse_qs(urlsplit(url).query).get("API_Key")
    return values[0] if values and values[0] else None


def tile_url(base_url: str, dem_type: str, tile: BBox, api_key: str) -> str:
    """The globaldem request of one tile."""
    query = urlencode(
        {
            "demtype": dem_type,
            "south": _coordinate(tile.south),
            "north": _coordinate(tile.north),
            "west": _coordinate(tile.west),
            "east": _coordinate(tile.east),
            "outputFormat": "GTiff",
            "API_Key": api_key,
        }
    )
    return f"{base_url.rstrip('/')}/API/globaldem?{query}"


def _coordinate(degrees: float) -> str:
    # Tiles sit on whole arc-seconds; 10 decimals keep them exact without float noise.
    return f"{degrees:.10f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class Fetched:
    path: Path
    bytes: int
    source: str  # the URL with the key masked


def fetch_tile(
    url: str, destination: Path, http: HttpClient | None = None, covers: BBox | None = None
) -> Fetched:
    """Download one tile to `destination` atomically, once it is a GeoTIFF (covering the box
    `covers`, when given), or raise.

    Raises CredentialError (401/403), ProvisioningError (400, other 4xx, a body that is not a
    GeoTIFF) and ServiceError (timeouts, cut bodies, 429, 5xx still failing after the retries).
    """
    secret = _key_of(url)
    source = mask_secrets(url, secret)
    client = http or HttpClient(slow=True)  # the service builds a tile before its first byte

    def fetch(temporary: Path) -> int:
        response = client.send("GET", url, f"OpenTopography {source}", stream=True)
        with response:
            _check_status(response, source, secret)
            return stream_to(response, temporary)

    try:
        _, size = download(
            destination,
            fetch,
            lambda temporary: check_geotiff(temporary, source, secret, covers),
            f"OpenTopography {source}",
        )
    except ServiceError as err:
        raise ServiceError(f"{err}; the service may be down, try again later") from None
    finally:
        if http is None:
            client.close()
    return Fetched(destination, size, source)


def _check_status(response: requests.Response, source: str, secret: str | None) -> None:
    status = response.status_code
    if status == 200:
        return
    detail = _excerpt(_read_some(response), secret)
    detail = f": {detail}" if detail else ""
    if status in (401, 403):
        raise CredentialError(
            f"OpenTopography refused the API key (HTTP {status}{detail}): {KEY_HINT}"
        )
    if status == 400:
        raise ProvisioningError(
            f"OpenTopography rejected the request {source} (HTTP 400{detail}); an area over "
            "the limit or a bad parameter: check ROI and DEM_TYPE"
        )
    raise ProvisioningError(f"OpenTopography answered HTTP {status}{detail} for {source}")


def _read_some(response: requests.Response) -> bytes:
    try:
        return response.raw.read(4096, decode_content=True) or b""
    except (OSError, ValueError, requests.RequestException):
        return b""


def _excerpt(body: bytes, secret: str | None, limit: int = 300) -> str:
    """The readable start of an error body: tags stripped, white space folded, key masked."""
    text = body.decode("utf-8", "replace")
    text = " ".join(re.sub(r"<[^>]+>", " ", text).split())
    return mask_secrets(text, secret)[:limit]


def check_geotiff(
    path: Path, source: str, secret: str | None = None, covers: BBox | None = None
) -> None:
    """ProvisioningError (the file removed) unless `path` is a single-band geographic GeoTIFF
    whose extent holds `covers`."""
    problem = _geotiff_problem(path, covers)
    if problem is None:
        return
    excerpt = ""
    if problem == "not a GeoTIFF":
        with path.open("rb") as stream:
            head = _excerpt(stream.read(600), secret)
        excerpt = f"; it starts with: {head!r}" if head else "; the body was empty"
    path.unlink(missing_ok=True)
    raise ProvisioningError(f"OpenTopography sent a body that is {problem} for {source}{excerpt}")


def _geotiff_problem(path: Path, covers: BBox | None) -> str | None:
    try:
        dataset = gdal.OpenEx(
            str(path), gdal.OF_RASTER | gdal.OF_READONLY, allowed_drivers=["GTiff"]
        )
    except RuntimeError:
        return "not a GeoTIFF"
    if dataset is None:
        return "not a GeoTIFF"
    if dataset.RasterCount != 1:
        return f"a GeoTIFF with {dataset.RasterCount} bands instead of 1"
    spatial_reference = dataset.GetSpatialRef()
    if spatial_reference is None or not spatial_reference.IsGeographic():
        return "a GeoTIFF without geographic (lat/lon) coordinates"
    if covers is not None:
        x0, dx, _, y0, _, dy = dataset.GetGeoTransform()
        extent = BBox(y0 + dy * dataset.RasterYSize, y0, x0, x0 + dx * dataset.RasterXSize)
        if not _holds(extent, covers, tolerance=abs(dx) * 1e-3):
            return f"a GeoTIFF covering only {extent} instead of {covers}"
    try:
        dataset.GetRasterBand(1).Checksum()  # decodes every block: catches a truncated body
    except RuntimeError as err:
        return f"a damaged GeoTIFF ({err})"
    return None


def _holds(outer: BBox, inner: BBox, tolerance: float) -> bool:
    return (
        outer.south <= inner.south + tolerance
        and outer.north >= inner.north - tolerance
        and outer.west <= inner.west + tolerance
        and outer.east >= inner.east - tolerance
    )
