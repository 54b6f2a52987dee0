"""The Copernicus bucket source: GLO-30 windows through /vsicurl/, offline, from real GLO-30 data.

The loopback bucket (tests/copernicus_server.py) serves full-size tiles in the bucket's format
(3600 x 3600 Float32 COGs, 1024 px blocks, pixel-is-point, named as the bucket names them),
built from the real GLO-30 heights of `../shared/realdata/dem/los_angeles_dem_geoid.tif`
(dem-stitcher's 0.1° crop around 34°N 118°W, EGM2008 geoid heights): each tile holds the real
pixels where the crop covers it, and the crop mirrored back and forth elsewhere, so the four
tiles around 34°N 118°W carry the real heights at their true places. The same raster is what
tests/opentopo_server.py serves for the OpenTopography path, so both sources must give the same
DEM. The geoid grid is the stand-in EGM2008 of test_dem_convert.py (the real pair's own
undulations; Debian's proj-data has no EGM2008), or PROJ's EGM96 where only the grid's
use is checked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr

from copernicus_server import BucketEmulator, make_cog_tile, tile_columns, tile_key
from dem_fixtures import KEY, write_egm2008_stand_in
from insar_pipeline.dem import convert as dem_convert
from insar_pipeline.dem import copernicus
from insar_pipeline.dem import provision as dem
from insar_pipeline.dem.grid import DemGrid, grid_around
from insar_pipeline.download import Download
from insar_pipeline.errors import CredentialError, InputError, ProvisioningError, ServiceError
from insar_pipeline.geo import BBox
from insar_pipeline.inputs.config import Settings
from insar_pipeline.isce_image import read_xml
from opentopo_server import OpenTopoEmulator
from test_dem_grid import make_pair

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "dem"
GEOID_TIF = REALDATA / "los_angeles_dem_geoid.tif"
ELLIPSOID_TIF = REALDATA / "los_angeles_dem_ellipsoid.tif"
ROI = "33.96,34.04,-118.04,-117.96"  # across the corner of four tiles
OFFSET = 36  # pixels from the real rasters' first pixel to the ROI's
LA_TILES = ((34, -119), (34, -118), (33, -119), (33, -118))

pytestmark = pytest.mark.skipif(
    not (GEOID_TIF.is_file() and ELLIPSOID_TIF.is_file()),
    reason=f"real GLO-30 rasters absent from {REALDATA} (see its PROVENANCE.md)",
)


def real(path: Path) -> np.ndarray:
    return gdal.Open(str(path)).ReadAsArray().astype(np.float64)


def _mirror(index: np.ndarray, size: int) -> np.ndarray:
    index = np.mod(index, 2 * size)
    return np.where(index < size, index, 2 * size - 1 - index)


def real_tile(lat: int, lon: int, columns: int = 3600) -> np.ndarray:
    """The tile (lat, lon)'s heights: the real crop at its place, mirrored around it."""
    crop = real(GEOID_TIF).astype(np.float32)  # centres 34.05 .. 33.95, -118.05 .. -117.95
    rows = np.arange(3600)  # tile row r: lat + 1 - r"; crop row k: 34.05° - k"
    row_index = round((34.05 - (lat + 1)) * 3600) + rows
    column_index = round((lon + 118.05) * 3600) + np.arange(columns) * 3600 // columns
    return crop[np.ix_(_mirror(row_index, crop.shape[0]), _mirror(column_index, crop.shape[1]))]


@pytest.fixture(scope="module")
def bucket_dir(tmp_path_factory) -> Path:
    """The four tiles around 34°N 118°W, and two on either side of the antimeridian."""
    folder = tmp_path_factory.mktemp("bucket")
    for lat, lon in (*LA_TILES, (33, 179), (33, -180)):
        # One with the bucket's internal overviews, as the real tiles have: reads skip them.
        make_cog_tile(folder, lat, lon, real_tile(lat, lon), overviews=(lat, lon) == (33, -118))
    return folder


