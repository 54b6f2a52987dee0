"""The run lock: one `run` per data folder, never stale after the holder dies (kill -9)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from insar_pipeline.errors import RunLockedError
from insar_pipeline.ledger.lock import RunLock, lock_holder

REPO = Path(__file__).resolve().parents[1]

HOLDER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {code!r})
    from pathlib import Path
    from insar_pipeline.ledger.lock import RunLock
    lock = RunLock(Path(sys.argv[1]))
    lock.acquire()
    print("locked", flush=True)
    time.sleep(60)
    """
).format(code=str(REPO / "code"))


@pytest.fixture
def holder(tmp_path):
    """A child process holding the lock of tmp_path/runs (killed at the end)."""
    runs = tmp_path / "runs"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(runs)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "locked"
    yield runs, child
    if child.poll() is None:
        child.kill()
    child.wait(10)
    child.stdout.close()


def test_lock_writes_pid_and_releases(tmp_path):
    runs = tmp_path / "runs"
    with RunLock(runs) as lock:
        assert lock.path.read_text().split()[0] == str(os.getpid())
        assert lock_holder(runs) == os.getpid()
    assert lock_holder(runs) is None
    with RunLock(runs):  # can be taken again
        pass


def test_second_lock_is_refused_naming_the_holder(holder):
    runs, child = holder
    assert lock_holder(runs) == child.pid
    with pytest.raises(RunLockedError, match=f"process {child.pid}") as caught:
        RunLock(runs).acquire()
    assert f"kill -INT {child.pid}" in str(caught.value)
    assert caught.value.exit_code == 2


def test_lock_of_a_killed_holder_is_not_stale(holder):
    runs, child = holder
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    # The file still names the dead pid, but the kernel dropped the flock with the process.
    assert (runs / ".lock").read_text().split()[0] == str(child.pid)
    assert lock_holder(runs) is None
    with RunLock(runs) as lock:
        assert lock.path.read_text().split()[0] == str(os.getpid())


def test_same_process_cannot_take_it_twice(tmp_path):
    with RunLock(tmp_path), pytest.raises(RunLockedError):
        RunLock(tmp_path).acquire()


def test_lock_is_not_inherited_by_children(tmp_path):
    with RunLock(tmp_path):
        # A child that outlives us must not keep the lock: the descriptor is close-on-exec.
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert lock_holder(tmp_path) is None
    finally:
        child.kill()
        child.wait(10)
