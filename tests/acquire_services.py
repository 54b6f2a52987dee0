"""Loopback CMR, Earthdata login and ASF download services for the acquisition tests (issue 14).

Everything runs on 127.0.0.1 with ephemeral ports, in threads, and stops with its fixture.
Nothing leaves the machine: asf_search's CMR host is pointed at the loopback CMR and
`asf_search.REPORT_ERRORS` is False while a service bundle is active.

Recorded data: ../shared/realdata/asf_search (see its PROVENANCE.md): 176 real S1 IW SLC
granules of track 13 (descending, 2015-06 .. 2021-12, S1A+S1B, VV and VV+VH, state vectors for
the baseline stack) and 166 real SLC-BURST granules of burst 174_372326_IW3 (2014-10 .. 2021-12).
The services replay the recorded UMM-G records as CMR does (``{"hits", "items": [{meta, umm}]}``),
with two edits: download URLs point at the loopback download server, and the size and md5 of
every file (``BYTES``/``MD5SUM``/``DataGranule`` for scenes, ``BYTE_LENGTH`` for bursts) are
those of the small file that server really serves.

Fixtures (import them as the other fixture modules are imported:
``from acquire_services import acquire_services_fixture  # noqa: F401``; tests then ask for
``acquire_services``. The same fixture objects are also importable as ``acquire_services``,
``acquire_tls`` and ``acquire_products``, the names of the first version.
``acquire_tls_fixture`` / ``acquire_products_fixture`` are only needed by tests that ask for
``acquire_tls`` / ``acquire_products`` themselves, e.g. to call :func:`running_services`
with other options; :func:`session_tls` / :func:`session_products` give the same objects
without a fixture):

``acquire_tls`` (session) -> :class:`TlsFiles`
    A test CA and a server certificate for 127.0.0.1/localhost, made at test time
    (``cryptography``; ``openssl`` CLI if absent). ``.ca_bundle`` is for REQUESTS_CA_BUNDLE.
``acquire_products`` (session) -> :class:`ProductFactory`
    Builds (and caches for the session) what the download server serves: scene zips named as
    the real products (``<name>.zip`` holding ``<name>.SAFE/`` with the real manifest.safe
    rewritten to the product and the real VV annotation XMLs of ../shared/realdata/s1_slc, one
    per polarization, 0-byte measurement tiffs), burst TIFFs (a valid, sparse GeoTIFF of the
    burst's real lines x samples, CInt16, one non-zero 64x64 tile, a few kB) and burst XMLs
    (ASF's combined metadata document: ``<burst><metadata><product|calibration|noise>
    <swath/><polarisation/><content>`` and ``<manifest>``). The product annotation is the real
    one of ../shared/realdata/s1_burst_safe (S1B, track 174, IW3: the recorded burst ID's own
    track) with one ``<burst>`` (and geolocation-grid rows) per burst index up to the
    granule's, retimed to the granule's azimuth time; the manifest is that SAFE's real
    manifest.safe. Calibration and noise are NOT real (realdata has none): flat LUTs on the
    annotation's burst grid, enough for burst2safe to write a SAFE (tested end to end:
    burst2safe downloads through these services and builds a SAFE that the pipeline's
    ``read_product`` reads; ~20 s and ~150 MB of disk per burst, as burst2safe writes the
    full-size measurement).
``acquire_services`` (function) -> :class:`AcquireServices`
    Starts a :class:`DownloadServer` (plain http), an :class:`EdlServer` and a
    :class:`CmrServer` (both https, certificate of ``acquire_tls``), sets REQUESTS_CA_BUNDLE and
    SSL_CERT_FILE to the test CA, points asf_search at the CMR (``ASFSearchOptions`` config
    ``host``, ``INTERNAL.CMR_HOST``/``EDL_HOST``/``ASF_AUTH_HOST``) with
    ``asf_search.REPORT_ERRORS = False``, and points burst2safe's cookie URL at the download
    server; all restored afterwards. HOME is a fresh empty folder (not inside the test's
    tmp_path; no real ~/.netrc is read or written by asf_search / burst2safe) and
    EARTHDATA_* / NETRC are unset.
    Attributes:

    - ``.cmr`` / ``.edl`` / ``.download``: the servers; ``.cmr.host`` and ``.edl.host`` are
      ``127.0.0.1:PORT`` (what ``CMR_HOST`` / ``EDL_HOST`` take); ``.download.url`` is
      ``http://127.0.0.1:PORT``.
    - ``.token``, ``.username``, ``.password``: the one valid Earthdata identity.
    - ``.settings_values()``: ``{"cmr_host", "edl_host", "earthdata_token"}`` for
      ``Settings(**values, ...)``; ``.env()``: the same as environment variables (CMR_HOST,
      EDL_HOST, EARTHDATA_TOKEN, REQUESTS_CA_BUNDLE, SSL_CERT_FILE) for a child process.

    Download URLs: follow what the search returns (``properties["url"]`` /
    ``["additionalUrls"]``): scenes at ``{download.url}/SLC/SA|SB/<name>.zip``, bursts at
    ``{download.url}/<SLC name>/IW<n>/<POL>/<index>.tiff|.xml`` (the extractor's layout, which
    burst2safe parses), burst2safe's cookie URL at ``{download.url}/METADATA_RAW/...``.

Services (also usable without the fixtures, as context managers):

:class:`CmrServer` ``POST|GET /search/granules.umm_json`` filters the records by the form
fields asf_search sends (``shortName``, ``platform[]``, ``attribute[]`` = ``type,NAME,value`` or
``type,NAME,min,max`` for BEAM_MODE, PROCESSING_TYPE, POLARIZATION, PATH_NUMBER,
ASCENDING_DESCENDING, FRAME_NUMBER, CENTER_ESA_FRAME, BURST_ID_FULL, BURST_ID_RELATIVE, ...,
``temporal``, ``bounding_box``, ``polygon``, ``point``, ``line``, ``circle`` against the granule
polygons, ``readable_granule_name[]`` (with ``options[readable_granule_name][pattern]``),
``granule_ur[]``, ``orbit_number``, ``provider``), sorts by ``-end_date, granule_ur``, pages by
``page_size`` with a ``CMR-Search-After`` header, answers 400 with CMR's error body for an
unknown parameter and 401 for an unknown bearer token. ``platform[]`` is matched, ignoring
case, against the UMM ``Platforms`` short name (``SENTINEL-1A``): asf_search passes
``platform="S1A"`` through unchanged (its aliases are ``SA``, ``S1``, ``SENTINEL-1``), and
that matches nothing here, so callers translate S1A -> SENTINEL-1A. ``temporal`` selects
granules whose time span overlaps the range: asf_search sends ``end="2019-12-31"`` as
``2019-12-31T00:00:00Z``, which leaves that day's acquisitions out.
``GET /search/collections`` is the legacy token check. ``.requests`` records every request
(:class:`Hit`: method, path, form fields as a list of pairs, headers);
``.granule_requests()`` only the searches.
``.fields(hit, key)`` lists the values of one field.

:class:`EdlServer` plays urs.earthdata.nasa.gov for ASFSession: ``POST
/oauth/tokens/user?client_id=`` (form ``token``; 200 with ``{"uid"}`` or 401
``invalid_token``), ``POST /api/users/find_or_create_token`` (HTTP Basic; 200 with
``access_token`` or 401 ``invalid_credentials``), ``GET /oauth/authorize`` (Basic; 302 to
``redirect_uri?code=``, 401 otherwise) and ``GET /login?code=`` (the ASF auth host: sets the
``asf-urs`` cookie), and ``GET /api/users/user`` with a bearer token (200/401: a plain
token check). ``.requests`` records them.

:class:`DownloadServer` serves the files above. Every request needs the valid bearer token,
an ``asf-urs`` cookie from the EDL server, or HTTP Basic with the valid username/password
(401 otherwise). Burst paths answer ``202`` to the first ``burst_202`` requests of each path
(the extractor building the file). ``cut_once(path)`` / ``cut_every_file_once=True`` drop the
connection after half of the body (Content-Length announced in full) on the first full GET of
the file. ``Range: bytes=N-`` (and ``N-M``) answer 206 with Content-Range; ``HEAD`` works.
``.count(path)`` / ``.counts()`` / ``.requests`` count and record every request,
``.bytes_sent`` sums the body bytes sent.

``.clear_requests()`` (every server) forgets what was recorded, e.g. before a rerun that
must make no request. ``cmr.remove(predicate)`` takes records out of the archive (a burst
missing on a date); ``cmr.faults.append(status)`` answers the next search with that status.

Other archives: :func:`running_services` ``(tls, products, records=None, burst_202=1,
cut_every_file_once=False, max_page_size=2000, point_asf_search=True, download_tls=False)``
starts the bundle with other records or options (``records`` default: all recorded SLCs +
bursts; ``download_tls``: the download server on https too, same CA).
:func:`burst_archive` ``(offsets=(-1, 0, 1))`` is the recorded bursts plus
:func:`neighbour_bursts`: for each recorded burst, the bursts k positions along the track in
the same acquisition (burst ID, index, times, footprint, names and URLs moved to match;
DERIVED, not recorded), so that a date has several burst IDs. :func:`recorded` ``("slc" |
"burst")`` gives deep copies of the records.

Pointing the pipeline at them: ``Settings(cmr_host=services.cmr.host,
edl_host=services.edl.host, earthdata_token=services.token, ...)`` (or
``**services.settings_values()``); there is no download-URL setting: downloads follow the URLs
the search returns, which point at ``services.download.url``. In the test process the fixture
has already set asf_search's host and REPORT_ERRORS and burst2safe's COOKIE_URL; a child
process (``run_cli``) gets ``services.env()`` (CMR_HOST, EDL_HOST, EARTHDATA_TOKEN,
REQUESTS_CA_BUNDLE, SSL_CERT_FILE) and the production code must itself set asf_search's
``host`` (and REPORT_ERRORS = False) from CMR_HOST; burst2safe's COOKIE_URL
(``https://sentinel1.asf.alaska.edu/...``) is a constant there, so a child process that runs
burst2safe needs the production code to redirect it (``services.cookie_url`` is the loopback
one). The valid identity is fixed: :data:`VALID_TOKEN`, :data:`VALID_USER`,
:data:`VALID_PASSWORD` (grep a log or a file for them to prove a secret did not leak).

Benchmark helper: :func:`download_volume` ``(dates=20, area_km=30.0)`` ->
:class:`VolumeSummary` summarises, from the recorded (real) metadata, the bytes and requests
a scene-level and a burst-level download of an N-date stack over an area would fetch
(``.lines()`` prints it).
"""

