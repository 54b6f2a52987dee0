"""Orbit file names, EOF contents, the selection rule and the service formats (no network)."""

from __future__ import annotations

import json
import random
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from lxml import etree

from insar_pipeline import _http as orbit_http
from insar_pipeline.orbits.cdse import odata_filter, parse_odata
from insar_pipeline.orbits.files import (
    START_MARGIN,
    STOP_MARGIN,
    T_ORBIT,
    EofError,
    OrbitFile,
    parse_orbit_name,
    precise_expected,
    read_eof,
    read_eof_header,
    select_orbit,
)
from insar_pipeline.orbits.sources import listing_prefixes, parse_s3_listing
from orbit_factories import (
    REALDATA,
    make_eof,
    orbit_name,
    poeorb_name,
    resorb_name,
    scene,
    utc,
)

ORBITS = REALDATA / "orbits"
SERVICES = REALDATA / "orbit_services"
REAL_RESORB = "S1A_OPER_AUX_RESORB_OPOD_20231013T115604_V20231013T080008_20231013T111738.EOF"
needs_realdata = pytest.mark.skipif(
    not REALDATA.is_dir(), reason=f"real data folder {REALDATA} is absent"
)


def orbit(name: str) -> OrbitFile:
    parsed = parse_orbit_name(name)
    assert parsed is not None
    return parsed


# --- names ---------------------------------------------------------------------------------


def test_parse_orbit_name_reads_every_field() -> None:
    parsed = orbit("S1A_OPER_AUX_POEORB_OPOD_20210203T122423_V20210113T225942_20210115T005942.EOF")
    assert (parsed.mission, parsed.kind) == ("S1A", "POEORB")
    assert parsed.created == utc("20210203T122423")
    assert (parsed.valid_start, parsed.valid_stop) == (
        utc("20210113T225942"),
        utc("20210115T005942"),
    )
    assert parsed.created.tzinfo is not None


@pytest.mark.parametrize(
    "name",
    [
        "S1A_OPER_AUX_POEORB_OPOD_20210203T122423_V20210113T225942_20210115T005942.EOF.zip",
        "S2A_OPER_AUX_POEORB_OPOD_20210203T122423_V20210113T225942_20210115T005942.EOF",
        "S1A_OPER_AUX_PREORB_OPOD_20210203T122423_V20210113T225942_20210115T005942.EOF",
        "S1A_OPER_AUX_POEORB_OPOD_20210203T122423_20210113T225942_20210115T005942.EOF",
        ".S1A_OPER_AUX_POEORB_OPOD_20210203T122423_V20210113T225942_20210115T005942.EOF.1.part",
        "S1A_IW_SLC__1SDV_20250406T022008_20250406T022035_058630_07421F_93A7",
    ],
)
def test_parse_orbit_name_refuses_other_names(name: str) -> None:
    assert parse_orbit_name(name) is None


@needs_realdata
def test_every_key_of_the_real_bucket_listings_parses() -> None:
    names = []
    for page in sorted(SERVICES.glob("s1-orbits_s3_list_*.xml")):
        names += [key.rsplit("/", 1)[1] for key in parse_s3_listing(page.read_bytes()).keys]
    parsed = [parse_orbit_name(name) for name in names]
    assert len(names) > 2500 and all(parsed)
    assert {p.mission for p in parsed if p} == {"S1A", "S1B", "S1C"}


# --- selection -----------------------------------------------------------------------------

START, STOP = utc("20250406T022008"), utc("20250406T022035")
SECOND = timedelta(seconds=1)


def spanning(
    kind: str, start_margin: timedelta, stop_margin: timedelta, created: str = "20250426T080000"
) -> OrbitFile:
    """An S1A file valid from `start_margin` before the scene to `stop_margin` after it."""
    return orbit(orbit_name("S1A", kind, utc(created), START - start_margin, STOP + stop_margin))


