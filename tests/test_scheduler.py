"""The coordinator: dispatch order, parallelism, isolation, ledger, summary and exit codes.

The first tests swap the runner for `batch_factory.FakeRunner` (the coordinator alone); the
end-to-end tests at the bottom run the real runner against the topsApp double.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import pytest

from batch_factory import FakeRunner, fake_prepare, make_batch, write_checkpoints
from insar_pipeline.errors import InputError
from insar_pipeline.inputs.config import Settings, load_settings
from insar_pipeline.ledger.store import Ledger
from insar_pipeline.run.coordinator import Provision
from insar_pipeline.run.dispatch import DispatchQueue, PairPlan, dispatch_order, plan_pair
from insar_pipeline.run.driver import run_pipeline
from insar_pipeline.run.local import LocalExecutor
from insar_pipeline.topsapp.steps import phase_table


def settings_for(batch, **fields) -> Settings:
    values = dict(
        data_dir=batch.data,
        pairs_file=batch.pairs_file,
        env_file=batch.root / ".env",
        workers=3,
        cores=2,
        memory_total_gb=64.0,
        memory_reserve_gb=2.0,
    )
    values.update(fields)
    return Settings(**values)


def cli_settings(batch, **fields) -> Settings:
    """The settings as the CLI builds them: a bad value is an InputError (exit 2) naming it."""

    (batch.root / ".env").touch()  # an empty .env: the test's values only
    values = settings_for(batch).model_dump()
    values.update(fields)
    return load_settings({k: v for k, v in values.items() if k in fields or k in _PLACES}, {})


_PLACES = ("data_dir", "pairs_file", "env_file", "workers", "cores", "memory_total_gb")


def provide_everything(settings, pairs, on_download) -> Provision:
    orbits = {p.name: Path(f"/orbits/{p.name}.EOF") for pair in pairs for p in pair.products}
    return Provision(orbits, {}, {pair.id: Path("/dem/dem.wgs84") for pair in pairs})


def run_with(settings, runner, provision=provide_everything):
    return run_pipeline(
        settings,
        provision=provision,
        prepare=fake_prepare,
        make_executor=lambda s, parallelism, gate: LocalExecutor(
            parallelism.workers, gate, run=runner
        ),
    )


@pytest.fixture(scope="module")
def batch12(tmp_path_factory):
    return make_batch(tmp_path_factory.mktemp("batch12"), 12)


@pytest.fixture
def batch4(tmp_path):
    return make_batch(tmp_path, 4)


# ---- pure planning ------------------------------------------------------------------------


def test_dispatch_order_resumed_work_first_then_pairs_txt_order():
    phases = phase_table(False)
    plans = [
        plan_pair("a", 0, phases, phases),  # untouched
        plan_pair("b", 1, phases, phases[4:]),  # 2 phases left
        plan_pair("c", 2, phases, ()),  # finished: not dispatched
        plan_pair("d", 3, phases, phases[1:]),  # 5 left
        plan_pair("e", 4, phases, phases[4:]),  # 2 left, after b in pairs.txt
        plan_pair("f", 5, phases, phases),
    ]
    assert [plan.pair_id for plan in dispatch_order(plans)] == ["b", "e", "d", "a", "f"]
    assert plans[1].phases_done == ("preprocess", "geometry", "coregistration", "interferogram")


def test_a_trimmed_phase_is_not_done():
    phases = phase_table(False)
    trimmed = (type(phases[2])(phases[2].name, "fineoffsets", phases[2].last), *phases[3:])
    plan = plan_pair("a", 0, phases, trimmed)
    assert plan.phases_done == ("preprocess", "geometry") and len(plan.remaining) == 4


def test_dispatch_queue_can_hold_a_pair_back():
    queue = DispatchQueue(
        [PairPlan("a", 0, (), ()), PairPlan("b", 1, (), ())], key=lambda p: p.pair_id
    )
    held = queue.pop_ready(lambda pair_id: pair_id != "a")
    assert held.pair_id == "b" and len(queue) == 1
    queue.requeue(held)
    assert [queue.pop_ready().pair_id, queue.pop_ready().pair_id] == ["b", "a"]
    assert queue.pop_ready() is None


# ---- the coordinator with a fake runner ----------------------------------------------------


def test_all_pairs_run_in_parallel_within_workers(batch12, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    runner = FakeRunner(phase_s=0.02)
    summary = run_with(settings_for(batch12), runner)
    assert summary.exit_code == 0
    assert sorted(summary.done) == sorted(batch12.pair_ids)
    assert max(runner.concurrent) == 3  # WORKERS=3, and it did use all three
    out = capsys.readouterr().out
    assert "12 done, 0 failed, 0 pending of 12 pairs" in out
    ledger = Ledger.open_reader(batch12.data / "runs")
    try:
        assert {row.status for row in ledger.pairs()} == {"done"}
        assert all(len(row.phases_done) == 6 for row in ledger.pairs())
        assert ledger.latest_run()["status"] == "finished"
    finally:
        ledger.close()
    # Everything finished: a rerun starts no phase at all.
    again = FakeRunner()
    assert run_with(settings_for(batch12), again).exit_code == 0
    assert again.starts == []
    assert (batch12.data / "runs" / "report.html").is_file()
    log_lines = (batch12.data / "runs" / "pipeline.log").read_text().splitlines()
    assert any('"phase": "geocode"' in line and '"pair": "' in line for line in log_lines)


def test_resumed_pairs_start_first_and_skip_finished_steps(batch4):
    settings = settings_for(batch4, workers=1)
    phases = phase_table(False)
    last = batch4.pair_ids[-1]
    write_checkpoints(settings.run_dir(last), [s for p in phases[:4] for s in p.steps()])
    runner = FakeRunner()
    assert run_with(settings, runner).exit_code == 0
    assert runner.starts[:2] == [(last, "unwrap"), (last, "geocode")]
    assert [phase for pair, phase in runner.starts if pair == last] == ["unwrap", "geocode"]
    assert len(runner.starts) == 2 + 3 * 6


def test_one_failure_and_one_crash_fail_only_their_pairs(batch4, caplog):
    fatal, crash = batch4.pair_ids[1], batch4.pair_ids[2]
    runner = FakeRunner(faults={fatal: "fatal", crash: "crash"})
    summary = run_with(settings_for(batch4), runner)
    assert summary.exit_code == 1
    assert set(summary.done) == {batch4.pair_ids[0], batch4.pair_ids[3]}
    assert summary.failed[fatal] == "geometry: bad config"
    assert (
        "internal error" in summary.failed[crash] and "bug in the runner" in summary.failed[crash]
    )
    ledger = Ledger.open_reader(batch4.data / "runs")
    try:
        rows = {row.pair_id: row for row in ledger.pairs()}
    finally:
        ledger.close()
    assert (rows[fatal].status, rows[fatal].failed_phase) == ("failed", "geometry")
    assert rows[crash].status == "failed"
    # A rerun retries the failed pairs, and only those.
    runner = FakeRunner()
    assert run_with(settings_for(batch4), runner).exit_code == 0
    assert {pair for pair, _ in runner.starts} == {fatal, crash}


def test_a_pair_without_orbit_fails_before_it_starts(batch4):
    missing = batch4.scenes[0]

    def provision(settings, pairs, on_download):
        provided = provide_everything(settings, pairs, on_download)
        orbits = {name: path for name, path in provided.orbit_files.items() if name != missing}
        return Provision(orbits, {missing: "no POEORB or RESORB covers the scene"}, provided.dems)

    runner = FakeRunner()
    summary = run_with(settings_for(batch4), runner, provision)
    first = batch4.pair_ids[0]
    assert summary.exit_code == 1
    assert summary.failed == {
        first: f"no orbit for {missing}: no POEORB or RESORB covers the scene"
    }
    assert first not in {pair for pair, _ in runner.starts}


def test_downloads_reach_the_ledger(batch4):
    class Download:
        kind, name, source, bytes, path = (
            "orbit",
            "S1A_OPER_AUX_POEORB.EOF",
            "asf",
            1234,
            Path("/x"),
        )

    def provision(settings, pairs, on_download):
        on_download(Download())
        return provide_everything(settings, pairs, on_download)

    run_with(settings_for(batch4), FakeRunner(), provision)
    ledger = Ledger.open_reader(batch4.data / "runs")
    try:
        assert [(d["name"], d["bytes"]) for d in ledger.downloads()] == [
            ("S1A_OPER_AUX_POEORB.EOF", 1234)
        ]
    finally:
        ledger.close()


def test_bad_input_exits_2_before_anything_starts(batch4):
    good = batch4.pairs_file.read_text()
    batch4.pairs_file.write_text(good + '("NOPE.SAFE", "NADA.SAFE")\n')
    with pytest.raises(InputError, match="pairs.txt:5"):
        run_with(settings_for(batch4), FakeRunner())
    batch4.pairs_file.write_text(good)
    assert not (batch4.data / "runs" / "ledger.sqlite").exists()
    with pytest.raises(InputError, match="MEMORY_RESERVE_GB"):
        run_with(cli_settings(batch4, memory_total_gb=1.0, memory_reserve_gb=2.0), FakeRunner())


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"dask_scheduler": "slurm", "dask_walltime": "tomorrow"}, "DASK_WALLTIME"),
        ({"dask_scheduler": "pbs", "dask_memory_gb": 1.5}, "DASK_MEMORY_GB"),
        ({"dask_scheduler": "no such scheduler"}, "DASK_SCHEDULER"),
    ],
)
def test_bad_dask_setting_exits_2_before_provisioning(tmp_path, fields, key):
    from batch_factory import DEAD_URL

    batch = make_batch(tmp_path, 1)
    dead = {f"{name}_url": DEAD_URL for name in ("asf_orbit", "aws_orbit", "cdse", "opentopo")}
    with pytest.raises(InputError, match=key) as caught:
        settings = cli_settings(
            batch, executor="dask", roi="51.45,51.75,-127.0,-126.6", **dead, **fields
        )
        run_pipeline(settings)  # the real provisioning: it would fail on the dead URLs
    assert caught.value.exit_code == 2
    assert not (batch.data / "runs" / "ledger.sqlite").exists()
    assert not any((batch.data / "orbit_data").iterdir())
    assert not any((batch.data / "dem").iterdir())


def test_a_pair_finished_but_never_recorded_is_cleaned(batch4):
    """Killed after a pair's last phase but before its result: the next run cleans it."""
    settings = settings_for(batch4)
    first, second = batch4.pair_ids[:2]
    steps = [step for phase in phase_table(False) for step in phase.steps()]
    work = 200_000
    for pair_id in (first, second):
        run_dir = settings.run_dir(pair_id)
        write_checkpoints(run_dir, steps)
        (run_dir / "fine_interferogram" / "IW1").mkdir(parents=True)
        (run_dir / "fine_interferogram" / "IW1" / "burst_01.int").write_bytes(b"\0" * work)
        (run_dir / "merged").mkdir()
        (run_dir / "merged" / "filt_topophase.unw.geo").write_bytes(b"\1" * 1000)
    ledger = Ledger.open_writer(batch4.data / "runs")
    try:  # `first` was running when its coordinator died; `second` has no ledger row at all
        ledger.register_pairs([(first, "a", "b", 1)], phases_total=6)
        ledger.set_pair(first, status="running", phase="geocode")
    finally:
        ledger.close()
    runner = FakeRunner()
    summary = run_with(settings, runner)
    assert summary.exit_code == 0 and {first, second} <= set(summary.done)
    assert not {pair for pair, _ in runner.starts} & {first, second}
    ledger = Ledger.open_reader(batch4.data / "runs")
    try:
        rows = {row.pair_id: row for row in ledger.pairs()}
    finally:
        ledger.close()
    for pair_id in (first, second):
        run_dir = settings.run_dir(pair_id)
        assert not (run_dir / "fine_interferogram").exists()  # CLEAN=standard removed it
        assert (run_dir / "merged" / "filt_topophase.unw.geo").stat().st_size == 1000
        assert rows[pair_id].status == "done"
        assert rows[pair_id].bytes_before_clean - rows[pair_id].bytes_after_clean == work


