"""Supervise one topsApp child process: own process group, dies with us, stoppable, timed, measured.

A child runs in its own session, so topsApp and whatever it starts (snaphu...) can be signalled
as one group, and nothing is left behind after it exits. It gets PR_SET_PDEATHSIG=SIGKILL, so a
coordinator killed even by `kill -9` takes its topsApp with it (grandchildren still need the
group kill). The signal is set by a tiny exec shim rather than `preexec_fn`, which can deadlock a
threaded parent, and the coordinator runs pairs in threads. The shim execs topsApp in place:
same pid, same exit status. The child is reaped with wait4 for its peak memory.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# argv: python -I -S -c SHIM <parent pid> <command...>
_SHIM = """\
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
if hasattr(libc, "prctl"):
    libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):  # the parent died before prctl took effect
    os.kill(os.getpid(), signal.SIGKILL)
os.execvp(sys.argv[2], sys.argv[2:])
"""
_CHECK_EVERY_S = 0.1  # how soon `stop` and time-outs are noticed (an exit is noticed at once)
_POLL_FALLBACK_S = 0.02  # without pidfds, how often to look for an exit


@dataclass(frozen=True)
class ChildExit:
    """How a child ended. returncode < 0 means killed by that signal (as subprocess reports)."""

    returncode: int
    timed_out: bool
    stopped: bool  # `stop` was set and we terminated it
    wall_s: float
    peak_rss_mb: float | None


def run_child(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    header: str = "",
    timeout_s: float | None = None,
    stop: threading.Event | None = None,
    term_grace_s: float = 10.0,
    on_start: Callable[[int], None] | None = None,
) -> ChildExit:
    """Run argv to completion with stdout+stderr into log_path (truncated, header first).

    When `stop` is set or `timeout_s` passes, the whole process group gets SIGTERM, then SIGKILL
    after `term_grace_s`. Blocks until the child is reaped; never leaves a zombie or, short of a
    grandchild that left the group, an orphan.
    """
    with log_path.open("wb") as log_file:
        log_file.write(header.encode())
        log_file.flush()
        process = subprocess.Popen(  # noqa: S603 - argv is the configured topsApp command
            [sys.executable, "-I", "-S", "-c", _SHIM, str(os.getpid()), *argv],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = time.monotonic()
    timed_out = stopped = False
    exit_watch = _ExitWatch(process.pid)
    try:
        if on_start is not None:
            on_start(process.pid)
        while not exit_watch.exited():
            if stop is not None and stop.is_set():
                stopped = True
            elif timeout_s is not None and time.monotonic() - started > timeout_s:
                timed_out = True
            if stopped or timed_out:
                _terminate(process.pid, exit_watch, term_grace_s)
                break
            exit_watch.wait(_CHECK_EVERY_S)
    finally:
        exit_watch.close()
        # The exited leader is still unreaped, so its pid cannot be reused: the group id is safe.
        _kill_group(process.pid, signal.SIGKILL)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
    return ChildExit(
        returncode=process.returncode,
        timed_out=timed_out,
        stopped=stopped,
        wall_s=time.monotonic() - started,
        peak_rss_mb=usage.ru_maxrss / 1024 if usage.ru_maxrss else None,  # Linux: KiB
    )


class _ExitWatch:
    """Notices a child's exit at once (a pidfd, Linux 5.3+) without reaping it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self.fd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):  # no pidfd here: poll instead
            self.fd = None

    def exited(self, block: bool = False) -> bool:
        # WNOWAIT: look without reaping, so the pid (and the group id) stays ours until wait4.
        options = os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG)
        return os.waitid(os.P_PID, self.pid, options) is not None

    def wait(self, seconds: float) -> None:
        """Return when the child exits or after `seconds`."""
        if self.fd is not None:
            select.select([self.fd], [], [], seconds)
        else:
            time.sleep(min(seconds, _POLL_FALLBACK_S))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _terminate(pid: int, exit_watch: _ExitWatch, grace_s: float) -> None:
    _kill_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while not exit_watch.exited():
        if time.monotonic() >= deadline:
            _kill_group(pid, signal.SIGKILL)
            exit_watch.exited(block=True)
            return
        exit_watch.wait(min(0.05, max(0.0, deadline - time.monotonic())))


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone
