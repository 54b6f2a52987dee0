"""Geometry reuse through the whole `run`: coordinator, local executor, runner, topsApp double.

A small-baseline stack (each date paired with the next ones) shares each reference's geometry:
topo runs once per geometry key and every product equals that of a run with
GEOMETRY_REUSE=false. Pairs whose guard differs run their own topo; a donor killed in topo
hands over to another pair; a coordinator killed after a link resumes with valid links.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from batch_factory import FIRST_DATE, REPEAT, Batch, env_text, make_batch, prepare_inputs
from insar_pipeline.georeuse.key import predicted_key
from insar_pipeline.inputs.config import Settings
from insar_pipeline.ledger.store import Ledger
from insar_pipeline.pair.prepare import prepare_pair
from insar_pipeline.report.status import collect_status
from insar_pipeline.run.driver import run_pipeline
from isce_double.double_faults import read_step_log

REPO = Path(__file__).resolve().parents[1]


def make_stack(root: Path, dates: int, neighbours: int) -> tuple[Batch, dict]:
    """`dates` scenes 12 days apart, each paired with the next `neighbours` dates."""
    batch = make_batch(root, dates - 1)
    pairs = [
        (first, second)
        for first in range(dates)
        for second in range(first + 1, min(dates, first + neighbours + 1))
    ]
    batch.pairs_file.write_text(
        "".join(f'("{batch.scenes[a]}.SAFE", "{batch.scenes[b]}.SAFE")\n' for a, b in pairs)
    )
    ids = tuple(f"{day(a)}_{day(b)}" for a, b in pairs)
    extra = prepare_inputs(batch)
    return dataclasses.replace(batch, pair_ids=ids), extra


def day(index: int) -> str:
    return f"{FIRST_DATE + index * REPEAT:%Y%m%d}"


def settings_for(batch: Batch, extra: dict, **fields) -> Settings:
    values = dict(
        data_dir=batch.data,
        pairs_file=batch.pairs_file,
        env_file=batch.root / ".env",
        workers=3,
        cores=2,
        memory_total_gb=64.0,
        **extra,
    )
    values.update(fields)
    return Settings(**values)


@pytest.fixture(autouse=True)
def small_double(tmp_path, monkeypatch):
    """Small bursts, and a step log of every topsApp step the double runs."""
    monkeypatch.setenv("ISCE_DOUBLE_SCALE", "0.005")
    monkeypatch.setenv("ISCE_DOUBLE_LOG", str(tmp_path / "steps.log"))
    return tmp_path / "steps.log"


def topo_runs(step_log: Path) -> Counter:
    return Counter(
        row["pair"]
        for row in read_step_log(step_log)
        if row["step"] == "topo" and row["outcome"] == "ok"
    )


def products(settings: Settings, pair_ids) -> dict[str, dict[str, bytes]]:
    """merged/ of each pair (what standard cleaning keeps): every file, byte for byte."""
    found = {}
    for pair_id in pair_ids:
        merged = settings.run_dir(pair_id) / "merged"
        found[pair_id] = {
            p.relative_to(merged).as_posix(): p.read_bytes()
            for p in sorted(merged.rglob("*"))
            if p.is_file()
        }
    return found


def ledger_sources(settings: Settings) -> dict[str, str | None]:
    ledger = Ledger.open_reader(settings.runs_dir)
    try:
        return {row.pair_id: row.geometry_from for row in ledger.pairs()}
    finally:
        ledger.close()


def test_a_stack_runs_topo_once_per_reference_with_the_products_of_no_reuse(
    tmp_path, small_double, monkeypatch, capsys
):
    batch, extra = make_stack(tmp_path / "reuse", dates=5, neighbours=2)
    assert len(batch.pair_ids) == 7
    settings = settings_for(batch, extra)
    summary = run_pipeline(settings)
    assert summary.exit_code == 0 and len(summary.done) == 7
    runs = topo_runs(small_double)
    references = {day(i) for i in range(4)}
    assert sum(runs.values()) == 4 and {pair[:8] for pair in runs} == references
    assert (summary.topo_runs, summary.topo_avoided) == (4, 3) and summary.topo_saved_s > 0
    printed = capsys.readouterr().out
    assert "geometry: topo ran 4 times, 3 pairs took a donor's geometry instead" in printed
    # Each taker took the geometry of the pair of its reference that computed it.
    sources = ledger_sources(settings)
    takers = {pair: donor for pair, donor in sources.items() if donor}
    assert set(takers) == set(batch.pair_ids) - set(runs)
    assert all(donor in runs and donor[:8] == pair[:8] for pair, donor in takers.items())
    document = collect_status(settings.runs_dir)
    assert {e["pair"]: e["geometry_from"] for e in document["pairs"]} == sources
    page = (settings.runs_dir / "report.html").read_text()
    assert "3 pairs took the geometry" in page and all(f"from {d}" in page for d in takers.values())
    # Held geometries were released: standard cleaning removed every geom_reference at the end.
    assert not list(settings.runs_dir.glob("*/geom_reference"))

    plain_log = tmp_path / "plain_steps.log"
    monkeypatch.setenv("ISCE_DOUBLE_LOG", str(plain_log))
    plain_batch, plain_extra = make_stack(tmp_path / "plain", dates=5, neighbours=2)
    plain = settings_for(plain_batch, plain_extra, geometry_reuse=False)
    assert run_pipeline(plain, report=False).exit_code == 0
    assert sum(topo_runs(plain_log).values()) == 7
    mine, theirs = products(settings, batch.pair_ids), products(plain, batch.pair_ids)
    assert all(len(files) > 20 for files in mine.values())
    assert mine == theirs


@pytest.mark.parametrize("difference", ["common_bursts", "orbit_file"])
def test_a_pair_whose_guard_differs_runs_its_own_topo(
    tmp_path, small_double, monkeypatch, caplog, difference
):
    batch, extra = make_stack(tmp_path, dates=3, neighbours=2)  # 0-1, 0-2, 1-2
    odd = f"{day(0)}_{day(2)}"
    prepare = None
    if difference == "common_bursts":  # the third date's frame starts one burst later
        monkeypatch.setenv("ISCE_DOUBLE_BURST_SHIFT", f"{day(2)}=1")
    else:  # two precise orbit files of the first date: pair 0-2 gets the one not chosen
        from orbit_factories import make_eof, poeorb_name

        mission = batch.scenes[0][:3]
        names = (poeorb_name(mission, day(0)), poeorb_name(mission, day(0), version=1))
        (batch.data / "orbit_data" / names[1]).write_bytes(make_eof(names[1], step_s=600))

        def prepare(settings, pair, orbit_files, dem, omp_threads):
            if pair.id == odd:
                chosen = orbit_files[pair.reference.name]
                other = chosen.with_name(names[chosen.name == names[0]])
                orbit_files = {**orbit_files, pair.reference.name: other}
            return prepare_pair(settings, pair, orbit_files, dem, omp_threads)

    settings = settings_for(batch, extra, clean="none")  # keep orbits/ to look at below
    with caplog.at_level(logging.INFO):
        summary = run_pipeline(settings, prepare=prepare, report=False)
    assert summary.exit_code == 0, summary.failed
    runs = topo_runs(small_double)
    assert runs == Counter({f"{day(0)}_{day(1)}": 1, odd: 1, f"{day(1)}_{day(2)}": 1})
    assert ledger_sources(settings)[odd] is None and summary.topo_avoided == 0
    if difference == "common_bursts":  # same predicted key: the guard refused, and said why
        assert f"not reusing the geometry of {day(0)}_{day(1)}: numberofcommonbursts" in caplog.text
    else:  # another orbit file: another key, so another group from the start
        keys = [predicted_key(settings.run_dir(p)) for p in (odd, f"{day(0)}_{day(1)}")]
        assert keys[0].reference_orbit != keys[1].reference_orbit
        assert keys[0].reference_orbit in names and keys[1].reference_orbit in names
        assert "not reusing" not in caplog.text


def test_a_donor_killed_in_topo_hands_over_to_another_pair(tmp_path, small_double, monkeypatch):
    batch, extra = make_stack(tmp_path, dates=3, neighbours=2)
    donor, other = f"{day(0)}_{day(1)}", f"{day(0)}_{day(2)}"
    monkeypatch.setenv("ISCE_DOUBLE_FAIL_PAIRS", donor)
    monkeypatch.setenv("ISCE_DOUBLE_KILL_STEP", "topo")
    monkeypatch.setenv("ISCE_DOUBLE_KILL_TIMES", "9")
    monkeypatch.setenv("ISCE_DOUBLE_SLEEP", "topo=0.3")  # the other pair reaches topo meanwhile
    settings = settings_for(batch, extra, max_retries=0)
    summary = run_pipeline(settings, report=False)
    assert summary.exit_code == 1 and set(summary.failed) == {donor}
    assert "geometry: topsApp killed by SIGKILL" in summary.failed[donor]
    rows = read_step_log(small_double)
    assert [r["outcome"] for r in rows if r["pair"] == donor and r["step"] == "topo"] == ["killed"]
    assert topo_runs(small_double) == Counter({other: 1, f"{day(1)}_{day(2)}": 1})
    # the other pair waited at topo for the donor, then became the donor itself
    other_steps = [r["step"] for r in rows if r["pair"] == other and r["outcome"] == "ok"]
    assert other_steps.index("topo") == other_steps.index("verifyDEM") + 1
    waited = [r for r in rows if r["pair"] == other and r["step"] == "topo"][0]
    killed = [r for r in rows if r["pair"] == donor and r["step"] == "topo"][0]
    assert float(waited["start"]) >= float(killed["end"])
    assert ledger_sources(settings)[other] is None


def test_a_killed_coordinator_resumes_with_valid_links(tmp_path, small_double, monkeypatch):
    batch, extra = make_stack(tmp_path / "reuse", dates=3, neighbours=2)
    donor, taker = f"{day(0)}_{day(1)}", f"{day(0)}_{day(2)}"
    fields = dict(workers=3, cores=2, memory_total_gb=64.0, **extra)
    (batch.root / ".env").write_text(env_text(fields))
    env = {**os.environ, "ISCE_DOUBLE_SLEEP": "fineoffsets=0.5", "PYTHONPATH": str(REPO / "code")}
    coordinator = subprocess.Popen(
        [sys.executable, str(REPO / "code" / "main_parallel.py"), "run", "--data",
         str(batch.data), "--pairs", str(batch.pairs_file), "--env", str(batch.root / ".env")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    taker_dir = batch.data / "runs" / taker
    try:
        deadline = time.monotonic() + 60
        while not _coregistering_after_link(small_double, taker, taker_dir):
            assert coordinator.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        coordinator.send_signal(signal.SIGKILL)
    finally:
        coordinator.kill()
        coordinator.wait(timeout=10)
    settings = settings_for(batch, extra)
    assert ledger_sources(settings)[taker] in (None, donor)  # maybe not recorded before the kill
    summary = run_pipeline(settings, report=False)
    assert summary.exit_code == 0 and len(summary.done) == 3
    assert ledger_sources(settings)[taker] == donor  # recorded, or repaired from its logs
    runs = topo_runs(small_double)
    assert runs == Counter({donor: 1, f"{day(1)}_{day(2)}": 1})  # the taker never ran topo

    monkeypatch.setenv("ISCE_DOUBLE_LOG", str(tmp_path / "plain_steps.log"))
    plain_batch, plain_extra = make_stack(tmp_path / "plain", dates=3, neighbours=2)
    plain = settings_for(plain_batch, plain_extra, geometry_reuse=False)
    assert run_pipeline(plain, report=False).exit_code == 0
    ids = batch.pair_ids
    assert products(settings, ids) == products(plain, ids)


def _coregistering_after_link(step_log: Path, taker: str, taker_dir: Path) -> bool:
    """The taker linked its geometry and is in its coregistration phase now."""
    log = taker_dir / "logs" / "geometry.1.log"
    if not log.exists() or "geometry reused from" not in log.read_text():
        return False
    return any(
        row["pair"] == taker and row["step"] == "subsetoverlaps" for row in read_step_log(step_log)
    )


@pytest.mark.slow
def test_reuse_works_the_same_on_a_dask_cluster(tmp_path, small_double):
    """Jobs that wait, are resubmitted with donors and link travel through Dask tasks too."""
    batch, extra = make_stack(tmp_path, dates=3, neighbours=2)
    donor, taker = f"{day(0)}_{day(1)}", f"{day(0)}_{day(2)}"

    def prepare(settings, pair, orbit_files, dem, omp_threads):
        job = prepare_pair(settings, pair, orbit_files, dem, omp_threads)
        env = {"ISCE_DOUBLE_LOG": str(small_double), "ISCE_DOUBLE_SCALE": "0.005"}
        return dataclasses.replace(job, env=tuple(env.items()))

    settings = settings_for(batch, extra, executor="dask", dask_scheduler="local")
    summary = run_pipeline(settings, prepare=prepare, report=False)
    assert summary.exit_code == 0 and len(summary.done) == 3
    assert topo_runs(small_double) == Counter({donor: 1, f"{day(1)}_{day(2)}": 1})
    assert ledger_sources(settings)[taker] == donor and summary.topo_avoided == 1
