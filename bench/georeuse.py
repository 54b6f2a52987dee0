#!/usr/bin/env python3
"""Benchmark of geometry reuse (issue #8): topo runs, work and makespan with and without it.

    PYTHONPATH=code $VENV/bin/python bench/georeuse.py [--dates 10] [--neighbours 3]
        [--workers 4] [--scale 60]

A small-baseline stack: --dates scenes 12 days apart, each paired with the next --neighbours
dates (10 and 3: 24 pairs, 9 distinct references). The whole `run` (coordinator, local executor,
runner, standard cleaning) against the topsApp double, which sleeps per step in the proportions
of the real ISCE2 run of ISCE2_CONTRACT.md section 8 (bench/scheduler.py's REAL_STEP_S) divided
by --scale, once with GEOMETRY_REUSE=true and once with false. Prints topo runs, total work
(sum of the topsApp children's lifetimes) and makespan (first child start -> last child end).
Targets: topo runs = distinct geometry keys; makespan >= 30 % lower with reuse.

No schedule can lower the makespan by more than the work it saves (packing is already near
ideal without reuse), so the bound printed last is the share of the work that reuse removes:
(pairs - references) / pairs x topo's share of a pair = 15/24 x 46 % = 28.7 % here.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "code"), str(REPO / "tests"), str(REPO / "bench")]

from scheduler import REAL_STEP_S  # noqa: E402  (bench/scheduler.py: the real step times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", type=int, default=10)
    parser.add_argument("--neighbours", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--scale", type=float, default=60.0, help="real seconds per bench second")
    parser.add_argument(
        "--double-scale",
        type=float,
        default=0.005,
        help="ISCE_DOUBLE_SCALE: burst size (small, so the double's own writes stay small next "
        "to the sleeps that carry the real proportions)",
    )
    args = parser.parse_args()
    sleep = {step: seconds / args.scale for step, seconds in REAL_STEP_S.items()}
    with tempfile.TemporaryDirectory(prefix="bench-georeuse-") as temp:
        figures = {
            reuse: run_stack(Path(temp) / str(reuse), args, sleep, reuse) for reuse in (True, False)
        }
    report(figures, args, sleep)
    return 0


def run_stack(root: Path, args: argparse.Namespace, sleep: dict[str, float], reuse: bool) -> dict:
    """One `run` of the stack on a fresh data folder; its figures from the ledger and step log."""
    from batch_factory import make_batch, prepare_inputs
    from insar_pipeline.inputs.config import Settings
    from insar_pipeline.ledger.store import Ledger
    from insar_pipeline.run.driver import run_pipeline
    from insar_pipeline.run.progress import Progress
    from isce_double.double_faults import read_step_log

    logging.getLogger().setLevel(logging.WARNING)
    batch = make_batch(root, args.dates - 1)
    pairs = [
        (a, b)
        for a in range(args.dates)
        for b in range(a + 1, min(args.dates, a + args.neighbours + 1))
    ]
    batch.pairs_file.write_text(
        "".join(f'("{batch.scenes[a]}.SAFE", "{batch.scenes[b]}.SAFE")\n' for a, b in pairs)
    )
    extra = prepare_inputs(batch)
    double = root / "isce_double"  # a private copy: the bench must not see edits while it runs
    shutil.copytree(
        REPO / "tests" / "isce_double", double, ignore=shutil.ignore_patterns("__pycache__")
    )
    extra["topsapp"] = f"{sys.executable} {double / 'topsApp.py'}"
    step_log = root / "steps.log"
    os.environ["ISCE_DOUBLE_LOG"] = str(step_log)
    os.environ["ISCE_DOUBLE_SCALE"] = str(args.double_scale)
    os.environ["ISCE_DOUBLE_SLEEP"] = ",".join(f"{step}={s:.4f}" for step, s in sleep.items())
    settings = Settings(
        data_dir=batch.data,
        pairs_file=batch.pairs_file,
        env_file=root / ".env",
        workers=args.workers,
        cores=args.workers,
        memory_total_gb=64.0,
        geometry_reuse=reuse,
        **extra,
    )
    started = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()) as printed:  # the end-of-run table
        summary = run_pipeline(settings, progress=Progress(tty=False), report=False)
    wall = time.monotonic() - started
    ledger = Ledger.open_reader(settings.runs_dir)
    try:
        phases = [p for row in ledger.pairs() for p in ledger.phase_rows(row.pair_id)]
        reused = sum(row.geometry_from is not None for row in ledger.pairs())
    finally:
        ledger.close()
    assert summary.exit_code == 0 and len(summary.done) == len(pairs), summary
    topo = Counter(
        row["pair"]
        for row in read_step_log(step_log)
        if row["step"] == "topo" and row["outcome"] == "ok"
    )
    return {
        "pairs": len(pairs),
        "references": len({a for a, _ in pairs}),
        "topo_runs": sum(topo.values()),
        "reused": reused,
        "work": sum(p["wall_s"] or 0.0 for p in phases),
        "makespan": max(p["ended"] for p in phases) - min(p["started"] for p in phases),
        "wall": wall,
        "saved_estimate": summary.topo_saved_s,
        "summary_line": next(
            (line for line in printed.getvalue().splitlines() if line.startswith("geometry:")), ""
        ),
    }


def report(figures: dict[bool, dict], args: argparse.Namespace, sleep: dict[str, float]) -> None:
    on, off = figures[True], figures[False]
    pair_s = sum(sleep.values())
    topo_share = sleep["topo"] / pair_s
    bound = (on["pairs"] - on["references"]) / on["pairs"] * topo_share
    print(
        f"== {on['pairs']} pairs ({args.dates} dates x next {args.neighbours}), "
        f"{on['references']} distinct references, WORKERS={args.workers}; double sleeping "
        f"{pair_s:.2f} s per pair (real run / {args.scale:g}), topo {topo_share:.0%} of it"
    )
    print(f"{'':34}{'reuse':>10}{'no reuse':>10}{'change':>9}")
    for label, key, unit in (
        ("topo runs", "topo_runs", ""),
        ("pairs that took a geometry", "reused", ""),
        ("total work (topsApp children)", "work", " s"),
        ("makespan (first start-last end)", "makespan", " s"),
        ("whole `run`", "wall", " s"),
    ):
        change = f"{on[key] / off[key] - 1:+.1%}" if off[key] else ""
        print(f"{label:34}{on[key]:>8.1f}{unit:2}{off[key]:>8.1f}{unit:2}{change:>7}")
    for name, run in (("reuse", on), ("no reuse", off)):
        ideal = run["work"] / args.workers
        print(
            f"packing ({name}): work / workers = {ideal:.1f} s, makespan {run['makespan']:.1f} s"
            f" (efficiency {ideal / run['makespan']:.2f})"
        )
    print(f"run summary with reuse: {on['summary_line']}")
    print(
        f"topo runs = distinct references: {on['topo_runs'] == on['references']}; makespan "
        f"{1 - on['makespan'] / off['makespan']:.1%} lower (target >= 30 %). Upper bound from "
        f"the work alone, with perfect packing: {bound:.1%} (= {on['pairs'] - on['references']}"
        f" of {on['pairs']} pairs skip topo, {topo_share:.0%} of a pair)"
    )


if __name__ == "__main__":
    sys.exit(main())
