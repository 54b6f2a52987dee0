"""Copernicus Data Space (CDSE) as an orbit source: OData query, token, authenticated download.

The query is public; the download needs an access token made from the user's CDSE account
(CDSE_USERNAME/CDSE_PASSWORD, else the ~/.netrc entry for the token host). A refused login is
a CredentialError naming what to fix, never the values.
"""

from __future__ import annotations

import functools
import json
import logging
import netrc
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from insar_pipeline._http import HttpClient, Retryable, stream_to, with_retries
from insar_pipeline.errors import CredentialError, ProvisioningError
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.safe import Product
from insar_pipeline.orbits.files import (
    KINDS,
    START_MARGIN,
    STOP_MARGIN,
    OrbitFile,
    parse_orbit_name,
    select_orbit,
)
from insar_pipeline.orbits.sources import RemoteOrbit

log = logging.getLogger(__name__)

CLIENT_ID = "cdse-public"  # the public OAuth client of CDSE's password grant
PAGE_SIZE = 20  # a scene's window matches a handful of files (versions of one day)
MAX_PAGES = 5
TOKEN_SLACK_S = 60.0  # renew a token this long before it expires


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)  # never in a repr, a traceback's locals or a log
    origin: str = ""  # where they came from, to tell the user what to fix; never the values


def find_credentials(settings: Settings) -> Credentials | None:
    """CDSE credentials from the settings, else ~/.netrc (machine = the token URL's host)."""
    password = settings.cdse_password.get_secret_value() if settings.cdse_password else None
    if settings.cdse_username and password:
        return Credentials(settings.cdse_username, password, "CDSE_USERNAME and CDSE_PASSWORD")
    if settings.cdse_username or password:
        raise CredentialError("set both CDSE_USERNAME and CDSE_PASSWORD (only one is set)")
    host = urlsplit(settings.cdse_token_url).hostname or ""
    try:
        entry = netrc.netrc().authenticators(host)
    except FileNotFoundError:
        return None
    except OSError as err:
        log.warning("cannot read ~/.netrc (%s); no CDSE credentials from it", err.strerror)
        return None
    except netrc.NetrcParseError as err:
        # Parse messages quote the offending token, which may be a password: say where only.
        problem = err.msg if err.msg.startswith("~/.netrc") else f"malformed at line {err.lineno}"
        raise CredentialError(f"~/.netrc: {problem}") from None
    if entry is None or not entry[0] or not entry[2]:
        return None
    return Credentials(
        entry[0],
        entry[2],
        f"the ~/.netrc entry for machine {host} (or set CDSE_USERNAME and CDSE_PASSWORD)",
    )


def odata_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def odata_filter(kind: str, mission: str, start: datetime, stop: datetime) -> str:
    """The $filter of files that may cover a scene, as the service's own clients write it.

    lt/gt with a second of slack: this only narrows the answer, select_orbit decides.
    """
    begin = start - START_MARGIN + timedelta(seconds=1)
    end = stop + STOP_MARGIN - timedelta(seconds=1)
    return (
        f"Collection/Name eq 'SENTINEL-1' and startswith(Name,'{mission}') "
        f"and contains(Name,'AUX_{kind}') and ContentDate/Start lt '{odata_time(begin)}' "
        f"and ContentDate/End gt '{odata_time(end)}'"
    )


@dataclass(frozen=True)
class QueryPage:
    products: tuple[tuple[OrbitFile, str], ...]  # file, CDSE product Id
    next_link: str | None


def parse_odata(data: bytes) -> QueryPage:
    """Orbit files of one OData /Products answer; raises ValueError when it is not one."""
    body = json.loads(data)
    values = body.get("value") if isinstance(body, dict) else None
    if not isinstance(values, list):
        raise ValueError("no 'value' list in the answer")  # noqa: TRY004 - a bad answer
    found = []
    for item in values:
        if not isinstance(item, dict):
            continue
        orbit = parse_orbit_name(str(item.get("Name", "")))
        if orbit is not None and item.get("Id"):
            found.append((orbit, str(item["Id"])))
    return QueryPage(tuple(found), body.get("@odata.nextLink"))


