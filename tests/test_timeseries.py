"""The `timeseries` stage: network, grid, MintPy's inputs, MintPy's velocity against a truth."""

from __future__ import annotations

import math
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import clean_environ, real_path, run_main
from insar_pipeline.cli import COMMANDS
from insar_pipeline.errors import InputError
from insar_pipeline.timeseries.command import run_timeseries
from insar_pipeline.timeseries.grid import Grid, grid_notes
from insar_pipeline.timeseries.metadata import perpendicular_baseline, read_annotations
from insar_pipeline.timeseries.mintpy_app import config_text, parse_lalo
from insar_pipeline.timeseries.network import Link, build_network, describe
from isce_double.double_deformation import WAVELENGTH, Truth, coordinates
from timeseries_factory import (
    GRID,
    SHAPE,
    add_pairs,
    make_track,
    neighbour_pairs,
    truth_velocity,
)

pytest.importorskip("mintpy")


def stack_of(result) -> Path:
    return result.work_dir / "inputs" / "ifgramStack.h5"


def test_velocity_from_the_exported_stack_matches_the_truth(tmp_path: Path) -> None:
    track = make_track(tmp_path, n_dates=10, truth=Truth(noise=0.05))
    add_pairs(track, neighbour_pairs(10))
    (result,) = run_timeseries(track.settings)
    assert result.mintpy is not None and result.mintpy.ok, result.mintpy
    with h5py.File(result.mintpy.velocity, "r") as f:
        velocity = f["velocity"][:] * 1000
        ref = int(f.attrs["REF_Y"]), int(f.attrs["REF_X"])
    truth = truth_velocity(track, track.days)
    truth -= truth[ref]
    coherent = np.isfinite(velocity) & (velocity != 0)
    coherent[ref] = False
    assert coherent.sum() > 0.8 * SHAPE[0] * SHAPE[1] * 0.9
    rms = math.sqrt(float(np.mean((velocity[coherent] - truth[coherent]) ** 2)))
    assert rms < 1.0, rms
    print(f"velocity RMS against the truth: {rms:.3f} mm/yr over {coherent.sum()} px")
    # The bowl's centre: the centroid of where it sinks faster than half its peak rate.
    bowl = coherent & (velocity < 0.5 * np.nanmin(np.where(coherent, velocity, np.nan)))
    centre = np.argwhere(bowl).mean(axis=0)
    expected = np.argwhere(truth < 0.5 * truth.min()).mean(axis=0)
    assert np.all(np.abs(centre - expected) <= 2), (centre, expected)
    assert result.mintpy.timeseries is not None
    assert result.mintpy.timeseries.name == "timeseries_demErr.h5"
    assert (result.work_dir / "velocity.png").exists()
    assert (result.work_dir / "timeseries.html").exists()


# ---- the network ---------------------------------------------------------------------------


def link(a: str, b: str, finished: bool = True) -> Link:
    return Link(f"{a}_{b}", a, b, finished)


def test_network_components_and_dates_reached_only_through_failed_pairs() -> None:
    network = build_network(
        [
            link("20250101", "20250113"),
            link("20250113", "20250125"),
            link("20250125", "20250206", finished=False),  # 0206 only through a failed pair
            link("20250301", "20250313"),  # a second piece
        ]
    )
    assert network.components == (("20250101", "20250113", "20250125"), ("20250301", "20250313"))
    assert network.stranded == ("20250206",)
    assert network.is_split
    assert [k.pair_id for k in network.dropped] == ["20250301_20250313"]
    lines = describe(network, "track_108")
    assert any("20250206" in line and "failed" in line for line in lines)
    assert any("2 pieces" in line and "20250301_20250313" in line for line in lines)


def test_a_connected_network_has_nothing_to_report() -> None:
    network = build_network([link("20250101", "20250113"), link("20250101", "20250125")])
    assert not network.is_split and not network.dropped and describe(network, "t") == []


