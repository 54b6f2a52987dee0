"""The HTTP layer (_http.py): retries in and around a request, and the secret filter of the CLI."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from dem_fixtures import (  # noqa: F401  (the `source` and `server` fixtures)
    KEY,
    server_fixture,
    source_fixture,
)
from insar_pipeline import _http as http
from insar_pipeline.dem import provision as dem
from insar_pipeline.errors import ServiceError
from insar_pipeline.logs import SecretMaskFilter, configure_logging
from opentopo_server import OpenTopoEmulator
from test_dem import PAIR, raster_of, settings_for


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setattr(http, "BACKOFF_MAX_S", 0.05)


def test_a_dem_body_cut_mid_transfer_is_retried_and_the_dem_is_made(
    server: OpenTopoEmulator, tmp_path: Path
) -> None:
    server.cuts = 1  # issue 12: ChunkedEncodingError used to end in a traceback
    settings = settings_for(server, tmp_path, dem_type="SRTMGL1_E")
    path = dem.provision_dems(settings, [PAIR])[PAIR.id]
    assert len(server.requests) == 2  # the cut one, then the whole one
    assert raster_of(path).shape[0] > 0
    assert not [p for p in (tmp_path / "dem").rglob("*") if p.name.endswith(".part")]


def test_a_body_cut_every_time_is_a_service_error_not_a_traceback(
    server: OpenTopoEmulator, tmp_path: Path
) -> None:
    server.cuts = http.MAX_ATTEMPTS
    settings = settings_for(server, tmp_path, dem_type="SRTMGL1_E")
    with pytest.raises(ServiceError, match="transfer interrupted") as caught:
        dem.provision_dems(settings, [PAIR])
    assert len(server.requests) == http.MAX_ATTEMPTS
    assert KEY not in str(caught.value) and "API_Key=***" in str(caught.value)


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 (Retry-After: 0) `failures` times, then 200 with `ok`."""

    failures = 0
    hits = 0
    lock = threading.Lock()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        with _Flaky.lock:
            _Flaky.hits += 1
            failing = _Flaky.hits <= _Flaky.failures
        status, body = (503, b"busy") if failing else (200, b"ok")
        self.send_response(status)
        self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(name="flaky")
def flaky_fixture() -> Iterator[str]:
    _Flaky.hits = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/x"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("failures", [0, 1, http.MAX_ATTEMPTS - 1])
def test_urllib3_retries_5xx_within_one_send(flaky: str, failures: int) -> None:
    _Flaky.failures = failures
    client = http.HttpClient()
    try:
        with client.send("GET", flaky, "test") as response:
            assert response.content == b"ok"
    finally:
        client.close()
    assert _Flaky.hits == failures + 1


def test_spent_retries_are_a_service_error_and_not_retried_again(flaky: str) -> None:
    _Flaky.failures = 100
    client = http.HttpClient()
    try:
        with pytest.raises(ServiceError, match="test: HTTP 503 \\(gave up after 4 attempts\\)"):
            http.with_retries(lambda: client.send("GET", flaky, "test"), "test")
    finally:
        client.close()
    assert _Flaky.hits == http.MAX_ATTEMPTS  # urllib3's attempts only, not 4 x 4


@pytest.mark.parametrize(
    "error",
    [
        requests.exceptions.ChunkedEncodingError("cut"),
        requests.exceptions.ConnectionError("reset"),
        requests.exceptions.ReadTimeout("slow"),
        requests.exceptions.ContentDecodingError("garbled"),
        http.Retryable("test: a page instead of the file"),
    ],
)
def test_with_retries_retries_every_request_exception(error: Exception) -> None:
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise error
        return "done"

    assert http.with_retries(attempt, "test") == "done" and len(calls) == 2


def test_download_keeps_nothing_of_a_body_that_fails_its_check(tmp_path: Path) -> None:
    target = tmp_path / "file.EOF"

    def fetch(temporary: Path) -> int:
        temporary.write_bytes(b"<html>maintenance</html>")
        return 24

    def validate(temporary: Path) -> None:
        raise ValueError("not an orbit file")

    with pytest.raises(ServiceError, match="not an orbit file \\(gave up after 4 attempts\\)"):
        http.download(target, fetch, validate, "test")
    assert list(tmp_path.iterdir()) == []


def test_the_cli_installs_the_one_secret_filter_on_its_handlers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    assert not any(isinstance(f, SecretMaskFilter) for f in logging.getLogger("urllib3").filters)
    assert not any(
        isinstance(f, SecretMaskFilter) for f in logging.getLogger("urllib3.connectionpool").filters
    )
    configure_logging(secrets=["hunter2-password"])
    try:
        logging.getLogger("urllib3.connectionpool").warning(
            "Retrying after connection broken: /API/globaldem?demtype=COP30&API_Key=%s&x=1", KEY
        )
        logging.getLogger("insar_pipeline.test").warning("login with hunter2-password refused")
    finally:
        configure_logging()
    text = stderr.getvalue()
    assert "API_Key=***&x=1" in text and "login with *** refused" in text
    assert KEY not in text and "hunter2" not in text
