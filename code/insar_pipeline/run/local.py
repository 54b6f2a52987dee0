"""Where pairs run: the `Executor` seam, and `LocalExecutor` (this machine).

The coordinator submits `PairJob`s and polls for what comes back: `PhaseEvent`s while a pair runs,
then exactly one `PairResult` per job. `cancel()` asks every running pair to stop; each then
terminates its topsApp process group (SIGTERM, grace, SIGKILL) and reports "interrupted".
A Dask executor (its own module) implements the same four methods.

Why not `multiprocessing.Pool` or `ProcessPoolExecutor` for the local case: when a Pool worker is
killed (OOM killer, `kill -9`), its task is lost silently and `map`/`get()` waits forever; when
a ProcessPoolExecutor worker dies, the pool is marked broken and *every* pending and future task
fails with BrokenProcessPool. Either way one death breaks the others. Here each running pair is a
coordinator thread that supervises its own topsApp child processes (`runner.run_pair`): a child
killed by any signal is only a return code for that one pair, which the runner fails or retries.
Threads are enough because the work happens in the children; the GIL is not held while waiting.
"""

from __future__ import annotations

import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Protocol

from insar_pipeline.errors import Interrupted
from insar_pipeline.topsapp.job import Message, PairJob, PairResult, PairStatus, PhaseGate


class RunPair(Protocol):
    """What runs one pair (`pair.runner.run_pair`, or a test's stand-in)."""

    def __call__(
        self,
        job: PairJob,
        *,
        on_event: Callable[[Message], None],
        gate: PhaseGate | None,
        stop: threading.Event | None,
    ) -> PairResult: ...


log = logging.getLogger(__name__)


class Executor(ABC):
    """Runs pair jobs; at most `slots` at once."""

    name = "abstract"

    @property
    @abstractmethod
    def slots(self) -> int:
        """How many pairs may run at once."""

    @property
    @abstractmethod
    def active(self) -> int:
        """Pairs submitted whose `PairResult` has not been polled yet."""

    @abstractmethod
    def submit(self, job: PairJob) -> None:
        """Start a pair; call only while `active < slots`."""

    @abstractmethod
    def poll(self, timeout: float) -> list[Message]:
        """Events and results that arrived, waiting up to `timeout` s for the first one."""

    @abstractmethod
    def cancel(self) -> None:
        """Stop every running pair gracefully; each still reports a PairResult."""

    @abstractmethod
    def shutdown(self) -> None:
        """Release resources once nothing is active (or after cancel)."""


class LocalExecutor(Executor):
    """One supervising thread per running pair, on this machine."""

    name = "local"

    def __init__(
        self,
        workers: int,
        gate: PhaseGate | None = None,
        run: RunPair | None = None,
        finish: Callable[[PairJob], object] | None = None,
    ) -> None:
        if run is None:
            from insar_pipeline.pair.runner import run_pair

            run = run_pair
        # After a pair is done, in its worker thread: its quicklooks (the coordinator's main
        # thread and `report` never render them).
        self._finish = finish or _render_quicklooks
        self._workers = workers
        self._gate = gate
        self._run: RunPair = run
        self._messages: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._active = 0

    @property
    def slots(self) -> int:
        return self._workers

    @property
    def active(self) -> int:
        return self._active

    def submit(self, job: PairJob) -> None:
        if self._active >= self._workers:
            raise RuntimeError(f"all {self._workers} slots are busy")
        # Daemon: a second Ctrl-C exits the coordinator at once without joining these threads;
        # their topsApp children die with them (PR_SET_PDEATHSIG in the runner).
        thread = threading.Thread(
            target=self._work, args=(job,), name=f"pair-{job.pair_id}", daemon=True
        )
        self._threads[job.pair_id] = thread
        self._active += 1
        thread.start()

    def _work(self, job: PairJob) -> None:
        try:
            result = self._run(job, on_event=self._messages.put, gate=self._gate, stop=self._stop)
            if result.status == "done":
                self._finish(job)
        except Interrupted as err:
            result = _failed_result(job.pair_id, "interrupted", str(err))
        except Exception as err:  # a bug must fail this pair only, never the run
            log.exception("unexpected error while running the pair", extra={"pair": job.pair_id})
            result = _failed_result(job.pair_id, "failed", f"internal error: {err!r}")
        self._messages.put(result)

    def poll(self, timeout: float) -> list[Message]:
        messages = []
        try:
            messages.append(self._messages.get(timeout=timeout))
            while True:
                messages.append(self._messages.get_nowait())
        except queue.Empty:
            pass
        for message in messages:
            if isinstance(message, PairResult):  # its slot is free again
                self._active -= 1
                thread = self._threads.pop(message.pair_id, None)
                if thread is not None:
                    thread.join(timeout=5)
        return messages

    def cancel(self) -> None:
        self._stop.set()
        stop_gate = getattr(self._gate, "stop", None)
        if stop_gate is not None:
            stop_gate()

    def shutdown(self) -> None:
        for thread in list(self._threads.values()):
            thread.join(timeout=30)


def _render_quicklooks(job: PairJob) -> int:
    from insar_pipeline.report.quicklook import render_finished_pair

    return render_finished_pair(job.run_dir, job.pair_id)


def _failed_result(pair_id: str, status: str, error: str) -> PairResult:

    return PairResult(
        pair_id=pair_id,
        status=PairStatus(status),
        phases_done=(),
        attempts={},
        error=error,
        error_tail=None,
        failed_phase=None,
        bytes_before_clean=None,
        bytes_after_clean=None,
        phase_wall_s={},
    )