def test_network_in_two_pieces_is_reported_and_mintpy_told(tmp_path: Path) -> None:
    track = make_track(tmp_path, n_dates=6)
    add_pairs(track, [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5)], failed=[(2, 3)])
    (result,) = run_timeseries(track.settings, run_mintpy=False)
    assert any("2 pieces" in note for note in result.notes), result.notes
    with h5py.File(stack_of(result), "r") as f:
        date12 = [f"{a.decode()}_{b.decode()}" for a, b in f["date"][:]]
        kept = dict(zip(date12, f["dropIfgram"][:], strict=True))
    small = {track.pair_id(3, 4), track.pair_id(4, 5)}
    assert {d for d, k in kept.items() if not k} == small  # equal pieces: the earlier is kept
    cfg = (result.work_dir / "smallbaselineApp.cfg").read_text()
    excluded = next(line for line in cfg.splitlines() if "excludeDate12" in line)
    assert all(d in excluded for d, k in kept.items() if not k)

    assert any(track.pair_id(2, 3) in note for note in result.notes) is False  # not stranded


def test_a_date_reached_only_through_failed_pairs_is_reported(tmp_path: Path) -> None:
    track = make_track(tmp_path, n_dates=4)
    add_pairs(track, [(0, 1), (1, 2), (0, 2)], failed=[(2, 3), (1, 3)])
    (result,) = run_timeseries(track.settings, run_mintpy=False)
    day = f"{track.days[3]:%Y%m%d}"
    assert any(day in note and "failed" in note for note in result.notes), result.notes
    with h5py.File(stack_of(result), "r") as f:
        assert day.encode() not in set(f["date"][:].ravel())


# ---- the grid ------------------------------------------------------------------------------


def shifted(grid: tuple[float, float, float, float], dx: float, dy: float) -> tuple:
    west, north, dlon, dlat = grid
    return (west + dx * dlon, north + dy * dlat, dlon, dlat)


def test_a_pair_on_a_shifted_grid_is_caught_and_resampled(tmp_path: Path) -> None:
    track = make_track(tmp_path, n_dates=4)
    odd = (1, 2)
    add_pairs(track, [(0, 1), (1, 2), (2, 3), (0, 2)], grids={odd: shifted(GRID, 2.5, -1.5)})
    (result,) = run_timeseries(track.settings, run_mintpy=False)
    assert result.resampled == (track.pair_id(*odd),)
    assert any(track.pair_id(*odd) in note and "resampled" in note for note in result.notes)
    lat, lon = coordinates(SHAPE[0], SHAPE[1], GRID)
    truth = track.truth
    change = truth.displacement_m(track.days[2], lat, lon)
    change -= truth.displacement_m(track.days[1], lat, lon)
    expected = -4 * math.pi / WAVELENGTH * change
    with h5py.File(stack_of(result), "r") as f:
        dates = [f"{a.decode()}_{b.decode()}" for a, b in f["date"][:]]
        phase = f["unwrapPhase"][dates.index(track.pair_id(*odd))]
        conncomp = f["connectComponent"][dates.index(track.pair_id(*odd))]
        coherence = f["coherence"][dates.index(track.pair_id(*odd))]
    inner = np.isfinite(phase)
    inner[:5], inner[-5:], inner[:, :5], inner[:, -12:] = False, False, False, False
    # On the common grid the resampled phase is the truth there (noise, averaged by bilinear).
    assert float(np.abs(phase[inner] - expected[inner]).mean()) < 0.15
    assert set(np.unique(conncomp)) <= {0, 1}  # nearest neighbour: labels stay labels
    assert (conncomp[inner] == 1).all() and float(np.nanmin(coherence[inner])) > 0.7
    assert not list(Path.cwd().glob("*.geo")), "GDAL resolved a raw file against the cwd"


def test_grid_comparison_and_plan_notes() -> None:
    grid = Grid(-128.5, 52.2, 0.002, -0.002, 100, 100)
    assert grid.same_as(Grid(-128.5 + 1e-7, 52.2, 0.002, -0.002, 100, 100))
    assert not grid.same_as(Grid(-128.499, 52.2, 0.002, -0.002, 100, 100))
    assert not grid.same_as(Grid(-128.5, 52.2, 0.002, -0.002, 101, 100))
    notes = grid_notes(
        {"a": "108", "b": "108", "c": "35"},
        {"a": Path("dem1"), "b": Path("dem2"), "c": Path("dem1")},
    )
    assert len(notes) == 1 and "relative orbit 108 use 2 DEMs" in notes[0]
    assert grid_notes({"a": "108", "b": "108"}, {"a": Path("d"), "b": Path("d")}) == []


# ---- a growing stack -----------------------------------------------------------------------


