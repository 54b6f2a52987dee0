"""MintPy's own inputs, written directly as its ARIA and NISAR loaders do.

`inputs/ifgramStack.h5` (`date`, `dropIfgram`, `bperp`, `unwrapPhase`, `coherence`,
`connectComponent`) and `inputs/geometryGeo.h5` (`height`, `incidenceAngle`, `azimuthAngle`,
`slantRangeDistance`, `waterMask`), laid out with `mintpy.utils.writefile.layout_hdf5`. Pairs are
streamed one at a time (memory does not grow with their number). A stack grows: pairs not in it
yet are appended to the 3-D datasets (which layout_hdf5 makes resizable) without rewriting what
is there; the small 1-D datasets are replaced. The unwrapped phase keeps topsApp's sign
(reference-first pairs, MintPy's date1_date2 convention); ISCE's zero fill becomes NaN.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from insar_pipeline._io import atomic_output
from insar_pipeline.timeseries.grid import RESAMPLING, Grid, read_on_grid

log = logging.getLogger(__name__)

STACK_NAME = "ifgramStack.h5"
GEOMETRY_NAME = "geometryGeo.h5"
UNW = "merged/filt_topophase.unw.geo"  # band 2: unwrapped phase (band 1: amplitude)
COR = "merged/phsig.cor.geo"
CONNCOMP = "merged/filt_topophase.unw.conncomp.geo"
LOS = "merged/los.rdr.geo"  # band 1 incidence, band 2 azimuth (ISCE's convention)
DEM = "merged/dem.crop"
UNITS = {"unwrapPhase": "radian", "coherence": "1", "connectComponent": "1", "bperp": "m"}
GEOMETRY_UNITS = {
    "height": "m",
    "incidenceAngle": "degree",
    "azimuthAngle": "degree",
    "slantRangeDistance": "m",
    "waterMask": "1",
}


@dataclass(frozen=True)
class StackPair:
    """A finished pair as the stack needs it."""

    pair_id: str
    reference: str  # YYYYMMDD
    secondary: str
    run_dir: Path
    bperp: float
    keep: bool  # MintPy's dropIfgram: True keeps the pair

    @property
    def date12(self) -> str:
        return f"{self.reference}_{self.secondary}"


@dataclass(frozen=True)
class StackUpdate:
    path: Path
    added: tuple[str, ...]  # date12 of the pairs written by this call
    kept: tuple[str, ...]  # date12 already in the stack, left as they were
    rewritten: bool  # the stack was (re)created from scratch


def read_pair(pair: StackPair, grid: Grid) -> dict[str, np.ndarray]:
    """One pair's three layers on the grid; the zero fill of the phase becomes NaN."""
    phase = read_on_grid(pair.run_dir / UNW, 2, grid, RESAMPLING["unwrapPhase"])
    coherence = read_on_grid(pair.run_dir / COR, 1, grid, RESAMPLING["coherence"])
    components = read_on_grid(pair.run_dir / CONNCOMP, 1, grid, RESAMPLING["connectComponent"])
    phase[phase == 0] = np.nan
    return {
        "unwrapPhase": phase,
        "coherence": coherence,
        "connectComponent": components.astype(np.int16),
    }


def write_stack(
    path: Path,
    pairs: Sequence[StackPair],
    grid: Grid,
    attributes: dict[str, str],
    read: Callable[[StackPair, Grid], dict[str, np.ndarray]] = read_pair,
) -> StackUpdate:
    """Create or grow `path` with these pairs (in this order), one pair in memory at a time."""
    existing = _existing_date12(path, grid)
    if existing is None:
        _create(path, pairs, grid, attributes, read)
        return StackUpdate(path, tuple(p.date12 for p in pairs), (), True)
    new = [pair for pair in pairs if pair.date12 not in existing]
    _append(path, existing, pairs, new, attributes, read, grid)
    return StackUpdate(path, tuple(p.date12 for p in new), tuple(existing), False)


def _existing_date12(path: Path, grid: Grid) -> list[str] | None:
    """The pairs in an existing stack on this grid (None: none, or another grid: rebuild)."""
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as f:
            same = all(
                str(f.attrs.get(key)) == value
                for key, value in grid.attributes().items()
                if key in ("WIDTH", "LENGTH", "X_FIRST", "Y_FIRST", "X_STEP", "Y_STEP")
            )
            dates = [f"{a.decode()}_{b.decode()}" for a, b in f["date"][:]]
    except (OSError, KeyError) as err:
        log.warning("%s is unreadable (%s): writing it again", path, err)
        return None
    if not same:
        log.warning("%s is on another grid: writing it again", path)
        return None
    return dates


