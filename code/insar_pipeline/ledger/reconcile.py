"""Make the ledger agree with the PICKLE checkpoints after any crash; the checkpoints win.

A coordinator killed with -9 may die after topsApp wrote a checkpoint but before the ledger
heard of the phase's end, or a ledger may be restored from a copy: at the start of every run
each disagreement is repaired and logged as a warning.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from insar_pipeline.ledger.store import Ledger

log = logging.getLogger(__name__)


def reconcile(
    ledger: Ledger, checkpoints: Mapping[str, Sequence[str]], phase_names: Sequence[str]
) -> list[str]:
    """Repair runs, pairs and open phase attempts from `checkpoints` (pair id -> phases done).

    Returns the warnings logged: runs that never ended, pairs left `running`, pairs recorded done
    whose checkpoints are missing (or complete ones not recorded done), phase lists that differ.
    """
    warnings: list[str] = []
    with ledger.transaction():
        for run_id, pid in ledger.conn.execute(
            "SELECT id, pid FROM runs WHERE status='running'"
        ).fetchall():
            warnings.append(f"run {run_id} (pid {pid}) stopped without finishing")
            ledger.conn.execute("UPDATE runs SET status='crashed' WHERE id=?", (run_id,))
        # Two queries for every pair, not two per pair: a ledger of 100,000 pairs is read once.
        recorded = {
            pair_id: (status, done)
            for pair_id, status, done in ledger.conn.execute(
                "SELECT pair_id, status, phases_done FROM pairs"
            )
        }
        open_attempts: dict[str, list[tuple[int, str]]] = {}
        for row_id, pair_id, phase in ledger.conn.execute(
            "SELECT id, pair_id, phase FROM phases WHERE ended IS NULL ORDER BY id"
        ):
            open_attempts.setdefault(pair_id, []).append((row_id, phase))
        for pair_id, truth in checkpoints.items():
            row = recorded.get(pair_id)
            if row is None:
                continue
            attempts = open_attempts.get(pair_id, [])
            warnings += _reconcile_pair(ledger, pair_id, row, attempts, tuple(truth),
                                        tuple(phase_names))  # fmt: skip
    for warning in warnings:
        log.warning("ledger repaired from checkpoints: %s", warning)
    return warnings


def _reconcile_pair(
    ledger: Ledger,
    pair_id: str,
    row: tuple[str, str],
    open_attempts: list[tuple[int, str]],
    truth: tuple[str, ...],
    all_phases: tuple[str, ...],
) -> list[str]:
    status, recorded = row[0], tuple(json.loads(row[1]))
    _close_open_attempts(ledger, open_attempts, truth)
    warnings = []
    new_status = status
    if status == "running":
        warnings.append(f"{pair_id}: was running when its run stopped")
        new_status = "pending"
    complete = set(all_phases) <= set(truth)
    if complete and status != "done":
        warnings.append(f"{pair_id}: every phase has its checkpoint; recorded as done")
        new_status = "done"
    elif status == "done" and not complete:
        missing = ", ".join(phase for phase in all_phases if phase not in truth)
        warnings.append(f"{pair_id}: recorded done but checkpoints of {missing} are missing")
        new_status = "pending"
    if set(recorded) != set(truth):
        warnings.append(
            f"{pair_id}: phases done per ledger {list(recorded)}, per checkpoints {list(truth)}"
        )
    if new_status != status or recorded != truth:
        fields: dict[str, Any] = {"status": new_status, "phases_done": truth}
        if new_status != "failed":
            fields["phase"] = None
        ledger.set_pair(pair_id, **fields)
    return warnings


def _close_open_attempts(
    ledger: Ledger, open_attempts: list[tuple[int, str]], truth: tuple[str, ...]
) -> None:
    """Attempts a dead run never ended: finished if their phase's checkpoint exists."""
    for row_id, phase in open_attempts:
        ok = phase in truth
        error = None if ok else "the run stopped during this phase"
        ledger.conn.execute("UPDATE phases SET ok=?, error=? WHERE id=?", (int(ok), error, row_id))
