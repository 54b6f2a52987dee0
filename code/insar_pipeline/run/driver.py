"""`run`: validate → preflight → lock → provision → prepare → dispatch → summarise → (time
series when TIMESERIES=true) → report.

`run_pipeline` reads as its stages, each one named call: `validate` and `preflight`
(run/preflight.py, shared with `plan`) find every problem before anything is downloaded or
written; the `Coordinator` (run/coordinator.py) does the stages after the lock. A stage of
another concern plugs in as one more line here (e.g. search and download before `validate`; the
time series goes before `report`, which links its pages).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from insar_pipeline.download import Download
from insar_pipeline.errors import InputError
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.pairs import Pair
from insar_pipeline.ledger.lock import RunLock
from insar_pipeline.ledger.store import Ledger
from insar_pipeline.logs import attach_pipeline_log
from insar_pipeline.run.budget import MemoryBudget, Parallelism
from insar_pipeline.run.coordinator import (
    Coordinator,
    MakeExecutor,
    PrepareFn,
    Provision,
    ProvisionFn,
    RunSummary,
)
from insar_pipeline.run.local import Executor, LocalExecutor
from insar_pipeline.run.preflight import preflight, refuse_blockers, validate
from insar_pipeline.run.progress import Progress
from insar_pipeline.run.signals import StopRequest
from insar_pipeline.topsapp.job import PairJob

log = logging.getLogger(__name__)


def run_command(settings: Settings, args: argparse.Namespace) -> int:
    """The `run` command of the CLI."""
    from insar_pipeline.acquire.stage import prepare_inputs

    prepare_inputs(settings)  # AOI set and no pairs.txt: search, download, write pairs.txt
    return run_pipeline(settings).exit_code


def run_pipeline(
    settings: Settings,
    *,
    provision: ProvisionFn | None = None,
    prepare: PrepareFn | None = None,
    make_executor: MakeExecutor | None = None,
    progress: Progress | None = None,
    report: bool = True,
) -> RunSummary:
    """Process every pair of pairs.txt (or --only); the keyword hooks let tests swap a stage
    (`report=False` leaves report.html to a later `report`, as benchmarks do)."""
    checked = preflight(settings, validate(settings))  # exit 2 here: nothing downloaded
    if provision is None:  # the DEM provisioning below needs its key and geoid grids
        refuse_blockers(checked)
    for warning in checked.warnings:
        log.warning("%s", warning)
    with RunLock(settings.runs_dir), StopRequest() as stop, _pipeline_log(settings.runs_dir):
        ledger = Ledger.open_writer(settings.runs_dir)
        run = Coordinator(
            settings,
            checked,
            ledger,
            stop,
            provision_inputs=provision or provision_inputs,
            prepare_job=prepare or prepare_job,
            make_executor=make_executor or create_executor,
            progress=progress or Progress(),
            write_report=report,
        )
        try:
            with run.recorded():
                run.start()
                provided = run.provision()
                jobs = run.prepare(provided)
                run.dispatch(jobs)
                summary = run.summarise()
            run.timeseries()
            return run.report(summary)
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


def provision_inputs(
    settings: Settings, pairs: Sequence[Pair], on_download: Callable[[Download], None]
) -> Provision:
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


def prepare_job(
    settings: Settings, pair: Pair, orbit_files: Mapping[str, Path], dem: Path, omp_threads: int
) -> PairJob:
    """The pair's folder made ready and its job (pair/prepare.py)."""
    from insar_pipeline.pair.prepare import prepare_pair

    return prepare_pair(settings, pair, orbit_files, dem, omp_threads)
