"""EXECUTOR=dask end to end: a real LocalCluster running the real runner against the topsApp double.

Same results as the local executor (faults included), a worker killed with SIGKILL mid-pair
(the pair completes, no finished step reruns, its topsApp dies with the worker), and Ctrl-C.
Orbits and the DEM are already in the data folder (batch_factory.prepare_inputs), so provisioning
is a cache hit; the double's step log (ISCE_DOUBLE_LOG) counts every step it ran.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import distributed  # noqa: F401  (its config defaults load before a test overrides them)
import pytest

from batch_factory import make_batch, prepare_inputs
from dask_workers import external_worker, scheduler_only
from insar_pipeline.inputs.config import Settings
from insar_pipeline.ledger.store import Ledger
from insar_pipeline.pair.prepare import prepare_pair
from insar_pipeline.run.dask.events import LOST_WORKER
from insar_pipeline.run.dask.executor import DaskExecutor
from insar_pipeline.run.driver import run_pipeline
from insar_pipeline.topsapp.steps import checkpoint_paths
from isce_double.double_faults import read_step_log

pytestmark = pytest.mark.slow

STEPS_PER_PAIR = 21  # startup ... geocode


def settings_for(batch, executor: str, **fields: Any) -> Settings:
    values = dict(
        data_dir=batch.data, pairs_file=batch.pairs_file, env_file=batch.root / ".env",
        workers=3, cores=2, memory_total_gb=64.0, memory_reserve_gb=2.0, max_retries=2,
        executor=executor, dask_scheduler="local", **prepare_inputs(batch),
    )  # fmt: skip
    values.update(fields)
    return Settings(**values)


def preparer(step_log: Path, per_pair: dict[str, dict[str, str]] | None = None):
    """`prepare_pair` plus the double's environment (its step log, faults for some pairs), short
    retry backoffs and grace periods, as job fields: the same jobs whichever executor runs them."""

    def prepare(settings, pair, orbit_files, dem, omp_threads):
        job = prepare_pair(settings, pair, orbit_files, dem, omp_threads)
        env = {"ISCE_DOUBLE_LOG": str(step_log), "ISCE_DOUBLE_SCALE": "0.005",
               **(per_pair or {}).get(pair.id, {})}  # fmt: skip
        return replace(job, env=tuple(env.items()), retry_backoff_s=0.05, term_grace_s=2.0)

    return prepare


def steps_ok(step_log: Path) -> Counter:
    return Counter((row["pair"], row["step"]) for row in read_step_log(step_log)
                   if row["outcome"] == "ok")  # fmt: skip


def ledger_view(runs: Path) -> dict[str, Any]:
    ledger = Ledger.open_reader(runs)
    try:
        view = {}
        for row in ledger.pairs():
            phases = [(r["phase"], r["attempt"], r["ok"], r["transient"], r["returncode"])
                      for r in ledger.phase_rows(row.pair_id)]  # fmt: skip
            view[row.pair_id] = (row.status, row.phases_done, row.failed_phase, row.error, phases)
        return view
    finally:
        ledger.close()


def products(run_dir: Path) -> set[str]:
    return {str(path.relative_to(run_dir)) for path in run_dir.rglob("*") if path.is_file()}


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


class Watching:
    """A DaskExecutor seen through `poll`: `react(message)` may act on each message (kill, stop)."""

    def __init__(self, inner: DaskExecutor, react) -> None:
        self.inner, self.react = inner, react

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def poll(self, timeout: float) -> list[Any]:
        messages = self.inner.poll(timeout)
        for message in messages:
            self.react(message)
        return messages


def test_a_local_cluster_run_gives_the_same_results_as_the_local_executor(tmp_path):
    outcomes = {}
    for executor in ("local", "dask"):
        batch = make_batch(tmp_path / executor, 6)
        ids = batch.pair_ids
        faults = {
            ids[1]: {"ISCE_DOUBLE_FAIL_STEP": "topo", "ISCE_DOUBLE_FAIL_KIND": "io"},  # then ok
            ids[4]: {"ISCE_DOUBLE_FAIL_STEP": "fineoffsets", "ISCE_DOUBLE_FAIL_KIND": "config"},
        }
        step_log = batch.root / "steps.log"
        summary = run_pipeline(settings_for(batch, executor), prepare=preparer(step_log, faults))
        runs = batch.data / "runs"
        outcomes[executor] = {
            "exit": summary.exit_code, "done": sorted(summary.done), "failed": summary.failed,
            "ledger": ledger_view(runs), "steps": steps_ok(step_log),
            "products": {pair: products(runs / pair) for pair in ids},
            "report": (runs / "report.html").is_file(),
        }  # fmt: skip
    local, dask = outcomes["local"], outcomes["dask"]
    assert local["exit"] == 1 and local["done"] == sorted(set(ids) - {ids[4]})
    assert "coregistration" in local["failed"][ids[4]]
    assert local["ledger"][ids[1]][4][:2] == [
        ("preprocess", 1, 1, None, 0), ("geometry", 1, 0, 1, 1),
    ]  # fmt: skip  # the transient failure, retried
    for key in ("exit", "done", "failed", "ledger", "steps", "products", "report"):
        assert dask[key] == local[key], key


def test_a_worker_killed_mid_pair_does_not_lose_the_pair(tmp_path):
    batch = make_batch(tmp_path, 2)
    target = batch.pair_ids[0]
    run_dir = batch.data / "runs" / target
    # The target sleeps in fineoffsets, after subsetoverlaps ... rangecoreg of its phase finished.
    slow = {target: {"ISCE_DOUBLE_SLEEP": "fineoffsets=3"}}
    step_log = batch.root / "steps.log"
    killed: dict[str, int] = {}

    def kill_the_worker(message) -> None:
        started = getattr(message, "kind", None) == "start" and message.pid
        if killed or not started or (message.pair_id, message.phase) != (target, "coregistration"):
            return
        # The double logs a step after writing its checkpoint: wait for both, or the kill could
        # land between them and the step would look unfinished in the step log.
        assert wait_until(lambda: checkpoint_paths(run_dir, "rangecoreg")[1].is_file())
        assert wait_until(lambda: steps_ok(step_log)[(target, "rangecoreg")] == 1)
        killed["topsapp"], killed["worker"] = message.pid, parent_of(message.pid)
        os.kill(killed["worker"], signal.SIGKILL)
        # PR_SET_PDEATHSIG: the worker's topsApp dies with it, rather than run on unsupervised.
        killed["topsapp_died"] = wait_until(lambda: not alive(message.pid), timeout=5)

    settings = settings_for(batch, "dask", workers=2)
    summary = run_pipeline(
        settings, prepare=preparer(step_log, slow),
        make_executor=lambda s, parallelism, gate: Watching(
            DaskExecutor(s, parallelism), kill_the_worker
        ),
    )  # fmt: skip
    assert killed["worker"] != os.getpid() and killed["topsapp_died"]
    assert summary.exit_code == 0 and sorted(summary.done) == sorted(batch.pair_ids)
    ran = steps_ok(step_log)
    assert set(ran.values()) == {1} and len(ran) == 2 * STEPS_PER_PAIR  # no step ran twice
    rows = ledger_view(batch.data / "runs")[target][4]
    coregistration = [row for row in rows if row[0] == "coregistration"]
    assert coregistration == [("coregistration", 1, 0, 1, None), ("coregistration", 2, 1, None, 0)]
    ledger = Ledger.open_reader(batch.data / "runs")
    try:
        lost = next(r for r in ledger.phase_rows(target) if r["phase"] == "coregistration")
    finally:
        ledger.close()
    assert lost["error"] == LOST_WORKER
    # The rerun resumed inside the phase, after its last finished step.
    assert "--start=fineoffsets" in (run_dir / "logs" / "coregistration.2.log").read_text()


def test_ctrl_c_stops_the_cluster_pairs_and_a_rerun_resumes(tmp_path):
    batch = make_batch(tmp_path, 2)
    slow = {pair: {"ISCE_DOUBLE_SLEEP": "topo=60"} for pair in batch.pair_ids}
    step_log = batch.root / "steps.log"
    children: dict[str, int] = {}

    def interrupt(message) -> None:
        if getattr(message, "kind", None) == "start" and message.phase == "geometry":
            children[message.pair_id] = message.pid
            if len(children) == 2:
                os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C, to the coordinator

    summary = run_pipeline(
        settings_for(batch, "dask", workers=2), prepare=preparer(step_log, slow),
        make_executor=lambda s, parallelism, gate: Watching(
            DaskExecutor(s, parallelism), interrupt
        ),
    )  # fmt: skip
    assert summary.exit_code == 130 and sorted(summary.pending) == sorted(batch.pair_ids)
    # Both topsApp children were terminated in their 60 s topo: gone, and topo never finished.
    assert len(children) == 2 and not any(alive(pid) for pid in children.values())
    assert {step for _, step in steps_ok(step_log)} == {
        "startup",
        "preprocess",
        "computeBaselines",
        "verifyDEM",
    }
    view = ledger_view(batch.data / "runs")
    assert {status for status, *_ in view.values()} == {"pending"}
    # The state is clean for any executor: the local one resumes and redoes nothing finished.
    summary = run_pipeline(settings_for(batch, "local", workers=2), prepare=preparer(step_log))
    assert summary.exit_code == 0
    ran = steps_ok(step_log)
    assert set(ran.values()) == {1} and len(ran) == 2 * STEPS_PER_PAIR


def test_a_pair_whose_worker_always_dies_fails_alone(tmp_path):
    import dask

    batch = make_batch(tmp_path, 2)
    target, other = batch.pair_ids
    slow = {target: {"ISCE_DOUBLE_SLEEP": "startup=5"}}
    step_log = batch.root / "steps.log"
    killed: list[int] = []

    def kill_every_time(message) -> None:
        if getattr(message, "kind", None) == "start" and message.pair_id == target and message.pid:
            killed.append(parent_of(message.pid))
            os.kill(killed[-1], signal.SIGKILL)  # as the OOM killer would, on every try

    # Dask gives up on a task after its worker died allowed-failures + 1 times (default 3 + 1).
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        summary = run_pipeline(
            settings_for(batch, "dask", workers=2), prepare=preparer(step_log, slow),
            make_executor=lambda s, parallelism, gate: Watching(
                DaskExecutor(s, parallelism), kill_every_time
            ),
        )  # fmt: skip
    assert len(killed) == 2
    assert summary.exit_code == 1 and summary.done == (other,)
    assert "every Dask worker that ran this pair died" in summary.failed[target]
    assert "2 times" in summary.failed[target]
    rows = ledger_view(batch.data / "runs")[target][4]
    assert rows == [("preprocess", 1, 0, 1, None), ("preprocess", 2, 0, 1, None)]


def test_an_existing_cluster_by_address(tmp_path):
    batch = make_batch(tmp_path, 2)
    step_log = batch.root / "steps.log"
    seen: list[Any] = []
    shape: dict[str, int] = {}

    def make(settings, parallelism, gate):
        executor = DaskExecutor(settings, parallelism)
        shape.update(slots=executor.slots, omp=executor.omp_threads)
        return Watching(executor, seen.append)

    # What a user starts: `dask scheduler`, then `dask worker ADDRESS --resources MEMORY_GB=7`.
    worker_args = ("--nthreads", "2", "--resources", "MEMORY_GB=7")
    with scheduler_only() as address, external_worker(address, tmp_path, worker_args):
        settings = settings_for(batch, "dask", dask_scheduler=address)
        summary = run_pipeline(settings, prepare=preparer(step_log), make_executor=make)
    assert summary.exit_code == 0 and sorted(summary.done) == sorted(batch.pair_ids)
    # 7 GB hold two pairs (unwrap, the heaviest phase, weighs 3 GB); 2 cores for 2 pairs.
    assert shape == {"slots": 2, "omp": 1}
    header = (batch.data / "runs" / batch.pair_ids[0] / "logs" / "preprocess.1.log").read_text()
    assert "(OMP_NUM_THREADS=1)" in header.splitlines()[0]
    # pids on another host mean nothing to the coordinator: none reaches it.
    starts = [m for m in seen if getattr(m, "kind", None) == "start"]
    assert len(starts) == 12 and all(m.pid is None for m in starts)
