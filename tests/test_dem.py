"""DEM provisioning end to end against the loopback OpenTopography: ISCE files, cache, locking."""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from lxml import etree
from osgeo import gdal

from dem_fixtures import (  # noqa: F401  (the `source` and `server` fixtures)
    KEY,
    server_fixture,
    source_fixture,
)
from insar_pipeline import _http as http
from insar_pipeline.dem import convert as dem_convert
from insar_pipeline.dem import fetch as dem_fetch
from insar_pipeline.dem import grid as dem_grid
from insar_pipeline.dem import provision as dem
from insar_pipeline.dem.grid import grid_around
from insar_pipeline.errors import CredentialError, InputError, ProvisioningError
from insar_pipeline.geo import BBox
from insar_pipeline.inputs.config import Settings
from insar_pipeline.isce_image import read_xml
from opentopo_server import NODATA, Canned, OpenTopoEmulator
from test_dem_grid import make_pair

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
REAL_SIDECAR = REALDATA / "isce2" / "hyp3-isce2_test_case" / "dem" / "down2_res.dem.wgs84.xml"
PAIR = make_pair("20230203_20230215", 33.95, 34.05, -118.05, -117.95)

needs_egm96 = pytest.mark.skipif(
    dem_convert.find_geoid_grid("EGM96") is None,
    reason="PROJ's EGM96 grid (Debian proj-data) is not installed",
)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(http, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setattr(http, "SLOW_READ_TIMEOUT_S", 5.0)


def settings_for(server: OpenTopoEmulator, data: Path, **changes) -> Settings:
    values = {"data_dir": data, "opentopo_url": server.url, "opentopo_api_key": KEY,
              "dem_type": "NASADEM", "dem_buffer_deg": 0.02, **changes}  # fmt: skip
    return Settings(**values)


def raster_of(path: Path) -> np.ndarray:
    image = read_xml(path.with_name(path.name + ".xml")).dem_image()
    return np.fromfile(path, dtype="<f4").reshape(image.length, image.width)


@needs_egm96
def test_run_provisions_an_isce_dem_in_ellipsoid_heights(server, tmp_path):
    settings = settings_for(server, tmp_path)
    downloads = []
    dems = dem.provision_dems(settings, [PAIR], on_download=downloads.append)
    path = tmp_path / "dem" / "demLat_N33_N35_Lon_W119_W117_NASADEM.dem.wgs84"
    assert dems == {PAIR.id: path}
    assert path.is_file() and path.with_name(path.name + ".vrt").is_file()
    grid = grid_around(BBox(33.93, 34.07, -118.07, -117.93), 1)
    image = read_xml(path.with_name(path.name + ".xml")).dem_image()
    assert (image.width, image.length) == (grid.width, grid.length) == (505, 505)
    assert (image.first_longitude, image.first_latitude) == (-118.07, 34.07)
    assert image.reference == "WGS84" and image.data_type == "FLOAT"
    assert path.stat().st_size == 505 * 505 * 4
    # Geoid heights from the source + EGM96 undulation (about -34 m in Los Angeles); the
    # nodata strip along the source's south edge (below 33.92) does not reach this box.
    heights = raster_of(path)
    served = gdal.Open(str(server.source))
    expected = served.ReadAsArray(int(round(0.03 * 3600)), int(round(0.03 * 3600)), 505, 505)
    undulation = heights - expected
    assert -35.5 < undulation.min() < undulation.max() < -33.5
    [download] = downloads
    assert download.kind == "dem" and download.bytes > 0 and KEY not in download.source
    assert download.path == path and download.name == f"{path.name} tile 1/1"
    assert len(server.requests) == 1
    assert not (tmp_path / "dem" / dem.TILES_DIR).exists()


@needs_egm96
def test_the_xml_has_the_structure_of_a_real_isce_sidecar(server, tmp_path):
    if not REAL_SIDECAR.is_file():
        pytest.skip(f"real ISCE sidecar not found at {REAL_SIDECAR}")
    path = dem.provision_dems(settings_for(server, tmp_path), [PAIR])[PAIR.id]
    ours = etree.parse(str(path.with_name(path.name + ".xml"))).getroot()
    real = etree.parse(str(REAL_SIDECAR)).getroot()
    assert ours.tag == real.tag == "imageFile"

    def properties(element):
        return {prop.get("name"): prop.findtext("value") for prop in element.findall("property")}

    ours_properties, real_properties = properties(ours), properties(real)
    assert set(real_properties) <= set(ours_properties)  # WIDTH … FILE_NAME, plus REFERENCE etc.
    for name in ("NUMBER_BANDS", "DATA_TYPE", "SCHEME", "BYTE_ORDER", "ACCESS_MODE"):
        assert ours_properties[name] == real_properties[name]
    assert ours_properties["REFERENCE"] == "WGS84" and ours_properties["IMAGE_TYPE"] == "dem"
    assert ours_properties["FILE_NAME"] == str(path.resolve())  # absolute, as fixImageXml --full
    assert ours_properties["EXTRA_FILE_NAME"] == f"{path.resolve()}.vrt"
    for name in ("Coordinate1", "Coordinate2"):
        [ours_component] = ours.findall(f"component[@name='{name}']")
        [real_component] = real.findall(f"component[@name='{name}']")
        for tag in ("factorymodule", "factoryname"):
            assert ours_component.findtext(tag) == real_component.findtext(tag)
        assert set(properties(real_component)) <= set(properties(ours_component))
    coordinate1 = properties(ours.find("component[@name='Coordinate1']"))
    coordinate2 = properties(ours.find("component[@name='Coordinate2']"))
    assert int(coordinate1["size"]) == int(ours_properties["WIDTH"]) == 505
    assert int(coordinate2["size"]) == int(ours_properties["LENGTH"]) == 505
    assert (
        float(coordinate1["startingValue"]) == -118.07
        and float(coordinate2["startingValue"]) == 34.07
    )
    assert float(coordinate1["delta"]) == pytest.approx(1 / 3600, rel=1e-15)
    assert float(coordinate2["delta"]) == pytest.approx(-1 / 3600, rel=1e-15)
    # Our reader understands the real (GDAL-written, REFERENCE-less) sidecar the way ISCE does.
    real_image = read_xml(REAL_SIDECAR).dem_image()
    assert (real_image.width, real_image.length, real_image.data_type) == (72, 36, "FLOAT")
    assert real_image.reference == "EGM96"  # DemImage's default when REFERENCE is absent
    assert REAL_SIDECAR.with_suffix("").stat().st_size == real_image.file_size


@needs_egm96
def test_the_vrt_is_isces_and_gives_the_raw_pixels(server, tmp_path):
    path = dem.provision_dems(settings_for(server, tmp_path), [PAIR])[PAIR.id]
    vrt = path.with_name(path.name + ".vrt")
    root = etree.parse(str(vrt)).getroot()
    band = root.find("VRTRasterBand")
    assert band.get("subClass") == "VRTRawRasterBand" and band.get("dataType") == "Float32"
    source = band.find("SourceFilename")
    assert source.get("relativeToVRT") == "1" and source.text == path.name
    layout = [
        band.findtext(tag) for tag in ("ByteOrder", "ImageOffset", "PixelOffset", "LineOffset")
    ]
    assert layout == ["LSB", "0", "4", str(505 * 4)]
    assert root.findtext("SRS") == "EPSG:4326"
    dataset = gdal.Open(str(vrt))
    # renderVRT copies startingValue/delta verbatim into the GeoTransform.
    assert dataset.GetGeoTransform() == pytest.approx((-118.07, 1 / 3600, 0, 34.07, 0, -1 / 3600))
    assert np.array_equal(dataset.ReadAsArray(), raster_of(path))


def test_ocean_and_voids_become_zero(server, tmp_path):
    # SRTMGL1_E: already ellipsoidal, so the raster must be the source with nodata -> 0.
    pair = make_pair("20230203_20230215", 33.83, 33.98, -118.05, -117.95)  # runs off the source
    path = dem.provision_dems(settings_for(server, tmp_path, dem_type="SRTMGL1_E"), [pair])[pair.id]
    heights = raster_of(path)
    image = read_xml(path.with_name(path.name + ".xml")).dem_image()
    served = gdal.Open(str(server.source)).ReadAsArray()
    top = round((34.1 - image.first_latitude) * 3600)
    left = round((image.first_longitude + 118.1) * 3600)
    inside = served.shape[0] - top  # DEM rows that the source covers (it ends at 33.9)
    expected = np.zeros_like(heights)
    expected[:inside] = served[top:, left : left + image.width]
    expected[expected == NODATA] = 0  # the source's own nodata strip, 33.90-33.92
    assert np.array_equal(heights, expected)
    assert 0 < inside < image.length
    assert np.all(heights[: inside - 80] > 100) and np.all(heights[inside - 60 :] == 0)


def test_a_box_over_the_limit_is_split_and_mosaicked_seamlessly(server, tmp_path, monkeypatch):
    import opentopo_server

    settings = settings_for(server, tmp_path / "one", dem_type="SRTMGL1_E")
    single = dem.provision_dems(settings, [PAIR])[PAIR.id]
    # Shrink both sides' limits: the same box now takes several requests, none refused.
    monkeypatch.setattr(opentopo_server, "DEFAULT_LIMIT_KM2", 60)
    spec = dem_grid.DEM_SPECS["SRTMGL1_E"]
    monkeypatch.setitem(dem_grid.DEM_SPECS, "SRTMGL1_E", spec.__class__(spec.name, 1, 60, None))
    server.requests.clear()
    settings = settings_for(server, tmp_path / "many", dem_type="SRTMGL1_E")
    [plan] = dem.plan_dems(settings, [PAIR])
    assert len(plan.tiles) == 4
    tiled = dem.provision_dems(settings, [PAIR])[PAIR.id]
    assert len(server.requests) == 4
    assert tiled.read_bytes() == single.read_bytes()


@needs_egm96
def test_cache_hits_make_no_request(server, tmp_path):
    settings = settings_for(server, tmp_path)
    first = dem.provision_dems(settings, [PAIR])[PAIR.id]
    server.requests.clear()
    modified = first.stat().st_mtime_ns
    # The same pairs again, then a smaller box inside the DEM, with no API key at all.
    again = dem.provision_dems(settings, [PAIR])
    inner = make_pair("20230227_20230311", 33.98, 34.02, -118.02, -117.98)
    no_key = settings.with_changes(opentopo_api_key=None)
    [plan] = dem.plan_dems(no_key, [inner])
    assert plan.cached and plan.path == first
    assert dem.provision_dems(no_key, [inner]) == {inner.id: first}
    assert again == {PAIR.id: first}
    assert server.requests == []
    assert first.stat().st_mtime_ns == modified


@needs_egm96
def test_a_box_not_inside_gets_its_own_dem_and_a_type_change_too(server, tmp_path):
    settings = settings_for(server, tmp_path)
    first = dem.provision_dems(settings, [PAIR])[PAIR.id]
    shifted = make_pair("20230227_20230311", 33.97, 34.07, -118.05, -117.95)  # same degrees
    second = dem.provision_dems(settings, [shifted])[shifted.id]
    assert second.name == "demLat_N33_N35_Lon_W119_W117_NASADEM_2.dem.wgs84"
    ellipsoidal = dem.provision_dems(settings.with_changes(dem_type="SRTMGL1_E"), [PAIR])[PAIR.id]
    assert ellipsoidal.name == "demLat_N33_N35_Lon_W119_W117_SRTMGL1_E.dem.wgs84"
    assert len({first, second, ellipsoidal}) == 3 and len(server.requests) == 3
    assert all(
        path.with_name(path.name + ".xml").is_file() for path in (first, second, ellipsoidal)
    )


@needs_egm96
def test_an_interrupted_dem_is_not_cached_and_its_tiles_are_not_downloaded_twice(
    server, tmp_path, monkeypatch
):
    settings = settings_for(server, tmp_path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dem_convert, "write_ellipsoid_dem", crash)
    with pytest.raises(KeyboardInterrupt):
        dem.provision_dems(settings, [PAIR])
    monkeypatch.undo()
    monkeypatch.setattr(http, "BACKOFF_BASE_S", 0.01)
    [plan] = dem.plan_dems(settings, [PAIR])
    assert not plan.cached
    path = dem.provision_dems(settings, [PAIR])[PAIR.id]
    assert len(server.requests) == 1  # the tile kept from the first attempt was reused
    assert raster_of(path).shape == (505, 505)


@needs_egm96
def test_a_moved_data_folder_gets_its_file_names_rewritten(server, tmp_path):
    path = dem.provision_dems(settings_for(server, tmp_path / "before"), [PAIR])[PAIR.id]
    moved = tmp_path / "after"
    (tmp_path / "before").rename(moved)
    server.requests.clear()
    new_path = dem.provision_dems(settings_for(server, moved), [PAIR])[PAIR.id]
    assert new_path == moved / "dem" / path.name and server.requests == []
    xml = read_xml(new_path.with_name(new_path.name + ".xml"))
    assert xml.properties["FILE_NAME"] == str(new_path.resolve())


def test_a_missing_key_stops_before_any_request(server, tmp_path):
    settings = settings_for(server, tmp_path, opentopo_api_key=None, dem_type="SRTMGL1_E")
    with pytest.raises(CredentialError, match="set OPENTOPO_API_KEY in .env"):
        dem.provision_dems(settings, [PAIR])
    assert server.requests == []


def test_a_refused_key_is_reported_before_any_pair(server, tmp_path, caplog):
    settings = settings_for(
        server, tmp_path, opentopo_api_key="not-the-key-1234", dem_type="SRTMGL1_E"
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(CredentialError) as caught:
        dem.provision_dems(settings, [PAIR])
    assert "HTTP 401" in str(caught.value) and "not-the-key-1234" not in str(caught.value)
    assert "not-the-key-1234" not in caplog.text
    assert not list((tmp_path / "dem").glob("*.dem.wgs84*"))


def test_the_key_is_in_no_log_file_name_or_xml(server, tmp_path, caplog):
    server.script.extend([Canned(502, b"bad gateway"), Canned(429, b"slow down")])
    settings = settings_for(server, tmp_path, dem_type="SRTMGL1_E", geocode_dem_arcsec=3)
    with caplog.at_level(logging.DEBUG):
        dem.provision_dems(
            settings, [PAIR], on_download=lambda download: logging.info("%s", download)
        )
    assert len(server.requests) == 3
    assert KEY not in caplog.text and "API_Key=***" in caplog.text
    for path in tmp_path.rglob("*"):
        assert KEY not in path.name
        if path.is_file() and path.suffix in (".xml", ".vrt"):
            assert KEY not in path.read_text()


def test_geocoding_dem_is_the_block_mean_at_the_asked_posting(server, tmp_path):
    settings = settings_for(server, tmp_path, dem_type="SRTMGL1_E", geocode_dem_arcsec=3)
    fine = dem.provision_dems(settings, [PAIR])[PAIR.id]
    coarse = dem.geocode_dem_path(settings, fine)
    assert coarse.name == "demLat_N33_N35_Lon_W119_W117_SRTMGL1_E.3arcsec.dem.wgs84"
    fine_image = read_xml(fine.with_name(fine.name + ".xml")).dem_image()
    image = read_xml(coarse.with_name(coarse.name + ".xml")).dem_image()
    assert (image.width, image.length) == (505 // 3, 505 // 3)
    assert image.delta_longitude == pytest.approx(3 / 3600) and image.reference == "WGS84"
    assert image.first_longitude == pytest.approx(fine_image.first_longitude + 1 / 3600)
    assert image.first_latitude == pytest.approx(fine_image.first_latitude - 1 / 3600)
    heights = raster_of(fine)[:504, :504].reshape(168, 3, 168, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(raster_of(coarse), heights, atol=1e-3)
    # Not a DEM of its own for the cache, and not rebuilt next time.
    assert [existing.path for existing in dem.existing_dems(tmp_path / "dem")] == [fine]
    assert dem.geocode_dem(settings, fine) == coarse


def _provision_in_child(settings_json: str, queue) -> None:
    settings = Settings.model_validate_json(settings_json)
    http.BACKOFF_BASE_S = 0.01
    queue.put(str(dem.provision_dems(settings, [PAIR])[PAIR.id]))


def test_concurrent_provisioning_downloads_once(server, tmp_path):
    server.delay_s = 0.5  # both processes are inside provision_dems while the tile is served
    settings = settings_for(server, tmp_path, dem_type="SRTMGL1_E")
    payload = settings.model_dump_json(exclude={"opentopo_api_key"})
    payload = payload[:-1] + f', "opentopo_api_key": "{KEY}"}}'
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    children = [
        context.Process(target=_provision_in_child, args=(payload, queue)) for _ in range(2)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=60)
    assert [child.exitcode for child in children] == [0, 0]
    paths = {queue.get(timeout=5), queue.get(timeout=5)}
    assert paths == {str(tmp_path / "dem" / "demLat_N33_N35_Lon_W119_W117_SRTMGL1_E.dem.wgs84")}
    assert len(server.requests) == 1


def test_plan_shows_box_tiles_and_cache_state_without_writing(server, tmp_path):
    settings = settings_for(server, tmp_path, dem_type="SRTMGL1_E")
    [plan] = dem.plan_dems(settings, [PAIR])
    assert plan.bbox == BBox(33.93, 34.07, -118.07, -117.93) and not plan.cached
    assert plan.tiles == (
        BBox(33.93 - 1 / 3600, 34.07 + 1 / 3600, -118.07 - 1 / 3600, -117.93 + 1 / 3600),
    )
    assert plan.pair_ids == (PAIR.id,)
    assert not (tmp_path / "dem").exists() and server.requests == []
    assert dem.missing_prerequisites(settings.with_changes(opentopo_api_key=None), [plan]) == [
        f"the DEM {plan.path.name} must be downloaded from OpenTopography: {dem_fetch.KEY_HINT}"
    ]


def test_missing_egm2008_grid_is_named_with_how_to_get_it(server, tmp_path, monkeypatch):
    monkeypatch.setattr(dem_convert, "find_geoid_grid", lambda geoid: None)
    settings = settings_for(server, tmp_path, dem_type="COP30")
    with pytest.raises(ProvisioningError) as caught:
        dem.provision_dems(settings, [PAIR])
    message = str(caught.value)
    assert "us_nga_egm08_25.tif" in message and "EGM2008" in message
    assert "projsync --file us_nga_egm08_25.tif" in message and "proj-data" in message
    assert server.requests == []


def test_tiles_off_the_dem_grid_are_resampled_not_shifted(tmp_path, caplog):
    # A source whose pixel centres sit half a second off the whole seconds, with heights
    # linear in lon/lat: bilinear resampling onto the DEM grid must give the plane exactly.
    step = 1 / 3600
    width = length = 721
    west, north = -118.1 + step / 2, 34.1 - step / 2  # first centre, off the grid
    lons = west + np.arange(width) * step
    lats = north - np.arange(length) * step
    plane = (1000 + 2000 * (lons[None, :] + 118) + 3000 * (lats[:, None] - 34)).astype(np.float32)
    path = tmp_path / "shifted.tif"
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), width, length, 1, gdal.GDT_Float32)
    dataset.SetGeoTransform((west - step / 2, step, 0, north + step / 2, 0, -step))
    dataset.SetProjection("EPSG:4326")
    dataset.GetRasterBand(1).WriteArray(plane)
    dataset = None
    with OpenTopoEmulator(path, api_key=KEY) as server, caplog.at_level(logging.WARNING):
        settings = settings_for(server, tmp_path / "data", dem_type="SRTMGL1_E")
        dem_path = dem.provision_dems(settings, [PAIR])[PAIR.id]
    assert 'not on the 1" grid' in caplog.text
    image = read_xml(dem_path.with_name(dem_path.name + ".xml")).dem_image()
    dem_lons = image.first_longitude + np.arange(image.width) * image.delta_longitude
    dem_lats = image.first_latitude + np.arange(image.length) * image.delta_latitude
    expected = 1000 + 2000 * (dem_lons[None, :] + 118) + 3000 * (dem_lats[:, None] - 34)
    np.testing.assert_allclose(raster_of(dem_path), expected, atol=2e-3)


def test_geocoding_dem_posting_must_be_a_multiple_of_the_dems(server, tmp_path):
    settings = settings_for(server, tmp_path, dem_type="SRTMGL3_E", geocode_dem_arcsec=4)
    with pytest.raises(
        InputError, match='GEOCODE_DEM_ARCSEC=4 must be a multiple of the 3" posting'
    ):
        dem.plan_dems(settings, [PAIR])
    same = settings.with_changes(geocode_dem_arcsec=3)
    assert dem.geocode_dem_path(same, tmp_path / "x.dem.wgs84") == tmp_path / "x.dem.wgs84"
    unset = settings.with_changes(geocode_dem_arcsec=None)
    assert dem.geocode_dem_path(unset, tmp_path / "x.dem.wgs84") == tmp_path / "x.dem.wgs84"


def test_tiles_that_do_not_cover_the_box_are_a_provisioning_error(server, tmp_path):
    small = server.cut(34.0, 34.01, -118.0, -117.99)  # a valid GeoTIFF, but a tiny one
    server.script.append(Canned(200, small, {"Content-Type": "image/tiff"}))
    settings = settings_for(server, tmp_path, dem_type="SRTMGL1_E")
    with pytest.raises(ProvisioningError, match="a GeoTIFF covering only 33.9999,34.0101"):
        dem.provision_dems(settings, [PAIR])
    assert not list((tmp_path / "dem").glob("*.dem.wgs84*"))
    # The short tile was refused at download, not kept: the next run asks for it again.
    server.requests.clear()
    assert dem.provision_dems(settings, [PAIR])[PAIR.id].is_file()
    assert len(server.requests) == 1