# ---- end to end: the real runner against the topsApp double -------------------------------

FAULTS = {  # pair index -> what the double does wrong in that pair (env of its topsApp children)
    1: {"ISCE_DOUBLE_FAIL_STEP": "fineoffsets", "ISCE_DOUBLE_FAIL_KIND": "io"},  # once, retried
    4: {"ISCE_DOUBLE_FAIL_STEP": "topo", "ISCE_DOUBLE_FAIL_KIND": "config"},  # fatal
    7: {"ISCE_DOUBLE_KILL_STEP": "topo", "ISCE_DOUBLE_KILL_TIMES": "1"},  # SIGKILL once, retried
    10: {"ISCE_DOUBLE_KILL_STEP": "unwrap", "ISCE_DOUBLE_KILL_TIMES": "9"},  # SIGKILL every try
}
BUDGET_GB = 6.0  # MEMORY_TOTAL_GB=7 minus MEMORY_RESERVE_GB=1


def phase_intervals(step_log: Path, phases) -> list[tuple[float, float, str, str]]:
    """(start, end, pair, phase) of every topsApp process, from the double's step log."""
    from isce_double.double_faults import read_step_log

    phase_of = {step: phase.name for phase in phases for step in phase.steps()}
    processes: dict[str, list] = {}
    for row in read_step_log(step_log):
        start, end = float(row["start"]), float(row["end"])
        if row["pid"] not in processes:
            processes[row["pid"]] = [start, end, row["pair"], phase_of[row["step"]]]
        interval = processes[row["pid"]]
        interval[0], interval[1] = min(interval[0], start), max(interval[1], end)
    return [tuple(interval) for interval in processes.values()]


