"""Orbit provisioning for a run: cache first, one download per file, concurrency, the plan."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree

from insar_pipeline.download import Download
from insar_pipeline.errors import ProvisioningError
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.safe import Product
from insar_pipeline.orbits.provision import OrbitProvision, describe_orbit_plan, provision_orbits
from insar_pipeline.orbits.sources import parse_s3_listing
from orbit_factories import REALDATA, make_eof, poeorb_name, resorb_name, scene
from orbit_server import (
    TRUNCATED,
    OrbitServer,
    orbit_service_fixture,  # noqa: F401  (the `orbit_service` fixture)
)

REPO = Path(__file__).resolve().parents[1]
SERVICES = REALDATA / "orbit_services"
needs_realdata = pytest.mark.skipif(
    not REALDATA.is_dir(), reason=f"real data folder {REALDATA} is absent"
)

SCENE = scene("S1A", "20250406T022008")
POEORB = poeorb_name("S1A", "20250406")
RESORB = resorb_name("S1A", "20250406T000000")  # 00:00-03:17, covers SCENE with the margins


def settings_for(server: OrbitServer, tmp_path: Path, sources: str = "asf,aws,cdse") -> Settings:
    return server.settings(tmp_path / "data", orbit_sources=sources)


def put(settings: Settings, *names: str) -> None:
    settings.orbit_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        (settings.orbit_dir / name).write_bytes(make_eof(name))


def after(product: Product, days: float) -> datetime:
    return product.stop + timedelta(days=days)


# --- the cache -----------------------------------------------------------------------------


def test_a_cache_hit_makes_no_request(orbit_service: OrbitServer, tmp_path: Path) -> None:
    settings = settings_for(orbit_service, tmp_path)
    put(settings, POEORB, poeorb_name("S1A", "20250405"), RESORB)
    orbit_service.add(poeorb_name("S1A", "20250406", version=1))  # newer, but we have one
    downloads: list[Download] = []
    result = provision_orbits(settings, [SCENE], downloads.append)
    assert result == OrbitProvision({SCENE.name: settings.orbit_dir / POEORB}, {})
    assert orbit_service.count() == 0 and downloads == []
    assert not (settings.orbit_dir / ".orbits.lock").exists()  # not even the lock was needed


def test_the_second_run_is_served_by_the_first(orbit_service: OrbitServer, tmp_path: Path) -> None:
    orbit_service.add(POEORB, poeorb_name("S1A", "20250418"))
    settings = settings_for(orbit_service, tmp_path, "aws")
    products = [SCENE, scene("S1A", "20250418T022008")]
    first = provision_orbits(settings, products)
    requests = orbit_service.count()
    assert requests == 2 + 2  # listings of April and May, then two files
    second = provision_orbits(settings, products)
    assert second == first and orbit_service.count() == requests


def test_a_broken_cached_file_is_downloaded_again(
    orbit_service: OrbitServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(orbit_service, tmp_path, "asf")
    settings.orbit_dir.mkdir(parents=True)
    (settings.orbit_dir / POEORB).write_bytes(make_eof(POEORB)[:5000])  # a copy cut short
    orbit_service.add(POEORB)
    result = provision_orbits(settings, [SCENE])
    assert result.files == {SCENE.name: settings.orbit_dir / POEORB}
    assert (settings.orbit_dir / POEORB).read_bytes() == orbit_service.body(POEORB)
    assert orbit_service.count("asf-file") == 1
    assert "ignoring a broken orbit file" in caplog.text


def test_a_cached_restituted_file_serves_a_recent_scene(
    orbit_service: OrbitServer, tmp_path: Path
) -> None:
    settings = settings_for(orbit_service, tmp_path)
    put(settings, RESORB)
    orbit_service.add(POEORB)  # cannot exist yet in reality; it must not even be asked for
    result = provision_orbits(settings, [SCENE], now=after(SCENE, 2))
    assert result.files == {SCENE.name: settings.orbit_dir / RESORB}
    assert orbit_service.count() == 0
    plan = describe_orbit_plan(settings, [SCENE], now=after(SCENE, 2))
    assert plan == {SCENE.name: f"cached: {RESORB}"}


def test_an_old_scene_with_a_cached_restituted_file_looks_for_a_precise_one(
    orbit_service: OrbitServer, tmp_path: Path
) -> None:
    settings = settings_for(orbit_service, tmp_path, "aws,asf")
    put(settings, RESORB)
    plan = describe_orbit_plan(settings, [SCENE], now=after(SCENE, 60))
    assert plan == {SCENE.name: f"download: first try aws (else cached {RESORB})"}
    orbit_service.add(POEORB)
    result = provision_orbits(settings, [SCENE], now=after(SCENE, 60))
    assert result.files == {SCENE.name: settings.orbit_dir / POEORB}


def test_without_a_precise_file_anywhere_the_cached_restituted_one_is_kept(
    orbit_service: OrbitServer, tmp_path: Path
) -> None:
    settings = settings_for(orbit_service, tmp_path, "asf")
    put(settings, RESORB)
    orbit_service.add(RESORB)  # ASF answers with the RESORB we already have
    downloads: list[Download] = []
    result = provision_orbits(settings, [SCENE], downloads.append, now=after(SCENE, 60))
    assert result == OrbitProvision({SCENE.name: settings.orbit_dir / RESORB}, {})
    assert downloads == [] and orbit_service.count("asf-file") == 0
    orbit_service.answer_asf(SCENE.name, 503)  # and when the service is down, too
    result = provision_orbits(settings, [SCENE], now=after(SCENE, 60))
    assert result == OrbitProvision({SCENE.name: settings.orbit_dir / RESORB}, {})


def test_stale_temp_files_are_removed(orbit_service: OrbitServer, tmp_path: Path) -> None:
    settings = settings_for(orbit_service, tmp_path, "asf")
    settings.orbit_dir.mkdir(parents=True)
    leftover = settings.orbit_dir / f".{POEORB}.4242.1234.part"
    leftover.write_bytes(b"<?xml half a file")
    orbit_service.add(POEORB)
    provision_orbits(settings, [SCENE])
    assert sorted(p.name for p in settings.orbit_dir.iterdir()) == [".orbits.lock", POEORB]


# --- choosing and fetching -----------------------------------------------------------------


@pytest.mark.parametrize("source", ["asf", "aws", "cdse"])
def test_a_restituted_file_when_no_precise_one_exists(
    orbit_service: OrbitServer, tmp_path: Path, source: str
) -> None:
    orbit_service.add(RESORB, resorb_name("S1A", "20250406T031700"), POEORB.replace("S1A", "S1B"))
    settings = settings_for(orbit_service, tmp_path, source)
    result = provision_orbits(settings, [SCENE], now=after(SCENE, 1))
    assert result == OrbitProvision({SCENE.name: settings.orbit_dir / RESORB}, {})


def test_an_offered_file_too_short_for_the_margins_is_refused(
    orbit_service: OrbitServer, tmp_path: Path
) -> None:
    short = resorb_name("S1A", "20250406T020000")  # covers the scene, not the orbit before it
    orbit_service.add(short)
    settings = settings_for(orbit_service, tmp_path, "asf")
    result = provision_orbits(settings, [SCENE])
    assert result.files == {} and f"offered {short}, too short" in result.failures[SCENE.name]
    assert orbit_service.count("asf-file") == 0 and list(settings.orbit_dir.iterdir()) == [
        settings.orbit_dir / ".orbits.lock"
    ]


def test_a_scene_without_orbit_fails_alone(orbit_service: OrbitServer, tmp_path: Path) -> None:
    orbit_service.add(POEORB)
    lonely = scene("S1A", "20250501T022008")
    settings = settings_for(orbit_service, tmp_path, "asf,aws")
    result = provision_orbits(settings, [SCENE, lonely])
    assert result.files == {SCENE.name: settings.orbit_dir / POEORB}
    assert list(result.failures) == [lonely.name]
    assert "asf: has no orbit file" in result.failures[lonely.name]
    assert "aws: has no orbit file" in result.failures[lonely.name]


def test_scenes_of_one_day_share_one_lookup_and_one_download(
    orbit_service: OrbitServer, tmp_path: Path
) -> None:
    day = [scene("S1A", f"20250406T02{second}") for second in ("2008", "2035", "2102")]
    other = scene("S1A", "20250418T022008")
    orbit_service.add(POEORB, poeorb_name("S1A", "20250418"))
    downloads: list[Download] = []
    settings = settings_for(orbit_service, tmp_path, "asf")
    result = provision_orbits(settings, [*day, other, day[0]], downloads.append)
    assert set(result.files) == {p.name for p in [*day, other]} and not result.failures
    assert {result.files[p.name].name for p in day} == {POEORB}
    assert orbit_service.count("asf") == 2 and orbit_service.count("asf-file") == 2
    assert sorted(d.name for d in downloads) == sorted([POEORB, poeorb_name("S1A", "20250418")])
    assert all(d.kind == "orbit" and d.bytes == d.path.stat().st_size for d in downloads)


def test_s1c_gets_an_s1c_file(orbit_service: OrbitServer, tmp_path: Path) -> None:
    s1c = scene("S1C", "20250406T022008")
    orbit_service.add(POEORB, poeorb_name("S1C", "20250406"))
    result = provision_orbits(settings_for(orbit_service, tmp_path, "aws"), [s1c])
    assert result.files[s1c.name].name == poeorb_name("S1C", "20250406")
    prefixes = {hit.query["prefix"][0] for hit in orbit_service.hits("aws-list")}
    assert prefixes == {
        "AUX_POEORB/S1C_OPER_AUX_POEORB_OPOD_202504",
        "AUX_POEORB/S1C_OPER_AUX_POEORB_OPOD_202505",
    }


def test_bucket_listings_are_paged_and_cached(orbit_service: OrbitServer, tmp_path: Path) -> None:
    orbit_service.page_size = 4
    days = [f"202504{day:02d}" for day in range(1, 21)]
    orbit_service.add(*(poeorb_name("S1A", day) for day in days))
    products = [scene("S1A", f"{day}T022008") for day in days[::4]]
    result = provision_orbits(settings_for(orbit_service, tmp_path, "aws"), products)
    assert len(result.files) == 5 and not result.failures
    listing = orbit_service.hits("aws-list")
    # Files for April scenes are made in April (10 here) and May (10): 4 keys a page makes
    # 3 + 3 pages, each asked once for all 5 scenes.
    assert len(listing) == 6
    tokens = [hit.query.get("continuation-token") for hit in listing]
    assert tokens.count(None) == 2  # each listing starts without a token, then follows them
    assert orbit_service.count("aws-file") == 5


@needs_realdata
def test_real_bucket_keys_including_reprocessed_files(
    orbit_service: OrbitServer, tmp_path: Path
) -> None:
    names = []
    for page in ("POEORB_page1", "POEORB_page7_last"):
        data = (SERVICES / f"s1-orbits_s3_list_prefix_AUX_{page}.xml").read_bytes()
        names += [key.split("/", 1)[1] for key in parse_s3_listing(data).keys]
    orbit_service.add(*names)  # bodies are made on download, listings hold 1239 real keys
    recent, old = scene("S1A", "20210120T053000"), scene("S1A", "20170222T053000")
    result = provision_orbits(settings_for(orbit_service, tmp_path, "aws"), [recent, old])
    assert {p: f.name for p, f in result.files.items()} == {
        recent.name: "S1A_OPER_AUX_POEORB_OPOD_20210209T121849_V20210119T225942_20210121T005942"
        ".EOF",
        old.name: "S1A_OPER_AUX_POEORB_OPOD_20210301T141627_V20170221T225942_20170223T005942.EOF",
    }
    prefixes = [hit.query["prefix"][0] for hit in orbit_service.hits("aws-list")]
    # The 2017 file was remade in 2021: only the mission-wide listing holds it.
    assert "AUX_POEORB/S1A_" in prefixes and "AUX_POEORB/" not in prefixes


@needs_realdata
def test_the_real_restituted_file_through_cdse(orbit_service: OrbitServer, tmp_path: Path) -> None:
    real = json.loads((SERVICES / "cdse_odata_query_RESORB_S1A_20231013.json").read_bytes())
    name, product_id = real["value"][0]["Name"], real["value"][0]["Id"]
    body = (REALDATA / "orbits" / name).read_bytes()
    orbit_service.add(name, body=body)
    orbit_service.set_id(name, product_id)
    product = scene("S1A", "20231013T110000")
    settings = settings_for(orbit_service, tmp_path, "cdse")
    result = provision_orbits(settings, [product], now=after(product, 1))
    assert result.files == {product.name: settings.orbit_dir / name}
    assert (settings.orbit_dir / name).read_bytes() == body
    filters = [hit.query["$filter"][0] for hit in orbit_service.hits("cdse-query")]
    assert ["AUX_POEORB" in f for f in filters] == [True, False]  # precise asked first
    assert (
        orbit_service.hits("cdse-file")[0].path == f"/zipper/odata/v1/Products({product_id})/$value"
    )


# --- concurrency ---------------------------------------------------------------------------


def test_eight_threads_download_a_file_once(orbit_service: OrbitServer, tmp_path: Path) -> None:
    orbit_service.add(POEORB)
    orbit_service.latency_s = 0.05
    settings = settings_for(orbit_service, tmp_path, "asf")
    barrier = threading.Barrier(8)
    results: list[OrbitProvision] = []

    def run() -> None:
        barrier.wait()
        results.append(provision_orbits(settings, [SCENE]))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 8 and all(
        r.files == {SCENE.name: settings.orbit_dir / POEORB} for r in results
    )
    assert orbit_service.count("asf") == 1 and orbit_service.count("asf-file") == 1


CHILD = """
import json, sys, time
from insar_pipeline.inputs.config import Settings
from insar_pipeline.errors import ProvisioningError
from insar_pipeline.orbits.provision import provision_orbits
from orbit_factories import make_product
args = json.loads(sys.argv[1])
settings = Settings(**args["settings"])
while time.time() < args["start_at"]:
    time.sleep(0.002)
