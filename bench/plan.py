#!/usr/bin/env python3
"""Benchmark of input validation (issue #2): `plan` and `pairs` when products are many.

    PYTHONPATH=code $VENV/bin/python bench/plan.py [--pairs 10000] [--tracks 25] [--neighbours 4]

bench/scheduler.py times `plan` on 10,000 pairs of ~140 scenes. This one times the case where
reading products dominates: a batch over --tracks tracks, each a stack of dated scenes paired with
its next --neighbours dates (a small-baseline network), enough scenes for --pairs pairs, half of
them as .zip. The products are real manifests rewritten per scene (tests/conftest.py) with 0-byte
annotation and measurement files, which is all that reading a product's metadata opens.
Prints: product reads per second (.SAFE and .zip), load_pairs, build+render, the `plan` CLI as a
user runs it, and the `pairs` command on the same folder. Target: `plan` of 10,000 pairs < 10 s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "code"), str(REPO / "tests")]

FIRST_DATE = datetime(2020, 1, 3, 2, 20, 8, tzinfo=timezone.utc)
REPEAT = timedelta(days=12)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--tracks", type=int, default=25)
    parser.add_argument("--neighbours", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        root = Path(tmp)
        started = time.monotonic()
        data, pairs_file, scenes = build(root, args.pairs, args.tracks, args.neighbours)
        print(f"== {args.pairs} pairs of {scenes} scenes on {args.tracks} tracks "
              f"(built in {time.monotonic() - started:.1f} s)")  # fmt: skip
        in_process(data, pairs_file)
        cli(root, data, pairs_file, ["plan"])
        cli(root, data, root / "network.txt", ["pairs", "--neighbours", str(args.neighbours)])
    return 0


def build(root: Path, n_pairs: int, tracks: int, neighbours: int) -> tuple[Path, Path, int]:
    from conftest import make_data_folder, make_safe_product

    data = make_data_folder(root)
    per_track = -(-n_pairs // tracks) // neighbours + neighbours + 1
    lines: list[str] = []
    count = 0
    for track in range(tracks):
        names = []
        for index in range(per_track):
            start = FIRST_DATE + index * REPEAT + timedelta(minutes=track)
            path = make_safe_product(
                data / "raw", start=start, relative_orbit=track + 1, as_zip=count % 2 == 1,
                empty_annotations=True,
            )  # fmt: skip
            names.append(path.name)
            count += 1
        for index, reference in enumerate(names):
            for secondary in names[index + 1 : index + 1 + neighbours]:
                lines.append(f'("{reference}", "{secondary}")')
    pairs_file = root / "pairs.txt"
    pairs_file.write_text("\n".join(lines[:n_pairs]) + "\n")
    return data, pairs_file, count


def in_process(data: Path, pairs_file: Path) -> None:
    from insar_pipeline.inputs.config import Settings
    from insar_pipeline.inputs.pairs import load_pairs
    from insar_pipeline.inputs.safe import read_product, scan_raw
    from insar_pipeline.run.plan import build_plan, render_plan

    paths = list(scan_raw(data / "raw").values())
    for kind in (".SAFE", ".zip"):
        chosen = [path for path in paths if path.suffix == kind][:500]
        started = time.perf_counter()
        for path in chosen:
            read_product(path)
        elapsed = time.perf_counter() - started
        print(f"read_product {kind:<5}  {len(chosen) / elapsed:8.0f} products/s"
              f"  ({elapsed / len(chosen) * 1000:.2f} ms each)")  # fmt: skip
    settings = Settings(data_dir=data, pairs_file=pairs_file, env_file=data / "none.env")
    started = time.perf_counter()
    pairs = load_pairs(settings)
    loaded = time.perf_counter()
    text = render_plan(build_plan(settings, pairs))
    rendered = time.perf_counter()
    print(f"load_pairs            {loaded - started:8.2f} s  ({len(pairs)} pairs)")
    print(f"build + render plan   {rendered - loaded:8.2f} s  ({len(text.splitlines())} lines)")


def cli(root: Path, data: Path, pairs_file: Path, command: list[str]) -> None:
    env_file = root / ".env"
    env_file.write_text("")
    argv = [sys.executable, str(REPO / "code" / "main_parallel.py"), *command, "--data", str(data),
            "--pairs", str(pairs_file), "--env", str(env_file)]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    print(f"`main_parallel.py {command[0]}` (CLI) {elapsed:8.2f} s  (exit {done.returncode})")
    if done.returncode:
        print(done.stderr[-2000:])


if __name__ == "__main__":
    sys.exit(main())
