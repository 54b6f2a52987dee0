"""Geoid -> ellipsoid conversion with PROJ's grids, checked against real GLO-30 rasters.

`los_angeles_dem_geoid.tif` and `los_angeles_dem_ellipsoid.tif` (dem-stitcher) are the same
GLO-30 area in EGM2008 geoid heights and in WGS84 ellipsoid heights; dem-stitcher converted it
with a 1' EGM2008 raster. Debian's proj-data has no EGM2008 grid, so:
- the EGM96 path (NASADEM/SRTM types) is compared with it: the two geoid models differ by
  0.61-0.75 m over this area, so our heights must sit 0.6-0.78 m above the file's, everywhere
  (the EGM96 geoid lies higher here);
- the EGM2008 path runs on a stand-in `us_nga_egm08_25.tif` built from the very undulations
  of the real pair (ellipsoid - geoid, every 10"): what it checks is our use of the grid (name,
  sign, pixel registration, interpolation), to 1 mm;
- when the real EGM2008 grid is installed (the Docker image), the comparison runs on it too,
  to 0.1 m (its 2.5' grid against dem-stitcher's 1' raster).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr

from dem_fixtures import KEY, write_egm2008_stand_in
from insar_pipeline import _http as http
from insar_pipeline.dem import convert as dem_convert
from insar_pipeline.dem import provision as dem
from insar_pipeline.dem.grid import DemGrid
from insar_pipeline.errors import ProvisioningError
from insar_pipeline.inputs.config import Settings
from insar_pipeline.isce_image import read_xml
from opentopo_server import OpenTopoEmulator
from test_dem_grid import make_pair

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "dem"
GEOID_TIF = REALDATA / "los_angeles_dem_geoid.tif"
ELLIPSOID_TIF = REALDATA / "los_angeles_dem_ellipsoid.tif"
# Inside the real rasters (which cover 33.95-34.05, -118.05 - -117.95, centres on whole seconds).
ROI = "33.96,34.04,-118.04,-117.96"
OFFSET = 36  # pixels from the real rasters' first pixel to the ROI's

needs_realdata = pytest.mark.skipif(
    not (GEOID_TIF.is_file() and ELLIPSOID_TIF.is_file()),
    reason=f"real GLO-30 rasters absent from {REALDATA}",
)


@pytest.fixture
def proj_paths():
    """Set PROJ's search path for one test, and restore it."""
    previous = osr.GetPROJSearchPaths()
    yield lambda *folders: osr.SetPROJSearchPaths([str(folder) for folder in folders])
    osr.SetPROJSearchPaths(previous)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(http, "BACKOFF_BASE_S", 0.01)


def real(path: Path) -> np.ndarray:
    return gdal.Open(str(path)).ReadAsArray().astype(np.float64)


def provision_la(tmp_path: Path, dem_type: str) -> tuple[np.ndarray, OpenTopoEmulator]:
    pair = make_pair("20230203_20230215", 33.97, 34.03, -118.03, -117.97)
    with OpenTopoEmulator(GEOID_TIF, api_key=KEY) as server:
        settings = Settings(
            data_dir=tmp_path,
            opentopo_url=server.url,
            opentopo_api_key=KEY,
            dem_type=dem_type,
            roi=ROI,
        )
        path = dem.provision_dems(settings, [pair])[pair.id]
    image = read_xml(path.with_name(path.name + ".xml")).dem_image()
    assert (image.first_longitude, image.first_latitude, image.width) == (-118.04, 34.04, 289)
    return np.fromfile(path, dtype="<f4").reshape(image.length, image.width), server


def window(array: np.ndarray) -> np.ndarray:
    return array[OFFSET : OFFSET + 289, OFFSET : OFFSET + 289]


@needs_realdata
def test_egm96_conversion_matches_the_real_ellipsoid_dem_up_to_the_geoid_model(tmp_path):
    if dem_convert.find_geoid_grid("EGM96") is None:
        pytest.skip("PROJ's EGM96 grid is not installed")
    heights, server = provision_la(tmp_path, "NASADEM")
    assert len(server.requests) == 1
    difference = heights - window(real(ELLIPSOID_TIF))
    # EGM96 and EGM2008 undulations differ by 0.61-0.75 m here (EGM96 is higher): a wrong
    # sign would be off by ~70 m, a skipped correction by ~35 m, a shifted grid by metres.
    # Measured: 0.639 to 0.740 m, mean 0.705 m.
    assert 0.6 < difference.min() and difference.max() < 0.78
    assert difference.std() < 0.03


