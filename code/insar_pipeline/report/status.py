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
      "without_esd": ["20250418_20250430"],      # pairs coregistered without ESD (ESD=auto)
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

Times are UTC ISO 8601. New keys may be added; existing keys keep their meaning. The JSON is
written pair by pair; the totals come from one aggregate query. The human table lists every
pair of a batch of up to FULL_TABLE_MAX pairs; beyond, the running and the first failed pairs
(`status --all` lists them all).
A pair the ledger says is running while no run holds the lock (its run was killed) is shown
as pending: a rerun resumes it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TypedDict

from insar_pipeline.inputs.config import Settings
from insar_pipeline.ledger.lock import lock_holder
from insar_pipeline.ledger.store import Ledger, PairRow, Record, SqlValue, ledger_path
from insar_pipeline.pair.decisions import WITHOUT_ESD_NOTE, without_esd_line
from insar_pipeline.report.text import format_duration, text_table
from insar_pipeline.topsapp.job import PairStatus

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
    without_esd: bool  # ESD=auto: coregistered without ESD by the pair's own decision
    note: str | None  # WITHOUT_ESD_NOTE for such a pair


class StatusDocument(TypedDict):
    schema: int
    ledger: str | None
    active: bool
    pid: int | None
    run: RunEntry | None
    totals: dict[str, int]
    without_esd: list[str]  # every pair coregistered without ESD by its own decision
    pairs: list[PairEntry]


FULL_TABLE_MAX = 200  # up to this many pairs the table lists each; beyond, running and failed
FAILED_SHOWN = 50  # failed pairs listed in the table of a large batch (--all: every pair)


def collect_status(
    runs_dir: Path,
    now: float | None = None,
    states: Sequence[str] | None = None,
    limit: int | None = None,
) -> StatusDocument:
    """The status document (see the module docstring) of the data folder's runs.

    `states` keeps only the pairs shown in those states (the totals always count every pair),
    at most `limit` of them: `status` on 100,000 pairs builds only what it prints.
    """
    document, ledger = _open_document(runs_dir)
    if ledger is None:
        return document
    try:
        now = time.time() if now is None else now
        document["pairs"] = list(_entries(ledger, document["active"], now, states, limit))
    finally:
        ledger.close()
    return document


def write_status_json(runs_dir: Path, stream: IO[str], now: float | None = None) -> None:
    """`status --json`: the document written pair by pair (no list of every pair in memory)."""
    document, ledger = _open_document(runs_dir)
    head = json.dumps({key: value for key, value in document.items() if key != "pairs"}, indent=2)
    stream.write(head[: -len("\n}")] + ',\n  "pairs": [')
    if ledger is not None:
        try:
            now = time.time() if now is None else now
            for number, entry in enumerate(_entries(ledger, document["active"], now)):
                stream.write(("\n    " if number == 0 else ",\n    ") + json.dumps(entry))
        finally:
            ledger.close()
        stream.write("\n  ")
    stream.write("]\n}\n")


def _open_document(runs_dir: Path) -> tuple[StatusDocument, Ledger | None]:
    """The document without its pairs, and the ledger in a read transaction (or None)."""
    holder = lock_holder(runs_dir)
    active = holder is not None
    document: StatusDocument = {
        "schema": JSON_SCHEMA,
        "ledger": None,
        "active": active,
        "pid": holder if holder and holder > 0 else None,
        "run": None,
        "totals": {"pairs": 0, **{state: 0 for state in STATES}},
        "without_esd": [],
        "pairs": [],
    }
    ledger = Ledger.open_reader(runs_dir)
    if ledger is None:
        return document, None
    try:
        ledger.conn.execute("BEGIN")  # one snapshot for the totals and the rows
        document["ledger"] = str(ledger_path(runs_dir))
        run = ledger.latest_run()
        if run is not None:
            document["run"] = _run_entry(run, active)
        totals = document["totals"]
        for status, count in ledger.pair_counts().items():
            totals[_shown_state(status, active)] += count
            totals["pairs"] += count
        document["without_esd"] = ledger.without_esd()
    except BaseException:
        ledger.close()
        raise
    return document, ledger


def _shown_state(status: str, active: bool) -> PairStatus:
    state = PairStatus(status) if status in STATES else PairStatus.PENDING
    return PairStatus.PENDING if state == PairStatus.RUNNING and not active else state


def _entries(
    ledger: Ledger,
    active: bool,
    now: float,
    states: Sequence[str] | None = None,
    limit: int | None = None,
) -> Iterator[PairEntry]:
    recorded = None
    if states is not None:  # the recorded statuses that are shown as one of `states`
        recorded = [s for s in (*STATES, "interrupted") if _shown_state(s, active) in states]
    for row in ledger.iter_pairs(states=recorded, limit=limit):
        yield _pair_entry(row, active, now)


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
    state = _shown_state(row.status, active)
    wall = row.wall_s or 0.0
    if state == PairStatus.RUNNING and row.running_since is not None:
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
        "without_esd": row.without_esd,
        "note": WITHOUT_ESD_NOTE if row.without_esd else None,
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
    lines += _omitted(document)
    lines.append(
        ", ".join(f"{totals[state]} {state}" for state in STATES) + f" of {totals['pairs']} pairs"
    )
    if document["without_esd"]:  # every such pair, listed in the table or not
        lines.append(without_esd_line(document["without_esd"]))
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
    notes = [f"geometry from {entry['geometry_from']}" if entry["geometry_from"] else ""]
    notes.append(entry["note"] or "")
    if entry["state"] not in (PairStatus.DONE, PairStatus.FAILED) and entry["phases_total"]:
        notes.insert(0, f"({len(entry['phases_done'])}/{entry['phases_total']} phases done)")
    return ", ".join(note for note in notes if note)


def _omitted(document: StatusDocument) -> list[str]:
    """What a large batch's table leaves out, and how to see it."""
    totals, shown = document["totals"], document["pairs"]
    if len(shown) == totals["pairs"]:
        return []
    counts = {state: sum(entry["state"] == state for entry in shown) for state in STATES}
    left = [f"{totals[s] - counts[s]} {s}" for s in STATES if totals[s] - counts[s]]
    return [f"not listed: {', '.join(left)} (`status --all` lists every pair, as --json does)"]


def status_document(
    runs_dir: Path, every_pair: bool = False, now: float | None = None
) -> StatusDocument:
    """The document `status` prints: every pair of a batch of at most FULL_TABLE_MAX pairs
    (or with `every_pair`), else the running pairs and the first FAILED_SHOWN failed ones;
    the totals count every pair either way (one snapshot of the ledger)."""
    document, ledger = _open_document(runs_dir)
    if ledger is None:
        return document
    now = time.time() if now is None else now
    active = document["active"]
    try:
        if every_pair or document["totals"]["pairs"] <= FULL_TABLE_MAX:
            document["pairs"] = list(_entries(ledger, active, now))
        else:
            document["pairs"] = [
                *_entries(ledger, active, now, ("running",)),
                *_entries(ledger, active, now, ("failed",), FAILED_SHOWN),
            ]
    finally:
        ledger.close()
    return document


def status_command(settings: Settings, args: argparse.Namespace) -> int:
    if getattr(args, "json", False):
        write_status_json(settings.runs_dir, sys.stdout)
    else:
        document = status_document(settings.runs_dir, bool(getattr(args, "all", False)))
        sys.stdout.write(render_status(document) + "\n")
    return 0