def peak_weight(intervals, weights) -> float:
    events = sorted(
        [(start, weights[phase]) for start, _, _, phase in intervals]
        + [(end, -weights[phase]) for _, end, _, phase in intervals]
    )
    load = peak = 0.0
    for _, change in events:  # ends sort before starts at the same instant (negative first)
        load += change
        peak = max(peak, load)
    return peak


@pytest.mark.slow
def test_twelve_pairs_against_the_double_with_faults(tmp_path, monkeypatch):
    from dataclasses import replace

    from batch_factory import prepare_inputs
    from insar_pipeline.pair.prepare import prepare_pair
    from insar_pipeline.report.status import collect_status
    from insar_pipeline.run.budget import phase_weights
    from isce_double.double_faults import read_step_log

    batch = make_batch(tmp_path, 12)
    extra = prepare_inputs(batch)
    step_log = tmp_path / "steps.log"
    monkeypatch.setenv("ISCE_DOUBLE_LOG", str(step_log))
    monkeypatch.setenv("ISCE_DOUBLE_SLEEP", "topo=0.15,fineresamp=0.1,filter=0.05,unwrap=0.15")
    ids = batch.pair_ids

    def prepare(settings, pair, orbit_files, dem, omp_threads):
        job = prepare_pair(settings, pair, orbit_files, dem, omp_threads)
        fault = FAULTS.get(ids.index(pair.id), {})
        env = {"ISCE_DOUBLE_FAIL_PAIRS": pair.id, **fault} if fault else {}
        return replace(job, retry_backoff_s=0.05, env=tuple(env.items()))

    settings = settings_for(
        batch,
        workers=3,
        cores=3,
        memory_total_gb=7.0,
        memory_reserve_gb=1.0,
        max_retries=2,
        **extra,
    )
    summary = run_pipeline(settings, prepare=prepare)

    assert summary.exit_code == 1
    assert set(summary.failed) == {ids[4], ids[10]}
    assert set(summary.done) == set(ids) - {ids[4], ids[10]}
    assert summary.failed[ids[4]].startswith("geometry:") and "1 attempt)" in summary.failed[ids[4]]
    assert summary.failed[ids[10]].startswith("unwrap:") and "SIGKILL" in summary.failed[ids[10]]
    assert "(3 attempts)" in summary.failed[ids[10]]  # MAX_RETRIES=2: tried three times

    steps = read_step_log(step_log)
    ok = {}
    for row in steps:
        if row["outcome"] == "ok":
            ok[(row["pair"], row["step"])] = ok.get((row["pair"], row["step"]), 0) + 1
    # Every other pair is unaffected: each of its steps ran once, and only once.
    for index, pair_id in enumerate(ids):
        if index not in (4, 10):
            assert {step for pair, step in ok if pair == pair_id} >= {"startup", "topo", "geocode"}
        assert all(count == 1 for (pair, _), count in ok.items() if pair == pair_id), pair_id
    assert ok.get((ids[4], "topo")) is None and ok.get((ids[10], "unwrap")) is None

    # The memory budget held at every instant, and never more than WORKERS phases ran at once.
    phases = phase_table(False)
    weights = phase_weights([p.name for p in phases], 19, 7, BUDGET_GB)
    intervals = phase_intervals(step_log, phases)
    assert peak_weight(intervals, weights) <= BUDGET_GB
    assert peak_weight(intervals, {name: 1 for name in weights}) <= 3

    ledger = Ledger.open_reader(batch.data / "runs")
    try:
        geometry = [r for r in ledger.phase_rows(ids[7]) if r["phase"] == "geometry"]
        coreg = [r for r in ledger.phase_rows(ids[1]) if r["phase"] == "coregistration"]
        failed_row = {row.pair_id: row for row in ledger.pairs()}[ids[10]]
    finally:
        ledger.close()
    assert [(r["ok"], r["transient"], r["returncode"]) for r in geometry] == [
        (0, 1, -9),
        (1, None, 0),
    ]
    assert [r["ok"] for r in coreg] == [0, 1]
    assert failed_row.failed_phase == "unwrap" and failed_row.error_tail is not None

    document = collect_status(batch.data / "runs")
    assert document["totals"] == {"pairs": 12, "done": 10, "failed": 2, "running": 0, "pending": 0}
    page = (batch.data / "runs" / "report.html").read_text()
    # 3 quicklooks per done pair, rendered by the worker threads, linked as lazy image files.
    assert page.count("<img loading='lazy'") == 30
    assert len(list((batch.data / "runs").glob("*/quicklooks/*.png"))) == 30
    assert ids[10] in page[page.index("<h2>Failures</h2>") : page.index("<h2>Pairs</h2>")]


