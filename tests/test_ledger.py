"""The ledger: schema versioning, event recording, WAL reads, crash safety, reconciliation."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from batch_factory import pair_result
from insar_pipeline.errors import InputError
from insar_pipeline.ledger import schema as ledger_schema
from insar_pipeline.ledger.reconcile import reconcile
from insar_pipeline.ledger.schema import SCHEMA_VERSION
from insar_pipeline.ledger.store import Ledger
from insar_pipeline.topsapp.job import PhaseEvent

REPO = Path(__file__).resolve().parents[1]
PHASES = ("preprocess", "geometry", "coregistration", "interferogram", "unwrap", "geocode")
PAIRS = [
    ("20250406_20250418", "S1A_REF", "S1A_SEC", 3),
    ("20250418_20250430", "S1A_SEC", "S1A_T3", 4),
]


def start(pair, phase, attempt=1, at=1000.0):
    return PhaseEvent(pair, phase, attempt, "start", at, log_path=f"logs/{phase}.{attempt}.log")


def end(pair, phase, attempt=1, at=1010.0, ok=True, **fields):
    return PhaseEvent(
        pair,
        phase,
        attempt,
        "end",
        at,
        returncode=0 if ok else 1,
        ok=ok,
        wall_s=10.0,
        log_path=f"logs/{phase}.{attempt}.log",
        **fields,
    )


result = pair_result


@pytest.fixture
def ledger(tmp_path):
    opened = Ledger.open_writer(tmp_path)
    opened.register_pairs(PAIRS, phases_total=len(PHASES))
    yield opened
    opened.close()


def test_new_ledger_is_versioned_and_in_wal_mode(tmp_path):
    opened = Ledger.open_writer(tmp_path)
    assert opened.schema_version() == SCHEMA_VERSION
    assert opened.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    opened.close()
    again = Ledger.open_writer(tmp_path)  # no second migration
    assert again.conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    again.close()


def test_a_newer_ledger_is_refused(tmp_path):
    Ledger.open_writer(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "ledger.sqlite")
    conn.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(InputError, match="newer version"):
        Ledger.open_writer(tmp_path)
    with pytest.raises(InputError, match="schema version"):
        Ledger.open_reader(tmp_path)


def test_migrations_run_from_any_older_version(tmp_path, monkeypatch):
    extra = "ALTER TABLE pairs ADD COLUMN note TEXT"
    Ledger.open_writer(tmp_path).close()
    monkeypatch.setattr(ledger_schema, "MIGRATIONS", (*ledger_schema.MIGRATIONS, extra))
    monkeypatch.setattr(ledger_schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    upgraded = Ledger.open_writer(tmp_path)
    assert upgraded.schema_version() == SCHEMA_VERSION + 1
    upgraded.conn.execute("UPDATE pairs SET note='x'")
    upgraded.close()


def test_events_and_results_are_recorded(ledger):
    run_id = ledger.start_run(
        workers=3, omp_threads=1, budget_gb=20, pairs_total=2, executor="local"
    )
    pair = PAIRS[0][0]
    ledger.record_event(run_id, start(pair, "preprocess"))
    (row,) = [r for r in ledger.pairs() if r.pair_id == pair]
    assert (row.status, row.phase, row.attempts, row.running_since) == (
        "running",
        "preprocess",
        1,
        1000.0,
    )
    ledger.record_event(run_id, end(pair, "preprocess", peak_rss_mb=104.0))
    ledger.record_event(run_id, start(pair, "geometry", at=1011.0))
    ledger.record_event(
        run_id,
        end(
            pair, "geometry", at=1012.0, ok=False, transient=True, error="topsApp killed by SIGKILL"
        ),
    )
    ledger.record_event(run_id, start(pair, "geometry", attempt=2, at=1013.0))
    ledger.record_event(run_id, end(pair, "geometry", attempt=2, at=1020.0))
    phases = ledger.phase_rows(pair)
    assert [(p["phase"], p["attempt"], p["ok"]) for p in phases] == [
        ("preprocess", 1, 1),
        ("geometry", 1, 0),
        ("geometry", 2, 1),
    ]
    assert phases[0]["peak_rss_mb"] == 104.0 and phases[1]["transient"] == 1
    assert phases[1]["error"] == "topsApp killed by SIGKILL"
    ledger.record_result(
        run_id,
        result(
            pair,
            "failed",
            error="unwrap: exit 1",
            failed_phase="unwrap",
            attempts={"unwrap": 1},
            error_tail="line1\nline2",
        ),
    )
    (row,) = [r for r in ledger.pairs() if r.pair_id == pair]
    assert (row.status, row.phase, row.error, row.failed_phase) == (
        "failed",
        "unwrap",
        "unwrap: exit 1",
        "unwrap",
    )
    assert row.phases_done == ("preprocess", "geometry")
    assert row.wall_s == pytest.approx(30.0)  # three ended attempts of 10 s
    ledger.end_run(run_id, "finished", 1)
    assert ledger.latest_run()["status"] == "finished"


def test_downloads_are_recorded(ledger):
    run_id = ledger.start_run(
        workers=1, omp_threads=1, budget_gb=1, pairs_total=2, executor="local"
    )
    download = type(
        "Download",
        (),
        dict(
            kind="orbit",
            name="S1A_OPER.EOF",
            source="asf",
            bytes=4_000_000,
            path=Path("/x/S1A_OPER.EOF"),
        ),
    )
    ledger.record_download(run_id, download)
    (row,) = ledger.downloads()
    assert (row["kind"], row["name"], row["source"], row["bytes"]) == (
        "orbit",
        "S1A_OPER.EOF",
        "asf",
        4_000_000,
    )


def test_register_keeps_state_and_unlists_removed_pairs(ledger):
    ledger.set_pair(PAIRS[0][0], status="done", phases_done=PHASES)
    ledger.register_pairs(PAIRS[:1], phases_total=len(PHASES))
    rows = ledger.pairs()
    assert [(r.pair_id, r.status) for r in rows] == [(PAIRS[0][0], "done")]
    assert len(ledger.pairs(listed_only=False)) == 2
    ledger.register_pairs(PAIRS[1:], phases_total=len(PHASES), unlist_others=False)  # --only
    assert len(ledger.pairs()) == 2


def test_reconcile_repairs_the_ledger_from_checkpoints(ledger, caplog):
    first, second = PAIRS[0][0], PAIRS[1][0]
    run_id = ledger.start_run(
        workers=1, omp_threads=1, budget_gb=1, pairs_total=2, executor="local"
    )
    # A coordinator killed -9 mid-run: first was running geometry, second recorded done.
    ledger.record_event(run_id, start(first, "preprocess"))
    ledger.record_event(run_id, end(first, "preprocess"))
    ledger.record_event(run_id, start(first, "geometry"))
    ledger.set_pair(second, status="done", phases_done=PHASES)
    # The checkpoints say: geometry did finish (the kill came before its end was recorded),
    # and second's geocode checkpoint is missing.
    warnings = reconcile(ledger, {first: PHASES[:2], second: PHASES[:5]}, PHASES)
    rows = {row.pair_id: row for row in ledger.pairs()}
    assert rows[first].status == "pending" and rows[first].phases_done == PHASES[:2]
    assert rows[second].status == "pending" and rows[second].phases_done == PHASES[:5]
    open_attempt = ledger.phase_rows(first)[-1]
    assert (open_attempt["phase"], open_attempt["ok"]) == ("geometry", 1)
    assert ledger.latest_run()["status"] == "crashed"
    text = "\n".join(warnings)
    assert (
        f"{first}: was running" in text
        and "geocode" in text
        and "stopped without finishing" in text
    )
    assert "ledger repaired from checkpoints" in caplog.text
    # Complete checkpoints make a pair done even if the ledger never heard of its end.
    reconcile(ledger, {first: PHASES}, PHASES)
    assert {row.pair_id: row.status for row in ledger.pairs()}[first] == "done"
    # Agreement: no warning.
    assert reconcile(ledger, {first: PHASES, second: PHASES[:5]}, PHASES) == []


def test_reader_sees_committed_state_while_a_writer_is_busy(ledger, tmp_path):
    run_id = ledger.start_run(
        workers=1, omp_threads=1, budget_gb=1, pairs_total=2, executor="local"
    )
    ledger.record_event(run_id, start(PAIRS[0][0], "preprocess"))
    ledger.conn.execute("BEGIN IMMEDIATE")
    ledger.set_pair(PAIRS[0][0], status="done")  # not committed yet
    reader = Ledger.open_reader(tmp_path)
    try:
        assert {r.pair_id: r.status for r in reader.pairs()}[PAIRS[0][0]] == "running"
    finally:
        reader.close()
        ledger.conn.execute("COMMIT")
    assert Ledger.open_reader(tmp_path / "nothing-here") is None


WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {code!r})
    from pathlib import Path
    from insar_pipeline.ledger.store import Ledger
    ledger = Ledger.open_writer(Path(sys.argv[1]))
    ledger.register_pairs([("p%04d" % i, "r", "s", i) for i in range(200)], phases_total=6)
    run_id = ledger.start_run(workers=1, omp_threads=1, budget_gb=1, pairs_total=200, executor="x")
    print("writing", flush=True)
    i = 0
    while True:
        pair = "p%04d" % (i % 200)
        ledger.set_pair(pair, status="running", attempts=i, phases_done=["a"] * (i % 7))
        i += 1
    """
).format(code=str(REPO / "code"))


def test_kill_9_of_the_writer_leaves_a_sound_ledger(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "writing"
        time.sleep(0.3)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
    reader = Ledger.open_reader(tmp_path)
    try:
        assert reader.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = reader.pairs()
        assert len(rows) == 200 and max(row.attempts for row in rows) > 0
        assert all(
            json.loads(json.dumps(list(row.phases_done))) == list(row.phases_done) for row in rows
        )
    finally:
        reader.close()
    writer = Ledger.open_writer(tmp_path)  # and a new run can write again
    writer.end_run(1, "crashed", 1)
    writer.close()
