"""Benchmark: provision a 1°x1° COP30 DEM from a loopback OpenTopography.

Prints the wall time of `provision_dems` (download + mosaic + geoid->ellipsoid + ISCE files),
the peak memory (RSS) of the process that ran it, and the ratio of our conversion time to a
plain `gdal_translate` of the same downloaded GeoTIFF to a raw float32 file.
Targets: peak memory bounded (streamed, not the mosaic as float64), ratio <= 2.

    PYTHONPATH=code $VENV/bin/python bench/dem.py

The source is synthetic (3601 x 3601 float32 on the GLO-30 grid), served by
tests/opentopo_server.py in its own process. When PROJ has no EGM2008 grid (Debian), a
stand-in `us_nga_egm08_25.tif` with EGM96 values is written for the timing only; it is said so.

    PYTHONPATH=code $VENV/bin/python bench/dem.py --sources

compares the two DEM sources instead: for a 0.3° and a 2° box, the wall time of
`provision_dems` and the bytes it downloaded, from the loopback OpenTopography (one GeoTIFF per
request) and from the loopback Copernicus bucket (tests/copernicus_server.py: full-size 1°
GLO-30-format COG tiles, range requests; only the windows are read). Both serve the same smooth
synthetic heights; loopback, so the times are CPU and protocol, not network.
"""

from __future__ import annotations

import multiprocessing
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "code"), str(REPO / "tests")]

KEY = "bench-opentopo-key-0001"
REPEATS = 3


def rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def standin_egm2008(folder: Path, box: tuple[float, float, float, float]) -> Path:
    """A 2.5' grid around `box` named like EGM2008's, filled with EGM96 values from PROJ."""
    import numpy as np
    from osgeo import gdal, osr

    from insar_pipeline.dem.convert import find_geoid_grid

    egm96 = find_geoid_grid("EGM96")
    step = 2.5 / 60
    lats = np.arange(box[1] + 1, box[0] - 1 - step, -step)
    lons = np.arange(box[2] - 1, box[3] + 1 + step, step)
    options = osr.CoordinateTransformationOptions()
    options.SetOperation(
        "+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad "
        f"+step +proj=vgridshift +grids={egm96} +multiplier=1 "
        "+step +proj=unitconvert +xy_in=rad +xy_out=deg"
    )
    transform = osr.CoordinateTransformation(None, None, options)
    values = np.array(
        [p[2] for p in transform.TransformPoints([(x, y, 0.0) for y in lats for x in lons])]
    )
    path = folder / "us_nga_egm08_25.tif"
    dataset = gdal.GetDriverByName("GTiff").Create(
        str(path), len(lons), len(lats), 1, gdal.GDT_Float32
    )
    dataset.SetGeoTransform((lons[0] - step / 2, step, 0, lats[0] + step / 2, 0, -step))
    dataset.SetProjection("EPSG:4326")
    dataset.GetRasterBand(1).WriteArray(values.reshape(len(lats), len(lons)).astype("float32"))
    dataset = None
    return path