@pytest.fixture
def bucket(bucket_dir):
    with BucketEmulator(bucket_dir) as emulator:
        yield emulator


@pytest.fixture
def proj_paths():
    previous = osr.GetPROJSearchPaths()
    yield lambda *folders: osr.SetPROJSearchPaths([str(folder) for folder in folders])
    osr.SetPROJSearchPaths(previous)


@pytest.fixture
def egm2008(tmp_path, proj_paths) -> Path:
    """PROJ's EGM2008 grid: the installed one, or a stand-in from the real pair's undulations."""
    installed = dem_convert.find_geoid_grid("EGM2008")
    if installed is not None:
        return installed
    grid = write_egm2008_stand_in(tmp_path / "proj", real(ELLIPSOID_TIF) - real(GEOID_TIF))
    proj_paths(grid.parent, *osr.GetPROJSearchPaths())
    return grid


@pytest.fixture(autouse=True)
def fast_gdal_retries(monkeypatch):
    monkeypatch.setattr(copernicus, "HTTP_MAX_RETRY", 1)
    monkeypatch.setattr(copernicus, "HTTP_RETRY_DELAY_S", 0.01)


def bucket_settings(data: Path, url: str, **changes) -> Settings:
    return Settings(data_dir=data, copernicus_dem_url=url, roi=ROI, **changes)


PAIR = make_pair("20230203_20230215", 33.97, 34.03, -118.03, -117.97)


def dem_of(path: Path) -> tuple[np.ndarray, object]:
    image = read_xml(path.with_name(path.name + ".xml")).dem_image()
    return np.fromfile(path, dtype="<f4").reshape(image.length, image.width), image


def test_tiles_are_named_and_chosen_as_the_bucket_holds_them():
    assert copernicus.tile_stem(51, -130) == "Copernicus_DSM_COG_10_N51_00_W130_00_DEM"
    assert copernicus.tile_stem(-1, 5) == "Copernicus_DSM_COG_10_S01_00_E005_00_DEM"
    assert copernicus.BucketTile(51, -130, 0).url("http://b/") == (
        "http://b/Copernicus_DSM_COG_10_N51_00_W130_00_DEM/Copernicus_DSM_COG_10_N51_00_W130_00_DEM.tif"
    )
    assert tile_key(51, -130) == copernicus.BucketTile(51, -130, 0).key
    # Centres lat in (S, S+1], lon in [W, W+1): the row on 34° is tile N33's top row.
    grid = DemGrid(33 * 3600 + 10, 34 * 3600, -118 * 3600, -118 * 3600 + 10, 1)
    assert copernicus.tiles_for(grid) == [copernicus.BucketTile(33, -118, 0)]
    grid = DemGrid(33 * 3600, 34 * 3600 + 1, -118 * 3600 - 1, -118 * 3600, 1)
    assert [(t.lat, t.lon) for t in copernicus.tiles_for(grid)] == [
        (34, -119), (34, -118), (33, -119), (33, -118), (32, -119), (32, -118),
    ]  # fmt: skip
    # Across the antimeridian: continuous longitudes, the far tiles named in [-180, 180).
    grid = DemGrid(122040, 122364, 179 * 3600 + 3000, 180 * 3600 + 300, 1)
    assert copernicus.tiles_for(grid) == [
        copernicus.BucketTile(33, 179, 0),
        copernicus.BucketTile(33, -180, 360),
    ]
    assert [copernicus.tile_columns(lat) for lat in (0, 49, 50, -51, 60, 70, 80, 85, -90)] == [
        3600, 3600, 2400, 2400, 1800, 1200, 720, 360, 360,
    ]  # fmt: skip
    assert [tile_columns(lat) for lat in (49, 50, 85)] == [3600, 2400, 360]


