"""The orbit services, each a small client with one question: which file serves this scene?

- `asf`: ASF's s1-orbits API; `GET /scene/{name}` redirects to the best file (400 = bad scene
  name, 404 = none yet). No credentials.
- `aws`: the public `s1-orbits` bucket; S3 ListObjectsV2 pages under `AUX_POEORB/` and
  `AUX_RESORB/`, narrowed to the mission and the months the files were made, cached per run.
- `cdse`: Copernicus Data Space; OData product query (public), download with a token made
  from the user's credentials (settings, else ~/.netrc) in `orbit_cdse.py`.

`find` answers with a RemoteOrbit, or None for "not found"; it retries transient faults (the
HTTP layer, `_http.py`) and raises ProvisioningError when the source cannot help. `fetch` makes
one download attempt; the caller retries it together with the check of the file (`download`).
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import urljoin, urlsplit

from lxml import etree

from insar_pipeline._http import HttpClient, Retryable, stream_to, with_retries
from insar_pipeline.errors import ProvisioningError
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.safe import Product
from insar_pipeline.orbits.files import (
    KINDS,
    OrbitFile,
    parse_orbit_name,
    precise_expected,
    select_orbit,
)

log = logging.getLogger(__name__)

REDIRECTS = (301, 302, 303, 307, 308)
MAX_LISTING_PAGES = 50  # 50 000 keys: more than a whole mission's precise orbits
# Files are made after their validity ends: a RESORB within hours, a POEORB ~20 days later.
CREATION_WINDOW = {"POEORB": timedelta(days=30), "RESORB": timedelta(days=1)}


@dataclass(frozen=True)
class RemoteOrbit:
    """A file a source offers, and where to get it."""

    orbit: OrbitFile
    url: str
    source: str


class OrbitSource(Protocol):
    name: str

    def find(self, product: Product) -> RemoteOrbit | None: ...

    def fetch(self, remote: RemoteOrbit, dest: Path) -> int: ...


def fetch_plain(http: HttpClient, remote: RemoteOrbit, dest: Path) -> int:
    """One download attempt of a public URL into `dest`; returns the bytes written."""
    what = f"{remote.source}: download of {remote.orbit.name}"
    response = http.send("GET", remote.url, what, stream=True)
    if response.status_code != 200:
        response.close()
        raise ProvisioningError(f"{what}: HTTP {response.status_code}")
    return stream_to(response, dest)


class AsfSource:
    name = "asf"

    def __init__(self, settings: Settings, http: HttpClient) -> None:
        self._base = settings.asf_orbit_url.rstrip("/")
        self._http = http

    def find(self, product: Product) -> RemoteOrbit | None:
        url = f"{self._base}/scene/{product.name}"
        what = f"asf: lookup of {product.name}"
        location = with_retries(functools.partial(self._lookup, url, what), what)
        if location is None:
            return None
        orbit = parse_orbit_name(PurePosixPath(urlsplit(location).path).name)
        if orbit is None:
            raise ProvisioningError(f"{what}: redirected to a non-orbit file ({location})")
        return RemoteOrbit(orbit, location, self.name)

    def _lookup(self, url: str, what: str) -> str | None:
        # Redirects are not followed: the target's name is checked (and maybe already
        # cached) before a byte of it is downloaded.
        with self._http.send("GET", url, what, allow_redirects=False) as response:
            status = response.status_code
            if status in REDIRECTS and response.headers.get("Location"):
                return urljoin(url, response.headers["Location"])
            if status == 404:
                return None
            if status == 400:
                raise ProvisioningError(f"{what}: the service rejected the scene name (HTTP 400)")
            if status == 200:  # an HTML error page from a proxy or a maintenance screen
                raise Retryable(f"{what}: a page instead of a redirect")
            raise ProvisioningError(f"{what}: HTTP {status}")

    def fetch(self, remote: RemoteOrbit, dest: Path) -> int:
        return fetch_plain(self._http, remote, dest)


@dataclass(frozen=True)
class ListingPage:
    keys: tuple[str, ...]
    truncated: bool
    token: str | None  # NextContinuationToken (ListObjectsV2); None in V1 pages


def parse_s3_listing(data: bytes) -> ListingPage:
    """Keys of one S3 ListBucketResult page (V2, or V1 as recorded in realdata)."""
    root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    if etree.QName(root).localname != "ListBucketResult":
        raise ValueError(f"not an S3 listing: <{etree.QName(root).localname}>")
    keys = tuple(key.text or "" for key in root.iterfind("{*}Contents/{*}Key"))
    truncated = (root.findtext("{*}IsTruncated") or "").strip().lower() == "true"
    return ListingPage(keys, truncated, root.findtext("{*}NextContinuationToken") or None)


def listing_prefixes(kind: str, mission: str, stop: datetime) -> tuple[str, ...]:
    """Bucket key prefixes that hold every usual candidate: the months the files were made.

    Keys sort by creation time (`AUX_POEORB/S1A_OPER_AUX_POEORB_OPOD_<created>_V...`), and a
    file is made after its validity ends (so after the scene's `stop`): the months from then
    to the end of the creation window.
    """
    first: date = stop.date()
    last: date = (stop + CREATION_WINDOW[kind]).date()
    months = []
    year, month = first.year, first.month
    while (year, month) <= (last.year, last.month):
        months.append(f"AUX_{kind}/{mission}_OPER_AUX_{kind}_OPOD_{year:04d}{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return tuple(months)


class AwsSource:
    name = "aws"

    def __init__(self, settings: Settings, http: HttpClient, now: datetime) -> None:
        self._base = settings.aws_orbit_url.rstrip("/")
        self._http = http
        self._now = now
        self._listings: dict[str, list[tuple[OrbitFile, str]]] = {}  # prefix -> files, keys
        self._lock = threading.Lock()  # lookups run in parallel; each prefix is listed once

    def find(self, product: Product) -> RemoteOrbit | None:
        for kind in KINDS:
            prefixes = listing_prefixes(kind, product.mission, product.stop)
            found = self._best(prefixes, product)
            if found is None and kind == "POEORB" and precise_expected(product.stop, self._now):
                # Precise files of 2014-2020 were remade in 2021: their creation month says
                # nothing about the scene, so look through the mission's whole list (once).
                found = self._best((f"AUX_{kind}/{product.mission}_",), product)
            if found is not None:
                return found
        return None

    def _best(self, prefixes: tuple[str, ...], product: Product) -> RemoteOrbit | None:
        listed = [item for prefix in prefixes for item in self._list(prefix)]
        keys = {orbit.name: key for orbit, key in listed}
        window = (product.mission, product.start, product.stop)
        best = select_orbit([orbit for orbit, _ in listed], *window)
        if best is None:
            return None
        return RemoteOrbit(best, f"{self._base}/{keys[best.name]}", self.name)

    def _list(self, prefix: str) -> list[tuple[OrbitFile, str]]:
        with self._lock:
            if prefix not in self._listings:
                self._listings[prefix] = self._fetch_listing(prefix)
            return self._listings[prefix]

    def _fetch_listing(self, prefix: str) -> list[tuple[OrbitFile, str]]:
        keys: list[str] = []
        params = {"list-type": "2", "prefix": prefix}
        for _ in range(MAX_LISTING_PAGES):
            what = f"aws: listing {prefix}"
            page = with_retries(functools.partial(self._page, dict(params), what), what)
            keys.extend(page.keys)
            if not page.truncated or not page.keys:
                break
            params = {"list-type": "2", "prefix": prefix}
            if page.token:
                params["continuation-token"] = page.token
            else:
                params["start-after"] = page.keys[-1]
        else:
            log.warning("aws: listing %s stopped after %d pages", prefix, MAX_LISTING_PAGES)
        files = []
        for key in keys:
            orbit = parse_orbit_name(key.rsplit("/", 1)[-1])
            if orbit is not None:
                files.append((orbit, key))
        return files

    def _page(self, params: dict[str, str], what: str) -> ListingPage:
        with self._http.send("GET", f"{self._base}/", what, params=params) as response:
            if response.status_code != 200:
                raise ProvisioningError(f"{what}: HTTP {response.status_code}")
            try:
                return parse_s3_listing(response.content)
            except (ValueError, etree.XMLSyntaxError) as err:
                raise Retryable(f"{what}: the answer is not an S3 listing") from err

    def fetch(self, remote: RemoteOrbit, dest: Path) -> int:
        return fetch_plain(self._http, remote, dest)