def child(url: str, data: Path, proj_folder: str | None, keep: Path, queue, box: tuple) -> None:
    """Run provision_dems and the baselines in a fresh process: its own peak RSS."""
    from osgeo import gdal, osr

    from insar_pipeline.dem import convert as dem_convert
    from insar_pipeline.dem import provision as dem
    from insar_pipeline.inputs.config import Settings
    from test_dem_grid import make_pair

    if proj_folder:
        osr.SetPROJSearchPaths([proj_folder, *osr.GetPROJSearchPaths()])
    idle_mb = rss_mb()
    convert_seconds = []
    convert = dem_convert.write_ellipsoid_dem

    def timed(tiles, grid, geoid_grid, raster):
        for tile in tiles:  # keep the tiles (provisioning deletes them) for the baselines
            shutil.copy(tile, keep / tile.name)
        start = time.perf_counter()
        image = convert(tiles, grid, geoid_grid, raster)
        convert_seconds.append(time.perf_counter() - start)
        return image

    dem_convert.write_ellipsoid_dem = timed
    settings = Settings(
        data_dir=data,
        opentopo_url=url,
        opentopo_api_key=KEY,
        dem_type="COP30",
        roi=",".join(map(str, box)),
    )
    south, north, west, east = box
    pair = make_pair("20230203_20230215", south + 0.2, north - 0.2, west + 0.2, east - 0.2)
    start = time.perf_counter()
    path = dem.provision_dems(settings, [pair])[pair.id]
    wall = time.perf_counter() - start
    peak_mb = rss_mb()
    dem_convert.write_ellipsoid_dem = convert

    tiles = sorted(keep.glob("*.tif"))
    [plan] = dem.plan_dems(settings, [pair])
    grid = dem.grid_around(plan.bbox, 1)
    geoid_grid = dem_convert.find_geoid_grid("EGM2008")
    ours, translate_api, translate_cli = [], [], []
    for repeat in range(REPEATS):
        start = time.perf_counter()
        convert(tiles, grid, geoid_grid, keep / f"again{repeat}.dem.wgs84")
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        gdal.Translate(
            str(keep / f"plain{repeat}.raw"),
            str(tiles[0]),
            format="ENVI",
            outputType=gdal.GDT_Float32,
        )
        translate_api.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run(
            [
                "gdal_translate",
                "-q",
                "-of",
                "ENVI",
                "-ot",
                "Float32",
                str(tiles[0]),
                str(keep / f"cli{repeat}.raw"),
            ],
            check=True,
        )
        translate_cli.append(time.perf_counter() - start)
    queue.put({
        "path": str(path), "size": path.stat().st_size, "tiles": len(tiles), "wall": wall,
        "convert_first": convert_seconds[0], "ours": min(ours), "translate_api": min(translate_api),
        "translate_cli": min(translate_cli), "idle_mb": idle_mb, "peak_mb": peak_mb,
    })  # fmt: skip


def main() -> int:
    import argparse

    from osgeo import gdal

    from insar_pipeline.dem.convert import find_geoid_grid
    from opentopo_server import synthetic_source

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--degrees", type=int, default=1, help="box side (default 1)")
    parser.add_argument(
        "--sources", action="store_true", help="compare OpenTopography and the Copernicus bucket"
    )
    args = parser.parse_args()
    if args.sources:
        return compare_sources()
    box = (34.0, 34.0 + args.degrees, -118.0, -118.0 + args.degrees)
    with tempfile.TemporaryDirectory(prefix="bench-dem-") as folder:
        work = Path(folder)
        start = time.perf_counter()
        south, north, west, east = box
        source = synthetic_source(
            work / "source.tif", south - 0.05, north + 0.05, west - 0.05, east + 0.05
        )
        side = gdal.Open(str(source)).RasterXSize
        print(f"synthetic source {side}^2 px in {time.perf_counter() - start:.1f} s")
        proj_folder = None
        if find_geoid_grid("EGM2008") is None:
            (work / "proj").mkdir()
            standin_egm2008(work / "proj", box)
            proj_folder = str(work / "proj")
            print("PROJ has no EGM2008 grid: timing with a stand-in us_nga_egm08_25.tif")
            print("  (a 2.5' grid of EGM96 values: same work for PROJ, not EGM2008 heights)")
        server = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "opentopo_server.py"), str(source), "--key", KEY],
            stdout=subprocess.PIPE,
            text=True,
            env={"PYTHONPATH": str(REPO / "tests")},
        )
        try:
            url = server.stdout.readline().strip()
            (work / "keep").mkdir()
            context = multiprocessing.get_context("spawn")
            queue = context.Queue()
            arguments = (url, work / "data", proj_folder, work / "keep", queue, box)
            process = context.Process(target=child, args=arguments)
            process.start()
            result = queue.get(timeout=600)
            process.join(timeout=60)
        finally:
            server.terminate()
            server.wait(timeout=10)
    report(result)
    return 0


