"""OpenTopography requests against the loopback emulator: statuses, retries, bodies, the key."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
import requests
from osgeo import gdal

from dem_fixtures import (  # noqa: F401  (the `source` and `server` fixtures)
    KEY,
    server_fixture,
    source_fixture,
)
from insar_pipeline import _http as http
from insar_pipeline.dem.fetch import fetch_tile, tile_url
from insar_pipeline.errors import CredentialError, ProvisioningError, ServiceError
from insar_pipeline.geo import BBox
from insar_pipeline.logs import mask_secrets
from opentopo_server import Canned, OpenTopoEmulator

TILE = BBox(34.0, 34.05, -118.05, -118.0)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(http, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setattr(http, "SLOW_READ_TIMEOUT_S", 0.5)
    monkeypatch.setattr(http, "CONNECT_TIMEOUT_S", 0.5)


def fetch(server: OpenTopoEmulator, tmp_path: Path, key: str = KEY, dem_type: str = "COP30"):
    return fetch_tile(tile_url(server.url, dem_type, TILE, key), tmp_path / "tile.tif")


def test_the_request_carries_every_parameter_and_the_body_is_a_checked_geotiff(server, tmp_path):
    fetched = fetch(server, tmp_path)
    [query] = server.requests
    assert query == {
        "demtype": "COP30", "south": "34", "north": "34.05", "west": "-118.05", "east": "-118",
        "outputFormat": "GTiff", "API_Key": KEY,
    }  # fmt: skip
    assert fetched.path == tmp_path / "tile.tif" and fetched.bytes == fetched.path.stat().st_size
    assert KEY not in fetched.source and "API_Key=***" in fetched.source
    dataset = gdal.Open(str(fetched.path))
    assert (dataset.RasterXSize, dataset.RasterYSize) == (181, 181)
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_transient_statuses_are_retried(server, tmp_path, status):
    server.script.extend([Canned(status, b"busy", {"Retry-After": "0"}), Canned(status, b"busy")])
    fetch(server, tmp_path)
    assert len(server.requests) == 3
    assert gdal.Open(str(tmp_path / "tile.tif")) is not None


def test_retries_give_up_with_a_service_error(server, tmp_path):
    server.script.extend([Canned(503, b"down")] * http.MAX_ATTEMPTS)
    with pytest.raises(ServiceError, match="gave up after 4 attempts") as caught:
        fetch(server, tmp_path)
    assert len(server.requests) == http.MAX_ATTEMPTS
    assert KEY not in str(caught.value)
    assert not list(tmp_path.iterdir())


def test_a_slow_answer_times_out_and_is_retried(server, tmp_path):
    server.script.append(Canned(200, b"late", delay_s=1.5))
    fetch(server, tmp_path)
    assert len(server.requests) == 2


def test_a_dead_service_is_a_service_error_without_the_key(tmp_path, caplog):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = tile_url(f"http://127.0.0.1:{port}", "COP30", TILE, KEY)
    with caplog.at_level(logging.DEBUG), pytest.raises(ServiceError) as caught:
        fetch_tile(url, tmp_path / "tile.tif")
    assert "ConnectionError" in str(caught.value)
    assert KEY not in str(caught.value) and KEY not in caplog.text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("key", "status"),
    [("", 401), ("wrong-key", 401)],
)
def test_a_missing_or_wrong_key_is_a_credential_error(server, tmp_path, key, status):
    with pytest.raises(CredentialError, match="set OPENTOPO_API_KEY in .env") as caught:
        fetch(server, tmp_path, key=key)
    assert f"HTTP {status}" in str(caught.value)
    assert len(server.requests) == 1  # never retried


def test_forbidden_is_a_credential_error_too(server, tmp_path):
    server.script.append(Canned(403, f"<html><body>Forbidden for key {KEY}</body></html>".encode()))
    with pytest.raises(CredentialError, match="HTTP 403: Forbidden for key \\*\\*\\*") as caught:
        fetch(server, tmp_path)
    assert KEY not in str(caught.value)


def test_area_too_large_is_a_clear_provisioning_error(server, tmp_path):
    url = tile_url(server.url, "COP30", BBox(0, 10, 0, 10), KEY)
    with pytest.raises(
        ProvisioningError, match="HTTP 400: Error: Area of request is too large"
    ) as caught:
        fetch_tile(url, tmp_path / "tile.tif")
    assert "check ROI and DEM_TYPE" in str(caught.value)
    assert len(server.requests) == 1
    assert KEY not in str(caught.value) and "API_Key=***" in str(caught.value)


def test_other_client_errors_are_not_retried(server, tmp_path):
    server.script.append(Canned(404, b"Not Found"))
    with pytest.raises(ProvisioningError, match="HTTP 404: Not Found"):
        fetch(server, tmp_path)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("body", "content_type", "shown"),
    [
        (b"<!DOCTYPE html><html><head><title>Server Error</title></head>"
         b"<body>Try later</body></html>", "text/html", "Server Error Try later"),
        (b"Error: No data available for the requested area", "text/plain", "No data available"),
        (b"<?xml version='1.0'?><error><message>Invalid demtype</message></error>",
         "application/xml", "Invalid demtype"),
        (b"", "image/tiff", "the body was empty"),
    ],
)  # fmt: skip
def test_an_error_page_with_status_200_is_not_kept_as_a_tif(
    server, tmp_path, body, content_type, shown
):
    server.script.append(Canned(200, body, {"Content-Type": content_type}))
    with pytest.raises(ProvisioningError, match="not a GeoTIFF") as caught:
        fetch(server, tmp_path)
    assert shown in str(caught.value)
    assert not (tmp_path / "tile.tif").exists()


def test_a_truncated_geotiff_is_refused(server, source, tmp_path):
    whole = server.cut(34.0, 34.05, -118.05, -118.0)
    server.script.append(Canned(200, whole[: len(whole) // 2]))
    with pytest.raises(ProvisioningError, match="damaged GeoTIFF|not a GeoTIFF"):
        fetch(server, tmp_path)
    assert not (tmp_path / "tile.tif").exists()


def test_a_multiband_or_projected_tiff_is_refused(server, tmp_path):
    path = tmp_path / "rgb.tif"
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), 4, 4, 3, gdal.GDT_Byte)
    dataset.SetGeoTransform((0, 1, 0, 0, 0, -1))
    dataset.SetProjection("EPSG:4326")
    dataset = None
    server.script.append(Canned(200, path.read_bytes()))
    with pytest.raises(ProvisioningError, match="3 bands"):
        fetch(server, tmp_path)
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), 4, 4, 1, gdal.GDT_Float32)
    dataset.SetGeoTransform((500000, 30, 0, 4000000, 0, -30))
    dataset.SetProjection("EPSG:32611")
    dataset = None
    server.script.append(Canned(200, path.read_bytes()))
    with pytest.raises(ProvisioningError, match="geographic"):
        fetch(server, tmp_path)


def test_the_key_never_reaches_a_log_line(server, tmp_path, caplog):
    server.script.extend([Canned(500, b"oops"), Canned(200, b"late", delay_s=1.5)])
    with caplog.at_level(logging.DEBUG):
        fetch(server, tmp_path)
        server.script.append(Canned(401, f"Invalid API Key {KEY}".encode()))
        with pytest.raises(CredentialError) as caught:
            fetch(server, tmp_path)
    assert len(server.requests) == 4
    # urllib3 logs each request line (query string included) at DEBUG: it is masked.
    assert "API_Key=***" in caplog.text
    assert KEY not in caplog.text and KEY not in str(caught.value)
    assert all(KEY not in path.name for path in tmp_path.rglob("*"))


def test_mask_secrets_masks_the_parameter_and_the_literal_secret():
    url = "https://portal.opentopography.org/API/globaldem?demtype=COP30&API_Key=abc123&south=1"
    assert mask_secrets(url) == url.replace("abc123", "***")
    assert mask_secrets("key abc123 refused", "abc123") == "key *** refused"
    assert mask_secrets(
        str(requests.ConnectionError(f"Max retries exceeded with url: /x?API_Key={KEY}"))
    ) == ("Max retries exceeded with url: /x?API_Key=***")
