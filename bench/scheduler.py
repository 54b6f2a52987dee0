#!/usr/bin/env python3
"""Benchmark of the parallel run (issue #5): makespan, efficiency, overhead; `plan` on 10,000 pairs.

    PYTHONPATH=code $VENV/bin/python bench/scheduler.py [--pairs 64] [--workers 4] [--scale 60]

1. 64 pairs, WORKERS=4, through the real coordinator, runner and the topsApp double, which
   sleeps per step in the proportions of the real ISCE2 run of ISCE2_CONTRACT.md section 8,
   divided by --scale (60: one real minute -> one second). Prints the makespan, the ideal
   makespan max(total work / workers, longest pair) and efficiency = ideal / actual, with "work"
   both as the nominal sleeps and as the measured lifetimes of the topsApp children.
2. The same with a zero-sleep double: coordinator overhead per pair = the worker-slot time not
   covered by a topsApp child, per pair (preparation, dispatch, events, ledger, cleaning).
3. `plan` (the CLI, as a user runs it) on 10,000 pairs, and the coordinator's own planning
   (checkpoints, ledger registration and reconciliation, dispatch order) for them.
Targets: efficiency >= 0.95; overhead < 50 ms per pair; plan of 10,000 pairs < 10 s.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "code"), str(REPO / "tests")]

# Wall seconds per topsApp step of the real run (ISCE2_CONTRACT.md section 8, 2 bursts, ESD off):
# preprocess phase 2 s, topo 168 s, fineoffsets 56 s + fineresamp 30 s (+1 s for the ESD no-ops),
# burstifg 18 s + mergebursts 6 s + filter 1 s, unwrap 14 s, geocode 70 s.
REAL_STEP_S = {
    "startup": 0.5,
    "preprocess": 1.0,
    "computeBaselines": 0.25,
    "verifyDEM": 0.25,
    "topo": 168.0,
    "subsetoverlaps": 0.15,
    "coarseoffsets": 0.15,
    "coarseresamp": 0.15,
    "overlapifg": 0.15,
    "prepesd": 0.15,
    "esd": 0.15,
    "rangecoreg": 0.1,
    "fineoffsets": 56.0,
    "fineresamp": 30.0,
    "ion": 0.0,
    "burstifg": 18.0,
    "mergebursts": 6.0,
    "filter": 1.0,
    "unwrap": 13.5,
    "unwrap2stage": 0.5,
    "geocode": 70.0,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--scale", type=float, default=60.0, help="real seconds per bench second")
    parser.add_argument("--plan-pairs", type=int, default=10_000)
    parser.add_argument("--skip", choices=("run", "overhead", "plan"), action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scheduler-") as temp:
        root = Path(temp)
        if "run" not in args.skip:
            makespan_bench(root / "run", args.pairs, args.workers, args.scale)
        if "overhead" not in args.skip:
            overhead_bench(root / "zero", args.pairs, args.workers)
        if "plan" not in args.skip:
            plan_bench(root / "plan", args.plan_pairs)
    return 0


def run_batch(root: Path, n_pairs: int, workers: int, sleep: dict[str, float]) -> dict:
    """One run of the coordinator on a fresh batch; its figures from the ledger and the clock."""
    import logging

    from batch_factory import make_batch, prepare_inputs
    from insar_pipeline.inputs.config import Settings
    from insar_pipeline.ledger.store import Ledger
    from insar_pipeline.report.html import write_report
    from insar_pipeline.run.driver import run_pipeline
    from insar_pipeline.run.progress import Progress

    logging.getLogger().setLevel(logging.WARNING)
    batch = make_batch(root, n_pairs)
    extra = prepare_inputs(batch)
    # A private copy of the double: the bench must not see edits made while it runs.
    double = root / "isce_double"
    shutil.copytree(
        REPO / "tests" / "isce_double", double, ignore=shutil.ignore_patterns("__pycache__")
    )
    extra["topsapp"] = f"{sys.executable} {double / 'topsApp.py'}"
    os.environ["ISCE_DOUBLE_SLEEP"] = ",".join(f"{step}={s:.4f}" for step, s in sleep.items())
    settings = Settings(
        data_dir=batch.data,
        pairs_file=batch.pairs_file,
        env_file=root / ".env",
        workers=workers,
        cores=workers,
        memory_total_gb=64.0,
        clean="none",
        **extra,
    )
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):  # the end-of-run table
        summary = run_pipeline(settings, progress=Progress(tty=False), report=False)
    wall = time.monotonic() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    report_started = time.monotonic()
    write_report(settings)
    report_s = time.monotonic() - report_started
    ledger = Ledger.open_reader(settings.runs_dir)
    try:
        rows = ledger.pairs()
        phases = [phase for row in rows for phase in ledger.phase_rows(row.pair_id)]
        run = ledger.latest_run()
    finally:
        ledger.close()
    assert summary.exit_code == 0 and len(summary.done) == n_pairs, summary
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    return {
        # From the first topsApp start to the last pair's end: the dispatch, nothing around it.
        "makespan": max(phase["ended"] for phase in phases) - min(p["started"] for p in phases),
        "wall": wall,
        "run_s": run["ended"] - run["started"],
        "report_s": report_s,
        "pair_walls": [row.wall_s for row in rows],
        "cpu_s": cpu,
        "gaps": slot_gaps(settings.runs_dir / "ledger.sqlite"),
    }


def slot_gaps(ledger: Path) -> dict[str, float]:
    """Mean time per pair during which its worker slot held no topsApp child, by cause (s):
    dispatch (a slot freed -> the next pair's first child starts: coordinator), between phases
    (one child's end -> the next one's start: runner checks, gate, fork/exec) and result (the
    last child's end -> the coordinator recorded the pair: verification, cleaning, queue).
    Unlike makespan x workers - work, this leaves out the idle slots of the last round."""
    conn = sqlite3.connect(ledger)
    try:
        phases = conn.execute(
            "SELECT pair_id, started, ended FROM phases ORDER BY pair_id, started"
        ).fetchall()
        ended = dict(conn.execute("SELECT pair_id, ended FROM pairs").fetchall())
    finally:
        conn.close()
    by_pair: dict[str, list[tuple[float, float]]] = {}
    for pair_id, start, end in phases:
        by_pair.setdefault(pair_id, []).append((start, end))
    between = [
        sum(b[0] - a[1] for a, b in zip(items, items[1:], strict=False))
        for items in by_pair.values()
    ]
    result = [ended[pair_id] - items[-1][1] for pair_id, items in by_pair.items()]
    freed = sorted(ended.values())
    dispatch = []
    for items in by_pair.values():
        earlier = [moment for moment in freed if moment <= items[0][0]]
        if earlier:  # pairs of the first round had no slot to wait for
            dispatch.append(items[0][0] - earlier[-1])
    mean = lambda values: sum(values) / max(1, len(values))  # noqa: E731
    return {"dispatch": mean(dispatch), "between": mean(between), "result": mean(result)}


def makespan_bench(root: Path, n_pairs: int, workers: int, scale: float) -> None:
    sleep = {step: seconds / scale for step, seconds in REAL_STEP_S.items()}
    nominal_pair = sum(sleep.values())
    figures = run_batch(root, n_pairs, workers, sleep)
    makespan = figures["makespan"]
    ideal_nominal = max(nominal_pair * n_pairs / workers, nominal_pair)
    measured = figures["pair_walls"]
    ideal_measured = max(sum(measured) / workers, max(measured))
    print(
        f"== {n_pairs} pairs, WORKERS={workers}, double sleeping {nominal_pair:.2f} s per pair "
        f"(real run / {scale:g})"
    )
    print(f"makespan                         {makespan:8.2f} s")
    print(
        f"ideal (nominal sleeps)           {ideal_nominal:8.2f} s   efficiency "
        f"{ideal_nominal / makespan:.3f}"
    )
    print(
        f"ideal (measured topsApp walls)   {ideal_measured:8.2f} s   efficiency "
        f"{ideal_measured / makespan:.3f}"
    )
    print(
        f"mean topsApp wall per pair       {sum(measured) / len(measured):8.2f} s "
        f"(nominal {nominal_pair:.2f} s: the rest is the double's own start-up and writes)"
    )
    print(
        f"whole `run` (lock to summary)    {figures['wall']:8.2f} s; report.html afterwards "
        f"{figures['report_s']:.2f} s"
    )


def overhead_bench(root: Path, n_pairs: int, workers: int) -> None:
    figures = run_batch(root, n_pairs, workers, {step: 0.0 for step in REAL_STEP_S})
    makespan, walls = figures["makespan"], figures["pair_walls"]
    idle_slot_s = makespan * workers - sum(walls)
    print(f"== zero-sleep double, {n_pairs} pairs, WORKERS={workers}")
    print(
        f"makespan                         {makespan:8.2f} s ({makespan / n_pairs * 1000:.0f} ms "
        "per pair)"
    )
    print(f"mean topsApp wall per pair       {sum(walls) / n_pairs * 1000:8.0f} ms (6 children)")
    gaps = figures["gaps"]
    per_pair = gaps["dispatch"] + gaps["between"] + gaps["result"]
    print(
        f"overhead per pair (slot without a topsApp child) {per_pair * 1000:6.1f} ms = dispatch "
        f"{gaps['dispatch'] * 1000:.1f} (coordinator) + between phases {gaps['between'] * 1000:.1f}"
        f" (runner) + result {gaps['result'] * 1000:.1f} (runner + coordinator)"
    )
    print(
        f"idle slot time incl. the last round (makespan x workers - work) "
        f"{idle_slot_s / n_pairs * 1000:6.1f} ms per pair"
    )
    print(
        f"coordinator process CPU per pair {figures['cpu_s'] / n_pairs * 1000:8.1f} ms "
        "(main thread + supervising threads, whole run without the report)"
    )
    print(
        f"whole `run` per pair             {figures['wall'] / n_pairs * 1000:8.1f} ms "
        f"(lock, validation, provisioning cache hits, prepare, dispatch, summary)"
    )


def plan_bench(root: Path, n_pairs: int) -> None:
    from batch_factory import FIRST_DATE, REPEAT
    from conftest import make_data_folder, make_safe_product

    data = make_data_folder(root)
    scenes = 2
    while scenes * (scenes - 1) // 2 < n_pairs:
        scenes += 1
    names = []
    for index in range(scenes):
        names.append(make_safe_product(data / "raw", start=FIRST_DATE + index * REPEAT).name)
    pairs_file = root / "pairs.txt"
    lines = [f'("{a}", "{b}")' for a, b in list(combinations(names, 2))[:n_pairs]]
    pairs_file.write_text("\n".join(lines) + "\n")
    env_file = root / ".env"
    env_file.write_text("")
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "code" / "main_parallel.py"),
            "plan",
            "--data",
            str(data),
            "--pairs",
            str(pairs_file),
            "--env",
            str(env_file),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    print(f"== plan on {n_pairs} pairs ({scenes} scenes)")
    print(
        f"`main_parallel.py plan` (CLI)     {elapsed:8.2f} s (exit {done.returncode}, "
        f"{len(done.stdout.splitlines())} lines printed)"
    )
    if done.returncode:
        print(done.stderr[-2000:])
    coordinator_planning(data, pairs_file, env_file)


def coordinator_planning(data: Path, pairs_file: Path, env_file: Path) -> None:
    """The run's own planning stage for the same pairs (no provisioning, no topsApp)."""
    from insar_pipeline.inputs.config import Settings
    from insar_pipeline.inputs.pairs import load_pairs
    from insar_pipeline.ledger.reconcile import reconcile
    from insar_pipeline.ledger.store import Ledger
    from insar_pipeline.run.dispatch import dispatch_order, plan_pair
    from insar_pipeline.topsapp.steps import phase_table, remaining_phases

    settings = Settings(data_dir=data, pairs_file=pairs_file, env_file=env_file)
    started = time.monotonic()
    pairs = load_pairs(settings)
    loaded = time.monotonic()
    phases = phase_table(False)
    plans = [
        plan_pair(p.id, i, phases, remaining_phases(settings.run_dir(p.id), phases))
        for i, p in enumerate(pairs)
    ]
    ledger = Ledger.open_writer(settings.runs_dir)
    ledger.register_pairs([(p.id, p.reference.name, p.secondary.name, p.line) for p in pairs], 6)
    reconcile(ledger, {plan.pair_id: plan.phases_done for plan in plans}, [p.name for p in phases])
    ledger.mark_pending([plan.pair_id for plan in plans])
    order = dispatch_order(plans)
    ledger.close()
    finished = time.monotonic()
    print(f"run's planning: read pairs       {loaded - started:8.2f} s")
    print(
        f"run's planning: checkpoints, ledger, order {finished - loaded:8.2f} s "
        f"({len(order)} pairs to dispatch)"
    )


if __name__ == "__main__":
    sys.exit(main())