SOURCE_BOXES = ((0.3, (34.35, 34.65, -117.65, -117.35)), (2.0, (34.2, 36.2, -117.8, -115.8)))


def _heights(lats, lons):
    import numpy as np

    return (
        800
        + 600 * np.sin(np.radians(lats)[:, None] * 90) * np.cos(np.radians(lons)[None, :] * 70)
        + 3 * np.sin(lons[None, :] * 2520 + lats[:, None] * 900)
    ).astype(np.float32)


def _bucket_tiles(folder: Path, boxes) -> int:
    import numpy as np

    from copernicus_server import make_cog_tile
    from insar_pipeline.dem import copernicus
    from insar_pipeline.dem.grid import grid_around
    from insar_pipeline.geo import BBox

    made = set()
    for _, box in boxes:
        for tile in copernicus.tiles_for(grid_around(BBox(*box), 1)):
            if (tile.lat, tile.lon) in made:
                continue
            lats = tile.lat + 1 - np.arange(3600) / 3600
            lons = tile.lon + np.arange(3600) / 3600
            make_cog_tile(folder, tile.lat, tile.lon, _heights(lats, lons), overviews=True)
            made.add((tile.lat, tile.lon))
    return len(made)


def _opentopo_source(path: Path, box) -> Path:
    import numpy as np
    from osgeo import gdal

    south, north, west, east = box[0] - 0.05, box[1] + 0.05, box[2] - 0.05, box[3] + 0.05
    step = 1 / 3600
    first_lat, first_lon = round(north * 3600) / 3600, round(west * 3600) / 3600
    width, length = round((east - west) * 3600) + 1, round((north - south) * 3600) + 1
    dataset = gdal.GetDriverByName("GTiff").Create(
        str(path), width, length, 1, gdal.GDT_Float32, ["COMPRESS=DEFLATE", "TILED=YES"]
    )
    dataset.SetGeoTransform((first_lon - step / 2, step, 0, first_lat + step / 2, 0, -step))
    dataset.SetProjection("EPSG:4326")
    lons = first_lon + np.arange(width) * step
    for first in range(0, length, 512):
        count = min(512, length - first)
        lats = first_lat - (first + np.arange(count)) * step
        dataset.GetRasterBand(1).WriteArray(_heights(lats, lons), 0, first)
    dataset = None
    return path


def _serve(script: str, *arguments: str) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / script), *arguments],
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(REPO / "tests")},
    )
    return server, server.stdout.readline().strip()


def _provision(settings, box) -> tuple[float, int, int]:
    from insar_pipeline.dem import provision as dem
    from test_dem_grid import make_pair

    south, north, west, east = box
    pair = make_pair("20230203_20230215", south + 0.05, north - 0.05, west + 0.05, east - 0.05)
    downloads = []
    start = time.perf_counter()
    dem.provision_dems(settings, [pair], downloads.append)
    wall = time.perf_counter() - start
    return wall, sum(d.bytes for d in downloads), len(downloads)