result = provision_orbits(settings, [make_product(args["scene"])])
print(json.dumps({name: str(path) for name, path in result.files.items()}))
"""


def test_eight_processes_download_a_file_once(orbit_service: OrbitServer, tmp_path: Path) -> None:
    orbit_service.add(POEORB)
    orbit_service.latency_s = 0.1
    settings = settings_for(orbit_service, tmp_path, "aws")
    fields = ("data_dir", "orbit_sources", "asf_orbit_url", "aws_orbit_url")
    args = {
        "settings": {k: getattr(settings, k) for k in fields}
        | {"data_dir": str(settings.data_dir)},
        "scene": SCENE.name,
        "start_at": time.time() + 2.0,  # all start together, once python is up
    }
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO / "code"), str(REPO / "tests")])}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(args)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(8)
    ]
    outputs = [child.communicate(timeout=60)[0] for child in children]
    assert [child.returncode for child in children] == [0] * 8
    expected = {SCENE.name: str(settings.orbit_dir / POEORB)}
    assert all(json.loads(output) == expected for output in outputs)
    assert orbit_service.count("aws-file") == 1
    assert orbit_service.count("aws-list") == 2  # one process listed; the others found the file


def test_a_cut_download_leaves_no_file_for_a_concurrent_reader(
    orbit_service: OrbitServer, tmp_path: Path
) -> None:
    orbit_service.add(POEORB)
    orbit_service.fail("asf-file", *[TRUNCATED] * 10)
    settings = settings_for(orbit_service, tmp_path, "asf")
    result = provision_orbits(settings, [SCENE])
    assert result.files == {} and "incomplete or malformed XML" in result.failures[SCENE.name]
    assert [p.name for p in settings.orbit_dir.iterdir()] == [".orbits.lock"]


# --- the plan ------------------------------------------------------------------------------


def test_the_plan_makes_no_request_and_writes_nothing(
    orbit_service: OrbitServer, tmp_path: Path
) -> None:
    settings = settings_for(orbit_service, tmp_path, "cdse,asf")
    other = scene("S1B", "20210101T101010")
    assert describe_orbit_plan(settings, [SCENE, other]) == {
        SCENE.name: "download: first try cdse",
        other.name: "download: first try cdse",
    }
    assert not settings.data_dir.exists()
    put(settings, POEORB)
    assert describe_orbit_plan(settings, [SCENE, other, SCENE]) == {
        SCENE.name: f"cached: {POEORB}",
        other.name: "download: first try cdse",
    }
    assert orbit_service.count() == 0


# --- the fake services answer in the real formats ------------------------------------------


@needs_realdata
def test_the_fake_bucket_answers_like_the_real_one(orbit_service: OrbitServer) -> None:
    import requests

    orbit_service.add(POEORB)
    with requests.get(
        f"{orbit_service.url}/aws/", params={"list-type": "2", "prefix": "AUX_"}
    ) as r:
        fake = etree.fromstring(r.content)
    real = etree.fromstring(
        (SERVICES / "s1-orbits_s3_list_prefix_AUX_POEORB_page1.xml").read_bytes()
    )
    assert fake.tag == real.tag  # same namespace and root
    tags = {child.tag for child in real[-1]} - {f"{{{etree.QName(real).namespace}}}Owner"}
    assert {child.tag for child in fake[-1]} == tags  # V2 lists no Owner unless asked


@needs_realdata
def test_the_fake_catalogue_answers_like_the_real_one(orbit_service: OrbitServer) -> None:
    import requests

    orbit_service.add(RESORB)
    query = "startswith(Name,'S1A') and contains(Name,'AUX_RESORB') and ContentDate/Start lt "
    query += "'2025-04-06T01:00:00.000000Z' and ContentDate/End gt '2025-04-06T02:00:00.000000Z'"
    with requests.get(
        f"{orbit_service.url}/cdse/odata/v1/Products", params={"$filter": query}
    ) as r:
        fake = r.json()
    real = json.loads((SERVICES / "cdse_odata_query_RESORB_S1A_20250310.json").read_bytes())
    assert [item["Name"] for item in fake["value"]] == [RESORB]
    assert set(fake) | {"@odata.nextLink"} == set(real)
    assert list(fake["value"][0]) == list(real["value"][0])
    assert list(fake["value"][0]["ContentDate"]) == list(real["value"][0]["ContentDate"])


def test_secrets_never_reach_the_log(
    orbit_service: OrbitServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    orbit_service.add(POEORB)
    orbit_service.fail("cdse-file", 500)
    result = provision_orbits(settings_for(orbit_service, tmp_path, "cdse"), [SCENE])
    assert not result.failures and "HTTP 500" in caplog.text  # the log did record the run
    assert orbit_service.cdse_password not in caplog.text and orbit_service.token not in caplog.text


def test_an_unwritable_orbit_folder_is_a_clear_error(
    orbit_service: OrbitServer, tmp_path: Path
) -> None:
    settings = settings_for(orbit_service, tmp_path)
    settings.data_dir.mkdir(parents=True)
    settings.orbit_dir.write_text("a file where the folder should be")
    with pytest.raises(ProvisioningError, match="orbit_data: cannot create or lock it"):
        provision_orbits(settings, [SCENE])
