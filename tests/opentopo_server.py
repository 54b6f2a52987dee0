"""A loopback emulator of OpenTopography's globaldem API, for tests and bench/dem.py.

`GET /API/globaldem?demtype=…&south=…&north=…&west=…&east=…&outputFormat=GTiff&API_Key=…`
answers, like the real service, 401 for a missing or unknown key, 400 for a bad parameter or
an area over the type's limit, and otherwise a GeoTIFF window cut with GDAL from a source
raster, on the source's own pixel grid and covering the requested box (pixels outside the
source are nodata). Tests queue canned answers (`script`) to play errors, error pages with
status 200, slow answers; every request's query is recorded in `requests`.

Run standalone (bench/dem.py does): `python tests/opentopo_server.py SOURCE.tif [--key KEY]`
prints `http://127.0.0.1:PORT` and serves until killed.
"""

from __future__ import annotations

import argparse
import math
import socket
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
from osgeo import gdal

from loopback import LoopbackServer

gdal.UseExceptions()

AREA_LIMITS_KM2 = {"COP90": 4_050_000, "SRTMGL3": 4_050_000, "SRTMGL3_E": 4_050_000}
DEFAULT_LIMIT_KM2 = 450_000
NODATA = -32767.0


@dataclass
class Canned:
    """One scripted answer: status, body, headers, and a delay before the headers."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class OpenTopoEmulator(LoopbackServer):
    """`with OpenTopoEmulator(source) as server: settings.with_changes(opentopo_url=server.url)`."""

    def __init__(self, source: Path, api_key: str = "test-opentopo-key-5f3a9c") -> None:
        self.source = Path(source)
        self.api_key = api_key
        self.requests: list[dict[str, str]] = []
        self.script: deque[Canned] = deque()
        self.delay_s = 0.0  # before every real (unscripted) answer: lets requests overlap
        self.cuts = 0  # this many real answers send half their body, then drop the connection
        self._lock = threading.Lock()
        super().__init__(self._handler_class())

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                emulator._answer(self)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # quiet: the test asserts on emulator.requests

        return Handler

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        with self._lock:
            self.requests.append(query)
            canned = self.script.popleft() if self.script else None
        cut = False
        if canned is None:
            canned = self._real_answer(parts.path, query)
            canned.delay_s = canned.delay_s or self.delay_s
            with self._lock:
                cut, self.cuts = self.cuts > 0, max(0, self.cuts - 1)
        if canned.delay_s:
            time.sleep(canned.delay_s)
        try:
            handler.send_response(canned.status)
            headers = {"Content-Type": "text/plain; charset=utf-8", **canned.headers}
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(canned.body)))
            handler.end_headers()
            if cut:  # the whole length announced, half sent: a body cut mid-transfer
                handler.wfile.write(canned.body[: len(canned.body) // 2])
                handler.wfile.flush()
                handler.connection.shutdown(socket.SHUT_RDWR)
                return
            handler.wfile.write(canned.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)

    def _real_answer(self, path: str, query: dict[str, str]) -> Canned:
        if path != "/API/globaldem":
            return Canned(404, b"Not Found")
        key = query.get("API_Key", "")
        if not key:
            return Canned(401, b"Error: API Key is required")
        if key != self.api_key:
            return Canned(401, b"Error: Invalid API Key")
        try:
            south, north, west, east = (
                float(query[name]) for name in ("south", "north", "west", "east")
            )
        except (KeyError, ValueError):
            return Canned(400, b"Error: south, north, west and east are required numbers")
        if not (south < north and west < east) or query.get("outputFormat") != "GTiff":
            return Canned(400, b"Error: bad bounding box or outputFormat")
        limit = AREA_LIMITS_KM2.get(query.get("demtype", ""), DEFAULT_LIMIT_KM2)
        area = _area_km2(south, north, west, east)
        if area > limit:
            message = f"Error: Area of request is too large ({area:,.0f} km2); max {limit:,} km2"
            return Canned(400, message.encode())
        return Canned(
            200, self.cut(south, north, west, east), {"Content-Type": "application/octet-stream"}
        )

    def cut(self, south: float, north: float, west: float, east: float) -> bytes:
        """A GeoTIFF of the source on its own grid, covering the box (snapped outward)."""
        source = gdal.Open(str(self.source))
        x0, dx, _, y0, _, dy = source.GetGeoTransform()
        left = x0 + math.floor((west - x0) / dx + 1e-9) * dx
        right = x0 + math.ceil((east - x0) / dx - 1e-9) * dx
        top = y0 + math.floor((north - y0) / dy + 1e-9) * dy
        bottom = y0 + math.ceil((south - y0) / dy - 1e-9) * dy
        name = f"/vsimem/opentopo_{uuid.uuid4().hex}.tif"
        try:
            gdal.Warp(
                name,
                source,
                format="GTiff",
                outputBounds=(left, bottom, right, top),
                xRes=dx,
                yRes=-dy,
                resampleAlg="near",
                dstNodata=NODATA,
                outputType=gdal.GDT_Float32,
                creationOptions=["COMPRESS=DEFLATE", "TILED=YES"],
            )
            handle = gdal.VSIFOpenL(name, "rb")
            try:
                return bytes(gdal.VSIFReadL(1, gdal.VSIStatL(name).size, handle))
            finally:
                gdal.VSIFCloseL(handle)
        finally:
            gdal.Unlink(name)


def _area_km2(south: float, north: float, west: float, east: float) -> float:
    band = math.sin(math.radians(north)) - math.sin(math.radians(south))
    return 6371.0072**2 * math.radians(east - west) * band


def synthetic_source(
    path: Path, south: float, north: float, west: float, east: float, posting_arcsec: int = 1
) -> Path:
    """A geoid-height GeoTIFF on the GLO-30 grid (centres on whole arc-seconds) for a box.

    Smooth hills plus a seeded ripple, with a strip of nodata "ocean" along the south edge.
    """
    step = posting_arcsec / 3600
    width = round((east - west) / step) + 1
    length = round((north - south) / step) + 1
    dataset = gdal.GetDriverByName("GTiff").Create(
        str(path), width, length, 1, gdal.GDT_Float32, ["COMPRESS=DEFLATE", "TILED=YES"]
    )
    dataset.SetGeoTransform((west - step / 2, step, 0, north + step / 2, 0, -step))
    dataset.SetProjection("EPSG:4326")
    band = dataset.GetRasterBand(1)
    band.SetNoDataValue(NODATA)
    lons = west + np.arange(width) * step
    rows_per_block = 512
    for first in range(0, length, rows_per_block):
        count = min(rows_per_block, length - first)
        lats = north - (first + np.arange(count)) * step
        heights = (
            800
            + 600 * np.sin(np.radians(lats)[:, None] * 90) * np.cos(np.radians(lons)[None, :] * 70)
            + 3 * np.sin(np.arange(width)[None, :] * 0.7 + lats[:, None] * 900)
        ).astype(np.float32)
        heights[lats < south + 0.02] = NODATA
        band.WriteArray(heights, 0, first)
    dataset.FlushCache()
    dataset = None
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--key", default="test-opentopo-key-5f3a9c")
    args = parser.parse_args(argv)
    with OpenTopoEmulator(args.source, args.key) as server:
        print(server.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