from __future__ import annotations

import atexit
import base64
import copy
import datetime as dt
import fnmatch
import functools
import hashlib
import io
import ipaddress
import json
import math
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from lxml import etree
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from loopback import LoopbackServer

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
ASF_RECORDS = REALDATA / "asf_search"
SLC_STACK_FILE = (
    ASF_RECORDS / "S1A_IW_SLC__1SSV_20160528T141908_20160528T141938_011460_011746_335C_stack.yml"
)
BURST_STACK_FILE = ASF_RECORDS / "SLC_BURST_stack.yml"
# The recorded SLC stack's reference scene (asf_search built the stack around it).
SLC_STACK_REFERENCE = "S1A_IW_SLC__1SSV_20160528T141908_20160528T141938_011460_011746_335C"
BURST_ID = "174_372326_IW3"
# Real annotation + manifest of a burst2safe SAFE on the burst stack's own track (S1B, 174, IW3).
BURST_SOURCE_SAFE = (
    REALDATA
    / "s1_burst_safe"
    / "S1B_IW_SLC__1SSV_20180628T151555_20180628T151555_011575_015476_33AD.SAFE"
)
SCENE_SOURCE = "S1A_IW_SLC__1SDV_20250406T022008_20250406T022035_058630_07421F_93A7"

DATAPOOL_PREFIX = "https://datapool.asf.alaska.edu"
BURST_PREFIX = "https://sentinel1-burst.asf.alaska.edu"
BURST2SAFE_COOKIE_PATH = (
    "/METADATA_RAW/SA/S1A_IW_RAW__0SSV_20141229T072718_20141229T072750_003931_004B96_B79F.iso.xml"
)
EDL_CLIENT_ID = "BO_n7nTIlMljdvU6kRRB3g"  # asf_search's

VALID_USER = "insar-tester"
VALID_PASSWORD = "edl-Pa55-w0rd-7Q"  # tests assert it never reaches a log, a file or a message
VALID_TOKEN = "EDL-" + "t0ken" * 6  # a fixed string so a leak is easy to grep for

Kind = Literal["slc", "burst"]
Record = dict[str, Any]  # {"meta": ..., "umm": ...} as CMR returns it


# ---------------------------------------------------------------------------------------------
# The recorded records


def realdata_or_skip(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data {path} is absent (see ../shared/realdata/PROVENANCE.md)")
    return path


@functools.lru_cache(maxsize=4)
def _load_yaml(path: str) -> tuple[Record, ...]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with Path(path).open(encoding="utf-8") as stream:
        data = yaml.load(stream, Loader=loader)  # noqa: S506 (a safe loader)
    items = data if isinstance(data, list) else [data]
    return tuple({"meta": item["meta"], "umm": item["umm"]} for item in items)


def recorded(kind: Kind) -> list[Record]:
    """Deep copies of the recorded CMR records (`meta` + `umm`), or skip without real data."""
    path = realdata_or_skip(SLC_STACK_FILE if kind == "slc" else BURST_STACK_FILE)
    return copy.deepcopy(list(_load_yaml(str(path))))


def attribute(umm: Record, name: str) -> str | None:
    for item in umm.get("AdditionalAttributes", []):
        if item.get("Name") == name:
            values = item.get("Values") or [None]
            return values[0]
    return None


def set_attribute(umm: Record, name: str, value: str) -> None:
    for item in umm.setdefault("AdditionalAttributes", []):
        if item.get("Name") == name:
            item["Values"] = [value]
            return
    umm["AdditionalAttributes"].append({"Name": name, "Values": [value]})


def granule_name(record: Record) -> str:
    """The product name (scene name for an SLC, the burst granule UR for a burst)."""
    umm = record["umm"]
    for ident in umm.get("DataGranule", {}).get("Identifiers", []):
        if ident.get("IdentifierType") == "ProducerGranuleId":
            return str(ident["Identifier"])
    return str(umm["GranuleUR"])


def footprint(umm: Record) -> BaseGeometry:
    polygons = umm["SpatialExtent"]["HorizontalSpatialDomain"]["Geometry"]["GPolygons"]
    shapes = [
        Polygon([(p["Longitude"], p["Latitude"]) for p in poly["Boundary"]["Points"]])
        for poly in polygons
    ]
    shape = shapes[0]
    for other in shapes[1:]:
        shape = shape.union(other)
    return shape


def _utc(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def time_range(umm: Record) -> tuple[dt.datetime, dt.datetime]:
    span = umm["TemporalExtent"]["RangeDateTime"]
    return _utc(span["BeginningDateTime"]), _utc(span["EndingDateTime"])


def recorded_bytes(record: Record) -> int:
    """The real (recorded) size of a granule's file: BYTES (scene) or BYTE_LENGTH (burst)."""
    umm = record["umm"]
    value = attribute(umm, "BYTE_LENGTH") or attribute(umm, "BYTES")
    return round(float(value)) if value is not None else 0


BURST_INTERVAL_S = 2.758277  # between the starts of successive IW bursts


def neighbour_bursts(records: Sequence[Record], offsets: Sequence[int] = (-1, 1)) -> list[Record]:
    """Bursts next to the recorded ones along the track, derived from them (NOT recorded).

    The archive holds one burst ID (174_372326_IW3); tests of burst selection need several per
    date. For each record and offset k this makes the burst k positions later in the same
    acquisition: relative/absolute burst ID + k, burst index + k (kept within 0..8), times +
    k x 2.758 s, footprint and centre moved k burst lengths along the track (the polygon's
    along-track edge), granule name, concept ID and extractor URLs to match. Sizes stay the
    recorded ones.
    """
    made: list[Record] = []
    for record in records:
        umm = record["umm"]
        relative = int(attribute(umm, "BURST_ID_RELATIVE") or 0)
        index = int(attribute(umm, "BURST_INDEX") or 0)
        track, _, swath = (attribute(umm, "BURST_ID_FULL") or "0_0_IW1").split("_")
        points = umm["SpatialExtent"]["HorizontalSpatialDomain"]["Geometry"]["GPolygons"][0]
        edge = points["Boundary"]["Points"]
        step_lat = edge[0]["Latitude"] - edge[1]["Latitude"]
        step_lon = edge[0]["Longitude"] - edge[1]["Longitude"]
        if attribute(umm, "ASCENDING_DESCENDING") == "ASCENDING":
            step_lat, step_lon = -step_lat, -step_lon
        for k in offsets:
            if k == 0 or not 0 <= index + k <= 8:
                continue
            new = {"meta": copy.deepcopy(record["meta"]), "umm": copy.deepcopy(umm)}
            u = new["umm"]
            shift = dt.timedelta(seconds=BURST_INTERVAL_S * k)
            full = f"{track}_{relative + k:06d}_{swath}"
            set_attribute(u, "BURST_ID_RELATIVE", str(relative + k))
            set_attribute(
                u, "BURST_ID_ABSOLUTE", str(int(attribute(u, "BURST_ID_ABSOLUTE") or 0) + k)
            )
            set_attribute(u, "BURST_ID_FULL", full)
            set_attribute(u, "BURST_INDEX", str(index + k))
            for name in ("AZIMUTH_TIME",):
                value = attribute(u, name)
                if value:
                    set_attribute(u, name, f"{_utc(value) + shift:%Y-%m-%dT%H:%M:%S.%f}")
            anx = attribute(u, "AZIMUTH_ANX_TIME")
            if anx:
                set_attribute(u, "AZIMUTH_ANX_TIME", f"{float(anx) + BURST_INTERVAL_S * k:.9f}")
            for name, step in (("CENTER_LAT", step_lat), ("CENTER_LON", step_lon)):
                value = attribute(u, name)
                if value:
                    set_attribute(u, name, f"{float(value) + step * k:.6f}")
            span = u["TemporalExtent"]["RangeDateTime"]
            for key in ("BeginningDateTime", "EndingDateTime"):
                span[key] = f"{_utc(span[key]) + shift:%Y-%m-%dT%H:%M:%S.%fZ}"
            for poly in u["SpatialExtent"]["HorizontalSpatialDomain"]["Geometry"]["GPolygons"]:
                for point in poly["Boundary"]["Points"]:
                    point["Latitude"] = round(point["Latitude"] + step_lat * k, 6)
                    point["Longitude"] = round(point["Longitude"] + step_lon * k, 6)
            parts = u["GranuleUR"].split("_")  # S1_372326_IW3_20180815T151558_VV_6BD3-BURST
            stamp = dt.datetime.strptime(parts[3], "%Y%m%dT%H%M%S") + shift
            parts[1], parts[3] = f"{relative + k:06d}", f"{stamp:%Y%m%dT%H%M%S}"
            u["GranuleUR"] = "_".join(parts)
            new["meta"]["native-id"] = u["GranuleUR"]
            new["meta"]["concept-id"] = f"{record['meta'].get('concept-id', 'G0-ASF')}-{k:+d}"
            for related in u.get("RelatedUrls", []):
                url = related.get("URL", "")
                found = re.search(r"/(\d+)\.(tiff|xml)$", url)
                if found:
                    related["URL"] = f"{url[: found.start()]}/{index + k}.{found[2]}"
            made.append(new)
    return made


def burst_archive(offsets: Sequence[int] = (-1, 0, 1)) -> list[Record]:
    """The recorded bursts (offset 0) plus derived neighbours: len(offsets) burst IDs a date."""
    records = recorded("burst")
    extra = neighbour_bursts(records, [k for k in offsets if k != 0])
    return (records if 0 in offsets else []) + extra


# ---------------------------------------------------------------------------------------------
# TLS: a test CA and a server certificate for 127.0.0.1 / localhost


@dataclass(frozen=True)
class TlsFiles:
    ca_bundle: Path  # the CA certificate (PEM): REQUESTS_CA_BUNDLE / SSL_CERT_FILE
    cert: Path  # server certificate (PEM)
    key: Path  # server key (PEM)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert), str(self.key))
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle))