def test_run_with_orbits_and_dem_from_loopback_services(tmp_path):
    """Nothing cached: orbits from the loopback ASF service, the DEM from the loopback
    OpenTopography; the downloads reach the ledger, and a rerun makes no request at all."""
    from batch_factory import DEM_TYPE, DOUBLE, ROI
    from insar_pipeline.geo import BBox
    from opentopo_server import OpenTopoEmulator, synthetic_source
    from orbit_factories import poeorb_name
    from orbit_server import OrbitServer

    batch = make_batch(tmp_path, 2)
    source = synthetic_source(tmp_path / "source.tif", *BBox.parse(ROI).buffered(0.05).snwe(), 3)
    with OrbitServer() as orbits, OpenTopoEmulator(source) as opentopo:
        orbits.add(*(poeorb_name(name[:3], name.split("_")[5][:8]) for name in batch.scenes))
        settings = orbits.settings(batch.data).with_changes(
            pairs_file=batch.pairs_file, env_file=tmp_path / ".env", workers=2, cores=2,
            memory_total_gb=16.0, roi=ROI, dem_type=DEM_TYPE, orbit_sources=("asf",),
            opentopo_url=opentopo.url, opentopo_api_key=opentopo.api_key,
            topsapp=f"{sys.executable} {DOUBLE}",
        )  # fmt: skip
        summary = run_pipeline(settings)
        assert summary.exit_code == 0 and len(summary.done) == 2
        assert orbits.count() >= 3 and len(opentopo.requests) >= 1
        ledger = Ledger.open_reader(batch.data / "runs")
        try:
            kinds = sorted({download["kind"] for download in ledger.downloads()})
            named = [d["name"] for d in ledger.downloads() if d["kind"] != "dem"]
        finally:
            ledger.close()
        assert kinds == ["dem", "orbit"] and len(named) == 3
        assert opentopo.api_key not in (batch.data / "runs" / "pipeline.log").read_text()
        orbits.reset_counts()
        requests_before = len(opentopo.requests)
        shutil.rmtree(settings.run_dir(batch.pair_ids[0]))  # work again, with everything cached
        assert run_pipeline(settings).exit_code == 0
        assert orbits.count() == 0 and len(opentopo.requests) == requests_before


def test_the_end_of_run_table_of_a_large_batch_lists_the_pairs_to_look_at(
    batch4, capsys, monkeypatch
):
    import insar_pipeline.run.coordinator as coordinator

    monkeypatch.setattr(coordinator, "SUMMARY_TABLE_MAX", 2)
    fatal = batch4.pair_ids[1]
    summary = run_with(settings_for(batch4), FakeRunner(faults={fatal: "fatal"}))
    assert summary.exit_code == 1
    table = capsys.readouterr().out
    listed = [line.split()[0] for line in table.splitlines()[1:] if line[:4].isdigit()]
    assert listed == [fatal]  # the failed pair; the three done ones are counted, not listed
    assert "(3 more pairs not listed: `status --all` lists them)" in table
    assert "3 done, 1 failed, 0 pending of 4 pairs" in table
