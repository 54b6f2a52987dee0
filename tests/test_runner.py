"""runner: one pair end to end against the topsApp double, with real child processes and signals."""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from insar_pipeline.errors import InputError, Interrupted
from insar_pipeline.pair.prepare import prepare_pair
from insar_pipeline.pair.runner import run_pair
from insar_pipeline.topsapp.job import PairJob, PhaseEvent
from insar_pipeline.topsapp.steps import STEPS, Phase, checkpoint_paths, finished_steps, phase_table
from pair_factory import double_env, make_pair_setup

PHASES = ("preprocess", "geometry", "coregistration", "interferogram", "unwrap", "geocode")
PIPELINE_STEPS = STEPS[: STEPS.index("geocode") + 1]


@pytest.fixture
def setup(tmp_path):
    return make_pair_setup(tmp_path)


def job_with(setup, **changes) -> PairJob:
    faults = {key: changes.pop(key) for key in list(changes) if key.startswith("double_")}
    env = double_env(**{key.removeprefix("double_"): value for key, value in faults.items()})
    return setup.prepare(env=env, **changes)


def run(job: PairJob, **kwargs) -> tuple:
    events: list[PhaseEvent] = []
    return run_pair(job, events.append, **kwargs), events


def completed(setup) -> Counter:
    return Counter(row["step"] for row in setup.step_log_rows() if row["outcome"] == "ok")


