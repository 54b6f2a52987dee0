"""dask_events.Executions: worker messages -> ledger events, across a rerun after a lost worker."""

from __future__ import annotations

from dataclasses import asdict

from insar_pipeline.run.dask.events import LOST_WORKER, Executions
from insar_pipeline.run.dask.task import TaskOutcome, event_message, not_run_result
from insar_pipeline.topsapp.job import PairResult, PhaseEvent

PAIR = "20230203_20230215"


def start(phase: str, attempt: int = 1, time: float = 100.0) -> PhaseEvent:
    return PhaseEvent(pair_id=PAIR, phase=phase, attempt=attempt, kind="start", time=time)


def end(phase: str, attempt: int = 1, ok: bool = True, time: float = 110.0) -> PhaseEvent:
    return PhaseEvent(pair_id=PAIR, phase=phase, attempt=attempt, kind="end", time=time,
                      returncode=0 if ok else 1, ok=ok, transient=None if ok else True,
                      error=None if ok else "boom", wall_s=10.0)  # fmt: skip


def messages(token: str, events: list[PhaseEvent]) -> list[dict]:
    return [event_message(PAIR, token, seq, event) for seq, event in enumerate(events)]


def result(phases_done: tuple[str, ...], attempts: dict[str, int]) -> PairResult:
    return PairResult(
        pair_id=PAIR, status="done", phases_done=phases_done, attempts=attempts, error=None,
        error_tail=None, failed_phase=None, bytes_before_clean=10, bytes_after_clean=1,
        phase_wall_s={phase: 5.0 for phase in attempts},  # this call's phases
    )  # fmt: skip


def ingest_all(executions: Executions, batch: list[dict], now: float = 200.0) -> list[PhaseEvent]:
    return [event for message in batch for event in executions.ingest(message, now)]


def test_messages_survive_the_trip_through_msgpack():
    import msgpack

    event = end("geometry", attempt=2, ok=False)
    message = msgpack.unpackb(msgpack.packb(event_message(PAIR, "t1", 3, event)))
    assert PhaseEvent(**message["event"]) == event


def test_single_execution_passes_events_through_and_drops_duplicates():
    executions = Executions()
    executions.begin(PAIR)
    batch = messages("t1", [start("preprocess"), end("preprocess")])
    assert ingest_all(executions, batch + batch) == [start("preprocess"), end("preprocess")]
    assert executions.received("t1", PAIR) == 2
    outcome = TaskOutcome("t1", 2, result(("preprocess",), {"preprocess": 1}), "host")
    events, final = executions.finish(PAIR, outcome, 300.0)
    assert events == [] and final == outcome.result
    assert ingest_all(executions, messages("t1", [start("geometry")])) == []  # pair closed


def test_a_rerun_after_a_lost_worker_closes_the_open_phase_and_sums_attempts():
    executions = Executions()
    executions.begin(PAIR)
    first = messages("t1", [start("preprocess"), end("preprocess"), start("geometry", time=150.0)])
    assert len(ingest_all(executions, first)) == 3
    # The worker dies during geometry; Dask reruns the task; the runner resumes at geometry
    # and numbers its attempts after the log files already there (geometry.1.log).
    rerun = messages("t2", [start("geometry", 2), end("geometry", 2, ok=False),
                            start("geometry", 3), end("geometry", 3)])  # fmt: skip
    events = ingest_all(executions, rerun, now=170.0)
    lost = events[0]
    assert (lost.kind, lost.phase, lost.attempt, lost.ok, lost.transient) == (
        "end", "geometry", 1, False, True,
    )  # fmt: skip
    assert lost.error == LOST_WORKER and lost.wall_s == 20.0
    assert [(e.kind, e.attempt, e.ok) for e in events[1:]] == [
        ("start", 2, None), ("end", 2, False), ("start", 3, None), ("end", 3, True),
    ]  # fmt: skip
    # Late messages of the dead execution change nothing.
    assert ingest_all(executions, [event_message(PAIR, "t1", 7, end("geometry"))]) == []
    outcome = TaskOutcome("t2", 4, result(("preprocess", "geometry"), {"geometry": 2}), "h2")
    _, final = executions.finish(PAIR, outcome, 300.0)
    assert final.attempts == {"preprocess": 1, "geometry": 3}
    assert final.phase_wall_s == {"preprocess": 10.0, "geometry": 5.0}


def test_a_rerun_that_sent_nothing_still_closes_the_lost_phase():
    executions = Executions()
    executions.begin(PAIR)
    ingest_all(executions, messages("t1", [start("unwrap")]))
    stopped = not_run_result(PAIR, "interrupted", "stopped")
    events, final = executions.finish(PAIR, TaskOutcome("t2", 0, stopped, "host"), 300.0)
    assert [(e.kind, e.phase, e.ok) for e in events] == [("end", "unwrap", False)]
    assert final.status == "interrupted" and final.attempts == {"unwrap": 1}


def test_abandon_reports_what_is_known():
    executions = Executions()
    executions.begin(PAIR)
    batch = messages("t1", [start("preprocess"), end("preprocess"), start("geometry")])
    ingest_all(executions, batch)
    events, attempts, open_phase = executions.abandon(PAIR, "worker died 4 times", 300.0)
    assert [(e.kind, e.phase, e.error) for e in events] == [
        ("end", "geometry", "worker died 4 times")
    ]
    assert attempts == {"preprocess": 1, "geometry": 1} and open_phase == "geometry"
    assert not executions.tracks(PAIR)


def test_events_are_plain_data():
    message = event_message(PAIR, "t", 0, start("geocode"))
    assert message["event"] == asdict(start("geocode"))
    assert set(message) == {"pair", "token", "seq", "event"}
