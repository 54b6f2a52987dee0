"""Acquisition (issue 14) against the loopback CMR, Earthdata login and ASF download server
(tests/acquire_services.py; tests/acquire_helpers.py adds multi-burst records)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from shapely.geometry import box

from acquire_helpers import add_noise_and_calibration, neighbour_bursts, small_bursts
from acquire_services import (  # noqa: F401 (the fixtures)
    AcquireServices,
    ProductFactory,
    acquire_products_fixture,
    acquire_services_fixture,
    acquire_tls_fixture,
    attribute,
    footprint,
    granule_name,
    recorded,
    running_services,
    time_range,
)
from insar_pipeline import _http
from insar_pipeline.acquire import commands, fetch, http, stage
from insar_pipeline.errors import CredentialError, InputError
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.pairs import load_pairs
from insar_pipeline.inputs.safe import read_product, scan_raw

# Inside the recorded track-13 frame-411 scenes (S1B, every 12 days; 4 dates in START..END).
AOI_411 = (54.7, 54.9, -121.0, -120.6)
START, END = "2018-01-01", "2018-02-20"
# Over the recorded burst 174_372326_IW3 and its synthetic neighbour 372327 (3 dates).
AOI_BURSTS = "56.9,57.05,-136.2,-135.6"


@pytest.fixture(autouse=True)
def fast_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "ACCEPTED_WAIT_S", 0.01)
    monkeypatch.setattr(_http, "BACKOFF_BASE_S", 0.01)


def settings_for(tmp_path: Path, services: AcquireServices, **values: object) -> Settings:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    south, north, west, east = AOI_411
    base: dict[str, object] = {
        "data_dir": data,
        "pairs_file": tmp_path / "pairs.txt",
        "env_file": tmp_path / ".env",
        "aoi": f"{south},{north},{west},{east}",
        "start": START,
        "end": END,
        "relative_orbit": 13,
        **services.settings_values(),
    }
    base.update(values)
    return Settings(**base)


@pytest.fixture
def burst_services(
    acquire_tls, acquire_products, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AcquireServices]:
    """The recorded bursts plus a neighbour burst on every date (two bursts over the AOI)."""
    add_noise_and_calibration(acquire_products, monkeypatch)
    bursts = recorded("burst")
    records = small_bursts(bursts + neighbour_bursts(bursts))
    with running_services(acquire_tls, acquire_products, records=records) as services:
        yield services


def burst_settings(tmp_path: Path, services: AcquireServices, **values: object) -> Settings:
    values = {"input_level": "burst", "aoi": AOI_BURSTS, "relative_orbit": 174, **values}
    return settings_for(tmp_path, services, start="2018-01-01", end="2018-02-20", **values)


def expected_scenes() -> set[str]:
    """The recorded scenes of track 13 in START..END with VV that cover AOI_411 (by hand)."""
    south, north, west, east = AOI_411
    area = box(west, south, east, north)
    found = set()
    for record in recorded("slc"):
        umm = record["umm"]
        day = f"{time_range(umm)[0]:%Y-%m-%d}"
        if (
            attribute(umm, "PATH_NUMBER") == "13"
            and START <= day <= END
            and "VV" in (attribute(umm, "POLARIZATION") or "")
            and footprint(umm).contains(area)
        ):
            found.add(granule_name(record))
    return found


def test_search_finds_the_scenes_over_the_area_and_dates_and_writes_nothing(
    tmp_path: Path, acquire_services: AcquireServices, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(tmp_path, acquire_services)
    selection = stage.find(settings)
    names = {item.name for item in selection.acquisitions}
    assert names == expected_scenes() and len(names) == 4
    assert selection.excluded == ()
    (search,) = acquire_services.cmr.granule_requests()
    attributes = acquire_services.cmr.fields(search, "attribute[]")
    assert "int,PATH_NUMBER,13" in attributes and "string,BEAM_MODE,IW" in attributes
    assert acquire_services.cmr.fields(search, "temporal") == [
        f"{START}T00:00:00Z,{END}T23:59:59Z,"
    ]

    assert commands.search_command(settings, argparse.Namespace()) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in names) and "network (--max-days 48" in out
    assert "free in data/raw" in out and "Nothing was downloaded." in out
    assert acquire_services.download.requests == [] and acquire_services.edl.requests == []
    assert not settings.raw_dir.exists() and not settings.pairs_file.exists()


def test_a_scene_covering_part_of_the_area_is_left_out_with_its_reason(
    tmp_path: Path, acquire_services: AcquireServices, capsys: pytest.CaptureFixture[str]
) -> None:
    moved = sorted(expected_scenes())[1]
    for record in acquire_services.cmr.records:
        if granule_name(record) == moved:  # the archive's footprint lies half off the area
            polygons = record["umm"]["SpatialExtent"]["HorizontalSpatialDomain"]["Geometry"]
            for point in polygons["GPolygons"][0]["Boundary"]["Points"]:
                point["Latitude"] -= 0.22  # the scene now covers only the south of the AOI
    selection = stage.find(acquire_services_settings := settings_for(tmp_path, acquire_services))
    assert moved not in {item.name for item in selection.acquisitions}
    (left_out,) = selection.excluded
    assert left_out.reason.startswith(f"{moved} covers only ")
    assert 0 < int(left_out.reason.split()[3].rstrip("%")) < 100
    commands.search_command(acquire_services_settings, argparse.Namespace())
    assert f"{left_out.date}  orbit {left_out.absolute_orbit}: {moved} covers only" in (
        capsys.readouterr().out
    )


def test_download_is_verified_and_a_second_download_makes_no_request(
    tmp_path: Path, acquire_services: AcquireServices, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = settings_for(tmp_path, acquire_services)
    assert commands.download_command(settings, argparse.Namespace()) == 0
    products = scan_raw(settings.raw_dir)
    assert set(products) == expected_scenes()
    for name, path in products.items():
        assert path.suffix == ".zip" and read_product(path).name == name
    assert list((settings.raw_dir / fetch.PARTIAL_DIR).iterdir()) == []
    served = acquire_services.download.counts()
    assert sum(served.values()) == 4 and set(served.values()) == {1}  # one GET per file
    edl_before = len(acquire_services.edl.requests)
    assert edl_before == 1  # the token was checked once, before the first download

    assert commands.download_command(settings, argparse.Namespace()) == 0
    assert acquire_services.download.counts() == served  # zero new requests
    assert len(acquire_services.edl.requests) == edl_before  # nothing to fetch: no login
    assert len(acquire_services.cmr.granule_requests()) == 2  # one search per command
    assert acquire_services.token not in caplog.text


def test_a_cut_download_resumes_with_a_range_request(
    tmp_path: Path, acquire_services: AcquireServices
) -> None:
    settings = settings_for(tmp_path, acquire_services)
    selection = stage.find(settings)
    first = selection.acquisitions[0].granules[0]
    path = first.url.removeprefix(acquire_services.download.url)
    acquire_services.download.cut_once(path)
    stage.download(settings, selection)
    hits = [hit for hit in acquire_services.download.requests if hit.path == path]
    assert len(hits) == 2 and "Range" not in hits[0].headers
    offset = int(hits[1].headers["Range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < offset <= first.bytes // 2  # what arrived before the cut is kept
    zipped = settings.raw_dir / first.filename
    assert fetch.md5_of(zipped) == first.md5 and read_product(zipped).name == first.name


def test_a_part_file_left_by_an_interrupted_run_is_resumed_not_restarted(
    tmp_path: Path, acquire_services: AcquireServices
) -> None:
    settings = settings_for(tmp_path, acquire_services)
    selection = stage.find(settings)
    first = selection.acquisitions[0].granules[0]
    path = first.url.removeprefix(acquire_services.download.url)
    part = settings.raw_dir / fetch.PARTIAL_DIR / first.filename
    part.parent.mkdir(parents=True)
    part.write_bytes(acquire_services.download.content(path)[:1000])
    assert scan_raw(settings.raw_dir) == {}  # a part file never looks like a product
    stage.download(settings, selection)
    (hit,) = [hit for hit in acquire_services.download.requests if hit.path == path]
    assert hit.headers["Range"] == "bytes=1000-"
    assert fetch.md5_of(settings.raw_dir / first.filename) == first.md5


def test_a_wrong_token_is_exit_2_before_any_download(
    tmp_path: Path, acquire_services: AcquireServices, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from insar_pipeline.cli import main

    env = tmp_path / ".env"
    south, north, west, east = AOI_411
    env.write_text(
        f"AOI = {south},{north},{west},{east}\nSTART = {START}\nEND = {END}\nRELATIVE_ORBIT = 13\n"
        f"CMR_HOST = {acquire_services.cmr.host}\nEDL_HOST = {acquire_services.edl.host}\n"
        "EARTHDATA_TOKEN = not-the-token\n"
    )
    monkeypatch.setenv("HOME", str(tmp_path))
    data = tmp_path / "data"
    data.mkdir()
    code = main(["download", "--data", str(data), "--env", str(env)])
    assert code == 2
    err = capsys.readouterr().err
    assert "rejected EARTHDATA_TOKEN" in err and "not-the-token" not in err
    assert acquire_services.download.requests == []
    assert not (data / "raw").exists() or list((data / "raw").rglob("*")) == []


def test_username_password_and_netrc_logins_never_write_the_netrc(
    tmp_path: Path, acquire_services: AcquireServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    from insar_pipeline.acquire.credentials import earthdata_token

    netrc = tmp_path / ".netrc"
    host = acquire_services.edl.host.split(":")[0]
    netrc.write_text(
        f"machine {host} login {acquire_services.username} password {acquire_services.password}\n"
    )
    netrc.chmod(0o600)
    before = netrc.read_bytes()
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = settings_for(tmp_path, acquire_services, earthdata_token=None)
    assert earthdata_token(settings) == acquire_services.token  # from ~/.netrc
    wrong = settings.with_changes(earthdata_username="someone", earthdata_password="wrong")
    with pytest.raises(CredentialError, match="rejected the username and password") as caught:
        earthdata_token(wrong)
    assert caught.value.exit_code == 2 and "wrong" not in str(caught.value)
    right = settings.with_changes(
        earthdata_username=acquire_services.username, earthdata_password=acquire_services.password
    )
    assert earthdata_token(right) == acquire_services.token
    assert netrc.read_bytes() == before
    assert [p for p in tmp_path.rglob(".netrc") if p != netrc] == []


def test_a_disk_too_small_is_refused_before_any_download(
    tmp_path: Path, acquire_services: AcquireServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "free_disk_bytes", lambda folder: 10_000_000)
    settings = settings_for(tmp_path, acquire_services)
    with pytest.raises(InputError, match="only 10.0 MB is free"):
        commands.download_command(settings, argparse.Namespace())
    assert acquire_services.download.requests == [] and acquire_services.edl.requests == []


def test_pairs_from_the_search_with_baselines_read_back_by_load_pairs(
    tmp_path: Path, acquire_services: AcquireServices
) -> None:
    settings = settings_for(tmp_path, acquire_services)
    args = argparse.Namespace(max_days=30, neighbours=2, max_bperp=None, force=False)
    with pytest.raises(InputError, match="run `download` first"):
        commands.pairs_command(settings, args)
    commands.download_command(settings, argparse.Namespace())
    assert commands.pairs_command(settings, args) == 0
    text = settings.pairs_file.read_text()
    pairs = load_pairs(settings)
    assert [pair.id for pair in pairs] == ["20180112_20180124", "20180112_20180205",
                                           "20180124_20180205", "20180124_20180217",
                                           "20180205_20180217"]  # fmt: skip
    comments = [line for line in text.splitlines() if "perpendicular baseline" in line]
    assert len(comments) == len(pairs) and all(" m" in line for line in comments)


# ---- burst level ------------------------------------------------------------------------------


def burst_anx_ids(safe: Path, granules: list) -> list[str]:
    """The burst IDs of a built SAFE: its annotation's bursts matched by ANX time to the
    searched bursts (IPF 2.91 annotations carry no burstId element)."""
    anx = {round(float(g_anx), 1): g.burst_id for g, g_anx in granules}
    found = []
    for annotation in sorted((safe / "annotation").glob("s1*-iw*-slc-vv-*.xml")):
        for element in etree.parse(str(annotation)).iterfind(".//burstList/burst"):
            found.append(anx[round(float(element.findtext("azimuthAnxTime")), 1)])
    return sorted(found)


def test_burst_safes_read_back_with_the_same_burst_ids_on_every_date(
    tmp_path: Path, burst_services: AcquireServices
) -> None:
    settings = burst_settings(tmp_path, burst_services)
    # 2018-02-04 misses the neighbour burst in the archive: that date is left out.
    removed = burst_services.cmr.remove(
        lambda r: (
            attribute(r["umm"], "BURST_ID_FULL") == "174_372327_IW3"
            and "20180204" in r["umm"]["GranuleUR"]
        )
    )
    assert len(removed) == 1
    selection = stage.find(settings)
    assert selection.burst_ids == ("174_372326_IW3", "174_372327_IW3")
    assert [(str(e.date), e.reason) for e in selection.excluded] == [
        ("2018-02-04", "burst 174_372327_IW3 missing")
    ]
    assert commands.download_command(settings, argparse.Namespace()) == 0
    products = scan_raw(settings.raw_dir)
    assert len(products) == len(selection.acquisitions) == 2
    by_name = {
        g.name: (g, attribute(r["umm"], "AZIMUTH_ANX_TIME"))
        for r in burst_services.cmr.records
        for g in selection.granules
        if r["umm"]["GranuleUR"] == g.name
    }
    for path in products.values():
        product = read_product(path)
        assert product.swaths == (3,) and product.relative_orbit == 174
        assert burst_anx_ids(path, list(by_name.values())) == list(selection.burst_ids)
    counts = burst_services.download.counts()
    # (ASF's login cookie is fetched only from ASF's own hosts, not from this loopback one)
    # each TIFF and each scene's XML: one 202, then one GET
    assert len(counts) == 2 * 3 and set(counts.values()) == {2}

    assert commands.download_command(settings, argparse.Namespace()) == 0
    assert burst_services.download.counts() == counts  # the SAFEs are there: nothing fetched


# ---- run: search -> download -> pairs -> process ----------------------------------------------


def small_footprint_records() -> list[dict]:
    """The recorded scenes, those of START..END moved onto the small box of batch_factory (so
    that the test DEM stays small); the rest as recorded."""
    from batch_factory import FOOTPRINT

    records = recorded("slc")
    for record in records:
        umm = record["umm"]
        if START <= f"{time_range(umm)[0]:%Y-%m-%d}" <= END:
            points = [{"Latitude": lat, "Longitude": lon} for lat, lon in FOOTPRINT]
            polygons = umm["SpatialExtent"]["HorizontalSpatialDomain"]["Geometry"]["GPolygons"]
            polygons[:] = [{"Boundary": {"Points": [*points, points[0]]}}]
    return records


def test_run_from_an_empty_data_folder_reaches_done_pairs(
    tmp_path: Path, acquire_tls, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from batch_factory import DEM_TYPE, DOUBLE, ROI
    from insar_pipeline.geo import BBox
    from insar_pipeline.ledger.store import Ledger
    from insar_pipeline.run.driver import run_command
    from insar_pipeline.run.plan import plan_command
    from opentopo_server import OpenTopoEmulator, synthetic_source
    from orbit_factories import poeorb_name
    from orbit_server import OrbitServer

    source = synthetic_source(tmp_path / "source.tif", *BBox.parse(ROI).buffered(0.05).snwe(), 3)
    records = small_footprint_records()
    # Its own product factory: the session's caches zip sizes by scene name, and these scenes
    # have other footprints (so other manifests) than the same names in the other tests.
    products = ProductFactory(tmp_path / "products")
    with (
        running_services(acquire_tls, products, records=records) as services,
        OrbitServer() as orbits,
        OpenTopoEmulator(source) as opentopo,
    ):
        data = tmp_path / "data"
        data.mkdir()
        settings = orbits.settings(data).with_changes(
            pairs_file=tmp_path / "pairs.txt", env_file=tmp_path / ".env", workers=2, cores=2,
            memory_total_gb=16.0, roi=ROI, dem_type=DEM_TYPE, orbit_sources=("asf",),
            opentopo_url=opentopo.url, opentopo_api_key=opentopo.api_key,
            topsapp=f"{sys.executable} {DOUBLE}", aoi="51.55,51.65,-126.9,-126.7",
            start=START, end="2018-02-10", relative_orbit=13, **services.settings_values(),
        )  # fmt: skip
        assert plan_command(settings, argparse.Namespace()) == 0
        shown = capsys.readouterr().out
        assert "3 dates to use" in shown and "`run` would download what is missing" in shown
        assert services.download.requests == []

        names = [item.name for item in stage.find(settings).acquisitions]
        orbits.add(*(poeorb_name(name[:3], name.split("_")[5][:8]) for name in names))
        assert run_command(settings, argparse.Namespace()) == 0
        assert sorted(scan_raw(settings.raw_dir)) == sorted(names)
        ledger = Ledger.open_reader(settings.runs_dir)
        try:
            done = sorted(row.pair_id for row in ledger.pairs() if row.status == "done")
        finally:
            ledger.close()
        assert done == ["20180112_20180124", "20180112_20180205", "20180124_20180205"]

        searches, fetched = len(services.cmr.granule_requests()), len(services.download.requests)
        assert run_command(settings, argparse.Namespace()) == 0  # all done: nothing fetched
        assert len(services.download.requests) == fetched
        assert len(services.cmr.granule_requests()) == searches  # pairs.txt there: no search


def test_search_command_in_a_child_process_reaches_the_cmr_host_setting(
    tmp_path: Path, acquire_services: AcquireServices
) -> None:
    """As a user runs it: CMR_HOST (not a test hook) sends asf_search to the loopback CMR."""
    from conftest import clean_environ, run_main

    (tmp_path / "data").mkdir()
    south, north, west, east = AOI_411
    env = clean_environ(
        **acquire_services.env(), HOME=str(tmp_path), AOI=f"{south},{north},{west},{east}",
        START=START, END=END, RELATIVE_ORBIT="13",
    )  # fmt: skip
    result = run_main(["search"], cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in expected_scenes())
    assert len(acquire_services.cmr.granule_requests()) == 1
    assert acquire_services.token not in result.stdout + result.stderr
    assert not (tmp_path / "data" / "raw").exists()
