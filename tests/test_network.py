"""Small-baseline networks: the pure pairing rule, and the `pairs` command writing pairs.txt."""

from __future__ import annotations

import argparse
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import make_data_folder, make_safe_product
from insar_pipeline.errors import InputError
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.network import pairs_command, same_frame, small_baseline_network
from insar_pipeline.inputs.pairs import load_pairs
from insar_pipeline.inputs.pairs_text import parse_pairs_text
from insar_pipeline.inputs.safe import Product

FRAME = ((52.6, -130.1), (53.0, -126.3), (51.4, -125.9), (51.0, -129.6))
NEXT_FRAME = ((50.9, -130.6), (51.3, -126.8), (49.7, -126.4), (49.3, -130.0))  # next slice south


def scene(day: int, track: int = 108, footprint=FRAME, hour: int = 2) -> Product:
    start = datetime(2025, 1, 1, hour, 20, 8, tzinfo=timezone.utc) + timedelta(days=day)
    name = f"S1A_{track}_{start:%Y%m%dT%H%M%S}_{footprint[0][0]}"
    return Product(
        path=Path(f"/raw/{name}.SAFE"), name=name, mission="S1A", mode="IW", product_type="SLC",
        polarizations=("vv", "vh"), relative_orbit=track, absolute_orbit=1, start=start,
        stop=start + timedelta(seconds=27), footprint=footprint, swaths=(1, 2, 3),
    )  # fmt: skip


def days(pairs) -> list[tuple[int, int]]:
    base = datetime(2025, 1, 1, tzinfo=timezone.utc).date()
    return [((a.date - base).days, (b.date - base).days) for a, b in pairs]


def test_each_scene_pairs_with_its_next_neighbours_within_max_days() -> None:
    scenes = [scene(d) for d in (0, 12, 24, 36, 48, 96)]
    assert days(small_baseline_network(scenes, max_days=48, neighbours=2)) == [
        (0, 12), (0, 24), (12, 24), (12, 36), (24, 36), (24, 48), (36, 48), (48, 96),
    ]  # fmt: skip
    assert days(small_baseline_network(scenes, max_days=12, neighbours=5)) == [
        (0, 12), (12, 24), (24, 36), (36, 48),
    ]  # fmt: skip
    assert days(small_baseline_network(scenes, max_days=100, neighbours=1)) == [
        (0, 12), (12, 24), (24, 36), (36, 48), (48, 96),
    ]  # fmt: skip


def test_tracks_and_frames_are_kept_apart_and_same_date_never_pairs() -> None:
    scenes = [
        scene(0),
        scene(12),
        scene(0, footprint=NEXT_FRAME),
        scene(12, footprint=NEXT_FRAME),
        scene(6, track=35, hour=14),
        scene(18, track=35, hour=14),
    ]
    pairs = small_baseline_network(list(reversed(scenes)), max_days=48, neighbours=3)
    assert [(a.relative_orbit, a.footprint[0][0], b.footprint[0][0]) for a, b in pairs] == [
        (35, 52.6, 52.6), (108, 50.9, 50.9), (108, 52.6, 52.6),
    ]  # fmt: skip
    assert days(pairs) == [(6, 18), (0, 12), (0, 12)]


def test_same_frame_uses_overlap_of_the_smaller_box() -> None:
    assert same_frame(scene(0), scene(12))
    assert not same_frame(scene(0), scene(12, footprint=NEXT_FRAME))  # 0.1 degree of overlap
    far = tuple((lat, lon + 50) for lat, lon in FRAME)
    assert not same_frame(scene(0), scene(12, footprint=far))


def test_several_scenes_on_one_later_date_count_as_one_neighbour() -> None:
    twin = scene(12, hour=2)
    twin = Product(**{**twin.__dict__, "name": "twin", "path": Path("/raw/twin.zip")})
    pairs = small_baseline_network([scene(0), scene(12), twin, scene(24)], 48, neighbours=1)
    assert days(pairs) == [(0, 12), (0, 12), (12, 24), (12, 24)]


