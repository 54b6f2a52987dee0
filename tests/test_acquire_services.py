"""Tests of the loopback acquisition services (tests/acquire_services.py) themselves."""

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import asf_search
import pytest
import requests
from asf_search.ASFSearchOptions.config import config as asf_config
from asf_search.exceptions import ASFAuthenticationError, ASFSearch4xxError
from lxml import etree
from shapely.geometry import box

from acquire_services import (
    BURST2SAFE_COOKIE_PATH,
    BURST_ID,
    SLC_STACK_REFERENCE,
    AcquireServices,
    CmrServer,
    ProductFactory,
    TlsFiles,
    acquire_products_fixture,  # noqa: F401  (the `acquire_products` fixture)
    acquire_services_fixture,  # noqa: F401  (the `acquire_services` fixture)
    acquire_tls_fixture,  # noqa: F401  (the `acquire_tls` fixture)
    attribute,
    burst_archive,
    download_volume,
    footprint,
    granule_name,
    recorded,
    running_services,
    time_range,
)

# A 0.5 x 0.3 degree box inside the recorded SLC track (13, descending, British Columbia).
BOX = (-121.0, 54.5, -120.5, 54.8)  # W, S, E, N
BOX_WKT = "POLYGON((-121 54.5,-120.5 54.5,-120.5 54.8,-121 54.8,-121 54.5))"
BURST_POINT = "POINT(-135.9 57.04)"  # inside burst 174_372326_IW3


def _expected_slc(west: float, south: float, east: float, north: float, start: str, end: str):
    """Scene names the real CMR would return: footprint intersects the box, time overlaps."""
    area = box(west, south, east, north)
    lo = datetime.fromisoformat(start).replace(tzinfo=timezone.utc)
    hi = datetime.fromisoformat(end).replace(tzinfo=timezone.utc)
    names = set()
    for record in recorded("slc"):
        begin, finish = time_range(record["umm"])
        if footprint(record["umm"]).intersects(area) and begin <= hi and finish >= lo:
            names.add(granule_name(record))
    return names


def _auth(services: AcquireServices) -> dict[str, str]:
    return {"Authorization": f"Bearer {services.token}"}


# ---------------------------------------------------------------------------------------------
# TLS and the redirection of asf_search


def test_tls_needs_the_test_ca(acquire_services: AcquireServices, acquire_tls: TlsFiles) -> None:
    url = f"{acquire_services.cmr.url}/search/health"
    assert requests.get(url, verify=str(acquire_tls.ca_bundle), timeout=10).status_code == 200
    plain = requests.Session()
    plain.trust_env = False  # ignore REQUESTS_CA_BUNDLE: the default CAs do not know the test CA
    with pytest.raises(requests.exceptions.SSLError):
        plain.get(url, timeout=10)
    assert acquire_services.cmr.url.startswith("https://127.0.0.1:")
    assert acquire_services.edl.url.startswith("https://127.0.0.1:")


def test_asf_search_is_pointed_at_the_loopback_and_restored(
    acquire_tls: TlsFiles, acquire_products: ProductFactory
) -> None:
    before = (asf_config["host"], asf_search.REPORT_ERRORS)
    with running_services(acquire_tls, acquire_products) as services:
        assert asf_config["host"] == services.cmr.host
        assert asf_search.REPORT_ERRORS is False
        values = services.settings_values()
        assert values["cmr_host"] == services.cmr.host
        assert values["edl_host"] == services.edl.host
        assert services.env()["REQUESTS_CA_BUNDLE"] == str(acquire_tls.ca_bundle)
    assert (asf_config["host"], asf_search.REPORT_ERRORS) == before


# ---------------------------------------------------------------------------------------------
# CMR


def test_search_box_and_dates_returns_the_covering_scenes(
    acquire_services: AcquireServices,
) -> None:
    results = asf_search.search(
        platform=["SENTINEL-1A", "SENTINEL-1B"],
        processingLevel="SLC",
        beamMode="IW",
        relativeOrbit=13,
        start="2019-01-01",
        end="2019-12-31",
        intersectsWith=BOX_WKT,
    )
    names = {r.properties["sceneName"] for r in results}
    assert names == _expected_slc(*BOX, "2019-01-01", "2019-12-31T00:00:00")
    assert len(names) == 30
    hit = acquire_services.cmr.granule_requests()[-1]
    assert hit.method == "POST"
    assert hit.path == "/search/granules.umm_json"
    assert CmrServer.fields(hit, "bounding_box") == ["-121.0,54.5,-120.5,54.8"]
    assert "int,PATH_NUMBER,13" in CmrServer.fields(hit, "attribute[]")
    assert "SENTINEL-1A_SLC" in CmrServer.fields(hit, "shortName")


