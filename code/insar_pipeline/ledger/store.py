"""The ledger: `data/runs/ledger.sqlite`, what every run, pair, phase attempt and download did.

SQLite in WAL mode, so `status` and `report` read a consistent snapshot while a run writes, and a
coordinator killed mid-write (even by `kill -9`) leaves the last committed state, never a torn
file. The coordinator's main thread is the only writer. The PICKLE checkpoints of each pair are
the truth about finished work: `ledger/reconcile.py` repairs the ledger from them (with a
warning) at the start of every run, through the methods of its section below. The schema is
versioned in `schema_version`; `MIGRATIONS[i]` upgrades a ledger from version i to i + 1.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from insar_pipeline.download import Download
from insar_pipeline.errors import InputError
from insar_pipeline.ledger.schema import (
    ADDED_COLUMNS,
    SCHEMA_VERSION,
    Transaction,
    migrate,
    schema_version,
)
from insar_pipeline.topsapp.job import PairResult, PairStatus, PhaseEvent

log = logging.getLogger(__name__)

LEDGER_NAME = "ledger.sqlite"
# The states a pair has in the ledger (a runner's "interrupted" or "waiting" is pending again).
PAIR_STATES = (PairStatus.PENDING, PairStatus.RUNNING, PairStatus.DONE, PairStatus.FAILED)
SqlValue: TypeAlias = str | int | float | None  # what SQLite hands back (no BLOB columns)
Record: TypeAlias = dict[str, SqlValue]  # one row by column name
Column: TypeAlias = SqlValue | tuple[str, ...] | list[str]  # what `set_pair` writes (phases_done)


@dataclass(frozen=True)
class PairRow:
    """A pair as the ledger holds it."""

    pair_id: str
    reference: str | None
    secondary: str | None
    position: int | None
    status: PairStatus
    phase: str | None
    attempts: int
    error: str | None
    error_tail: str | None
    failed_phase: str | None
    phases_done: tuple[str, ...]
    phases_total: int | None
    wall_s: float
    running_since: float | None  # start of the phase attempt still open, if any
    bytes_before_clean: int | None
    bytes_after_clean: int | None
    geometry_from: str | None = None  # the pair whose geometry this one took (georeuse)
    without_esd: bool = False  # coregistered without ESD by its own decision (ESD=auto)


def ledger_path(runs_dir: Path) -> Path:
    return runs_dir / LEDGER_NAME


class Ledger:
    """A connection to the ledger: `open_writer` (the coordinator) or `open_reader` (others)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    def open_writer(cls, runs_dir: Path) -> Ledger:
        path = ledger_path(runs_dir)
        runs_dir.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=True)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a power cut may lose the last commits but never corrupts; the
        # checkpoints are the truth anyway and `reconcile` restores what was lost.
        conn.execute("PRAGMA synchronous=NORMAL")
        ledger = cls(conn, path)
        migrate(conn, path)
        return ledger

    @classmethod
    def open_reader(cls, runs_dir: Path) -> Ledger | None:
        """A read-only view, or None when no run ever wrote a ledger here."""
        path = ledger_path(runs_dir)
        if not path.exists():
            return None
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        ledger = cls(conn, path)
        version = ledger.schema_version()
        if version == 0:  # a run is creating it right now: nothing to read yet
            conn.close()
            return None
        if version > SCHEMA_VERSION:
            conn.close()
            raise InputError(
                f"{path}: ledger schema version {version}, this program reads up to "
                f"{SCHEMA_VERSION}; use the newer version of the pipeline that wrote it"
            )
        return ledger  # an older one reads as is (see `_column`); `run` upgrades it

    def close(self) -> None:
        self.conn.close()

    def schema_version(self) -> int:
        return schema_version(self.conn)

    # ---- writes (coordinator main thread only) -------------------------------------------

    def start_run(
        self, *, workers: int, omp_threads: int, budget_gb: float, pairs_total: int, executor: str
    ) -> int:
        cursor = self.conn.execute(
            "INSERT INTO runs (started, pid, host, status, workers, omp_threads, budget_gb,"
            " pairs_total, executor) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)",
            (
                time.time(),
                os.getpid(),
                socket.gethostname(),
                workers,
                omp_threads,
                budget_gb,
                pairs_total,
                executor,
            ),
        )
        return int(cursor.lastrowid or 0)

    def end_run(self, run_id: int, status: str, exit_code: int) -> None:
        self.conn.execute(
            "UPDATE runs SET ended=?, status=?, exit_code=? WHERE id=?",
            (time.time(), status, exit_code, run_id),
        )

    def register_pairs(
        self,
        pairs: Sequence[tuple[str, str, str, int]],
        phases_total: int,
        unlist_others: bool = True,
    ) -> None:
        """(pair id, reference, secondary, line) in pairs.txt order; keeps known pairs' state.

        Pairs no longer in pairs.txt stay in the ledger, unlisted (`status` hides them).
        """
        with self.transaction():
            if unlist_others:
                self.conn.execute("UPDATE pairs SET listed=0")
            self.conn.executemany(
                "INSERT INTO pairs (pair_id, reference, secondary, line, position, listed,"
                " phases_total, updated) VALUES (?, ?, ?, ?, ?, 1, ?, ?)"
                " ON CONFLICT(pair_id) DO UPDATE SET reference=excluded.reference,"
                " secondary=excluded.secondary, line=excluded.line, position=excluded.position,"
                " listed=1, phases_total=excluded.phases_total",
                [
                    (pair_id, ref, sec, line, position, phases_total, time.time())
                    for position, (pair_id, ref, sec, line) in enumerate(pairs)
                ],
            )

    def mark_pending(self, pair_ids: Sequence[str]) -> None:
        """Pairs queued by this run (a pair failed before is pending again until it runs)."""
        now = time.time()
        with self.transaction():
            self.conn.executemany(
                "UPDATE pairs SET status='pending', phase=NULL, error=NULL, error_tail=NULL,"
                " failed_phase=NULL, attempts=0, updated=? WHERE pair_id=?",
                ((now, pair_id) for pair_id in pair_ids),
            )

    def set_pair(self, pair_id: str, **fields: Column) -> None:
        """Update some columns of a pair (phases_done as a sequence)."""
        values: Record = {
            name: json.dumps(list(value)) if isinstance(value, tuple | list) else value
            for name, value in fields.items()
        }
        values["updated"] = time.time()
        columns = ", ".join(f"{name}=?" for name in values)
        self.conn.execute(
            f"UPDATE pairs SET {columns} WHERE pair_id=?", (*values.values(), pair_id)
        )

    def record_event(self, run_id: int, event: PhaseEvent) -> None:
        """A runner `PhaseEvent`: one phases row per attempt, and the pair's current phase."""
        with self.transaction():
            if event.kind == "start":
                self.conn.execute(
                    "INSERT INTO phases (run_id, pair_id, phase, attempt, started, log_path)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET started=excluded.started",
                    (run_id, event.pair_id, event.phase, event.attempt, event.time, event.log_path),
                )
                self.set_pair(
                    event.pair_id,
                    status=PairStatus.RUNNING,
                    phase=event.phase,
                    attempts=event.attempt,
                    run_id=run_id,
                )
                return
            self.conn.execute(
                "INSERT INTO phases (run_id, pair_id, phase, attempt, started, ended, returncode,"
                " ok, transient, error, log_path, wall_s, peak_rss_mb)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
                " ended=excluded.ended, returncode=excluded.returncode, ok=excluded.ok,"
                " transient=excluded.transient, error=excluded.error,"
                " log_path=COALESCE(excluded.log_path, log_path), wall_s=excluded.wall_s,"
                " peak_rss_mb=excluded.peak_rss_mb",
                (
                    run_id,
                    event.pair_id,
                    event.phase,
                    event.attempt,
                    event.time - (event.wall_s or 0.0),
                    event.time,
                    event.returncode,
                    _bool(event.ok),
                    _bool(event.transient),
                    event.error,
                    event.log_path,
                    event.wall_s,
                    event.peak_rss_mb,
                ),
            )
            if event.ok:
                done = self._phases_done(event.pair_id)
                if event.phase not in done:
                    self.set_pair(event.pair_id, phases_done=(*done, event.phase))
            if event.ok and event.reused_from:
                self.set_pair(event.pair_id, geometry_from=event.reused_from)

    def record_result(self, run_id: int, result: PairResult) -> None:
        """A runner `PairResult`: the pair's final state for this run."""
        final = (PairStatus.DONE, PairStatus.FAILED)
        status = result.status if result.status in final else PairStatus.PENDING
        # The runner reports every phase finished in the folder; an empty tuple may only mean
        # "not known" (a pair stopped before it started), so it never erases what we know.
        done: dict[str, Column] = {"phases_done": result.phases_done} if result.phases_done else {}
        # Likewise a geometry source is only ever added here (a run's start re-reads folders).
        if result.geometry_from:
            done["geometry_from"] = result.geometry_from
        # The pair folder's own decision, as the runner read it (a new folder starts with ESD).
        done["without_esd"] = int(result.without_esd)
        self.set_pair(
            result.pair_id,
            **done,
            status=status,
            run_id=run_id,
            ended=time.time(),
            # `attempts` stays the number of the current phase's last attempt (from its events,
            # counted across reruns like the runner's logs/<phase>.<attempt>.log).
            phase=result.failed_phase if status == PairStatus.FAILED else None,
            error=result.error,
            error_tail=result.error_tail,
            failed_phase=result.failed_phase,
            bytes_before_clean=result.bytes_before_clean,
            bytes_after_clean=result.bytes_after_clean,
        )

    def fail_pair(self, run_id: int, pair_id: str, error: str) -> None:
        """A pair that cannot start (e.g. no orbit for one of its scenes)."""
        self.set_pair(
            pair_id,
            status=PairStatus.FAILED,
            run_id=run_id,
            error=error,
            error_tail=None,
            failed_phase=None,
            phase=None,
            ended=time.time(),
        )

    def abandon_running(self, run_id: int, error: str) -> list[str]:
        """After the run itself failed: its open phase attempts end failed and its "running"
        pairs become "failed" with `error` (a rerun resumes them); returns those pair ids."""
        now = time.time()
        with self.transaction():
            self.conn.execute(
                "UPDATE phases SET ended=?, ok=0, transient=1, error=?,"
                " wall_s=ROUND(? - started, 3) WHERE run_id=? AND ended IS NULL",
                (now, error, now, run_id),
            )
            rows = self.conn.execute("SELECT pair_id FROM pairs WHERE status='running'").fetchall()
            for (pair_id,) in rows:
                self.fail_pair(run_id, pair_id, error)
        return [pair_id for (pair_id,) in rows]

    def record_download(self, run_id: int, download: Download) -> None:
        self.conn.execute(
            "INSERT INTO downloads (run_id, time, kind, name, source, bytes, path)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                time.time(),
                download.kind,
                download.name,
                download.source,
                download.bytes,
                str(download.path),
            ),
        )

    # ---- repairs (ledger/reconcile.py, in the writer's transaction) ------------------------

    def unfinished_runs(self) -> list[tuple[int, int]]:
        """(run id, pid) of the runs still marked running."""
        rows = self.conn.execute("SELECT id, pid FROM runs WHERE status='running'").fetchall()
        return [(int(run_id), int(pid)) for run_id, pid in rows]

    def mark_crashed(self, run_id: int) -> None:
        self.conn.execute("UPDATE runs SET status='crashed' WHERE id=?", (run_id,))

    def pair_state(self, pair_id: str) -> tuple[PairStatus, tuple[str, ...]] | None:
        """A pair's recorded status and phases done, or None when the ledger has no such pair."""
        row = self.conn.execute(
            "SELECT status, phases_done FROM pairs WHERE pair_id=?", (pair_id,)
        ).fetchone()
        return None if row is None else (PairStatus(row[0]), tuple(json.loads(row[1])))

    def open_attempts(self, pair_id: str) -> list[tuple[int, str]]:
        """(row id, phase) of the pair's phase attempts that never ended."""
        rows = self.conn.execute(
            "SELECT id, phase FROM phases WHERE pair_id=? AND ended IS NULL", (pair_id,)
        ).fetchall()
        return [(int(row_id), str(phase)) for row_id, phase in rows]

    def pair_states(self) -> dict[str, tuple[PairStatus, tuple[str, ...]]]:
        """`pair_state` of every pair, in one query (a ledger of 100,000 pairs is read once)."""
        rows = self.conn.execute("SELECT pair_id, status, phases_done FROM pairs")
        return {
            str(pair_id): (PairStatus(status), tuple(json.loads(done)))
            for pair_id, status, done in rows
        }

    def all_open_attempts(self) -> dict[str, list[tuple[int, str]]]:
        """`open_attempts` of every pair, in one query."""
        attempts: dict[str, list[tuple[int, str]]] = {}
        rows = self.conn.execute(
            "SELECT id, pair_id, phase FROM phases WHERE ended IS NULL ORDER BY id"
        )
        for row_id, pair_id, phase in rows:
            attempts.setdefault(str(pair_id), []).append((int(row_id), str(phase)))
        return attempts

    def settle_attempt(self, row_id: int, ok: bool, error: str | None) -> None:
        self.conn.execute("UPDATE phases SET ok=?, error=? WHERE id=?", (int(ok), error, row_id))

    # ---- reads ---------------------------------------------------------------------------

    def pairs(self, listed_only: bool = True) -> list[PairRow]:
        return list(self.iter_pairs(listed_only))

    def iter_pairs(
        self,
        listed_only: bool = True,
        states: Sequence[str] | None = None,
        limit: int | None = None,
        failures_first: bool = False,
    ) -> Iterator[PairRow]:
        """The pairs in pairs.txt order, one row at a time (a cursor, not a list); only those
        of `states` when given, at most `limit`; `failures_first`: failed, running, pending,
        then done pairs, each in pairs.txt order."""
        query = (
            "SELECT p.pair_id, p.reference, p.secondary, p.position, p.status, p.phase,"
            " p.attempts, p.error, p.error_tail, p.failed_phase, p.phases_done, p.phases_total,"
            " COALESCE((SELECT SUM(wall_s) FROM phases f WHERE f.pair_id=p.pair_id"
            "  AND f.ended IS NOT NULL), 0),"
            " (SELECT MAX(started) FROM phases f WHERE f.pair_id=p.pair_id AND f.ended IS NULL),"
            f" p.bytes_before_clean, p.bytes_after_clean, {self._column('geometry_from')},"
            f" {self._column('without_esd')} FROM pairs p"
        )
        where, values = _pair_filter(listed_only, states)
        order = " ORDER BY p.position, p.pair_id"
        if failures_first:
            order = (
                " ORDER BY CASE p.status WHEN 'failed' THEN 0 WHEN 'running' THEN 1"
                " WHEN 'done' THEN 3 ELSE 2 END, p.position, p.pair_id"
            )
        query += where + order
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        for row in self.conn.execute(query, values):
            yield _pair_row(row)

    def pair_counts(self, listed_only: bool = True) -> dict[str, int]:
        """Pairs per recorded status (one aggregate query)."""
        where, values = _pair_filter(listed_only, None)
        rows = self.conn.execute(
            f"SELECT p.status, COUNT(*) FROM pairs p{where} GROUP BY p.status", values
        )
        return {status: count for status, count in rows}

    def geometry_sources(self) -> dict[str, str]:
        """Pair id -> the pair whose geometry it took, for the pairs that took one."""
        return dict(
            self.conn.execute(
                "SELECT pair_id, geometry_from FROM pairs WHERE geometry_from IS NOT NULL"
            )
        )

    def without_esd(self) -> list[str]:
        """The pairs coregistered without ESD by their own decision (ESD=auto)."""
        column = self._column("without_esd")
        return [
            pair for (pair,) in self.conn.execute(f"SELECT pair_id FROM pairs p WHERE {column}")
        ]

    def pair_statuses(self, listed_only: bool = False) -> dict[str, str]:
        """Pair id -> recorded status, without the per-phase sums of `iter_pairs`."""
        where, values = _pair_filter(listed_only, None)
        return dict(self.conn.execute(f"SELECT p.pair_id, p.status FROM pairs p{where}", values))

    def _column(self, name: str) -> str:
        """`p.<name>`, or its default when an older ledger (read as is) has no such column."""
        table, default = ADDED_COLUMNS[name]
        columns = {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}
        return f"p.{name}" if name in columns else default

    def latest_run(self) -> Record | None:
        cursor = self.conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1")
        row = cursor.fetchone()
        if row is None:
            return None
        return dict(zip([column[0] for column in cursor.description], row, strict=True))

    def phase_rows(self, pair_id: str) -> list[Record]:
        cursor = self.conn.execute("SELECT * FROM phases WHERE pair_id=? ORDER BY id", (pair_id,))
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def downloads(self) -> list[Record]:
        cursor = self.conn.execute("SELECT * FROM downloads ORDER BY id")
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def _phases_done(self, pair_id: str) -> tuple[str, ...]:
        row = self.conn.execute(
            "SELECT phases_done FROM pairs WHERE pair_id=?", (pair_id,)
        ).fetchone()
        return tuple(json.loads(row[0])) if row else ()

    def transaction(self) -> Transaction:
        return Transaction(self.conn)


def _pair_filter(listed_only: bool, states: Sequence[str] | None) -> tuple[str, list[str]]:
    clauses: list[str] = []
    values: list[str] = []
    if listed_only:
        clauses.append("p.listed=1")
    if states is not None:
        clauses.append(f"p.status IN ({', '.join('?' * len(states))})")
        values += list(states)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), values


def _bool(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _pair_row(row: Sequence[SqlValue]) -> PairRow:
    values: list[object] = list(row)
    values[4] = PairStatus(str(row[4]))
    values[10] = tuple(json.loads(str(row[10])))  # phases_done is stored as JSON
    values[17] = bool(row[17])  # without_esd is stored as 0/1
    return PairRow(*values)  # type: ignore[arg-type]  # the SELECT's columns, in PairRow's order
