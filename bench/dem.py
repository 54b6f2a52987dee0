"""Benchmark: provision a 1°x1° COP30 DEM from a loopback OpenTopography.

Prints the wall time of `provision_dems` (download + mosaic + geoid->ellipsoid + ISCE files),
the peak memory (RSS) of the process that ran it, and the ratio of our conversion time to a
plain `gdal_translate` of the same downloaded GeoTIFF to a raw float32 file.
Targets: peak memory bounded (streamed, not the mosaic as float64), ratio <= 2.

    PYTHONPATH=code $VENV/bin/python bench/dem.py

The source is synthetic (3601 x 3601 float32 on the GLO-30 grid), served by
tests/opentopo_server.py in its own process. When PROJ has no EGM2008 grid (Debian), a
stand-in `us_nga_egm08_25.tif` with EGM96 values is written for the timing only; it is said so.
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
    args = parser.parse_args()
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
