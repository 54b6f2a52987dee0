"""HTTP for the orbit services: explicit time-outs, bounded retries with exponential backoff.

A timeout, a dropped connection, a 429 or a 5xx is worth another try; anything else is the
caller's to interpret. The constants are module globals read at call time, so tests shrink
them with monkeypatch and stay fast.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests

from insar_pipeline import __version__
from insar_pipeline.errors import ServiceError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0  # between two bytes, not for the whole body
MAX_ATTEMPTS = 4
BACKOFF_BASE_S = 1.0  # waits 1, 2, 4 s (plus jitter) between the 4 attempts
BACKOFF_MAX_S = 30.0  # also caps a server's Retry-After
CHUNK_BYTES = 1 << 20
USER_AGENT = f"insar-pipeline/{__version__}"

T = TypeVar("T")


class Retryable(Exception):
    """One attempt failed in a way another attempt may not (timeout, 429, 5xx, cut body)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


class _Session(requests.Session):
    """A Session that never sends ~/.netrc credentials on its own.

    requests adds a matching ~/.netrc entry as Basic auth to any request or redirect that
    has no auth; the CDSE password must only reach the CDSE token endpoint, in the form we
    build, never another host that happens to share a netrc machine name.
    """

    def __init__(self) -> None:
        super().__init__()
        self.auth = _no_auth  # a set auth stops the netrc lookup in prepare_request
        self.headers["User-Agent"] = USER_AGENT

    def rebuild_auth(self, prepared_request: Any, response: Any) -> None:
        # requests' version also reads ~/.netrc here; keep only its stripping on host change.
        headers = prepared_request.headers
        if "Authorization" in headers and self.should_strip_auth(
            response.request.url, prepared_request.url
        ):
            del headers["Authorization"]


class HttpClient:
    """One requests Session per thread (Sessions are not thread-safe), closed together."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = _Session()
            with self._lock:
                self._sessions.append(session)
        return session

    def send(self, method: str, url: str, what: str, **kwargs: Any) -> requests.Response:
        """One attempt. Raises Retryable for a timeout, a connection error, 429 and 5xx."""
        kwargs.setdefault("timeout", (CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
        try:
            response = self._session().request(method, url, **kwargs)
        except requests.Timeout as err:
            raise Retryable(f"{what}: timed out") from err
        except requests.RequestException as err:
            raise Retryable(f"{what}: connection failed ({type(err).__name__})") from err
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            response.close()
            raise Retryable(f"{what}: HTTP {response.status_code}", retry_after)
        return response

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare for these services, the backoff applies instead


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (0-based)."""
    delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt)
    if retry_after is not None:
        delay = max(delay, min(retry_after, BACKOFF_MAX_S))
    return delay * (1 + 0.25 * random.random())  # jitter: parallel clients spread out


def with_retries(attempt: Callable[[], T], what: str) -> T:
    """Run `attempt` up to MAX_ATTEMPTS times while it raises Retryable; then ServiceError."""
    last = Retryable(f"{what}: no attempt was made")
    for number in range(MAX_ATTEMPTS):
        try:
            return attempt()
        except Retryable as err:
            last = err
            if number + 1 < MAX_ATTEMPTS:
                delay = backoff_delay(number, err.retry_after)
                log.info("%s; retrying in %.1f s", err.reason, delay)
                time.sleep(delay)
    raise ServiceError(f"{last.reason} (gave up after {MAX_ATTEMPTS} attempts)") from last


def stream_to(response: requests.Response, path: Path, what: str) -> int:
    """Write a streamed body to `path` (created, flushed to disk); return its size.

    An interrupted transfer (connection reset, Content-Length not reached) is Retryable.
    """
    size = 0
    try:
        with response, path.open("wb") as out:
            for chunk in response.iter_content(CHUNK_BYTES):
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
    except requests.RequestException as err:
        raise Retryable(f"{what}: transfer interrupted after {size} bytes") from err
    return size