def test_search_filters_like_cmr(acquire_services: AcquireServices) -> None:
    common = {"processingLevel": "SLC", "start": "2016-01-01", "end": "2017-12-31"}
    everything = asf_search.search(**common, intersectsWith=BOX_WKT)
    assert len(everything) > 0
    by_platform = asf_search.search(**common, platform="SENTINEL-1B", intersectsWith=BOX_WKT)
    assert 0 < len(by_platform) < len(everything)
    assert {r.properties["platform"] for r in by_platform} == {"Sentinel-1B"}
    vv_only = asf_search.search(**common, polarization="VV", intersectsWith=BOX_WKT)
    assert {r.properties["polarization"] for r in vv_only} == {"VV"}
    assert len(vv_only) < len(everything)
    ascending = asf_search.search(**common, flightDirection="ASCENDING", intersectsWith=BOX_WKT)
    assert len(ascending) == 0  # the recorded track is descending
    other_track = asf_search.search(**common, relativeOrbit=14, intersectsWith=BOX_WKT)
    assert len(other_track) == 0
    # For Sentinel-1 asf_search sends `frame` as the ASF frame (FRAME_NUMBER), not the ESA one.
    frame = asf_search.search(**common, frame=411)
    assert len(frame) > 0
    assert {attribute(r.umm, "FRAME_NUMBER") for r in frame} == {"411"}
    assert "int,FRAME_NUMBER,411" in CmrServer.fields(
        acquire_services.cmr.granule_requests()[-1], "attribute[]"
    )
    assert len(asf_search.search(**common, frame=2500)) == 0  # an ESA frame number
    far_away = asf_search.search(**common, intersectsWith="POINT(10 45)")
    assert len(far_away) == 0
    # A non-rectangular polygon goes out as `polygon`, and is intersected as such.
    triangle = "POLYGON((-121 54.5,-120.5 54.5,-120.75 54.8,-121 54.5))"
    assert len(asf_search.search(**common, intersectsWith=triangle)) == len(everything)
    assert "polygon" in dict(acquire_services.cmr.granule_requests()[-1].fields)


def test_granule_and_product_search(acquire_services: AcquireServices) -> None:
    by_name = asf_search.granule_search([SLC_STACK_REFERENCE])
    assert [r.properties["sceneName"] for r in by_name] == [SLC_STACK_REFERENCE]
    by_ur = asf_search.product_search([f"{SLC_STACK_REFERENCE}-SLC"])
    assert [r.properties["fileID"] for r in by_ur] == [f"{SLC_STACK_REFERENCE}-SLC"]
    pattern = asf_search.granule_search(["S1A_IW_SLC__1SSV_201605*"])
    assert SLC_STACK_REFERENCE in {r.properties["sceneName"] for r in pattern}


def test_stack_from_id_returns_the_recorded_stack_with_baselines(
    acquire_services: AcquireServices,
) -> None:
    stack = asf_search.stack_from_id(f"{SLC_STACK_REFERENCE}-SLC")
    assert len(stack) == 176
    reference = [p for p in stack if p.properties["sceneName"] == SLC_STACK_REFERENCE]
    assert reference and reference[0].properties["perpendicularBaseline"] == 0
    assert all(p.properties["temporalBaseline"] is not None for p in stack)
    assert any(abs(p.properties["perpendicularBaseline"] or 0) > 10 for p in stack)
    # The stack query: the reference's track/direction/beam, both polarization families.
    stack_queries = acquire_services.cmr.granule_requests()[1:]
    polarizations = {v for h in stack_queries for v in CmrServer.fields(h, "attribute[]")}
    assert {"string,POLARIZATION,VV", "string,POLARIZATION,VV+VH"} <= polarizations
    assert "string,ASCENDING_DESCENDING,DESCENDING" in polarizations


