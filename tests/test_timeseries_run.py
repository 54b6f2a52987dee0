"""TIMESERIES=true through the whole `run`: the topsApp double with a deformation truth, then
the stack, MintPy and the report page, with no hook swapped."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

from batch_factory import make_batch, prepare_inputs
from insar_pipeline.inputs.config import Settings
from insar_pipeline.run.driver import run_pipeline

pytest.importorskip("mintpy")

BOWL = (51.6, -126.8)  # inside batch_factory's ROI


def test_run_with_timeseries_writes_the_stack_and_mintpys_velocity(tmp_path, monkeypatch):
    dates = 5
    batch = make_batch(tmp_path, dates - 1)
    pairs = [(a, b) for a in range(dates) for b in range(a + 1, min(dates, a + 3))]
    batch.pairs_file.write_text(
        "".join(f'("{batch.scenes[a]}.SAFE", "{batch.scenes[b]}.SAFE")\n' for a, b in pairs)
    )
    batch = dataclasses.replace(batch, pair_ids=())
    monkeypatch.setenv("ISCE_DOUBLE_SCALE", "0.01")
    monkeypatch.setenv(
        "ISCE_DOUBLE_DEFORMATION", f"lat={BOWL[0]},lon={BOWL[1]},radius=0.04,rate=-60"
    )
    settings = Settings(
        data_dir=batch.data,
        pairs_file=batch.pairs_file,
        env_file=batch.root / ".env",
        # One pair at a time: under heavy load, two workers once drew a quicklook while numpy
        # warned of an invalid cast over NaN pixels (an error under filterwarnings). draw_png now
        # ignores that warning; with two workers this passed 7 of 7 runs on an idle machine, as
        # it did without the change, so the fix is unproven: kept at one worker here.
        workers=1,
        cores=2,
        memory_total_gb=64.0,
        timeseries=True,
        **prepare_inputs(batch),
    )
    summary = run_pipeline(settings)
    assert summary.exit_code == 0 and len(summary.done) == len(pairs)
    work = batch.data / "timeseries" / "track_108"
    with h5py.File(work / "inputs" / "ifgramStack.h5", "r") as f:
        assert len(f["date"]) == len(pairs)
        assert np.all(f["bperp"][:] != 0)  # from every pair's topsProc.xml
    with h5py.File(work / "velocity.h5", "r") as f:
        velocity = f["velocity"][:]
        attrs = dict(f.attrs)
    row, col = np.unravel_index(np.nanargmin(velocity), velocity.shape)
    lat = float(attrs["Y_FIRST"]) + (row + 0.5) * float(attrs["Y_STEP"])
    lon = float(attrs["X_FIRST"]) + (col + 0.5) * float(attrs["X_STEP"])
    assert abs(lat - BOWL[0]) < 0.03 and abs(lon - BOWL[1]) < 0.03
    report = (batch.data / "runs" / "report.html").read_text()
    assert "../timeseries/track_108/timeseries.html" in report
    page = (work / "timeseries.html").read_text()
    assert "velocity.png" in page and (work / "velocity.png").stat().st_size > 0
