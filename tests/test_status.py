"""`status [--json]`: the table and the stable JSON document, from the ledger (read-only)."""

from __future__ import annotations

import argparse
import json
import os

import pytest

from batch_factory import pair_result
from insar_pipeline.inputs.config import Settings
from insar_pipeline.ledger.lock import RunLock
from insar_pipeline.ledger.store import Ledger
from insar_pipeline.report.status import collect_status, render_status, status_command
from insar_pipeline.topsapp.job import PhaseEvent

PAIRS = [
    ("20250406_20250418", "REF", "SEC", 1),
    ("20250418_20250430", "SEC", "T3", 2),
    ("20250430_20250512", "T3", "T4", 3),
]
PAIR_KEYS = {
    "pair",
    "state",
    "phase",
    "attempts",
    "wall_s",
    "phases_done",
    "phases_total",
    "error",
    "cleaned_bytes",
    "geometry_from",
    "without_esd",
    "note",
}


result = pair_result


@pytest.fixture
def runs(tmp_path):
    """A ledger with one pair done, one failed and one running geometry (attempt 2)."""
    runs = tmp_path / "runs"
    ledger = Ledger.open_writer(runs)
    ledger.register_pairs(PAIRS, phases_total=6)
    run_id = ledger.start_run(
        workers=2, omp_threads=1, budget_gb=22.0, pairs_total=3, executor="local"
    )
    done, failed, running = (pair[0] for pair in PAIRS)
    for phase in ("preprocess", "geometry", "coregistration", "interferogram", "unwrap", "geocode"):
        ledger.record_event(run_id, PhaseEvent(done, phase, 1, "start", 100.0))
        ledger.record_event(
            run_id, PhaseEvent(done, phase, 1, "end", 110.0, 0, ok=True, wall_s=10.0)
        )
    ledger.record_result(
        run_id, result(done, "done", bytes_before_clean=5000, bytes_after_clean=400)
    )
    ledger.record_event(run_id, PhaseEvent(failed, "preprocess", 1, "start", 100.0))
    ledger.record_event(
        run_id,
        PhaseEvent(
            failed,
            "preprocess",
            1,
            "end",
            101.0,
            1,
            ok=False,
            transient=False,
            error="exit 1",
            wall_s=1.0,
        ),
    )
    ledger.record_result(
        run_id,
        result(
            failed,
            "failed",
            error="preprocess: exit 1 (no retry)",
            failed_phase="preprocess",
            attempts={"preprocess": 1},
        ),
    )
    ledger.record_event(run_id, PhaseEvent(running, "preprocess", 1, "start", 100.0))
    ledger.record_event(
        run_id, PhaseEvent(running, "preprocess", 1, "end", 102.0, 0, ok=True, wall_s=2.0)
    )
    ledger.record_event(run_id, PhaseEvent(running, "geometry", 1, "start", 103.0))
    ledger.record_event(
        run_id,
        PhaseEvent(
            running,
            "geometry",
            1,
            "end",
            104.0,
            -9,
            ok=False,
            transient=True,
            error="killed by SIGKILL",
            wall_s=1.0,
        ),
    )
    ledger.record_event(run_id, PhaseEvent(running, "geometry", 2, "start", 150.0))
    ledger.close()
    return runs


def test_no_ledger_yet(tmp_path):
    document = collect_status(tmp_path / "runs")
    assert document["ledger"] is None and document["totals"]["pairs"] == 0
    assert "no run yet" in render_status(document)


def test_status_while_the_run_holds_the_lock(runs):
    with RunLock(runs):
        document = collect_status(runs, now=160.0)
    assert document["active"] is True and document["pid"] == os.getpid()
    assert document["schema"] == 1 and document["run"]["status"] == "running"
    assert document["totals"] == {"pairs": 3, "done": 1, "failed": 1, "running": 1, "pending": 0}
    done, failed, running = document["pairs"]
    assert all(set(entry) == PAIR_KEYS for entry in document["pairs"])
    assert (done["state"], done["wall_s"], done["cleaned_bytes"]) == ("done", 60.0, [5000, 400])
    assert (failed["state"], failed["phase"], failed["error"]) == (
        "failed",
        "preprocess",
        "preprocess: exit 1 (no retry)",
    )
    # 3 s of ended attempts + 10 s of the attempt still running.
    assert (running["state"], running["phase"], running["attempts"], running["wall_s"]) == (
        "running",
        "geometry",
        2,
        13.0,
    )
    assert running["phases_done"] == ["preprocess"]
    text = render_status(document)
    assert (
        "a run is in progress" in text
        and "1 done, 1 failed, 1 running, 0 pending of 3 pairs" in text
    )
    assert "preprocess: exit 1 (no retry)" in text


