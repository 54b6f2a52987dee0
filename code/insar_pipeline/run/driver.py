"""`run`: validate, lock, provision once, prepare, dispatch every pair in parallel, report.

`run_pipeline` reads as its stages; `coordinator.Coordinator` does the work after the lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from insar_pipeline.errors import InputError
from insar_pipeline.inputs.config import Settings
from insar_pipeline.ledger.lock import RunLock
from insar_pipeline.ledger.store import Ledger
from insar_pipeline.logs import attach_pipeline_log
from insar_pipeline.run.budget import (
    Machine,
    MemoryBudget,
    Parallelism,
    detect_cores,
    detect_memory_gb,
    plan_parallelism,
)
from insar_pipeline.run.coordinator import Coordinator, Provision, RunSummary
from insar_pipeline.run.dask.cluster import validate_settings
from insar_pipeline.run.local import Executor, LocalExecutor
from insar_pipeline.run.progress import Progress
from insar_pipeline.run.signals import StopRequest

log = logging.getLogger(__name__)


def run_command(settings: Settings, args: Any) -> int:
    """The `run` command of the CLI."""
    from insar_pipeline.acquire.stage import prepare_inputs

    prepare_inputs(settings)  # AOI set and no pairs.txt: search, download, write pairs.txt
    return run_pipeline(settings).exit_code


def run_pipeline(
    settings: Settings,
    *,
    provision: Callable[..., Provision] | None = None,
    prepare: Callable[..., Any] | None = None,
    make_executor: Callable[[Settings, Parallelism, MemoryBudget], Executor] | None = None,
    progress: Progress | None = None,
    report: bool = True,
) -> RunSummary:
    """Process every pair of pairs.txt (or --only); the keyword hooks let tests swap a stage
    (`report=False` leaves report.html to a later `report`, as benchmarks do)."""
    from insar_pipeline.inputs.pairs import load_pairs
    from insar_pipeline.topsapp.steps import phase_table, validate_phase_table

    pairs = load_pairs(settings)
    phases = phase_table(settings.ionosphere)
    validate_phase_table(phases)
    machine = Machine(
        cores=settings.cores or detect_cores(),
        memory_gb=settings.memory_total_gb or detect_memory_gb(),
    )
    plan_parallelism(
        machine, settings.workers, settings.memory_per_worker_gb, settings.memory_reserve_gb
    )  # bad figures: exit 2 before the lock
    validate_settings(settings)  # bad DASK_* keys too, before any orbit or DEM is fetched
    with RunLock(settings.runs_dir), StopRequest() as stop, _pipeline_log(settings.runs_dir):
        ledger = Ledger.open_writer(settings.runs_dir)
        run = Coordinator(settings, pairs, phases, machine, ledger, stop, progress or Progress())
        run.write_report = report
        try:
            return run.execute(
                provision or provision_inputs,
                prepare or _default_prepare,
                make_executor or create_executor,
            )
        finally:
            run.progress.close()
            ledger.close()


@contextmanager
def _pipeline_log(runs_dir: Path) -> Iterator[None]:
    """pipeline.log for the duration of the run (detached after, for callers that run twice)."""
    root = logging.getLogger()
    before = set(root.handlers)
    attach_pipeline_log(runs_dir)
    try:
        yield
    finally:
        for handler in set(root.handlers) - before:
            root.removeHandler(handler)
            handler.close()


def provision_inputs(settings: Settings, pairs: Sequence[Any], on_download: Callable) -> Provision:
    """Orbits for every scene and the DEMs, once for the whole run (SPEC.md section 5)."""
    from insar_pipeline.dem.provision import provision_dems
    from insar_pipeline.orbits.provision import provision_orbits

    products = list({product.name: product for pair in pairs for product in pair.products}.values())
    orbits = provision_orbits(settings, products, on_download)
    dems = provision_dems(settings, pairs, on_download)
    return Provision(dict(orbits.files), dict(orbits.failures), dict(dems))


def create_executor(settings: Settings, parallelism: Parallelism, gate: MemoryBudget) -> Executor:
    """EXECUTOR=local runs pairs here, gated by the memory budget; EXECUTOR=dask on a Dask
    cluster, whose workers bound memory with their own MEMORY_GB resource (dask_executor)."""
    if settings.executor == "local":
        return LocalExecutor(parallelism.workers, gate)
    if settings.executor == "dask":
        from insar_pipeline.run.dask.executor import DaskExecutor

        return DaskExecutor(settings, parallelism)
    raise InputError(f"EXECUTOR={settings.executor} is not known (local or dask)")


def _default_prepare(
    settings: Settings, pair: Any, orbit_files: Mapping[str, Path], dem: Path, omp_threads: int
) -> Any:
    from insar_pipeline.pair.prepare import prepare_pair

    return prepare_pair(settings, pair, orbit_files, dem, omp_threads)
