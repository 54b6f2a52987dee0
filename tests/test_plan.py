"""`plan` as the user runs it: a child process on a data folder built in tmp_path."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import (
    SLC_REFERENCE,
    SLC_SECONDARY,
    clean_environ,
    make_data_folder,
    make_safe_product,
    run_main,
)

PHASES_WITHOUT_ION = "preprocess geometry coregistration interferogram unwrap geocode"


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder: data/ with the real pair (as .SAFE) and a later scene (as .zip)."""
    raw = make_data_folder(tmp_path) / "raw"
    make_safe_product(raw, SLC_REFERENCE, SLC_REFERENCE)
    make_safe_product(raw, SLC_SECONDARY, SLC_SECONDARY)
    later = make_safe_product(raw, start=datetime(2025, 4, 30, 2, 20, 8, tzinfo=timezone.utc),
                              swaths=(1, 2), as_zip=True)  # fmt: skip
    (tmp_path / "pairs.txt").write_text(
        "# two pairs, the first written later-date first\n"
        f'("{SLC_SECONDARY}.SAFE", "{SLC_REFERENCE}.SAFE")\n'
        f"{SLC_SECONDARY} {later.name}\n"
    )
    return tmp_path


def test_plan_prints_pairs_scenes_swaths_and_phases(project: Path) -> None:
    before = tree(project)
    result = run_main(["plan"], project)
    assert result.returncode == 0, result.stderr
    later = next((project / "data" / "raw").glob("*.zip")).name
    out = result.stdout.splitlines()
    assert out[0] == "Plan: 2 pairs, 3 scenes, 1 track (108) from pairs.txt; data folder data"
    assert out[1].startswith("settings: swaths IW1,IW2,IW3  polarization VV  looks 19 range x 7")
    first = out.index("20250406_20250418  (pairs.txt:2, relative orbit 108, 12 days)")
    assert out[first + 1 : first + 9] == [
        f"  reference  {SLC_REFERENCE}.SAFE",
        "             2025-04-06 02:20:08.592193 to 02:20:35.567258 UTC",
        "             orbit download: first try asf",
        f"  secondary  {SLC_SECONDARY}.SAFE",
        "             2025-04-18 02:20:08.470270 to 02:20:35.445335 UTC",
        "             orbit download: first try asf",
        "  swaths     IW1 IW2 IW3",
        f"  phases     {PHASES_WITHOUT_ION}",
    ]
    second = out.index("20250418_20250430  (pairs.txt:3, relative orbit 108, 12 days)")
    assert out[second + 4] == f"  secondary  {later}"
    assert out[second + 7] == "  swaths     IW1 IW2"
    # Both pairs overlap: one DEM for the region, to be read from the open Copernicus bucket
    # (no OpenTopography key: DEM_SOURCE=auto needs none), 4 x 6 tiles' windows.
    dem_lines = out[out.index("DEM: 1 DEM") + 1 :]
    assert dem_lines[0].startswith("  demLat_N50_N54_Lon_W131_W125_COP30.dem.wgs84  box ")
    assert "read from the Copernicus bucket: windows of 24 tile(s), about " in dem_lines[0]
    assert dem_lines[0].endswith(" MB  for 2 pairs")
    assert not any("OPENTOPO_API_KEY" in line for line in dem_lines)
    # (a warning line about the EGM2008 grid comes before it where PROJ lacks that grid)
    assert (
        "geometry: topo runs at most 2 times for 2 pairs: pairs sharing a reference reuse its"
        " geometry"
    ) in dem_lines[1:5]
    assert (
        out[-1] == "`run` would run 12 phases for 2 pairs (0 already done). Nothing was downloaded."
    )
    assert result.stderr.splitlines() == [
        f"warning: pairs.txt:2: {SLC_REFERENCE} is the earlier date; swapped",
        "warning: pairs.txt:3: IW3 left out: not in both products",
    ]
    # Nothing written but the pipeline log, which holds the same warnings as JSON lines.
    assert set(tree(project)) - set(before) == {"data/runs/pipeline.log"}
    assert tree(project).items() >= before.items()
    events = [
        json.loads(line) for line in (project / "data/runs/pipeline.log").read_text().splitlines()
    ]
    assert [e["message"] for e in events if e["level"] == "WARNING"] == [
        f"pairs.txt:2: {SLC_REFERENCE} is the earlier date; swapped",
        "pairs.txt:3: IW3 left out: not in both products",
    ]


def test_plan_honours_env_only_and_finished_steps(project: Path) -> None:
    (project / ".env").write_text("IONOSPHERE = true  # own phase\nSWATHS = 1,2\n")
    pickle = project / "data" / "runs" / "20250406_20250418" / "PICKLE"
    pickle.mkdir(parents=True)
    for step in ("startup", "preprocess", "computeBaselines", "verifyDEM", "topo"):
        (pickle / step).touch()
        (pickle / f"{step}.xml").touch()
    result = run_main(["plan", "--only", "20250406_20250418"], project)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0].startswith("Plan: 1 pair, 2 scenes, 1 track (108)")
    assert "  swaths     IW1 IW2" in out
    assert (
        "  phases     coregistration ionosphere interferogram unwrap geocode"
        "  (resumes at topsApp step subsetoverlaps)"
    ) in out
    assert "20250418_20250430" not in result.stdout
    assert (
        out[-1] == "`run` would run 5 phases for 1 pair (0 already done). Nothing was downloaded."
    )


def test_plan_of_a_finished_pair(project: Path) -> None:
    from insar_pipeline.topsapp.steps import STEPS

    pickle = project / "data" / "runs" / "20250406_20250418" / "PICKLE"
    pickle.mkdir(parents=True)
    for step in STEPS:
        (pickle / step).touch()
        (pickle / f"{step}.xml").touch()
    result = run_main(["plan"], project)
    assert result.returncode == 0, result.stderr
    assert "  phases     none left: the pair is done" in result.stdout.splitlines()
    assert result.stdout.splitlines()[-1] == (
        "`run` would run 6 phases for 1 pair (1 already done). Nothing was downloaded."
    )


def empty_raw(project: Path) -> None:
    for entry in (project / "data" / "raw").iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    (project / "data" / "raw" / ".gitkeep").touch()


BAD_INPUTS = {
    "no data folder": (
        lambda p: shutil.rmtree(p / "data"),
        ["error: data folder data does not exist; create it with a raw/ folder holding the"
         " Sentinel-1 products, or pass --data DIR"],
    ),
    "empty raw": (
        empty_raw,
        ["error: data/raw holds no .SAFE folder or .zip file; put the Sentinel-1 IW SLC"
         " products of pairs.txt there"],
    ),
    "no pairs file": (
        lambda p: (p / "pairs.txt").unlink(),
        ["error: pairs.txt not found; write one pair per line (see the example pairs.txt) or"
         " generate one with `main_parallel.py pairs`"],
    ),
    "bad lines": (
        lambda p: (p / "pairs.txt").write_text(
            f"{SLC_REFERENCE}\n# fine\n{SLC_REFERENCE} /etc/{SLC_SECONDARY}\n"
            f"{SLC_REFERENCE} S1A_IW_SLC__1SDV_20250430T022008_missing\n"
        ),
        ["error: pairs.txt:1: expected two product names (one pair per line), found"
         f" '{SLC_REFERENCE}'",
         f"pairs.txt:3: '/etc/{SLC_SECONDARY}': names must be product names in data/raw"
         " (no folders, paths or '..')",
         "pairs.txt:4: S1A_IW_SLC__1SDV_20250430T022008_missing is not in data/raw (no"
         " S1A_IW_SLC__1SDV_20250430T022008_missing.SAFE folder or"
         " S1A_IW_SLC__1SDV_20250430T022008_missing.zip file)"],
    ),
    "unknown only": (
        lambda p: None,
        ["error: --only 20200101_20200113: no such pair id in pairs.txt (ids there:"
         " 20250406_20250418, 20250418_20250430)"],
    ),
    "truncated zip": (
        lambda p: [z.write_bytes(z.read_bytes()[:999]) for z in (p / "data/raw").glob("*.zip")],
        ["error: pairs.txt:3: data/raw/{zip}: not a readable zip (File is not a zip file);"
         " download it again"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_the_reason_and_no_traceback(project: Path, case: str) -> None:
    spoil, expected = BAD_INPUTS[case]
    zip_name = next((project / "data" / "raw").glob("*.zip")).name
    spoil(project)
    args = ["plan", "--only", "20200101_20200113"] if case == "unknown only" else ["plan"]
    result = run_main(args, project)
    assert result.returncode == 2
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if not line.startswith("warning: ")]
    assert errors == [line.replace("{zip}", zip_name) for line in expected]
    assert "Traceback" not in result.stderr


def test_plan_shows_the_isce2_version_the_image_got(project: Path) -> None:
    result = run_main(["plan"], project, env={**clean_environ(), "ISCE2_VERSION": "2.6.4"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2] == "ISCE2 2.6.4"
    outside = run_main(["plan"], project)
    assert outside.stdout.splitlines()[2].startswith("ISCE2: version not known here")
