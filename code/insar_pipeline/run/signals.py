"""Ctrl-C and SIGTERM for the coordinator (SPEC.md sections 3 and 6).

Before pairs are dispatched (validation, provisioning) the first signal interrupts at once, like
a plain Ctrl-C. Once pairs run, the first signal only *requests* a stop: the coordinator stops
dispatching, lets the runners terminate their topsApp process groups gracefully, records the
state and exits 130. A second signal exits at once (`os._exit`): the ledger is WAL-safe, the run
lock dies with the process, and the topsApp process groups are killed (the runner's children
would die with their threads anyway, but not the grandchildren such as snaphu).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType, TracebackType

from insar_pipeline.errors import EXIT_INTERRUPTED, Interrupted

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """`with StopRequest() as stop:` ... `stop.graceful = True` once pairs run; `stop.requested`."""

    def __init__(self) -> None:
        self.requested: str | None = None  # the name of the first signal received
        self.graceful = False
        # pair id -> pid of its running topsApp child, which leads its own process group.
        self.process_groups: dict[str, int] = {}
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        # Handlers can only be installed from the main thread; elsewhere (embedding, tests that
        # call run_pipeline in a thread) the caller keeps its own signal handling.
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            # Nothing that could block (no logging locks): say it and leave.
            os.write(2, f"{name} again: exiting now; rerun the same command to resume\n".encode())
            for pgid in list(self.process_groups.values()):
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except OSError:  # already gone
                    pass
            os._exit(EXIT_INTERRUPTED)
        self.requested = name
        if not self.graceful:
            raise Interrupted(f"{name} received before any pair started; nothing to resume")