def test_orbit_period_is_sentinel1s() -> None:
    assert T_ORBIT == pytest.approx(5924.571, abs=0.001)
    assert START_MARGIN == timedelta(seconds=T_ORBIT + 60) and STOP_MARGIN == timedelta(seconds=60)


@pytest.mark.parametrize(
    ("start_margin", "stop_margin", "qualifies"),
    [
        (START_MARGIN, STOP_MARGIN, True),  # exactly the margins
        (START_MARGIN - SECOND, STOP_MARGIN, False),  # starts one second too late
        (START_MARGIN, STOP_MARGIN - SECOND, False),  # ends one second too early
        (timedelta(hours=2), timedelta(hours=20), True),
        (timedelta(0), timedelta(hours=20), False),  # covers the scene but not its orbit start
    ],
)
def test_validity_margins(start_margin: timedelta, stop_margin: timedelta, qualifies: bool) -> None:
    candidate = spanning("POEORB", start_margin, stop_margin)
    assert (select_orbit([candidate], "S1A", START, STOP) == candidate) is qualifies


def test_precise_wins_over_restituted() -> None:
    precise = spanning("POEORB", timedelta(hours=3), timedelta(hours=20))
    restituted = spanning("RESORB", timedelta(hours=2), timedelta(hours=1), "20250406T050000")
    assert select_orbit([restituted, precise], "S1A", START, STOP) == precise


def test_restituted_only_when_no_precise_file_covers() -> None:
    short_precise = spanning("POEORB", START_MARGIN - SECOND, timedelta(hours=20))
    restituted = spanning("RESORB", timedelta(hours=2), timedelta(hours=1), "20250406T050000")
    assert select_orbit([short_precise, restituted], "S1A", START, STOP) == restituted
    assert select_orbit([short_precise], "S1A", START, STOP) is None


def test_newest_of_two_precise_versions_wins_whatever_the_order() -> None:
    versions = [orbit(poeorb_name("S1A", "20250406", version)) for version in range(3)]
    for _ in range(5):
        random.shuffle(versions)
        assert select_orbit(versions, "S1A", START, STOP) == orbit(
            poeorb_name("S1A", "20250406", 2)
        )


def test_mission_must_match_s1c() -> None:
    s1a, s1c = orbit(poeorb_name("S1A", "20250406")), orbit(poeorb_name("S1C", "20250406"))
    assert select_orbit([s1a], "S1C", START, STOP) is None
    assert select_orbit([s1a, s1c], "S1C", START, STOP) == s1c
    assert select_orbit([s1c], "S1A", START, STOP) is None


def test_precise_expected_after_21_days() -> None:
    assert not precise_expected(STOP, STOP + timedelta(days=20))
    assert precise_expected(STOP, STOP + timedelta(days=21))


# --- EOF contents --------------------------------------------------------------------------


@needs_realdata
@pytest.mark.parametrize("path", sorted(ORBITS.glob("*.EOF")), ids=lambda p: p.name[25:40])
def test_real_orbit_files_read(path: Path) -> None:
    found = read_eof(path.read_bytes(), path.name)
    assert found == orbit(path.name)
    assert read_eof_header(path) == orbit(path.name).at(path)


@needs_realdata
@pytest.mark.parametrize("fraction", [0.0005, 0.01, 0.5, 0.999])
def test_truncated_real_file_is_refused(fraction: float, tmp_path: Path) -> None:
    data = (ORBITS / REAL_RESORB).read_bytes()
    cut = data[: int(len(data) * fraction)]
    with pytest.raises(EofError, match=REAL_RESORB):
        read_eof(cut, REAL_RESORB)
    (tmp_path / REAL_RESORB).write_bytes(cut)
    with pytest.raises(EofError):
        read_eof_header(tmp_path / REAL_RESORB)


