"""`status [--json]`: per-pair state from the ledger, safe while a run is writing it (WAL reads).

`status --json` prints one JSON object, stable across versions as long as `schema` is 1:

    {
      "schema": 1,
      "ledger": "data/runs/ledger.sqlite",       # path read (null when no run ever started)
      "active": true,                            # a `run` holds the data folder's lock now
      "pid": 4242,                               # its pid, or null
      "run": {                                   # the latest run, or null
        "id": 3, "status": "running",  # running | finished | interrupted | failed | crashed
        "started": "2025-01-01T10:00:00Z", "ended": null, "exit_code": null,
        "workers": 4, "omp_threads": 2, "budget_gb": 22.0
      },
      "totals": {"pairs": 12, "done": 7, "failed": 1, "running": 3, "pending": 1},
      "pairs": [                                 # pairs.txt order
        {"pair": "20250406_20250418", "state": "running",   # pending | running | done | failed
         "phase": "geometry",                    # current phase (running) or failed phase, or null
         "attempts": 1,                          # attempts of that phase so far (0 when none)
         "wall_s": 183.2,                        # topsApp time spent on the pair, all runs
         "phases_done": ["preprocess"], "phases_total": 6,
         "error": null,                          # one line, when failed
         "cleaned_bytes": null,                  # [before, after] cleaning, when cleaned
         "geometry_from": null}                  # the pair whose geometry (topo) it took
      ]
    }

Times are UTC ISO 8601. New keys may be added; existing keys keep their meaning.
A pair the ledger says is running while no run holds the lock (its run was killed) is shown
as pending: a rerun resumes it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TypedDict

from insar_pipeline.inputs.config import Settings
from insar_pipeline.ledger.lock import lock_holder
from insar_pipeline.ledger.store import Ledger, PairRow, Record, SqlValue, ledger_path
from insar_pipeline.pair.job import PairStatus
from insar_pipeline.report.text import format_duration, text_table

log = logging.getLogger(__name__)

JSON_SCHEMA = 1
STATES = (PairStatus.DONE, PairStatus.FAILED, PairStatus.RUNNING, PairStatus.PENDING)


class RunEntry(TypedDict):
    id: int | None
    status: str
    started: str | None
    ended: str | None
    exit_code: int | None
    workers: int | None
    omp_threads: int | None
    budget_gb: float | None


class PairEntry(TypedDict):
    pair: str
    state: PairStatus
    phase: str | None
    attempts: int
    wall_s: float
    phases_done: list[str]
    phases_total: int | None
    error: str | None
    cleaned_bytes: list[int] | None
    geometry_from: str | None


class StatusDocument(TypedDict):
    schema: int
    ledger: str | None
    active: bool
    pid: int | None
    run: RunEntry | None
    totals: dict[str, int]
    pairs: list[PairEntry]


def collect_status(runs_dir: Path, now: float | None = None) -> StatusDocument:
    """The status document (see the module docstring) of the data folder's runs."""
    now = time.time() if now is None else now
    holder = lock_holder(runs_dir)
    active = holder is not None
    document: StatusDocument = {
        "schema": JSON_SCHEMA,
        "ledger": None,
        "active": active,
        "pid": holder if holder and holder > 0 else None,
        "run": None,
        "totals": {"pairs": 0, **{state: 0 for state in STATES}},
        "pairs": [],
    }
    ledger = Ledger.open_reader(runs_dir)
    if ledger is None:
        return document
    try:
        document["ledger"] = str(ledger_path(runs_dir))
        run = ledger.latest_run()
        rows = ledger.pairs()
    finally:
        ledger.close()
    if run is not None:
        document["run"] = _run_entry(run, active)
    document["pairs"] = [_pair_entry(row, active, now) for row in rows]
    totals = document["totals"]
    totals["pairs"] = len(rows)
    for entry in document["pairs"]:
        totals[entry["state"]] += 1
    return document


def _run_entry(run: Record, active: bool) -> RunEntry:
    status = str(run["status"])
    if status == "running" and not active:
        status = "crashed"
    return {
        "id": _int(run["id"]),
        "status": status,
        "started": _iso(_float(run["started"])),
        "ended": _iso(_float(run["ended"])),
        "exit_code": _int(run["exit_code"]),
        "workers": _int(run["workers"]),
        "omp_threads": _int(run["omp_threads"]),
        "budget_gb": _float(run["budget_gb"]),
    }


def _int(value: SqlValue) -> int | None:
    return None if value is None else int(str(value))


def _float(value: SqlValue) -> float | None:
    return None if value is None else float(str(value))


def _pair_entry(row: PairRow, active: bool, now: float) -> PairEntry:
    state = row.status if row.status in STATES else PairStatus.PENDING
    wall = row.wall_s or 0.0
    if state == PairStatus.RUNNING and not active:
        state = PairStatus.PENDING
    elif state == PairStatus.RUNNING and row.running_since is not None:
        wall += max(0.0, now - row.running_since)
    cleaned = None
    if row.bytes_before_clean is not None and row.bytes_after_clean is not None:
        cleaned = [row.bytes_before_clean, row.bytes_after_clean]
    return {
        "pair": row.pair_id,
        "state": state,
        "phase": row.phase if state in (PairStatus.RUNNING, PairStatus.FAILED) else None,
        "attempts": row.attempts or 0,
        "wall_s": round(wall, 1),
        "phases_done": list(row.phases_done),
        "phases_total": row.phases_total,
        "error": row.error if state == PairStatus.FAILED else None,
        "cleaned_bytes": cleaned,
        "geometry_from": row.geometry_from,
    }


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_status(document: StatusDocument) -> str:
    """The human table: pair, state, phase, attempts, wall time, error; then totals."""
    if document["ledger"] is None:
        return "no run yet: `run` starts one"
    rows = [
        (
            entry["pair"],
            entry["state"],
            entry["phase"] or "-",
            str(entry["attempts"] or "-"),
            format_duration(entry["wall_s"]) if entry["wall_s"] else "-",
            entry["error"] or _progress(entry),
        )
        for entry in document["pairs"]
    ]
    totals = document["totals"]
    lines = [text_table(("pair", "state", "phase", "attempts", "wall", "error"), rows, 70), ""]
    lines.append(
        ", ".join(f"{totals[state]} {state}" for state in STATES) + f" of {totals['pairs']} pairs"
    )
    run = document["run"]
    if document["active"]:
        lines.append(
            f"a run is in progress (pid {document['pid'] or '?'}, started {run and run['started']})"
        )
    elif run and run["status"] == "crashed":
        lines.append(f"run {run['id']} stopped without finishing; `run` again resumes it")
    elif run:
        lines.append(
            f"last run {run['id']}: {run['status']} at {run['ended']} (exit {run['exit_code']})"
        )
    return "\n".join(lines)


def _progress(entry: PairEntry) -> str:
    reused = f"geometry from {entry['geometry_from']}" if entry["geometry_from"] else ""
    if entry["state"] in (PairStatus.DONE, PairStatus.FAILED) or not entry["phases_total"]:
        return reused
    done = f"({len(entry['phases_done'])}/{entry['phases_total']} phases done)"
    return f"{done}, {reused}" if reused else done


def status_command(settings: Settings, args: argparse.Namespace) -> int:
    document = collect_status(settings.runs_dir)
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        sys.stdout.write(render_status(document) + "\n")
    return 0