def make_tls_files(folder: Path) -> TlsFiles:
    """Write a fresh CA and a 127.0.0.1/localhost server certificate signed by it."""
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    try:
        _make_tls_cryptography(files)
    except ImportError:
        _make_tls_openssl(files, folder)
    return files


def _make_tls_cryptography(files: TlsFiles) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "insar-pipeline test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    files.ca_bundle.write_bytes(ca_cert.public_bytes(pem))
    files.cert.write_bytes(cert.public_bytes(pem))
    files.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _make_tls_openssl(files: TlsFiles, folder: Path) -> None:
    ca_key = folder / "ca.key"
    ext = folder / "server.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    run = functools.partial(subprocess.run, check=True, capture_output=True)
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(ca_key), "-out", str(files.ca_bundle), "-days", "2",
         "-subj", "/CN=insar-pipeline test CA"])  # fmt: skip
    csr = folder / "server.csr"
    run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(files.key), "-out", str(csr), "-subj", "/CN=127.0.0.1"])  # fmt: skip
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(files.ca_bundle), "-CAkey",
         str(ca_key), "-CAcreateserial", "-out", str(files.cert), "-days", "2", "-extfile",
         str(ext)])  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Earthdata identity shared by the EDL and download servers


@dataclass
class Identity:
    username: str = VALID_USER
    password: str = VALID_PASSWORD
    token: str = VALID_TOKEN
    cookies: set[str] = field(default_factory=set)  # asf-urs values the EDL server handed out
    codes: set[str] = field(default_factory=set)  # oauth codes handed out
    lock: threading.Lock = field(default_factory=threading.Lock)

    def basic_ok(self, header: str | None) -> bool:
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == self.username and password == self.password

    def bearer(self, header: str | None) -> str | None:
        if header and header.lower().startswith("bearer "):
            return header[7:].strip()
        return None

    def new_cookie(self) -> str:
        value = "asf-urs-" + uuid.uuid4().hex
        with self.lock:
            self.cookies.add(value)
        return value

    def authorized(self, headers: Any) -> bool:
        """A bearer token, an asf-urs cookie from our EDL, or HTTP Basic with the identity."""
        auth = headers.get("Authorization")
        token = self.bearer(auth)
        if token is not None:
            return token == self.token
        if self.basic_ok(auth):
            return True
        cookie = headers.get("Cookie") or ""
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == "asf-urs" and value in self.cookies:
                return True
        return False


# ---------------------------------------------------------------------------------------------
# Threaded HTTP(S) servers


