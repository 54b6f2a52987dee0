"""A loopback emulator of the Copernicus DEM's open S3 bucket, for tests and bench/dem.py.

Serves files below a folder by their bucket key
(`Copernicus_DSM_COG_10_N33_00_W118_00_DEM/Copernicus_DSM_COG_10_N33_00_W118_00_DEM.tif`)
as S3 does for an anonymous client: `HEAD` answers 200 with Content-Length, ETag and
`Accept-Ranges: bytes`; `GET` with one `Range: bytes=a-b` (or `a-`, or `-n`) answers 206 with
`Content-Range: bytes a-b/size`; a range starting past the end answers 416; a GET without a
range, or with several ranges (S3 does not do multipart ranges), answers 200 with the whole
object; a key that does not exist answers 404 with S3's `NoSuchKey` XML (the ocean tiles that
the bucket does not hold). Every request is recorded in `requests` (method, key, range, status,
body bytes sent), so tests count requests and bytes.

`make_cog_tile` writes a tile in the bucket's format (Float32 COG, 1024 px blocks, DEFLATE,
pixel-is-point with the geotransform origin half a pixel west and north of the tile's corner).

Run standalone (bench/dem.py does): `python tests/copernicus_server.py FOLDER` prints
`http://127.0.0.1:PORT` and serves until killed; `GET /_stats` answers the count of requests
and bytes so far (JSON).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
from osgeo import gdal

from loopback import LoopbackServer

gdal.UseExceptions()

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class Request:
    method: str
    key: str
    range: str | None
    status: int
    bytes: int


class BucketEmulator(LoopbackServer):
    """`with BucketEmulator(folder) as bucket: settings.with_changes(copernicus_dem_url=...)`."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.requests: list[Request] = []
        self.errors: dict[str, int] = {}  # key -> HTTP status to answer instead (503, 403...)
        self._lock = threading.Lock()
        super().__init__(self._handler_class())

    @property
    def bytes_sent(self) -> int:
        return sum(request.bytes for request in self.requests)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as S3; GDAL reuses the connection

            def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
                emulator._answer(self, head=True)

            def do_GET(self) -> None:  # noqa: N802
                emulator._answer(self, head=False)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        return Handler

    def _answer(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        key = unquote(urlsplit(handler.path).path).lstrip("/")
        if key == "_stats":
            body = json.dumps({"requests": len(self.requests), "bytes": self.bytes_sent}).encode()
            self._send(handler, 200, {"Content-Type": "application/json"}, body, head)
            return
        wanted = handler.headers.get("Range")
        if key in self.errors:
            status = self._send(handler, self.errors[key], {}, b"<Error>SlowDown</Error>", head)
            self._record(handler.command, key, wanted, status, 0)
            return
        path = self.folder / key
        if ".." in Path(key).parts or not key or not path.is_file():
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
                f"<Message>The specified key does not exist.</Message><Key>{key}</Key></Error>"
            ).encode()
            status = self._send(handler, 404, {"Content-Type": "application/xml"}, body, head)
            self._record(handler.command, key, wanted, status, 0 if head else len(body))
            return
        data = path.read_bytes()
        size = len(data)
        headers = {
            "Content-Type": "image/tiff",
            "Accept-Ranges": "bytes",
            "ETag": f'"{hashlib.md5(data).hexdigest()}"',  # noqa: S324 (S3's ETag is an MD5)
            "Last-Modified": "Tue, 01 Dec 2020 00:00:00 GMT",
        }
        status, body = 200, data
        match = _RANGE.match(wanted.strip()) if wanted else None
        if match and (match[1] or match[2]):
            if match[1]:
                start = int(match[1])
                end = min(int(match[2]), size - 1) if match[2] else size - 1
            else:  # the last n bytes
                start, end = max(0, size - int(match[2])), size - 1
            if start >= size:
                headers["Content-Range"] = f"bytes */{size}"
                status = self._send(handler, 416, headers, b"", head)
                self._record(handler.command, key, wanted, status, 0)
                return
            status, body = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._send(handler, status, headers, body, head)
        self._record(handler.command, key, wanted, status, 0 if head else len(body))

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        headers: dict[str, str],
        body: bytes,
        head: bool,
    ) -> int:
        try:
            handler.send_response(status)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            if not head:
                handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return status

    def _record(self, method: str, key: str, wanted: str | None, status: int, size: int) -> None:
        with self._lock:
            self.requests.append(Request(method, key, wanted, status, size))


def tile_key(lat: int, lon: int) -> str:
    """The bucket key of the 1° tile whose south-west corner is (lat, lon)."""
    ns, ew = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
    stem = f"Copernicus_DSM_COG_10_{ns}{abs(lat):02d}_00_{ew}{abs(lon):03d}_00_DEM"
    return f"{stem}/{stem}.tif"


def tile_columns(lat: int) -> int:
    """GLO-30 tile width by latitude band (the product handbook: coarser in longitude poleward)."""
    band = abs(lat + 0.5)
    for limit, columns in ((50, 3600), (60, 2400), (70, 1800), (80, 1200), (85, 720)):
        if band < limit:
            return columns
    return 360


def make_cog_tile(
    folder: Path, lat: int, lon: int, heights: np.ndarray, overviews: bool = False
) -> Path:
    """Write `heights` (3600 rows x tile_columns(lat)) as the bucket's tile (lat, lon).

    Without `overviews` (the default: twice as fast to make) the file lacks the bucket's
    internal overviews, which a full-resolution read never touches."""
    rows, columns = heights.shape
    dx, dy = 1.0 / columns, 1.0 / rows
    path = folder / tile_key(lat, lon)
    path.parent.mkdir(parents=True, exist_ok=True)
    memory = f"/vsimem/tile_{lat}_{lon}.tif"
    dataset = gdal.GetDriverByName("GTiff").Create(memory, columns, rows, 1, gdal.GDT_Float32)
    # Pixel-is-point: the first pixel's centre is the tile's north-west corner.
    dataset.SetGeoTransform((lon - dx / 2, dx, 0, lat + 1 + dy / 2, 0, -dy))
    dataset.SetProjection("EPSG:4326")
    dataset.SetMetadataItem("AREA_OR_POINT", "Point")
    dataset.GetRasterBand(1).WriteArray(heights.astype(np.float32))
    gdal.Translate(
        str(path),
        dataset,
        format="COG",
        creationOptions=[
            "BLOCKSIZE=1024",
            "COMPRESS=DEFLATE",
            "PREDICTOR=YES",
            "LEVEL=1",
            f"OVERVIEWS={'AUTO' if overviews else 'NONE'}",
        ],
    )
    dataset = None
    gdal.Unlink(memory)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    with BucketEmulator(args.folder) as server:
        print(server.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