@needs_realdata
def test_egm2008_conversion_with_a_stand_in_grid_matches_to_a_centimetre(tmp_path, proj_paths):
    undulation = real(ELLIPSOID_TIF) - real(GEOID_TIF)  # dem-stitcher's EGM2008, per pixel
    grids = write_egm2008_stand_in(tmp_path / "proj", undulation).parent
    proj_paths(grids, *osr.GetPROJSearchPaths())
    assert dem_convert.find_geoid_grid("EGM2008") == grids / "us_nga_egm08_25.tif"
    heights, _ = provision_la(tmp_path / "data", "COP30")
    difference = heights - window(real(ELLIPSOID_TIF))
    assert np.abs(difference).max() < 0.001  # measured: 0.27 mm


@needs_realdata
@pytest.mark.skipif(
    dem_convert.find_geoid_grid("EGM2008") is None, reason="PROJ's EGM2008 grid not installed"
)
def test_egm2008_conversion_with_the_installed_grid(tmp_path):
    heights, _ = provision_la(tmp_path, "COP30")
    assert np.abs(heights - window(real(ELLIPSOID_TIF))).max() < 0.1


def test_without_the_egm2008_grid_cop30_fails_naming_it(tmp_path, proj_paths, source_tif):
    # A PROJ search path holding only proj.db: no geoid grid at all, as on a bare system.
    bare = tmp_path / "proj"
    bare.mkdir()
    proj_db = next(Path(folder) / "proj.db" for folder in osr.GetPROJSearchPaths()
                   if (Path(folder) / "proj.db").is_file())  # fmt: skip
    (bare / "proj.db").symlink_to(proj_db)
    proj_paths(bare)
    assert dem_convert.find_geoid_grid("EGM2008") is None
    pair = make_pair("20230203_20230215", 33.97, 34.03, -118.03, -117.97)
    with OpenTopoEmulator(source_tif, api_key=KEY) as server:
        settings = Settings(data_dir=tmp_path, opentopo_url=server.url, opentopo_api_key=KEY)
        with pytest.raises(ProvisioningError) as caught:
            dem.provision_dems(settings, [pair])
        assert server.requests == []
    message = str(caught.value)
    assert (
        "DEM_TYPE=COP30" in message
        and "EGM2008 grid us_nga_egm08_25.tif is not installed" in message
    )
    assert str(bare) in message and "projsync --file us_nga_egm08_25.tif" in message
    assert "SRTMGL1_E" in message


@pytest.fixture
def source_tif(tmp_path) -> Path:
    from opentopo_server import synthetic_source

    return synthetic_source(tmp_path / "source.tif", 33.9, 34.1, -118.1, -117.9)


def test_the_lattice_reproduces_projs_value_at_every_pixel():
    grid_file = dem_convert.find_geoid_grid("EGM96")
    if grid_file is None:
        pytest.skip("PROJ's EGM96 grid is not installed")
    # A grid that starts off the 30" lattice, over a 15' EGM96 cell boundary (34.25, -117.75).
    grid = DemGrid(123293, 123611, -424111, -423793, 1)
    undulation = dem_convert.GeoidUndulation(grid_file, grid)
    ours = np.vstack(
        [
            undulation.rows(first, min(100, grid.length - first))
            for first in range(0, grid.length, 100)
        ]
    )
    options = osr.CoordinateTransformationOptions()
    options.SetOperation(f"+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad "
                         f"+step +proj=vgridshift +grids={grid_file} +multiplier=1 "
                         f"+step +proj=unitconvert +xy_in=rad +xy_out=deg")  # fmt: skip
    transform = osr.CoordinateTransformation(None, None, options)
    rows, columns = np.meshgrid(
        np.arange(0, grid.length, 7), np.arange(0, grid.width, 5), indexing="ij"
    )
    points = [
        ((grid.west + c) / 3600, (grid.north - r) / 3600, 0.0)
        for r, c in zip(rows.ravel(), columns.ravel(), strict=True)
    ]
    direct = np.array([point[2] for point in transform.TransformPoints(points)]).reshape(rows.shape)
    assert np.abs(ours[rows, columns] - direct).max() < 1e-4  # float32 rounding only
    assert -40 < direct.min() < direct.max() < -30


def test_a_grid_file_proj_cannot_read_is_a_provisioning_error(tmp_path):
    broken = tmp_path / "us_nga_egm08_25.tif"
    broken.write_text("not a grid")
    with pytest.raises(ProvisioningError, match="us_nga_egm08_25.tif"):
        undulation = dem_convert.GeoidUndulation(broken, DemGrid(0, 3600, 0, 3600, 1))
        undulation.rows(0, 10)