@dataclass(frozen=True)
class Hit:
    method: str
    path: str  # path without the query
    query: list[tuple[str, str]]
    fields: list[tuple[str, str]]  # query + form fields, in order
    headers: dict[str, str]
    status: int = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "loopback"
    owner: _LoopbackServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        query = parse_qsl(split.query, keep_blank_values=True)
        body = b""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            body = self.rfile.read(length)
        form: list[tuple[str, str]] = []
        ctype = self.headers.get("Content-Type", "")
        if body and "application/x-www-form-urlencoded" in ctype:
            form = parse_qsl(body.decode(), keep_blank_values=True)
        hit = Hit(self.command, split.path, query, query + form, dict(self.headers.items()))
        self.owner._record(hit)
        try:
            self.owner.handle(self, hit)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass

    do_GET = do_POST = do_HEAD = _dispatch  # noqa: N815

    def reply(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def reply_json(
        self, status: int, payload: object, headers: dict[str, str] | None = None
    ) -> None:
        self.reply(status, json.dumps(payload).encode(), "application/json", headers)


class _LoopbackServer(LoopbackServer):
    """A loopback server whose handler is `_Handler`, recording every request; TLS when given
    the test CA's files."""

    def __init__(self, tls: TlsFiles | None = None) -> None:
        handler = type("Handler", (_Handler,), {"owner": self})
        super().__init__(handler, tls.server_context() if tls else None, quiet=True)
        self._lock = threading.Lock()
        self.requests: list[Hit] = []

    @property
    def host(self) -> str:
        """host:port, as asf_search's `host` and the CMR_HOST / EDL_HOST settings take it."""
        return f"127.0.0.1:{self.port}"

    def _record(self, hit: Hit) -> None:
        with self._lock:
            self.requests.append(hit)

    def clear_requests(self) -> None:
        """Forget the recorded requests (e.g. before a rerun that must make none)."""
        with self._lock:
            self.requests.clear()

    def handle(self, request: _Handler, hit: Hit) -> None:  # pragma: no cover - overridden
        request.reply(404)


# ---------------------------------------------------------------------------------------------
# CMR


class CmrQueryError(Exception):
    """A request CMR would refuse with 400."""


_SPATIAL_KEYS = {"bounding_box", "polygon", "point", "line", "circle"}
_KNOWN_KEYS = _SPATIAL_KEYS | {
    "shortName", "short_name", "platform[]", "platform", "attribute[]", "temporal",
    "readable_granule_name[]", "readable_granule_name", "granule_ur[]", "granule_ur",
    "orbit_number", "provider", "page_size", "page_num", "offset", "sort_key[]", "sort_key",
    "echo_collection_id[]", "collection_concept_id", "instrument[]", "updated_since",
    "concept_id[]", "concept_id",
}  # fmt: skip


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise CmrQueryError(f"[{text}] is an invalid number") from exc


def _coords(text: str) -> list[tuple[float, float]]:
    numbers = [_float(x) for x in text.split(",") if x != ""]
    if len(numbers) % 2:
        raise CmrQueryError(f"odd number of coordinates in [{text}]")
    return list(zip(numbers[0::2], numbers[1::2], strict=True))


def spatial_shape(key: str, value: str) -> BaseGeometry:
    """A CMR spatial parameter as a lon/lat shapely geometry."""
    if key == "bounding_box":
        west, south, east, north = (_float(x) for x in value.split(","))
        return box(west, south, east, north)
    if key == "polygon":
        return Polygon(_coords(value))
    if key == "point":
        return Point(_coords(value)[0])
    if key == "line":
        return LineString(_coords(value))
    lon, lat, radius = (_float(x) for x in value.split(","))  # circle: lon,lat,metres
    return Point(lon, lat).buffer(radius / 111_320.0)


def _attribute_matches(umm: Record, spec: str) -> bool:
    parts = spec.split(",")
    if len(parts) < 3:
        raise CmrQueryError(f"attribute[] [{spec}] must be type,name,value")
    kind, name, values = parts[0], parts[1], parts[2:]
    actual = attribute(umm, name)
    if actual is None:
        return False
    if kind == "string":
        return actual == ",".join(values)
    if kind not in ("int", "float"):
        raise CmrQueryError(f"attribute[] type [{kind}] is not supported")
    number = _float(actual)
    if len(values) == 1:
        return number == _float(values[0])
    low, high = values[0], values[1]
    return (low == "" or number >= _float(low)) and (high == "" or number <= _float(high))


def _temporal_matches(umm: Record, value: str) -> bool:
    parts = value.split(",")
    start = _utc(parts[0]) if parts[0] else dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    end = (
        _utc(parts[1])
        if len(parts) > 1 and parts[1]
        else dt.datetime.max.replace(tzinfo=dt.timezone.utc)
    )
    begin, finish = time_range(umm)
    return begin <= end and finish >= start


def _range_matches(number: float, value: str) -> bool:
    bounds = value.split(",")
    if len(bounds) == 1:
        return number == _float(bounds[0])
    return (bounds[0] == "" or number >= _float(bounds[0])) and (
        bounds[1] == "" or number <= _float(bounds[1])
    )


def match(
    record: Record,
    fields: Sequence[tuple[str, str]],
    shape_of: Callable[[Record], BaseGeometry] | None = None,
) -> bool:
    """Whether a record answers a CMR granule query (AND of parameters, OR within one)."""
    umm, meta = record["umm"], record["meta"]
    groups: dict[str, list[str]] = {}
    for key, value in fields:
        if key.startswith("options[") or key in ("page_size", "page_num", "offset"):
            continue
        if key.startswith("sort_key"):
            continue
        if key not in _KNOWN_KEYS:
            raise CmrQueryError(f"Parameter [{key}] was not recognized.")
        groups.setdefault(key.removesuffix("[]"), []).append(value)
    options = {k: v for k, v in fields if k.startswith("options[")}
    for key, values in groups.items():
        if key in ("shortName", "short_name"):
            short = umm.get("CollectionReference", {}).get("ShortName")
            if short not in values:
                return False
        elif key == "platform":
            names = {p.get("ShortName", "").upper() for p in umm.get("Platforms", [])}
            if not names & {v.upper() for v in values}:
                return False
        elif key == "instrument":
            names = {
                i.get("ShortName", "").upper()
                for p in umm.get("Platforms", [])
                for i in p.get("Instruments", [])
            }
            if not names & {v.upper() for v in values}:
                return False
        elif key == "attribute":
            if options.get("options[attribute][or]") == "true":
                if not any(_attribute_matches(umm, v) for v in values):
                    return False
            elif not all(_attribute_matches(umm, v) for v in values):
                return False
        elif key == "temporal":
            if not any(_temporal_matches(umm, v) for v in values):
                return False
        elif key in _SPATIAL_KEYS:
            shape = shape_of(record) if shape_of is not None else footprint(umm)
            if not any(shape.intersects(spatial_shape(key, v)) for v in values):
                return False
        elif key == "readable_granule_name":
            names = {umm["GranuleUR"], granule_name(record)}
            pattern = options.get("options[readable_granule_name][pattern]") == "true"
            if pattern:
                ok = any(fnmatch.fnmatchcase(n, v) for n in names for v in values)
            else:
                ok = bool(names & set(values))
            if not ok:
                return False
        elif key == "granule_ur":
            if umm["GranuleUR"] not in values:
                return False
        elif key == "orbit_number":
            orbits = [o.get("OrbitNumber") for o in umm.get("OrbitCalculatedSpatialDomains", [])]
            if not any(
                o is not None and _range_matches(float(o), v) for o in orbits for v in values
            ):
                return False
        elif key == "provider":
            if meta.get("provider-id") not in values:
                return False
        elif key in ("echo_collection_id", "collection_concept_id"):
            if meta.get("collection-concept-id") not in values:
                return False
        elif key == "concept_id":
            if meta.get("concept-id") not in values:
                return False
        # updated_since: every record counts as updated
    return True


def _sort_key(record: Record) -> tuple[float, str]:
    return (-time_range(record["umm"])[1].timestamp(), record["umm"]["GranuleUR"])


class CmrServer(_LoopbackServer):
    """CMR's granule search over a fixed set of records, with TLS (asf_search needs https)."""

    def __init__(
        self,
        tls: TlsFiles,
        records: Sequence[Record] | None = None,
        download: DownloadServer | None = None,
        identity: Identity | None = None,
        max_page_size: int = 2000,
    ) -> None:
        super().__init__(tls)
        self.identity = identity or Identity()
        self.download = download
        self.max_page_size = max_page_size
        self.records: list[Record] = []
        self._search_after: dict[str, tuple[tuple[tuple[str, str], ...], int]] = {}
        self.faults: list[int] = []  # statuses to answer the next searches with, in order
        if records is None:
            records = list(_load_yaml(str(realdata_or_skip(SLC_STACK_FILE))))
            records += list(_load_yaml(str(realdata_or_skip(BURST_STACK_FILE))))
        self.add(records)

    def add(self, records: Sequence[Record]) -> None:
        """Publish records (deep-copied); with a download server, their URLs point at it."""
        for record in records:
            record = {"meta": record["meta"], "umm": copy.deepcopy(record["umm"])}
            if self.download is not None:
                self.download.publish(record)
            self.records.append(record)

    def remove(self, predicate: Any) -> list[Record]:
        """Take records out of the archive (e.g. a missing burst); returns those removed."""
        kept: list[Record] = []
        removed: list[Record] = []
        for record in self.records:
            (removed if predicate(record) else kept).append(record)
        self.records = kept
        return removed

    def granule_requests(self) -> list[Hit]:
        return [h for h in self.requests if h.path.startswith("/search/granules")]

    @staticmethod
    def fields(hit: Hit, key: str) -> list[str]:
        return [v for k, v in hit.fields if k == key]

    def search(self, fields: Sequence[tuple[str, str]]) -> list[Record]:
        """The records a query selects, in CMR's order (no paging)."""
        found = [r for r in self.records if match(r, fields)]
        return sorted(found, key=_sort_key)

    def handle(self, request: _Handler, hit: Hit) -> None:
        token = self.identity.bearer(hit.headers.get("Authorization"))
        if token is not None and token != self.identity.token:
            request.reply_json(401, {"errors": [f"Token [{token[:4]}...] does not exist"]})
            return
        if hit.path == "/search/health":
            request.reply_json(200, {"echo": {"ok?": True}, "internal-meta-db": {"ok?": True}})
            return
        if hit.path.startswith("/search/collections"):
            request.reply_json(200, {"hits": 0, "took": 1, "items": []})
            return
        if not hit.path.startswith("/search/granules"):
            request.reply_json(404, {"errors": [f"{hit.path} not found"]})
            return
        with self._lock:
            status = self.faults.pop(0) if self.faults else None
        if status is not None:
            request.reply_json(status, {"errors": [f"injected status {status}"]})
            return
        fields = [(k, v) for k, v in hit.fields]
        try:
            page_size = int(dict(fields).get("page_size", 10))
        except ValueError:
            request.reply_json(400, {"errors": ["page_size must be a number"]})
            return
        page_size = max(0, min(page_size, self.max_page_size))
        key = tuple(sorted(fields))
        after = hit.headers.get("CMR-Search-After")
        offset = 0
        if after:
            with self._lock:
                state = self._search_after.get(after)
            if state is None or state[0] != key:
                request.reply_json(400, {"errors": ["Invalid CMR-Search-After header"]})
                return
            offset = state[1]
        try:
            found = self.search(fields)
        except CmrQueryError as exc:
            request.reply_json(400, {"errors": [str(exc)]})
            return
        page = found[offset : offset + page_size]
        items = [{"meta": r["meta"], "umm": self._served_umm(r)} for r in page]
        headers = {"CMR-Hits": str(len(found)), "CMR-Took": "1"}
        if offset + page_size < len(found):
            marker = json.dumps([uuid.uuid4().hex])
            with self._lock:
                self._search_after[marker] = (key, offset + page_size)
            headers["CMR-Search-After"] = marker
        request.reply_json(200, {"hits": len(found), "took": 1, "items": items}, headers)

    def _served_umm(self, record: Record) -> Record:
        if self.download is not None:
            self.download.describe(record)  # fills in the served size / md5
        return record["umm"]


# ---------------------------------------------------------------------------------------------
# Earthdata login


class EdlServer(_LoopbackServer):
    """urs.earthdata.nasa.gov for asf_search's ASFSession (and an ASF auth host /login)."""

    def __init__(self, tls: TlsFiles, identity: Identity | None = None) -> None:
        super().__init__(tls)
        self.identity = identity or Identity()

    def handle(self, request: _Handler, hit: Hit) -> None:
        ident = self.identity
        auth = hit.headers.get("Authorization")
        form = dict(hit.fields)
        if hit.path == "/oauth/tokens/user" and hit.method == "POST":
            token = form.get("token") or ident.bearer(auth)
            if token == ident.token:
                request.reply_json(200, {"uid": ident.username})
            else:
                request.reply_json(
                    401,
                    {"error": "invalid_token", "error_description": "The token is invalid"},
                )
        elif hit.path == "/api/users/find_or_create_token" and hit.method == "POST":
            if ident.basic_ok(auth):
                expiry = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=60)
                request.reply_json(
                    200,
                    {
                        "access_token": ident.token,
                        "token_type": "Bearer",
                        "expiration_date": f"{expiry:%m/%d/%Y}",
                    },
                )
            else:
                request.reply_json(
                    401,
                    {
                        "error": "invalid_credentials",
                        "error_description": "Invalid user credentials",
                    },
                )
        elif hit.path == "/oauth/authorize":
            redirect = form.get("redirect_uri", "")
            if not ident.basic_ok(auth) and ident.bearer(auth) != ident.token:
                request.reply(
                    401, b"HTTP Basic: Access denied.\n", "text/plain",
                    {"WWW-Authenticate": 'Basic realm="Earthdata Login"'},
                )  # fmt: skip
                return
            code = uuid.uuid4().hex
            with ident.lock:
                ident.codes.add(code)
            separator = "&" if "?" in redirect else "?"
            request.reply(
                302, b"", "text/html",
                {"Location": f"{redirect}{separator}{urlencode({'code': code})}",
                 "Set-Cookie": "urs_user_already_logged=yes; Path=/"},
            )  # fmt: skip
        elif hit.path == "/login":
            code = form.get("code") or ""
            if code in ident.codes:
                cookie = ident.new_cookie()
                request.reply(
                    200, b"<html>logged in</html>", "text/html",
                    {"Set-Cookie": f"asf-urs={cookie}; Path=/; HttpOnly"},
                )  # fmt: skip
            else:
                request.reply(401, b"<html>login failed</html>", "text/html")
        elif hit.path in ("/api/users/user", "/oauth/userinfo", "/profile"):
            if ident.bearer(auth) == ident.token:
                request.reply_json(200, {"uid": ident.username})
            else:
                request.reply_json(
                    401,
                    {"error": "invalid_token", "error_description": "The token is invalid"},
                )
        else:
            request.reply_json(404, {"error": "not_found"})


# ---------------------------------------------------------------------------------------------
# What the download server serves


def _scene_key(record: Record) -> str:
    umm = record["umm"]
    parts = [
        granule_name(record),
        attribute(umm, "POLARIZATION"),
        attribute(umm, "PATH_NUMBER"),
        umm["SpatialExtent"]["HorizontalSpatialDomain"]["Geometry"]["GPolygons"],
    ]
    return json.dumps(parts, sort_keys=True)