def test_test_tiles_have_the_real_tiles_registration(bucket_dir):
    # los_angeles_tile_0.tif is a crop of the real tile N33 W118 from its north-west corner:
    # pixel-is-point, origin half a pixel west and north of 34°N 118°W. Ours must match it,
    # pixel for pixel where the real crop of the geoid raster covers it.
    crop_path = REALDATA / "los_angeles_tile_0.tif"
    if not crop_path.is_file():
        pytest.skip(f"{crop_path} is absent")
    crop = gdal.Open(str(crop_path))
    ours = gdal.Open(str(bucket_dir / tile_key(33, -118)))
    assert crop.GetMetadataItem("AREA_OR_POINT") == ours.GetMetadataItem("AREA_OR_POINT")
    assert crop.GetMetadataItem("AREA_OR_POINT") == "Point"
    assert ours.GetGeoTransform() == pytest.approx(crop.GetGeoTransform(), abs=1e-12)
    assert ours.GetGeoTransform()[0] == pytest.approx(-118 - 0.5 / 3600, abs=1e-12)
    assert (ours.RasterXSize, ours.RasterYSize) == (3600, 3600)
    assert ours.GetRasterBand(1).GetBlockSize() == [1024, 1024]
    assert np.array_equal(ours.ReadAsArray(0, 0, 181, 181), crop.ReadAsArray(0, 0, 181, 181))


def test_the_bucket_dem_equals_the_opentopography_dem_on_the_same_box(tmp_path, bucket, egm2008):
    downloads: list[Download] = []
    settings = bucket_settings(tmp_path / "cop", bucket.url)
    [plan] = dem.plan_dems(settings, [PAIR])
    assert plan.source == dem.COPERNICUS and len(plan.tiles) == 4 and not plan.cached
    path = dem.provision_dems(settings, [PAIR], downloads.append)[PAIR.id]
    ours, image = dem_of(path)
    assert (image.first_longitude, image.first_latitude) == (-118.04, 34.04)
    assert (image.width, image.length) == (289, 289)
    assert image.delta_longitude == pytest.approx(1 / 3600, abs=1e-15)
    assert image.delta_latitude == pytest.approx(-1 / 3600, abs=1e-15)

    with OpenTopoEmulator(GEOID_TIF, api_key=KEY) as server:
        opentopo = Settings(
            data_dir=tmp_path / "ot", opentopo_url=server.url, opentopo_api_key=KEY, roi=ROI
        )
        assert dem.plan_dems(opentopo, [PAIR])[0].source == dem.OPENTOPOGRAPHY
        reference, reference_image = dem_of(dem.provision_dems(opentopo, [PAIR])[PAIR.id])
    assert reference_image == image
    # Same GLO-30 pixels, same geoid grid, same conversion: the same DEM, to the bit.
    assert np.array_equal(ours, reference)
    expected = real(ELLIPSOID_TIF)[OFFSET : OFFSET + 289, OFFSET : OFFSET + 289]
    tolerance = 0.001 if egm2008.parent.name == "proj" else 0.1  # stand-in grid, or PROJ's
    assert np.abs(ours - expected).max() < tolerance

    # Four tiles, each read through a few range requests, never whole; one record each.
    assert sorted(d.name.rsplit(" ", 1)[-1] for d in downloads) == sorted(
        tile_key(lat, lon).split("/")[0] for lat, lon in LA_TILES
    )
    assert all(d.kind == "dem" and d.path == path and d.bytes > 0 for d in downloads)
    gets = [r for r in bucket.requests if r.method == "GET"]
    assert gets and all(r.status == 206 and r.range for r in gets)
    assert {r.key for r in bucket.requests} == {tile_key(lat, lon) for lat, lon in LA_TILES}
    assert sum(d.bytes for d in downloads) == bucket.bytes_sent
    # The tiles' scratch files are gone once the DEM is complete.
    assert not (settings.dem_dir / dem.TILES_DIR).exists()


