"""clean: keep-lists per level, applied to a product tree made by the topsApp double."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path

import pytest

from insar_pipeline.errors import InputError, PipelineError
from insar_pipeline.pair.runner import run_pair
from insar_pipeline.topsapp.clean import clean_command, clean_pair, kept
from pair_factory import make_pair_setup


@pytest.fixture(scope="module")
def finished_tree(tmp_path_factory) -> Path:
    """One pair run to the end by the double and not cleaned (built once for this module)."""
    setup = make_pair_setup(tmp_path_factory.mktemp("tree"))
    result = run_pair(setup.prepare(clean_level="none"))
    assert result.status == "done", result.error
    return setup.settings.run_dir(setup.pairs[0].id)


@pytest.fixture
def run_dir(finished_tree, tmp_path) -> Path:
    copy = tmp_path / "data" / "runs" / finished_tree.name
    shutil.copytree(finished_tree, copy, symlinks=True)
    return copy


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}


def size(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if not p.is_dir())


@pytest.mark.parametrize(
    "path, none, standard, nuclear",
    [
        ("topsApp.xml", True, True, True),
        ("topsProc.xml", True, True, True),
        ("isce.log", True, True, True),
        ("logs/geometry.1.log", True, True, True),
        ("PICKLE/geocode.xml", True, True, True),
        ("reference/IW2.xml", True, True, True),
        ("secondary/IW1.xml", True, True, True),
        ("reference/IW2/burst_01.slc.vrt", True, False, False),
        ("quicklooks/phase.png", True, True, True),
        ("merged/filt_topophase.flat.geo", True, True, True),
        ("merged/filt_topophase.flat.geo.xml", True, True, True),
        ("merged/dem.crop.vrt", True, True, True),
        ("merged/filt_topophase.unw", True, True, False),
        ("merged/phsig.cor.xml", True, True, False),
        ("merged/los.rdr.full.vrt", True, False, False),
        ("merged/topophase.flat.full", True, False, False),
        ("geom_reference/IW1/lat_01.rdr", True, False, False),
        ("fine_coreg/IW1/burst_01.slc", True, False, False),
        ("fine_interferogram/IW1.xml", True, False, False),
        ("ESD/ESDmisregistration.png", True, False, False),
        ("orbits/S1A_OPER_AUX_POEORB_x.EOF", True, False, False),
        ("demLat_N50_N54_Lon_W131_W125.dem.wgs84", True, False, False),
    ],
)
def test_keep_lists(path, none, standard, nuclear):
    assert (kept(path, "none"), kept(path, "standard"), kept(path, "nuclear")) == (
        none,
        standard,
        nuclear,
    )


def test_standard_keeps_products_and_metadata_and_removes_the_rest(run_dir):
    before = files(run_dir)
    expected_before = size(run_dir)
    result = clean_pair(run_dir, "standard")
    after = files(run_dir)
    assert result.bytes_before == expected_before and result.bytes_after == size(run_dir)
    assert result.files_removed == len(before - after)
    for product in (
        "filt_topophase.flat",
        "filt_topophase.unw",
        "phsig.cor",
        "topophase.cor",
        "los.rdr",
        "filt_topophase.unw.conncomp",
    ):
        for suffix in ("", ".xml", ".vrt", ".geo", ".geo.xml", ".geo.vrt"):
            assert f"merged/{product}{suffix}" in after
    assert {
        "topsApp.xml",
        "topsProc.xml",
        "isce.log",
        "PICKLE/geocode.xml",
        "reference/IW1.xml",
        "logs/geocode.1.log",
    } <= after
    gone = (
        "geom_reference",
        "fine_coreg",
        "fine_offsets",
        "fine_interferogram",
        "ESD",
        "orbits",
        "coarse_coreg",
        "reference/IW1",
    )
    assert not any((run_dir / folder).exists() for folder in gone)
    assert not [name for name in after if ".full" in name]
    assert result.bytes_after < result.bytes_before


def test_nuclear_keeps_only_geocoded_products_metadata_and_logs(run_dir):
    clean_pair(run_dir, "nuclear")
    merged = {name for name in files(run_dir) if name.startswith("merged/")}
    assert merged and all(".geo" in name or "dem.crop" in name for name in merged)
    assert {"topsApp.xml", "PICKLE/geocode.xml", "reference/IW3.xml", "logs/unwrap.1.log"} <= files(
        run_dir
    )


def test_none_changes_nothing_and_levels_can_follow_each_other(run_dir):
    before = files(run_dir)
    result = clean_pair(run_dir, "none")
    assert files(run_dir) == before and result.bytes_before == result.bytes_after
    standard = clean_pair(run_dir, "standard")
    nuclear = clean_pair(run_dir, "nuclear")
    assert nuclear.bytes_before == standard.bytes_after > nuclear.bytes_after


def test_an_unfinished_pair_is_never_touched(run_dir):
    (run_dir / "PICKLE" / "geocode.xml").unlink()
    before = files(run_dir)
    with pytest.raises(PipelineError, match="not finished"):
        clean_pair(run_dir, "standard")
    assert files(run_dir) == before


def test_links_are_removed_never_what_they_point_to(run_dir, tmp_path):
    outside = tmp_path / "outside"
    (outside / "folder").mkdir(parents=True)
    (outside / "folder" / "precious.slc").write_bytes(b"x" * 1000)
    (outside / "precious.rdr").write_bytes(b"y" * 1000)
    (run_dir / "geom_reference" / "linked_folder").symlink_to(outside / "folder")
    (run_dir / "fine_coreg" / "linked.rdr").symlink_to(outside / "precious.rdr")
    clean_pair(run_dir, "standard")
    assert not (run_dir / "geom_reference").exists()
    assert (outside / "folder" / "precious.slc").read_bytes() == b"x" * 1000
    assert (outside / "precious.rdr").read_bytes() == b"y" * 1000


def test_hard_linked_files_count_once(run_dir):
    big = run_dir / "merged" / "filt_topophase.unw.geo"
    plain = clean_pair(run_dir, "none").bytes_before
    os.link(big, run_dir / "merged" / "second_name.geo")
    os.link(big, run_dir / "geom_reference" / "shared.rdr")
    result = clean_pair(run_dir, "standard")
    assert result.bytes_before == plain
    assert (run_dir / "merged" / "second_name.geo").exists()


def command(settings, level=None, pair_ids=()):
    return clean_command(settings, argparse.Namespace(level=level, pair_ids=list(pair_ids)))


def test_clean_command_cleans_finished_pairs_and_prints_bytes(
    finished_tree, tmp_path, capsys, caplog
):
    setup = make_pair_setup(tmp_path, n_pairs=2)
    runs = setup.settings.runs_dir
    done = runs / setup.pairs[0].id
    shutil.copytree(finished_tree, done, symlinks=True)
    unfinished = runs / setup.pairs[1].id
    shutil.copytree(finished_tree, unfinished, symlinks=True)
    (unfinished / "PICKLE" / "geocode.xml").unlink()
    (runs / "ledger.sqlite").write_text("not a pair")
    with caplog.at_level(logging.WARNING):
        assert command(setup.settings.with_changes(clean="nuclear")) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"{done.name}: ") and "removed)" in printed[0]
    assert printed[-1].startswith("total (nuclear): ")
    assert len(printed) == 2
    assert f"{unfinished.name}: not finished" in caplog.text
    assert (unfinished / "geom_reference").exists() and not (done / "merged" / "phsig.cor").exists()


def test_clean_command_level_and_pair_arguments(finished_tree, tmp_path, capsys):
    setup = make_pair_setup(tmp_path, n_pairs=2)
    runs = setup.settings.runs_dir
    for pair in setup.pairs:
        shutil.copytree(finished_tree, runs / pair.id, symlinks=True)
    assert command(setup.settings, level="standard", pair_ids=[setup.pairs[1].id]) == 0
    assert (runs / setup.pairs[0].id / "geom_reference").exists()
    assert not (runs / setup.pairs[1].id / "geom_reference").exists()
    assert "total (standard)" in capsys.readouterr().out
    with pytest.raises(InputError, match="no pair folder"):
        command(setup.settings, pair_ids=["20990101_20990113"])
    with pytest.raises(InputError, match="not a pair id"):
        command(setup.settings, pair_ids=[".."])
