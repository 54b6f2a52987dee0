"""HTTP for acquisition: Earthdata login, and resumable downloads of one URL into a part file.

The one module of `acquire` that speaks HTTP with requests directly (asf_search has its own
session for the search), so it can move onto a shared HTTP layer in one place. Time-outs are
explicit; a timeout, a dropped connection, 429 and 5xx are retried with backoff; a 202 (ASF's
burst extractor preparing a burst) is waited for; a cut body resumes with a Range request.
The constants are module globals read at call time so that tests shrink them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from insar_pipeline import __version__
from insar_pipeline.errors import CredentialError, ServiceError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0  # between two bytes, not for the whole body
MAX_ATTEMPTS = 5
BACKOFF_BASE_S = 1.0  # 1, 2, 4, 8 s between attempts
BACKOFF_MAX_S = 30.0
ACCEPTED_WAIT_S = 2.0  # between polls of a 202 (the burst extractor is cutting the burst)
MAX_ACCEPTED_POLLS = 60
CHUNK_BYTES = 1 << 16  # small: a cut connection loses at most this much of what arrived
USER_AGENT = f"insar-pipeline/{__version__}"
# Hosts that may receive the Earthdata token on a redirect (asf_search's AUTH_DOMAINS).
AUTH_DOMAINS = ("asf.alaska.edu", "earthdata.nasa.gov")
# Earthdata Login's client id of asf_search, for checking a token (asf_search does the same).
EDL_CLIENT_ID = "BO_n7nTIlMljdvU6kRRB3g"


class Retryable(Exception):
    """One attempt failed in a way another attempt may not."""


class EarthdataSession(requests.Session):
    """A Session that sends the Earthdata token and never ~/.netrc credentials on its own.

    The token goes to the download hosts and their redirects within AUTH_DOMAINS (ASF's
    downloads redirect through Earthdata); a redirect elsewhere (a signed S3 URL) drops it.
    """

    def __init__(self, token: str | None = None) -> None:
        super().__init__()
        self.auth = _no_auth  # a set auth stops requests' netrc lookup
        self.headers["User-Agent"] = USER_AGENT
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"

    def rebuild_auth(self, prepared_request: Any, response: Any) -> None:
        headers = prepared_request.headers
        if "Authorization" not in headers:
            return
        before, after = urlsplit(response.request.url), urlsplit(prepared_request.url)
        if before.netloc != after.netloc and not (
            _trusted(before.hostname) and _trusted(after.hostname)
        ):
            del headers["Authorization"]


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


def _trusted(host: str | None) -> bool:
    return bool(host) and any(host == d or str(host).endswith(f".{d}") for d in AUTH_DOMAINS)


def check_token(edl_host: str, token: str) -> None:
    """CredentialError unless Earthdata Login at `edl_host` accepts the token."""
    url = f"https://{edl_host}/oauth/tokens/user"
    response = _login_request(
        "post", url, params={"client_id": EDL_CLIENT_ID}, data={"token": token}
    )
    if not 200 <= response.status_code < 300:
        raise CredentialError(
            f"Earthdata Login ({edl_host}) rejected EARTHDATA_TOKEN (HTTP {response.status_code});"
            " make a new token at https://urs.earthdata.nasa.gov/user_tokens"
        )


def token_from_password(edl_host: str, username: str, password: str, where: str) -> str:
    """An Earthdata bearer token for a username and password (CredentialError if refused)."""
    url = f"https://{edl_host}/api/users/find_or_create_token"
    response = _login_request("post", url, auth=(username, password))
    if not 200 <= response.status_code < 300:
        raise CredentialError(
            f"Earthdata Login ({edl_host}) rejected the username and password from {where}"
            f" (HTTP {response.status_code}); check them, or set EARTHDATA_TOKEN"
        )
    try:
        token = response.json()["access_token"]
    except (ValueError, KeyError, TypeError) as err:
        raise ServiceError(f"Earthdata Login ({edl_host}) answered without a token") from err
    return str(token)


def _login_request(method: str, url: str, **kwargs: Any) -> requests.Response:
    with EarthdataSession() as session:
        try:
            return session.request(
                method, url, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S), **kwargs
            )
        except requests.RequestException as err:
            host = urlsplit(url).netloc
            raise ServiceError(
                f"Earthdata Login ({host}) cannot be reached ({type(err).__name__})"
            ) from err


def download_resumable(
    session: requests.Session,
    url: str,
    part: Path,
    what: str,
    on_bytes: Callable[[int], None] = lambda n: None,
    expected: int | None = None,
) -> int:
    """Fetch `url` into `part`, resuming what `part` already holds; return its final size.

    Retries up to MAX_ATTEMPTS (a body shorter than `expected` counts as cut); each retry
    resumes with `Range: bytes=<size>-` (a server that answers 200 instead of 206 sends the
    whole body again, so the file starts over).
    """
    for attempt in range(MAX_ATTEMPTS):
        try:
            return _attempt(session, url, part, what, on_bytes, expected)
        except Retryable as err:
            if attempt + 1 == MAX_ATTEMPTS:
                raise ServiceError(f"{err} (gave up after {MAX_ATTEMPTS} attempts)") from err
            delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt)
            log.info("%s; retrying in %.0f s", err, delay)
            time.sleep(delay)
    raise ServiceError(f"{what}: no attempt was made")  # pragma: no cover (MAX_ATTEMPTS >= 1)


def _attempt(
    session: requests.Session,
    url: str,
    part: Path,
    what: str,
    on_bytes: Callable[[int], None],
    expected: int | None,
) -> int:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    response = _get_ready(session, url, what, headers)
    with response:
        if response.status_code == 416 and have:  # we already hold all of it
            return have
        if response.status_code == 200 and have:
            on_bytes(-have)  # the server ignored Range: start over
            have = 0
        elif response.status_code not in (200, 206):
            raise _failure(response, what)
        mode = "ab" if have else "wb"
        try:
            with part.open(mode) as out:
                for chunk in response.iter_content(CHUNK_BYTES):
                    out.write(chunk)
                    have += len(chunk)
                    on_bytes(len(chunk))
        except requests.RequestException as err:
            raise Retryable(f"{what}: transfer cut after {have} bytes") from err
    if expected is not None and have < expected:
        raise Retryable(f"{what}: transfer ended after {have} of {expected} bytes")
    return have


def _get_ready(
    session: requests.Session, url: str, what: str, headers: dict[str, str]
) -> requests.Response:
    """GET that waits out 202 Accepted; Retryable on a timeout, connection error, 429, 5xx."""
    for _ in range(MAX_ACCEPTED_POLLS):
        try:
            response = session.get(
                url, headers=headers, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
            )
        except requests.Timeout as err:
            raise Retryable(f"{what}: timed out") from err
        except requests.RequestException as err:
            raise Retryable(f"{what}: connection failed ({type(err).__name__})") from err
        if response.status_code == 429 or response.status_code >= 500:
            response.close()
            raise Retryable(f"{what}: HTTP {response.status_code}")
        if response.status_code != 202:
            return response
        response.close()
        time.sleep(ACCEPTED_WAIT_S)
    raise Retryable(f"{what}: still being prepared after {MAX_ACCEPTED_POLLS} polls")


def _failure(response: requests.Response, what: str) -> Exception:
    code = response.status_code
    if code in (401, 403):
        return CredentialError(
            f"{what}: the download server refused the Earthdata login (HTTP {code}); check"
            " EARTHDATA_TOKEN (or the username and password) and that you accepted ASF's terms"
        )
    return ServiceError(f"{what}: HTTP {code}")