def test_a_small_box_reads_blocks_not_whole_tiles(tmp_path, bucket, bucket_dir):
    # 0.3° inside tile N33 W118: its header and the blocks under the box, nothing else.
    grid = grid_around(BBox(33.3, 33.6, -117.7, -117.4), 1)
    reads: list[copernicus.TileRead] = []
    [piece] = copernicus.read_pieces(bucket.url, grid, tmp_path / "pieces", reads.append)
    tile_path = bucket_dir / tile_key(33, -118)
    assert [(r.present, r.bytes) for r in reads] == [(True, bucket.bytes_sent)]
    assert bucket.bytes_sent < tile_path.stat().st_size / 3
    assert len(bucket.requests) <= 6  # measured: HEAD, header, two ranges of merged blocks
    assert all(r.range for r in bucket.requests if r.method == "GET")
    estimate = copernicus.estimate_read_bytes(grid)
    assert 0.3 < bucket.bytes_sent / estimate < 3  # what `plan` says is the right size
    # Registration: the piece's pixels are the tile's, exactly, at the same centres.
    dataset = gdal.Open(str(piece))
    x0, dx, _, y0, _, dy = dataset.GetGeoTransform()
    assert x0 + dx / 2 == pytest.approx(-117.7, abs=1e-9)
    assert y0 + dy / 2 == pytest.approx(33.6, abs=1e-9)
    tile = gdal.Open(str(tile_path)).ReadAsArray()
    first_row, first_column = round((34 - 33.6) * 3600), round((118 - 117.7) * 3600)
    window = tile[first_row : first_row + grid.length, first_column : first_column + grid.width]
    assert np.array_equal(dataset.ReadAsArray(), window)


def test_a_tile_the_bucket_lacks_is_sea_level(tmp_path, bucket_dir, egm2008):
    # The bucket without N34 W118 (the open sea does not exist there as a tile): HTTP 404.
    folder = tmp_path / "bucket"
    for lat, lon in LA_TILES:
        if (lat, lon) != (34, -118):
            target = folder / tile_key(lat, lon)
            target.parent.mkdir(parents=True)
            target.symlink_to(bucket_dir / tile_key(lat, lon))
    with BucketEmulator(folder) as bucket:
        settings = bucket_settings(tmp_path / "data", bucket.url)
        heights, image = dem_of(dem.provision_dems(settings, [PAIR])[PAIR.id])
    missing = [r for r in bucket.requests if r.key == tile_key(34, -118)]
    assert [r.status for r in missing] == [404]
    grid = grid_around(BBox.parse(ROI), 1)
    undulation = dem_convert.GeoidUndulation(egm2008, grid).rows(0, grid.length)
    # Rows above 34° and columns from 118°W eastward: 0 m above the geoid, i.e. the geoid's
    # own ellipsoid height N, not a hole (0) nor nodata.
    sea = (slice(0, 144), slice(144, None))
    assert np.abs(heights[sea] - undulation[sea]).max() < 1e-4
    assert -40 < heights[sea].min() < heights[sea].max() < -30  # N here is about -35 m
    land = real(ELLIPSOID_TIF)[OFFSET : OFFSET + 289, OFFSET : OFFSET + 289]
    tolerance = 0.001 if egm2008.parent.name == "proj" else 0.1
    assert np.abs(heights[144:] - land[144:]).max() < tolerance
    assert np.abs(heights[:, :144] - land[:, :144]).max() < tolerance


