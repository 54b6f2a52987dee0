"""The Dask task of one pair: what runs on a worker (`EXECUTOR=dask`).

`run_pair_task` runs the one-pair runner and ships each `PhaseEvent` back to the coordinator as a
Dask structured event (`Worker.log_event`), numbered so that the coordinator can tell executions
of the same pair apart (a lost worker's task is rerun by Dask) and notice a missing event.
The coordinator stays the only ledger writer: a worker writes nothing but the pair's own folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from insar_pipeline.topsapp.job import PairStatus

if TYPE_CHECKING:
    from insar_pipeline.topsapp.job import PairJob, PairResult, PhaseEvent

log = logging.getLogger(__name__)

LOCK_POLL_S = 1.0

# Stop flags of the runs this worker process serves, by run id: the coordinator sets one with
# `client.run(set_stop_flag, run_id)` and every pair of that run on this worker stops.
_stop_flags: dict[str, threading.Event] = {}
_stop_flags_lock = threading.Lock()


@dataclass(frozen=True)
class TaskOutcome:
    """What a pair task returns: the runner's result and how many events it sent."""

    token: str  # this execution of the task (a rerun after a lost worker gets a new one)
    events: int
    result: PairResult
    host: str


def stop_flag(run_id: str) -> threading.Event:
    with _stop_flags_lock:
        return _stop_flags.setdefault(run_id, threading.Event())


def set_stop_flag(run_id: str) -> None:
    """Runs on every worker when the coordinator stops: running pairs terminate their topsApp."""
    stop_flag(run_id).set()


def event_message(pair_id: str, token: str, seq: int, event: PhaseEvent) -> dict[str, Any]:
    """The msgpack-friendly form of a PhaseEvent sent through the Dask scheduler."""
    return {"pair": pair_id, "token": token, "seq": seq, "event": asdict(event)}


def run_pair_task(job: PairJob, topic: str, run_id: str) -> TaskOutcome:
    """Run one pair on this Dask worker; never raises for a pair failure."""
    from distributed import get_worker

    from insar_pipeline.pair.runner import run_pair
    from insar_pipeline.topsapp.xml import XML_NAME

    worker = get_worker()
    token, host, sent = secrets.token_hex(8), socket.gethostname(), 0
    stop = stop_flag(run_id)

    def send(event: PhaseEvent) -> None:
        nonlocal sent
        worker.log_event(topic, event_message(job.pair_id, token, sent, event))
        sent += 1

    if not (job.run_dir / XML_NAME).is_file():
        # The coordinator wrote it: a worker that cannot see it is not on the shared filesystem.
        return TaskOutcome(token, 0, _unseen_run_dir(job, host, XML_NAME), host)
    with exclusive(job.run_dir / XML_NAME, stop) as owned:
        if not owned:
            return TaskOutcome(
                token, 0, not_run_result(job.pair_id, PairStatus.INTERRUPTED, "stopped"), host
            )
        result = run_pair(job, on_event=send, stop=stop)
        if result.status == "done":  # rendered here, on the worker, once per finished pair
            from insar_pipeline.report.quicklook import render_finished_pair

            render_finished_pair(job.run_dir, job.pair_id)
    return TaskOutcome(token, sent, result, host)


@contextlib.contextmanager
def exclusive(xml: Path, stop: threading.Event) -> Iterator[bool]:
    """Hold the pair's folder alone: yields False if `stop` was set first.

    Dask may start a second execution of a task while the first one still runs on a worker the
    scheduler gave up on (a network partition), or a task of an earlier, killed coordinator may
    still run on a remote cluster; two topsApps in one folder would corrupt it. The lock is on the
    folder's topsApp.xml (opened for append, never written: no extra file in the folder) and is
    released by the kernel when a killed worker's file descriptors close.
    """
    with xml.open("ab") as handle:
        waiting = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not waiting:
                    log.warning("an earlier execution of this pair still runs; waiting for it",
                                extra={"pair": xml.parent.name})  # fmt: skip
                    waiting = True
                if stop.wait(LOCK_POLL_S):
                    yield False
                    return
            except OSError as err:  # e.g. Lustre mounted without flock support
                log.debug("cannot lock %s (%s); running without the lock", xml, err)
                break
            else:
                break
        yield not stop.is_set()


def _unseen_run_dir(job: PairJob, host: str, xml_name: str) -> PairResult:
    return not_run_result(
        job.pair_id,
        PairStatus.FAILED,
        f"Dask worker on {host} cannot see {job.run_dir / xml_name}: every worker must "
        "mount the data folder at the same path as the coordinator",
    )


def not_run_result(
    pair_id: str, status: PairStatus, error: str, phases_done: tuple[str, ...] = ()
) -> PairResult:
    """A PairResult for a pair whose runner did not run (or did not return)."""
    from insar_pipeline.topsapp.job import PairResult

    return PairResult(
        pair_id=pair_id, status=status, phases_done=phases_done, attempts={}, error=error,
        error_tail=None, failed_phase=None, bytes_before_clean=None, bytes_after_clean=None,
        phase_wall_s={},
    )  # fmt: skip
