"""A finished track for the time-series tests: products, ledger rows, pair folders.

Products are built from the real s1_slc annotation (conftest.make_safe_product, so the test
skips without ../shared/realdata); each finished pair's folder holds what topsApp's double
writes with a deformation truth (double_deformation): the geocoded unwrapped phase, coherence,
connected components, LOS, DEM crop and a topsProc.xml with its perpendicular baseline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from conftest import make_data_folder, make_safe_product
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.safe import read_product
from insar_pipeline.ledger.store import Ledger
from isce_double.double_deformation import Truth, baseline_xml, pair_fields
from isce_double.double_rasters import heights, seed_of, write_image

FIRST = datetime(2025, 1, 11, 2, 20, 8, tzinfo=timezone.utc)
SPACING = timedelta(days=36)
GRID = (-128.5, 52.2, 0.002, -0.002)  # west, north, dlon, dlat
SHAPE = (100, 100)  # lines, width


@dataclass
class TrackSetup:
    settings: Settings
    truth: Truth
    names: list[str]  # product name per date index
    days: list[date]

    def pair_id(self, first: int, second: int) -> str:
        return f"{self.days[first]:%Y%m%d}_{self.days[second]:%Y%m%d}"


def make_track(
    tmp_path: Path, n_dates: int = 10, truth: Truth | None = None, **settings_changes: object
) -> TrackSetup:
    data_dir = make_data_folder(tmp_path)
    names, days = [], []
    for index in range(n_dates):
        safe = make_safe_product(data_dir / "raw", start=FIRST + index * SPACING)
        product = read_product(safe)
        names.append(product.name)
        days.append(product.start.date())
    settings = Settings(data_dir=data_dir, **settings_changes)
    return TrackSetup(settings, truth or Truth(), names, days)


def neighbour_pairs(n_dates: int, neighbours: int = 2) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n_dates) for j in range(i + 1, min(n_dates, i + 1 + neighbours))]


def add_pairs(
    track: TrackSetup,
    pairs: Iterable[tuple[int, int]],
    *,
    failed: Sequence[tuple[int, int]] = (),
    grid: tuple[float, float, float, float] = GRID,
    shape: tuple[int, int] = SHAPE,
    unwrap_error: Sequence[tuple[int, int]] = (),
    grids: dict[tuple[int, int], tuple[float, float, float, float]] | None = None,
) -> None:
    """Finished (and failed) pairs: folders as the double writes them, rows in the ledger."""
    done = list(pairs)
    rows = [
        (track.pair_id(a, b), track.names[a], track.names[b], line)
        for line, (a, b) in enumerate([*done, *failed], 1)
    ]
    ledger = Ledger.open_writer(track.settings.runs_dir)
    try:
        ledger.register_pairs(rows, phases_total=7, unlist_others=False)
        for a, b in done:
            pair_grid = (grids or {}).get((a, b), grid)
            write_pair(track, a, b, pair_grid, shape, (a, b) in unwrap_error)
            ledger.set_pair(track.pair_id(a, b), status="done")
        for a, b in failed:
            ledger.set_pair(track.pair_id(a, b), status="failed", error="topo failed")
    finally:
        ledger.close()


def write_pair(
    track: TrackSetup,
    first: int,
    second: int,
    grid: tuple[float, float, float, float],
    shape: tuple[int, int],
    unwrap_error: bool = False,
) -> Path:
    run_dir = track.settings.run_dir(track.pair_id(first, second))
    merged = run_dir / "merged"
    lines, width = shape
    fields = pair_fields(
        track.truth,
        track.days[first],
        track.days[second],
        lines,
        width,
        grid,
        seed_of(track.names[first], track.names[second]),
        unwrap_error,
    )
    write_image(
        merged / "filt_topophase.unw.geo", [fields["amplitude"], fields["phase"]], "FLOAT", grid
    )
    write_image(merged / "filt_topophase.unw.conncomp.geo", [fields["conncomp"]], "BYTE", grid)
    write_image(merged / "phsig.cor.geo", [fields["coherence"]], "FLOAT", grid)
    incidence = np.tile(np.linspace(30.5, 46.5, width), (lines, 1))
    los = [incidence, np.full((lines, width), 105.0)]  # ascending: ISCE's LOS azimuth
    fill = fields["amplitude"] == 0
    for band in los:
        band[fill] = 0
    write_image(merged / "los.rdr.geo", los, "FLOAT", grid)
    write_image(merged / "dem.crop", [heights(lines, width).astype("int16")], "SHORT", grid)
    bperp = baseline_xml(track.names[first], track.names[second], [2, 2, 2])
    (run_dir / "topsProc.xml").write_text(
        f"<topsProc>\n  <baseline>\n{bperp}  </baseline>\n</topsProc>\n"
    )
    return run_dir


def truth_velocity(track: TrackSetup, dates: Sequence[date], grid=GRID, shape=SHAPE) -> np.ndarray:
    from isce_double.double_deformation import coordinates

    lat, lon = coordinates(shape[0], shape[1], grid)
    return track.truth.velocity_mm_yr(list(dates), lat, lon)
