"""Benchmark of the time-series export (issue 15): time and peak memory, and MintPy beside it.

A track of --pairs pairs of --size x --size geocoded pixels (each date paired with its next
--neighbours dates) is written as topsApp's double writes it with a deformation truth. The
export (`timeseries` without MintPy) runs in a fresh process for a quarter of the pairs and for
all of them: it streams pair by pair, so its peak memory must be the same for both. Then
MintPy's smallbaselineApp (modify_network ... velocity) runs on the full stack.

    tests/run.sh is not needed: python3 bench/timeseries.py [--pairs 200] [--size 1000]
    (with the test venv's python, which has MintPy and h5py)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "code"), str(REPO / "tests")]

from insar_pipeline.inputs.config import Settings  # noqa: E402
from insar_pipeline.ledger.store import Ledger  # noqa: E402


def build(root: Path, n_pairs: int, size: int, neighbours: int):  # noqa: ANN201
    from timeseries_factory import add_pairs, make_track, neighbour_pairs

    n_dates = 2
    while len(neighbour_pairs(n_dates, neighbours)) < n_pairs:
        n_dates += 1
    pairs = neighbour_pairs(n_dates, neighbours)[:n_pairs]
    step = 0.2 / size
    track = make_track(root, n_dates=n_dates)
    add_pairs(track, pairs, grid=(-128.5, 52.2, step, -step), shape=(size, size))
    return track, pairs


def subset(track, pairs: list, count: int, root: Path) -> Settings:  # noqa: ANN001
    """A data folder with the first `count` pairs: links to the full one's products and pairs."""
    data = root / "data"
    (data / "runs").mkdir(parents=True)
    (data / "raw").symlink_to(track.settings.raw_dir.resolve())
    rows = []
    for line, (a, b) in enumerate(pairs[:count], 1):
        pair_id = track.pair_id(a, b)
        (data / "runs" / pair_id).symlink_to(track.settings.run_dir(pair_id).resolve())
        rows.append((pair_id, track.names[a], track.names[b], line))
    ledger = Ledger.open_writer(data / "runs")
    ledger.register_pairs(rows, phases_total=7)
    for pair_id, *_ in rows:
        ledger.set_pair(pair_id, status="done")
    ledger.close()
    return Settings(data_dir=data)


def child(data_dir: str) -> None:
    from insar_pipeline.timeseries.command import run_timeseries

    started = time.perf_counter()
    (result,) = run_timeseries(Settings(data_dir=Path(data_dir)), run_mintpy=False)
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stack = result.work_dir / "inputs" / "ifgramStack.h5"
    print(json.dumps({"wall_s": wall, "peak_mb": peak_mb, "stack_mb": stack.stat().st_size / 1e6}))


def export(settings: Settings) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(settings.data_dir)],
        capture_output=True, text=True, check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def _export_line(count: int, figures: dict) -> str:
    wall, peak, size = figures["wall_s"], figures["peak_mb"], figures["stack_mb"]
    return (
        f"export {count:4d} pairs: {wall:7.1f} s ({wall / count * 1000:6.1f} ms/pair),"
        f" peak RSS {peak:7.1f} MB, stack {size:8.1f} MB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--neighbours", type=int, default=4)
    parser.add_argument("--no-mintpy", action="store_true")
    parser.add_argument("--child", metavar="DATA_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-timeseries-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        track, pairs = build(root / "full", args.pairs, args.size, args.neighbours)
        print(f"{len(pairs)} pairs of {args.size} x {args.size} px, {len(track.days)} dates:"
              f" written in {time.perf_counter() - started:.1f} s")  # fmt: skip
        rows = []
        for count in sorted({max(2, len(pairs) // 4), len(pairs)}):
            figures = export(subset(track, pairs, count, root / f"n{count}"))
            rows.append((count, figures))
            print(_export_line(count, figures))
        if not args.no_mintpy:
            from insar_pipeline.timeseries.mintpy_app import run_smallbaseline

            work = root / f"n{len(pairs)}" / "data" / "timeseries" / "track_108"
            mintpy = run_smallbaseline(work)
            state = "ok" if mintpy.ok else f"FAILED (exit {mintpy.returncode}, {mintpy.log_path})"
            print(f"MintPy smallbaselineApp modify_network..velocity on {len(pairs)} pairs:"
                  f" {mintpy.wall_s:.1f} s, {state}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
