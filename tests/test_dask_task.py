"""dask_task: one execution of a pair at a time in its folder, and the worker-side stop flags."""

from __future__ import annotations

import fcntl
import threading
from types import SimpleNamespace

import pytest

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


@pytest.mark.parametrize("status", ["done", "failed"])
def test_the_dask_worker_renders_the_quicklooks_of_a_done_pair(tmp_path, monkeypatch, status):
    import distributed

    import insar_pipeline.pair.runner as runner
    import insar_pipeline.report.quicklook as quicklook
    from batch_factory import pair_result
    from insar_pipeline.run.dask.task import run_pair_task

    (tmp_path / "topsApp.xml").write_text("<topsApp/>")
    rendered = []
    monkeypatch.setattr(distributed, "get_worker", lambda: SimpleNamespace(log_event=print))
    monkeypatch.setattr(runner, "run_pair", lambda job, **kw: pair_result(job.pair_id, status))
    monkeypatch.setattr(
        quicklook, "render_finished_pair", lambda run_dir, pair: rendered.append((run_dir, pair))
    )
    job = SimpleNamespace(pair_id="20250406_20250418", run_dir=tmp_path)
    outcome = run_pair_task(job, "topic", "run-1")
    assert outcome.result.status == status
    assert rendered == ([(tmp_path, job.pair_id)] if status == "done" else [])