def test_a_box_across_the_antimeridian_is_read_from_both_sides(tmp_path, bucket, bucket_dir):
    egm96 = dem_convert.find_geoid_grid("EGM96")
    if egm96 is None:
        pytest.skip("PROJ's EGM96 grid is not installed")
    # 179.9°E to 180.1° (= 179.9°W), 33.9° to 33.99°N: continuous longitudes past 180°.
    grid = DemGrid(122040, 122364, 647640, 648360, 1)
    pieces = copernicus.read_pieces(bucket.url, grid, tmp_path / "pieces")
    requested = {r.key for r in bucket.requests}
    assert requested == {tile_key(33, 179), tile_key(33, -180)}
    raster = tmp_path / "am.dem.wgs84"
    image = dem_convert.write_ellipsoid_dem(pieces, grid, egm96, raster)
    assert (image.first_longitude, image.width, image.length) == (179.9, 721, 325)
    rows = slice(round((34 - 33.99) * 3600), round((34 - 33.99) * 3600) + 325)
    east = gdal.Open(str(bucket_dir / tile_key(33, 179))).ReadAsArray()[rows, 3240:]
    west = gdal.Open(str(bucket_dir / tile_key(33, -180))).ReadAsArray()[rows, :361]
    expected = np.hstack([east, west])
    heights = np.fromfile(raster, dtype="<f4").reshape(325, 721)
    undulation = heights - expected
    # EGM96 near 34°N 180° is -9.4 to -9.8 m, smooth across the antimeridian (a grid read
    # at unwrapped longitudes past 180° would fail; a shifted tile would jump by metres).
    assert -10 < undulation.min() < undulation.max() < -9
    assert np.abs(np.diff(undulation, axis=1)).max() < 0.01


def test_a_rerun_with_the_dem_cached_makes_no_request(tmp_path, bucket, egm2008):
    settings = bucket_settings(tmp_path, bucket.url)
    first = dem.provision_dems(settings, [PAIR])[PAIR.id]
    count = len(bucket.requests)
    assert count > 0
    [plan] = dem.plan_dems(settings, [PAIR])
    assert plan.cached and plan.path == first
    assert dem.provision_dems(settings, [PAIR])[PAIR.id] == first
    assert len(bucket.requests) == count


def test_an_interrupted_read_keeps_the_finished_bands(tmp_path, bucket, monkeypatch):
    grid = grid_around(BBox(33.9, 34.1, -117.9, -117.8), 1)  # two latitude bands
    folder = tmp_path / "pieces"
    copernicus.read_pieces(bucket.url, grid, folder)
    first = len(bucket.requests)
    (folder / "band_n34.tif").unlink()  # as if the run stopped after the first band
    copernicus.read_pieces(bucket.url, grid, folder)
    assert {r.key for r in bucket.requests[first:]} == {tile_key(34, -118)}


def test_sources_resolve_from_the_settings_and_the_key(tmp_path):
    base = {"data_dir": tmp_path}
    assert dem.dem_source(Settings(**base)) == dem.COPERNICUS
    assert dem.dem_source(Settings(**base, opentopo_api_key=KEY)) == dem.OPENTOPOGRAPHY
    keyed = Settings(**base, opentopo_api_key=KEY, dem_source="copernicus")
    assert dem.dem_source(keyed) == dem.COPERNICUS
    assert dem.dem_source(Settings(**base, dem_source="opentopography")) == dem.OPENTOPOGRAPHY
    # Other DEM types are OpenTopography's: auto without a key still needs one.
    assert dem.dem_source(Settings(**base, dem_type="NASADEM")) == dem.OPENTOPOGRAPHY
    with pytest.raises(InputError, match="DEM_TYPE=COP30 only, not NASADEM"):
        dem.dem_source(Settings(**base, dem_type="NASADEM", dem_source="copernicus"))
    settings = Settings(**base, dem_type="NASADEM", roi=ROI)
    plans = dem.plan_dems(settings, [PAIR])
    [problem] = dem.missing_prerequisites(settings, plans)
    assert "OPENTOPO_API_KEY" in problem
    with pytest.raises(CredentialError):
        dem.provision_dems(settings, [PAIR])