def test_adding_dates_appends_to_the_stack_and_reruns_mintpy(tmp_path: Path) -> None:
    track = make_track(tmp_path, n_dates=8)
    first = [pair for pair in neighbour_pairs(8) if pair[1] < 6]
    add_pairs(track, first)
    (before,) = run_timeseries(track.settings, run_mintpy=False)
    with h5py.File(stack_of(before), "r") as f:
        old_phase = f["unwrapPhase"][:]
        old_dates = f["date"][:]
    later = [pair for pair in neighbour_pairs(8) if pair[1] >= 6]
    add_pairs(track, later)
    (after,) = run_timeseries(track.settings)
    assert after.update is not None and not after.update.rewritten
    assert len(after.update.added) == len(later) and len(after.update.kept) == len(first)
    with h5py.File(stack_of(after), "r") as f:
        assert f["unwrapPhase"].shape[0] == len(first) + len(later)
        np.testing.assert_array_equal(f["unwrapPhase"][: len(first)], old_phase)
        np.testing.assert_array_equal(f["date"][: len(first)], old_dates)
        assert f.attrs["NUMBER_OF_PAIRS"] == str(len(first) + len(later))
    assert after.mintpy is not None and after.mintpy.ok
    with h5py.File(after.mintpy.timeseries, "r") as f:
        assert len(f["date"]) == 8
    (again,) = run_timeseries(track.settings, run_mintpy=False)
    assert again.update is not None and again.update.added == ()


# ---- what MintPy's readers see -------------------------------------------------------------


def test_attributes_as_mintpy_reads_them(tmp_path: Path) -> None:
    from mintpy.objects import ifgramStack
    from mintpy.utils import readfile

    track = make_track(tmp_path, n_dates=3)
    add_pairs(track, [(0, 1), (1, 2), (0, 2)], unwrap_error=[(0, 2)])
    (result,) = run_timeseries(track.settings, run_mintpy=False)
    stack = str(stack_of(result))
    atr = readfile.read_attribute(stack)
    assert atr["FILE_TYPE"] == "ifgramStack"
    assert (int(atr["LENGTH"]), int(atr["WIDTH"])) == SHAPE
    assert float(atr["X_FIRST"]) == GRID[0] and float(atr["Y_STEP"]) == GRID[3]
    assert float(atr["WAVELENGTH"]) == pytest.approx(WAVELENGTH)
    assert atr["ORBIT_DIRECTION"] == "ASCENDING" and atr["PLATFORM"] == "sen"
    assert float(atr["HEADING"]) == pytest.approx(-15.41, abs=0.01)  # IW2's annotation
    assert 790e3 < float(atr["STARTING_RANGE"]) < 810e3  # IW1 near range
    assert float(atr["RANGE_PIXEL_SIZE"]) == pytest.approx(2.329562 * 19, rel=1e-3)
    assert 6.35e6 < float(atr["EARTH_RADIUS"]) < 6.40e6
    assert 690e3 < float(atr["HEIGHT"]) < 710e3
    assert 8400 < float(atr["CENTER_LINE_UTC"]) < 8430  # 02:20:2x
    assert (atr["RLOOKS"], atr["ALOOKS"]) == ("19", "7")
    obj = ifgramStack(stack)
    obj.open(print_msg=False)
    assert obj.get_date12_list(dropIfgram=False) == [
        track.pair_id(0, 1), track.pair_id(0, 2), track.pair_id(1, 2)
    ]  # fmt: skip
    bperp = obj.pbaseIfgram
    assert np.all(np.abs(bperp) > 0) and np.all(np.abs(bperp) < 300)
    phase = readfile.read(stack, datasetName=f"unwrapPhase-{track.pair_id(0, 1)}")[0]
    assert np.isnan(phase[:, -1]).all() and np.isfinite(phase[:, :50]).all()  # fill -> NaN
    conncomp = readfile.read(stack, datasetName=f"connectComponent-{track.pair_id(0, 2)}")[0]
    assert (conncomp == 2).sum() > 0  # the unwrapping error's own component
    geometry = str(result.work_dir / "inputs" / "geometryGeo.h5")
    gatr = readfile.read_attribute(geometry)
    assert gatr["FILE_TYPE"] == "geometry"
    names = readfile.get_dataset_list(geometry)
    assert {"height", "incidenceAngle", "azimuthAngle", "slantRangeDistance", "waterMask"} <= set(
        names
    )
    incidence = readfile.read(geometry, datasetName="incidenceAngle")[0]
    assert 30 < np.nanmin(incidence) and np.nanmax(incidence) < 47
    assert np.nanmax(readfile.read(geometry, datasetName="azimuthAngle")[0]) == 105
    slant = readfile.read(geometry, datasetName="slantRangeDistance")[0]
    assert 700e3 < np.nanmin(slant) < np.nanmax(slant) < 1000e3


