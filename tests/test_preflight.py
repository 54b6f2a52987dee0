"""The checks `plan` and `run` make before anything is downloaded or written (run/preflight.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from batch_factory import FakeRunner, fake_prepare, make_batch, write_checkpoints
from conftest import clean_environ, run_main
from insar_pipeline.dem.provision import plan_dems
from insar_pipeline.errors import InputError
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.pairs import load_pairs
from insar_pipeline.ledger.store import Ledger
from insar_pipeline.pair.prepare import pair_xml
from insar_pipeline.run import preflight as preflight_module
from insar_pipeline.run.coordinator import EXCLUDED, Provision
from insar_pipeline.run.driver import run_pipeline
from insar_pipeline.run.local import LocalExecutor
from insar_pipeline.run.preflight import (
    GB,
    PairDisk,
    disk_verdict,
    pair_disk,
    preflight,
    topsapp_problem,
    validate,
)
from insar_pipeline.topsapp.steps import STEPS
from insar_pipeline.topsapp.xml import XML_NAME

DOUBLE = Path(__file__).resolve().parent / "isce_double" / "topsApp.py"
DEAD_URL = "http://127.0.0.1:9"


def settings_for(batch, **fields) -> Settings:
    values = dict(
        data_dir=batch.data,
        pairs_file=batch.pairs_file,
        env_file=batch.root / ".env",
        workers=2,
        cores=2,
        memory_total_gb=64.0,
    )
    values.update(fields)
    return Settings(**values)


def planned_dems(settings: Settings) -> Provision:
    """Provisioning stand-in that hands out the DEMs DEM planning names (no download)."""

    def provide(settings, pairs, on_download) -> Provision:
        orbits = {p.name: Path(f"/orbits/{p.name}.EOF") for pair in pairs for p in pair.products}
        dems = {pid: plan.path for plan in plan_dems(settings, pairs) for pid in plan.pair_ids}
        return Provision(orbits, {}, dems)

    return provide


def run_fake(settings: Settings, provision=None):
    runner = FakeRunner(phase_s=0.01)
    return run_pipeline(
        settings,
        provision=provision or planned_dems(settings),
        prepare=fake_prepare,
        make_executor=lambda s, parallelism, gate: LocalExecutor(
            parallelism.workers, gate, run=runner
        ),
        report=False,
    )


# ---- TOPSAPP -----------------------------------------------------------------------------------


def test_topsapp_must_resolve_and_be_executable(tmp_path):
    def nowhere(name):
        return None

    assert "not on PATH" in topsapp_problem("topsApp.py", nowhere)
    assert "does not exist" in topsapp_problem(str(tmp_path / "topsApp.py"), nowhere)
    script = tmp_path / "topsApp.py"
    script.write_text("#!/bin/sh\n")
    assert "not executable" in topsapp_problem(str(script), nowhere)
    script.chmod(0o755)
    assert topsapp_problem(str(script), nowhere) is None
    assert topsapp_problem("topsApp.py", lambda name: "/opt/isce/topsApp.py") is None
    missing = f"{sys.executable} {tmp_path / 'gone.py'}"
    assert "gone.py of" in topsapp_problem(missing, nowhere)
    assert topsapp_problem(f"{sys.executable} {DOUBLE}", nowhere) is None
    assert "empty" in topsapp_problem("  ", nowhere)
    assert "cannot be split" in topsapp_problem("'unclosed", nowhere)


def test_every_settings_problem_is_reported_at_once(tmp_path):
    batch = make_batch(tmp_path, 2)
    with batch.pairs_file.open("a") as lines:
        lines.write("no-such-product.SAFE other.SAFE\n")
    settings = settings_for(
        batch,
        topsapp=str(tmp_path / "nope" / "topsApp.py"),
        memory_total_gb=None,  # detected: only the check before the run can compare
        memory_reserve_gb=1e6,
    )
    with pytest.raises(InputError) as caught:
        validate(settings)
    message = str(caught.value)
    assert "pairs.txt:3:" in message  # pairs.txt, the TOPSAPP command and the memory at once
    assert "TOPSAPP:" in message and "MEMORY_RESERVE_GB=1e+06" in message
    # On a cluster, topsApp is looked up on the workers: here only a warning.
    remote = settings.with_changes(
        executor="dask", dask_scheduler="slurm", memory_total_gb=64.0, memory_reserve_gb=2.0
    )
    problems, warnings = preflight_module.settings_problems(remote)
    assert not any("TOPSAPP" in p for p in problems) and "this machine only" in warnings[0]


def test_run_with_a_missing_topsapp_exits_2_before_any_download(tmp_path):
    batch = make_batch(tmp_path, 2)
    (batch.root / ".env").write_text(
        f"TOPSAPP = {tmp_path / 'isce' / 'topsApp.py'}\nASF_ORBIT_URL = {DEAD_URL}\n"
        f"AWS_ORBIT_URL = {DEAD_URL}\nOPENTOPO_API_KEY = k\nOPENTOPO_URL = {DEAD_URL}\n"
    )
    for command in ("run", "plan"):
        result = run_main([command, "--data", "data"], batch.root, env=clean_environ())
        assert result.returncode == 2, result.stderr
        assert "TOPSAPP:" in result.stderr and "does not exist" in result.stderr
        assert "Traceback" not in result.stderr
    # Nothing was downloaded or written: no orbit, no DEM, no ledger, no pair folder.
    assert not any((batch.data / "orbit_data").iterdir())
    assert not any((batch.data / "dem").iterdir())
    runs = batch.data / "runs"
    assert not (runs / "ledger.sqlite").exists()
    assert not [p for p in runs.iterdir() if p.is_dir()] if runs.is_dir() else True


def test_the_hooks_are_not_called_when_validation_fails(tmp_path):
    batch = make_batch(tmp_path, 2)
    calls = []

    def provision(*args):
        calls.append(args)
        raise AssertionError("provisioning must not start")

    with pytest.raises(InputError, match="TOPSAPP"):
        run_fake(settings_for(batch, topsapp="no-such-topsApp.py"), provision=provision)
    assert calls == []


# ---- a pair whose finished steps used other settings ------------------------------------------


def finished_with(settings: Settings, pair, through: str) -> None:
    """The pair's folder as a run with these settings left it after step `through`."""
    run_dir = settings.run_dir(pair.id).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    dem = {pid: plan.path for plan in plan_dems(settings, [pair]) for pid in plan.pair_ids}
    (run_dir / XML_NAME).write_bytes(pair_xml(settings, pair, run_dir, dem[pair.id]))
    write_checkpoints(run_dir, STEPS[: STEPS.index(through) + 1])