def test_burst_searches(acquire_services: AcquireServices) -> None:
    by_id = asf_search.search(
        dataset="SLC-BURST", fullBurstID=BURST_ID, start="2019-01-01", end="2019-12-31"
    )
    assert len(by_id) == 30
    assert {r.properties["burst"]["fullBurstID"] for r in by_id} == {BURST_ID}
    geo = asf_search.geo_search(
        dataset="SLC-BURST",
        intersectsWith=BURST_POINT,
        relativeOrbit=174,
        polarization="VV",
        start="2019-01-01",
        end="2019-12-31",
    )
    assert {r.properties["fileID"] for r in geo} == {r.properties["fileID"] for r in by_id}
    assert len(asf_search.geo_search(dataset="SLC-BURST", intersectsWith="POINT(-120 54)")) == 0
    level = asf_search.search(processingLevel="BURST", intersectsWith=BURST_POINT)
    assert len(level) == 166
    stack = by_id[0].stack()
    assert len(stack) == 166
    # Scenes and bursts do not mix.
    assert len(asf_search.search(processingLevel="SLC", intersectsWith=BURST_POINT)) == 0


def test_paging_with_search_after(acquire_tls: TlsFiles, acquire_products: ProductFactory) -> None:
    with running_services(acquire_tls, acquire_products, max_page_size=50) as services:
        results = asf_search.search(processingLevel="SLC", relativeOrbit=13)
        assert len(results) == 176
        pages = services.cmr.granule_requests()
        assert len(pages) == 4
        assert "CMR-Search-After" not in pages[0].headers
        assert all("CMR-Search-After" in p.headers for p in pages[1:])
        assert len({r.properties["fileID"] for r in results}) == 176


def test_bad_requests_answer_like_cmr(acquire_services: AcquireServices) -> None:
    url = f"{acquire_services.cmr.url}/search/granules.umm_json"
    answer = requests.post(url, data={"no_such_parameter": "1"}, timeout=10)
    assert answer.status_code == 400
    assert "no_such_parameter" in answer.json()["errors"][0]
    wrong = requests.post(
        url, data={"provider": "ASF"}, headers={"Authorization": "Bearer nope"}, timeout=10
    )
    assert wrong.status_code == 401
    acquire_services.cmr.faults.append(400)
    with pytest.raises(ASFSearch4xxError):
        asf_search.search(processingLevel="SLC", maxResults=1)


def test_served_metadata_matches_the_served_files(acquire_services: AcquireServices) -> None:
    results = asf_search.granule_search([SLC_STACK_REFERENCE])
    product = results[0]
    url = product.properties["url"]
    assert url.startswith(acquire_services.download.url + "/SLC/SA/")
    answer = requests.get(url, headers=_auth(acquire_services), timeout=30)
    assert answer.status_code == 200
    assert int(answer.headers["Content-Length"]) == product.properties["bytes"]
    assert hashlib.md5(answer.content).hexdigest() == product.properties["md5sum"]  # noqa: S324
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        manifest = etree.fromstring(archive.read(f"{SLC_STACK_REFERENCE}.SAFE/manifest.safe"))
    assert any(n.endswith(".xml") and "/annotation/s1a-iw2-slc-vv-" in n for n in names)
    start = manifest.find(".//{*}acquisitionPeriod/{*}startTime").text
    assert start.startswith("2016-05-28T14:19:08")
    assert manifest.find(".//{*}orbitReference/{*}relativeOrbitNumber").text == "13"


# ---------------------------------------------------------------------------------------------
# Earthdata login


def test_edl_token_check(acquire_services: AcquireServices) -> None:
    edl = acquire_services.edl.host
    session = asf_search.ASFSession(edl_host=edl, cmr_host=acquire_services.cmr.host)
    session.auth_with_token(acquire_services.token)
    assert session.headers["Authorization"] == f"Bearer {acquire_services.token}"
    with pytest.raises(ASFAuthenticationError):
        asf_search.ASFSession(edl_host=edl, cmr_host=acquire_services.cmr.host).auth_with_token(
            "EDL-wrong-token"
        )
    statuses = [
        requests.post(
            f"https://{edl}/oauth/tokens/user?client_id=x", data={"token": token}, timeout=10
        ).status_code
        for token in (acquire_services.token, "EDL-wrong-token", "")
    ]
    assert statuses == [200, 401, 401]
    user = requests.get(f"https://{edl}/api/users/user", headers=_auth(acquire_services), timeout=9)
    assert user.status_code == 200
    assert requests.get(f"https://{edl}/api/users/user", timeout=9).status_code == 401


