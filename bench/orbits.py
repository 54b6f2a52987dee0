"""Benchmark of orbit provisioning: 200 scenes over 60 dates, loopback services with latency.

For each source (asf, aws, cdse), provisions a cold cache (empty orbit folder) and then a warm
one (the same folder again), and prints the requests the server received, the bytes
downloaded and the wall time. Target (issue #4): requests <= listing/lookup requests +
distinct files, each file downloaded once; a warm cache makes 0 requests.

Usage: PYTHONPATH=code python bench/orbits.py [--scenes 200] [--dates 60] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "code"), str(REPO / "tests")]

from insar_pipeline.download import Download  # noqa: E402
from insar_pipeline.inputs.safe import Product  # noqa: E402
from insar_pipeline.orbits.provision import provision_orbits  # noqa: E402
from orbit_factories import poeorb_name, scene  # noqa: E402
from orbit_server import OrbitServer, service_settings  # noqa: E402

ROUTES = {
    "asf": ("asf", "asf-file"),
    "aws": ("aws-list", "aws-file"),
    "cdse": ("cdse-query", "cdse-token", "cdse-file"),
}


def scenes(count: int, dates: int, first: date) -> list[Product]:
    """`count` scenes spread over `dates` acquisition dates 6 days apart (consecutive frames
    of one track, 25 s apart, on each date)."""
    start = datetime(first.year, first.month, first.day, 2, 20, 8)
    products = []
    for index in range(count):
        moment = start + timedelta(days=6 * (index % dates), seconds=25 * (index // dates))
        products.append(scene("S1A", f"{moment:%Y%m%dT%H%M%S}"))
    return products


class ServerProcess:
    """The loopback OrbitServer in a child process, so the fake's own work (it serves 270 MB)
    does not compete with the pipeline for this interpreter's GIL."""

    def __init__(self, latency_s: float, step_s: int, listed: list[str], needed: list[str]):
        context = multiprocessing.get_context("fork")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, latency_s, step_s, listed, needed), daemon=True
        )
        self.url, self.file_bytes = "", 0

    def __enter__(self) -> ServerProcess:
        self._process.start()
        self.url, self.file_bytes = self._conn.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.send(("stop",))
        self._process.join(timeout=10)

    def counts(self, routes: tuple[str, ...]) -> dict[str, int]:
        self._conn.send(("counts", routes))
        return self._conn.recv()

    def reset(self) -> None:
        self._conn.send(("reset",))
        self._conn.recv()


def _serve(conn: Connection, latency_s: float, step_s: int, listed: list[str], needed: list[str]):
    server = OrbitServer(latency_s=latency_s, step_s=step_s)
    server.add(*listed)
    for name in needed:  # made up front: the timing is not the factory's
        server.body(name)
    with server:
        conn.send((server.url, len(server.body(needed[0]))))
        while True:
            command = conn.recv()
            if command[0] == "stop":
                return
            if command[0] == "counts":
                conn.send({route: server.count(route) for route in command[1]})
            else:
                server.reset_counts()
                conn.send(None)


def run(server: ServerProcess, source: str, products: list[Product], folder: Path) -> dict:
    settings = service_settings(server.url, folder, orbit_sources=source)
    downloads: list[Download] = []
    server.reset()
    started, cpu = time.perf_counter(), time.process_time()
    result = provision_orbits(settings, products, downloads.append)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if result.failures or len(result.files) != len(products):
        raise SystemExit(f"{source}: provisioning failed: {list(result.failures.values())[:3]}")
    names = [download.name for download in downloads]
    by_route = server.counts(ROUTES[source])
    return {
        "requests": sum(by_route.values()),
        "by_route": by_route,
        "files": len(names),
        "distinct": len(set(names)),
        "bytes": sum(download.bytes for download in downloads),
        "seconds": elapsed,
        "cpu": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--dates", type=int, default=60)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds added per request")
    parser.add_argument("--step", type=int, default=10, help="state vector spacing (10 = real)")
    args = parser.parse_args()

    first = date(2024, 1, 3)
    products = scenes(args.scenes, args.dates, first)
    needed = sorted({poeorb_name("S1A", f"{p.start:%Y%m%d}") for p in products})
    # The bucket holds a precise file for every day of the period, S1B/S1C ones too.
    span = (max(p.start.date() for p in products) - first).days + 40
    days = [f"{first + timedelta(days=offset):%Y%m%d}" for offset in range(-10, span)]
    listed = [poeorb_name(mission, day) for day in days for mission in ("S1A", "S1B", "S1C")]
    with ServerProcess(args.latency, args.step, listed, needed) as server:
        print(f"{len(products)} scenes, {len({p.start.date() for p in products})} dates, "
              f"{len(needed)} distinct orbit files of {server.file_bytes / 1e6:.1f} MB "
              f"({len(listed)} in the bucket); server latency {args.latency * 1000:.0f} ms "
              "per request")  # fmt: skip
        print(f"{'source':7} {'cache':5} {'requests':>8}  {'by route':44} {'files':>5} "
              f"{'MB':>7} {'wall s':>7} {'cpu s':>6}  target")  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="orbit-bench-") as tmp:
            for source in ROUTES:
                for cache in ("cold", "warm"):
                    figures = run(server, source, products, Path(tmp) / source)
                    print(_row(source, cache, figures, len(needed)))


def _row(source: str, cache: str, figures: dict, needed: int) -> str:
    routes = ", ".join(f"{route}={n}" for route, n in figures["by_route"].items())
    files = figures["by_route"][ROUTES[source][-1]]
    logins = figures["by_route"].get("cdse-token", 0)
    lookups = figures["requests"] - files - logins
    if cache == "cold":
        # Each needed file downloaded once, and no more lookups or listings than files.
        ok = files == figures["distinct"] == needed and lookups <= needed
        ok = ok and logins <= 1
        target = f"{'met' if ok else 'MISSED'}: {lookups} lookups/listings + {files} files"
        target += f" + {logins} login" if logins else ""
    else:
        ok = figures["requests"] == 0
        target = "met: 0 requests" if ok else "MISSED: the warm cache made requests"
    return (
        f"{source:7} {cache:5} {figures['requests']:8d}  {routes:44} {figures['files']:5d} "
        f"{figures['bytes'] / 1e6:7.1f} {figures['seconds']:7.2f} {figures['cpu']:6.2f}  {target}"
    )


if __name__ == "__main__":
    main()