def test_perpendicular_baseline_from_a_real_topsproc_xml() -> None:
    path = real_path("isce2", "hyp3-isce2_slc_pair", "topsProc.xml")
    values = [-129.02564735771583, -128.4478925081657, -121.75556328218755]
    values += [-121.17848139467209, -115.07647495287986, -114.51092258523053]
    assert perpendicular_baseline(path) == pytest.approx(sum(values) / len(values))


def test_topsproc_without_baseline_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "topsProc.xml"
    path.write_text("<topsProc><baseline/></topsProc>")
    with pytest.raises(InputError, match="perpendicular baseline"):
        perpendicular_baseline(path)


def test_annotation_of_a_real_product() -> None:
    safe = real_path(
        "s1_slc", "S1A_IW_SLC__1SDV_20250406T022008_20250406T022035_058630_07421F_93A7.SAFE"
    )
    (iw1, iw3) = read_annotations(safe, (1, 3), "vv")
    assert iw1.wavelength == pytest.approx(0.05546576, rel=1e-6)
    assert iw1.pass_direction == "ASCENDING" and iw1.near_range < iw3.near_range


def test_config_runs_offline_from_modify_network() -> None:
    text = config_text(["20250101_20250113"], None)
    options = dict(
        (part.strip() for part in line.split("=", 1))
        for line in text.splitlines()
        if line and not line.startswith("#")
    )
    assert options["mintpy.troposphericDelay.method"] == "no"
    assert options["mintpy.reference.lalo"] == "auto"
    assert options["mintpy.network.excludeDate12"] == "20250101_20250113"
    assert "mintpy.reference.lalo = 52.1,-128.4" in config_text([], "52.1,-128.4").replace("  ", "")
    assert parse_lalo("52.1, -128.4") == (52.1, -128.4)
    with pytest.raises(InputError, match="REFERENCE_LALO"):
        parse_lalo("north")


def test_timeseries_is_a_command() -> None:
    assert COMMANDS["timeseries"][:2] == ("timeseries.command", "timeseries_command")


def test_the_command_before_any_run_exits_2_saying_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    result = run_main(["timeseries"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "no ledger" in result.stderr and "Traceback" not in result.stderr


def test_the_command_prints_each_track(tmp_path: Path) -> None:
    track = make_track(tmp_path, n_dates=3)
    add_pairs(track, [(0, 1), (1, 2)], failed=[(0, 2)])
    env = clean_environ(PATH=os.environ.get("PATH", ""))
    result = run_main(["--data", str(track.settings.data_dir), "timeseries"], tmp_path, env, 120)
    assert result.returncode == 0, result.stderr
    assert "track_108: 3 dates, 2 pairs (0 dropped, 1 failed)" in result.stdout


@pytest.mark.parametrize("value", ["north", "52.1", "95,10", "1,2,3"])
def test_a_bad_reference_lalo_is_refused_naming_the_key(value: str, tmp_path: Path) -> None:
    from insar_pipeline.inputs.config import load_settings

    with pytest.raises(InputError, match="REFERENCE_LALO"):
        load_settings({"data_dir": tmp_path}, environ={"REFERENCE_LALO": value})


def test_a_finished_pair_without_products_is_left_out_and_named(tmp_path: Path) -> None:
    track = make_track(tmp_path, n_dates=4)
    add_pairs(track, [(0, 1), (1, 2), (2, 3), (1, 3)])
    gone = track.settings.run_dir(track.pair_id(2, 3)) / "merged" / "filt_topophase.unw.geo.vrt"
    gone.unlink()
    (gone.parent / "filt_topophase.unw.geo").unlink()
    (result,) = run_timeseries(track.settings, run_mintpy=False)
    assert any(track.pair_id(2, 3) in note and "left out" in note for note in result.notes)
    assert len(result.network.links) == 3 and not result.network.is_split


def test_per_date_baselines_from_the_pairs() -> None:
    from insar_pipeline.timeseries.page import date_baselines

    per_date = date_baselines([("a", "b", 10.0), ("b", "c", -4.0), ("a", "c", 6.0)])
    assert per_date == pytest.approx({"a": 0.0, "b": 10.0, "c": 6.0})