def compare_sources() -> int:
    import json
    import urllib.request

    from osgeo import osr

    from insar_pipeline.dem import copernicus
    from insar_pipeline.dem.convert import find_geoid_grid
    from insar_pipeline.dem.grid import grid_around
    from insar_pipeline.geo import BBox
    from insar_pipeline.inputs.config import Settings

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-dem-sources-") as folder:
        work = Path(folder)
        if find_geoid_grid("EGM2008") is None:
            (work / "proj").mkdir()
            standin_egm2008(work / "proj", (34.0, 36.5, -118.0, -115.5))
            osr.SetPROJSearchPaths([str(work / "proj"), *osr.GetPROJSearchPaths()])
            print("PROJ has no EGM2008 grid: timing with a stand-in us_nga_egm08_25.tif")
        start = time.perf_counter()
        count = _bucket_tiles(work / "bucket", SOURCE_BOXES)
        print(f"{count} bucket tiles (3600^2 Float32 COG) in {time.perf_counter() - start:.1f} s")
        sizes = sorted(path.stat().st_size for path in (work / "bucket").rglob("*.tif"))
        print(f"  tile files {sizes[0] / 1e6:.1f} to {sizes[-1] / 1e6:.1f} MB")
        bucket, bucket_url = _serve("copernicus_server.py", str(work / "bucket"))
        try:
            for side, box in SOURCE_BOXES:
                source = _opentopo_source(work / f"source_{side}.tif", box)
                server, url = _serve("opentopo_server.py", str(source), "--key", KEY)
                try:
                    roi = ",".join(map(str, box))
                    ot = Settings(
                        data_dir=work / f"ot_{side}", opentopo_url=url, opentopo_api_key=KEY,
                        roi=roi,
                    )  # fmt: skip
                    ot_wall, ot_bytes, ot_requests = _provision(ot, box)
                finally:
                    server.terminate()
                    server.wait(timeout=10)
                with urllib.request.urlopen(f"{bucket_url}/_stats") as answer:
                    before = json.load(answer)
                cop = Settings(
                    data_dir=work / f"cop_{side}", copernicus_dem_url=bucket_url, roi=roi
                )
                cop_wall, cop_bytes, cop_tiles = _provision(cop, box)
                with urllib.request.urlopen(f"{bucket_url}/_stats") as answer:
                    after = json.load(answer)
                rows.append({
                    "side": side, "ot_wall": ot_wall, "ot_mb": ot_bytes / 1e6,
                    "ot_requests": ot_requests, "cop_wall": cop_wall, "cop_mb": cop_bytes / 1e6,
                    "tiles": cop_tiles, "requests": after["requests"] - before["requests"],
                    "sent_mb": (after["bytes"] - before["bytes"]) / 1e6,
                    "estimate_mb": copernicus.estimate_read_bytes(grid_around(BBox(*box), 1)) / 1e6,
                    "whole_mb": sizes[-1] * cop_tiles / 1e6,
                })  # fmt: skip
        finally:
            bucket.terminate()
            bucket.wait(timeout=10)
    for row in rows:
        print(f"{row['side']}° box:")
        print("  OpenTopography    {ot_wall:6.2f} s {ot_mb:7.1f} MB in {ot_requests} request(s)"
              .format(**row))  # fmt: skip
        print("  Copernicus bucket {cop_wall:6.2f} s {cop_mb:7.1f} MB from {tiles} tile(s) in"
              " {requests} HTTP requests".format(**row))  # fmt: skip
        print("    (server sent {sent_mb:.1f} MB; plan's estimate {estimate_mb:.1f} MB;"
              " the whole tiles ~{whole_mb:.0f} MB)".format(**row))  # fmt: skip
    return 0


def report(result: dict) -> None:
    size_mb = result["size"] / 2**20
    name = Path(result["path"]).name
    ours = result["ours"]
    print(f"DEM {name}: {size_mb:.0f} MB float32, {result['tiles']} request(s)")
    print(f"provision_dems wall time      {result['wall']:.2f} s (download, convert, ISCE files)")
    print(f"conversion (first, in run)    {result['convert_first']:.2f} s")
    print(f"conversion (best of {REPEATS})        {ours:.2f} s")
    print(f"gdal.Translate -> raw (best)  {result['translate_api']:.2f} s")
    print(f"gdal_translate CLI (best)     {result['translate_cli']:.2f} s")
    print(f"ratio conversion / gdal.Translate   {ours / result['translate_api']:.2f} (target <= 2)")
    print(f"ratio conversion / gdal_translate   {ours / result['translate_cli']:.2f}")
    idle = result["idle_mb"]
    print(f"peak RSS {result['peak_mb']:.0f} MB; python + GDAL + numpy idle {idle:.0f} MB;")
    print(f"  the DEM as float64 would be {2 * size_mb:.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
