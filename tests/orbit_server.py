"""A loopback orbit-service server for the orbit tests and benchmark (factories: orbit_factories).

`OrbitServer` plays the three orbit services on 127.0.0.1 with real sockets, in the formats the
real services answer with (see ../shared/realdata/orbit_services; `test_orbits` checks that
the formats match): ASF's s1-orbits API (`/asf/scene/<scene>` redirects to the file), an S3
bucket (`/aws/?list-type=2...`, ListObjectsV2 pages), and Copernicus Data Space (OData query
at `/cdse/odata/v1/Products`, token at `/token`, download at `/zipper/...`). It counts every
request per route and injects faults (status codes, time-outs, HTML pages, cut bodies).
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode, urlsplit
from xml.sax.saxutils import escape

import pytest

from insar_pipeline import _http as orbit_http
from insar_pipeline.inputs.config import Settings
from loopback import LoopbackServer
from orbit_factories import SCENE_RE, make_eof, utc

# ---------------------------------------------------------------------------------------------
# The loopback server

CDSE_USER = "someone@example.org"
CDSE_PASSWORD = "pa55-w0rd-XYZ"  # tests assert it never reaches a log or a message


def service_settings(url: str, data_dir: Path, **changes: object) -> Settings:
    """Settings whose orbit services are the OrbitServer at `url`."""
    values: dict[str, object] = {
        "data_dir": data_dir,
        "asf_orbit_url": f"{url}/asf",
        "aws_orbit_url": f"{url}/aws",
        "cdse_url": f"{url}/cdse",
        "cdse_token_url": f"{url}/token",
        "cdse_download_url": f"{url}/zipper",
        "cdse_username": CDSE_USER,
        "cdse_password": CDSE_PASSWORD,
    }
    values.update(changes)
    return Settings(**values)


@dataclass(frozen=True)
class Fault:
    """What the server does instead of (or to) its normal answer, once."""

    status: int | None = None  # answer with this status and a short error body
    retry_after: str | None = None
    delay_s: float = 0.0  # sleep first (longer than the client's read time-out = a time-out)
    body: bytes | None = None  # answer 200 with this body instead (an HTML error page)
    truncate: bool = False  # send the first half of the body, with a matching Content-Length
    cut: bool = False  # announce the whole length, send half, drop the connection


HTML_PAGE = Fault(body=b"<html><head><title>503</title></head><body>Maintenance</body></html>")
TRUNCATED = Fault(truncate=True)
CUT = Fault(cut=True)


# Read time-out of the orbit tests: long enough that a loaded CI machine never times out a
# normal answer (the tests count requests exactly); tests of time-outs lower it to
# SHORT_READ_TIMEOUT_S, and the server then stalls for twice that.
TEST_READ_TIMEOUT_S = 5.0
SHORT_READ_TIMEOUT_S = 1.0


def timeout(seconds: float = 2 * SHORT_READ_TIMEOUT_S) -> Fault:
    return Fault(delay_s=seconds)


@dataclass(frozen=True)
class Hit:
    route: str
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class _State:
    files: dict[str, bytes | None] = field(default_factory=dict)  # name -> body (None: lazy)
    ids: dict[str, str] = field(default_factory=dict)  # CDSE product id -> name
    hits: list[Hit] = field(default_factory=list)
    faults: dict[str, deque[Fault]] = field(default_factory=lambda: defaultdict(deque))
    asf_answers: dict[str, tuple[int, str]] = field(default_factory=dict)  # scene -> override


class OrbitServer(LoopbackServer):
    """A threaded HTTP server on 127.0.0.1 playing ASF, the S3 bucket and CDSE."""

    def __init__(self, latency_s: float = 0.0, page_size: int = 1000, step_s: int = 60) -> None:
        self.latency_s = latency_s
        self.page_size = page_size
        self.step_s = step_s
        self.cdse_user = CDSE_USER
        self.cdse_password = CDSE_PASSWORD
        self.token = "token-" + uuid.uuid4().hex
        self._state = _State()
        self._lock = threading.Lock()
        super().__init__(_handler_for(self), quiet=True)

    def settings(self, data_dir: Path, **changes: object) -> Settings:
        return service_settings(self.url, data_dir, **changes)

    # content
    def add(self, *names: str, body: bytes | None = None) -> None:
        """Publish orbit files (made on first download unless `body` is given)."""
        with self._lock:
            for name in names:
                self._state.files[name] = body
                self._state.ids.setdefault(str(uuid.uuid5(uuid.NAMESPACE_URL, name)), name)

    def set_id(self, name: str, product_id: str) -> None:
        with self._lock:
            self._state.ids = {k: v for k, v in self._state.ids.items() if v != name}
            self._state.ids[product_id] = name

    def answer_asf(self, scene: str, status: int, name: str = "") -> None:
        """Make the ASF API answer `status` (redirecting to `name` if 30x) for one scene."""
        with self._lock:
            self._state.asf_answers[scene] = (status, name)

    def fail(self, route: str, *faults: Fault | int) -> None:
        """Queue faults for the next requests of a route (an int is a status code)."""
        with self._lock:
            for fault in faults:
                self._state.faults[route].append(
                    Fault(status=fault) if isinstance(fault, int) else fault
                )

    def body(self, name: str) -> bytes:
        with self._lock:
            body = self._state.files[name]
            if body is None:
                body = self._state.files[name] = make_eof(name, self.step_s)
            return body

    # what the server saw
    def hits(self, route: str | None = None) -> list[Hit]:
        with self._lock:
            return [hit for hit in self._state.hits if route is None or hit.route == route]

    def count(self, *routes: str) -> int:
        return sum(len(self.hits(route)) for route in routes) if routes else len(self.hits())

    def reset_counts(self) -> None:
        with self._lock:
            self._state.hits.clear()

    # internals used by the handler
    def _record(self, hit: Hit) -> Fault | None:
        with self._lock:
            self._state.hits.append(hit)
            queue = self._state.faults.get(hit.route)
            return queue.popleft() if queue else None

    def _names(self) -> list[str]:
        with self._lock:
            return sorted(self._state.files)

    def _size(self, name: str) -> int:
        with self._lock:
            body = self._state.files.get(name)
        return len(body) if body is not None else 4_409_614

    def _id_of(self, name: str) -> str:
        with self._lock:
            return next(k for k, v in self._state.ids.items() if v == name)

    def _name_of(self, product_id: str) -> str | None:
        with self._lock:
            return self._state.ids.get(product_id)

    def _asf_answer(self, scene: str) -> tuple[int, str] | None:
        with self._lock:
            return self._state.asf_answers.get(scene)


# ---------------------------------------------------------------------------------------------
# Answers, in the formats of the real services

NAME_RE = re.compile(r"^(S1[A-D])_OPER_AUX_(POEORB|RESORB)_OPOD_(\w{15})_V(\w{15})_(\w{15})\.EOF$")
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def _parts(name: str) -> tuple[str, str, datetime, datetime, datetime]:
    match = NAME_RE.match(name)
    if match is None:
        raise ValueError(name)
    return match[1], match[2], utc(match[3]), utc(match[4]), utc(match[5])


def _asf_best(names: list[str], mission: str, start: datetime, stop: datetime) -> str | None:
    """ASF's answer as a plain rule of its own: a file covering the scene, precise first,
    newest first. (It has no margins: the client must check the offer with its own rule.)"""
    for kind in ("POEORB", "RESORB"):
        covering = []
        for name in names:
            m, k, created, begin, end = _parts(name)
            if m == mission and k == kind and begin <= start and end >= stop:
                covering.append((created, name))
        if covering:
            return max(covering)[1]
    return None


def _s3_listing(server: OrbitServer, query: dict[str, list[str]]) -> tuple[int, bytes]:
    if query.get("list-type") != ["2"]:
        return 400, b"<Error><Code>InvalidArgument</Code></Error>"
    prefix = query.get("prefix", [""])[0]
    token = query.get("continuation-token", [""])[0]
    after = base64.urlsafe_b64decode(token).decode() if token else query.get("start-after", [""])[0]
    limit = min(int(query.get("max-keys", ["1000"])[0]), server.page_size)
    keys = [f"AUX_{_parts(n)[1]}/{n}" for n in server._names()]
    keys = [key for key in sorted(keys) if key.startswith(prefix) and key > after]
    page, truncated = keys[:limit], len(keys) > limit
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<ListBucketResult xmlns="{S3_NS}"><Name>s1-orbits</Name>',
        f"<Prefix>{escape(prefix)}</Prefix>",
    ]
    if token:
        parts.append(f"<ContinuationToken>{token}</ContinuationToken>")
    parts.append(f"<KeyCount>{len(page)}</KeyCount><MaxKeys>{limit}</MaxKeys>")
    parts.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
    if truncated:
        next_token = base64.urlsafe_b64encode(page[-1].encode()).decode()
        parts.append(f"<NextContinuationToken>{next_token}</NextContinuationToken>")
    for key in page:
        size = server._size(key.split("/", 1)[1])
        parts.append(
            f"<Contents><Key>{escape(key)}</Key><LastModified>2024-07-27T02:04:55.000Z"
            f"</LastModified><ETag>&quot;{uuid.uuid5(uuid.NAMESPACE_URL, key).hex}&quot;</ETag>"
            f"<Size>{size}</Size><StorageClass>INTELLIGENT_TIERING</StorageClass></Contents>"
        )
    parts.append("</ListBucketResult>")
    return 200, "".join(parts).encode()


FILTER_RES = {
    "mission": re.compile(r"startswith\(Name,'(S1[A-D])'\)"),
    "kind": re.compile(r"contains\(Name,'AUX_(POEORB|RESORB)'\)"),
    "before": re.compile(r"ContentDate/Start lt '([^']+)'"),
    "after": re.compile(r"ContentDate/End gt '([^']+)'"),
}


def _odata_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_odata_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def _odata_product(server: OrbitServer, name: str) -> dict[str, object]:
    _, kind, created, start, stop = _parts(name)
    published = _odata_time(created + timedelta(minutes=1))
    return {
        "@odata.mediaContentType": "application/octet-stream",
        "Id": server._id_of(name),
        "Name": name,
        "ContentType": "application/octet-stream",
        "ContentLength": server._size(name),
        "OriginDate": published,
        "PublicationDate": published,
        "ModificationDate": published,
        "Online": True,
        "EvictionDate": "9999-12-31T23:59:59.999999Z",
        "S3Path": f"/eodata/Sentinel-1/AUX/AUX_{kind}/{start:%Y/%m/%d}/{name}",
        "Checksum": [],
        "ContentDate": {"Start": _odata_time(start), "End": _odata_time(stop)},
        "Footprint": None,
        "GeoFootprint": None,
    }


def _odata_query(server: OrbitServer, query: dict[str, list[str]]) -> tuple[int, bytes]:
    text = query.get("$filter", [""])[0]
    found = {key: pattern.search(text) for key, pattern in FILTER_RES.items()}
    if not all(found.values()):
        return 400, json.dumps({"detail": "Invalid filter"}).encode()
    mission, kind = found["mission"][1], found["kind"][1]  # type: ignore[index]
    before, after = (_parse_odata_time(found[key][1]) for key in ("before", "after"))  # type: ignore[index]
    names = []
    for name in server._names():
        m, k, _, start, stop = _parts(name)
        if m == mission and k == kind and start < before and stop > after:
            names.append((start, name))
    names.sort()
    top = int(query.get("$top", ["1000"])[0])
    skip = int(query.get("$skip", ["0"])[0])
    page = [name for _, name in names[skip : skip + top]]
    body: dict[str, object] = {
        "@odata.context": "$metadata#Products",
        "value": [_odata_product(server, name) for name in page],
    }
    if skip + top < len(names):
        params = {key: values[0] for key, values in query.items()} | {"$skip": str(skip + top)}
        body["@odata.nextLink"] = (
            f"{server.url}/cdse/odata/v1/Products?{urlencode(params, quote_via=quote)}"
        )
    return 200, json.dumps(body).encode()


def _route(path: str) -> str:
    routes = (
        ("/asf/scene/", "asf"), ("/asf/files/", "asf-file"), ("/aws/AUX_", "aws-file"),
        ("/cdse/odata/v1/Products", "cdse-query"), ("/token", "cdse-token"),
        ("/zipper/odata/v1/Products(", "cdse-file"),
    )  # fmt: skip
    if path in ("/aws", "/aws/"):
        return "aws-list"
    return next((route for prefix, route in routes if path.startswith(prefix)), "unknown")


def _handler_for(server: OrbitServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query, keep_blank_values=True)
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode()) if length else {}
            route = _route(parts.path)
            fault = server._record(Hit(route, method, parts.path, query, dict(self.headers)))
            time.sleep(server.latency_s + (fault.delay_s if fault else 0.0))
            if fault and fault.status:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                self._send(fault.status, b"<Error><Code>ServiceUnavailable</Code></Error>",
                           "application/xml", headers)  # fmt: skip
                return
            if fault and fault.body is not None:
                self._send(200, fault.body, "text/html")
                return
            status, body, content_type, headers = self._answer(
                route, method, parts.path, query, form
            )
            if fault and fault.truncate:
                body = body[: len(body) // 2]
            self._send(status, body, content_type, headers, cut=bool(fault and fault.cut))

        def _answer(
            self, route: str, method: str, path: str, query: dict, form: dict
        ) -> tuple[int, bytes, str, dict[str, str]]:
            octets = "application/octet-stream"
            if route == "asf":
                return self._asf(path.rsplit("/", 1)[-1])
            if route in ("asf-file", "aws-file"):
                name = path.rsplit("/", 1)[-1]
                if name in server._names() and (
                    route == "asf-file" or f"AUX_{_parts(name)[1]}" in path
                ):
                    return 200, server.body(name), octets, {}
                return 404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml", {}
            if route == "aws-list":
                status, body = _s3_listing(server, query)
                return status, body, "application/xml", {}
            if route == "cdse-query":
                status, body = _odata_query(server, query)
                return status, body, "application/json", {}
            if route == "cdse-token" and method == "POST":
                return self._token(form)
            if route == "cdse-file":
                return self._cdse_file(path)
            return 404, b"not found", "text/plain", {}

        def _asf(self, scene: str) -> tuple[int, bytes, str, dict[str, str]]:
            override = server._asf_answer(scene)
            match = SCENE_RE.match(scene)
            if override is None and match is None:
                return 400, b'{"detail":"Invalid scene name"}', "application/json", {}
            if override is not None:
                status, name = override
            else:
                name = _asf_best(server._names(), match[1], utc(match[2]), utc(match[3]))  # type: ignore[index]
                status = 302 if name else 404
            if status in (301, 302, 303, 307, 308):
                return status, b"", "text/plain", {"Location": f"{server.url}/asf/files/{name}"}
            return status, b'{"detail":"No orbit found"}', "application/json", {}

        def _token(self, form: dict[str, list[str]]) -> tuple[int, bytes, str, dict[str, str]]:
            given = {key: values[0] for key, values in form.items()}
            expected = {"client_id": "cdse-public", "grant_type": "password",
                        "username": server.cdse_user, "password": server.cdse_password}  # fmt: skip
            if given != expected:
                body = {"error": "invalid_grant", "error_description": "Invalid user credentials"}
                return 401, json.dumps(body).encode(), "application/json", {}
            body = {"access_token": server.token, "expires_in": 600, "token_type": "Bearer"}
            return 200, json.dumps(body).encode(), "application/json", {}

        def _cdse_file(self, path: str) -> tuple[int, bytes, str, dict[str, str]]:
            if self.headers.get("Authorization") != f"Bearer {server.token}":
                return 401, b'{"detail":"Expired signature!"}', "application/json", {}
            name = server._name_of(path.split("(", 1)[1].split(")", 1)[0])
            if name is None:
                return 404, b'{"detail":"Not found"}', "application/json", {}
            return 200, server.body(name), "application/octet-stream", {}

        def _send(
            self, status: int, body: bytes, content_type: str,
            headers: dict[str, str] | None = None, cut: bool = False,
        ) -> None:  # fmt: skip
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if cut:  # half the announced body, then hang up: the client sees a broken transfer
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler


# ---------------------------------------------------------------------------------------------
# Fixtures (imported by the orbit test modules)


@pytest.fixture(name="orbit_service")
def orbit_service_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[OrbitServer]:
    """A running OrbitServer, with short backoff so fault tests stay fast, and HOME in
    tmp_path so no real ~/.netrc is read."""
    monkeypatch.setattr(orbit_http, "CONNECT_TIMEOUT_S", 5.0)
    monkeypatch.setattr(orbit_http, "READ_TIMEOUT_S", TEST_READ_TIMEOUT_S)
    monkeypatch.setattr(orbit_http, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setattr(orbit_http, "BACKOFF_MAX_S", 0.05)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    with OrbitServer() as server:
        yield server