# --- the `pairs` command on a real data folder ---------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = make_data_folder(tmp_path_factory.mktemp("network"))
    base = datetime(2025, 4, 6, 2, 20, 8, tzinfo=timezone.utc)
    for day in (0, 12, 24, 36):
        make_safe_product(data / "raw", start=base + timedelta(days=day), as_zip=day == 24)
    make_safe_product(data / "raw", start=base + timedelta(days=3), relative_orbit=35)
    make_safe_product(data / "raw", start=base + timedelta(days=15), relative_orbit=35)
    make_safe_product(data / "raw", start=base + timedelta(days=6), polarizations=("hh",))
    return data


def run_pairs(settings: Settings, **options) -> int:
    args = argparse.Namespace(**{"max_days": 48, "neighbours": 2, "force": False, **options})
    return pairs_command(settings, args)


def test_pairs_command_writes_a_file_that_load_pairs_accepts(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=data_dir, pairs_file=tmp_path / "pairs.txt")
    with caplog.at_level(logging.INFO):
        assert run_pairs(settings) == 0
    text = settings.pairs_file.read_text()
    entries = parse_pairs_text(text)
    pair_lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(entries) == len(pair_lines) == 6
    assert all(line.startswith('("S1A_IW_SLC__') for line in pair_lines)
    assert "# relative orbit 35: 1 pairs" in text and "# relative orbit 108: 5 pairs" in text
    assert '.zip")' in text  # the zipped scene keeps its real file name
    assert "_1SSH_" in caplog.text and "skipped: no VV polarization" in caplog.text
    pairs = load_pairs(settings)
    assert [p.id for p in pairs] == [
        "20250409_20250421", "20250406_20250418", "20250406_20250430", "20250418_20250430",
        "20250418_20250512", "20250430_20250512",
    ]  # fmt: skip
    assert not list(tmp_path.glob(".pairs.txt.*"))  # no temp file left behind


def test_pairs_command_refuses_to_overwrite_without_force(data_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "mine.txt"
    target.write_text("keep me\n")
    settings = Settings(data_dir=data_dir, pairs_file=tmp_path / "pairs.txt")
    with pytest.raises(InputError, match=r"mine\.txt exists; pass --force"):
        run_pairs(settings, output=str(target))
    assert target.read_text() == "keep me\n"
    assert run_pairs(settings, output=str(target), force=True, neighbours=1) == 0
    assert len(parse_pairs_text(target.read_text())) == 4


@pytest.mark.parametrize(("options", "message"), [
    ({"max_days": 0}, "--max-days and --neighbours must be at least 1"),
    ({"max_days": 2}, "no pair can be made from the 6 usable scenes"),
    ({"output": "/nonexistent-folder/pairs.txt"}, "/nonexistent-folder does not exist"),
])  # fmt: skip
def test_pairs_command_bad_requests(data_dir: Path, tmp_path: Path, options, message) -> None:
    settings = Settings(data_dir=data_dir, pairs_file=tmp_path / "pairs.txt")
    with pytest.raises(InputError, match=message):
        run_pairs(settings, **options)
    assert not (tmp_path / "pairs.txt").exists()


def test_pairs_command_lists_unreadable_products(tmp_path: Path) -> None:
    data = make_data_folder(tmp_path)
    (data / "raw" / "S1A_broken.zip").write_bytes(b"not a zip")
    (data / "raw" / "S1A_empty.SAFE").mkdir()
    settings = Settings(data_dir=data, pairs_file=tmp_path / "pairs.txt")
    with pytest.raises(InputError) as caught:
        run_pairs(settings)
    lines = str(caught.value).splitlines()  # in file name order
    assert len(lines) == 2
    assert lines[0].startswith(f"{data / 'raw' / 'S1A_broken.zip'}: not a readable zip")
    assert lines[1].startswith(f"{data / 'raw' / 'S1A_empty.SAFE'}: manifest.safe is missing")
