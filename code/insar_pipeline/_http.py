"""The one HTTP layer of every client (orbit services, OpenTopography and the clients to come).

Two levels of retry, each written once:

- inside a request, urllib3's `Retry` (mounted on every `Session`): a connection error, a time-out
  before the answer, a 429 or a 5xx is tried again, up to MAX_ATTEMPTS requests, with exponential
  backoff and jitter, honouring `Retry-After` (capped at BACKOFF_MAX_S);
- around a request, `with_retries`: an attempt that fails after its answer began (a body cut
  mid-transfer, a time-out between two bytes: every `requests.RequestException`) or whose answer
  is not what was asked for (`Retryable`: an HTML page instead of a file) is made again, up to
  MAX_ATTEMPTS times; `download` is that attempt for a file: temp file beside the destination,
  validated, then renamed.

What urllib3 already retried MAX_ATTEMPTS times is not retried again: it ends as a ServiceError.
Messages carry the caller's `what` and exception type names, never an exception's text (it holds
the URL, and so any key in its query string). The constants are module globals read at call
time, so tests shrink them with monkeypatch.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ReadTimeoutError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from insar_pipeline import __version__
from insar_pipeline._io import atomic_output
from insar_pipeline.errors import ProvisioningError, ServiceError
from insar_pipeline.logs import mask_secrets

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0  # between two bytes, not for the whole body
SLOW_READ_TIMEOUT_S = 300.0  # for a service that builds a large answer before its first byte
MAX_ATTEMPTS = 4
BACKOFF_BASE_S = 1.0  # waits 1, 2, 4 s (plus jitter) between the 4 attempts
BACKOFF_MAX_S = 30.0  # also caps a server's Retry-After
RETRY_STATUSES = frozenset({429, *range(500, 600)})
CHUNK_BYTES = 1 << 20
USER_AGENT = f"insar-pipeline/{__version__}"

T = TypeVar("T")


class Retryable(Exception):
    """One attempt's answer was not what was asked for; another attempt may be (`with_retries`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (0-based)."""
    delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt)
    if retry_after is not None:
        delay = max(delay, min(retry_after, BACKOFF_MAX_S))
    return delay * (1 + 0.25 * random.random())  # jitter: parallel clients spread out


class _Retry(Retry):
    """urllib3's Retry with the pipeline's backoff (jitter, cap) and a capped Retry-After."""

    def get_backoff_time(self) -> float:
        return backoff_delay(len(self.history) - 1) if self.history else 0.0

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, BACKOFF_MAX_S)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        why = f"HTTP {response.status}" if response is not None else type(error).__name__
        log.info("%s %s: %s; retrying", method, mask_secrets(url or ""), why)
        return retry


def _retry() -> Retry:
    return _Retry(
        total=MAX_ATTEMPTS - 1,
        allowed_methods=None,  # every method: the one POST (a token request) is safe to repeat
        status_forcelist=RETRY_STATUSES,
        raise_on_status=False,  # the last 5xx comes back as an answer: `send` names it
        raise_on_redirect=False,
        respect_retry_after_header=True,
    )


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


class Session(requests.Session):
    """A Session with the pipeline's retries, time-outs and User-Agent, that never sends
    ~/.netrc credentials on its own.

    requests adds a matching ~/.netrc entry as Basic auth to any request or redirect that has
    no auth; a password must only reach the endpoint it is for, in the form its client builds.
    """

    def __init__(self, slow: bool = False) -> None:
        super().__init__()
        self._slow = slow
        self.auth = _no_auth  # a set auth stops the netrc lookup in prepare_request
        self.headers["User-Agent"] = USER_AGENT
        adapter = HTTPAdapter(max_retries=_retry())
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def timeout(self) -> tuple[float, float]:
        return CONNECT_TIMEOUT_S, SLOW_READ_TIMEOUT_S if self._slow else READ_TIMEOUT_S

    def rebuild_auth(
        self, prepared_request: requests.PreparedRequest, response: requests.Response
    ) -> None:
        # requests' version also reads ~/.netrc here; keep only its stripping on host change.
        headers = prepared_request.headers
        if "Authorization" in headers and self.should_strip_auth(
            response.request.url or "", prepared_request.url or ""
        ):
            del headers["Authorization"]


