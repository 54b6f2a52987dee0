"""Acquisition planning without servers: coverage selection, the network, names, credentials."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from insar_pipeline.acquire.coverage import Acquisition, burst_safe_prefix, select
from insar_pipeline.acquire.credentials import earthdata_token, netrc_login
from insar_pipeline.acquire.network import render_network, small_baseline_pairs
from insar_pipeline.acquire.search import Granule, search_options
from insar_pipeline.errors import InputError
from insar_pipeline.inputs.config import Settings, normalize_aoi
from insar_pipeline.inputs.pairs_text import split_pairs_text

T0 = datetime(2018, 1, 11, 15, 15, 51, tzinfo=timezone.utc)
AOI = normalize_aoi("57.0,57.1,-136.0,-135.8")


def box_ring(south: float, north: float, west: float, east: float) -> tuple:
    return ((west, south), (east, south), (east, north), (west, north), (west, south))


def scene(
    day: int, ring: tuple = box_ring(56, 58, -137, -135), pol: str = "VV+VH", **kw
) -> Granule:
    start = T0 + timedelta(days=12 * day)
    values = dict(
        name=f"S1B_IW_SLC__1SDV_{start:%Y%m%dT%H%M%S}_{start:%Y%m%dT%H%M%S}_{9000 + day:06d}_0105"
        f"38_{day:04X}",
        url=f"https://example.invalid/{day}.zip", bytes=4_000_000_000, md5=None, start=start,
        platform="S1B", relative_orbit=174, absolute_orbit=9000 + day, frame=400,
        flight_direction="DESCENDING", polarization=pol, footprint=ring, bperp=10.0 * day,
    )  # fmt: skip
    values.update(kw)
    return Granule(**values)


def burst(day: int, number: int, swath: int = 3, south: float = 56.95) -> Granule:
    start = T0 + timedelta(days=12 * day, seconds=2.758 * (number - 372326))
    ring = box_ring(south - 0.18 * (number - 372326), south + 0.2 - 0.18 * (number - 372326),
                    -136.5, -135.3)  # fmt: skip
    when = T0 + timedelta(days=12 * day)
    slc = f"S1B_IW_SLC__1SDV_{when:%Y%m%dT%H%M%S}_X_{9000 + day:06d}_010538_8A08"
    return scene(
        day, ring, "VV",
        name=f"S1_{number}_IW{swath}_{start:%Y%m%dT%H%M%S}_VV_8A08-BURST",
        burst_id=f"174_{number}_IW{swath}", burst_index=number - 372323, slc_name=slc,
        metadata_url="https://example.invalid/x.xml", bytes=150_000_000,
    )  # fmt: skip


def test_scene_level_keeps_covering_scenes_and_says_why_others_are_left_out() -> None:
    granules = [
        scene(0),
        scene(1, box_ring(57.05, 59, -137, -135)),  # covers half of the AOI
        scene(2, pol="HH"),
        scene(3, box_ring(55, 57.05, -137, -135)),  # two slices of one pass together cover it
        scene(3, box_ring(57.04, 59, -137, -135), name="S1B_second_slice"),
    ]
    selection = select(granules, AOI, "scene", "vv")
    assert [item.date for item in selection.acquisitions] == [granules[0].date]
    reasons = {item.date: item.reason for item in selection.excluded}
    assert reasons[granules[1].date] == f"{granules[1].name} covers only 50% of the area"
    assert reasons[granules[2].date] == "no VV scene (found HH)"
    assert reasons[granules[3].date].startswith("the area spans 2 scenes")
    assert "INPUT_LEVEL=burst" in reasons[granules[3].date]


def test_burst_level_same_bursts_every_date_and_a_date_missing_one_is_left_out() -> None:
    granules = [burst(day, number) for day in range(4) for number in (372326, 372327)]
    granules.remove(burst(2, 372327))
    granules.append(burst(1, 372325))  # an extra burst on one date only: dropped
    selection = select(granules, normalize_aoi("56.85,57.1,-136,-135.8"), "burst", "vv")
    assert selection.burst_ids == ("174_372326_IW3", "174_372327_IW3")
    assert [item.date for item in selection.acquisitions] == [
        burst(day, 372326).date for day in (0, 1, 3)
    ]
    assert {tuple(g.burst_id for g in item.granules) for item in selection.acquisitions} == {
        selection.burst_ids
    }
    (left_out,) = selection.excluded
    assert (left_out.date, left_out.reason) == (burst(2, 0).date, "burst 174_372327_IW3 missing")


def test_burst_level_uncovered_area_and_other_swaths_polarizations() -> None:
    granules = [burst(0, 372326), replace(burst(0, 372327), polarization="VH")]
    selection = select(granules, normalize_aoi("56.85,57.1,-136,-135.8"), "burst", "vv")
    (left_out,) = selection.excluded
    assert left_out.reason == "its bursts cover only 60% of the area"
    assert select([burst(0, 372326, swath=2)], AOI, "burst", "vv", swaths=(3,)).acquisitions == ()


def test_burst_safe_prefix_is_burst2safes_name_without_the_crc() -> None:
    bursts = (burst(0, 372326), burst(0, 372327))
    assert burst_safe_prefix(bursts) == (
        "S1B_IW_SLC__1SSV_20180111T151551_20180111T151553_009000_010538_"
    )


def acquisitions(days_bperp: list[tuple[int, float | None]]) -> list[Acquisition]:
    return [
        Acquisition(scene(day).date, 9000 + day, "S1B", (scene(day),), bperp)
        for day, bperp in days_bperp
    ]


def test_network_by_days_neighbours_and_perpendicular_baseline() -> None:
    stack = acquisitions([(0, 0.0), (1, 20.0), (2, 300.0), (3, 40.0), (8, 50.0)])
    pairs = small_baseline_pairs(stack, max_days=48, neighbours=2, max_bperp=150)
    found = [(p.reference.absolute_orbit - 9000, p.secondary.absolute_orbit - 9000) for p in pairs]
    # 0-2, 1-2 and 2-3 are over 150 m, so 0 and 1 take date 3 instead; 3-8 is 60 days
    assert found == [(0, 1), (0, 3), (1, 3)]
    unlimited = small_baseline_pairs(stack, max_days=48, neighbours=2)
    assert [
        (p.reference.absolute_orbit % 100, p.secondary.absolute_orbit % 100) for p in unlimited
    ][:3] == [(0, 1), (0, 2), (1, 2)]


def test_network_keeps_pairs_of_unknown_baseline_and_writes_one_comment_per_pair() -> None:
    stack = acquisitions([(0, None), (1, 20.0), (2, 35.0)])
    pairs = small_baseline_pairs(stack, max_days=48, neighbours=1, max_bperp=10)
    assert len(pairs) == 1 and pairs[0].bperp is None  # 0-1 unknown: kept; 1-2 is 15 m
    text = render_network(pairs, {a.name: f"{a.name}.zip" for a in stack}, "--max-bperp 10")
    entries, problems = split_pairs_text(text)
    assert problems == [] and [(e.first, e.second) for e in entries] == [
        (stack[0].name, stack[1].name)  # the grammar drops .zip/.SAFE
    ]
    assert f'("{stack[0].name}.zip", "{stack[1].name}.zip")' in text
    comments = [line for line in text.splitlines() if line.startswith("# 20")]
    assert comments == [
        f"# {stack[0].date} -> {stack[1].date}: temporal baseline 12 days,"
        " perpendicular baseline unknown"
    ]


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(env_file=tmp_path / ".env", data_dir=tmp_path, **values)


def test_search_options_follow_the_settings(tmp_path: Path) -> None:
    options = search_options(
        settings(tmp_path, aoi="1,2,3,4", start="2020-01-01", end="2020-02-01", relative_orbit=13,
                 flight_direction="desc", frame=411, platforms="S1A", input_level="burst")
    )  # fmt: skip
    assert options == {
        "intersectsWith": "POLYGON ((4 1, 4 2, 3 2, 3 1, 4 1))",
        "start": "2020-01-01T00:00:00Z",
        "end": "2020-02-01T23:59:59Z",
        "relativeOrbit": 13,
        "platform": ["SENTINEL-1A"],
        "beamMode": "IW",
        "flightDirection": "DESCENDING",
        "asfFrame": 411,
        "processingLevel": "BURST",
        "polarization": "VV",
    }


def test_credentials_from_netrc_are_read_never_written(tmp_path: Path) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine urs.earthdata.nasa.gov login me password secret-pw\n")
    netrc.chmod(0o600)
    before = netrc.read_bytes()
    assert netrc_login("urs.earthdata.nasa.gov", tmp_path) == ("me", "secret-pw")
    assert netrc_login("127.0.0.1:8443", tmp_path) is None
    assert netrc.read_bytes() == before


def test_no_credentials_is_an_input_error_naming_the_keys(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="EARTHDATA_TOKEN"):
        earthdata_token(settings(tmp_path), home=tmp_path)
    with pytest.raises(InputError, match="both EARTHDATA_USERNAME and EARTHDATA_PASSWORD"):
        earthdata_token(settings(tmp_path, earthdata_username="me"), home=tmp_path)


def test_only_asfs_own_download_hosts_get_the_asf_login_cookie() -> None:
    from insar_pipeline.acquire.http import is_asf

    assert is_asf("https://sentinel1-burst.asf.alaska.edu/S1A/IW3/VV/3.tiff")
    assert not is_asf("http://127.0.0.1:8080/S1A/IW3/VV/3.tiff")
    assert not is_asf("https://asf.alaska.edu.example.com/x.tiff")
