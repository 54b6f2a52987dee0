"""Errors the pipeline does not expect, through the real CLI in a child process: one line on
stderr, the traceback only in data/runs/pipeline.log, exit 3, the lock released and no pair left
"running" in the ledger. Each failure is injected by a small launcher that patches one function
and then calls `cli.main`, as `code/main_parallel.py` does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from batch_factory import make_batch
from conftest import REPO, clean_environ
from insar_pipeline.ledger.lock import RunLock, lock_holder
from insar_pipeline.ledger.store import Ledger

LAUNCHER = """
import sys
sys.path[:0] = [{code!r}, {tests!r}]
{inject}
from insar_pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""

NO_SPACE = """
import insar_pipeline.orbits.provision as provision

def provision_orbits(*args, **kwargs):
    raise OSError(28, "No space left on device", "data/orbit_data/S1A_OPER_AUX_POEORB.EOF.part")

provision.provision_orbits = provision_orbits
"""

# The real executor and runner path with the fake runner, provisioning and preparing stubbed
# (no orbit or DEM needed); the ledger fails when the first pair's result is recorded, while the
# other pair is still running.
LEDGER_FAILS = """
import sqlite3
from pathlib import Path

import insar_pipeline.pair.runner as runner
import insar_pipeline.run.driver as driver
from batch_factory import FakeRunner, fake_prepare
from insar_pipeline.ledger.store import Ledger
from insar_pipeline.run.coordinator import Provision

def provide(settings, pairs, on_download):
    orbits = {p.name: Path("/orbits/x.EOF") for pair in pairs for p in pair.products}
    return Provision(orbits, {}, {pair.id: Path("/dem/dem.wgs84") for pair in pairs})

def record_result(self, run_id, result):
    raise sqlite3.OperationalError("database disk image is malformed")

driver.provision_inputs = provide
driver.prepare_job = fake_prepare
fast, slow = FakeRunner(phase_s=0.01), FakeRunner(phase_s=2.0)

def run_pair(job, **kwargs):
    return (fast if job.pair_id.startswith("20250406") else slow)(job, **kwargs)

runner.run_pair = run_pair
Ledger.record_result = record_result
"""


# What DEM provisioning needs, so that preflight lets the run start (no request is made).
DEM_READY = "OPENTOPO_API_KEY = a-key\nDEM_TYPE = SRTMGL3_E\n"


def run_injected(root: Path, inject: str, *args: str) -> subprocess.CompletedProcess[str]:
    launcher = root / "launch.py"
    launcher.write_text(
        LAUNCHER.format(code=str(REPO / "code"), tests=str(REPO / "tests"), inject=inject)
    )
    return subprocess.run(
        [sys.executable, str(launcher), *args],
        cwd=root,
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def pipeline_log(runs: Path) -> list[dict]:
    return [json.loads(line) for line in (runs / "pipeline.log").read_text().splitlines()]


def assert_one_line_and_the_traceback_in_the_log(result, runs: Path, what: str) -> None:
    assert result.returncode == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "internal error in `run`" in errors[0] and what in errors[0]
    assert "pipeline.log" in errors[0]
    assert "Traceback" not in result.stderr
    logged = [event for event in pipeline_log(runs) if "exception" in event]
    assert logged and "Traceback" in logged[-1]["exception"] and what in logged[-1]["exception"]


def assert_released_and_consistent(runs: Path) -> None:
    assert lock_holder(runs) is None
    with RunLock(runs):  # a next run may take the folder
        pass
    ledger = Ledger.open_reader(runs)
    try:
        run = ledger.latest_run()
        assert run["status"] == "failed" and run["exit_code"] == 3
        assert not [row for row in ledger.pairs() if row.status == "running"]
        open_phases = [
            row for row in ledger.pairs() for p in ledger.phase_rows(row.pair_id) if not p["ended"]
        ]
        assert open_phases == []
    finally:
        ledger.close()


def test_a_full_disk_while_provisioning_exits_3(tmp_path):
    batch = make_batch(tmp_path, 2)
    (batch.root / ".env").write_text(DEM_READY)
    result = run_injected(batch.root, NO_SPACE, "run")
    runs = batch.data / "runs"
    assert_one_line_and_the_traceback_in_the_log(result, runs, "No space left on device")
    assert "provisioning" in result.stderr  # the stage that failed
    assert_released_and_consistent(runs)
    ledger = Ledger.open_reader(runs)
    try:
        assert {row.status for row in ledger.pairs()} == {"pending"}
    finally:
        ledger.close()


def test_a_failing_ledger_while_pairs_run_exits_3_and_leaves_none_running(tmp_path):
    batch = make_batch(tmp_path, 2)
    (batch.root / ".env").write_text("WORKERS = 2\nCORES = 2\nMEMORY_TOTAL_GB = 64\n" + DEM_READY)
    result = run_injected(batch.root, LEDGER_FAILS, "run")
    runs = batch.data / "runs"
    assert_one_line_and_the_traceback_in_the_log(result, runs, "database disk image is malformed")
    assert "running the pairs" in result.stderr
    assert_released_and_consistent(runs)
    ledger = Ledger.open_reader(runs)
    try:
        rows = {row.pair_id: row for row in ledger.pairs()}
    finally:
        ledger.close()
    stopped = [row for row in rows.values() if row.error and "internal error" in row.error]
    assert stopped, rows  # the pair that was still running, failed with the reason


def test_a_bug_in_another_command_exits_3_too(tmp_path):
    batch = make_batch(tmp_path, 1)
    inject = (
        "import insar_pipeline.report.status as status\n"
        "def broken(settings, args):\n"
        "    raise KeyError('a bug')\n"
        "status.status_command = broken\n"
    )
    result = run_injected(batch.root, inject, "status")
    assert result.returncode == 3, result.stderr
    assert "internal error in `status`: KeyError: 'a bug'" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Traceback" in (batch.data / "runs" / "pipeline.log").read_text()
