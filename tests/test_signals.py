"""The coordinator as a user runs it (a child process): Ctrl-C, a second Ctrl-C, kill -9, the
run lock against a second `run`, and `status --json` while a run is in progress.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from batch_factory import env_text, make_batch, prepare_inputs
from conftest import MAIN, clean_environ
from insar_pipeline.report.status import collect_status
from isce_double.double_faults import read_step_log

pytestmark = pytest.mark.slow


def start_run(batch, step_log: Path, extra: dict, **double_env: str) -> subprocess.Popen:
    """`main_parallel.py run` in its own session (so a test's signals reach only it)."""
    env = clean_environ(ISCE_DOUBLE_LOG=str(step_log), **double_env)
    return subprocess.Popen(
        [
            sys.executable,
            str(MAIN),
            "run",
            "--data",
            str(batch.data),
            "--pairs",
            str(batch.pairs_file),
            "--env",
            str(batch.root / ".env"),
        ],
        cwd=batch.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def cli(batch, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(MAIN),
            *args,
            "--data",
            str(batch.data),
            "--pairs",
            str(batch.pairs_file),
            "--env",
            str(batch.root / ".env"),
        ],
        cwd=batch.root,
        env=clean_environ(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def running_pairs(batch) -> list[str]:
    document = collect_status(batch.data / "runs")
    return [entry["pair"] for entry in document["pairs"] if entry["state"] == "running"]


def processes_in(folder: Path) -> list[int]:
    """Live processes whose working directory is under `folder` (topsApp children and theirs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cwd").readlink().is_relative_to(folder):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def finished_steps_ran_once(step_log: Path) -> Counter:
    counts = Counter(
        (row["pair"], row["step"]) for row in read_step_log(step_log) if row["outcome"] == "ok"
    )
    return Counter({key: count for key, count in counts.items() if count > 1})


@pytest.fixture
def batch(tmp_path):
    batch = make_batch(tmp_path, 3)
    extra = prepare_inputs(batch)
    (tmp_path / ".env").write_text(
        env_text({**extra, "workers": 2, "cores": 2, "memory_total_gb": 16, "clean": "standard"})
    )
    return batch


def test_sigint_second_run_and_status_during_a_run(batch, tmp_path):
    step_log = tmp_path / "steps.log"
    run = start_run(batch, step_log, {}, ISCE_DOUBLE_SLEEP="topo=3")
    try:
        wait_for(lambda: running_pairs(batch), what="a running pair")
        # `status --json` while the run writes the ledger.
        during = json.loads(cli(batch, "status", "--json").stdout)
        assert during["active"] is True and during["pid"] == run.pid
        assert during["totals"]["running"] >= 1 and during["run"]["status"] == "running"
        # A second `run` on the same data folder is refused, naming the first.
        second = cli(batch, "run")
        assert second.returncode == 2
        assert f"another `run` (process {run.pid})" in second.stderr
        wait_for(
            lambda: (
                any(r["step"] == "topo" for r in read_step_log(step_log)) or running_pairs(batch)
            ),
            what="topsApp running",
        )
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 130, stderr
    assert "stopping" in stderr and "Traceback" not in stderr
    assert processes_in(batch.data / "runs") == []
    after = collect_status(batch.data / "runs")
    assert after["active"] is False and after["run"]["status"] == "interrupted"
    assert after["totals"]["running"] == 0 and after["totals"]["pending"] >= 1
    # A rerun finishes the work without redoing any finished step.
    before = len(read_step_log(step_log))
    rerun = cli(batch, "run", ISCE_DOUBLE_LOG=str(step_log))
    assert rerun.returncode == 0, rerun.stderr
    assert len(read_step_log(step_log)) > before
    assert finished_steps_ran_once(step_log) == Counter()
    final = json.loads(cli(batch, "status", "--json").stdout)
    assert final["totals"] == {"pairs": 3, "done": 3, "failed": 0, "running": 0, "pending": 0}


def test_kill_9_of_the_coordinator_then_rerun_resumes(batch, tmp_path):
    step_log = tmp_path / "steps.log"
    run = start_run(batch, step_log, {}, ISCE_DOUBLE_SLEEP="topo=0.4,fineresamp=0.2,geocode=0.3")

    def one_pair_done_and_another_midway():
        rows = read_step_log(step_log)
        done = {r["pair"] for r in rows if r["step"] == "geocode" and r["outcome"] == "ok"}
        return done and len({r["pair"] for r in rows}) > len(done)

    try:
        wait_for(one_pair_done_and_another_midway, what="one pair done, another midway")
        os.kill(run.pid, signal.SIGKILL)
        run.communicate(timeout=10)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    # Its topsApp children die with it (PR_SET_PDEATHSIG), leaving nothing running.
    wait_for(lambda: not processes_in(batch.data / "runs"), 10, "the children to die")
    before = len(read_step_log(step_log))
    rerun = cli(batch, "run", ISCE_DOUBLE_LOG=str(step_log))
    assert rerun.returncode == 0, rerun.stderr
    assert "ledger repaired from checkpoints" in rerun.stderr
    assert len(read_step_log(step_log)) > before
    assert finished_steps_ran_once(step_log) == Counter()
    conn = sqlite3.connect(batch.data / "runs" / "ledger.sqlite")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        statuses = [row[0] for row in conn.execute("SELECT status FROM runs ORDER BY id")]
    finally:
        conn.close()
    assert statuses == ["crashed", "finished"]
    assert collect_status(batch.data / "runs")["totals"]["done"] == 3


def test_second_ctrl_c_exits_at_once_and_kills_the_process_groups(batch, tmp_path):
    step_log = tmp_path / "steps.log"
    # topsApp ignores SIGTERM here, so a graceful stop would wait for the 10 s grace period;
    # coregistration also starts a long-lived grandchild (like snaphu) in its process group.
    run = start_run(
        batch,
        step_log,
        {},
        ISCE_DOUBLE_SLEEP="fineoffsets=30",
        ISCE_DOUBLE_IGNORE_TERM="1",
        ISCE_DOUBLE_GRANDCHILD="subsetoverlaps",
    )
    grandchildren = batch.data / "runs"
    try:
        wait_for(
            lambda: len(list(grandchildren.glob("*/.double_faults/grandchild.pid"))) == 2,
            what="two coregistrations with their grandchildren",
        )
        run.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert run.poll() is None  # first Ctrl-C: waiting for topsApp to stop
        started = time.monotonic()
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=10)
        assert time.monotonic() - started < 3
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 130
    assert "exiting now" in stderr
    wait_for(lambda: not processes_in(batch.data / "runs"), 10, "topsApp and grandchildren to die")
    conn = sqlite3.connect(batch.data / "runs" / "ledger.sqlite")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
