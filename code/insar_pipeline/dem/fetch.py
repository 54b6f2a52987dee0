"""OpenTopography globaldem requests: one GeoTIFF per tile, retried, checked, never leaking the key.

A timeout, a dropped connection, a 429 or a 5xx is worth another try with backoff; a 400
(area too large, bad parameters) or a 401/403 (key) is not. Every body is opened with GDAL
before it is kept: the service can answer 200 with an HTML or text error page, which other
tools save as `.tif` and only fail on much later. The API key travels in the query string
(the API takes it nowhere else), so URLs are masked before they reach a log line or a message,
and urllib3's own debug log of request lines is masked too. The constants are module globals
read at call time, so tests shrink them with monkeypatch.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from osgeo import gdal

from insar_pipeline import __version__
from insar_pipeline.errors import CredentialError, ProvisioningError, ServiceError
from insar_pipeline.geo import BBox

gdal.UseExceptions()
log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15.0
READ_TIMEOUT_S = 300.0  # between two bytes; the service builds a large tile before it answers
MAX_ATTEMPTS = 4
BACKOFF_BASE_S = 2.0  # waits 2, 4, 8 s between the attempts
BACKOFF_MAX_S = 60.0  # also caps a server's Retry-After
CHUNK_BYTES = 1 << 20
KEY_HINT = (
    "set OPENTOPO_API_KEY in .env (a free key: https://portal.opentopography.org, myOpenTopo)"
)
_KEY_IN_URL = re.compile(r"(API_Key=)[^&\s'\"]*", re.IGNORECASE)


def mask_url(text: str, secret: str | None = None) -> str:
    """Replace the value of every API_Key=… in a text, and `secret` wherever else it appears."""
    text = _KEY_IN_URL.sub(r"\1***", text)
    return text.replace(secret, "***") if secret else text


def _key_of(url: str) -> str | None:
    values = parse_qs(urlsplit(url).query).get("API_Key")
    return values[0] if values and values[0] else None


class _MaskKeyFilter(logging.Filter):
    """urllib3 logs every request line at DEBUG, query string included: mask the key there."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_url(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_urllib3_log = logging.getLogger("urllib3.connectionpool")
if not any(isinstance(existing, _MaskKeyFilter) for existing in _urllib3_log.filters):
    _urllib3_log.addFilter(_MaskKeyFilter())


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


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def fetch_tile(
    url: str, destination: Path, session: requests.Session | None = None, covers: BBox | None = None
) -> Fetched:
    """Download one tile to `destination` atomically, check it is a GeoTIFF (covering the box
    `covers`, when given), or raise.

    Raises CredentialError (401/403), ProvisioningError (400, other 4xx, a body that is not a
    GeoTIFF) and ServiceError (timeouts, 429, 5xx still failing after MAX_ATTEMPTS).
    """
    secret = _key_of(url)
    source = mask_url(url, secret)
    session = session or requests.Session()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            size = _download(session, url, destination, secret)
            break
        except _Retryable as problem:
            if attempt == MAX_ATTEMPTS:
                raise ServiceError(
                    f"OpenTopography failed {MAX_ATTEMPTS} times for {source}: {problem}; "
                    "the service may be down, try again later"
                ) from None
            delay = min(BACKOFF_MAX_S, problem.retry_after or BACKOFF_BASE_S * 2 ** (attempt - 1))
            log.warning(
                "OpenTopography: %s; attempt %d of %d in %.1f s",
                problem,
                attempt + 1,
                MAX_ATTEMPTS,
                delay,
            )
            time.sleep(delay)
    check_geotiff(destination, source, secret, covers)
    return Fetched(destination, size, source)


def _download(session: requests.Session, url: str, destination: Path, secret: str | None) -> int:
    partial = destination.with_name(destination.name + ".part")
    headers = {"User-Agent": f"insar-pipeline/{__version__}"}
    timeout = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
    try:
        with session.get(url, stream=True, headers=headers, timeout=timeout) as response:
            _check_status(response, mask_url(url, secret), secret)
            size = 0
            with partial.open("wb") as stream:
                for chunk in response.iter_content(CHUNK_BYTES):
                    stream.write(chunk)
                    size += len(chunk)
    except (requests.Timeout, requests.ConnectionError) as err:
        partial.unlink(missing_ok=True)
        # The exception text holds the URL, key included: keep only its masked form, and drop
        # the exception itself (`from None`) so that no traceback can print it.
        raise _Retryable(mask_url(f"{type(err).__name__}: {err}", secret)) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(destination)
    return size


def _check_status(response: requests.Response, source: str, secret: str | None) -> None:
    status = response.status_code
    if status == 200:
        return
    if status == 429 or status >= 500:
        raise _Retryable(f"HTTP {status}", _retry_after(response))
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


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.strip().isdigit() else None


def _read_some(response: requests.Response) -> bytes:
    try:
        return response.raw.read(4096, decode_content=True) or b""
    except (OSError, ValueError, requests.RequestException):
        return b""


def _excerpt(body: bytes, secret: str | None, limit: int = 300) -> str:
    """The readable start of an error body: tags stripped, white space folded, key masked."""
    text = body.decode("utf-8", "replace")
    text = " ".join(re.sub(r"<[^>]+>", " ", text).split())
    return mask_url(text, secret)[:limit]


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