class HttpClient:
    """One Session per thread (Sessions are not thread-safe), closed together."""

    def __init__(self, slow: bool = False) -> None:
        self._slow = slow
        self._local = threading.local()
        self._sessions: list[Session] = []
        self._lock = threading.Lock()

    def _session(self) -> Session:
        session: Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = Session(self._slow)
            with self._lock:
                self._sessions.append(session)
        return session

    def send(
        self,
        method: str,
        url: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        allow_redirects: bool = True,
    ) -> requests.Response:
        """One request, retried by urllib3. Raises ServiceError once its retries are spent
        (connection errors, time-outs, 429, 5xx); any other answer is the caller's to read."""
        session = self._session()
        try:
            response = session.request(
                method,
                url,
                params=params,
                data=data,
                headers=headers,
                stream=stream,
                allow_redirects=allow_redirects,
                timeout=session.timeout(),
            )
        except requests.RequestException as err:
            if _spent(err):
                raise _gave_up(f"{what}: {describe(err)}") from None
            raise
        if response.status_code in RETRY_STATUSES:
            response.close()
            raise _gave_up(f"{what}: HTTP {response.status_code}")
        return response

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()


def describe(err: requests.RequestException) -> str:
    """What went wrong, without the exception's text (which holds the URL)."""
    reason = err.args[0].reason if err.args and isinstance(err.args[0], MaxRetryError) else err
    if isinstance(reason, (requests.Timeout, ConnectTimeoutError, ReadTimeoutError)):
        return f"timed out ({type(err).__name__})"
    if isinstance(err, requests.exceptions.ChunkedEncodingError):
        return "transfer interrupted (ChunkedEncodingError)"
    return f"connection failed ({type(err).__name__})"


def _spent(err: requests.RequestException) -> bool:
    """Whether urllib3 already made every attempt of this request."""
    return isinstance(err, requests.exceptions.RetryError) or any(
        isinstance(arg, MaxRetryError) for arg in err.args
    )


def _gave_up(reason: str) -> ServiceError:
    return ServiceError(f"{reason} (gave up after {MAX_ATTEMPTS} attempts)")


def with_retries(attempt: Callable[[], T], what: str) -> T:
    """Run `attempt` up to MAX_ATTEMPTS times while it raises Retryable or any
    requests.RequestException (a body cut mid-transfer included); then ServiceError."""
    reason = f"{what}: no attempt was made"
    for number in range(MAX_ATTEMPTS):
        try:
            return attempt()
        except Retryable as err:
            reason = err.reason
        except requests.RequestException as err:
            if _spent(err):
                raise _gave_up(f"{what}: {describe(err)}") from None
            reason = f"{what}: {describe(err)}"
        if number + 1 < MAX_ATTEMPTS:
            delay = backoff_delay(number)
            log.info("%s; retrying in %.1f s", reason, delay)
            time.sleep(delay)
    raise _gave_up(reason)


def stream_to(response: requests.Response, path: Path) -> int:
    """Write a streamed body to `path`; return its size. A cut body raises a RequestException."""
    size = 0
    with response, path.open("wb") as out:
        for chunk in response.iter_content(CHUNK_BYTES):
            out.write(chunk)
            size += len(chunk)
    return size


def download(
    path: Path, fetch: Callable[[Path], int], validate: Callable[[Path], T], what: str
) -> tuple[T, int]:
    """Download to a temp file beside `path`, validate it, rename it to `path`, with retries.

    `fetch(temp)` makes the request and writes the body (`stream_to`), returning its size;
    `validate(temp)` reads it back and returns what it found: a ValueError there (a page instead
    of the file, a cut body) is retried, a PipelineError is final.
    """

    def attempt() -> tuple[T, int]:
        try:
            with atomic_output(path) as temporary:
                size = fetch(temporary)
                try:
                    found = validate(temporary)
                except ValueError as err:
                    raise Retryable(f"{what}: {err}") from err
        except requests.RequestException:
            raise  # an OSError too, but one `with_retries` retries
        except OSError as err:
            raise ProvisioningError(f"cannot write {path}: {err.strerror or err}") from err
        return found, size

    return with_retries(attempt, what)
