#!/usr/bin/env python3
"""Benchmark of the coordinator at scale (issue #17): plan, the run's planning, status, report.

    PYTHONPATH=code $VENV/bin/python bench/scale.py [--sizes 1000,10000,100000] [--skip STAGE]

The pairs are made as `bench/scheduler.py` makes them, over several tracks: each track has many
dates of one frame (its footprint jittered a little per date, as real slices are) and every
pair of its dates is listed (`--tracks 5`: 105 products for 1,000 pairs, 1,005 for 100,000).
Each stage runs in a child process of its own, so that its peak memory is its own:

- `plan`: the CLI command as a user runs it (its output to /dev/null).
- `run`: the coordinator of a whole `run` (`run_pipeline`) with provisioning and preparation
  swapped for cache-hit stand-ins (the DEM grouping of provisioning is the real one), and a
  runner that finishes each pair at once without topsApp; 1 % of the pairs fail. "planning" is
  the time from the start to the first pair handed to the executor; "peak" the process's RSS.
- `status` and `status --json`: the CLI commands on that ledger.
- `report`: `report` on that ledger (quicklook PNGs already in the pair folders, as the workers
  leave them; a page of the report holds only its own pairs).

Targets at 100,000 pairs: plan < 10 s, status < 1 s, report < 10 s, coordinator peak < 1 GB.
Wall and CPU time (user + system) of each stage are printed: on a loaded machine the CPU time
is the steadier figure.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from itertools import combinations
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "code"), str(REPO / "tests")]

DOUBLE = REPO / "tests" / "isce_double" / "topsApp.py"
STAGES = ("plan", "run", "status", "status-json", "report")
TRACK_STEP_DEG = 3.0  # tracks side by side, apart: one DEM region each
JITTER_DEG = 0.02
FAIL_EVERY = 100
# A 1x1 PNG: the quicklook files the workers would have left (the report only links them).
PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--tracks", type=int, default=5)
    parser.add_argument(
        "--skip", action="append", default=[], help=f"one of {STAGES} or SIZE:STAGE"
    )
    parser.add_argument("--child", nargs=2, metavar=("STAGE", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    sizes = [int(size) for size in args.sizes.split(",")]
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix=f"bench-scale-{size}-") as temp:
            root = Path(temp)
            started = time.monotonic()
            scenes = make_inputs(root, size, args.tracks)
            print(f"== {size} pairs, {scenes} scenes on {args.tracks} tracks "
                  f"(inputs made in {time.monotonic() - started:.1f} s)", flush=True)  # fmt: skip
            for stage in STAGES:
                if stage in args.skip or f"{size}:{stage}" in args.skip:
                    print(f"  {stage:<12} skipped")
                    continue
                figures = run_child(stage, root)
                rows.append((size, stage, figures))
                print_row(size, stage, figures)
    for figure in ("wall", "cpu"):
        print(f"\n== {figure} time per pair (ms)")
        print(f"  {'stage':<12}" + "".join(f"{size:>12,}" for size in sizes))
        for stage in STAGES:
            cells = []
            for size in sizes:
                found = [f for s, st, f in rows if s == size and st == stage]
                value = found[0].get(figure) if found else None
                cells.append(f"{value / size * 1000:12.3f}" if value else f"{'-':>12}")
            print(f"  {stage:<12}" + "".join(cells))
    return 0


def print_row(size: int, stage: str, figures: dict[str, Any]) -> None:
    extra = ""
    if "planning" in figures:
        stages = " + ".join(f"{value:.2f}" for value in figures["stages"])
        extra = (
            f"  (planning {figures['planning']:.2f} s = {stages} s: ledger + checkpoints, DEM"
            f" grouping, mkdir per pair, georeuse + queue; {figures['dispatched']} pairs run)"
        )
    if "bytes" in figures:
        extra += f"  ({figures['bytes'] / 1e6:.1f} MB written)"
    print(
        f"  {stage:<12} {figures['wall']:8.2f} s  {figures['wall'] / size * 1000:8.3f} ms/pair"
        f"  cpu {figures.get('cpu', 0):7.2f} s"
        f" (process {figures['process_wall']:6.2f} s)  peak {figures['peak_mb']:6.0f} MB"
        f"  exit {figures['exit']}{extra}",
        flush=True,
    )


def make_inputs(root: Path, n_pairs: int, tracks: int) -> int:
    """data/raw with `tracks` tracks of many dates each, and every pair of a track's dates."""
    from batch_factory import FIRST_DATE, REPEAT
    from conftest import make_data_folder, make_safe_product

    data = make_data_folder(root)
    per_track = -(-n_pairs // tracks)
    dates = 2
    while dates * (dates - 1) // 2 < per_track:
        dates += 1
    lines, scenes = [], 0
    for track in range(tracks):
        names = []
        for index in range(dates):
            jitter = JITTER_DEG * ((index * 7919) % 11 - 5) / 5
            west = -126.0 + track * TRACK_STEP_DEG + jitter
            south = 51.0 + jitter
            footprint = ((south, west), (south, west + 2.4), (south + 1.6, west + 2.4),
                         (south + 1.6, west))  # fmt: skip
            start = FIRST_DATE + index * REPEAT + timedelta(minutes=track * 7)
            safe = make_safe_product(data / "raw", start=start, relative_orbit=10 + track,
                                     footprint=footprint, empty_annotations=True)  # fmt: skip
            names.append(safe.name)
            scenes += 1
        pairs = list(combinations(names, 2))[:per_track]
        lines += [f'("{a}", "{b}")' for a, b in pairs]
    (root / "pairs.txt").write_text("\n".join(lines[:n_pairs]) + "\n")
    # `plan` and `run` check that topsApp exists: the double stands in (it never runs here).
    (root / ".env").write_text(f'TOPSAPP="{sys.executable} {DOUBLE}"\n')
    return scenes


def run_child(stage: str, root: Path) -> dict[str, Any]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, __file__, "--child", stage, str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    try:
        figures = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        print(done.stdout[-2000:], done.stderr[-4000:])
        figures = {"exit": done.returncode, "peak_mb": 0.0}
    figures["process_wall"] = wall
    figures.setdefault("wall", wall)
    return figures


def child(stage: str, root_text: str) -> dict[str, Any]:
    """One stage in this process: its wall time, exit code and peak RSS."""
    import logging

    root = Path(root_text)
    argv = ["--data", str(root / "data"), "--pairs", str(root / "pairs.txt"),
            "--env", str(root / ".env")]  # fmt: skip
    figures: dict[str, Any] = {}
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    if stage == "run":
        logging.basicConfig(level=logging.WARNING)
        figures.update(run_stage(root))
        code = figures.pop("exit")
    else:
        from insar_pipeline.cli import main as cli_main

        command = {"plan": ["plan"], "status": ["status"], "status-json": ["status", "--json"],
                   "report": ["report"]}[stage]  # fmt: skip
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli_main([*command, *argv])
        figures["bytes"] = len(out.getvalue().encode())
        if stage == "report":
            figures["bytes"] = sum(
                path.stat().st_size
                for path in (root / "data" / "runs").rglob("*.html")
                if path.is_file()
            )
    figures["wall"] = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    figures["cpu"] = sum(getattr(after, f) - getattr(before, f) for f in ("ru_utime", "ru_stime"))
    figures["exit"] = code
    figures["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


def run_stage(root: Path) -> dict[str, Any]:
    """`run_pipeline` with cache-hit provisioning, folder-only preparation, an instant runner."""
    from batch_factory import fake_prepare, pair_result
    from insar_pipeline.dem.provision import dem_boxes
    from insar_pipeline.inputs.config import Settings
    from insar_pipeline.run.coordinator import Provision
    from insar_pipeline.run.driver import run_pipeline
    from insar_pipeline.run.local import LocalExecutor
    from insar_pipeline.run.progress import Progress

    settings = Settings(
        data_dir=root / "data",
        pairs_file=root / "pairs.txt",
        env_file=root / ".env",
        workers=2,
        cores=2,
        memory_total_gb=64.0,
        clean="none",
        topsapp=f"{sys.executable} {DOUBLE}",  # preflight checks it exists
    )
    first_submit: list[float] = []
    count = [0]
    marks: dict[str, float] = {}

    def prepare(settings: Any, pair: Any, *args: Any) -> Any:
        marks.setdefault("prepare", time.monotonic())
        job = fake_prepare(settings, pair, *args)
        marks["prepared"] = time.monotonic()
        return job

    def provision(settings: Any, pairs: Any, on_download: Any) -> Provision:
        marks["provision"] = time.monotonic()
        orbit = settings.orbit_dir / "bench.EOF"
        scenes = {product.name for pair in pairs for product in pair.products}
        dems = {}
        # The real grouping, unless BENCH_NO_GROUPING=1 (one DEM: for a quadratic baseline).
        grouped = [(settings.roi, [p.id for p in pairs])] if os.environ.get(
            "BENCH_NO_GROUPING") else dem_boxes(settings, pairs)  # fmt: skip
        for box, pair_ids in grouped:
            path = settings.dem_dir / f"{box.south:g}_{box.west:g}.dem.wgs84" if box else orbit
            dems.update({pair_id: path for pair_id in pair_ids})
        return Provision({name: orbit for name in scenes}, {}, dems)

    def instant(job: Any, on_event: Any = None, gate: Any = None, stop: Any = None) -> Any:
        if not first_submit:
            first_submit.append(time.monotonic())
        count[0] += 1
        names = tuple(phase.name for phase in job.phases)
        quicklooks = job.run_dir / "quicklooks"
        quicklooks.mkdir(exist_ok=True)
        if count[0] % FAIL_EVERY == 0:
            return pair_result(job.pair_id, "failed", phases_done=names[:2], error=(
                f"{names[2]}: topsApp exited with 1 (1 attempt)"), failed_phase=names[2],
                error_tail="Traceback (most recent call last):\nRuntimeError: bench")  # fmt: skip
        for kind in ("wrapped", "unwrapped", "coherence"):
            (quicklooks / f"{kind}.png").write_bytes(PNG_1PX)
        return pair_result(job.pair_id, "done", phases_done=names)

    started = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):
        summary = run_pipeline(
            settings,
            provision=provision,
            prepare=prepare,
            make_executor=lambda s, p, g: LocalExecutor(p.workers, g, run=instant),
            progress=Progress(stream=io.StringIO(), tty=False),
            report=False,
        )
    first = first_submit[0] if first_submit else time.monotonic()
    return {
        "planning": first - started,
        # Up to provisioning (checkpoints, ledger), provisioning (the DEM grouping), preparing
        # (here one mkdir per pair), and from there to the first pair handed out (georeuse
        # survey of the folders, ledger, dispatch order).
        "stages": (
            marks["provision"] - started,
            marks["prepare"] - marks["provision"],
            marks["prepared"] - marks["prepare"],
            first - marks["prepared"],
        ),
        "dispatched": count[0],
        "exit": summary.exit_code,
    }


if __name__ == "__main__":
    sys.exit(main())
