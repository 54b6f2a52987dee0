"""Benchmark of acquisition (issue 14): a 20-date stack over a 30 km area, scene and burst level.

Prints (1) the bytes the scene level and the burst level would download, from the recorded
(real) ASF metadata in ../shared/realdata/asf_search; (2) a cold `download` of the same stack
against the loopback CMR / Earthdata / download services of tests/acquire_services.py (which
serve small stand-in files): requests per file and bytes; (3) a warm rerun: its wall time, the
bytes it downloads and the searches it makes (target: 0 bytes, 1 search).

Usage: PYTHONPATH=code python bench/acquisition.py [--dates 20] [--area-km 30]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "code"), str(REPO / "tests")]

from acquire_helpers import neighbour_bursts, small_bursts  # noqa: E402
from acquire_services import (  # noqa: E402
    ProductFactory,
    download_volume,
    make_tls_files,
    recorded,
    running_services,
)
from insar_pipeline.acquire import http, stage  # noqa: E402
from insar_pipeline.inputs.config import Settings  # noqa: E402

# A point inside the recorded track-13 frame-411 scenes and one over burst 174_372326_IW3.
SCENE_CENTRE = (54.8, -120.8)
BURST_CENTRE = (56.975, -135.9)
REPEAT_DAYS = 12


def square(lat: float, lon: float, size_km: float) -> str:
    half_lat = size_km / 2 / 111.32
    half_lon = half_lat / math.cos(math.radians(lat))
    return f"{lat - half_lat},{lat + half_lat},{lon - half_lon},{lon + half_lon}"


def run_level(
    root: Path, tls: Any, products: ProductFactory, level: str, dates: int, area_km: float
) -> list[str]:
    if level == "scene":
        records, centre, track = None, SCENE_CENTRE, 13
    else:
        bursts = recorded("burst")
        records, centre, track = small_bursts(bursts + neighbour_bursts(bursts)), BURST_CENTRE, 174
        area_km = min(area_km, 15.0)  # the archive holds two bursts (one recorded, one made)
    end_day = 12 + REPEAT_DAYS * (dates - 1)
    with running_services(tls, products, records=records) as services:
        data = root / level
        data.mkdir()
        settings = Settings(
            data_dir=data, pairs_file=root / f"{level}-pairs.txt", env_file=root / ".env",
            aoi=square(*centre, area_km), start="2018-01-01",
            end=f"{_day(end_day)}", relative_orbit=track, input_level=level,
            **services.settings_values(),
        )  # fmt: skip
        started = time.perf_counter()
        selection = stage.find(settings)
        stage.download(settings, selection)
        cold_s = time.perf_counter() - started
        counts = Counter(services.download.counts())
        cold_bytes = services.download.bytes_sent
        files = len(counts)
        searches = len(services.cmr.granule_requests())

        started = time.perf_counter()
        stage.download(settings, stage.find(settings))
        warm_s = time.perf_counter() - started
        warm_requests = sum(services.download.counts().values()) - sum(counts.values())
        warm_bytes = services.download.bytes_sent - cold_bytes
        warm_searches = len(services.cmr.granule_requests()) - searches
    per_file = sum(counts.values()) / max(1, files)
    return [
        f"{level} level, {len(selection.acquisitions)} dates ({len(selection.excluded)} left out),"
        f" {len(selection.granules)} files over a {area_km:.0f} km area:",
        f"  cold: {sum(counts.values())} requests for {files} files ({per_file:.1f} per file"
        f"{'; bursts answer 202 once' if level == 'burst' else ''}), {cold_bytes / 1e6:.1f} MB"
        f" of stand-in files, {cold_s:.1f} s, {searches} search",
        f"  warm rerun: {warm_s:.2f} s, {warm_bytes} bytes, {warm_requests} download requests,"
        f" {warm_searches} search (target: 0 bytes, 1 search)",
    ]


def _day(offset: int) -> str:
    from datetime import date, timedelta

    return f"{date(2018, 1, 1) + timedelta(days=offset):%Y-%m-%d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", type=int, default=20)
    parser.add_argument("--area-km", type=float, default=30.0)
    args = parser.parse_args()
    http.ACCEPTED_WAIT_S = 0.05  # the loopback extractor is ready at once

    summary = download_volume(args.dates, args.area_km)
    print("From the recorded ASF metadata (real sizes):")
    print("\n".join(f"  {line}" for line in summary.lines()))
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="acq-bench-")))
        tls = make_tls_files(root / "tls")
        products = ProductFactory(root / "products")
        _noise_and_calibration(products)
        print("\nAgainst the loopback services:")
        for level in ("scene", "burst"):
            print("\n".join(run_level(root, tls, products, level, args.dates, args.area_km)))


def _noise_and_calibration(products: ProductFactory) -> None:
    """tests/acquire_helpers' patch of the served burst XMLs, without pytest's monkeypatch."""
    from acquire_helpers import add_noise_and_calibration

    class Patch:
        @staticmethod
        def setattr(target: Any, name: str, value: Any) -> None:
            setattr(target, name, value)

    add_noise_and_calibration(products, Patch())


if __name__ == "__main__":
    main()