def _layout(pairs: Sequence[StackPair], grid: Grid) -> dict[str, list]:
    count, shape = len(pairs), (grid.length, grid.width)
    return {
        "date": [np.dtype("S8"), (count, 2), _dates(pairs)],
        "dropIfgram": [np.bool_, (count,), np.array([p.keep for p in pairs], np.bool_)],
        "bperp": [np.float32, (count,), np.array([p.bperp for p in pairs], np.float32)],
        "unwrapPhase": [np.float32, (count, *shape), None],
        "coherence": [np.float32, (count, *shape), None],
        "connectComponent": [np.int16, (count, *shape), None],
    }


def _dates(pairs: Sequence[StackPair]) -> np.ndarray:
    return np.array([[p.reference.encode(), p.secondary.encode()] for p in pairs], np.bytes_)


def _create(
    path: Path,
    pairs: Sequence[StackPair],
    grid: Grid,
    attributes: dict[str, str],
    read: Callable[[StackPair, Grid], dict[str, np.ndarray]],
) -> None:
    from mintpy.utils import writefile

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**attributes, **grid.attributes(), "FILE_TYPE": "ifgramStack"}
    meta["NUMBER_OF_PAIRS"] = str(len(pairs))
    with atomic_output(path) as partial:
        writefile.layout_hdf5(
            str(partial), _layout(pairs, grid), metadata=meta, ds_unit_dict=UNITS, print_msg=False
        )
        with h5py.File(partial, "a") as f:
            for index, pair in enumerate(pairs):
                _write_slice(f, index, read(pair, grid))
            _touch(f)


def _append(
    path: Path,
    existing: list[str],
    pairs: Sequence[StackPair],
    new: Sequence[StackPair],
    attributes: dict[str, str],
    read: Callable[[StackPair, Grid], dict[str, np.ndarray]],
    grid: Grid,
) -> None:
    by_date12 = {pair.date12: pair for pair in pairs}
    with h5py.File(path, "a") as f:
        start = len(existing)
        for name in ("unwrapPhase", "coherence", "connectComponent"):
            f[name].resize(start + len(new), axis=0)  # also drops a torn earlier append
        for offset, pair in enumerate(new):
            _write_slice(f, start + offset, read(pair, grid))
        order = [*existing, *(p.date12 for p in new)]
        old_bperp = dict(zip(existing, f["bperp"][:].tolist(), strict=True))
        # A pair no longer among the finished ones stays in the stack, dropped.
        keep = [by_date12[d].keep if d in by_date12 else False for d in order]
        bperp = [by_date12[d].bperp if d in by_date12 else old_bperp[d] for d in order]
        dates = np.array([[d[:8].encode(), d[9:].encode()] for d in order], np.bytes_)
        # The date list last: a stack killed mid-append still reads as its old self.
        for name, values in (
            ("dropIfgram", np.array(keep, np.bool_)),
            ("bperp", np.array(bperp, np.float32)),
            ("date", dates),
        ):
            _replace(f, name, values)
        for key, value in attributes.items():
            f.attrs[key] = value
        f.attrs["NUMBER_OF_PAIRS"] = str(len(order))
        _touch(f)


def _replace(f: h5py.File, name: str, values: np.ndarray) -> None:
    unit = f[name].attrs.get("UNIT")
    del f[name]
    f.create_dataset(name, data=values, maxshape=values.shape, chunks=True)
    if unit is not None:
        f[name].attrs["UNIT"] = unit


def _write_slice(f: h5py.File, index: int, layers: dict[str, np.ndarray]) -> None:
    for name, data in layers.items():
        f[name][index] = data


def _touch(f: h5py.File) -> None:
    for name in ("unwrapPhase", "coherence", "connectComponent"):
        f[name].attrs["MODIFICATION_TIME"] = str(time.time())


def write_geometry(path: Path, run_dir: Path, grid: Grid, attributes: dict[str, str]) -> None:
    """geometryGeo.h5 from one pair's geocoded DEM crop and LOS (the track's grid)."""
    from mintpy.utils import utils as mintpy_utils
    from mintpy.utils import writefile

    height = read_on_grid(run_dir / DEM, 1, grid, "bilinear")
    incidence = read_on_grid(run_dir / LOS, 1, grid, "bilinear")
    azimuth = read_on_grid(run_dir / LOS, 2, grid, "bilinear")
    outside = (incidence == 0) & (azimuth == 0)  # ISCE's fill outside the swath
    incidence[outside] = np.nan
    azimuth[outside] = np.nan
    meta = {**attributes, **grid.attributes(), "FILE_TYPE": "geometry"}
    slant_range = mintpy_utils.incidence_angle2slant_range_distance(meta, incidence)
    land = (height != 0) & ~outside  # the DEM's sea is flat zero
    layout = {
        "height": [np.float32, height.shape, height],
        "incidenceAngle": [np.float32, height.shape, incidence],
        "azimuthAngle": [np.float32, height.shape, azimuth],
        "slantRangeDistance": [np.float32, height.shape, slant_range.astype(np.float32)],
        "waterMask": [np.bool_, height.shape, land],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as partial:
        writefile.layout_hdf5(
            str(partial), layout, metadata=meta, ds_unit_dict=GEOMETRY_UNITS, print_msg=False
        )
