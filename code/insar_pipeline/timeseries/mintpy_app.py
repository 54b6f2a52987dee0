"""smallbaselineApp.cfg for a track, and MintPy's smallbaselineApp run on it (a subprocess).

The stack is written by this package, so MintPy starts at `modify_network`; everything it does
from there runs offline: no tropospheric correction from weather models unless asked
(`MINTPY_TROPO`), no ionosphere or solid Earth tides, the reference point `auto` unless
REFERENCE_LALO is set. Pairs outside the network's largest piece are excluded by name
(`mintpy.network.excludeDate12`), so `modify_network` agrees with the stack's `dropIfgram`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from insar_pipeline._io import atomic_output
from insar_pipeline.errors import InputError

log = logging.getLogger(__name__)

CFG_NAME = "smallbaselineApp.cfg"
LOG_NAME = "smallbaselineApp.log"
# smallbaselineApp's steps run, in two ranges: quick_overview (between them) is left out, as
# MintPy 1.6.4's plot of it fails when no triplet has an unwrapping error (`bins` must be
# positive) and nothing after it reads its outputs.
STEP_RANGES = (("modify_network", "reference_point"), ("correct_unwrap_error", "velocity"))


@dataclass(frozen=True)
class MintpyRun:
    ok: bool
    returncode: int | None  # None: MintPy is not installed
    wall_s: float
    log_path: Path | None
    velocity: Path | None
    timeseries: Path | None


def config_text(
    excluded: Sequence[str],
    reference_lalo: str | None,
    workers: int = 1,
    troposphere: str = "no",
) -> str:
    """The cfg: every key this pipeline decides, the rest MintPy's own defaults (pure)."""
    options = {
        "mintpy.compute.cluster": "no",
        "mintpy.compute.numWorker": str(workers),
        "mintpy.load.processor": "isce",
        "mintpy.network.excludeDate12": ",".join(excluded) if excluded else "no",
        "mintpy.reference.lalo": reference_lalo or "auto",
        "mintpy.unwrapError.method": "no",
        "mintpy.ionosphericDelay.method": "no",
        "mintpy.troposphericDelay.method": troposphere,
        "mintpy.solidEarthTides": "no",
        "mintpy.deramp": "no",
        "mintpy.save.hdfEos5": "no",
        "mintpy.save.kmz": "no",
        "mintpy.plot": "no",
    }
    width = max(len(key) for key in options)
    lines = [
        "## Written by insar_pipeline timeseries: MintPy starts at modify_network (the",
        "## inputs/ folder is this pipeline's), offline.",
    ]
    lines += [f"{key:<{width}} = {value}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def parse_lalo(value: str | None) -> tuple[float, float] | None:
    """REFERENCE_LALO 'lat,lon' (InputError naming the key when it is not)."""
    if value is None:
        return None
    try:
        lat, lon = (float(part) for part in value.split(","))
    except ValueError:
        raise InputError(
            f"REFERENCE_LALO={value!r}: expected 'lat,lon' in degrees, e.g. 34.05,-118.25"
        ) from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise InputError(f"REFERENCE_LALO={value!r}: latitude or longitude out of range")
    return lat, lon


def write_config(work_dir: Path, text: str) -> Path:
    path = work_dir / CFG_NAME
    with atomic_output(path) as partial:
        partial.write_text(text)
    return path


def mintpy_installed() -> bool:
    return importlib.util.find_spec("mintpy") is not None


def run_smallbaseline(work_dir: Path, timeout_s: float | None = None) -> MintpyRun:
    """smallbaselineApp.py from modify_network to velocity; its output in smallbaselineApp.log."""
    if not mintpy_installed():
        log.warning("MintPy is not installed: the stack is written, the inversion is not run")
        return MintpyRun(False, None, 0.0, None, None, None)
    log_path = work_dir / LOG_NAME
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    started = time.monotonic()
    code = 0
    with log_path.open("w") as out:
        for first, last in STEP_RANGES:
            command = [sys.executable, "-m", "mintpy.cli.smallbaselineApp", CFG_NAME]
            command += ["--start", first, "--end", last]
            out.write(f"$ {' '.join(command[2:])}\n")
            out.flush()
            try:
                done = subprocess.run(
                    command, cwd=work_dir, stdout=out, stderr=subprocess.STDOUT, env=env,
                    timeout=timeout_s, check=False,
                )  # fmt: skip
                code = done.returncode
            except subprocess.TimeoutExpired:
                code = -1
            if code != 0:
                break
    wall = time.monotonic() - started
    velocity = work_dir / "velocity.h5"
    ok = code == 0 and velocity.exists()
    if not ok:
        log.error("MintPy failed (exit %s); see %s", code, log_path)
    return MintpyRun(
        ok,
        code,
        wall,
        log_path,
        velocity if ok else None,
        final_timeseries(work_dir) if ok else None,
    )


def final_timeseries(work_dir: Path) -> Path | None:
    """The last corrected time series MintPy wrote (the one its velocity was fitted to).

    Corrections append to the name (timeseries_ramp_demErr.h5); timeseriesResidual*.h5 are
    what the DEM-error step left over, not displacements.
    """
    found = sorted(
        (p for p in work_dir.glob("timeseries*.h5") if not p.name.startswith("timeseriesResidual")),
        key=lambda p: (len(p.name), p.stat().st_mtime),
    )
    return found[-1] if found else None
