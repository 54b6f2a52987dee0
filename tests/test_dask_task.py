"""dask_task: one execution of a pair at a time in its folder, and the worker-side stop flags."""

from __future__ import annotations

import fcntl
import threading

from insar_pipeline.run.dask.task import exclusive, set_stop_flag, stop_flag


def test_a_second_execution_waits_for_the_first_and_can_be_stopped(tmp_path):
    xml = tmp_path / "topsApp.xml"
    xml.write_bytes(b"<topsApp/>")
    outcomes: list[bool] = []
    stop = threading.Event()

    def second_execution() -> None:
        with exclusive(xml, stop) as owned:
            outcomes.append(owned)

    with xml.open("ab") as first:  # an earlier execution still holds the folder
        fcntl.flock(first, fcntl.LOCK_EX)
        waiter = threading.Thread(target=second_execution)
        waiter.start()
        waiter.join(timeout=0.3)
        assert waiter.is_alive() and outcomes == []  # waiting, not running topsApp beside it
        stop.set()
        waiter.join(timeout=5)
    assert outcomes == [False]
    assert xml.read_bytes() == b"<topsApp/>"  # the lock never writes the file


def test_the_folder_is_taken_once_the_first_execution_ends(tmp_path):
    xml = tmp_path / "topsApp.xml"
    xml.write_bytes(b"<topsApp/>")
    outcomes: list[bool] = []
    first = xml.open("ab")
    fcntl.flock(first, fcntl.LOCK_EX)

    def second_execution() -> None:
        with exclusive(xml, threading.Event()) as owned:
            outcomes.append(owned)

    waiter = threading.Thread(target=second_execution)
    waiter.start()
    first.close()  # the first execution's worker died: the kernel drops its lock
    waiter.join(timeout=5)
    assert outcomes == [True]


def test_stop_flags_are_per_run():
    set_stop_flag("run-a")
    assert stop_flag("run-a").is_set() and not stop_flag("run-b").is_set()
