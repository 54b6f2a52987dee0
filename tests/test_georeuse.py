"""georeuse: the geometry key, the guard, linking, and the runner taking a donor's geometry.

One-pair level, against the topsApp double (whose topo output depends only on the geometry key
and whose later steps read that geometry). The scheduler side is in test_georeuse_run.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from insar_pipeline.georeuse.key import GeometryKey, geometry_key, guard, predicted_key, read_key
from insar_pipeline.georeuse.link import HELD_MARKER, has_geometry, link_geometry, reused_from
from insar_pipeline.georeuse.plan import GeometryReuse, PairGeometry
from insar_pipeline.inputs.pairs import Pair
from insar_pipeline.pair.prepare import prepare_pair
from insar_pipeline.pair.runner import run_pair
from insar_pipeline.topsapp.clean import _size, clean_command, clean_pair
from insar_pipeline.topsapp.job import PairJob, PairResult, PhaseEvent
from insar_pipeline.topsapp.steps import finished_steps
from pair_factory import PairSetup, double_env, make_pair_setup

# Scenes are 12 days apart from 2025-04-06: 0406, 0418, 0430, 0512.
PRODUCT_FOLDERS = ("merged", "fine_interferogram", "fine_offsets", "fine_coreg")


@dataclasses.dataclass
class Stack:
    setup: PairSetup
    products: list

    def pair(self, first: int, second: int) -> Pair:
        a, b = self.products[first], self.products[second]
        return Pair(f"{a.start:%Y%m%d}_{b.start:%Y%m%d}", a, b, self.setup.settings.swaths, 1)

    def job(self, first: int, second: int, setup: PairSetup | None = None, **changes) -> PairJob:
        setup = setup or self.setup
        return setup.prepare(self.pair(first, second), clean_level="none", **changes)

    def topo_runs(self) -> Counter:
        rows = self.setup.step_log_rows()
        return Counter(r["pair"] for r in rows if r["step"] == "topo" and r["outcome"] == "ok")


def make_stack(tmp_path: Path, dates: int = 3, **kwargs) -> Stack:
    setup = make_pair_setup(tmp_path, n_pairs=dates - 1, **kwargs)
    return Stack(setup, [setup.pairs[0].reference, *(pair.secondary for pair in setup.pairs)])


@pytest.fixture
def stack(tmp_path) -> Stack:
    return make_stack(tmp_path)


def topsapp(job: PairJob, first: str, last: str, **env: str) -> None:
    """Run the double over some steps in the pair folder, as the runner would."""
    extra = dict(double_env(**env))
    done = subprocess.run(
        [job.topsapp, "topsApp.xml", f"--start={first}", f"--end={last}"],
        cwd=job.run_dir,
        env={**os.environ, **extra},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def run(job: PairJob) -> tuple:
    events: list[PhaseEvent] = []
    return run_pair(job, events.append), events


def tree(folder: Path, names=PRODUCT_FOLDERS) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for name in names
        for path in sorted((folder / name).rglob("*"))
        if path.is_file()
    }


# -- the key ---------------------------------------------------------------------------------
def test_pairs_of_one_reference_share_a_predicted_key_and_others_do_not(stack):
    a, b, c = (stack.job(*ids).run_dir for ids in ((0, 1), (0, 2), (1, 2)))
    assert predicted_key(a) == predicted_key(b) is not None
    assert predicted_key(a) != predicted_key(c)
    key = predicted_key(a)
    assert key.reference.endswith(stack.products[0].name + ".SAFE")
    assert key.reference_orbit == stack.setup.orbit_files[stack.products[0].name].name
    assert key.swaths == (1, 2, 3) and key.region_of_interest == (51.5, 52.5, -129.5, -127.0)
    assert geometry_key(a) is None  # the common-burst range comes with verifyDEM
    assert predicted_key(a).differences(predicted_key(c))[0].startswith("reference: ")


def test_the_full_key_adds_the_common_burst_range_after_verifydem(stack):
    job = stack.job(0, 1)
    topsapp(job, "startup", "verifyDEM")
    key = geometry_key(job.run_dir)
    assert key is not None and key.predicted() == predicted_key(job.run_dir)
    first = key.common_bursts[0][0]
    assert key.common_bursts == ((first, 2), (first, 2), (first, 2))


def test_gpu_topo_or_an_unknown_orbit_is_never_reused(stack):
    job = stack.job(0, 1)
    xml = job.run_dir / "topsApp.xml"
    text = xml.read_text()
    xml.write_text(text.replace("</topsApp>", ""), encoding="utf-8")  # not XML any more
    assert read_key(job.run_dir, with_bursts=False)[1].startswith("cannot read topsApp.xml")
    gpu = '<property name="use GPU">True</property>\n  </component>\n</topsApp>'
    xml.write_text(text.replace("  </component>\n</topsApp>", gpu))
    assert read_key(job.run_dir, with_bursts=False) == (
        None,
        "use GPU is on (reuse is verified for CPU topo only)",
    )
    xml.write_text(text)
    for orbit in (job.run_dir / "orbits").iterdir():
        orbit.unlink()
    key, why = read_key(job.run_dir, with_bursts=False)
    assert key is None and why.startswith("no orbit file in orbits/ covers S1A_IW_SLC")


# -- the guard -------------------------------------------------------------------------------
def donor_and_taker(stack: Stack, taker_setup: PairSetup | None = None, **taker_env: str):
    """Pair 0406_0418 through topo and pair 0406_0430 through verifyDEM."""
    donor, taker = stack.job(0, 1), stack.job(0, 2, setup=taker_setup)
    topsapp(donor, "startup", "topo")
    topsapp(taker, "startup", "verifyDEM", **taker_env)
    return donor.run_dir, taker.run_dir


def test_the_guard_passes_for_the_same_geometry_and_linking_gives_topo_s_bytes(stack):
    donor, taker = donor_and_taker(stack)
    assert guard(donor, taker) == []
    linked = link_geometry(donor, taker)
    assert linked == 3 * 2 * 4 * 3  # swaths x bursts x rasters x (raster, .xml, .vrt)
    assert "topo" in finished_steps(taker) and has_geometry(taker)
    assert (taker / "PICKLE" / "topo.xml").read_bytes() == (
        taker / "PICKLE" / "verifyDEM.xml"
    ).read_bytes()
    theirs = next((donor / "geom_reference" / "IW2").glob("lat_*.rdr"))
    mine = taker / "geom_reference" / "IW2" / theirs.name
    assert os.path.samestat(mine.stat(), theirs.stat())  # a hard link: no second copy
    # topo in the taker's folder would have written exactly these bytes
    computed = make_stack(stack.setup.data_dir.parent / "plain").job(0, 2)
    topsapp(computed, "startup", "topo")
    assert tree(taker, ["geom_reference"]) == tree(computed.run_dir, ["geom_reference"])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("region_of_interest", "region of interest: (51.6, 52.4, -129.0, -127.5) vs (51.5,"),
        ("orbit", "reference orbit: S1A_OPER_AUX_POEORB_OPOD_20250426T090000"),
        ("bursts", "numberofcommonbursts: [1, 1, 1] vs [2, 2, 2]"),
        ("metadata", "reference/IW1.xml differs from the donor's"),
        ("donor_unfinished", "the donor's topo has not finished"),
        ("donor_cleaned", "donor's geometry lacks geom_reference/IW1/lat_"),
    ],
)
def test_the_guard_refuses_each_condition_of_the_contract(tmp_path, change, reason):
    stack = make_stack(tmp_path)
    taker_setup, env = stack.setup, {}
    if change == "region_of_interest":
        taker_setup = stack.setup.with_settings(region_of_interest="51.6,52.4,-129,-127.5")
    elif change == "orbit":  # another precise orbit file of the same day for the reference
        chosen = stack.setup.orbit_files[stack.products[0].name]
        other = chosen.with_name(
            chosen.name.replace("_OPOD_20250426T080000", "_OPOD_20250426T090000")
        )
        other.write_bytes(chosen.read_bytes())
        orbits = {**stack.setup.orbit_files, stack.products[0].name: other}
        taker_setup = dataclasses.replace(stack.setup, orbit_files=orbits)
    elif change == "bursts":  # the secondary's frame slid by one burst: fewer common bursts
        env = {"burst_shift": "20250430=1"}
    donor, taker = donor_and_taker(stack, taker_setup, **env)
    if change == "metadata":
        path = taker / "reference" / "IW1.xml"
        path.write_text(path.read_text().replace("<swath>1</swath>", "<swath>1 </swath>"))
    elif change == "donor_unfinished":
        (donor / "PICKLE" / "topo").unlink()
    elif change == "donor_cleaned":
        for path in (donor / "geom_reference").rglob("lat_*.rdr"):
            path.unlink()
    reasons = guard(donor, taker)
    assert any(r.startswith(reason) for r in reasons), reasons


def test_the_guard_wants_this_pair_just_after_verifydem(stack):
    donor, taker = donor_and_taker(stack)
    assert guard(donor, donor) == ["the donor is this pair"]
    link_geometry(donor, taker)
    assert guard(donor, taker)[0].startswith("this pair is not just after verifyDEM")


# -- the runner ------------------------------------------------------------------------------
def test_a_pair_takes_a_donor_s_geometry_and_gives_the_products_of_its_own_topo(stack, tmp_path):
    donor = stack.job(0, 1)
    assert run(donor)[0].status == "done"
    taker = stack.job(0, 2, geometry_donors=(donor.run_dir,))
    result, events = run(taker)
    assert result.status == "done", result.error
    assert result.geometry_from == donor.pair_id == reused_from(taker.run_dir)
    assert stack.topo_runs() == Counter({donor.pair_id: 1})  # no topo in the taker's folder
    geometry = [e for e in events if e.phase == "geometry"]
    assert [(e.kind, e.ok, e.reused_from, e.pid) for e in geometry] == [
        ("start", None, None, None),
        ("end", True, donor.pair_id, None),
    ]
    log_text = Path(geometry[1].log_path).read_text()
    assert log_text.startswith("# insar-pipeline ") and f"reused from {donor.pair_id}" in log_text
    # the same pair with its own topo, in another data folder: identical products
    plain = make_stack(tmp_path / "plain")
    computed = plain.job(0, 2)
    assert run(computed)[0].status == "done"
    assert plain.topo_runs() == Counter({computed.pair_id: 1})
    mine, theirs = tree(taker.run_dir), tree(computed.run_dir)
    assert len(mine) > 50 and mine == theirs


def test_a_pair_runs_its_own_topo_when_no_donor_fits_and_logs_why(stack, caplog):
    donor = stack.job(0, 1)
    topsapp(donor, "startup", "topo")
    taker = stack.job(
        0, 2, geometry_donors=(donor.run_dir,), env=double_env(burst_shift="20250430=1")
    )
    with caplog.at_level(logging.INFO, logger="insar_pipeline.georeuse.link"):
        result, _ = run(taker)
    assert result.status == "done" and result.geometry_from is None
    assert stack.topo_runs()[taker.pair_id] == 1
    assert f"not reusing the geometry of {donor.pair_id}: numberofcommonbursts" in caplog.text
    assert "no donor's geometry fits: running topo" in caplog.text


def test_waiting_for_a_donor_stops_before_topo_and_resumes_there(stack):
    waiting = stack.job(0, 2, wait_for_geometry=True)
    result, events = run(waiting)
    assert result.status == "waiting" and result.phases_done == ("preprocess",)
    assert result.error is None and {e.phase for e in events} == {"preprocess"}
    donor = stack.job(0, 1)
    topsapp(donor, "startup", "topo")
    again, events = run(dataclasses.replace(waiting, geometry_donors=(donor.run_dir,)))
    assert again.status == "done" and again.geometry_from == donor.pair_id
    assert "preprocess" not in {e.phase for e in events}
    assert stack.topo_runs() == Counter({donor.pair_id: 1})


def test_an_interrupted_link_is_made_again_from_scratch(stack):
    donor, taker = donor_and_taker(stack)
    # a kill mid-link: some links and the .xml checkpoint written, not PICKLE/topo
    link_geometry(donor, taker)
    (taker / "PICKLE" / "topo").unlink()
    stray = taker / "geom_reference" / "IW1" / "stray.rdr"
    stray.write_bytes(b"partial")
    assert "topo" not in finished_steps(taker) and guard(donor, taker) == []
    job = stack.job(0, 2, geometry_donors=(donor,))
    assert run(job)[0].status == "done"
    assert not stray.exists() and has_geometry(taker)
    assert stack.topo_runs() == Counter({donor.name: 1})


def test_topo_rerun_in_a_folder_sharing_files_leaves_the_donor_untouched(stack):
    donor, taker = donor_and_taker(stack)
    link_geometry(donor, taker)
    before = tree(donor, ["geom_reference"])
    for name in ("topo", "topo.xml"):  # e.g. the user deleted the checkpoint to redo topo
        (taker / "PICKLE" / name).unlink()
    assert run(stack.job(0, 2))[0].status == "done"  # topo ran in the taker's folder
    assert stack.topo_runs()[taker.name] == 1
    assert tree(donor, ["geom_reference"]) == before
    lat = next((donor / "geom_reference" / "IW1").glob("lat_*.rdr"))
    assert lat.stat().st_nlink == 1  # the taker unlinked before topo rewrote its own files


# -- cleaning --------------------------------------------------------------------------------
def test_a_held_geometry_survives_cleaning_until_released_and_takers_outlive_the_donor(stack):
    donor = stack.job(0, 1, keep_geometry=True)
    donor = dataclasses.replace(donor, clean_level="standard")
    result, _ = run(donor)
    assert result.status == "done"
    assert has_geometry(donor.run_dir) and not (donor.run_dir / "fine_coreg").exists()
    assert (donor.run_dir / HELD_MARKER).is_file()
    taker = stack.job(0, 2, geometry_donors=(donor.run_dir,))
    taken, _ = run(taker)
    assert taken.status == "done" and taken.geometry_from == donor.pair_id
    assert stack.topo_runs() == Counter({donor.pair_id: 1})
    released = clean_pair(donor.run_dir, "standard")
    assert released.bytes_after < result.bytes_after_clean
    assert not (donor.run_dir / "geom_reference").exists()
    assert not (donor.run_dir / HELD_MARKER).exists() and not (donor.run_dir / "orbits").exists()
    assert has_geometry(taker.run_dir)  # hard links: the data lives on in the taker's folder
    before = tree(taker.run_dir, ["geom_reference"])
    shutil.rmtree(donor.run_dir)  # even the whole donor folder
    assert tree(taker.run_dir, ["geom_reference"]) == before
    assert sum(name.startswith("geom_reference/IW") for name in before) == 72


def test_clean_totals_count_a_geometry_shared_by_pairs_once(stack, capsys):
    donor = stack.job(0, 1)
    assert run(donor)[0].status == "done"
    taker = stack.job(0, 2, geometry_donors=(donor.run_dir,))
    assert run(taker)[0].status == "done"
    sizes: dict[tuple[int, int], int] = {}
    per_pair = 0
    for folder in (donor.run_dir, taker.run_dir):
        own = {}
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                status = path.lstat()
                own[(status.st_dev, status.st_ino)] = status.st_size
        per_pair += sum(own.values())
        sizes.update(own)
    shared = sum(sizes.values())
    assert shared < per_pair - 10_000  # the geometry is stored once
    args = argparse.Namespace(level="none", pair_ids=[donor.pair_id, taker.pair_id])
    assert clean_command(stack.setup.settings, args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"total (none): {_size(shared)} -> {_size(shared)} (0.0% removed)"
    )


def test_prepare_leaves_reuse_off_the_job_by_default(stack):
    job = prepare_pair(
        stack.setup.settings, stack.pair(0, 1), stack.setup.orbit_files, stack.setup.dem, 1
    )
    assert (job.geometry_donors, job.wait_for_geometry, job.keep_geometry) == ((), False, False)


def test_products_depend_on_the_geometry_so_a_wrong_one_would_show(stack, tmp_path):
    donor = stack.job(0, 1)
    topsapp(donor, "startup", "topo")
    lat = next((donor.run_dir / "geom_reference" / "IW1").glob("lat_*.rdr"))
    data = bytearray(lat.read_bytes())
    data[0] ^= 1  # one bit of the donor's geometry (the guard reads metadata, not pixels)
    lat.write_bytes(bytes(data))
    taker = stack.job(0, 2, geometry_donors=(donor.run_dir,))
    assert run(taker)[0].status == "done"
    computed = make_stack(tmp_path / "plain").job(0, 2)
    assert run(computed)[0].status == "done"
    mine, theirs = tree(taker.run_dir), tree(computed.run_dir)
    differing = {name for name in mine if mine[name] != theirs.get(name)}
    assert {"merged/filt_topophase.unw.geo", "merged/los.rdr", "merged/phsig.cor"} <= differing
    assert any(name.startswith("fine_offsets/IW1/") for name in differing)


# -- the scheduler's plan (pure) -------------------------------------------------------------
def plan_of(*specs: tuple[str, str | None, str]) -> GeometryReuse:
    """specs: (pair id, reference or None (never shared), state), the state one of new,
    at_topo, has (topo done, to run), done (finished, geometry there), held (finished, geometry
    held for others by an earlier run)."""
    pairs = [
        PairGeometry(
            pair_id=pair_id,
            run_dir=Path("/runs") / pair_id,
            key=None if reference is None else _key(reference),
            topo_done=state in ("has", "done", "held"),
            has_geometry=state in ("has", "done", "held"),
            held=state == "held",
            at_topo=state == "at_topo",
            to_run=state not in ("done", "held"),
            reused_from=None,
        )
        for pair_id, reference, state in specs
    ]
    return GeometryReuse(pairs, "geometry")


def _key(reference: str) -> GeometryKey:
    return GeometryKey(reference, f"{reference}.EOF", "vv", (1, 2, 3), None, "/dem/dem.wgs84")


def fake_job(pair_id: str) -> PairJob:
    return PairJob(pair_id, Path("/runs") / pair_id, (1,), (), "topsApp.py", 0, None, 1, "standard")


def ended(pair_id: str, ok: bool = True, reused_from: str | None = None) -> PhaseEvent:
    return PhaseEvent(pair_id, "geometry", 1, "end", 0.0, 0, ok=ok, wall_s=5.0,
                      reused_from=reused_from)  # fmt: skip


def outcome(pair_id: str, status: str) -> PairResult:
    return PairResult(pair_id, status, (), {}, None, None, None, None, None)


def test_the_plan_puts_donors_first_then_other_topo_runs_then_takers():
    reuse = plan_of(
        ("a1", "A", "new"), ("b1", "B", "new"), ("b2", "B", "new"), ("c1", "C", "new"),
        ("b3", "B", "new"), ("a2", "A", "new"), ("x", None, "new"), ("d1", "D", "new"),
        ("d2", "D", "has"),
    )  # fmt: skip
    order = reuse.order(["a1", "b1", "b2", "c1", "b3", "a2", "x", "d1"])
    # B (3 pairs) before A (2); then c1 and x, which run their own topo; then the takers
    # (d1 can take d2's geometry at once).
    assert order == ["b1", "a1", "c1", "x", "b2", "b3", "a2", "d1"]


def test_the_plan_waits_links_and_hands_over_when_the_donor_fails():
    reuse = plan_of(("a1", "A", "new"), ("a2", "A", "new"), ("a3", "A", "at_topo"))
    assert reuse.order(["a1", "a2", "a3"])[0] == "a3"  # already at topo: reaches it first
    donor = reuse.job_for(fake_job("a3"))
    assert (donor.keep_geometry, donor.wait_for_geometry, donor.geometry_donors) == (
        True,
        False,
        (),
    )
    waiting = reuse.job_for(fake_job("a1"))
    assert waiting.wait_for_geometry and reuse.is_ready("a2")  # a2 may preprocess meanwhile
    assert reuse.on_result(outcome("a1", "waiting")) == [] and not reuse.is_ready("a1")
    # the donor fails in topo: a1 becomes the donor
    assert reuse.on_result(outcome("a3", "failed")) == [] and reuse.is_ready("a1")
    second = reuse.job_for(fake_job("a1"))
    assert not second.wait_for_geometry and not second.geometry_donors and second.keep_geometry
    assert reuse.on_event(ended("a1")) == []  # geometry there; a2 still needs it: held
    taker = reuse.job_for(fake_job("a2"))
    assert taker.geometry_donors == (Path("/runs/a1"),) and not taker.keep_geometry
    assert reuse.on_result(outcome("a1", "done")) == []  # done, kept for a2
    assert reuse.still_held() == ["a1"]
    assert reuse.on_event(ended("a2", reused_from="a1")) == [Path("/runs/a1")]  # released
    assert reuse.reused == {"a2": "a1"} and reuse.computed_s == {"a1": 5.0}
    assert reuse.still_held() == []


def test_a_held_geometry_of_an_earlier_run_is_released_once_nobody_needs_it():
    held = plan_of(("a1", "A", "held"), ("a2", "A", "new"))
    assert held.releases() == [] and held.is_ready("a2")
    assert held.job_for(fake_job("a2")).geometry_donors == (Path("/runs/a1"),)
    assert held.on_event(ended("a2", reused_from="a1")) == [Path("/runs/a1")]
    assert plan_of(("a1", "A", "held"), ("b1", "B", "new")).releases() == [Path("/runs/a1")]
    # a geometry kept by CLEAN=none is a donor too, but never cleaned by the run
    kept = plan_of(("a1", "A", "done"), ("a2", "A", "new"))
    assert kept.job_for(fake_job("a2")).geometry_donors == (Path("/runs/a1"),)
    assert kept.on_event(ended("a2", reused_from="a1")) == [] and kept.releases() == []
