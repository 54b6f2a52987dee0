"""What `plan` and `run` check before anything is downloaded or written (issue 12).

`validate` stops the run (InputError, exit 2) with every problem of the settings, pairs.txt,
the products, the TOPSAPP command, the DASK_* keys and the memory figures at once. `preflight`
then looks at each pair and at the disk: a pair whose finished steps used other settings is
excluded with its reason (the others run); free disk in the data folder is compared with an
estimate of what the remaining pairs need: a warning when the whole batch will not fit, a refusal
when even the pairs that run at once cannot. Both are shared by `run` (run/driver.py) and `plan`
(run/plan.py). The estimates are pure functions; the few reads (disk usage, run folders, the DEM
folder) happen in `preflight` itself.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from insar_pipeline._io import free_disk_bytes
from insar_pipeline.dem.provision import DemPlan, missing_prerequisites, plan_dems
from insar_pipeline.errors import InputError
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.pairs import Pair, load_pairs
from insar_pipeline.inputs.safe import SWATH_FILE_RE, Product
from insar_pipeline.pair.prepare import spoiling_change
from insar_pipeline.run.budget import (
    Machine,
    Parallelism,
    detect_cores,
    detect_memory_gb,
    plan_parallelism,
)
from insar_pipeline.topsapp.steps import Phase, phase_table, remaining_phases, validate_phase_table

log = logging.getLogger(__name__)

# Disk figures (../shared/ISCE2_CONTRACT.md section 8, a real topsApp 2.6.5 run of 2 bursts of
# 22612 x 1502 px): its tree held 4.82 GB, merged/ 0.47 GB of it, the geocoded files 0.444 GB.
RUN_BYTES_PER_PIXEL = 4.82e9 / (2 * 22612 * 1502)  # ~71 B per full-resolution burst pixel
MEASUREMENT_BYTES_PER_PIXEL = 4  # a measurement tiff holds CInt16 pixels
ION_FACTOR = 1.3  # ionosphere adds a second interferogram chain (~50 GB -> ~65 GB a frame)
KEPT_SHARE = {"none": 1.0, "standard": 0.47 / 4.82, "nuclear": 0.444 / 4.82}  # after cleaning
GB = 1e9


@dataclass(frozen=True)
class Validated:
    """The inputs of a run that passed validation."""

    pairs: tuple[Pair, ...]
    phases: tuple[Phase, ...]
    machine: Machine
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class PairDisk:
    """Bytes one pair adds to the data folder: at its peak, and what its cleaning leaves."""

    pair_id: str
    peak: int
    kept: int


@dataclass(frozen=True)
class Preflight:
    """What the checks found: the pairs that may run, those excluded and why, warnings."""

    validated: Validated
    dems: tuple[DemPlan, ...]
    left: Mapping[str, tuple[Phase, ...]]  # pair id -> phases still to run (from checkpoints)
    parallelism: Parallelism  # for the pairs still to run: what `run` runs them with
    excluded: Mapping[str, str] = field(default_factory=dict)  # pair id -> reason
    warnings: tuple[str, ...] = ()
    # What would stop DEM provisioning (no key, no geoid grid): `run` refuses to start with
    # them (see `refuse_blockers`), `plan` shows them as warnings.
    blockers: tuple[str, ...] = ()

    @property
    def pairs(self) -> tuple[Pair, ...]:
        return self.validated.pairs

    @property
    def phases(self) -> tuple[Phase, ...]:
        return self.validated.phases

    @property
    def machine(self) -> Machine:
        return self.validated.machine


# ---- validate: problems that stop everything -------------------------------------------------


def validate(settings: Settings) -> Validated:
    """Settings, pairs.txt, products, TOPSAPP, DASK_*, memory: InputError listing every problem."""
    problems, warnings = settings_problems(settings)
    try:
        pairs = tuple(load_pairs(settings))
    except InputError as err:
        raise InputError("\n".join([str(err), *problems])) from None
    if problems:
        raise InputError("\n".join(problems))
    phases = phase_table(settings.ionosphere)
    validate_phase_table(phases)
    return Validated(pairs, phases, machine_of(settings), tuple(warnings))


def machine_of(settings: Settings) -> Machine:
    return Machine(
        cores=settings.cores or detect_cores(),
        memory_gb=settings.memory_total_gb or detect_memory_gb(),
    )


def settings_problems(settings: Settings) -> tuple[list[str], list[str]]:
    """(problems, warnings) of the settings that no pair can fix."""
    problems: list[str] = []
    warnings: list[str] = []
    topsapp = topsapp_problem(settings.topsapp, shutil.which)
    if topsapp and _runs_elsewhere(settings):
        warnings.append(f"{topsapp} (checked on this machine only: Dask workers may have it)")
    elif topsapp:
        problems.append(topsapp)
    # The DASK_* keys and MEMORY_RESERVE_GB against MEMORY_TOTAL_GB were checked together when
    # the settings were made (Settings' model validators); the RAM this machine has is not.
    try:
        plan_parallelism(
            machine_of(settings),
            settings.workers,
            settings.memory_per_worker_gb,
            settings.memory_reserve_gb,
        )
    except InputError as err:
        problems.append(str(err))
    return problems, warnings


def topsapp_problem(command: str, which: Callable[[str], str | None]) -> str | None:
    """Why TOPSAPP cannot be started, or None: its program must resolve and be executable (and
    a script given to a Python interpreter must exist). Pure but for `which` and stat calls."""
    hint = "set TOPSAPP in .env to topsApp.py on PATH or to its full path"
    try:
        words = shlex.split(command)
    except ValueError as err:
        return f"TOPSAPP={command!r} cannot be split like a shell line ({err}); {hint}"
    if not words:
        return f"TOPSAPP is empty; {hint}"
    program = words[0]
    if "/" in program:
        path = Path(program)
        if not path.is_file():
            return f"TOPSAPP: {program} does not exist; {hint}"
        if not os.access(path, os.X_OK):
            return f"TOPSAPP: {program} is not executable (chmod +x it, or {hint})"
    elif which(program) is None:
        return f"TOPSAPP: {program} is not on PATH; {hint} (the Docker image has it)"
    script = next((word for word in words[1:] if not word.startswith("-")), None)
    if Path(program).name.startswith("python") and script and not Path(script).is_file():
        return f"TOPSAPP: the script {script} of {program} does not exist; {hint}"
    return None


def _runs_elsewhere(settings: Settings) -> bool:
    return settings.executor == "dask" and settings.dask_scheduler not in (None, "local")


# ---- preflight: per pair, and the disk ---------------------------------------------------------


def preflight(
    settings: Settings,
    validated: Validated,
    free_bytes: Callable[[Path], int] | None = None,
) -> Preflight:
    """Exclusions and warnings of a validated run; InputError when the disk cannot hold even
    the pairs that run at once (or the DEM boxes cannot be planned). Writes nothing."""
    pairs = validated.pairs
    dems = tuple(plan_dems(settings, pairs))
    left = {
        pair.id: remaining_phases(settings.run_dir(pair.id), validated.phases) for pair in pairs
    }
    # Only a pair with finished steps can be spoiled (a fresh one is not even looked at).
    untouched = tuple(validated.phases)  # what is left of a pair without a finished step
    started = [pair for pair in pairs if left[pair.id] and left[pair.id] != untouched]
    excluded = exclusions(settings, started, dems)
    todo = [pair for pair in pairs if left[pair.id] and pair.id not in excluded]
    parallelism = plan_parallelism(
        validated.machine,
        settings.workers,
        settings.memory_per_worker_gb,
        settings.memory_reserve_gb,
        pairs_to_run=len(todo),
    )
    free = (free_bytes or free_disk_bytes)(settings.data_dir)
    refusal, warning = disk_check(settings, parallelism.workers, todo, free)
    if refusal:
        raise InputError(refusal)
    warnings = (*validated.warnings, *([warning] if warning else []))
    to_run = {pair.id for pair in todo}
    needed = [dem for dem in dems if not to_run.isdisjoint(dem.pair_ids)]
    blockers = tuple(missing_prerequisites(settings, needed))
    return Preflight(validated, dems, left, parallelism, excluded, warnings, blockers)


def refuse_blockers(checked: Preflight) -> None:
    """InputError (exit 2) when DEM provisioning could not work: before any orbit download."""
    if checked.blockers:
        raise InputError("\n".join(checked.blockers))


def exclusions(
    settings: Settings, pairs: Sequence[Pair], dems: Sequence[DemPlan]
) -> dict[str, str]:
    """Pair id -> why its finished steps forbid its new topsApp.xml (with its planned DEM)."""
    dem_of = {pair_id: plan.path for plan in dems for pair_id in plan.pair_ids}
    found = {}
    for pair in pairs:
        reason = spoiling_change(settings, pair, dem_of[pair.id])
        if reason:
            found[pair.id] = reason
    return found


def disk_check(
    settings: Settings, workers: int, todo: Sequence[Pair], free: int
) -> tuple[str | None, str | None]:
    """(refusal, warning) for the pairs still to run, `workers` at once, on `free` bytes of the
    data folder."""
    pixels: dict[tuple[Path, tuple[int, ...]], int] = {}  # a reference is in many pairs
    needs = []
    for pair in todo:
        key = (pair.reference.path, tuple(pair.swaths))
        if key not in pixels:
            pixels[key] = measurement_pixels(pair.reference, pair.swaths, settings.polarization)
        needs.append(pair_disk(settings, pair, pixels[key], _bytes_in(settings.run_dir(pair.id))))
    return disk_verdict(needs, workers, free, settings.data_dir)


def pair_disk(settings: Settings, pair: Pair, pixels: int, present: int = 0) -> PairDisk:
    """The bytes a pair still adds (pure): `pixels` full-resolution pixels of its reference's
    swaths, cut to REGION_OF_INTEREST's share of the footprint's latitudes when set; `present`
    bytes of its folder exist already."""
    roi = settings.region_of_interest
    if roi is not None:
        box = pair.reference.bbox
        span = max(box.north - box.south, 1e-9)
        share = max(0.0, min(roi.north, box.north) - max(roi.south, box.south)) / span
        pixels = int(pixels * share)
    peak = pixels * RUN_BYTES_PER_PIXEL * (ION_FACTOR if settings.ionosphere else 1.0)
    kept = peak * KEPT_SHARE[settings.clean]
    return PairDisk(pair.id, max(0, int(peak) - present), max(0, int(kept) - present))


def measurement_pixels(product: Product, swaths: Sequence[int], polarization: str) -> int:
    """Full-resolution pixels of these swaths, from the sizes of the measurement tiffs."""
    wanted = {(swath, polarization) for swath in swaths}
    total = 0
    for name, size in _measurement_sizes(product.path):
        match = SWATH_FILE_RE.match(name)
        if match and (int(match[1]), match[2].lower()) in wanted:
            total += size
    return total // MEASUREMENT_BYTES_PER_PIXEL


def _measurement_sizes(path: Path) -> list[tuple[str, int]]:
    if path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as archive:
            return [
                (Path(info.filename).name, info.file_size)
                for info in archive.infolist()
                if "/measurement/" in info.filename
            ]
    folder = path / "measurement"
    return (
        [(item.name, item.stat().st_size) for item in folder.iterdir()] if folder.is_dir() else []
    )


def disk_verdict(
    needs: Sequence[PairDisk], workers: int, free: int, where: Path
) -> tuple[str | None, str | None]:
    """(refusal, warning) for these remaining pairs on `free` bytes (pure).

    At any time `workers` pairs are at their peak while the finished ones hold what cleaning
    kept: the batch needs every pair's kept bytes plus the largest `workers` extra peaks.
    """
    if not needs:
        return None, None
    extras = sorted((need.peak - need.kept for need in needs), reverse=True)[:workers]
    at_once = sorted((need.peak for need in needs), reverse=True)[:workers]
    batch = sum(need.kept for need in needs) + sum(extras)
    if sum(at_once) > free:
        return (
            f"{where} has {free / GB:.1f} GB free, but the {len(at_once)} pair(s) that run at "
            f"once (WORKERS) need about {sum(at_once) / GB:.1f} GB; free some space, lower "
            "WORKERS, or set REGION_OF_INTEREST to process fewer bursts"
        ), None
    if batch > free:
        return None, (
            f"{where} has {free / GB:.1f} GB free; the {len(needs)} remaining pair(s) need about "
            f"{batch / GB:.1f} GB with CLEAN as set: later pairs may fail for lack of space "
            "(CLEAN=nuclear keeps less)"
        )
    return None, None


def _bytes_in(folder: Path) -> int:
    """Bytes already in a pair's folder (a resumed pair needs only the rest)."""
    if not folder.is_dir():
        return 0
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                continue
    return total


# ISCE2 learnt Sentinel-1D's relative-orbit offset in 2.6.5; 2.6.4 stops on such a product with
# "Encountered unknown mission id S1D".
ISCE2_MISSIONS_SINCE = {"S1D": (2, 6, 5)}


def isce2_notes(version: str | None, missions: Iterable[str]) -> tuple[str, list[str]]:
    """`plan`'s ISCE2 line, and a warning per mission this ISCE2 cannot read (pure).

    `version` is what the image's entrypoint found (ISCE2_VERSION); None outside the image.
    """
    if not version:
        return "ISCE2: version not known here (the image's entrypoint reports it)", []
    try:
        have = tuple(int(part) for part in version.split(".")[:3])
    except ValueError:
        return f"ISCE2 {version}", []
    warnings = [
        f"ISCE2 {version} cannot read {mission} products (ISCE2 >= "
        f"{'.'.join(map(str, since))} can): rebuild the image when conda-forge carries it"
        " (./run_docker.sh --rebuild), or leave those pairs out"
        for mission, since in sorted(ISCE2_MISSIONS_SINCE.items())
        if mission in set(missions) and have < since
    ]
    return f"ISCE2 {version}", warnings
