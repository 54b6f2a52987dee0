"""The phase judge: topsApp's known failures, each with one line saying what to do.

Pure tests of `classify` on ISCE's own messages, then each known failure reproduced with the
topsApp double through the runner (the line users see in the ledger, `status` and the report).
"""

from __future__ import annotations

import pytest

from insar_pipeline.pair.runner import run_pair
from insar_pipeline.topsapp.checks import ESD_COHERENCE, KNOWN_FAILURES, classify
from insar_pipeline.topsapp.xml import run_facts
from pair_factory import double_env, make_pair_setup

TRACEBACK = 'Traceback (most recent call last):\n  File "topsApp.py", line 1, in <module>\n'
FACTS = run_facts({"esdcoherencethreshold": "0.8", "unwrappername": "snaphu_mcf"})
UNWRAP_STEPS = ("unwrap", "unwrap2stage")


@pytest.mark.parametrize(
    "returncode, log, cause, says",
    [
        (
            1,
            TRACEBACK + "Exception: Coherence threshold too strict. No points left for reliable "
            "ESD estimate",
            ESD_COHERENCE,
            "ESD_COHERENCE_THRESHOLD=0.8",
        ),
        (
            1,
            TRACEBACK + "Exception: Could not determine a suitable burst offset",
            "no-burst-offset",
            "the two dates share no burst",
        ),
        (
            1,
            TRACEBACK + "OSError: [Errno 28] No space left on device: 'merged/topophase.flat'",
            "disk-full",
            "the disk is full (No space left on device): free space",
        ),
        (1, "ERROR 3: write failed: errno 28 [Errno 28]", "disk-full", "free space in the data"),
        (
            0,
            "No common bursts found for swath 2\n",
            "burst-count",
            "swath 2 has none in common",
        ),
        (
            0,
            "No common bursts found for swath 1\nNo common bursts found for swath 2\n"
            "No swaths contain any burst overlaps ... cannot continue for interferometry "
            "applications\n",
            "no-overlap",
            "no burst of the secondary overlaps the reference",
        ),
    ],
)
def test_known_failures_are_explained_in_one_line(returncode, log, cause, says):
    verdict = classify(returncode, log, log_name="logs/x.1.log", facts=FACTS)
    assert not verdict.ok and not verdict.transient and verdict.cause == cause
    assert says in verdict.reason and "\n" not in verdict.reason
    assert verdict.reason.endswith("; see logs/x.1.log")


def test_a_time_out_while_unwrapping_is_snaphu_and_not_retried():
    verdict = classify(-9, "", timed_out=True, timeout_s=5400, steps=UNWRAP_STEPS, facts=FACTS)
    assert verdict.cause == "unwrap-timeout" and not verdict.transient
    assert verdict.reason.startswith("unwrapping (snaphu_mcf) ran past PHASE_TIMEOUT_MIN (90 min)")
    assert "RANGE_LOOKS" in verdict.reason and "REGION_OF_INTEREST" in verdict.reason


def test_a_time_out_elsewhere_stays_a_transient_failure():
    verdict = classify(-9, "", timed_out=True, timeout_s=60, steps=("topo",), facts=FACTS)
    assert verdict.cause is None and verdict.transient and "timed out after 60 s" in verdict.reason


def test_every_known_failure_says_what_to_do_or_is_transient():
    for known in KNOWN_FAILURES:
        text = known.explanation.lower()
        assert known.transient or any(
            verb in text for verb in ("set ", "check", "free ", "take ", "rerun", "know", "missing")
        ), known.cause


# -- with the topsApp double ------------------------------------------------------------------
@pytest.fixture
def setup(tmp_path):
    return make_pair_setup(tmp_path, max_retries=2)


def run(setup, **faults):
    return run_pair(setup.prepare(env=double_env(**faults)))


def test_dates_without_any_common_burst(setup):
    secondary = setup.pairs[0].secondary.start.strftime("%Y%m%d")
    result = run(setup, burst_shift=f"{secondary}=3")  # the secondary frame slid 3 bursts
    assert result.status == "failed" and result.attempts == {"preprocess": 1}
    assert result.error.startswith("preprocess: the two dates share no burst")
    assert "Could not determine a suitable burst offset" in result.error


def test_a_swath_whose_bursts_differ_between_the_dates(setup):
    secondary = setup.pairs[0].secondary.start.strftime("%Y%m%d")
    result = run(setup, burst_shift=f"{secondary}:IW3=2")  # IW3: no burst in common
    assert result.status == "failed" and result.attempts == {"preprocess": 1}
    assert result.error.startswith("preprocess: the dates do not cover the same bursts: swath 3")
    assert "set SWATHS" in result.error


def test_snaphu_past_the_phase_time_out(setup):
    # 10 s: more than any other phase needs on a loaded machine, far less than the sleep
    job = setup.prepare(phase_timeout_s=10.0, env=double_env(sleep="unwrap=120"))
    result = run_pair(job)
    assert result.status == "failed" and result.failed_phase == "unwrap"
    assert result.attempts["unwrap"] == 1  # a rerun would take as long: not retried
    assert "unwrapping (snaphu_mcf) ran past PHASE_TIMEOUT_MIN (10 s)" in result.error


def test_a_full_disk(setup):
    result = run(setup, fail_step="fineresamp", fail_kind="nospace")
    assert result.status == "failed" and result.attempts["coregistration"] == 1
    assert result.error.startswith("coregistration: the disk is full (No space left on device)")
    assert "free space in the data folder" in result.error and "resumes" in result.error