def test_a_dead_run_shows_its_running_pairs_as_pending(runs):
    document = collect_status(runs)
    assert document["active"] is False and document["run"]["status"] == "crashed"
    assert [entry["state"] for entry in document["pairs"]] == ["done", "failed", "pending"]
    assert "stopped without finishing" in render_status(document)


def test_status_command_prints_json_and_table(runs, capsys):
    settings = Settings(data_dir=runs.parent)
    assert status_command(settings, argparse.Namespace(json=True)) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["totals"]["pairs"] == 3 and document["ledger"].endswith("ledger.sqlite")
    assert status_command(settings, argparse.Namespace(json=False)) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0].split()
    assert header == ["pair", "state", "phase", "attempts", "wall", "error"]
    assert "20250430_20250512  pending" in table


def big_ledger(runs, count: int) -> list[str]:
    """A ledger of `count` pairs: every 10th failed, the 5th running, the rest done."""
    ids = [f"2025{index:06d}" for index in range(count)]
    ledger = Ledger.open_writer(runs)
    ledger.register_pairs([(pair, "R", "S", n + 1) for n, pair in enumerate(ids)], 6)
    run_id = ledger.start_run(
        workers=2, omp_threads=1, budget_gb=8.0, pairs_total=count, executor="local"
    )
    for index, pair in enumerate(ids):
        if index == 5:
            ledger.record_event(run_id, PhaseEvent(pair, "preprocess", 1, "start", 100.0))
        elif index % 10 == 0:
            ledger.record_result(run_id, result(pair, "failed", error=f"boom {index}"))
        else:
            ledger.record_result(run_id, result(pair, "done", phases_done=("preprocess",)))
    ledger.close()
    return ids


def test_status_of_a_large_batch_lists_running_and_failed_pairs_only(tmp_path, monkeypatch):
    import insar_pipeline.ledger.store as store
    import insar_pipeline.report.status as status

    runs = tmp_path / "runs"
    ids = big_ledger(runs, 60)
    monkeypatch.setattr(status, "FULL_TABLE_MAX", 20)
    monkeypatch.setattr(status, "FAILED_SHOWN", 4)
    built = []
    real_row = store._pair_row
    monkeypatch.setattr(store, "_pair_row", lambda row: built.append(row[0]) or real_row(row))
    with RunLock(runs):
        document = status.status_document(runs)
    # The totals come from one aggregate; rows are built only for what is printed.
    assert document["totals"] == {"pairs": 60, "done": 53, "failed": 6, "running": 1, "pending": 0}
    assert [entry["pair"] for entry in document["pairs"]] == [ids[5], *ids[0:40:10]]
    assert sorted(built) == sorted(entry["pair"] for entry in document["pairs"])
    text = render_status(document)
    assert "not listed: 53 done, 2 failed (`status --all`" in text
    assert "53 done, 6 failed, 1 running, 0 pending of 60 pairs" in text
    assert ids[1] not in text and "boom 30" in text and "boom 40" not in text
    every = status.status_document(runs, every_pair=True)
    assert [entry["pair"] for entry in every["pairs"]] == ids
    assert "not listed" not in render_status(every)


def test_status_json_is_streamed_and_holds_every_pair(tmp_path, capsys):
    runs = tmp_path / "runs"
    ids = big_ledger(runs, 250)
    settings = Settings(data_dir=tmp_path)
    assert status_command(settings, argparse.Namespace(json=True, all=False)) == 0
    document = json.loads(capsys.readouterr().out)
    assert [entry["pair"] for entry in document["pairs"]] == ids
    assert document == collect_status(runs)
    assert document["totals"]["pending"] == 1  # the running pair: no run holds the lock
    assert status_command(settings, argparse.Namespace(json=False, all=False)) == 0
    table = capsys.readouterr().out
    assert len(table.splitlines()) < 60 and "not listed: 224 done, 1 pending" in table
