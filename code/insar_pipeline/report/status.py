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
         "geometry_from": null,                  # the pair whose geometry (topo) it took
         "without_esd": false,                   # ESD=auto dropped ESD for this pair
         "note": null}                           # e.g. "coregistered without ESD: ..."
      ]
    }

Times are UTC ISO 8601. New keys may be added; existing keys keep their meaning.
A pair the ledger says is running while no run holds the lock (its run was killed) is shown
as pending: a rerun resumes it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from insar_pipeline.inputs.config import Settings
from insar_pipeline.ledger.lock import lock_holder
from insar_pipeline.ledger.store import Ledger, PairRow, ledger_path
from insar_pipeline.pair.decisions import WITHOUT_ESD_NOTE
from insar_pipeline.run.dispatch import format_duration, text_table

log = logging.getLogger(__name__)

JSON_SCHEMA = 1
STATES = ("done", "failed", "running", "pending")


def collect_status(runs_dir: Path, now: float | None = None) -> dict[str, Any]:
    """The status document (see the module docstring) of the data folder's runs."""
    now = time.time() if now is None else now
    holder = lock_holder(runs_dir)
    active = holder is not None
    document: dict[str, Any] = {
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


def _run_entry(run: dict[str, Any], active: bool) -> dict[str, Any]:
    status = run["status"]
    if status == "running" and not active:
        status = "crashed"
    return {
        "id": run["id"],
        "status": status,
        "started": _iso(run["started"]),
        "ended": _iso(run["ended"]),
        "exit_code": run["exit_code"],
        "workers": run["workers"],
        "omp_threads": run["omp_threads"],
        "budget_gb": run["budget_gb"],
    }


def _pair_entry(row: PairRow, active: bool, now: float) -> dict[str, Any]:
    state = row.status if row.status in STATES else "pending"
    wall = row.wall_s or 0.0
    if state == "running" and not active:
        state = "pending"
    elif state == "running" and row.running_since is not None:
        wall += max(0.0, now - row.running_since)
    cleaned = None
    if row.bytes_before_clean is not None and row.bytes_after_clean is not None:
        cleaned = [row.bytes_before_clean, row.bytes_after_clean]
    return {
        "pair": row.pair_id,
        "state": state,
        "phase": row.phase if state in ("running", "failed") else None,
        "attempts": row.attempts or 0,
        "wall_s": round(wall, 1),
        "phases_done": list(row.phases_done),
        "phases_total": row.phases_total,
        "error": row.error if state == "failed" else None,
        "cleaned_bytes": cleaned,
        "geometry_from": row.geometry_from,
        "without_esd": row.without_esd,
        "note": WITHOUT_ESD_NOTE if row.without_esd else None,
    }


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_status(document: dict[str, Any]) -> str:
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
    without = [entry["pair"] for entry in document["pairs"] if entry.get("without_esd")]
    if without:
        lines.append(f"{', '.join(without)}: {WITHOUT_ESD_NOTE}")
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


def _progress(entry: dict[str, Any]) -> str:
    notes = [f"geometry from {entry['geometry_from']}" if entry["geometry_from"] else ""]
    notes.append(entry.get("note") or "")
    if entry["state"] not in ("done", "failed") and entry["phases_total"]:
        notes.insert(0, f"({len(entry['phases_done'])}/{entry['phases_total']} phases done)")
    return ", ".join(note for note in notes if note)


def status_command(settings: Settings, args: Any) -> int:
    document = collect_status(settings.runs_dir)
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        sys.stdout.write(render_status(document) + "\n")
    return 0
