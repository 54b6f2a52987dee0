"""Did a topsApp phase work, and if not, is it worth retrying? (pure, plus file-existence checks)

ISCE2 does not always say when it failed (ISCE2_CONTRACT.md section 2): `preprocess` exits 0 when
a swath could not be extracted, `computeBaselines` exits 0 when no burst overlaps, a bad step name
exits 0. So a phase counts as done only when topsApp exited 0, the log shows none of those
messages and the files each of its steps must write exist. A failure is transient when a rerun
may well succeed (killed by a signal, out of memory, an I/O error, a time-out) and fatal when it
would fail the same way (bad configuration, missing input, full disk, a silent failure).

The failures users meet most are data, `KNOWN_FAILURES`: a pattern of ISCE's own message, transient
or fatal, and one line saying what happened and what to do; that line is the pair's error in the
ledger, `status` and the report. A verdict names the known cause, so the runner can act on one
(`ESD=auto` answers ESD_COHERENCE by coregistering without ESD).
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from insar_pipeline.topsapp.xml import RunFacts

TAIL_LINES = 20
_LOG_READ_LIMIT = 1 << 20  # the last MiB of a log: where the traceback and messages are

ESD_COHERENCE = "esd-coherence"  # the cause the runner answers by dropping ESD (ESD=auto)


@dataclass(frozen=True)
class KnownFailure:
    """A way topsApp fails that users meet, and the one line that says what to do about it.

    `explanation` may use {match} (the text matched), {group} (its first group), {threshold}
    (ESD coherence threshold), {unwrapper} and {timeout}.
    """

    cause: str
    pattern: re.Pattern[str]  # searched in the phase's log, line by line
    transient: bool  # a rerun may well succeed (retried within MAX_RETRIES)
    explanation: str
    exit: str = "error"  # error: topsApp exited non-zero; zero: exited 0 (silent); timeout
    within: frozenset[str] = frozenset()  # only for a phase whose steps all lie in this set


# ISCE2_CONTRACT.md and the isce2 / hyp3-isce2 / DockerizedTopsApp issue trackers. For exit
# "error" the last log line matching any entry decides; for "zero" the first entry that
# matches anywhere does (so a total lack of overlap wins over one swath without common bursts).
KNOWN_FAILURES: tuple[KnownFailure, ...] = (
    KnownFailure(  # runESD.py: no overlap pixel has coherence above the threshold (isce2 #991)
        ESD_COHERENCE, re.compile(r"Coherence threshold too strict"), False,
        "ESD found no burst-overlap pixel with coherence above ESD_COHERENCE_THRESHOLD="
        "{threshold:g} (vegetation, snow, water or a long time span; or one common burst per "
        "swath): set ESD=auto to rerun without ESD, or ESD=false, or lower "
        "ESD_COHERENCE_THRESHOLD (the ISCE tutorial: not below 0.7)",
    ),
    KnownFailure(  # TOPSSwathSLCProduct.getBurstOffset, raised by computeBaselines
        "no-burst-offset", re.compile(r"Could not determine a suitable burst offset"), False,
        "the two dates share no burst (topsApp: 'Could not determine a suitable burst offset'):"
        " they are not on the same track and frame, or an orbit file is wrong; check the pair",
    ),
    KnownFailure(
        "disk-full",
        re.compile(r"No space left on device|Disk quota exceeded|\[Errno 28\]|\bENOSPC\b"),
        False,
        "the disk is full (No space left on device): free space in the data folder (a running "
        "pair needs 50-130 GB; CLEAN=standard keeps only the products of finished pairs) and "
        "rerun: the pair resumes where it stopped",
    ),
    KnownFailure(
        "unknown-property", re.compile(r'attribute corresponding to the key "[^"]*"'), False,
        "topsApp.xml has a property topsApp does not know ({match})",
    ),
    KnownFailure(
        "missing-checkpoint", re.compile(r"Cannot open PICKLE/\S+"), False,
        "the checkpoint of the previous step is missing ({match})",
    ),
    KnownFailure(
        "missing-input", re.compile(r"No such file or directory|FileNotFoundError"), False,
        "an input is missing",
    ),
    KnownFailure(
        "out-of-memory",
        re.compile(r"MemoryError|std::bad_alloc|Cannot allocate memory|^Killed$"), True,
        "out of memory",
    ),
    KnownFailure(
        "io-error", re.compile(r"Input/output error|Stale file handle"), True, "an I/O error"
    ),
    KnownFailure(  # runComputeBaseline.py, exit 0: nothing to make an interferogram from
        "no-overlap", re.compile(r"No swaths contain any burst overlaps"), False,
        "no burst of the secondary overlaps the reference (topsApp: 'No swaths contain any "
        "burst overlaps'): check the pair",
        exit="zero",
    ),
    KnownFailure(  # runComputeBaseline.py, exit 0: this swath then silently drops out
        "burst-count", re.compile(r"No common bursts found for swath (\d)"), False,
        "the dates do not cover the same bursts: swath {group} has none in common (a frame "
        "with fewer bursts, or slid along track): set SWATHS to the swaths both dates cover, "
        "or a REGION_OF_INTEREST inside both frames, or pair other dates",
        exit="zero",
    ),
    KnownFailure(  # snaphu on a large or incoherent interferogram (isce2 #808, #644)
        "unwrap-timeout", re.compile(r""), False,
        "unwrapping ({unwrapper}) ran past PHASE_TIMEOUT_MIN ({timeout}) and was killed; a "
        "rerun would take as long: take more looks (RANGE_LOOKS, AZIMUTH_LOOKS), crop with "
        "REGION_OF_INTEREST, or raise PHASE_TIMEOUT_MIN",
        exit="timeout",
        within=frozenset({"unwrap", "unwrap2stage"}),
    ),
)  # fmt: skip
_BAD_STEPS = re.compile(r"^ERROR: .*(not one of the named steps|comes after end=).*$", re.M)
_SWATH_ERROR = re.compile(r"^Generated error:\s*(.+)$", re.M)
_ERROR_LINE = re.compile(r"^(\w*(\.\w+)*(Error|Exception)|ERROR|Error)\b.*$")


@dataclass(frozen=True)
class Verdict:
    """The outcome of one topsApp run of a phase."""

    ok: bool
    transient: bool = False
    reason: str | None = None  # one line, for the pair's error summary
    cause: str | None = None  # KnownFailure.cause when the failure is a known one


def expected_outputs(steps: Iterable[str], facts: RunFacts) -> tuple[tuple[str, str], ...]:
    """(step, path or glob relative to the pair folder) that must exist after these steps ran."""
    swaths = facts.swaths
    outputs: dict[str, list[str]] = {
        "preprocess": [
            f"{folder}/IW{n}.xml"
            for folder in (facts.reference_dir, facts.secondary_dir)
            for n in swaths
        ],
        "topo": [f"geom_reference/IW{n}/lat_*.rdr" for n in swaths],
        "fineresamp": [f"fine_coreg/IW{n}.xml" for n in swaths],
        "burstifg": [f"fine_interferogram/IW{n}.xml" for n in swaths],
        "mergebursts": ["merged/topophase.flat", "merged/topophase.cor"]
        + (["merged/topophase.ion"] if facts.do_ionosphere else []),
        "filter": ["merged/filt_topophase.flat", "merged/phsig.cor"],
        "unwrap": ["merged/filt_topophase.unw"] if facts.do_unwrap else [],
        "unwrap2stage": ["merged/filt_topophase_2stage.unw"] if facts.do_unwrap_2stage else [],
        "geocode": ["merged/filt_topophase.flat.geo", "merged/phsig.cor.geo"]
        + (["merged/filt_topophase.unw.geo"] if facts.do_unwrap else []),
    }
    return tuple((step, path) for step in steps for path in outputs.get(step, ()))


def missing_outputs(
    run_dir: Path, steps: Iterable[str], facts: RunFacts
) -> tuple[tuple[str, str], ...]:
    """The expected outputs of these steps that are not in run_dir."""
    return tuple(
        (step, pattern)
        for step, pattern in expected_outputs(steps, facts)
        if not any(run_dir.glob(pattern))
    )


def classify(
    returncode: int,
    log_text: str,
    missing: Iterable[tuple[str, str]] = (),
    *,
    timed_out: bool = False,
    timeout_s: float | None = None,
    log_name: str = "the log",
    steps: Iterable[str] = (),
    facts: RunFacts | None = None,
) -> Verdict:
    """Judge one topsApp run from its exit status, its log and the outputs it left missing.

    `steps` are those of the phase that ran and `facts` what its topsApp.xml asked for: they
    choose and fill in the explanations of KNOWN_FAILURES.
    """
    see = f"see {log_name}"
    context = _Context(frozenset(steps), facts, timeout_s)
    if timed_out:
        known = context.first_match("timeout", log_text)
        if known is not None:
            return known.verdict(see)
        limit = f" after {_duration(timeout_s)}" if timeout_s else ""
        return Verdict(False, True, f"timed out{limit} (PHASE_TIMEOUT_MIN) and was killed; {see}")
    if returncode < 0:
        name = _signal_name(-returncode)
        hint = (
            " (out of memory? the kernel's OOM killer sends SIGKILL)" if name == "SIGKILL" else ""
        )
        return Verdict(False, True, f"topsApp killed by {name}{hint}; {see}")
    if returncode > 0:
        return _judge_error(returncode, log_text, see, context)
    bad_steps = _BAD_STEPS.search(log_text)
    if bad_steps:
        return Verdict(False, False, f"topsApp rejected the step range ({bad_steps[0]}); {see}")
    missing = tuple(missing)
    if missing:  # first: a swath not extracted also leaves no overlap, but is the cause
        return Verdict(False, False, f"{_describe_missing(missing, log_text)}; {see}")
    known = context.first_match("zero", log_text)
    if known is not None:
        return known.verdict(see)
    return Verdict(True)


@dataclass(frozen=True)
class _Found:
    failure: KnownFailure
    text: str  # the explanation, filled in

    def verdict(self, see: str, detail: str = "") -> Verdict:
        return Verdict(
            False, self.failure.transient, f"{self.text}{detail}; {see}", self.failure.cause
        )


@dataclass(frozen=True)
class _Context:
    steps: frozenset[str]
    facts: RunFacts | None
    timeout_s: float | None

    def candidates(self, exit: str) -> list[KnownFailure]:
        return [
            known
            for known in KNOWN_FAILURES
            if known.exit == exit
            and (not known.within or (self.steps and self.steps <= known.within))
        ]

    def first_match(self, exit: str, log_text: str) -> _Found | None:
        for known in self.candidates(exit):
            found = known.pattern.search(log_text)  # an empty pattern matches any log
            if found is not None:
                return self.found(known, found)
        return None

    def found(self, known: KnownFailure, match: re.Match[str]) -> _Found:
        facts = self.facts
        text = known.explanation.format(
            match=match[0],
            group=(match.groups() or ("",))[0],
            threshold=facts.esd_coherence_threshold if facts else 0.85,
            unwrapper=facts.unwrapper if facts else "snaphu",
            timeout=_duration(self.timeout_s) if self.timeout_s else "its limit",
        )
        return _Found(known, text)


def read_log(path: Path) -> str:
    """The end of a log file as text ('' when absent)."""
    try:
        with path.open("rb") as stream:
            stream.seek(0, 2)
            stream.seek(max(0, stream.tell() - _LOG_READ_LIMIT))
            return stream.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _judge_error(returncode: int, log_text: str, see: str, context: _Context) -> Verdict:
    lines = log_text.splitlines()
    last_error = next((line.strip() for line in reversed(lines) if _ERROR_LINE.match(line)), None)
    detail = f": {_shorten(last_error)}" if last_error else ""
    candidates = context.candidates("error")
    exit_detail = f"; topsApp exit {returncode}{detail}"
    for line in reversed(lines):
        for known in candidates:
            found = known.pattern.search(line.strip())
            if found:
                return context.found(known, found).verdict(see, exit_detail)
    return Verdict(False, False, f"topsApp failed (exit {returncode}){detail}; {see}")


def _describe_missing(missing: tuple[tuple[str, str], ...], log_text: str) -> str:
    steps = list(dict.fromkeys(step for step, _ in missing))
    paths = ", ".join(path for _, path in missing)
    if steps == ["preprocess"]:
        said = _SWATH_ERROR.search(log_text)
        cause = (
            f"topsApp said '{_shorten(said[1])}'"
            if said
            else "no orbit file covers the scene, the polarization is missing or the region of "
            "interest misses the swath (set SWATHS to the swaths it touches)"
        )
        return f"preprocess exited 0 but produced no {paths}: {cause}"
    return f"{', '.join(steps)} exited 0 but produced no {paths} (a silent topsApp failure)"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    return f"{seconds / 60:g} min" if seconds < 7200 else f"{seconds / 3600:g} h"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _shorten(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