class CdseSource:
    name = "cdse"

    def __init__(self, settings: Settings, http: HttpClient) -> None:
        self._settings = settings
        self._query_url = f"{settings.cdse_url.rstrip('/')}/odata/v1/Products"
        self._download_url = f"{settings.cdse_download_url.rstrip('/')}/odata/v1/Products"
        self._http = http
        self._credentials: Credentials | None = None
        self._token: tuple[str, float] | None = None  # token, monotonic expiry
        self._token_lock = threading.Lock()

    def find(self, product: Product) -> RemoteOrbit | None:
        self._require_credentials()  # no point finding what we may not download
        for kind in KINDS:
            found = self._query(kind, product)
            ids = {orbit.name: product_id for orbit, product_id in found}
            best = select_orbit([orbit for orbit, _ in found], *_window(product))
            if best is not None:
                url = f"{self._download_url}({ids[best.name]})/$value"
                return RemoteOrbit(best, url, self.name)
        return None

    def _require_credentials(self) -> Credentials:
        if self._credentials is None:
            self._credentials = find_credentials(self._settings)
        if self._credentials is None:
            host = urlsplit(self._settings.cdse_token_url).hostname
            raise ProvisioningError(
                "cdse: no credentials; set CDSE_USERNAME and CDSE_PASSWORD in .env "
                f"(or add machine {host} to ~/.netrc)"
            )
        return self._credentials

    def _query(self, kind: str, product: Product) -> list[tuple[OrbitFile, str]]:
        what = f"cdse: search of {kind} for {product.name}"
        url = self._query_url
        params: dict[str, str] | None = {
            "$filter": odata_filter(kind, *_window(product)),
            "$orderby": "ContentDate/Start asc",
            "$top": str(PAGE_SIZE),
        }
        found: list[tuple[OrbitFile, str]] = []
        for _ in range(MAX_PAGES):
            page = with_retries(functools.partial(self._page, url, params, what), what)
            found.extend(page.products)
            if page.next_link is None or len(page.products) < PAGE_SIZE:
                break
            url, params = page.next_link, None  # the link carries the query and $skip
        return found

    def _page(self, url: str, params: dict[str, str] | None, what: str) -> QueryPage:
        with self._http.send("GET", url, what, params=params) as response:
            if response.status_code != 200:
                raise ProvisioningError(f"{what}: HTTP {response.status_code}")
            try:
                return parse_odata(response.content)
            except ValueError as err:  # JSONDecodeError included: an HTML page, a cut body
                raise Retryable(f"{what}: the answer is not an OData product list") from err

    def fetch(self, remote: RemoteOrbit, dest: Path) -> int:
        what = f"cdse: download of {remote.orbit.name}"
        for renewed in (False, True):
            headers = {"Authorization": f"Bearer {self._access_token(renew=renewed)}"}
            response = self._http.send("GET", remote.url, what, stream=True, headers=headers)
            if response.status_code not in (401, 403):
                break
            response.close()  # maybe an expired token: renew it once
        if response.status_code in (401, 403):
            raise self._refused(response.status_code, "download")
        if response.status_code != 200:
            response.close()
            raise ProvisioningError(f"{what}: HTTP {response.status_code}")
        return stream_to(response, dest)

    def _access_token(self, renew: bool = False) -> str:
        with self._token_lock:  # parallel downloads share one login
            if not renew and self._token and time.monotonic() < self._token[1]:
                return self._token[0]
            token, lifetime = with_retries(self._login, "cdse: login")
            self._token = token, time.monotonic() + max(0.0, lifetime - TOKEN_SLACK_S)
            return token

    def _login(self) -> tuple[str, float]:
        credentials = self._require_credentials()
        form = {
            "client_id": CLIENT_ID,
            "grant_type": "password",
            "username": credentials.username,
            "password": credentials.password,
        }
        with self._http.send(
            "POST", self._settings.cdse_token_url, "cdse: login", data=form
        ) as response:
            if response.status_code in (400, 401, 403):
                raise self._refused(response.status_code, "login")
            if response.status_code != 200:
                raise ProvisioningError(f"cdse: login: HTTP {response.status_code}")
            try:
                body = response.json()
                return str(body["access_token"]), float(body.get("expires_in", 600))
            except (ValueError, KeyError, TypeError) as err:
                raise Retryable("cdse: login: the answer holds no access token") from err

    def _refused(self, status: int, step: str) -> CredentialError:
        credentials = self._credentials
        origin = credentials.origin if credentials else "CDSE_USERNAME and CDSE_PASSWORD"
        return CredentialError(
            f"Copernicus Data Space refused the {step} (HTTP {status}): check {origin}"
        )


def _window(product: Product) -> tuple[str, datetime, datetime]:
    return product.mission, product.start, product.stop
