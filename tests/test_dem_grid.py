"""DEM planning math: boxes, regions, rounding, tiling, names (no network, no files)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import pytest

from insar_pipeline.dem.grid import (
    AREA_SAFETY,
    DEM_SPECS,
    DemGrid,
    area_km2,
    dem_spec,
    grid_around,
    isce_stem,
    region_groups,
    split_tiles,
)
from insar_pipeline.dem.provision import dem_boxes, plan_dems
from insar_pipeline.errors import InputError
from insar_pipeline.geo import BBox
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.pairs import Pair
from insar_pipeline.inputs.safe import Product


def make_product(name: str, south: float, north: float, west: float, east: float) -> Product:
    start = datetime(2023, 2, 3, 1, 2, 3, tzinfo=timezone.utc)
    footprint = ((south, west), (south, east), (north, east), (north, west))
    return Product(
        Path(f"/data/raw/{name}.SAFE"), name, "S1A", "IW", "SLC", ("vv", "vh"), 64, 47000,
        start, start, footprint, (1, 2, 3),
    )  # fmt: skip


def make_pair(
    pair_id: str,
    south: float,
    north: float,
    west: float,
    east: float,
    line: int = 1,
    shift: float = 0.0,
) -> Pair:
    """A pair over a box; the secondary footprint is moved `shift` degrees east."""
    reference = make_product(f"REF_{pair_id}", south, north, west, east)
    secondary = make_product(f"SEC_{pair_id}", south, north, west + shift, east + shift)
    return Pair(pair_id, reference, secondary, (1, 2, 3), line)


def test_grid_rounds_outward_to_whole_arcseconds_without_float_noise():
    # 33.95 * 3600 = 122219.99999999999: must stay 122220, not drop a whole second.
    grid = grid_around(BBox(33.95, 34.05, -118.05, -117.95), 1)
    assert (grid.south, grid.north, grid.west, grid.east) == (122220, 122580, -424980, -424620)
    assert (grid.width, grid.length) == (361, 361)
    grid = grid_around(BBox(33.95001, 34.04999, -118.04999, -117.95001), 3)
    assert (grid.south, grid.north, grid.west, grid.east) == (122220, 122580, -424980, -424620)
    assert (grid.width, grid.length) == (121, 121)
    grid = grid_around(BBox(33.9501, 34.0499, -118.0499, -117.9501), 3)
    assert (grid.south, grid.north, grid.west, grid.east) == (122220, 122580, -424980, -424620)
    assert grid.south % 3 == grid.west % 3 == grid.north % 3 == 0
    assert grid.bbox.contains(BBox(33.95001, 34.04999, -118.04999, -117.95001))


def test_area_matches_the_spherical_formula():
    # A 1x1 degree box at the equator: R^2 * dlon * (sin 1° - sin 0°) ≈ 12,364 km2.
    assert area_km2(BBox(0, 1, 10, 11)) == pytest.approx(12_364, rel=1e-3)
    assert area_km2(BBox(60, 61, 10, 11)) < area_km2(BBox(0, 1, 10, 11)) / 1.9


@pytest.mark.parametrize(
    ("dem_type", "box", "expected"),
    [
        ("COP30", BBox(33.5, 34.5, -118.5, -117.5), 1),  # one degree: far under 450,000 km2
        ("COP30", BBox(-5, 5, 20, 30), 3),  # 1.23 Mkm2 at the equator
        ("COP90", BBox(-5, 5, 20, 30), 1),  # under COP90's 4.05 Mkm2
        ("COP30", BBox(60, 70, 20, 40), 3),  # 200 square degrees, but only 1.04 Mkm2 at 65°N
    ],
)
def test_tiles_stay_under_the_area_limit_and_cover_the_box(dem_type, box, expected):
    spec = DEM_SPECS[dem_type]
    grid = grid_around(box, spec.posting_arcsec)
    tiles = split_tiles(grid, spec.max_area_km2)
    assert len(tiles) == expected
    assert all(area_km2(tile) <= spec.max_area_km2 * AREA_SAFETY for tile in tiles)
    # Every request is padded one posting beyond the grid and sits on whole postings.
    pad = spec.posting_arcsec / 3600
    union = tiles[0]
    for tile in tiles[1:]:
        union = union.union(tile)
    assert union == BBox(
        grid.bbox.south - pad, grid.bbox.north + pad, grid.bbox.west - pad, grid.bbox.east + pad
    )
    for tile in tiles:
        for value in tile.snwe():
            seconds = value * 3600 / spec.posting_arcsec
            assert seconds == pytest.approx(round(seconds), abs=1e-6)


def test_tiles_leave_no_gap_between_neighbours():
    grid = grid_around(BBox(-5, 5, 20, 30), 1)
    tiles = split_tiles(grid, DEM_SPECS["COP30"].max_area_km2)
    # Neighbours overlap by two postings (each padded by one): no pixel row is left out.
    for upper, lower in zip(tiles, tiles[1:], strict=False):
        if upper.west == lower.west:
            assert upper.south < lower.north
            assert (lower.north - upper.south) * 3600 == pytest.approx(2)
    # North to south, then west to east.
    assert [tile.north for tile in tiles] == sorted((tile.north for tile in tiles), reverse=True)


def test_a_box_needing_hundreds_of_requests_is_refused():
    grid = grid_around(BBox(-60, 60, -170, 170), 1)
    with pytest.raises(InputError, match="OpenTopography requests"):
        split_tiles(grid, DEM_SPECS["COP30"].max_area_km2)


def test_isce_stem_names_the_whole_degrees_around_the_grid():
    assert isce_stem(grid_around(BBox(38.2, 40.7, 33.1, 37.9), 1)) == "demLat_N38_N41_Lon_E033_E038"
    assert (
        isce_stem(grid_around(BBox(-3.5, -1.2, -120.5, -118.1), 1))
        == "demLat_S04_S01_Lon_W121_W118"
    )
    assert isce_stem(DemGrid(-3600, 3600, -3600, 3600, 1)) == "demLat_S01_N01_Lon_W001_E001"


def test_overlapping_pairs_share_a_region_and_continents_get_their_own():
    pairs = [
        make_pair("20230101_20230113", 37.0, 38.5, -118.5, -115.5, line=1),  # Nevada
        make_pair("20230113_20230125", 38.2, 39.8, -118.7, -115.6, line=2),  # next frame up
        make_pair("20230101_20230125", 38.0, 39.0, 33.0, 36.0, line=3),  # Turkey
        make_pair("20230105_20230117", -33.0, -31.5, 115.0, 118.0, line=4),  # Australia
        make_pair("20230125_20230206", 39.5, 41.0, -118.9, -116.0, line=5),  # chains to line 2
    ]
    groups = region_groups(pairs)
    assert [ids for _, ids in groups] == [
        ("20230101_20230113", "20230113_20230125", "20230125_20230206"),
        ("20230101_20230125",),
        ("20230105_20230117",),
    ]
    assert groups[0][0] == BBox(37.0, 41.0, -118.9, -115.5)


def test_region_boxes_are_buffered_and_rounded(tmp_path):
    settings = Settings(data_dir=tmp_path, dem_buffer_deg=0.25, dem_source="opentopography")
    pair = make_pair("20230101_20230113", 37.0, 38.5, -118.5, -115.5, shift=0.3)
    [(box, ids)] = dem_boxes(settings, [pair])
    assert ids == ("20230101_20230113",)
    assert box == pytest.approx(BBox(36.75, 38.75, -118.75, -114.95))
    [plan] = plan_dems(settings, [pair])
    assert plan.bbox == grid_around(box, 1).bbox
    assert plan.path == tmp_path / "dem" / "demLat_N36_N39_Lon_W119_W114_COP30.dem.wgs84"
    assert plan.cached is False
    assert len(plan.tiles) == 1


def test_roi_gives_one_dem_for_every_pair(tmp_path):
    settings = Settings(data_dir=tmp_path, roi="36,40,-120,-114")
    pairs = [
        make_pair("20230101_20230113", 37.0, 38.5, -118.5, -115.5),
        make_pair("20230113_20230125", 38.2, 39.8, -118.7, -115.6),
    ]
    [plan] = plan_dems(settings, pairs)
    assert plan.bbox == BBox(36, 40, -120, -114)
    assert plan.pair_ids == ("20230101_20230113", "20230113_20230125")


def test_a_pair_outside_the_roi_is_an_input_error_naming_it(tmp_path):
    settings = Settings(data_dir=tmp_path, roi="36,40,-120,-114")
    pairs = [
        make_pair("20230101_20230113", 37.0, 38.5, -118.5, -115.5, line=3),
        make_pair("20230113_20230125", 39.2, 40.8, -118.7, -115.6, line=7),
    ]
    with pytest.raises(InputError) as caught:
        plan_dems(settings, pairs)
    message = str(caught.value)
    assert "pairs.txt:7: pair 20230113_20230125" in message and "ROI" in message
    assert "pairs.txt:3" not in message


def test_region_of_interest_must_lie_inside_the_roi(tmp_path):
    settings = Settings(
        data_dir=tmp_path, roi="36,40,-120,-114", region_of_interest="39,41,-119,-118"
    )
    with pytest.raises(InputError, match="REGION_OF_INTEREST"):
        plan_dems(settings, [make_pair("20230101_20230113", 37.0, 38.5, -118.5, -115.5)])


@pytest.mark.parametrize(
    ("footprint", "match"),
    [
        ((-17.5, -16.0, 179.2, -179.4), "antimeridian"),  # the footprint itself wraps
        ((-17.5, -16.0, 178.5, 179.95), "antimeridian"),  # its buffered box reaches 180
        ((88.0, 89.95, 10.0, 40.0), "pole"),
        ((-89.95, -88.0, 10.0, 40.0), "pole"),
    ],
)
def test_boxes_over_the_antimeridian_or_a_pole_are_input_errors(tmp_path, footprint, match):
    south, north, first_lon, second_lon = footprint
    reference = make_product("REF", south, north, first_lon, first_lon)
    footprint_points = (
        (south, first_lon),
        (south, second_lon),
        (north, second_lon),
        (north, first_lon),
    )
    reference = Product(**{**reference.__dict__, "footprint": footprint_points})
    pair = Pair("20230101_20230113", reference, reference, (1, 2, 3), 4)
    with pytest.raises(InputError, match=match):
        plan_dems(Settings(data_dir=tmp_path), [pair])


def test_roi_on_the_antimeridian_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="antimeridian"):
        plan_dems(Settings(data_dir=tmp_path, roi="-18,-16,178,180"), [])


@pytest.mark.parametrize("dem_type", ["EU_DTM", "GEDI_L3", "SRTM15Plus"])
def test_dem_types_of_unknown_vertical_datum_are_refused(dem_type):
    with pytest.raises(InputError, match=f"DEM_TYPE={dem_type}"):
        dem_spec(dem_type)


def test_every_supported_type_has_a_known_datum_and_posting():
    for spec in DEM_SPECS.values():
        assert spec.geoid in ("EGM2008", "EGM96", None)
        assert spec.geoid is None or not spec.name.endswith("_E")
        assert 3600 % spec.posting_arcsec == 0
        assert math.isfinite(spec.max_area_km2)


def test_settings_accept_exactly_the_supported_dem_types():
    from insar_pipeline.inputs.config import DEM_TYPES

    assert DEM_TYPES == tuple(DEM_SPECS)


def quadratic_region_groups(pairs: list[Pair]) -> list[tuple[BBox, tuple[str, ...]]]:
    """The rule `region_groups` had before issue #17: every pair tested against every other."""
    from insar_pipeline.dem.grid import pair_box

    boxes = [pair_box(pair) for pair in pairs]
    parent = list(range(len(pairs)))

    def root(index: int) -> int:
        while parent[index] != index:
            index = parent[index]
        return index

    for i in range(len(pairs)):
        for j in range(i + 1, len(pairs)):
            if boxes[i].intersects(boxes[j]):
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for index in range(len(pairs)):
        groups.setdefault(root(index), []).append(index)
    result = []
    for members in groups.values():
        union = boxes[members[0]]
        for index in members[1:]:
            union = union.union(boxes[index])
        result.append((union, tuple(pairs[index].id for index in members)))
    return result


