"""The run lock: one `run` per data folder (SPEC.md section 9).

An exclusive `flock` on `data/runs/.lock`, holding the owner's pid in the file for the message
the next `run` gets. The kernel drops a flock when its holder dies, even by `kill -9`, so a lock
is never stale: the file may still name a dead pid, but nobody holds it. The descriptor is
opened close-on-exec so that topsApp children never inherit (and outlive us holding) the lock;
the coordinator runs pairs in threads, never in forked copies of itself.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from insar_pipeline.errors import RunLockedError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
# `status` probes the lock with a brief shared flock; a run starting at that very instant
# retries for this long before it calls the folder busy.
ACQUIRE_PATIENCE_S = 0.5


class RunLock:
    """Context manager: `with RunLock(runs_dir): ...` or raise RunLockedError naming the holder."""

    def __init__(self, runs_dir: Path) -> None:
        self.path = runs_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + ACQUIRE_PATIENCE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                holder = _read_holder(fd)
                os.close(fd)
                raise RunLockedError(_locked_message(self.path, holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {time.time():.0f}\n".encode(), 0)
        self._fd = fd
        log.debug("run lock %s taken (pid %d)", self.path, os.getpid())

    def release(self) -> None:
        if self._fd is None:
            return
        # Truncate first so that a reader never sees our pid after we let go.
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def lock_holder(runs_dir: Path) -> int | None:
    """The pid of the `run` holding the data folder now, or None when no run is active.

    Read-only in effect: a shared lock is taken and dropped at once when nobody holds it.
    """
    path = runs_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace")
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _locked_message(path: Path, holder: int | None) -> str:
    who = f"process {holder}" if holder else "another process"
    return (
        f"another `run` ({who}) is already processing this data folder (lock {path}); "
        "wait for it to finish, or stop it with Ctrl-C / `kill -INT "
        f"{holder if holder else '<pid>'}`, then run again"
    )
