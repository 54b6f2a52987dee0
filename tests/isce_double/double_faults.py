"""Fault injection and the step log of the topsApp double, from environment variables.

See README.md beside this file for the variables. Counters of "fail N times" and "kill N times"
live in the pair folder (`.double_faults/`), so they survive the reruns they are meant to test.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

FAULTS_DIR = ".double_faults"
FAIL_KINDS = ("io", "memory", "oom", "badalloc", "config", "nospace", "crash")


def _steps_of(value: str) -> set[str]:
    return {item.strip() for item in value.split(",") if item.strip()}


class Faults:
    """What the environment asks this topsApp process to do wrong, and its step log."""

    def __init__(self, environ: Mapping[str, str], cwd: Path) -> None:
        self.env = environ
        self.cwd = cwd
        self.pair = cwd.name
        self.targeted = self._matches("ISCE_DOUBLE_FAIL_PAIRS")
        self.killed_this_step = False
        self._ballast: bytearray | None = None

    def _matches(self, variable: str) -> bool:
        pairs = _steps_of(self.env.get(variable, ""))
        return not pairs or self.pair in pairs

    # -- before a step -------------------------------------------------------------------
    def before_step(self, step: str) -> None:
        self.killed_this_step = False
        if self.targeted and step == self.env.get("ISCE_DOUBLE_GRANDCHILD"):
            self._spawn_grandchild()
        megabytes = float(self.env.get("ISCE_DOUBLE_RSS_MB", "0") or 0)
        if megabytes:
            self._ballast = bytearray(int(megabytes * 1024 * 1024))
            self._ballast[::4096] = b"\1" * len(self._ballast[::4096])  # touch every page
        delay = self.sleep_for(step)
        if delay:
            time.sleep(delay)
        if self.targeted and step in _steps_of(self.env.get("ISCE_DOUBLE_FAIL_STEP", "")):
            times = int(self.env.get("ISCE_DOUBLE_FAIL_TIMES", "1"))
            if self._count(f"fail_{step}") <= times:
                self.fail(self.env.get("ISCE_DOUBLE_FAIL_KIND", "io"), step)

    def sleep_for(self, step: str) -> float:
        value = self.env.get("ISCE_DOUBLE_SLEEP", "").strip()
        if not value or not self._matches("ISCE_DOUBLE_SLEEP_PAIRS"):
            return 0.0
        if "=" not in value:
            return float(value)
        per_step = dict(item.split("=", 1) for item in value.split(",") if "=" in item)
        return float(per_step.get(step, 0))

    @property
    def no_overlap(self) -> bool:
        return self.targeted and self.env.get("ISCE_DOUBLE_NO_OVERLAP", "") not in ("", "0")

    @property
    def overlap_coherence(self) -> float:
        """The coherence of every burst-overlap pixel (ISCE_DOUBLE_OVERLAP_COHERENCE, else high)."""
        value = self.env.get("ISCE_DOUBLE_OVERLAP_COHERENCE", "").strip()
        return float(value) if value and self.targeted else 0.95

    # -- during a step -------------------------------------------------------------------
    def wrote_file(self, step: str) -> None:
        """Called after each output file: the kill fault strikes once part of a step is done."""
        if self.targeted and step in _steps_of(self.env.get("ISCE_DOUBLE_KILL_STEP", "")):
            if not self.killed_this_step and self._due(f"kill_{step}", "ISCE_DOUBLE_KILL_TIMES"):
                self.killed_this_step = True
                self.log(step, time.time(), time.time(), "killed")
                os.kill(os.getpid(), signal.SIGKILL)

    def _due(self, counter: str, times_variable: str) -> bool:
        return self._count(counter) <= int(self.env.get(times_variable, "1"))

    def _count(self, name: str) -> int:
        """Increment and return a counter file under the pair folder."""
        folder = self.cwd / FAULTS_DIR
        folder.mkdir(exist_ok=True)
        path = folder / name
        count = int(path.read_text()) + 1 if path.exists() else 1
        path.write_text(str(count))
        return count

    def fail(self, kind: str, step: str) -> None:
        """Fail like topsApp does for each kind of trouble."""
        where = f"{step} (injected by ISCE_DOUBLE_FAIL_STEP)"
        if kind == "io":
            raise OSError(errno.EIO, os.strerror(errno.EIO), where)
        if kind == "nospace":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), where)
        if kind == "memory":
            raise MemoryError
        if kind == "oom":  # the kernel's OOM killer: no message, SIGKILL
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "badalloc":
            print(
                "terminate called after throwing an instance of 'std::bad_alloc'\n"
                "  what():  std::bad_alloc",
                flush=True,
            )
            os.abort()
        if kind == "config":
            print(
                'Error. The attribute corresponding to the key "rangelookz" is not present in '
                'the object "TopsInSAR".',
                flush=True,
            )
            sys.exit(1)
        if kind == "crash":
            raise IndexError("too many indices for array")
        raise ValueError(f"ISCE_DOUBLE_FAIL_KIND={kind!r}: use one of {', '.join(FAIL_KINDS)}")

    def _spawn_grandchild(self) -> None:
        # A long-lived helper like snaphu: it must die with topsApp's process group.
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        folder = self.cwd / FAULTS_DIR
        folder.mkdir(exist_ok=True)
        (folder / "grandchild.pid").write_text(str(child.pid))

    # -- the step log --------------------------------------------------------------------
    def log(self, step: str, start: float, end: float, outcome: str) -> None:
        """One line per step executed: pair, step, pid, start, end, outcome (ok|failed|killed)."""
        path = self.env.get("ISCE_DOUBLE_LOG")
        if not path:
            return
        line = f"{self.pair}\t{step}\t{os.getpid()}\t{start:.6f}\t{end:.6f}\t{outcome}\n"
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line.encode())  # one short O_APPEND write: never interleaved
        finally:
            os.close(descriptor)


def read_step_log(path: Path) -> list[dict[str, str]]:
    """Parse an ISCE_DOUBLE_LOG file (for tests)."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            pair, step, pid, start, end, outcome = line.split("\t")
            rows.append(
                {
                    "pair": pair,
                    "step": step,
                    "pid": pid,
                    "start": start,
                    "end": end,
                    "outcome": outcome,
                }
            )
    return rows


def ignore_sigterm_if_asked(environ: Mapping[str, str]) -> None:
    if environ.get("ISCE_DOUBLE_IGNORE_TERM", "") not in ("", "0"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
