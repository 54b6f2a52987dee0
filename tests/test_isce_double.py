"""The topsApp double behaves as ISCE2_CONTRACT.md says topsApp does (it stands in for it)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from osgeo import gdal

from insar_pipeline.pair.prepare import prepare_pair
from insar_pipeline.topsapp.steps import STEPS
from isce_double.double_config import isce_value
from isce_double.double_faults import Faults
from pair_factory import make_pair_setup

gdal.UseExceptions()
PREPROCESS = ("--start=startup", "--end=verifyDEM")


@pytest.fixture
def setup(tmp_path):
    return make_pair_setup(tmp_path)


@pytest.fixture
def run_dir(setup) -> Path:
    return setup.prepare().run_dir


def topsapp(setup, run_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the double as the runner does: in the pair folder, with topsApp.xml."""
    extra = {f"ISCE_DOUBLE_{key.upper()}": str(value) for key, value in env.items()}
    return subprocess.run(
        [str(setup.topsapp), *args],
        cwd=run_dir,
        env={**os.environ, **extra},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def pickles(run_dir: Path) -> list[str]:
    folder = run_dir / "PICKLE"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# -- command line ----------------------------------------------------------------------------
def test_help_exits_1_and_help_steps_lists_the_steps_and_exits_0(setup, run_dir):
    assert topsapp(setup, run_dir, "--help").returncode == 1
    shown = topsapp(setup, run_dir, "--help", "--steps")
    assert shown.returncode == 0
    rows = [line for line in shown.stdout.splitlines() if line.startswith("['")]
    assert [step for row in rows for step in eval(row)] == list(STEPS)  # noqa: S307
    assert "'--start=<step>', '--end=<step>', '--dostep=<step>'" in shown.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("--dostep=nosuchstep",), "ERROR: start=nosuchstep is not one of the named steps"),
        (("--start=Topo",), "ERROR: start=Topo is not one of the named steps"),
        (("--start=topo", "--end=startup"), "comes after end=startup"),
    ],
)
def test_bad_step_ranges_print_an_error_and_still_exit_0(setup, run_dir, args, message):
    done = topsapp(setup, run_dir, "topsApp.xml", *args)
    assert done.returncode == 0
    assert message in done.stdout
    assert pickles(run_dir) == []


def test_start_without_equals_is_a_getopt_error(setup, run_dir):
    done = topsapp(setup, run_dir, "topsApp.xml", "--start", "topo")
    assert done.returncode == 1
    assert "GetoptError" in done.stderr


def test_start_without_the_previous_checkpoint_fails_like_isce(setup, run_dir):
    done = topsapp(setup, run_dir, "topsApp.xml", "--start=topo", "--end=topo")
    assert done.returncode == 1
    assert "Cannot open PICKLE/verifyDEM" in done.stdout
    assert "TypeError: 'NoneType' object is not subscriptable" in done.stderr
    assert pickles(run_dir) == []


def test_each_step_writes_its_checkpoint_xml_then_pickle(setup, run_dir):
    done = topsapp(setup, run_dir, "topsApp.xml", *PREPROCESS)
    assert done.returncode == 0, done.stderr
    steps = ["startup", "preprocess", "computeBaselines", "verifyDEM"]
    assert pickles(run_dir) == sorted(steps + [f"{s}.xml" for s in steps])
    again = topsapp(setup, run_dir, "topsApp.xml", "--next")  # the step after verifyDEM
    assert again.returncode == 0 and "Cannot open" not in again.stdout
    assert "Running step topo" in again.stdout and "Running step subsetoverlaps" not in again.stdout
    assert (run_dir / "PICKLE" / "topo.xml").read_bytes() == (
        run_dir / "PICKLE" / "verifyDEM.xml"
    ).read_bytes()


def test_no_step_option_runs_everything_without_checkpoints(setup, run_dir):
    done = topsapp(setup, run_dir, "topsApp.xml")
    assert done.returncode == 0, done.stderr
    assert pickles(run_dir) == []
    assert (run_dir / "merged" / "filt_topophase.unw.geo").exists()


# -- configuration ---------------------------------------------------------------------------
def test_an_unknown_property_stops_before_any_step(setup, run_dir):
    xml = run_dir / "topsApp.xml"
    xml.write_text(xml.read_text().replace('name="range looks"', 'name="range lookz"'))
    done = topsapp(setup, run_dir, "topsApp.xml", *PREPROCESS)
    assert done.returncode == 1
    assert 'Error. The attribute corresponding to the key "rangelookz"' in done.stdout
    assert pickles(run_dir) == []


def test_a_missing_mandatory_property_fails(setup, run_dir):
    xml = run_dir / "topsApp.xml"
    text = xml.read_text()
    xml.write_text(text.replace('<property name="output directory">secondary</property>', ""))
    done = topsapp(setup, run_dir, "topsApp.xml", *PREPROCESS)
    assert done.returncode == 1
    assert "'outputdirectory'" in done.stdout


@pytest.mark.parametrize(
    "text, expected",
    [
        ("False", False),
        ("0", False),
        ("None", False),
        ("", False),
        ("True", True),
        ("false", True),
        ("FALSE", True),
        ("no", True),
        ("true", True),
        ("1", True),
    ],
)
def test_booleans_are_parsed_like_isce(text, expected):
    assert bool(isce_value(text)) is expected


def test_missing_safe_and_missing_dem_fail_non_zero(tmp_path):
    setup = make_pair_setup(tmp_path)
    run_dir = setup.prepare().run_dir
    setup.dem.with_name(setup.dem.name + ".xml").rename(tmp_path / "dem.xml")
    done = topsapp(setup, run_dir, "topsApp.xml", *PREPROCESS)
    assert done.returncode == 1 and "dem.wgs84.xml" in done.stderr
    setup.pairs[0].secondary.path.rename(tmp_path / "moved.SAFE")
    done = topsapp(setup, run_dir, "topsApp.xml", *PREPROCESS)
    assert done.returncode == 1 and "SAFE product not found" in done.stderr


# -- silent failures -------------------------------------------------------------------------
def test_no_covering_orbit_extracts_nothing_and_still_exits_0(tmp_path):
    setup = make_pair_setup(tmp_path, uncovered_scenes=[0])
    run_dir = setup.prepare().run_dir
    done = topsapp(setup, run_dir, "topsApp.xml", *PREPROCESS)
    assert done.returncode == 0
    assert "Could not extract swath 1 from" in done.stdout
    assert "Generated error:  No suitable orbit file found" in done.stdout
    assert "No swaths contain any burst overlaps" in done.stdout
    assert not list((run_dir / "reference").glob("IW*.xml"))
    assert len(list((run_dir / "secondary").glob("IW*.xml"))) == 3
    assert "verifyDEM.xml" in pickles(run_dir)
    topo = topsapp(setup, run_dir, "topsApp.xml", "--dostep=topo")
    assert topo.returncode == 1 and "IndexError: too many indices for array" in topo.stderr


def test_a_missing_polarization_is_a_silent_preprocess_failure(tmp_path):
    setup = make_pair_setup(tmp_path).with_settings(polarization="hh")
    run_dir = setup.prepare().run_dir
    done = topsapp(setup, run_dir, "topsApp.xml", *PREPROCESS)
    assert done.returncode == 0
    assert done.stdout.count("Could not extract swath") == 6
    assert "polarization hh" in done.stdout


def test_no_burst_overlap_is_reported_with_exit_0(setup, run_dir):
    done = topsapp(setup, run_dir, "topsApp.xml", *PREPROCESS, no_overlap=1)
    assert done.returncode == 0
    assert "No swaths contain any burst overlaps" in done.stdout


@pytest.mark.parametrize(
    "shift, code, message",
    [
        ("20250418=3", 1, "Exception: Could not determine a suitable burst offset"),
        ("20250418:IW2=2", 0, "No common bursts found for swath 2"),
    ],
)
def test_dates_that_do_not_share_bursts_fail_as_compute_baselines_does(
    setup, run_dir, shift, code, message
):
    done = topsapp(setup, run_dir, "topsApp.xml", *PREPROCESS, burst_shift=shift)
    assert done.returncode == code and message in done.stdout + done.stderr
    if code:
        assert done.stderr.rstrip().splitlines()[-1] == message  # a traceback's last line
    else:
        assert "No common bursts found for swath 1" not in done.stdout


@pytest.mark.parametrize("esd, code", [("true", 1), ("false", 0)])
def test_incoherent_overlaps_fail_esd_only_with_esd_on(tmp_path, esd, code):
    setup = make_pair_setup(tmp_path, esd=esd)
    run_dir = setup.prepare().run_dir
    assert topsapp(setup, run_dir, "topsApp.xml", "--end=topo").returncode == 0
    done = topsapp(
        setup,
        run_dir,
        "topsApp.xml",
        "--start=subsetoverlaps",
        "--end=fineresamp",
        overlap_coherence=0.5,
    )
    assert done.returncode == code
    esd_error = (
        "Exception: Coherence threshold too strict. No points left for reliable ESD estimate"
    )
    assert ((done.stderr.rstrip().splitlines() or [""])[-1] == esd_error) == bool(code)
    assert (run_dir / "PICKLE" / "fineresamp.xml").is_file() == (not code)


# -- products --------------------------------------------------------------------------------
def test_geometry_depends_only_on_the_geometry_key(tmp_path):
    setup = make_pair_setup(tmp_path, n_pairs=2)
    first, second = setup.pairs
    # 20250406_20250430 shares its reference with 20250406_20250418 (the first pair).
    shared = dataclasses.replace(first, id="20250406_20250430", secondary=second.secondary)
    folders = []
    for pair in (first, shared, second):
        job = prepare_pair(setup.settings, pair, setup.orbit_files, setup.dem, 1)
        assert (
            topsapp(setup, job.run_dir, "topsApp.xml", "--start=startup", "--end=topo").returncode
            == 0
        )
        folders.append(job.run_dir)

    def tree(folder: Path, pattern: str) -> dict[str, bytes]:
        return {
            p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.glob(pattern))
        }

    assert tree(folders[0], "geom_reference/IW*/*.rdr") == tree(
        folders[1], "geom_reference/IW*/*.rdr"
    )
    assert tree(folders[0], "reference/IW*.xml") == tree(folders[1], "reference/IW*.xml")
    assert tree(folders[0], "geom_reference/IW*/*.rdr") != tree(
        folders[2], "geom_reference/IW*/*.rdr"
    )
    # The guard of ISCE2_CONTRACT.md section 9 reads these from PICKLE/verifyDEM.xml.
    guard = (
        "numberofcommonbursts",
        "commonburststartreferenceindex",
        "geometrydirectoryname",
        "referenceslcproduct",
        "numberofswaths",
    )
    states = [checkpoint_state(folder / "PICKLE" / "verifyDEM.xml") for folder in folders[:2]]
    assert all(set(guard) <= set(state) for state in states)
    assert [{k: state[k] for k in guard} for state in states] == [
        {k: states[0][k] for k in guard}
    ] * 2
    assert states[0]["numberofcommonbursts"] == [2, 2, 2]


def checkpoint_state(path: Path) -> dict[str, object]:
    root = ElementTree.parse(path).getroot()
    return {p.get("name"): isce_value(p.findtext("value")) for p in root.iter("property")}


def test_a_different_region_of_interest_changes_the_geometry(tmp_path):
    bytes_of = []
    for name, roi in (("a", "51.5,52.5,-129.5,-127"), ("b", "51.6,52.4,-129,-127.5")):
        setup = make_pair_setup(tmp_path / name).with_settings(region_of_interest=roi)
        run_dir = setup.prepare().run_dir
        assert (
            topsapp(setup, run_dir, "topsApp.xml", "--start=startup", "--end=topo").returncode == 0
        )
        bytes_of.append(
            sorted(p.name for p in (run_dir / "geom_reference" / "IW1").glob("lat_*.rdr"))
        )
    assert bytes_of[0] != bytes_of[1]  # the region of interest picks other bursts


def test_product_tree_has_the_real_bytes_per_pixel(setup, run_dir):
    done = topsapp(
        setup, run_dir, "topsApp.xml", "--start=startup", "--end=geocode", scale="0.01", bursts="3"
    )
    assert done.returncode == 0, done.stderr
    pixels = {
        n: round(width * 0.01) * round(lines * 0.01)
        for n, (width, lines) in {1: (22612, 1502), 2: (26395, 1513), 3: (25384, 1518)}.items()
    }
    burst_pixels = 3 * sum(pixels.values())

    def raster_bytes(folder: str) -> int:
        return sum(
            p.stat().st_size
            for p in (run_dir / folder).rglob("*")
            if p.is_file() and p.suffix not in (".xml", ".vrt") and "overlaps" not in p.parts
        )

    assert raster_bytes("geom_reference") == 32 * burst_pixels
    assert raster_bytes("fine_coreg") == 8 * burst_pixels
    assert raster_bytes("fine_offsets") == 8 * burst_pixels
    assert raster_bytes("fine_interferogram") == 16 * burst_pixels
    assert (run_dir / "geom_reference" / "overlaps").is_dir()  # do ESD True: overlap products


def test_merged_products_are_real_georeferenced_rasters(setup, run_dir):
    done = topsapp(setup, run_dir, "topsApp.xml", "--start=startup", "--end=geocode")
    assert done.returncode == 0, done.stderr
    merged = run_dir / "merged"
    south, north, west, east = setup.settings.region_of_interest.snwe()
    expected = {
        "filt_topophase.flat.geo": (1, "CFloat32"),
        "filt_topophase.unw.geo": (2, "Float32"),
        "phsig.cor.geo": (1, "Float32"),
        "topophase.cor.geo": (2, "Float32"),
        "los.rdr.geo": (2, "Float32"),
        "filt_topophase.unw.conncomp.geo": (1, "Byte"),
        "dem.crop": (1, "Int16"),
    }
    for name, (bands, data_type) in expected.items():
        for opened in (merged / name, merged / f"{name}.vrt"):  # GDAL's ISCE driver, and the VRT
            dataset = gdal.Open(str(opened))
            assert dataset.RasterCount == bands
            assert gdal.GetDataTypeName(dataset.GetRasterBand(1).DataType) == data_type
            x0, dx, _, y0, _, dy = dataset.GetGeoTransform()
            assert (x0, y0) == (west, north)
            assert x0 + dx * dataset.RasterXSize == pytest.approx(east)
            assert y0 + dy * dataset.RasterYSize == pytest.approx(south)
    flat = read(merged / "filt_topophase.flat.geo")
    assert np.iscomplexobj(flat) and np.ptp(np.angle(flat)) > 6  # fringes: the full phase cycle
    coherence = read(merged / "phsig.cor.geo")
    assert 0 <= coherence.min() and coherence.max() <= 1 and coherence.std() > 0.05
    unwrapped = read(merged / "filt_topophase.unw.geo")[1]
    assert np.ptp(unwrapped) > 4 * np.pi  # several cycles, not wrapped


def read(path: Path) -> np.ndarray:
    dataset = gdal.Open(str(path))  # keep the dataset alive while its bands are read
    return dataset.ReadAsArray()


# -- faults ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, returncode, message",
    [
        ("io", 1, "OSError: [Errno 5] Input/output error"),
        ("nospace", 1, "OSError: [Errno 28] No space left on device"),
        ("memory", 1, "MemoryError"),
        ("config", 1, 'Error. The attribute corresponding to the key "rangelookz"'),
        ("crash", 1, "IndexError: too many indices for array"),
        ("oom", -signal.SIGKILL, ""),
        ("badalloc", -signal.SIGABRT, "std::bad_alloc"),
    ],
)
def test_injected_failures_look_like_topsapps(setup, run_dir, kind, returncode, message):
    done = topsapp(
        setup, run_dir, "topsApp.xml", "--dostep=startup", fail_step="startup", fail_kind=kind
    )
    assert done.returncode == returncode
    assert message in done.stdout + done.stderr
    assert pickles(run_dir) == []


def test_fail_n_times_counts_in_the_pair_folder_and_targets_pairs(setup, run_dir):
    args = ("topsApp.xml", "--dostep=startup")
    faults = {"fail_step": "startup", "fail_times": "2", "fail_pairs": run_dir.name}
    assert [topsapp(setup, run_dir, *args, **faults).returncode for _ in range(3)] == [1, 1, 0]
    other = {**faults, "fail_pairs": "20000101_20000113"}
    (run_dir / ".double_faults").rename(run_dir.parent / "old_faults")
    assert topsapp(setup, run_dir, *args, **other).returncode == 0


def test_kill_fault_leaves_partial_outputs_and_no_checkpoint(setup, run_dir):
    assert topsapp(setup, run_dir, "topsApp.xml", *PREPROCESS).returncode == 0
    killed = topsapp(setup, run_dir, "topsApp.xml", "--dostep=topo", kill_step="topo")
    assert killed.returncode == -signal.SIGKILL
    assert len(list((run_dir / "geom_reference").rglob("*.rdr"))) == 1  # stopped after one file
    assert "topo" not in pickles(run_dir)
    rows = [row for row in setup.step_log_rows() if row["step"] == "topo"]
    assert [row["outcome"] for row in rows] == ["killed"]
    again = topsapp(setup, run_dir, "topsApp.xml", "--dostep=topo", kill_step="topo")
    assert again.returncode == 0  # killed once only (counter in .double_faults/)


def test_step_log_records_pair_step_pid_and_times(setup, run_dir):
    assert topsapp(setup, run_dir, "topsApp.xml", *PREPROCESS).returncode == 0
    rows = setup.step_log_rows()
    assert [row["step"] for row in rows] == [
        "startup",
        "preprocess",
        "computeBaselines",
        "verifyDEM",
    ]
    assert {row["pair"] for row in rows} == {run_dir.name}
    assert len({row["pid"] for row in rows}) == 1
    assert all(float(row["start"]) <= float(row["end"]) for row in rows)


def test_sleep_setting_per_step_or_for_all(tmp_path):
    assert Faults({"ISCE_DOUBLE_SLEEP": "0.5"}, tmp_path).sleep_for("topo") == 0.5
    per_step = Faults({"ISCE_DOUBLE_SLEEP": "topo=2,unwrap=1"}, tmp_path)
    assert (per_step.sleep_for("topo"), per_step.sleep_for("geocode")) == (2.0, 0.0)
    other_pair = Faults({"ISCE_DOUBLE_SLEEP": "1", "ISCE_DOUBLE_SLEEP_PAIRS": "x"}, tmp_path)
    assert other_pair.sleep_for("topo") == 0.0