def test_plan_says_the_source_tiles_and_bytes(tmp_path):
    settings = Settings(data_dir=tmp_path, roi="33.5,35.5,-118.5,-117.5")
    [plan] = dem.plan_dems(settings, [make_pair("20230203_20230215", 34, 35, -118.2, -117.8)])
    assert plan.source == dem.COPERNICUS and len(plan.tiles) == 6
    assert plan.tiles[0] == BBox(35, 36, -119, -118)
    assert plan.fetch_summary == (
        f"read from the Copernicus bucket: windows of 6 tile(s), "
        f"about {plan.read_bytes / 1e6:.1f} MB"
    )
    assert 10e6 < plan.read_bytes < 6 * 30e6
    keyed = settings.with_changes(opentopo_api_key=KEY)
    [plan] = dem.plan_dems(keyed, [make_pair("20230203_20230215", 34, 35, -118.2, -117.8)])
    assert plan.fetch_summary.startswith("download from OpenTopography in ")


def test_an_unreachable_bucket_is_a_service_error(tmp_path):
    grid = grid_around(BBox(33.3, 33.6, -117.7, -117.4), 1)
    with pytest.raises(ServiceError, match="COPERNICUS_DEM_URL"):
        copernicus.read_pieces("http://127.0.0.1:9", grid, tmp_path / "pieces")


@pytest.mark.parametrize(
    ("status", "error", "words"),
    [(503, ServiceError, "try again later"), (403, ProvisioningError, "refused")],
)
def test_a_failing_bucket_is_an_error_not_sea(tmp_path, bucket, status, error, words):
    grid = grid_around(BBox(33.3, 33.6, -117.7, -117.4), 1)
    bucket.errors[tile_key(33, -118)] = status
    with pytest.raises(error, match=words) as caught:
        copernicus.read_pieces(bucket.url, grid, tmp_path / "pieces")
    assert tile_key(33, -118) in str(caught.value)
    assert not list((tmp_path / "pieces").glob("*.tif*"))


def test_high_latitude_tiles_are_resampled_in_longitude_only(tmp_path):
    # N51 W130 (the real pair's coast): 2400 columns of 1.5"; a plane in lon and lat.
    folder = tmp_path / "bucket"
    columns = tile_columns(51)
    lons = -130 + np.arange(columns) / columns
    lats = 52 - np.arange(3600) / 3600
    plane = (1000 * (lons[None, :] + 130) + 500 * (lats[:, None] - 51)).astype(np.float32)
    make_cog_tile(folder, 51, -130, plane)
    grid = grid_around(BBox(51.4, 51.5, -129.6, -129.5), 1)
    with BucketEmulator(folder) as bucket:
        [piece] = copernicus.read_pieces(bucket.url, grid, tmp_path / "pieces")
    heights = gdal.Open(str(piece)).ReadAsArray().astype(np.float64)
    grid_lons = grid.west / 3600 + np.arange(grid.width) / 3600
    grid_lats = grid.north / 3600 - np.arange(grid.length) / 3600
    expected = 1000 * (grid_lons[None, :] + 130) + 500 * (grid_lats[:, None] - 51)
    assert np.abs(heights - expected).max() < 0.01  # bilinear is exact on a plane


def test_egm2008_missing_says_how_to_get_it_and_proj_network_fetches_it(
    tmp_path, proj_paths, monkeypatch
):
    bare = tmp_path / "proj"
    bare.mkdir()
    proj_db = next(Path(folder) / "proj.db" for folder in osr.GetPROJSearchPaths()
                   if (Path(folder) / "proj.db").is_file())  # fmt: skip
    (bare / "proj.db").symlink_to(proj_db)
    proj_paths(bare)
    monkeypatch.delenv("PROJ_NETWORK", raising=False)
    previous = osr.GetPROJEnableNetwork()
    osr.SetPROJEnableNetwork(False)
    try:
        assert dem_convert.geoid_grid_to_use("EGM2008") is None
        settings = Settings(data_dir=tmp_path / "data", copernicus_dem_url="http://127.0.0.1:9")
        with pytest.raises(ProvisioningError) as caught:
            dem.provision_dems(settings, [PAIR])  # fails before any request
        message = str(caught.value)
        assert "projsync --file us_nga_egm08_25.tif" in message
        assert "PROJ_NETWORK=ON" in message and "Debian's proj-data lacks it" in message
        monkeypatch.setenv("PROJ_NETWORK", "ON")
        assert dem_convert.geoid_grid_to_use("EGM2008") == Path("us_nga_egm08_25.tif")
        assert osr.GetPROJEnableNetwork()
    finally:
        osr.SetPROJEnableNetwork(previous)