@pytest.mark.parametrize(
    "body",
    [
        b"<html><head><title>Error</title></head><body>Service unavailable</body></html>",
        b'{"detail": "Not found"}',
        b"",
        b"<?xml version='1.0'?><Error><Code>NoSuchKey</Code></Error>",
    ],
)
def test_error_bodies_are_refused(body: bytes, tmp_path: Path) -> None:
    name = poeorb_name("S1A", "20250406")
    with pytest.raises(EofError):
        read_eof(body, name)
    (tmp_path / name).write_bytes(body)
    with pytest.raises(EofError):
        read_eof_header(tmp_path / name)


def test_factory_files_pass_and_their_name_must_match_the_header() -> None:
    name = poeorb_name("S1C", "20250406")
    data = make_eof(name)
    assert read_eof(data, name) == orbit(name)
    other = poeorb_name("S1C", "20250407")
    with pytest.raises(EofError, match="another file"):
        read_eof(data, other)


def test_missing_state_vectors_are_refused() -> None:
    name = resorb_name("S1A", "20250406T000000")
    data = make_eof(name).decode()
    vectors = re.findall(r"      <OSV>.*?</OSV>\n", data, re.S)
    count = f'count="{len(vectors)}"'
    assert count in data
    with pytest.raises(EofError, match="state vectors"):
        read_eof(data.replace(vectors[0], "", 1).encode(), name)  # count attribute now wrong
    head_lost = "".join(vectors[:5])  # the first five minutes, count kept consistent
    fewer = data.replace(head_lost, "", 1).replace(count, f'count="{len(vectors) - 5}"')
    with pytest.raises(EofError, match="span"):
        read_eof(fewer.encode(), name)


@needs_realdata
def test_factory_layout_is_the_real_layout() -> None:
    def paths(data: bytes) -> list[str]:
        root = etree.fromstring(data)
        tree = root.getroottree()
        return sorted({re.sub(r"\[\d+\]", "", tree.getpath(e)) for e in root.iter()})

    real = paths((ORBITS / REAL_RESORB).read_bytes())
    assert paths(make_eof(resorb_name("S1A", "20250406T000000"))) == real


# --- service formats -----------------------------------------------------------------------


@needs_realdata
def test_real_s3_listing_pages() -> None:
    first = parse_s3_listing(
        (SERVICES / "s1-orbits_s3_list_prefix_AUX_POEORB_page1.xml").read_bytes()
    )
    assert len(first.keys) == 1000 and first.truncated and first.token is None  # a V1 page
    assert first.keys[0] == (
        "AUX_POEORB/S1A_OPER_AUX_POEORB_OPOD_20210203T122423_V20210113T225942_20210115T005942.EOF"
    )
    last = parse_s3_listing(
        (SERVICES / "s1-orbits_s3_list_prefix_AUX_RESORB_page3_last.xml").read_bytes()
    )
    assert not last.truncated and len(last.keys) == 456
    assert last.keys[-1].startswith("AUX_RESORB/S1C_")


def test_parse_s3_listing_refuses_other_xml() -> None:
    with pytest.raises(ValueError, match="not an S3 listing"):
        parse_s3_listing(b"<Error><Code>AccessDenied</Code></Error>")


@needs_realdata
@pytest.mark.parametrize("path", sorted(SERVICES.glob("cdse_*.json")), ids=lambda p: p.stem[5:])
def test_real_odata_answers(path: Path) -> None:
    body = json.loads(path.read_bytes())
    page = parse_odata(path.read_bytes())
    assert [o.name for o, _ in page.products] == [item["Name"] for item in body["value"]]
    assert [i for _, i in page.products] == [item["Id"] for item in body["value"]]
    assert page.next_link == body.get("@odata.nextLink")


def test_parse_odata_refuses_html() -> None:
    with pytest.raises(ValueError):
        parse_odata(b"<html><body>Bad gateway</body></html>")