def random_pairs(seed: int, count: int) -> list[Pair]:
    """Pairs over random boxes: snapped to a coarse grid (so edges touch and boxes repeat),
    of mixed sizes (a few huge ones), the secondary sometimes shifted."""
    import random

    rng = random.Random(seed)
    snap = rng.choice((0.5, 0.25, 0.1, 0.001))
    spread = rng.choice((3.0, 10.0, 40.0))
    pairs = []
    for index in range(count):
        size = rng.choice((0.2, 1.0, 2.5)) if rng.random() > 0.03 else rng.uniform(10, 30)
        south = round(rng.uniform(-spread, spread) / snap) * snap
        west = round(rng.uniform(-spread, spread) / snap) * snap
        height = max(snap, round(size * rng.uniform(0.3, 1.0) / snap) * snap)
        width = max(snap, round(size * rng.uniform(0.3, 1.0) / snap) * snap)
        shift = rng.choice((0.0, 0.0, snap, -snap))
        pairs.append(
            make_pair(f"p{index:04d}", south, south + height, west, west + width, index, shift)
        )
    return pairs


@pytest.mark.parametrize("seed", range(40))
def test_region_groups_are_those_of_the_all_pairs_rule(seed):
    pairs = random_pairs(seed, 30 + seed * 7)
    assert region_groups(pairs) == quadratic_region_groups(pairs)


def test_region_groups_of_one_frame_with_many_footprints_is_one_group():
    # 2,000 slightly different footprints of one frame and a frame beside it that touches it
    # only along an edge (not an overlap), then a chain link between them.
    pairs = [
        make_pair(f"a{i}", 51.0 + (i % 13) * 0.001, 52.6, -126.0 + (i % 7) * 0.001, -123.6, i)
        for i in range(2000)
    ]
    pairs += [make_pair(f"b{i}", 51.0, 52.6, -123.6, -121.0 - (i % 5) * 0.001) for i in range(500)]
    groups = region_groups(pairs)
    assert [len(ids) for _, ids in groups] == [2000, 500]
    sample = pairs[:300] + pairs[2000:2300]
    assert region_groups(sample) == quadratic_region_groups(sample)
    pairs.append(make_pair("link", 51.5, 51.6, -123.7, -123.5))
    assert [len(ids) for _, ids in region_groups(pairs)] == [2501]