def test_a_pair_with_changed_settings_is_excluded_and_the_others_run(tmp_path, capsys):
    batch = make_batch(tmp_path, 3)
    before = settings_for(batch)
    pairs = load_pairs(before)
    finished_with(before, pairs[0], "burstifg")  # range looks already used
    finished_with(before, pairs[1], "topo")  # looks not used yet: the new value applies
    after = before.with_changes(range_looks=9)

    checked = preflight(after, validate(after))
    assert list(checked.excluded) == [pairs[0].id]
    assert "RANGE_LOOKS (rangelooks: 19 -> 9)" in checked.excluded[pairs[0].id]

    summary = run_fake(after)
    assert summary.exit_code == 1
    assert sorted(summary.done) == sorted([pairs[1].id, pairs[2].id])
    assert list(summary.excluded) == [pairs[0].id]
    assert summary.failed[pairs[0].id].startswith(EXCLUDED)
    out = capsys.readouterr().out
    assert "1 excluded before start" in out
    ledger = Ledger.open_reader(after.runs_dir)
    try:
        rows = {row.pair_id: row for row in ledger.pairs()}
    finally:
        ledger.close()
    assert rows[pairs[0].id].status == "failed"
    assert rows[pairs[0].id].error.startswith(f"{EXCLUDED}: pair {pairs[0].id}: settings changed")
    assert rows[pairs[1].id].status == rows[pairs[2].id].status == "done"


def test_plan_and_status_show_the_exclusion(tmp_path):
    batch = make_batch(tmp_path, 2)
    before = settings_for(batch)
    pairs = load_pairs(before)
    finished_with(before, pairs[0], "burstifg")
    (batch.root / ".env").write_text("RANGE_LOOKS = 9\nWORKERS = 2\n")
    result = run_main(["plan"], batch.root, env=clean_environ())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    excluded = [line for line in lines if line.startswith("  excluded   ")]
    assert len(excluded) == 1 and "RANGE_LOOKS (rangelooks: 19 -> 9)" in excluded[0]
    assert lines[lines.index(excluded[0]) - 1].startswith("  phases")
    assert "for 1 pair (0 already done, 1 excluded)" in lines[-1]

    after = before.with_changes(range_looks=9)
    run_fake(after)
    status = run_main(["status", "--json"], batch.root, env=clean_environ())
    rows = {row["pair"]: row for row in json.loads(status.stdout)["pairs"]}
    assert rows[pairs[0].id]["state"] == "failed"
    assert rows[pairs[0].id]["error"].startswith(EXCLUDED)


# ---- free disk ------------------------------------------------------------------------------


def test_disk_verdict_refuses_what_cannot_run_at_once():
    needs = [PairDisk(f"p{i}", peak=int(60 * GB), kept=int(6 * GB)) for i in range(5)]
    refusal, warning = disk_verdict(needs, workers=2, free=int(100 * GB), where=Path("data"))
    assert "data has 100.0 GB free" in refusal and "need about 120.0 GB" in refusal
    assert warning is None


def test_disk_verdict_figures():
    needs = [PairDisk(f"p{i}", peak=int(60 * GB), kept=int(6 * GB)) for i in range(5)]
    # The batch: every pair's kept 6 GB, plus the 54 GB extra of the one pair at its peak.
    assert disk_verdict(needs, 1, int(84 * GB), Path("d")) == (None, None)
    refusal, warning = disk_verdict(needs, 1, int(83 * GB), Path("d"))
    assert refusal is None and "need about 84.0 GB" in warning
    assert disk_verdict([], 4, 0, Path("d")) == (None, None)