class ProductFactory:
    """Builds and caches the files served: scene zips, burst TIFFs and burst XMLs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._tiffs: dict[tuple[int, int], bytes] = {}
        self._deflated: dict[str, tuple[int, int, bytes]] = {}
        self._scene_info: dict[str, tuple[int, str]] = {}  # _scene_key -> (size, md5)
        self._manifests: dict[Path, etree._Element] = {}

    def _lock_for(self, key: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(key, threading.Lock())

    def scene_zip(self, record: Record) -> bytes:
        """<name>.zip holding <name>.SAFE/, built from the real s1_slc product (deterministic).

        The zip is rebuilt on every call (a few ms: the compressed annotations are cached,
        they are the real files' bytes for every product), so nothing large stays in memory.
        """
        from conftest import _manifest_time, _rewrite_manifest

        name = granule_name(record)
        umm = record["umm"]
        pol = (attribute(umm, "POLARIZATION") or "VV").lower()
        pols = tuple(p for p in pol.replace("+", " ").split())
        shape = footprint(umm)
        coords = list(shape.exterior.coords)[:-1] if isinstance(shape, Polygon) else []
        source = realdata_or_skip(REALDATA / "s1_slc" / f"{SCENE_SOURCE}.SAFE")
        root = copy.deepcopy(self._source_manifest(source))
        old_start, old_stop = _manifest_time(root, "startTime"), _manifest_time(root, "stopTime")
        fields = re.match(r"(S1[A-D])_\w\w_\w{4}_\w{4}_(\d{8}T\d{6})_\d{8}T\d{6}_(\d{6})_", name)
        if fields is None:
            raise ValueError(f"not a Sentinel-1 product name: {name}")
        named = dt.datetime.strptime(fields[2], "%Y%m%dT%H%M%S").replace(tzinfo=dt.timezone.utc)
        new_start = named + dt.timedelta(microseconds=old_start.microsecond)
        safe = f"{name}.SAFE"
        annotations: list[tuple[str, str]] = []  # (built name, real source file)
        for real in sorted((source / "annotation").glob("s1?-iw?-slc-vv-*.xml")):
            for each in pols:
                built = f"{fields[1].lower()}-iw{real.name[6]}-slc-{each}-"
                annotations.append((built + real.name.split("-", 4)[4], str(real)))
        annotations.sort()
        _rewrite_manifest(
            root,
            mission=fields[1],
            start=new_start,
            stop=new_start + (old_stop - old_start),
            absolute_orbit=int(fields[3]),
            relative_orbit=int(attribute(umm, "PATH_NUMBER") or 0) or None,
            polarizations=pols,
            footprint=[(lat, lon) for lon, lat in coords] or None,
            mode=None,
            product_type=None,
            measurements=[f"./measurement/{Path(a).stem}.tiff" for a, _ in annotations],
        )
        manifest = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        entries: list[tuple[str, bytes | str | None]] = [
            (f"{safe}/", None),
            (f"{safe}/annotation/", None),
        ]
        entries += [(f"{safe}/annotation/{a}", real) for a, real in annotations]
        entries += [(f"{safe}/manifest.safe", manifest), (f"{safe}/measurement/", None)]
        entries += [(f"{safe}/measurement/{Path(a).stem}.tiff", b"") for a, _ in annotations]
        preview = source / "preview"
        if preview.is_dir():
            entries.append((f"{safe}/preview/", None))
            entries += [(f"{safe}/preview/{p.name}", str(p)) for p in sorted(preview.iterdir())]
        data = self._zip(entries)
        with self._lock:
            self._scene_info[_scene_key(record)] = (len(data), hashlib.md5(data).hexdigest())  # noqa: S324
        return data

    def scene_info(self, record: Record) -> tuple[int, str]:
        """(size, md5) of a scene's zip, cached for the session (builds it once). The key is
        everything the zip is made from (name, polarization, track, footprint), so a test that
        edits a record gets the size of what will be served."""
        key = _scene_key(record)
        with self._lock:
            info = self._scene_info.get(key)
        if info is None:
            self.scene_zip(record)
            with self._lock:
                info = self._scene_info[key]
        return info

    def _source_manifest(self, source: Path) -> etree._Element:
        with self._lock:
            root = self._manifests.get(source)
        if root is None:
            root = etree.parse(str(source / "manifest.safe")).getroot()
            with self._lock:
                self._manifests[source] = root
        return root

    def _deflate(self, data: bytes | str) -> tuple[int, int, bytes]:
        """(crc32, size, raw deflate) of bytes, or of a real file (cached by its path)."""
        if isinstance(data, str):
            with self._lock:
                cached = self._deflated.get(data)
            if cached is None:
                cached = self._deflate(Path(data).read_bytes())
                with self._lock:
                    self._deflated[data] = cached
            return cached
        packer = zlib.compressobj(6, zlib.DEFLATED, -15)
        return zlib.crc32(data), len(data), packer.compress(data) + packer.flush()

    def _zip(self, entries: Sequence[tuple[str, bytes | str | None]]) -> bytes:
        """A zip (deflate, fixed time stamps) of (name, data) entries; data None = a folder,
        a str = the path of a real file to store."""
        out = io.BytesIO()
        central = []
        dos_time, dos_date = 0, (2020 - 1980) << 9 | 1 << 5 | 1
        for name, data in entries:
            raw = name.encode()
            offset = out.tell()
            if data is None:
                method, crc, packed, size, attrs = 0, 0, b"", 0, (0o40755 << 16) | 0x10
            else:
                method, attrs = 8, 0o100644 << 16
                crc, size, packed = self._deflate(data)
            out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, dos_time, dos_date,
                                  crc, len(packed), size, len(raw), 0))  # fmt: skip
            out.write(raw)
            out.write(packed)
            central.append(
                struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0x0314, 20, 0, method, dos_time,
                            dos_date, crc, len(packed), size, len(raw), 0, 0, 0, 0, attrs,
                            offset) + raw
            )  # fmt: skip
        start = out.tell()
        for header in central:
            out.write(header)
        out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central),
                              out.tell() - start, start, 0))  # fmt: skip
        return out.getvalue()

    def burst_tiff(self, lines: int, samples: int) -> bytes:
        """A valid GeoTIFF of the burst's size (CInt16, sparse tiles: a few kB)."""
        key = (lines, samples)
        with self._lock_for(f"tiff{key}"):
            if key in self._tiffs:
                return self._tiffs[key]
            from osgeo import gdal

            path = f"/vsimem/burst_{lines}_{samples}_{uuid.uuid4().hex}.tif"
            driver = gdal.GetDriverByName("GTiff")
            options = ["TILED=YES", "BLOCKXSIZE=512", "BLOCKYSIZE=512", "SPARSE_OK=TRUE",
                       "COMPRESS=DEFLATE"]  # fmt: skip
            dataset = driver.Create(path, samples, lines, 1, gdal.GDT_CInt16, options)
            dataset.SetGCPs(
                [gdal.GCP(0.0, 0.0, 0.0, 0.5, 0.5), gdal.GCP(1.0, 0.0, 0.0, samples - 0.5, 0.5),
                 gdal.GCP(0.0, 1.0, 0.0, 0.5, lines - 0.5)],
                'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],'
                'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]]',
            )  # fmt: skip
            # One non-zero tile (the rest stay sparse): readers that average non-zero pixels
            # (burst2safe) find data.
            import numpy as np

            tile = np.full((min(lines, 64), min(samples, 64)), 3 + 4j, dtype=np.complex64)
            dataset.GetRasterBand(1).WriteArray(tile, 0, 0)
            dataset.FlushCache()
            dataset = None
            handle = gdal.VSIFOpenL(path, "rb")
            gdal.VSIFSeekL(handle, 0, 2)
            size = gdal.VSIFTellL(handle)
            gdal.VSIFSeekL(handle, 0, 0)
            data = bytes(gdal.VSIFReadL(1, size, handle))
            gdal.VSIFCloseL(handle)
            gdal.Unlink(path)
            self._tiffs[key] = data
            return data

    def burst_xml(self, slc_name: str, swath: str, pol: str, bursts: Sequence[Record]) -> bytes:
        """ASF's combined burst metadata for one SLC, swath and polarization: the product
        annotation (real, retimed) and the manifest; no noise/calibration (the download server
        adds flat ones with :func:`complete_burst_xml` unless the document has them)."""
        source = realdata_or_skip(BURST_SOURCE_SAFE)
        annotation_file = next((source / "annotation").glob("*-iw3-slc-vv-*.xml"))
        annotation = etree.parse(str(annotation_file)).getroot()
        _retime_annotation(annotation, swath, pol, bursts)
        root = etree.Element("burst")
        metadata = etree.SubElement(root, "metadata")
        product = etree.SubElement(metadata, "product")
        etree.SubElement(product, "swath").text = swath
        etree.SubElement(product, "polarisation").text = pol
        content = etree.SubElement(product, "content")
        for child in annotation:
            content.append(child)
        wrapper = etree.SubElement(root, "manifest")
        wrapper.append(etree.parse(str(source / "manifest.safe")).getroot())
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    def slc_burst_xml(self, slc_name: str, pol: str, bursts: Sequence[Record]) -> bytes:
        """The document served for one SLC and polarization (burst2safe keeps one such file,
        `<SLC>_<POL>.xml`, for all swaths): :meth:`burst_xml` per swath that has bursts,
        merged, then :func:`complete_burst_xml`."""
        swaths = sorted({attribute(b["umm"], "SUBSWATH_NAME") or "IW3" for b in bursts})
        base: etree._Element | None = None
        for swath in swaths:
            mine = [b for b in bursts if (attribute(b["umm"], "SUBSWATH_NAME") or "IW3") == swath]
            doc = etree.fromstring(self.burst_xml(slc_name, swath, pol, mine))
            if base is None:
                base = doc
            else:
                target = base.find("metadata")
                for child in doc.find("metadata"):
                    target.append(child)
        assert base is not None
        return complete_burst_xml(etree.tostring(base, xml_declaration=True, encoding="UTF-8"))


def complete_burst_xml(data: bytes) -> bytes:
    """Add flat calibration and noise annotations for every swath/polarization of a combined
    burst XML that has a product annotation but no such annotation (see
    :func:`_noise_and_calibration`)."""
    root = etree.fromstring(data)
    metadata = root.find("metadata")
    have = {
        (item.tag, item.findtext("swath"), item.findtext("polarisation"))
        for item in metadata
        if item.tag in ("noise", "calibration")
    }
    for product in metadata.findall("product"):
        swath, pol = product.findtext("swath") or "", product.findtext("polarisation") or ""
        for kind, sections in _noise_and_calibration(product.find("content"), swath).items():
            if (kind, swath, pol) in have:
                continue
            element = etree.SubElement(metadata, kind)
            etree.SubElement(element, "swath").text = swath
            etree.SubElement(element, "polarisation").text = pol
            holder = etree.SubElement(element, "content")
            for section in sections:
                holder.append(section)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _noise_and_calibration(content: etree._Element, swath: str) -> dict[str, list[etree._Element]]:
    """Flat noise and calibration annotations on the product annotation's burst grid.

    ../shared/realdata holds no noise or calibration XML, and burst2safe needs both to write a
    SAFE: these carry the annotation's own adsHeader and one vector per burst start (its
    azimuth time and first line) with constant LUTs (sigma0 = beta0 = gamma = dn = 1, noise
    1). Good for geometry and SAFE structure, not for radiometry.
    """
    lines = int(content.findtext("swathTiming/linesPerBurst") or 1500)
    samples = int(content.findtext("swathTiming/samplesPerBurst") or 25000)
    times = [
        b.findtext("azimuthTime") or "" for b in content.iterfind("swathTiming/burstList/burst")
    ]
    pixels = f"0 {samples - 1}"
    header = content.find("adsHeader")

    def vector(tag: str, when: str, line: int, luts: dict[str, str]) -> etree._Element:
        element = etree.Element(tag)
        etree.SubElement(element, "azimuthTime").text = when
        etree.SubElement(element, "line").text = str(line)
        etree.SubElement(element, "pixel", count="2").text = pixels
        for name, value in luts.items():
            etree.SubElement(element, name, count="2").text = value
        return element

    calibration_info = etree.Element("calibrationInformation")
    etree.SubElement(calibration_info, "absoluteCalibrationConstant").text = "1.000000e+00"
    calibration_list = etree.Element("calibrationVectorList", count=str(len(times)))
    one = "1.000000e+00 1.000000e+00"
    for index, when in enumerate(times):
        calibration_list.append(
            vector("calibrationVector", when, index * lines,
                   {"sigmaNought": one, "betaNought": one, "gamma": one, "dn": one})
        )  # fmt: skip
    range_list = etree.Element("noiseRangeVectorList", count=str(len(times)))
    for index, when in enumerate(times):
        range_list.append(vector("noiseRangeVector", when, index * lines, {"noiseRangeLut": one}))
    last_line = max(0, lines * len(times) - 1)
    azimuth_list = etree.Element("noiseAzimuthVectorList", count="1")
    azimuth = etree.SubElement(azimuth_list, "noiseAzimuthVector")
    for tag, text in (("swath", swath), ("firstAzimuthLine", "0"), ("firstRangeSample", "0"),
                      ("lastAzimuthLine", str(last_line)),
                      ("lastRangeSample", str(samples - 1))):  # fmt: skip
        etree.SubElement(azimuth, tag).text = text
    etree.SubElement(azimuth, "line", count="2").text = f"0 {last_line}"
    etree.SubElement(azimuth, "noiseAzimuthLut", count="2").text = one
    headers = [copy.deepcopy(header) for _ in range(2)] if header is not None else []
    return {
        "calibration": [*headers[:1], calibration_info, calibration_list],
        "noise": [*headers[1:], range_list, azimuth_list],
    }


def _retime_annotation(
    annotation: etree._Element, swath: str, pol: str, bursts: Sequence[Record]
) -> None:
    """Give the real one-burst annotation one <burst> per burst index of this date, at its time."""
    burst_list = annotation.find("swathTiming/burstList")
    template = burst_list.find("burst")
    header = annotation.find("adsHeader")
    if header is not None:
        header.find("swath").text = swath
        header.find("polarisation").text = pol
    by_index = {int(attribute(b["umm"], "BURST_INDEX") or 0): b for b in bursts}
    count = max(by_index) + 1 if by_index else 1
    interval = 2.758277  # s between IW burst starts
    anchor_index, anchor = next(iter(sorted(by_index.items())))
    anchor_time = _utc(attribute(anchor["umm"], "AZIMUTH_TIME") or "2018-01-01T00:00:00")
    lines = int(annotation.findtext("swathTiming/linesPerBurst") or 1500)
    old_time = _utc(template.findtext("azimuthTime") or "2018-01-01T00:00:00")
    for old in burst_list.findall("burst"):
        burst_list.remove(old)
    # The geolocation grid: the real burst's points, repeated for every burst (lines and times
    # shifted; same positions), so that each burst index has its own grid lines.
    grid = annotation.find("geolocationGrid/geolocationGridPointList")
    if grid is not None:
        points = grid.findall("geolocationGridPoint")
        for point in points:
            grid.remove(point)
        seen: set[tuple[int, str]] = set()
        for index in range(count):
            when = anchor_time + dt.timedelta(seconds=interval * (index - anchor_index))
            shift = when - old_time
            for point in points:
                line = int(point.findtext("line") or 0) + index * lines
                key = (line, point.findtext("pixel") or "")
                if key in seen:
                    continue
                seen.add(key)
                element = copy.deepcopy(point)
                element.find("line").text = str(line)
                stamp = _utc(element.findtext("azimuthTime") or "") + shift
                element.find("azimuthTime").text = f"{stamp:%Y-%m-%dT%H:%M:%S.%f}"
                grid.append(element)
        grid.set("count", str(len(grid)))
    info = annotation.find("imageAnnotation/imageInformation/numberOfLines")
    if info is not None:
        info.text = str(lines * count)
    for index in range(count):
        element = copy.deepcopy(template)
        when = anchor_time + dt.timedelta(seconds=interval * (index - anchor_index))
        text = f"{when:%Y-%m-%dT%H:%M:%S.%f}"
        element.find("azimuthTime").text = text
        sensing = element.find("sensingTime")
        if sensing is not None:
            sensing.text = text
        anx = element.find("azimuthAnxTime")
        record = by_index.get(index)
        if anx is not None and record is not None:
            anx.text = attribute(record["umm"], "AZIMUTH_ANX_TIME") or anx.text
        burst_list.append(element)
    burst_list.set("count", str(count))


@dataclass
class _File:
    kind: Literal["scene", "burst_tiff", "burst_xml", "cookie"]
    record: Record | None = None
    group: tuple[str, str] | None = None  # burst XML: (SLC name, POL)
    body: bytes | None = None  # built content (bursts; scene zips are rebuilt on demand)
    filename: str = ""
    size: int | None = None
    md5: str | None = None


class DownloadServer(_LoopbackServer):
    """ASF's datapool (scene zips) and burst extractor (TIFF + XML) on one loopback server."""

    def __init__(
        self,
        products: ProductFactory,
        identity: Identity | None = None,
        tls: TlsFiles | None = None,
        burst_202: int = 1,
        cut_every_file_once: bool = False,
    ) -> None:
        super().__init__(tls)
        self.products = products
        self.identity = identity or Identity()
        self.burst_202 = burst_202
        self.cut_every_file_once = cut_every_file_once
        self.bytes_sent = 0
        self._files: dict[str, _File] = {}
        self._bursts: dict[tuple[str, str], list[Record]] = {}  # (SLC, POL) -> bursts
        self._xml_cache: dict[tuple[str, str], bytes] = {}
        self._cut: set[str] = set()
        self._cut_done: set[str] = set()
        self._pending_202: Counter[str] = Counter()
        self._build_lock = threading.Lock()
        self._cookie_body = b'<?xml version="1.0"?><gmd:MD_Metadata/>\n'

    # publishing (done by the CMR server)
    def _local(self, url: str) -> str | None:
        for prefix in (DATAPOOL_PREFIX, BURST_PREFIX):
            if url.startswith(prefix + "/"):
                return url[len(prefix) :]
        return None

    def publish(self, record: Record) -> None:
        """Point a record's download URLs here and register the files they name."""
        umm = record["umm"]
        is_burst = umm.get("CollectionReference", {}).get("ShortName") == "SENTINEL-1_BURSTS"
        for related in umm.get("RelatedUrls", []):
            path = self._local(related.get("URL", ""))
            if path is None:
                continue
            related["URL"] = f"{self.url}{path}"
            if is_burst and path.endswith(".tiff"):
                name = f"{umm['GranuleUR']}.tiff"
                self._files[path] = _File("burst_tiff", record, filename=name)
            elif is_burst and path.endswith(".xml"):
                slc, swath, pol = path.strip("/").split("/")[:3]
                group = (slc, pol)
                self._bursts.setdefault(group, []).append(record)
                name = f"{slc}_{swath}_{pol}_{path.rsplit('/', 1)[1]}"
                self._files.setdefault(path, _File("burst_xml", None, group, filename=name))
            elif related.get("Type") == "GET DATA" and path.endswith(".zip"):
                self._files[path] = _File("scene", record, filename=path.rsplit("/", 1)[1])

    def paths(self) -> list[str]:
        return sorted(self._files)

    def content(self, path: str) -> bytes:
        """The exact bytes served at a path (built on demand; scene zips are rebuilt)."""
        entry = self._files[path]
        with self._build_lock:
            if entry.body is not None:
                return entry.body
        if entry.kind == "scene":
            assert entry.record is not None
            data = self.products.scene_zip(entry.record)
        elif entry.kind == "burst_tiff":
            assert entry.record is not None
            umm = entry.record["umm"]
            data = self.products.burst_tiff(
                int(attribute(umm, "LINES_PER_BURST") or 1500),
                int(attribute(umm, "SAMPLES_PER_BURST") or 25000),
            )
        else:
            assert entry.group is not None
            with self._build_lock:
                cached = self._xml_cache.get(entry.group)
            if cached is None:
                slc, pol = entry.group
                cached = self.products.slc_burst_xml(slc, pol, self._bursts[entry.group])
                with self._build_lock:
                    self._xml_cache[entry.group] = cached
            data = cached
        with self._build_lock:
            entry.size, entry.md5 = len(data), hashlib.md5(data).hexdigest()  # noqa: S324
            if entry.kind != "scene":
                entry.body = data
        return data

    def describe(self, record: Record) -> None:
        """Write the served size (and md5) into a published record's UMM."""
        umm = record["umm"]
        for related in umm.get("RelatedUrls", []):
            url = related.get("URL", "")
            if not url.startswith(self.url):
                continue
            path = url[len(self.url) :]
            entry = self._files.get(path)
            if entry is None or entry.kind == "burst_xml":
                continue
            if entry.kind == "scene" and entry.record is not None:
                # Every time: a test may have edited the record (e.g. its footprint).
                entry.size, entry.md5 = self.products.scene_info(entry.record)
            elif entry.md5 is None:
                self.content(path)
            if entry.kind == "scene":
                set_attribute(umm, "BYTES", str(entry.size))
                set_attribute(umm, "MD5SUM", str(entry.md5))
                for info in umm.get("DataGranule", {}).get("ArchiveAndDistributionInformation", []):
                    info["Size"] = (entry.size or 0) / 2**20
                    info["SizeUnit"] = "MB"
            else:
                set_attribute(umm, "BYTE_LENGTH", str(entry.size))

    # faults
    def cut_once(self, path: str) -> None:
        """Drop the connection half way through the next full GET of `path`."""
        with self._lock:
            self._cut.add(path)

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for h in self.requests if h.path == path)

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(h.path for h in self.requests)

    def file_requests(self) -> list[Hit]:
        with self._lock:
            return [h for h in self.requests if h.path in self._files]

    # serving
    def handle(self, request: _Handler, hit: Hit) -> None:
        if hit.method not in ("GET", "HEAD"):
            request.reply(405, b"method not allowed", "text/plain")
            return
        if not self.identity.authorized(hit.headers):
            request.reply(
                401, b"<html><body>Unauthorized: Earthdata Login required</body></html>",
                "text/html", {"WWW-Authenticate": 'Bearer realm="Earthdata Login"'},
            )  # fmt: skip
            return
        if hit.path == BURST2SAFE_COOKIE_PATH:
            cookie = self.identity.new_cookie()
            request.reply(
                200, self._cookie_body, "application/xml",
                {"Set-Cookie": f"asf-urs={cookie}; Path=/; HttpOnly"},
            )  # fmt: skip
            return
        entry = self._files.get(hit.path)
        if entry is None:
            request.reply(404, b"<html><body>Not Found</body></html>", "text/html")
            return
        if entry.kind in ("burst_tiff", "burst_xml") and hit.method == "GET":
            with self._lock:
                seen = self._pending_202[hit.path]
                self._pending_202[hit.path] = seen + 1
            if seen < self.burst_202:
                request.reply(202, b"", "text/plain", {"Retry-After": "0"})
                return
        data = self.content(hit.path)
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'attachment; filename="{entry.filename}"',
            "ETag": f'"{hashlib.md5(data).hexdigest()}"',  # noqa: S324
        }
        ctype = {
            "scene": "application/zip",
            "burst_tiff": "image/tiff",
            "burst_xml": "text/xml",
            "cookie": "text/xml",
        }[entry.kind]
        start, end, status = 0, len(data) - 1, 200
        ranged = hit.headers.get("Range")
        if ranged:
            found = re.fullmatch(r"bytes=(\d*)-(\d*)", ranged.strip())
            if found is None or (found[1] == "" and found[2] == ""):
                request.reply(416, b"", "text/plain", {"Content-Range": f"bytes */{len(data)}"})
                return
            if found[1] == "":
                start = max(0, len(data) - int(found[2]))
            else:
                start = int(found[1])
                end = min(end, int(found[2])) if found[2] else end
            if start >= len(data) or start > end:
                request.reply(416, b"", "text/plain", {"Content-Range": f"bytes */{len(data)}"})
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        body = data[start : end + 1]
        cut = False
        if hit.method == "GET" and status == 200:
            with self._lock:
                if hit.path in self._cut or (
                    self.cut_every_file_once and hit.path not in self._cut_done
                ):
                    self._cut.discard(hit.path)
                    self._cut_done.add(hit.path)
                    cut = True
        request.send_response(status)
        request.send_header("Content-Type", ctype)
        request.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            request.send_header(key, value)
        if cut:
            request.send_header("Connection", "close")
        request.end_headers()
        if hit.method == "HEAD":
            return
        if cut:
            half = body[: len(body) // 2]
            request.wfile.write(half)
            request.wfile.flush()
            with self._lock:
                self.bytes_sent += len(half)
            request.close_connection = True
            try:
                request.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        request.wfile.write(body)
        with self._lock:
            self.bytes_sent += len(body)


# ---------------------------------------------------------------------------------------------
# Pointing asf_search (and burst2safe) at the loopback services


@contextmanager
def asf_search_pointed_at(
    cmr_host: str, edl_host: str | None = None, cookie_url: str | None = None
) -> Iterator[None]:
    """Set asf_search's CMR (and EDL / ASF auth) host and REPORT_ERRORS=False; restore after."""
    import asf_search
    from asf_search.ASFSearchOptions.config import config as asf_config
    from asf_search.constants import INTERNAL

    saved_config = dict(asf_config)
    saved_internal = {
        name: getattr(INTERNAL, name) for name in ("CMR_HOST", "EDL_HOST", "ASF_AUTH_HOST")
    }
    saved_report = asf_search.REPORT_ERRORS
    session = asf_config["session"]
    saved_session = (session.edl_host, session.asf_auth_host, session.cmr_host)
    b2s: Any = None  # burst2safe.download, when patched
    saved_cookie = None
    if cookie_url is not None:
        import burst2safe.download

        b2s = burst2safe.download
        saved_cookie = b2s.COOKIE_URL
        b2s.COOKIE_URL = cookie_url
    asf_search.REPORT_ERRORS = False
    asf_config["host"] = cmr_host
    INTERNAL.CMR_HOST = cmr_host
    session.cmr_host = cmr_host
    if edl_host is not None:
        INTERNAL.EDL_HOST = edl_host
        INTERNAL.ASF_AUTH_HOST = edl_host
        session.edl_host = edl_host
        session.asf_auth_host = edl_host
    try:
        yield
    finally:
        asf_config.clear()
        asf_config.update(saved_config)
        for name, value in saved_internal.items():
            setattr(INTERNAL, name, value)
        session.edl_host, session.asf_auth_host, session.cmr_host = saved_session
        session.headers.pop("Authorization", None)
        session.headers.pop("CMR-Search-After", None)
        session.cookies.clear()
        asf_search.REPORT_ERRORS = saved_report
        if b2s is not None:
            b2s.COOKIE_URL = saved_cookie


@dataclass
class AcquireServices:
    cmr: CmrServer
    edl: EdlServer
    download: DownloadServer
    tls: TlsFiles
    identity: Identity

    @property
    def token(self) -> str:
        return self.identity.token

    @property
    def username(self) -> str:
        return self.identity.username

    @property
    def password(self) -> str:
        return self.identity.password

    @property
    def cookie_url(self) -> str:
        return f"{self.download.url}{BURST2SAFE_COOKIE_PATH}"

    def settings_values(self) -> dict[str, object]:
        """Keys for Settings(...): the loopback CMR/EDL hosts and the valid token."""
        return {
            "cmr_host": self.cmr.host,
            "edl_host": self.edl.host,
            "earthdata_token": self.token,
        }

    def env(self) -> dict[str, str]:
        """The same as environment variables, plus the CA bundle, for a child process."""
        return {
            "CMR_HOST": self.cmr.host,
            "EDL_HOST": self.edl.host,
            "EARTHDATA_TOKEN": self.token,
            "REQUESTS_CA_BUNDLE": str(self.tls.ca_bundle),
            "SSL_CERT_FILE": str(self.tls.ca_bundle),
        }


@contextmanager
def running_services(
    tls: TlsFiles,
    products: ProductFactory,
    records: Sequence[Record] | None = None,
    burst_202: int = 1,
    cut_every_file_once: bool = False,
    max_page_size: int = 2000,
    point_asf_search: bool = True,
    download_tls: bool = False,
) -> Iterator[AcquireServices]:
    """Start the three services (and point asf_search at them); stop and restore after."""
    identity = Identity()
    saved_env = {k: os.environ.get(k) for k in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")}
    download_server = DownloadServer(
        products, identity, tls if download_tls else None, burst_202, cut_every_file_once
    )
    with download_server as download:
        assert isinstance(download, DownloadServer)
        with (
            CmrServer(tls, records, download, identity, max_page_size) as cmr,
            EdlServer(tls, identity) as edl,
        ):
            assert isinstance(cmr, CmrServer) and isinstance(edl, EdlServer)
            services = AcquireServices(cmr, edl, download, tls, identity)
            os.environ["REQUESTS_CA_BUNDLE"] = str(tls.ca_bundle)
            os.environ["SSL_CERT_FILE"] = str(tls.ca_bundle)
            try:
                if point_asf_search:
                    with asf_search_pointed_at(cmr.host, edl.host, services.cookie_url):
                        yield services
                else:
                    yield services
            finally:
                for key, value in saved_env.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value


_SESSION: dict[str, Any] = {}
_SESSION_LOCK = threading.Lock()


def session_tls() -> TlsFiles:
    """The process's test CA + server certificate (made on first use, removed at exit)."""
    with _SESSION_LOCK:
        if "tls" not in _SESSION:
            _SESSION["tls"] = make_tls_files(_session_folder() / "tls")
        return _SESSION["tls"]


def session_products() -> ProductFactory:
    """The process's cache of served scene zip sizes / burst files."""
    with _SESSION_LOCK:
        if "products" not in _SESSION:
            _SESSION["products"] = ProductFactory(_session_folder() / "products")
        return _SESSION["products"]


def _session_folder() -> Path:
    if "folder" not in _SESSION:
        folder = Path(tempfile.mkdtemp(prefix="acquire-services-"))
        atexit.register(shutil.rmtree, folder, True)
        _SESSION["folder"] = folder
    return _SESSION["folder"]


@pytest.fixture(scope="session", name="acquire_tls")
def acquire_tls_fixture() -> TlsFiles:
    """A test CA + 127.0.0.1 server certificate (made now; nothing committed)."""
    return session_tls()


@pytest.fixture(scope="session", name="acquire_products")
def acquire_products_fixture() -> ProductFactory:
    """The session's cache of served scene zips / burst files."""
    realdata_or_skip(ASF_RECORDS)
    return session_products()


@pytest.fixture(name="acquire_services")
def acquire_services_fixture(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AcquireServices]:
    """Loopback CMR + EDL + download server, asf_search pointed at them (see module doc).

    HOME is a fresh empty folder (from tmp_path_factory, outside the test's tmp_path: no real
    ~/.netrc is read or written) and no EARTHDATA_* variable of the caller's environment
    leaks in.
    """
    realdata_or_skip(ASF_RECORDS)
    home = tmp_path_factory.mktemp("home")  # not inside the test's own tmp_path
    monkeypatch.setenv("HOME", str(home))
    for name in ("EARTHDATA_TOKEN", "EARTHDATA_USERNAME", "EARTHDATA_PASSWORD", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    with running_services(session_tls(), session_products()) as services:
        yield services


# The same fixtures under the names of the first version (imported by name elsewhere).
acquire_tls = acquire_tls_fixture
acquire_products = acquire_products_fixture
acquire_services = acquire_services_fixture


# ---------------------------------------------------------------------------------------------
# Benchmark: bytes fetched at scene vs burst level, from the recorded metadata


@dataclass(frozen=True)
class VolumeSummary:
    """What a scene-level and a burst-level download of one stack fetch (real sizes)."""

    dates: list[str]  # the scene stack's dates used
    area_km: float
    scenes: int  # SLC zips touching the area on those dates
    scene_bytes: int  # their recorded sizes (BYTES)
    scene_requests: int  # one GET per zip
    bursts_along_track: int  # burst footprints a square of area_km crosses along the track
    swaths: tuple[int, int]  # sub-swaths it crosses: (best case, worst case)
    bursts_per_date: tuple[int, int]  # along-track bursts x swaths, (best, worst)
    mean_burst_bytes: float  # mean recorded BYTE_LENGTH of the recorded burst ID
    burst_bytes: tuple[int, int]  # (best, worst) for all dates (TIFFs; XMLs are ~1 MB a date)
    burst_requests: tuple[int, int]  # TIFFs + one XML per date, each asked twice (202 first)
    burst_bytes_measured: int  # the recorded burst ID alone on the burst stack's last N dates

    @property
    def ratio(self) -> tuple[float, float]:
        """scene bytes / burst bytes, (worst, best)."""
        best, worst = self.burst_bytes
        return (self.scene_bytes / worst, self.scene_bytes / best)

    def lines(self) -> list[str]:
        gb = 1e9
        n = len(self.dates)
        return [
            f"stack of {n} dates ({self.dates[0]} .. {self.dates[-1]}), {self.area_km:.0f} km area",
            f"scene level: {self.scenes} SLC zips, {self.scene_bytes / gb:.1f} GB, "
            f"{self.scene_requests} requests",
            f"burst level: {self.bursts_along_track} bursts along track x {self.swaths[0]}-"
            f"{self.swaths[1]} swaths = {self.bursts_per_date[0]}-{self.bursts_per_date[1]} "
            f"bursts/date x {self.mean_burst_bytes / 1e6:.0f} MB = "
            f"{self.burst_bytes[0] / gb:.2f}-{self.burst_bytes[1] / gb:.2f} GB, "
            f"{self.burst_requests[0]}-{self.burst_requests[1]} requests",
            f"recorded burst ID alone over {n} dates: {self.burst_bytes_measured / gb:.2f} GB",
            f"scene/burst bytes: {self.ratio[0]:.0f}x-{self.ratio[1]:.0f}x",
        ]


def _area_around(lon: float, lat: float, size_km: float) -> Polygon:
    half_lat = size_km / 2 / 111.32
    half_lon = half_lat / max(0.05, math.cos(math.radians(lat)))
    return box(lon - half_lon, lat - half_lat, lon + half_lon, lat + half_lat)


def download_volume(dates: int = 20, area_km: float = 30.0) -> VolumeSummary:
    """Bytes a scene-level and a burst-level download of a `dates`-date stack would fetch.

    Scene level: the recorded SLC stack (real sizes): the `dates` most recent dates with a
    scene touching an `area_km` square at the stack reference's centre; every scene touching
    it counts. Burst level: the recorded burst ID's real sizes (mean BYTE_LENGTH); along the
    track, the number of burst footprints (the recorded one and its neighbours, see
    :func:`neighbour_bursts`) that an `area_km` square centred on the recorded burst crosses;
    across, 1 sub-swath (best case) to 1 + ceil(area / 85 km) (worst: the square straddles
    sub-swaths of ~85 km), at most 3.
    """
    slc = recorded("slc")
    reference = next(r for r in slc if granule_name(r) == SLC_STACK_REFERENCE)
    centre = footprint(reference["umm"]).centroid
    area = _area_around(centre.x, centre.y, area_km)
    covering: dict[str, list[Record]] = {}
    for record in slc:
        if footprint(record["umm"]).intersects(area):
            day = time_range(record["umm"])[0].strftime("%Y-%m-%d")
            covering.setdefault(day, []).append(record)
    chosen = sorted(covering)[-dates:]
    scenes = [r for day in chosen for r in covering[day]]
    scene_bytes = sum(recorded_bytes(r) for r in scenes)

    bursts = recorded("burst")
    by_day: dict[str, list[Record]] = {}
    for record in bursts:
        day = time_range(record["umm"])[0].strftime("%Y-%m-%d")
        by_day.setdefault(day, []).append(record)
    burst_days = sorted(by_day)[-dates:]
    measured = [r for day in burst_days for r in by_day[day]]
    measured_bytes = sum(recorded_bytes(r) for r in measured)
    mean = measured_bytes / max(1, len(measured))
    one = by_day[burst_days[-1]][0]
    middle = footprint(one["umm"]).centroid
    square = _area_around(middle.x, middle.y, area_km)
    row = [one, *neighbour_bursts([one], (-4, -3, -2, -1, 1, 2, 3, 4))]
    along = sum(1 for r in row if footprint(r["umm"]).intersects(square))
    swaths = (1, min(3, 1 + math.ceil(area_km / 85.0)))
    per_date = (along * swaths[0], along * swaths[1])
    n = len(chosen)
    return VolumeSummary(
        dates=chosen,
        area_km=area_km,
        scenes=len(scenes),
        scene_bytes=scene_bytes,
        scene_requests=len(scenes),
        bursts_along_track=along,
        swaths=swaths,
        bursts_per_date=per_date,
        mean_burst_bytes=mean,
        burst_bytes=(round(mean * per_date[0] * n), round(mean * per_date[1] * n)),
        burst_requests=(2 * (per_date[0] + 1) * n, 2 * (per_date[1] + 1) * n),
        burst_bytes_measured=measured_bytes,
    )


__all__ = [
    "AcquireServices",
    "CmrServer",
    "DownloadServer",
    "EdlServer",
    "Hit",
    "Identity",
    "ProductFactory",
    "TlsFiles",
    "VolumeSummary",
    "acquire_products",
    "acquire_products_fixture",
    "acquire_services",
    "acquire_tls",
    "complete_burst_xml",
    "acquire_services_fixture",
    "acquire_tls_fixture",
    "asf_search_pointed_at",
    "burst_archive",
    "neighbour_bursts",
    "download_volume",
    "make_tls_files",
    "match",
    "recorded",
    "recorded_bytes",
    "running_services",
    "session_products",
    "session_tls",
]
