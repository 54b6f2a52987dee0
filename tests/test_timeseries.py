"""The `timeseries` stage: network, grid, MintPy's inputs, MintPy's velocity against a truth."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from insar_pipeline.timeseries.command import run_timeseries
from timeseries_factory import SHAPE, add_pairs, make_track, neighbour_pairs, truth_velocity

pytest.importorskip("mintpy")


def stack_of(result) -> Path:
    return result.work_dir / "inputs" / "ifgramStack.h5"


def test_velocity_from_the_exported_stack_matches_the_truth(tmp_path: Path) -> None:
    track = make_track(tmp_path, n_dates=10)
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
    centre = np.unravel_index(np.nanargmin(np.where(coherent, velocity, np.nan)), velocity.shape)
    expected = np.unravel_index(np.argmin(truth), truth.shape)
    assert abs(centre[0] - expected[0]) <= 3 and abs(centre[1] - expected[1]) <= 3
    assert (result.work_dir / "velocity.png").exists()
    assert (result.work_dir / "timeseries.html").exists()
