"""The ledger's schema, versioned: `MIGRATIONS[i]` upgrades a ledger from version i to i + 1."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from insar_pipeline.errors import InputError

log = logging.getLogger(__name__)

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: the first schema.
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY, started REAL NOT NULL, ended REAL, pid INTEGER, host TEXT,
        status TEXT NOT NULL, exit_code INTEGER, workers INTEGER, omp_threads INTEGER,
        budget_gb REAL, pairs_total INTEGER, executor TEXT);
    CREATE TABLE pairs (
        pair_id TEXT PRIMARY KEY, reference TEXT, secondary TEXT, line INTEGER,
        position INTEGER, listed INTEGER NOT NULL DEFAULT 1,
        status TEXT NOT NULL DEFAULT 'pending', phase TEXT, attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT, error_tail TEXT, failed_phase TEXT, phases_done TEXT NOT NULL DEFAULT '[]',
        phases_total INTEGER, run_id INTEGER, started REAL, ended REAL,
        bytes_before_clean INTEGER, bytes_after_clean INTEGER, updated REAL);
    CREATE TABLE phases (
        id INTEGER PRIMARY KEY, run_id INTEGER, pair_id TEXT NOT NULL, phase TEXT NOT NULL,
        attempt INTEGER NOT NULL, started REAL, ended REAL, returncode INTEGER, ok INTEGER,
        transient INTEGER, error TEXT, log_path TEXT, wall_s REAL, peak_rss_mb REAL,
        UNIQUE (run_id, pair_id, phase, attempt));
    CREATE INDEX phases_by_pair ON phases (pair_id);
    CREATE TABLE downloads (
        id INTEGER PRIMARY KEY, run_id INTEGER, time REAL NOT NULL, kind TEXT NOT NULL,
        name TEXT NOT NULL, source TEXT, bytes INTEGER, path TEXT);
    """,
    # 1 -> 2: geometry reuse (issue #8): the pair whose geometry a pair took.
    "ALTER TABLE pairs ADD COLUMN geometry_from TEXT",
    # 2 -> 3: ESD=auto (issue #12): the pair was coregistered without ESD by its own decision.
    "ALTER TABLE pairs ADD COLUMN without_esd INTEGER NOT NULL DEFAULT 0",
)
# Columns added after schema 1, with what they read as in a ledger written before them: a
# reader (`status`, `report`) opens an older ledger as it is, since only `run` may upgrade it.
ADDED_COLUMNS: dict[str, tuple[str, str]] = {
    "geometry_from": ("pairs", "NULL"),
    "without_esd": ("pairs", "0"),
}
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    """The version of an open ledger (0 when it has no schema yet)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
    ).fetchone()
    if not exists:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the ledger to SCHEMA_VERSION in one transaction; refuse a newer one."""
    with Transaction(conn):
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied REAL)"
        )
        version = schema_version(conn)
        if version > SCHEMA_VERSION:
            raise InputError(
                f"{path}: written by a newer version of the pipeline (schema {version}, "
                f"this one knows {SCHEMA_VERSION}); use that version or move the ledger away"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _statements(MIGRATIONS[target - 1]):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, ?)", (target, time.time()))
            log.debug("ledger %s upgraded to schema %d", path, target)


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT, nestable (inner levels join the outer transaction)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.outer = False

    def __enter__(self) -> None:
        self.outer = not self.conn.in_transaction
        if self.outer:
            self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.outer:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _statements(script: str) -> Iterable[str]:
    return (statement.strip() for statement in script.split(";") if statement.strip())
