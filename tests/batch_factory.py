"""A batch of pairs for scheduler tests: a data folder, products, pairs.txt (and a fake runner).

`make_batch` builds N consecutive 12-day pairs of products made from the real SLC metadata.
`FakeRunner` stands in for `runner.run_pair` where a test is about the coordinator only: it
walks the job's remaining phases through the gate, writes real PICKLE checkpoints (so resume
logic is the real one) and reports events like the runner does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from conftest import make_data_folder, make_safe_product
from insar_pipeline.topsapp.steps import checkpoint_paths, remaining_phases

FIRST_DATE = datetime(2025, 4, 6, 2, 20, 8, tzinfo=timezone.utc)
REPEAT = timedelta(days=12)
# Inside the real scenes' footprint (British Columbia coast), small enough for a quick test DEM.
FOOTPRINT = ((51.50, -126.95), (51.50, -126.65), (51.70, -126.65), (51.70, -126.95))
ROI = "51.45,51.75,-127.0,-126.6"
DEM_TYPE = "SRTMGL3_E"  # ellipsoid heights already, 3": no geoid grid needed, a 0.1 MB DEM
DEAD_URL = "http://127.0.0.1:9"  # discard port: any request would fail at once (none expected)
DOUBLE = Path(__file__).resolve().parent / "isce_double" / "topsApp.py"


@dataclass(frozen=True)
class Batch:
    root: Path
    data: Path
    pairs_file: Path
    pair_ids: tuple[str, ...]
    scenes: tuple[str, ...]  # product names, date order


def make_batch(root: Path, n_pairs: int) -> Batch:
    """n_pairs consecutive pairs (scene i with scene i+1) of n_pairs + 1 scenes, 12 days apart.

    The footprints are shrunk to a small box (FOOTPRINT) so that a test DEM stays small.
    """
    data = make_data_folder(root)
    scenes = []
    for index in range(n_pairs + 1):
        safe = make_safe_product(
            data / "raw", start=FIRST_DATE + index * REPEAT, footprint=FOOTPRINT
        )
        scenes.append(safe.name.removesuffix(".SAFE"))
    pairs_file = root / "pairs.txt"
    pairs_file.write_text(
        "".join(f'("{a}.SAFE", "{b}.SAFE")\n' for a, b in zip(scenes, scenes[1:], strict=False))
    )
    ids = tuple(
        f"{(FIRST_DATE + i * REPEAT):%Y%m%d}_{(FIRST_DATE + (i + 1) * REPEAT):%Y%m%d}"
        for i in range(n_pairs)
    )
    return Batch(root, data, pairs_file, ids, tuple(scenes))


def write_checkpoints(run_dir: Path, steps: Any) -> None:
    for step in steps:
        for path in checkpoint_paths(run_dir, step):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(step)


@dataclass
class FakeRunner:
    """`run_pair` double: `faults` maps pair id -> "fatal" | "crash" (raises)."""

    phase_s: float = 0.01
    faults: Mapping[str, str] = field(default_factory=dict)
    starts: list[tuple[str, str]] = field(default_factory=list)  # (pair, phase) in start order
    concurrent: list[int] = field(default_factory=list)  # pairs running at each phase start
    _running: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(
        self,
        job: Any,
        on_event: Callable = lambda e: None,
        gate: Any = None,
        stop: threading.Event | None = None,
    ) -> Any:
        from insar_pipeline.topsapp.job import PairResult, PhaseEvent

        with self._lock:
            self._running.add(job.pair_id)
        try:
            done = []
            for phase in remaining_phases(job.run_dir, job.phases):
                if self.faults.get(job.pair_id) == "crash":
                    raise RuntimeError("bug in the runner")
                if gate is not None:
                    gate.acquire(job.pair_id, phase)
                try:
                    with self._lock:
                        self.starts.append((job.pair_id, phase.name))
                        self.concurrent.append(len(self._running))
                    on_event(PhaseEvent(job.pair_id, phase.name, 1, "start", time.time()))
                    if stop is not None and stop.wait(self.phase_s):
                        return _result(PairResult, job.pair_id, "interrupted", done)
                    if self.faults.get(job.pair_id) == "fatal" and phase.name == "geometry":
                        on_event(
                            PhaseEvent(
                                job.pair_id,
                                phase.name,
                                1,
                                "end",
                                time.time(),
                                1,
                                ok=False,
                                transient=False,
                                error="bad config",
                            )
                        )
                        return _result(
                            PairResult,
                            job.pair_id,
                            "failed",
                            done,
                            error="geometry: bad config",
                            failed_phase="geometry",
                        )
                    write_checkpoints(job.run_dir, phase.steps())
                    on_event(
                        PhaseEvent(
                            job.pair_id,
                            phase.name,
                            1,
                            "end",
                            time.time(),
                            0,
                            ok=True,
                            wall_s=self.phase_s,
                        )
                    )
                    done.append(phase.name)
                finally:
                    if gate is not None:
                        gate.release(job.pair_id, phase)
            return _result(PairResult, job.pair_id, "done", done)
        finally:
            with self._lock:
                self._running.discard(job.pair_id)


def pair_result(pair_id: str, status: str, **fields: Any) -> Any:
    """A `PairResult` with empty defaults for the fields a test does not care about."""
    from insar_pipeline.topsapp.job import PairResult

    values: dict[str, Any] = dict(
        phases_done=(),
        attempts={},
        error=None,
        error_tail=None,
        failed_phase=None,
        bytes_before_clean=None,
        bytes_after_clean=None,
        phase_wall_s={},
    )
    values.update(fields)
    return PairResult(pair_id, status, **values)


def _result(cls: Any, pair_id: str, status: str, done: list[str], **fields: Any) -> Any:
    return pair_result(pair_id, status, phases_done=tuple(done), **fields)


def fake_prepare(
    settings: Any, pair: Any, orbit_files: Mapping[str, Path], dem: Path, omp_threads: int
) -> Any:
    """`prepare_pair` stand-in: the job only (no topsApp.xml)."""
    from insar_pipeline.topsapp.job import PairJob
    from insar_pipeline.topsapp.steps import phase_table

    run_dir = settings.run_dir(pair.id).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    return PairJob(
        pair.id,
        run_dir,
        pair.swaths,
        phase_table(settings.ionosphere),
        settings.topsapp,
        settings.max_retries,
        settings.phase_timeout_s,
        omp_threads,
        settings.clean,
    )


def prepare_inputs(batch: Batch) -> dict[str, Any]:
    """Orbits and a DEM already in the data folder, so provisioning is a cache hit with no
    request; returns the settings that go with them (ROI, DEM type, dead service URLs, the
    topsApp double)."""
    import sys

    from insar_pipeline.dem.convert import write_ellipsoid_dem
    from insar_pipeline.dem.grid import grid_around, isce_stem
    from insar_pipeline.geo import BBox
    from opentopo_server import synthetic_source
    from orbit_factories import make_eof, poeorb_name

    for name in batch.scenes:
        orbit = poeorb_name(name[:3], name.split("_")[5][:8])
        (batch.data / "orbit_data" / orbit).write_bytes(make_eof(orbit, step_s=600))
    roi = BBox.parse(ROI)
    grid = grid_around(roi, 3)
    source = synthetic_source(batch.root / "dem_source.tif", *roi.buffered(0.01).snwe(), 3)
    write_ellipsoid_dem(
        [source], grid, None, batch.data / "dem" / f"{isce_stem(grid)}_{DEM_TYPE}.dem.wgs84"
    )
    source.unlink()
    return {
        "roi": ROI,
        "dem_type": DEM_TYPE,
        "topsapp": f"{sys.executable} {DOUBLE}",
        "asf_orbit_url": DEAD_URL,
        "aws_orbit_url": DEAD_URL,
        "cdse_url": DEAD_URL,
        "opentopo_url": DEAD_URL,
    }


def env_text(settings: Mapping[str, Any]) -> str:
    """A .env file for these settings (field names as keys, upper case)."""
    return "".join(f'{key.upper()}="{value}"\n' for key, value in settings.items())