def test_edl_login_with_username_and_password(acquire_services: AcquireServices) -> None:
    edl = acquire_services.edl.host
    session = asf_search.ASFSession(edl_host=edl, asf_auth_host=edl)
    session.auth_with_creds(acquire_services.username, acquire_services.password)
    assert session.headers["Authorization"] == f"Bearer {acquire_services.token}"
    assert "asf-urs" in session.cookies.get_dict()
    with pytest.raises(ASFAuthenticationError):
        asf_search.ASFSession(edl_host=edl, asf_auth_host=edl).auth_with_creds(
            acquire_services.username, "wrong password"
        )
    wrong = requests.post(
        f"https://{edl}/api/users/find_or_create_token", auth=("someone", "else"), timeout=10
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_credentials"


# ---------------------------------------------------------------------------------------------
# Downloads


def test_downloads_demand_the_token(acquire_services: AcquireServices) -> None:
    download = acquire_services.download
    path = next(p for p in download.paths() if p.endswith(".zip"))
    assert requests.get(download.url + path, timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer EDL-wrong"}
    assert requests.get(download.url + path, headers=wrong, timeout=10).status_code == 401
    basic = requests.get(download.url + path, auth=("someone", "else"), timeout=10)
    assert basic.status_code == 401
    assert requests.head(download.url + path, headers=_auth(acquire_services), timeout=10).ok
    with_basic = requests.head(
        download.url + path, auth=(acquire_services.username, acquire_services.password), timeout=9
    )
    assert with_basic.status_code == 200
    assert download.count(path) == 5
    assert requests.get(download.url + "/SLC/SA/nothing.zip", headers=_auth(acquire_services),
                        timeout=10).status_code == 404  # fmt: skip


def test_asf_search_downloads_a_scene(acquire_services: AcquireServices, tmp_path: Path) -> None:
    product = asf_search.granule_search([SLC_STACK_REFERENCE])[0]
    session = asf_search.ASFSession().auth_with_token(acquire_services.token)
    product.download(path=str(tmp_path), session=session)
    target = tmp_path / f"{SLC_STACK_REFERENCE}.zip"
    assert target.stat().st_size == product.properties["bytes"]
    assert hashlib.md5(target.read_bytes()).hexdigest() == product.properties["md5sum"]  # noqa: S324


def test_burst_files_answer_202_first_then_the_files(acquire_services: AcquireServices) -> None:
    from osgeo import gdal

    burst = asf_search.search(
        dataset="SLC-BURST", fullBurstID=BURST_ID, start="2018-08-15", end="2018-08-16"
    )[0]
    tiff_url = burst.properties["url"]
    xml_url = burst.properties["additionalUrls"][0]
    assert tiff_url.startswith(acquire_services.download.url + "/S1B_IW_SLC__1SDV_20180815T")
    headers = _auth(acquire_services)
    assert requests.get(tiff_url, headers=headers, timeout=10).status_code == 202
    tiff = requests.get(tiff_url, headers=headers, timeout=10)
    assert tiff.status_code == 200
    assert int(tiff.headers["Content-Length"]) == int(burst.properties["bytes"])
    assert f'filename="{burst.properties["fileID"]}.tiff"' in tiff.headers["Content-Disposition"]
    gdal.FileFromMemBuffer("/vsimem/burst.tiff", tiff.content)
    try:
        dataset = gdal.Open("/vsimem/burst.tiff")
        assert (dataset.RasterYSize, dataset.RasterXSize) == (1519, 24229)
        assert gdal.GetDataTypeName(dataset.GetRasterBand(1).DataType) == "CInt16"
        dataset = None
    finally:
        gdal.Unlink("/vsimem/burst.tiff")
    assert requests.get(xml_url, headers=headers, timeout=10).status_code == 202
    xml = requests.get(xml_url, headers=headers, timeout=30)
    assert xml.status_code == 200
    root = etree.fromstring(xml.content)
    product = root.find("metadata/product")
    assert (product.find("swath").text, product.find("polarisation").text) == ("IW3", "VV")
    bursts = product.findall("content/swathTiming/burstList/burst")
    assert len(bursts) == 6  # burst index 5 exists
    assert bursts[5].find("azimuthTime").text.startswith("2018-08-15T15:15:58")
    assert root.find("manifest/{urn:ccsds:schema:xfdu:1}XFDU") is not None
    counts = acquire_services.download.counts()
    assert counts[tiff_url.split(acquire_services.download.url)[1]] == 2


def test_burst2safe_reads_the_burst_xml(acquire_services: AcquireServices) -> None:
    from burst2safe.utils import get_subxml_from_metadata

    burst = asf_search.search(dataset="SLC-BURST", fullBurstID=BURST_ID, maxResults=1)[0]
    xml_path = burst.properties["additionalUrls"][0].split(acquire_services.download.url)[1]
    data = acquire_services.download.content(xml_path)
    path = Path(acquire_services.download.products.folder) / "burst.xml"
    path.write_bytes(data)
    product = get_subxml_from_metadata(path, "product", "IW3", "VV")
    assert int(product.find(".//linesPerBurst").text) > 0
    manifest = get_subxml_from_metadata(path, "manifest")
    assert manifest is not None


def test_cut_body_then_range_resume(acquire_services: AcquireServices) -> None:
    download = acquire_services.download
    product = asf_search.granule_search([SLC_STACK_REFERENCE])[0]
    url = product.properties["url"]
    path = url.split(download.url)[1]
    download.cut_once(path)
    received = bytearray()
    with pytest.raises(requests.exceptions.RequestException):
        with requests.get(url, headers=_auth(acquire_services), stream=True, timeout=10) as cut:
            assert int(cut.headers["Content-Length"]) == product.properties["bytes"]
            for chunk in cut.iter_content(65536):
                received.extend(chunk)
    assert 0 < len(received) < product.properties["bytes"]
    headers = {**_auth(acquire_services), "Range": f"bytes={len(received)}-"}
    rest = requests.get(url, headers=headers, timeout=30)
    assert rest.status_code == 206
    total = product.properties["bytes"]
    assert rest.headers["Content-Range"] == f"bytes {len(received)}-{total - 1}/{total}"
    whole = bytes(received) + rest.content
    assert hashlib.md5(whole).hexdigest() == product.properties["md5sum"]  # noqa: S324
    assert download.count(path) == 2
    # The cut happens once: the next full GET is whole.
    again = requests.get(url, headers=_auth(acquire_services), timeout=30)
    assert again.content == whole
    bad = requests.get(url, headers={**_auth(acquire_services), "Range": f"bytes={total}-"},
                       timeout=10)  # fmt: skip
    assert bad.status_code == 416


def test_cut_every_file_once(acquire_tls: TlsFiles, acquire_products: ProductFactory) -> None:
    with running_services(acquire_tls, acquire_products, cut_every_file_once=True) as services:
        product = asf_search.granule_search([SLC_STACK_REFERENCE])[0]
        headers = {"Authorization": f"Bearer {services.token}"}
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(product.properties["url"], headers=headers, timeout=10).raise_for_status()
        whole = requests.get(product.properties["url"], headers=headers, timeout=30)
        assert len(whole.content) == product.properties["bytes"]


def test_burst2safe_cookie_url(acquire_services: AcquireServices) -> None:
    import burst2safe.download

    assert burst2safe.download.COOKIE_URL == acquire_services.cookie_url
    session = requests.Session()
    assert session.get(acquire_services.cookie_url, timeout=10).status_code == 401
    answer = session.get(acquire_services.cookie_url, headers=_auth(acquire_services), timeout=10)
    assert answer.status_code == 200
    assert "asf-urs" in session.cookies.get_dict()
    # The cookie alone now opens the files, as the extractor's does.
    path = next(p for p in acquire_services.download.paths() if p.endswith(".zip"))
    assert session.head(acquire_services.download.url + path, timeout=10).status_code == 200
    assert acquire_services.download.count(BURST2SAFE_COOKIE_PATH) == 2


# ---------------------------------------------------------------------------------------------
# Benchmark helper


def test_download_volume_scene_vs_burst() -> None:
    summary = download_volume(dates=20, area_km=30.0)
    for line in summary.lines():
        print(line)
    assert len(summary.dates) == 20
    assert summary.scenes >= 20
    assert summary.scene_bytes > 20 * 2e9  # real SLC zips weigh 2.8-4.5 GB
    assert 2 <= summary.bursts_along_track <= 3  # IW bursts are ~20 km long
    best, worst = summary.burst_bytes
    assert 0 < best < worst < summary.scene_bytes / 5
    assert summary.burst_bytes_measured > 20 * 1e8  # ~147 MB a burst, one burst a date
    assert summary.scene_requests == summary.scenes


@pytest.mark.slow
def test_burst2safe_builds_a_safe_from_the_loopback_bursts(
    acquire_services: AcquireServices, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """burst2safe end to end: search, cookie URL, 202s, TIFF + XML, SAFE; read back."""
    from burst2safe.burst2safe import burst2safe

    from insar_pipeline.inputs.safe import read_product

    monkeypatch.setenv("EARTHDATA_TOKEN", acquire_services.token)
    burst = asf_search.search(
        dataset="SLC-BURST", fullBurstID=BURST_ID, start="2018-08-15", end="2018-08-16"
    )[0]
    safe = burst2safe(granules=[burst.properties["fileID"]], work_dir=tmp_path)
    assert safe.name.startswith("S1B_IW_SLC__1SSV_20180815T151558_")
    assert len(list((safe / "measurement").glob("s1b-iw3-slc-vv-*.tiff"))) == 1
    assert len(list((safe / "annotation").glob("s1b-iw3-slc-vv-*.xml"))) == 1
    product = read_product(safe)
    assert product.relative_orbit == 174
    assert 3 in product.swaths
    counts = acquire_services.download.counts()
    tiff_path = burst.properties["url"].split(acquire_services.download.url)[1]
    assert counts[tiff_path] == 2  # a 202, then the file
    assert not (Path.home() / ".netrc").exists()  # the token was used, no netrc written


def test_scene_zip_reads_back_through_the_pipeline(
    acquire_services: AcquireServices, tmp_path: Path
) -> None:
    from insar_pipeline.inputs.safe import read_product

    product = asf_search.granule_search([SLC_STACK_REFERENCE])[0]
    path = product.properties["url"].split(acquire_services.download.url)[1]
    target = tmp_path / f"{SLC_STACK_REFERENCE}.zip"
    target.write_bytes(acquire_services.download.content(path))
    read = read_product(target)
    assert read.name == SLC_STACK_REFERENCE
    assert read.relative_orbit == 13
    assert set(read.swaths) == {1, 2, 3}
    assert read.polarizations == ("vv",)


def test_neighbour_bursts_give_several_burst_ids_a_date(
    acquire_tls: TlsFiles, acquire_products: ProductFactory
) -> None:
    records = recorded("slc") + burst_archive((-1, 0, 1))
    with running_services(acquire_tls, acquire_products, records=records) as services:
        ids = ["174_372325_IW3", BURST_ID, "174_372327_IW3"]
        found = asf_search.search(
            dataset="SLC-BURST", fullBurstID=ids, start="2019-01-01", end="2019-12-31"
        )
        per_date: dict[str, set[str]] = {}
        for burst in found:
            day = burst.properties["startTime"][:10]
            per_date.setdefault(day, set()).add(burst.properties["burst"]["fullBurstID"])
        assert len(per_date) == 30
        assert all(value == set(ids) for value in per_date.values())
        # Footprints moved along the track: the recorded burst's centre is in it alone.
        middle = asf_search.geo_search(
            dataset="SLC-BURST", intersectsWith=BURST_POINT, start="2019-06-01", end="2019-06-30"
        )
        assert {b.properties["burst"]["fullBurstID"] for b in middle} == {BURST_ID}
        # A burst missing from the archive on one date.
        day = sorted(per_date)[3]
        removed = services.cmr.remove(
            lambda r: (
                attribute(r["umm"], "BURST_ID_FULL") == "174_372327_IW3"
                and time_range(r["umm"])[0].strftime("%Y-%m-%d") == day
            )
        )
        assert len(removed) == 1
        again = asf_search.search(
            dataset="SLC-BURST", fullBurstID=ids, start="2019-01-01", end="2019-12-31"
        )
        assert len(again) == len(found) - 1
        # One XML per SLC and polarization holds every burst index of that date.
        burst = next(b for b in again if b.properties["burst"]["fullBurstID"] == ids[2])
        xml_path = burst.properties["additionalUrls"][0].split(services.download.url)[1]
        root = etree.fromstring(services.download.content(xml_path))
        times = root.findall("metadata/product/content/swathTiming/burstList/burst/azimuthTime")
        assert len(times) == burst.properties["burst"]["burstIndex"] + 1
        assert root.find("metadata/noise/content/noiseRangeVectorList") is not None
        assert root.find("metadata/calibration/content/calibrationVectorList") is not None
        services.cmr.clear_requests()
        assert services.cmr.requests == []


def test_download_server_over_tls(acquire_tls: TlsFiles, acquire_products: ProductFactory) -> None:
    with running_services(acquire_tls, acquire_products, download_tls=True) as services:
        product = asf_search.granule_search([SLC_STACK_REFERENCE])[0]
        assert product.properties["url"].startswith("https://127.0.0.1:")
        answer = requests.get(
            product.properties["url"], headers={"Authorization": f"Bearer {services.token}"},
            timeout=30,
        )  # fmt: skip
        assert answer.status_code == 200
        assert len(answer.content) == product.properties["bytes"]