@needs_realdata
def test_odata_filter_has_the_clauses_of_the_recorded_requests() -> None:
    recorded = (SERVICES / "cdse_odata_query_RESORB_S1A_20231013.json.request.txt").read_text()
    real = parse_qs(urlsplit(recorded.split()[1]).query)["$filter"][0]
    start, stop = utc("20231013T111517"), utc("20231013T111544")
    ours = odata_filter("RESORB", "S1A", start, stop)

    def clauses(text: str) -> set[str]:
        return {re.sub(r"'[0-9T:.Z-]+'", "'<time>'", c) for c in text.split(" and ")}

    assert clauses(real) <= clauses(ours)
    assert "ContentDate/Start lt '2023-10-13T09:35:33.428571Z'" in ours  # start - T - 60 s + 1 s
    assert "ContentDate/End gt '2023-10-13T11:16:43.000000Z'" in ours  # stop + 60 s - 1 s


@pytest.mark.parametrize(
    ("kind", "stop", "months"),
    [
        ("POEORB", "20250105T000000", ["202501", "202502"]),
        ("POEORB", "20241220T120000", ["202412", "202501"]),
        ("RESORB", "20250131T235000", ["202501", "202502"]),
        ("RESORB", "20250115T120000", ["202501"]),
    ],
)
def test_listing_prefixes_name_mission_and_creation_months(
    kind: str, stop: str, months: list[str]
) -> None:
    prefixes = listing_prefixes(kind, "S1C", utc(stop))
    assert list(prefixes) == [f"AUX_{kind}/S1C_OPER_AUX_{kind}_OPOD_{month}" for month in months]


def test_backoff_grows_is_capped_and_honours_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(orbit_http, "BACKOFF_BASE_S", 1.0)
    monkeypatch.setattr(orbit_http, "BACKOFF_MAX_S", 30.0)
    delays = [orbit_http.backoff_delay(attempt) for attempt in range(8)]
    for attempt, delay in enumerate(delays):
        expected = min(30.0, 2.0**attempt)
        assert expected <= delay <= expected * 1.25
    assert orbit_http.backoff_delay(0, retry_after=10) >= 10
    assert orbit_http.backoff_delay(0, retry_after=3600) <= 30 * 1.25


def test_scene_factory_matches_product_fields() -> None:
    product = scene("S1C", "20250406T022008")
    assert (product.mission, product.start, product.stop) == ("S1C", START, STOP)


def test_the_cache_looks_up_a_scene_among_nearby_files_only(tmp_path: Path) -> None:
    """The cache's bisection gives `select_orbit` the same answer as a scan of every file."""
    from datetime import datetime, timezone
    from types import SimpleNamespace

    from insar_pipeline.orbits.cache import OrbitCache
    from orbit_factories import poeorb_name, resorb_name

    rng = random.Random(17)
    first = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for _ in range(300):
        day = first + timedelta(days=rng.randrange(120))
        mission = rng.choice(("S1A", "S1C"))
        if rng.random() < 0.5:
            name = poeorb_name(mission, f"{day:%Y%m%d}", version=rng.randrange(2))
        else:
            start = day + timedelta(minutes=rng.randrange(24 * 60))
            name = resorb_name(mission, f"{start:%Y%m%dT%H%M%S}", rng.choice((60, 197, 600)))
        (tmp_path / name).write_text("")
    cache = OrbitCache(tmp_path)
    every = cache.files()
    answers = set()
    for _ in range(400):
        start = first + timedelta(minutes=rng.randrange(125 * 24 * 60))
        scene = SimpleNamespace(mission=rng.choice(("S1A", "S1C")), start=start)
        stop = start + timedelta(seconds=27)
        nearby = cache._around(scene.mission, scene.start)
        assert len(nearby) < len(every) / 4
        best = select_orbit(nearby, scene.mission, start, stop)
        assert best == select_orbit(every, scene.mission, start, stop)
        answers.add(best is None)
    assert answers == {True, False}  # scenes with and without a covering file