def test_pair_disk_follows_cleaning_region_and_ionosphere(tmp_path):
    batch = make_batch(tmp_path, 1)
    settings = settings_for(batch)
    pair = load_pairs(settings)[0]
    pixels = 3 * 9 * 1502 * 22612  # a full frame: 3 swaths of 9 bursts
    full = pair_disk(settings, pair, pixels)
    assert 55 * GB < full.peak < 70 * GB  # the contract's 60-70 GB a frame
    assert full.kept == pytest.approx(full.peak * 0.47 / 4.82, rel=1e-6)
    assert pair_disk(settings.with_changes(clean="none"), pair, pixels).kept == full.peak
    nuclear = pair_disk(settings.with_changes(clean="nuclear"), pair, pixels)
    assert nuclear.kept < full.kept
    assert pair_disk(settings.with_changes(ionosphere=True), pair, pixels).peak > full.peak
    box = pair.reference.bbox
    half = f"{box.south},{(box.south + box.north) / 2},{box.west},{box.east}"
    assert pair_disk(settings.with_changes(region_of_interest=half), pair, pixels).peak == (
        pytest.approx(full.peak / 2, rel=0.01)
    )
    assert pair_disk(settings, pair, pixels, present=int(10 * GB)).peak == full.peak - 10 * GB


def real_size_measurements(batch) -> None:
    """Measurement tiffs of a real frame's size (sparse: no disk is used)."""
    for tiff in batch.data.glob("raw/*.SAFE/measurement/*.tiff"):
        os.truncate(tiff, 1_250_000_000)


def test_run_refuses_when_the_pairs_at_once_do_not_fit(tmp_path, monkeypatch):
    batch = make_batch(tmp_path, 3)
    real_size_measurements(batch)
    monkeypatch.setattr(preflight_module, "free_disk_bytes", lambda folder: int(100 * GB))
    with pytest.raises(InputError, match="pair\\(s\\) that run at once"):
        run_fake(settings_for(batch, workers=3))
    assert not (batch.data / "runs" / "ledger.sqlite").exists()
    # One at a time fits, and the whole batch too once cleaned.
    summary = run_fake(settings_for(batch, workers=1))
    assert summary.exit_code == 0


def test_run_warns_when_the_batch_may_not_fit_and_plan_says_so(tmp_path, monkeypatch, caplog):
    batch = make_batch(tmp_path, 3)
    real_size_measurements(batch)
    monkeypatch.setattr(preflight_module, "free_disk_bytes", lambda folder: int(100 * GB))
    settings = settings_for(batch, workers=1, clean="none")
    checked = preflight(settings, validate(settings))
    assert len(checked.warnings) == 1 and "later pairs may fail" in checked.warnings[0]
    assert run_fake(settings).exit_code == 0
    assert any("later pairs may fail" in r.getMessage() for r in caplog.records)


def test_plan_shows_the_disk_warning(tmp_path, monkeypatch, capsys):
    from insar_pipeline.run.plan import plan_command

    batch = make_batch(tmp_path, 3)
    real_size_measurements(batch)
    monkeypatch.setattr(preflight_module, "free_disk_bytes", lambda folder: int(100 * GB))
    assert plan_command(settings_for(batch, workers=1, clean="none"), None) == 0
    out = capsys.readouterr().out
    assert "warning: " in out and "later pairs may fail" in out
    with pytest.raises(InputError, match="run at once"):
        plan_command(settings_for(batch, workers=3), None)


def test_run_without_the_dem_key_exits_2_before_any_orbit_download(tmp_path):
    batch = make_batch(tmp_path, 2)
    (batch.root / ".env").write_text(
        f"ASF_ORBIT_URL = {DEAD_URL}\nAWS_ORBIT_URL = {DEAD_URL}\nORBIT_SOURCES = asf,aws\n"
        "DEM_TYPE = SRTMGL3_E\n"
    )
    result = run_main(["run"], batch.root, env=clean_environ())
    assert result.returncode == 2, result.stderr
    assert "must be downloaded from OpenTopography" in result.stderr
    assert "orbit" not in result.stderr.lower()  # no orbit was even looked up
    assert not (batch.data / "runs" / "ledger.sqlite").exists()
    plan = run_main(["plan"], batch.root, env=clean_environ())
    assert plan.returncode == 0 and "warning: the DEM" in plan.stdout


def test_isce2_line_and_the_missions_an_older_isce2_cannot_read() -> None:
    from insar_pipeline.run.preflight import isce2_notes

    assert isce2_notes(None, {"S1A"})[0].startswith("ISCE2: version not known here")
    assert isce2_notes("2.6.5", {"S1A", "S1D"}) == ("ISCE2 2.6.5", [])
    line, warnings = isce2_notes("2.6.4", {"S1A", "S1C", "S1D"})
    assert line == "ISCE2 2.6.4"
    assert len(warnings) == 1
    assert warnings[0].startswith("ISCE2 2.6.4 cannot read S1D products (ISCE2 >= 2.6.5 can)")
    assert isce2_notes("2.6.4", {"S1A", "S1C"})[1] == []  # 2.6.4 reads S1C (isce2 PR 951)
