"""HTTP for acquisition: Earthdata login, and resumable downloads of one URL into a part file.

Built on the pipeline's HTTP layer (`_http`: its Session retries connection errors, time-outs,
429 and 5xx inside a request and never sends ~/.netrc credentials; `with_retries` retries an
attempt whose body was cut). What this adds: the Earthdata token, kept on redirects within
ASF/Earthdata only; a 202 (ASF's burst extractor preparing a burst) waited for; and a cut body
resumed with a Range request instead of started over. The constants are module globals read
at call time so that tests shrink them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import requests

from insar_pipeline import _http
from insar_pipeline.errors import CredentialError, ServiceError

log = logging.getLogger(__name__)

ACCEPTED_WAIT_S = 2.0  # between polls of a 202 (the burst extractor is cutting the burst)
MAX_ACCEPTED_POLLS = 60
CHUNK_BYTES = 1 << 16  # small: a cut connection loses at most this much of what arrived
# Hosts that may receive the Earthdata token on a redirect (asf_search's AUTH_DOMAINS).
AUTH_DOMAINS = ("asf.alaska.edu", "earthdata.nasa.gov")
# Earthdata Login's client id of asf_search, for checking a token (asf_search does the same).
EDL_CLIENT_ID = "BO_n7nTIlMljdvU6kRRB3g"


class EarthdataSession(_http.Session):
    """The pipeline's Session, sending the Earthdata token when given one.

    The token goes to the download hosts and their redirects within AUTH_DOMAINS (ASF's
    downloads redirect through Earthdata); a redirect elsewhere (a signed S3 URL) drops it.
    """

    def __init__(self, token: str | None = None) -> None:
        super().__init__()
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"

    def rebuild_auth(
        self, prepared_request: requests.PreparedRequest, response: requests.Response
    ) -> None:
        headers = prepared_request.headers
        if "Authorization" not in headers:
            return
        before = urlsplit(response.request.url or "")
        after = urlsplit(prepared_request.url or "")
        if before.netloc != after.netloc and not (
            _trusted(before.hostname) and _trusted(after.hostname)
        ):
            del headers["Authorization"]


def _trusted(host: str | None) -> bool:
    return bool(host) and any(host == d or str(host).endswith(f".{d}") for d in AUTH_DOMAINS)


def check_token(edl_host: str, token: str) -> None:
    """CredentialError unless Earthdata Login at `edl_host` accepts the token."""
    url = f"https://{edl_host}/oauth/tokens/user"
    response = _login_request(url, params={"client_id": EDL_CLIENT_ID}, data={"token": token})
    if not 200 <= response.status_code < 300:
        raise CredentialError(
            f"Earthdata Login ({edl_host}) rejected EARTHDATA_TOKEN (HTTP {response.status_code});"
            " make a new token at https://urs.earthdata.nasa.gov/user_tokens"
        )


def token_from_password(edl_host: str, username: str, password: str, where: str) -> str:
    """An Earthdata bearer token for a username and password (CredentialError if refused)."""
    url = f"https://{edl_host}/api/users/find_or_create_token"
    response = _login_request(url, auth=(username, password))
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


def _login_request(
    url: str,
    params: dict[str, str] | None = None,
    data: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
) -> requests.Response:
    """POST to Earthdata Login (the Session's retries; no ~/.netrc)."""
    host = urlsplit(url).netloc
    with EarthdataSession() as session:
        try:
            response = session.post(
                url, params=params, data=data, auth=auth, timeout=session.timeout()
            )
        except requests.RequestException as err:
            raise ServiceError(
                f"Earthdata Login ({host}) cannot be reached: {_http.describe(err)}"
            ) from None
    if response.status_code in _http.RETRY_STATUSES:
        raise ServiceError(f"Earthdata Login ({host}) failed: HTTP {response.status_code}")
    return response


def is_asf(url: str) -> bool:
    """Whether a download URL is ASF's own (not a mirror or a test server)."""
    host = urlsplit(url).hostname or ""
    return host == "asf.alaska.edu" or host.endswith(".asf.alaska.edu")


def asf_cookies(token: str) -> requests.cookies.RequestsCookieJar:
    """The cookies ASF's burst extractor may want beside the token (`asf-urs`), from the URL
    burst2safe fetches for them (read at call time: tests point it at a loopback server)."""
    from burst2safe import download as burst2safe_download

    url = burst2safe_download.COOKIE_URL
    with EarthdataSession(token) as session:
        try:
            response = session.get(url, timeout=session.timeout())
        except requests.RequestException as err:
            raise ServiceError(f"ASF's login cookie: {_http.describe(err)}") from None
        response.close()
        if response.status_code in (401, 403):
            raise _failure(response, "ASF's login cookie")
        return session.cookies


def download_resumable(
    session: requests.Session,
    url: str,
    part: Path,
    what: str,
    on_bytes: Callable[[int], None] = lambda n: None,
    expected: int | None = None,
) -> int:
    """Fetch `url` into `part`, resuming what `part` already holds; return its final size.

    Retries up to `_http.MAX_ATTEMPTS` (a body shorter than `expected` counts as cut); each retry
    resumes with `Range: bytes=<size>-` (a server that answers 200 instead of 206 sends the
    whole body again, so the file starts over).
    """
    return _http.with_retries(lambda: _attempt(session, url, part, what, on_bytes, expected), what)


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
        # A cut body raises a RequestException here, after what arrived was written:
        # `with_retries` makes the next attempt, which resumes from it.
        with part.open("ab" if have else "wb") as out:
            for chunk in response.iter_content(CHUNK_BYTES):
                out.write(chunk)
                have += len(chunk)
                on_bytes(len(chunk))
    if expected is not None and have < expected:
        raise _http.Retryable(f"{what}: transfer ended after {have} of {expected} bytes")
    return have


def _get_ready(
    session: requests.Session, url: str, what: str, headers: dict[str, str]
) -> requests.Response:
    """GET that waits out 202 Accepted (the Session already retried 429/5xx and errors)."""
    timeout = session.timeout() if isinstance(session, _http.Session) else None
    for _ in range(MAX_ACCEPTED_POLLS):
        response = session.get(url, headers=headers, stream=True, timeout=timeout)
        if response.status_code in _http.RETRY_STATUSES:
            response.close()
            raise ServiceError(f"{what}: HTTP {response.status_code} (gave up after retries)")
        if response.status_code != 202:
            return response
        response.close()
        time.sleep(ACCEPTED_WAIT_S)
    raise _http.Retryable(f"{what}: still being prepared after {MAX_ACCEPTED_POLLS} polls")


def _failure(response: requests.Response, what: str) -> Exception:
    code = response.status_code
    if code in (401, 403):
        return CredentialError(
            f"{what}: the download server refused the Earthdata login (HTTP {code}); check"
            " EARTHDATA_TOKEN (or the username and password) and that you accepted ASF's terms"
        )
    return ServiceError(f"{what}: HTTP {code}")
