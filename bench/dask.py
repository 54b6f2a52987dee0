#!/usr/bin/env python3
"""Benchmark of EXECUTOR=dask (issue #7): the scheduler benchmark, LocalCluster vs local executor.

    PYTHONPATH=code $VENV/bin/python bench/dask.py [--pairs 64] [--workers 4] [--scale 60]

1. 64 pairs, WORKERS=4, through the real coordinator, runner and topsApp double sleeping per step
   in the proportions of the real ISCE2 run (bench/scheduler.py's REAL_STEP_S / --scale), once
   with the local executor and once with a LocalCluster of 4 single-threaded worker processes.
   Efficiency = ideal / processing, where processing runs from the executor's creation (the
   cluster start included) to the last pair's result, and ideal = max(total work / workers,
   longest pair) with work = the measured lifetimes of the topsApp children (the nominal sleeps,
   in brackets, leave out the double's own start-up and writes). The whole run's time (with
   provisioning and preparation, the same for both executors; no report) is printed too.
2. The same with a zero-sleep double: overhead per pair = worker-slot time between the executor
   being ready and the last result that no topsApp child covers, per pair, for both executors,
   and their ratio (the cluster's start-up is printed apart: a fixed cost per run).
Target: Dask efficiency >= 0.9.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# This file is named dask.py: with bench/ first on sys.path, `import dask` would import it.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path[:0] = [str(REPO / "code"), str(REPO / "tests")]


def _scheduler_bench():
    """bench/scheduler.py as a module: the same step proportions and batch set-up."""
    path = REPO / "bench" / "scheduler.py"
    spec = importlib.util.spec_from_file_location("bench_scheduler", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Timed:
    """The run's executor, timed: from its creation (a Dask cluster starts there) to the last
    pair result, the window the executor is responsible for."""

    def __init__(self, settings, parallelism, gate) -> None:
        from insar_pipeline.run.driver import create_executor

        self.created = time.monotonic()
        self.inner = create_executor(settings, parallelism, gate)
        self.ready = time.monotonic()
        self.last_result = self.ready

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def poll(self, timeout: float) -> list:
        messages = self.inner.poll(timeout)
        if any(not hasattr(message, "kind") for message in messages):  # a PairResult
            self.last_result = time.monotonic()
        return messages


def run_batch(root: Path, executor: str, n_pairs: int, workers: int, sleep: dict) -> dict:
    """One coordinator run on a fresh batch: its makespans and the pairs' topsApp walls."""
    import os

    from batch_factory import make_batch, prepare_inputs
    from insar_pipeline.inputs.config import Settings
    from insar_pipeline.ledger.store import Ledger
    from insar_pipeline.run.driver import run_pipeline
    from insar_pipeline.run.progress import Progress

    logging.getLogger().setLevel(logging.WARNING)
    batch = make_batch(root, n_pairs)
    extra = prepare_inputs(batch)
    # Before the cluster starts: LocalCluster workers inherit the environment, as topsApp does.
    os.environ["ISCE_DOUBLE_SLEEP"] = ",".join(f"{step}={s:.4f}" for step, s in sleep.items())
    settings = Settings(
        data_dir=batch.data, pairs_file=batch.pairs_file, env_file=root / ".env",
        workers=workers, cores=workers, memory_total_gb=64.0, clean="none",
        executor=executor, dask_scheduler="local", **extra,
    )  # fmt: skip
    timed: list[_Timed] = []
    started = time.monotonic()
    summary = run_pipeline(
        settings, progress=Progress(tty=False), report=False,  # the report: same for both
        make_executor=lambda *args: timed.append(_Timed(*args)) or timed[-1],
    )  # fmt: skip
    makespan = time.monotonic() - started
    ledger = Ledger.open_reader(settings.runs_dir)
    try:
        walls = [row.wall_s for row in ledger.pairs()]
    finally:
        ledger.close()
    if summary.exit_code != 0 or len(summary.done) != n_pairs:
        raise SystemExit(f"{executor}: the run did not finish every pair: {summary}")
    window = timed[0]
    return {
        "makespan": makespan, "walls": walls,
        "processing": window.last_result - window.created,
        "start_up": window.ready - window.created,
    }  # fmt: skip


def makespan_figures(root: Path, n_pairs: int, workers: int, scale: float, steps: dict) -> dict:
    sleep = {step: seconds / scale for step, seconds in steps.items()}
    nominal_pair = sum(sleep.values())
    ideal_nominal = max(nominal_pair * n_pairs / workers, nominal_pair)
    print(f"== {n_pairs} pairs, WORKERS={workers}, double sleeping {nominal_pair:.2f} s per pair "
          f"(real run / {scale:g}); ideal with nominal sleeps {ideal_nominal:.2f} s")  # fmt: skip
    efficiency = {}
    for executor in ("local", "dask"):
        run = run_batch(root / executor, executor, n_pairs, workers, sleep)
        walls = run["walls"]
        ideal = max(sum(walls) / workers, max(walls))  # work = the topsApp children's lifetimes
        efficiency[executor] = ideal / run["processing"]
        print(f"{executor:5}  processing {run['processing']:7.2f} s (executor start-up "
              f"{run['start_up']:.2f} s)   ideal {ideal:7.2f} s   efficiency "
              f"{efficiency[executor]:.3f}   [nominal: {ideal_nominal / run['processing']:.3f}]   "
              f"whole run {run['makespan']:7.2f} s")  # fmt: skip
    return efficiency


def overhead_figures(root: Path, n_pairs: int, workers: int, steps: dict) -> dict:
    print(f"== zero-sleep double, {n_pairs} pairs, WORKERS={workers}")
    overhead = {}
    for executor in ("local", "dask"):
        run = run_batch(root / executor, executor, n_pairs, workers, dict.fromkeys(steps, 0.0))
        # The cluster's start-up is a fixed cost, printed apart: the slot time counts from then.
        idle = (run["processing"] - run["start_up"]) * workers - sum(run["walls"])
        overhead[executor] = idle / n_pairs
        print(
            f"{executor:5}  processing {run['processing']:7.2f} s (start-up "
            f"{run['start_up']:.2f} s)   overhead per pair {overhead[executor] * 1000:7.1f} ms"
        )
    print(f"overhead ratio dask / local      {overhead['dask'] / overhead['local']:8.2f}")
    return overhead


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--scale", type=float, default=60.0, help="real seconds per bench second")
    parser.add_argument("--skip", choices=("run", "overhead"), action="append", default=[])
    args = parser.parse_args()
    steps = _scheduler_bench().REAL_STEP_S
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as temp:
        root = Path(temp)
        if "run" not in args.skip:
            efficiency = makespan_figures(root / "run", args.pairs, args.workers, args.scale, steps)
            verdict = "meets" if efficiency["dask"] >= 0.9 else "MISSES"
            print(f"Dask efficiency {efficiency['dask']:.3f} {verdict} the 0.9 target "
                  f"(local {efficiency['local']:.3f})")  # fmt: skip
        if "overhead" not in args.skip:
            overhead_figures(root / "zero", args.pairs, args.workers, steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
