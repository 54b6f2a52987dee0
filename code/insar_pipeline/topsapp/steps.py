"""topsApp's steps, the pipeline's phases (SPEC.md section 6) and where a run folder resumes.

Facts from ISCE2_CONTRACT.md sections 1-2: topsApp has 24 steps in a fixed order; after each step
it writes `PICKLE/<step>.xml` then `PICKLE/<step>`; `--start=X` loads the checkpoint of the step
just before X and, when it is missing, prints `Cannot open PICKLE/<prev>` and carries on with empty
state. So the checkpoints are the truth about what finished, and a phase may only start right
after one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from insar_pipeline.errors import InputError

# applications/topsApp.py TopsInSAR._steps(), in order. Switched-off steps are no-ops that still
# write their checkpoint, so the chain of PICKLE files stays contiguous.
STEPS: tuple[str, ...] = (
    "startup", "preprocess", "computeBaselines", "verifyDEM", "topo",
    "subsetoverlaps", "coarseoffsets", "coarseresamp", "overlapifg", "prepesd",
    "esd", "rangecoreg", "fineoffsets", "fineresamp", "ion",
    "burstifg", "mergebursts", "filter", "unwrap", "unwrap2stage",
    "geocode", "denseoffsets", "filteroffsets", "geocodeoffsets",
)  # fmt: skip

# The last step a pair needs: the three dense-offset steps after it are never switched on by this
# pipeline, so a phase table may stop here (and `PICKLE/geocode.xml` means "pair finished").
FINAL_STEP = "geocode"
PICKLE_DIR = "PICKLE"
_PHASE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # phase names become log file names


@dataclass(frozen=True)
class Phase:
    """A contiguous range of topsApp steps run by one `topsApp.py --start=first --end=last`."""

    name: str
    first: str
    last: str

    def steps(self) -> tuple[str, ...]:
        return STEPS[STEPS.index(self.first) : STEPS.index(self.last) + 1]


# SPEC.md section 6, as data: (name, first step, last step).
_DEFAULT_PHASES: tuple[tuple[str, str, str], ...] = (
    ("preprocess", "startup", "verifyDEM"),
    ("geometry", "topo", "topo"),
    ("coregistration", "subsetoverlaps", "fineresamp"),
    ("ionosphere", "ion", "ion"),
    ("interferogram", "burstifg", "filter"),
    ("unwrap", "unwrap", "unwrap2stage"),
    ("geocode", "geocode", "geocode"),
)


def phase_table(ionosphere: bool) -> tuple[Phase, ...]:
    """The default phases. Without the ionosphere the (no-op) `ion` step heads `interferogram`.

    Every step must run in some phase even when it is switched off, because `--start=X` needs the
    checkpoint of the step before X.
    """
    phases = [Phase(*row) for row in _DEFAULT_PHASES]
    if ionosphere:
        return tuple(phases)
    merged = [phase for phase in phases if phase.name != "ionosphere"]
    return tuple(
        replace(phase, first="ion") if phase.name == "interferogram" else phase for phase in merged
    )


def validate_phase_table(phases: Sequence[Phase]) -> None:
    """Check that phases cover `startup` … `geocode` contiguously, in order, each step once.

    Raises
    ------
    InputError
        Naming the first problem found and what a valid table looks like.
    """
    if not phases:
        raise InputError("phase table is empty: it must cover topsApp steps startup … geocode")
    names = [phase.name for phase in phases]
    expected_first = STEPS[0]
    for phase in phases:
        where = f"phase table: phase {phase.name!r}"
        if not _PHASE_NAME.match(phase.name):
            raise InputError(f"{where}: a name may only use letters, digits, '_' and '-'")
        if names.count(phase.name) > 1:
            raise InputError(f"{where} appears more than once")
        for step in (phase.first, phase.last):
            if step not in STEPS:
                raise InputError(f"{where}: {step!r} is not a topsApp step ({', '.join(STEPS)})")
        if STEPS.index(phase.first) > STEPS.index(phase.last):
            raise InputError(
                f"{where}: first step {phase.first} comes after last step {phase.last}"
            )
        if phase.first != expected_first:
            raise InputError(
                f"{where} starts at {phase.first} but must start at {expected_first or 'nothing'}"
                ": phases must follow each other without gap or overlap (--start=X needs the "
                "checkpoint of the step before X)"
            )
        expected_first = STEPS[STEPS.index(phase.last) + 1] if phase.last != STEPS[-1] else ""
    if STEPS.index(phases[-1].last) < STEPS.index(FINAL_STEP):
        raise InputError(f"phase table ends at {phases[-1].last} but must reach {FINAL_STEP}")


def previous_step(step: str) -> str | None:
    """The step whose checkpoint `--start=step` loads (None for the first step)."""
    index = STEPS.index(step)
    return STEPS[index - 1] if index else None


def checkpoint_paths(run_dir: Path, step: str) -> tuple[Path, Path]:
    """`PICKLE/<step>.xml` (TopsProc state) and `PICKLE/<step>` (procDoc), written in that order."""
    return run_dir / PICKLE_DIR / f"{step}.xml", run_dir / PICKLE_DIR / step


def finished_steps(run_dir: Path) -> tuple[str, ...]:
    """The steps finished in a run folder: the unbroken run of checkpoints from `startup` on.

    A step counts only when both of its checkpoint files exist (a kill between the two writes
    leaves the step unfinished), and only if every step before it finished too: a checkpoint after
    a gap was made from empty state and proves nothing.
    """
    done: list[str] = []
    for step in STEPS:
        if not all(path.is_file() for path in checkpoint_paths(run_dir, step)):
            break
        done.append(step)
    return tuple(done)


def remaining_phases(run_dir: Path, phases: Iterable[Phase]) -> tuple[Phase, ...]:
    """The phases still to run, the first one trimmed to start after its last finished step."""
    finished = set(finished_steps(run_dir))
    remaining: list[Phase] = []
    for phase in phases:
        todo = [step for step in phase.steps() if step not in finished]
        if todo:  # the phase itself when untouched (no copy per pair of a large batch)
            remaining.append(phase if todo[0] == phase.first else replace(phase, first=todo[0]))
    return tuple(remaining)


def discard_checkpoints(run_dir: Path, steps: Iterable[str]) -> None:
    """Remove the checkpoints of steps whose results turned out unusable (a silent failure).

    topsApp wrote them after exiting 0, but a rerun must redo those steps, not trust them.
    """
    for step in steps:
        for path in checkpoint_paths(run_dir, step):
            path.unlink(missing_ok=True)