def running(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for its reaper does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def gone(pid: int, within_s: float = 5.0) -> bool:
    """Whether a signalled process dies soon (a busy machine delivers kills a little late)."""
    deadline = time.monotonic() + within_s
    while running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- the happy path --------------------------------------------------------------------------
def test_one_pair_runs_end_to_end_from_a_clean_folder(setup):
    job = setup.prepare(omp_threads=3)
    result, events = run(job)
    assert result.status == "done", result.error
    assert result.phases_done == PHASES
    assert result.attempts == dict.fromkeys(PHASES, 1)
    assert set(result.phase_wall_s) == set(PHASES)
    assert result.error is None and result.failed_phase is None
    assert completed(setup) == Counter(PIPELINE_STEPS)  # each step exactly once
    assert [(e.phase, e.kind) for e in events] == [(p, k) for p in PHASES for k in ("start", "end")]
    ends = [e for e in events if e.kind == "end"]
    assert all(e.ok and e.returncode == 0 and e.wall_s > 0 and e.peak_rss_mb > 5 for e in ends)
    starts = [e for e in events if e.kind == "start"]
    assert all(e.pid and e.attempt == 1 for e in starts)
    log = job.run_dir / "logs" / "geometry.1.log"
    assert Path(ends[1].log_path) == log
    text = log.read_text()
    assert "topsApp.xml --start=topo --end=topo" in text and "OMP_NUM_THREADS=3" in text
    # standard cleaning ran: products kept, work products gone, bytes reported
    assert (job.run_dir / "merged" / "filt_topophase.unw.geo").exists()
    assert not (job.run_dir / "geom_reference").exists()
    assert result.bytes_after_clean < result.bytes_before_clean
    # a rerun of the finished (and cleaned) pair starts no topsApp at all
    again, events = run(setup.prepare())
    assert again.status == "done" and events == [] and again.attempts == {}
    assert again.phases_done == PHASES
    assert completed(setup) == Counter(PIPELINE_STEPS)


def test_with_the_ionosphere_on_ion_runs_in_its_own_phase(setup):
    job = setup.with_settings(ionosphere=True, unwrap=False).prepare(clean_level="nuclear")
    result, _ = run(job)
    assert result.status == "done", result.error
    assert result.phases_done == (*PHASES[:3], "ionosphere", *PHASES[3:])
    merged = {p.name for p in (job.run_dir / "merged").iterdir()}
    assert "topophase.ion.geo" in merged and "filt_topophase.flat.geo" in merged
    assert "filt_topophase.unw.geo" not in merged  # UNWRAP=false: unwrap was a no-op
    assert all(".geo" in name or "dem.crop" in name for name in merged)  # nuclear cleaning


def test_a_job_is_picklable_for_dask(setup):
    job = setup.prepare()
    assert pickle.loads(pickle.dumps(job)) == job


# -- retries ---------------------------------------------------------------------------------
def test_a_transient_fault_twice_then_success_is_done_with_3_attempts(setup):
    job = job_with(
        setup, double_fail_step="fineoffsets", double_fail_times=2, double_fail_kind="io"
    )
    result, events = run(job)
    assert result.status == "done", result.error
    assert result.attempts["coregistration"] == 3
    ends = [e for e in events if e.kind == "end" and e.phase == "coregistration"]
    assert [(e.attempt, e.ok, e.transient) for e in ends] == [
        (1, False, True),
        (2, False, True),
        (3, True, None),
    ]
    assert "I/O error" in ends[0].error and "logs/coregistration.1.log" in ends[0].error
    assert {p.name for p in (job.run_dir / "logs").glob("coregistration.*.log")} == {
        "coregistration.1.log",
        "coregistration.2.log",
        "coregistration.3.log",
    }
    # retries resumed after the last finished step: nothing before fineoffsets ran twice
    assert completed(setup) == Counter(PIPELINE_STEPS)
    assert "--start=fineoffsets" in (job.run_dir / "logs" / "coregistration.2.log").read_text()


@pytest.mark.parametrize(
    "kind, meaning",
    [
        ("config", "topsApp.xml has a property topsApp does not know"),
        ("nospace", "the disk is full"),
        ("crash", "topsApp failed (exit 1): IndexError: too many indices for array"),
    ],
)
def test_a_fatal_fault_fails_the_pair_at_once_with_the_reason_in_one_line(setup, kind, meaning):
    job = job_with(setup, double_fail_step="topo", double_fail_kind=kind)
    result, events = run(job)
    assert result.status == "failed" and result.failed_phase == "geometry"
    assert result.attempts["geometry"] == 1
    assert result.error.startswith(f"geometry: {meaning}") and result.error.endswith("(1 attempt)")
    assert "\n" not in result.error and "see logs/geometry.1.log" in result.error
    assert result.error_tail and len(result.error_tail.splitlines()) <= 20
    assert result.phases_done == ("preprocess",)
    assert [e.transient for e in events if e.kind == "end" and not e.ok] == [False]
    assert "subsetoverlaps" not in completed(setup)


def test_transient_faults_beyond_max_retries_fail_with_the_signal(setup):
    job = job_with(
        setup, max_retries=2, double_fail_step="topo", double_fail_times=5, double_fail_kind="oom"
    )
    result, events = run(job)
    assert result.status == "failed" and result.attempts["geometry"] == 3
    assert result.error.startswith("geometry: topsApp killed by SIGKILL")
    assert result.error.endswith("(3 attempts)")
    assert [e.returncode for e in events if e.kind == "end" and e.phase == "geometry"] == [-9] * 3


TWO_PHASES = (Phase("front", "startup", "topo"), Phase("back", "subsetoverlaps", "geocode"))


@pytest.mark.parametrize("kind", ["memory", "badalloc"])
def test_memory_errors_are_retried_in_any_phase_table(setup, kind):
    job = job_with(setup, phases=TWO_PHASES, double_fail_step="filter", double_fail_kind=kind)
    result, _ = run(job)
    assert result.status == "done" and result.attempts == {"front": 1, "back": 2}
    assert result.phases_done == ("front", "back")
    assert completed(setup) == Counter(PIPELINE_STEPS)


# -- kills and resume ------------------------------------------------------------------------
@pytest.mark.slow
def test_a_kill_at_every_step_is_resumed_without_redoing_finished_steps(setup):
    job = job_with(setup, max_retries=20, double_kill_step=",".join(PIPELINE_STEPS))
    result, _ = run(job)
    assert result.status == "done", result.error
    rows = setup.step_log_rows()
    assert Counter(r["step"] for r in rows if r["outcome"] == "killed") == Counter(PIPELINE_STEPS)
    assert completed(setup) == Counter(PIPELINE_STEPS)  # every step finished exactly once
    steps_per_phase = {p.name: len(p.steps()) for p in phase_table(False)}
    assert result.attempts == {name: count + 1 for name, count in steps_per_phase.items()}


@pytest.mark.parametrize("step", ["computeBaselines", "fineoffsets", "unwrap2stage", "geocode"])
def test_after_a_kill_the_rerun_starts_at_the_next_unfinished_step(setup, step):
    job = job_with(setup, max_retries=0, double_kill_step=step)
    first, _ = run(job)
    phase = next(p for p in phase_table(False) if step in p.steps())
    assert first.status == "failed" and first.failed_phase == phase.name
    assert "killed by SIGKILL" in first.error
    assert finished_steps(job.run_dir) == PIPELINE_STEPS[: PIPELINE_STEPS.index(step)]
    second, events = run(setup.prepare())
    assert second.status == "done", second.error
    assert completed(setup) == Counter(PIPELINE_STEPS)  # nothing finished ran again
    resumed = next(e for e in events if e.kind == "start")
    assert (resumed.phase, resumed.attempt) == (phase.name, 2)  # log numbers continue
    assert f"--start={step} " in Path(resumed.log_path).read_text()


# -- silent failures -------------------------------------------------------------------------
def test_no_covering_orbit_is_a_clear_fatal_failure_at_preprocess(tmp_path):
    setup = make_pair_setup(tmp_path, uncovered_scenes=[1])
    job = setup.prepare()
    result, _ = run(job)
    assert result.status == "failed" and result.failed_phase == "preprocess"
    assert result.attempts == {"preprocess": 1}
    assert (
        "preprocess exited 0 but produced no secondary/IW1.xml, secondary/IW2.xml, " in result.error
    )
    assert "No suitable orbit file found" in result.error
    assert finished_steps(job.run_dir) == ()  # the checkpoints of the failed phase are gone
    assert "topo" not in {row["step"] for row in setup.step_log_rows()}


def test_no_burst_overlap_is_a_clear_fatal_failure(setup):
    result, _ = run(job_with(setup, double_no_overlap=1))
    assert result.status == "failed" and result.failed_phase == "preprocess"
    assert "no burst of the secondary overlaps the reference" in result.error


# -- time-outs, stopping, the gate -----------------------------------------------------------
def stop_when_topo_runs(job: PairJob, stop: threading.Event) -> Path:
    """Set `stop` once the double is inside topo (it then writes the grandchild's pid)."""
    marker = job.run_dir / ".double_faults" / "grandchild.pid"

    def watch() -> None:
        while not marker.exists():
            stop.wait(0.02)
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    return marker


def test_a_phase_over_its_time_limit_is_killed_and_retried(setup):
    job = job_with(setup, phase_timeout_s=1.0, max_retries=1, double_sleep="topo=30")
    result, events = run(job)
    assert result.status == "failed" and result.attempts["geometry"] == 2
    assert "timed out" in result.error and "PHASE_TIMEOUT_MIN" in result.error
    assert [e.transient for e in events if e.kind == "end" and not e.ok] == [True, True]
    assert result.phase_wall_s["geometry"] < 10


def test_stop_interrupts_the_running_phase_and_a_rerun_resumes(setup):
    stop = threading.Event()
    job = job_with(setup, double_sleep="topo=30", double_grandchild="topo")
    marker = stop_when_topo_runs(job, stop)
    result, events = run(job, stop=stop)
    assert result.status == "interrupted" and result.failed_phase == "geometry"
    assert result.error == "geometry: interrupted (1 attempt)"
    assert result.phases_done == ("preprocess",)
    (pid,) = [e.pid for e in events if e.kind == "start" and e.phase == "geometry"]
    assert gone(pid)
    assert gone(int(marker.read_text()))  # the whole process group went
    again, _ = run(setup.prepare())
    assert again.status == "done"
    assert completed(setup)["preprocess"] == 1 and completed(setup)["topo"] == 1


def test_a_child_ignoring_sigterm_gets_sigkill_after_the_grace(setup):
    stop = threading.Event()
    job = job_with(
        setup,
        term_grace_s=0.3,
        double_sleep="topo=30",
        double_ignore_term=1,
        double_grandchild="topo",
    )
    stop_when_topo_runs(job, stop)
    result, events = run(job, stop=stop)
    assert result.status == "interrupted"
    assert [e.returncode for e in events if e.kind == "end"][-1] == -9


class RecordingGate:
    def __init__(self, refuse_at: str | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.refuse_at = refuse_at

    def acquire(self, pair_id, phase) -> None:
        if phase.name == self.refuse_at:
            raise Interrupted("stopping")
        self.calls.append(("acquire", phase.name))

    def release(self, pair_id, phase) -> None:
        self.calls.append(("release", phase.name))


def test_the_gate_is_held_around_each_attempt_and_can_stop_the_pair(setup):
    gate = RecordingGate(refuse_at="coregistration")
    job = job_with(setup, double_fail_step="topo", double_fail_kind="io")
    result, events = run(job, gate=gate)
    assert (
        gate.calls
        == [("acquire", "preprocess"), ("release", "preprocess")]
        + [("acquire", "geometry"), ("release", "geometry")] * 2
    )  # the retry takes it again
    assert result.status == "interrupted" and result.failed_phase == "coregistration"
    assert "coregistration" not in {e.phase for e in events}


def test_peak_memory_of_the_child_is_reported(setup):
    _, events = run(job_with(setup, double_rss_mb=80), gate=RecordingGate(refuse_at="geometry"))
    (end,) = [e for e in events if e.kind == "end"]
    assert end.peak_rss_mb >= 80


def test_an_invalid_phase_table_fails_before_any_topsapp(setup):
    job = setup.prepare(phases=(Phase("a", "startup", "topo"), Phase("b", "fineresamp", "geocode")))
    result, events = run(job)
    assert result.status == "failed" and "must start at subsetoverlaps" in result.error
    assert events == []


def test_a_missing_topsapp_command_fails_clearly(setup):
    result, events = run(setup.prepare(topsapp="no-such-topsApp.py"))
    assert result.status == "failed" and "'no-such-topsApp.py' not found" in result.error
    assert events == []


# -- prepare_pair ----------------------------------------------------------------------------
def test_prepare_pair_returns_the_job_from_the_settings(setup):
    settings = setup.settings.with_changes(max_retries=4, phase_timeout_min=2, clean="nuclear")
    job = prepare_pair(settings, setup.pairs[0], setup.orbit_files, setup.dem, 2)
    assert job.run_dir.is_absolute() and (job.run_dir / "logs").is_dir()
    assert (job.pair_id, job.swaths, job.omp_threads) == (setup.pairs[0].id, (1, 2, 3), 2)
    assert (job.max_retries, job.phase_timeout_s, job.clean_level) == (4, 120, "nuclear")
    assert job.phases == phase_table(False) and job.topsapp == str(setup.topsapp)


def finish_steps_until(job: PairJob, last: str) -> None:
    """Checkpoints as topsApp leaves them after `last` (only checkpoints decide what finished)."""
    for step in STEPS[: STEPS.index(last) + 1]:
        for path in checkpoint_paths(job.run_dir, step):
            path.parent.mkdir(exist_ok=True)
            path.write_text(step)


def test_changed_settings_that_spoil_finished_steps_are_refused(setup, caplog):
    job = setup.prepare()
    finish_steps_until(job, "ion")
    xml = job.run_dir / "topsApp.xml"
    pair = setup.pairs[0]
    # looks are first read by burstifg, which has not finished: the new value simply applies
    with caplog.at_level(logging.INFO):
        prepare_pair(
            setup.settings.with_changes(range_looks=10), pair, setup.orbit_files, setup.dem, 1
        )
    assert '"range looks">10<' in xml.read_text() and "RANGE_LOOKS" in caplog.text
    changed = setup.settings.with_changes(
        range_looks=10, region_of_interest="51.6,52.4,-129,-127.5"
    )
    with pytest.raises(InputError) as raised:  # the region of interest shaped finished bursts
        prepare_pair(changed, pair, setup.orbit_files, setup.dem, 1)
    message = str(raised.value)
    assert pair.id in message and "REGION_OF_INTEREST" in message
    assert f"delete {setup.settings.run_dir(pair.id)} (or move it)" in message
    assert "RANGE_LOOKS" not in message  # only what spoils finished work is named
    assert '"range looks">10<' in xml.read_text()  # nothing was rewritten


def test_changing_looks_after_the_pair_finished_is_refused(setup):
    finish_steps_until(setup.prepare(), "geocode")
    with pytest.raises(InputError, match="RANGE_LOOKS .*-> 10"):
        prepare_pair(
            setup.settings.with_changes(range_looks=10),
            setup.pairs[0],
            setup.orbit_files,
            setup.dem,
            1,
        )


def test_a_new_orbit_choice_after_preprocess_keeps_the_old_files(setup, caplog):
    job = setup.prepare()
    pair = setup.pairs[0]
    newer = setup.orbit_files[pair.reference.name].with_name("S1A_OPER_AUX_POEORB_OPOD_newer.EOF")
    newer.write_text("x")
    choice = {**setup.orbit_files, pair.reference.name: newer}
    finish_steps_until(job, "preprocess")
    with caplog.at_level(logging.WARNING):
        prepare_pair(setup.settings, pair, choice, setup.dem, 1)
    kept = sorted(p.name for p in (job.run_dir / "orbits").iterdir())
    assert newer.name not in kept and len(kept) == 2
    assert "keeps orbit files" in caplog.text
    for path in checkpoint_paths(job.run_dir, "preprocess"):  # before preprocess finished,
        path.unlink()  # the new choice simply applies
    prepare_pair(setup.settings, pair, choice, setup.dem, 1)
    assert newer.name in {p.name for p in (job.run_dir / "orbits").iterdir()}


def test_missing_inputs_are_input_errors(setup):
    pair = setup.pairs[0]
    with pytest.raises(InputError, match="DEM sidecar is missing"):
        prepare_pair(setup.settings, pair, setup.orbit_files, setup.dem.with_name("none.dem"), 1)
    with pytest.raises(InputError, match="orbit file of .* is missing"):
        prepare_pair(setup.settings, pair, {}, setup.dem, 1)


def test_an_unchanged_rerun_rewrites_nothing(setup):
    job = setup.prepare()
    xml = job.run_dir / "topsApp.xml"
    os.utime(xml, ns=(5, 5))
    again = setup.prepare()
    assert dataclasses.replace(again, env=()) == dataclasses.replace(job, env=())
    assert xml.stat().st_mtime_ns == 5


def test_products_with_real_metadata_go_through_preprocess(tmp_path):
    setup = make_pair_setup(tmp_path, real_metadata=True)
    result, _ = run(setup.prepare(), gate=RecordingGate(refuse_at="geometry"))
    assert result.phases_done == ("preprocess",), result.error
    assert setup.pairs[0].reference.relative_orbit == 108


COORDINATOR = """
import pickle, sys
from insar_pipeline.pair.runner import run_pair
job = pickle.loads(open(sys.argv[1], "rb").read())
run_pair(job, lambda e: e.kind == "start" and print(e.phase, e.pid, flush=True))
"""


def test_topsapp_dies_with_a_coordinator_killed_by_sigkill(setup, tmp_path):
    job = job_with(setup, double_sleep="topo=60", double_grandchild="topo")
    (tmp_path / "job.pickle").write_bytes(pickle.dumps(job))
    code = Path(__file__).resolve().parents[1] / "code"
    coordinator = subprocess.Popen(
        [sys.executable, "-c", COORDINATOR, str(tmp_path / "job.pickle")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(code)},
    )
    marker = job.run_dir / ".double_faults" / "grandchild.pid"
    started: dict[str, str] = {}
    try:
        started.update(coordinator.stdout.readline().split() for _ in range(2))
        while not marker.exists():
            time.sleep(0.02)
        coordinator.kill()  # kill -9: no cleanup code of ours runs
        coordinator.wait(timeout=10)
        assert gone(int(started["geometry"]))  # PR_SET_PDEATHSIG took topsApp along
    finally:
        coordinator.kill()
        coordinator.stdout.close()
        leftovers = [started.get("geometry")]  # topsApp, if this test fails
        if marker.exists():  # a grandchild outlives a kill -9 of the coordinator: documented
            leftovers.append(marker.read_text())
        for pid in filter(None, leftovers):
            if running(int(pid)):
                os.kill(int(pid), signal.SIGKILL)
    assert finished_steps(job.run_dir)[-1] == "verifyDEM"  # a rerun resumes at topo
