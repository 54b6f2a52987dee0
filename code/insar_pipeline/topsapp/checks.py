"""Did a topsApp phase work, and if not, is it worth retrying? (pure, plus file-existence checks)

ISCE2 does not always say when it failed (ISCE2_CONTRACT.md section 2): `preprocess` exits 0 when
a swath could not be extracted, `computeBaselines` exits 0 when no burst overlaps, a bad step name
exits 0. So a phase counts as done only when topsApp exited 0, the log shows none of those
messages and the files each of its steps must write exist. A failure is transient when a rerun
may well succeed (killed by a signal, out of memory, an I/O error, a time-out) and fatal when it
would fail the same way (bad configuration, missing input, full disk, a silent failure).
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

# (pattern, transient?, what it means). The last line of a log matching any of them decides.
_FAILURE_PATTERNS: tuple[tuple[re.Pattern[str], bool, str], ...] = (
    (re.compile(r"No space left on device|Disk quota exceeded"), False,
     "the disk is full; free space in the data folder and rerun"),
    (re.compile(r'attribute corresponding to the key "[^"]*"'), False,
     "topsApp.xml has a property topsApp does not know ({match})"),
    (re.compile(r"Cannot open PICKLE/\S+"), False,
     "the checkpoint of the previous step is missing ({match})"),
    (re.compile(r"No such file or directory|FileNotFoundError"), False, "an input is missing"),
    (re.compile(r"MemoryError|std::bad_alloc|Cannot allocate memory|^Killed$"), True,
     "out of memory"),
    (re.compile(r"Input/output error|Stale file handle"), True, "an I/O error"),
)  # fmt: skip
_NO_OVERLAP = re.compile(r"No swaths contain any burst overlaps")
_BAD_STEPS = re.compile(r"^ERROR: .*(not one of the named steps|comes after end=).*$", re.M)
_SWATH_ERROR = re.compile(r"^Generated error:\s*(.+)$", re.M)
_ERROR_LINE = re.compile(r"^(\w+(\.\w+)*(Error|Exception)|ERROR|Error)\b.*$")


@dataclass(frozen=True)
class Verdict:
    """The outcome of one topsApp run of a phase."""

    ok: bool
    transient: bool = False
    reason: str | None = None  # one line, for the pair's error summary


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
) -> Verdict:
    """Judge one topsApp run from its exit status, its log and the outputs it left missing."""
    see = f"see {log_name}"
    if timed_out:
        limit = f" after {_duration(timeout_s)}" if timeout_s else ""
        return Verdict(False, True, f"timed out{limit} (PHASE_TIMEOUT_MIN) and was killed; {see}")
    if returncode < 0:
        name = _signal_name(-returncode)
        hint = (
            " (out of memory? the kernel's OOM killer sends SIGKILL)" if name == "SIGKILL" else ""
        )
        return Verdict(False, True, f"topsApp killed by {name}{hint}; {see}")
    if returncode > 0:
        return _judge_error(returncode, log_text, see)
    bad_steps = _BAD_STEPS.search(log_text)
    if bad_steps:
        return Verdict(False, False, f"topsApp rejected the step range ({bad_steps[0]}); {see}")
    missing = tuple(missing)
    if missing:  # first: a swath not extracted also leaves no overlap, but is the cause
        return Verdict(False, False, f"{_describe_missing(missing, log_text)}; {see}")
    if _NO_OVERLAP.search(log_text):
        return Verdict(
            False,
            False,
            "no burst of the secondary overlaps the reference (topsApp: "
            f"'No swaths contain any burst overlaps'): check the pair; {see}",
        )
    return Verdict(True)


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


def _judge_error(returncode: int, log_text: str, see: str) -> Verdict:
    lines = log_text.splitlines()
    last_error = next((line.strip() for line in reversed(lines) if _ERROR_LINE.match(line)), None)
    detail = f": {_shorten(last_error)}" if last_error else ""
    for line in reversed(lines):
        for pattern, transient, meaning in _FAILURE_PATTERNS:
            found = pattern.search(line.strip())
            if found:
                what = meaning.format(match=found[0])
                return Verdict(
                    False, transient, f"{what}; topsApp exit {returncode}{detail}; {see}"
                )
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