def test_run_without_any_key_gets_its_dem_from_the_bucket(tmp_path, proj_paths):
    """`run` end to end with no OpenTopography key: orbits from the loopback ASF, the COP30 DEM
    from the loopback bucket (a 51°N tile, 1.5" in longitude); the tile reads reach the ledger,
    and a rerun reads nothing again."""
    import shutil
    import sys

    from batch_factory import DOUBLE, ROI, make_batch
    from insar_pipeline.ledger.store import Ledger
    from insar_pipeline.run.driver import run_pipeline
    from orbit_factories import poeorb_name
    from orbit_server import OrbitServer

    if dem_convert.find_geoid_grid("EGM2008") is None:  # a flat stand-in: the run, not N
        folder = tmp_path / "proj"
        folder.mkdir()
        dataset = gdal.GetDriverByName("GTiff").Create(
            str(folder / "us_nga_egm08_25.tif"), 40, 40, 1, gdal.GDT_Float32
        )
        dataset.SetGeoTransform((-128.0, 0.05, 0, 52.5, 0, -0.05))
        dataset.SetProjection("EPSG:4326")
        dataset.GetRasterBand(1).Fill(-18.0)
        dataset = None
        proj_paths(folder, *osr.GetPROJSearchPaths())
    bucket_dir = tmp_path / "bucket"
    columns = tile_columns(51)
    lons = -127 + np.arange(columns) / columns
    lats = 52 - np.arange(3600) / 3600
    heights = 300 + 200 * np.sin(lats[:, None] * 40) * np.cos(lons[None, :] * 30)
    make_cog_tile(bucket_dir, 51, -127, heights.astype(np.float32))
    batch = make_batch(tmp_path / "batch", 2)
    with OrbitServer() as orbits, BucketEmulator(bucket_dir) as bucket:
        orbits.add(*(poeorb_name(name[:3], name.split("_")[5][:8]) for name in batch.scenes))
        settings = orbits.settings(batch.data).with_changes(
            pairs_file=batch.pairs_file, env_file=tmp_path / ".env", workers=2, cores=2,
            memory_total_gb=16.0, roi=ROI, dem_type="COP30", orbit_sources=("asf",),
            opentopo_api_key=None, opentopo_url="http://127.0.0.1:9",
            copernicus_dem_url=bucket.url, topsapp=f"{sys.executable} {DOUBLE}",
        )  # fmt: skip
        summary = run_pipeline(settings)
        assert summary.exit_code == 0 and len(summary.done) == 2
        assert {r.key for r in bucket.requests} == {tile_key(51, -127)}
        ledger = Ledger.open_reader(batch.data / "runs")
        try:
            dems = [d for d in ledger.downloads() if d["kind"] == "dem"]
        finally:
            ledger.close()
        assert len(dems) == 1 and dems[0]["source"].endswith(tile_key(51, -127))
        assert dems[0]["bytes"] == bucket.bytes_sent
        [dem_xml] = (batch.data / "dem").glob("demLat_*_COP30.dem.wgs84.xml")
        image = read_xml(dem_xml).dem_image()
        assert (image.first_latitude, image.first_longitude) == (51.75, -127.0)
        assert (image.width, image.length) == (1441, 1081)
        requests_before = len(bucket.requests)
        shutil.rmtree(settings.run_dir(batch.pair_ids[0]))
        assert run_pipeline(settings).exit_code == 0
        assert len(bucket.requests) == requests_before
