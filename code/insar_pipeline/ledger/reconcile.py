"""Make the ledger agree with the PICKLE checkpoints after any crash; the checkpoints win.

A coordinator killed with -9 may die after topsApp wrote a checkpoint but before the ledger
heard of the phase's end, or a ledger may be restored from a copy: at the start of every run
each disagreement is repaired and logged as a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from insar_pipeline.ledger.store import Column, Ledger
from insar_pipeline.topsapp.job import PairStatus

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
        for run_id, pid in ledger.unfinished_runs():
            warnings.append(f"run {run_id} (pid {pid}) stopped without finishing")
            ledger.mark_crashed(run_id)
        # Two queries for every pair, not two per pair: a ledger of 100,000 pairs is read once.
        recorded = ledger.pair_states()
        open_attempts = ledger.all_open_attempts()
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
    row: tuple[PairStatus, tuple[str, ...]],
    open_attempts: list[tuple[int, str]],
    truth: tuple[str, ...],
    all_phases: tuple[str, ...],
) -> list[str]:
    status, recorded = row
    _close_open_attempts(ledger, open_attempts, truth)
    warnings = []
    new_status = status
    if status == PairStatus.RUNNING:
        warnings.append(f"{pair_id}: was running when its run stopped")
        new_status = PairStatus.PENDING
    complete = set(all_phases) <= set(truth)
    if complete and status != PairStatus.DONE:
        warnings.append(f"{pair_id}: every phase has its checkpoint; recorded as done")
        new_status = PairStatus.DONE
    elif status == PairStatus.DONE and not complete:
        missing = ", ".join(phase for phase in all_phases if phase not in truth)
        warnings.append(f"{pair_id}: recorded done but checkpoints of {missing} are missing")
        new_status = PairStatus.PENDING
    if set(recorded) != set(truth):
        warnings.append(
            f"{pair_id}: phases done per ledger {list(recorded)}, per checkpoints {list(truth)}"
        )
    if new_status != status or recorded != truth:
        fields: dict[str, Column] = {"status": new_status, "phases_done": truth}
        if new_status != PairStatus.FAILED:
            fields["phase"] = None
        ledger.set_pair(pair_id, **fields)
    return warnings


def _close_open_attempts(
    ledger: Ledger, open_attempts: list[tuple[int, str]], truth: tuple[str, ...]
) -> None:
    """Attempts a dead run never ended: finished if their phase's checkpoint exists."""
    for row_id, phase in open_attempts:
        ok = phase in truth
        ledger.settle_attempt(row_id, ok, None if ok else "the run stopped during this phase")
