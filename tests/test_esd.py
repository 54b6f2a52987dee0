"""ESD: `ESD=auto|true|false`, and a pair that drops ESD when its burst overlaps are incoherent.

Real topsApp fails in `esd` (coregistration) with `Exception: Coherence threshold too strict. No
points left for reliable ESD estimate` when no overlap pixel passes `ESD coherence threshold`
(isce2 issue 991). The double does the same with ISCE_DOUBLE_OVERLAP_COHERENCE below it.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter

import pytest

from batch_factory import make_batch, prepare_inputs
from insar_pipeline.errors import InputError
from insar_pipeline.ledger.schema import MIGRATIONS, SCHEMA_VERSION
from insar_pipeline.ledger.store import Ledger
from insar_pipeline.pair.decisions import (
    DECISIONS_NAME,
    WITHOUT_ESD_NOTE,
    PairDecisions,
    pair_settings,
    read_decisions,
    record_decisions,
)
from insar_pipeline.pair.runner import run_pair
from insar_pipeline.report.status import collect_status, render_status
from insar_pipeline.run.driver import run_pipeline
from insar_pipeline.topsapp.steps import STEPS, finished_steps
from insar_pipeline.topsapp.xml import XML_NAME, read_properties, setting_changes
from pair_factory import double_env, make_pair_setup
from test_scheduler import settings_for

ESD_MESSAGE = "Exception: Coherence threshold too strict. No points left for reliable ESD estimate"
PIPELINE_STEPS = STEPS[: STEPS.index("geocode") + 1]
BEFORE_ESD = STEPS[STEPS.index("subsetoverlaps") : STEPS.index("esd")]  # ran twice
LOW = double_env(overlap_coherence=0.3)  # every burst-overlap pixel at coherence 0.3


def run(job):
    events = []
    return run_pair(job, events.append), events


def xml_of(job) -> dict[str, str]:
    return read_properties((job.run_dir / XML_NAME).read_bytes())


def completed(setup) -> Counter:
    return Counter(row["step"] for row in setup.step_log_rows() if row["outcome"] == "ok")


# -- topsApp.xml ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "esd, do_esd, threshold",
    [("auto", "True", "0.85"), ("true", "True", "0.85"), ("false", "False", None)],
)
def test_the_xml_says_whether_esd_runs_and_with_which_threshold(tmp_path, esd, do_esd, threshold):
    job = make_pair_setup(tmp_path, esd=esd).prepare()
    properties = xml_of(job)
    assert properties["doesd"] == do_esd
    assert properties.get("esdcoherencethreshold") == threshold
    assert (job.no_esd_xml is not None) == (esd == "auto")  # only auto may drop ESD


def test_the_threshold_setting_reaches_the_xml(tmp_path):
    job = make_pair_setup(tmp_path, esd_coherence_threshold=0.7).prepare()
    assert xml_of(job)["esdcoherencethreshold"] == "0.7"


def test_an_absent_threshold_is_isces_default_not_a_change():
    old = {"doesd": "True"}  # a topsApp.xml written before the threshold was
    assert setting_changes(old, {"doesd": "True", "esdcoherencethreshold": "0.85"}) == ()
    (change,) = setting_changes(old, {"doesd": "True", "esdcoherencethreshold": "0.7"})
    assert (change.step, change.setting) == ("esd", "ESD_COHERENCE_THRESHOLD")


def test_the_decision_applies_under_auto_only(tmp_path):
    setup = make_pair_setup(tmp_path)
    run_dir = setup.settings.run_dir(setup.pairs[0].id)
    run_dir.mkdir(parents=True)
    record_decisions(run_dir, PairDecisions(esd_disabled=True, reason="test"))
    assert pair_settings(setup.settings, run_dir).esd == "false"
    assert pair_settings(setup.settings.with_changes(esd="true"), run_dir).esd == "true"


# -- ESD=auto ---------------------------------------------------------------------------------
def test_auto_a_low_coherence_pair_is_done_without_esd_and_it_costs_no_retry(tmp_path):
    setup = make_pair_setup(tmp_path, max_retries=0)
    job = setup.prepare(env=LOW)
    assert xml_of(job)["doesd"] == "True"
    result, events = run(job)

    assert result.status == "done", result.error
    assert result.without_esd and result.attempts["coregistration"] == 2
    decisions = read_decisions(job.run_dir)
    assert decisions.esd_disabled and "0.85" in decisions.reason
    properties = xml_of(job)
    assert properties["doesd"] == "False" and "esdcoherencethreshold" not in properties
    assert job.run_dir.joinpath(XML_NAME).read_bytes() == job.no_esd_xml
    assert finished_steps(job.run_dir) == PIPELINE_STEPS
    # The steps before esd ran with ESD, then again as no-ops; nothing else ran twice.
    assert completed(setup) == Counter(PIPELINE_STEPS) + Counter(BEFORE_ESD)
    assert [r["outcome"] for r in setup.step_log_rows() if r["step"] == "esd"] == ["failed", "ok"]
    ends = [e for e in events if e.kind == "end" and e.phase == "coregistration"]
    assert [e.ok for e in ends] == [False, True] and ends[0].transient is False
    first_log = job.run_dir / "logs" / "coregistration.1.log"
    assert first_log.read_text().rstrip().endswith(ESD_MESSAGE)  # ISCE's traceback, verbatim
    assert "--start=subsetoverlaps " in (job.run_dir / "logs" / "coregistration.2.log").read_text()
    for folder in ("ESD", "coarse_offsets", "coarse_interferogram", "reference/overlaps"):
        assert not (job.run_dir / folder).exists(), folder  # ESD leftovers are gone


def test_auto_a_rerun_of_a_pair_done_without_esd_is_not_refused(tmp_path):
    setup = make_pair_setup(tmp_path)
    first, _ = run(setup.prepare(env=LOW))
    assert first.status == "done" and first.without_esd
    xml = setup.settings.run_dir(setup.pairs[0].id) / XML_NAME
    before = (xml.read_bytes(), xml.stat().st_mtime_ns)

    again = setup.prepare()  # the same settings (ESD=auto): the pair's own XML, untouched
    assert (xml.read_bytes(), xml.stat().st_mtime_ns) == before
    assert again.no_esd_xml is None  # nothing left to drop
    rows = len(setup.step_log_rows())
    second, _ = run(again)
    assert second.status == "done" and second.without_esd
    assert len(setup.step_log_rows()) == rows  # no topsApp ran


@pytest.mark.parametrize(
    "change, setting",
    [({"esd": "true"}, "ESD (doesd: False -> True)"), ({"range_looks": 9}, "RANGE_LOOKS")],
)
def test_a_users_real_change_after_the_decision_is_still_refused(tmp_path, change, setting):
    setup = make_pair_setup(tmp_path)
    assert run(setup.prepare(env=LOW))[0].without_esd
    with pytest.raises(InputError, match="settings changed") as refused:
        setup.with_settings(**change).prepare()
    assert setting in str(refused.value)
    assert setup.with_settings(esd="false").prepare()  # false asks for what the pair runs


def test_auto_with_coherent_overlaps_keeps_esd(tmp_path):
    setup = make_pair_setup(tmp_path)
    result, _ = run(setup.prepare())
    assert result.status == "done" and not result.without_esd
    assert result.attempts["coregistration"] == 1
    assert not (setup.settings.run_dir(setup.pairs[0].id) / DECISIONS_NAME).exists()
    assert completed(setup) == Counter(PIPELINE_STEPS)  # esd ran once, and passed


# -- ESD=true and ESD=false -------------------------------------------------------------------
def test_true_a_low_coherence_pair_fails_with_what_to_do(tmp_path):
    setup = make_pair_setup(tmp_path, esd="true", max_retries=2)
    job = setup.prepare(env=LOW)
    result, _ = run(job)
    assert result.status == "failed" and result.failed_phase == "coregistration"
    assert result.attempts == {**result.attempts, "coregistration": 1}  # fatal: no retry
    error = result.error
    assert "\n" not in error and error.startswith("coregistration: ESD found no burst-overlap")
    assert "ESD_COHERENCE_THRESHOLD=0.85" in error and "set ESD=auto" in error
    assert "ESD=false" in error and "lower ESD_COHERENCE_THRESHOLD" in error
    assert ESD_MESSAGE.removeprefix("Exception: ") in error
    assert not (job.run_dir / DECISIONS_NAME).exists() and xml_of(job)["doesd"] == "True"
    assert not result.without_esd


def test_true_with_a_lower_threshold_esd_passes(tmp_path):
    setup = make_pair_setup(tmp_path, esd="true", esd_coherence_threshold=0.2)
    result, _ = run(setup.prepare(env=LOW))
    assert result.status == "done" and not result.without_esd


def test_false_coregisters_geometrically_with_no_rerun(tmp_path):
    setup = make_pair_setup(tmp_path, esd="false")
    job = setup.prepare(env=LOW)
    result, _ = run(job)
    assert result.status == "done" and result.attempts["coregistration"] == 1
    assert not result.without_esd  # the user's choice, not the pair's: nothing to flag
    assert not (job.run_dir / DECISIONS_NAME).exists() and not (job.run_dir / "ESD").exists()
    assert completed(setup) == Counter(PIPELINE_STEPS)


# -- ledger, status, summary, report ----------------------------------------------------------
def test_a_run_notes_the_pair_without_esd_everywhere_and_reruns_cleanly(
    tmp_path, monkeypatch, capsys
):
    batch = make_batch(tmp_path, 2)
    settings = settings_for(batch, workers=2, cores=2, **prepare_inputs(batch))
    low = batch.pair_ids[1]
    monkeypatch.setenv("ISCE_DOUBLE_FAIL_PAIRS", low)
    monkeypatch.setenv("ISCE_DOUBLE_OVERLAP_COHERENCE", "0.3")

    summary = run_pipeline(settings)
    assert summary.exit_code == 0 and set(summary.done) == set(batch.pair_ids)
    out = capsys.readouterr().out
    assert f"{low}: {WITHOUT_ESD_NOTE}" in out and f"{batch.pair_ids[0]}:" not in out

    ledger = Ledger.open_reader(batch.data / "runs")
    try:
        rows = {row.pair_id: row for row in ledger.pairs()}
        coreg = [r for r in ledger.phase_rows(low) if r["phase"] == "coregistration"]
    finally:
        ledger.close()
    assert rows[low].without_esd and not rows[batch.pair_ids[0]].without_esd
    assert [(r["ok"], r["transient"]) for r in coreg] == [(0, 0), (1, None)]
    assert "ESD found no burst-overlap pixel" in coreg[0]["error"]
    assert "rerunning from subsetoverlaps without ESD" in coreg[0]["error"]

    document = collect_status(batch.data / "runs")
    entries = {entry["pair"]: entry for entry in document["pairs"]}
    assert entries[low]["without_esd"] is True and entries[low]["note"] == WITHOUT_ESD_NOTE
    assert entries[batch.pair_ids[0]]["note"] is None and document["without_esd"] == [low]
    assert json.loads(json.dumps(document)) == document
    assert f"{low}: {WITHOUT_ESD_NOTE}" in render_status(document)
    page = (batch.data / "runs" / "report.html").read_text()
    assert page.count(WITHOUT_ESD_NOTE) == 2  # the summary row and the pair's row
    assert f"1 pair {WITHOUT_ESD_NOTE} ({low})" in page

    again = run_pipeline(settings)  # everything done: nothing refused, nothing rerun
    assert again.exit_code == 0 and set(again.done) == set(batch.pair_ids)
    assert f"{low}: {WITHOUT_ESD_NOTE}" in capsys.readouterr().out


def test_a_ledger_of_the_previous_schema_still_opens(tmp_path):
    conn = sqlite3.connect(tmp_path / "ledger.sqlite")
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied REAL)")
    for version, script in enumerate(MIGRATIONS[:-1], 1):
        conn.executescript(script)
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
    conn.execute("INSERT INTO pairs (pair_id, status) VALUES ('20250406_20250418', 'done')")
    conn.commit()
    conn.close()

    reader = Ledger.open_reader(tmp_path)  # status/report read it as it is
    assert reader is not None and reader.schema_version() == SCHEMA_VERSION - 1
    (row,) = reader.pairs()
    assert row.status == "done" and row.without_esd is False
    reader.close()
    writer = Ledger.open_writer(tmp_path)  # `run` upgrades it
    assert writer.schema_version() == SCHEMA_VERSION
    (row,) = writer.pairs()
    assert row.status == "done" and row.without_esd is False
    writer.close()
