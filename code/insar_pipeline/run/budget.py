"""How much runs at once: WORKERS=auto, OMP threads per topsApp child, and the memory budget.

The plan is pure (figures in, figures out); `MemoryBudget` is the one stateful piece: the
`PhaseGate` that every running pair asks before a phase starts, so that the phases running at
any moment never weigh more than the machine's RAM minus a reserve (SPEC.md sections 4 and 6).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from insar_pipeline.errors import InputError, Interrupted
from insar_pipeline.topsapp.steps import Phase

log = logging.getLogger(__name__)

# GB one topsApp phase needs for a full IW frame (3 swaths x 9 bursts) at 19x7 looks.
# Source: ISCE2_CONTRACT.md section 8 (observed max RSS of a real ISCE2 2.6.5 run) and section 7.
# The observed ~1 GB peaks of coregistration/interferogram hold whole full-resolution bursts, so
# they scale with burst size, not burst count: x2 margin for longer bursts and GDAL caches.
# preprocess (104 MB), geometry (242 MB, topo runs burst by burst) and geocode (172 MB) are small;
# 1 GB leaves room for the OpenMP threads' buffers. unwrap runs snaphu untiled on the whole merged
# interferogram: isce2 issue #644 needs > 64 GB for a whole scene at 5x1 looks, i.e. ~2.5 GB at
# 19x7 (RAM scales with the pixel count, 1 / (range looks x azimuth looks)); 3 GB with margin.
# ionosphere has no public figure: it runs a second interferogram chain per sub-band (lower and
# upper, burst by burst) plus its own unwrapping, so we weigh it as 2 x interferogram + unwrap.
PHASE_MEMORY_GB: Mapping[str, float] = {
    "preprocess": 1.0,
    "geometry": 1.0,
    "coregistration": 2.0,
    "ionosphere": 7.0,
    "interferogram": 2.0,
    "unwrap": 3.0,
    "geocode": 1.0,
}
REFERENCE_LOOKS = 19 * 7  # the looks at which PHASE_MEMORY_GB["unwrap"] holds
MIN_UNWRAP_GB = 0.5  # snaphu's own footprint on a tiny multilooked grid


@dataclass(frozen=True)
class Machine:
    """What the scheduler plans with: usable cores and RAM (detected or set in .env)."""

    cores: int
    memory_gb: float


@dataclass(frozen=True)
class Parallelism:
    """The plan of a run: pairs at once, OpenMP threads per child, RAM shared by all phases."""

    workers: int
    omp_threads: int
    budget_gb: float
    machine: Machine


def detect_cores() -> int:
    """Cores this process may use: CPU affinity, further limited by a cgroup v2 CPU quota."""
    cores = len(os.sched_getaffinity(0))
    quota = _cgroup_cpu_quota(Path("/sys/fs/cgroup/cpu.max"))
    return max(1, min(cores, quota) if quota else cores)


def _cgroup_cpu_quota(path: Path) -> int | None:
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, int(int(quota) / int(period)))


def detect_memory_gb() -> float:
    """RAM in GB: MemTotal from /proc/meminfo, or the cgroup's memory limit when lower."""
    total = _meminfo_total_bytes(Path("/proc/meminfo"))
    for limit_file in (
        Path("/sys/fs/cgroup/memory.max"),
        Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
    ):
        limit = _read_limit_bytes(limit_file)
        if limit is not None and (total is None or limit < total):
            total = limit
    if total is None:
        raise InputError("cannot tell how much RAM this machine has: set MEMORY_TOTAL_GB in .env")
    return total / 2**30


def _meminfo_total_bytes(path: Path) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _read_limit_bytes(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    # "max" (v2) or a huge number (v1: no limit) both mean "unlimited".
    if not text.isdigit() or int(text) >= 2**60:
        return None
    return int(text)


def plan_parallelism(
    machine: Machine,
    workers: int | None,
    memory_per_worker_gb: float,
    memory_reserve_gb: float,
    pairs_to_run: int | None = None,
) -> Parallelism:
    """WORKERS (None = auto: min(cores, RAM / MEMORY_PER_WORKER_GB), at least 1), the OpenMP
    threads of each topsApp child (its share of the cores, among the pairs that can really run
    at once: 2 pairs on 8 cores with WORKERS=4 get 4 threads each) and the RAM budget."""
    budget = machine.memory_gb - memory_reserve_gb
    if budget <= 0:
        raise InputError(
            f"MEMORY_RESERVE_GB={memory_reserve_gb:g} leaves no memory of the "
            f"{machine.memory_gb:g} GB this machine has: lower MEMORY_RESERVE_GB"
        )
    if workers is None:
        workers = max(1, min(machine.cores, int(machine.memory_gb // memory_per_worker_gb)))
    at_once = workers if pairs_to_run is None else max(1, min(workers, pairs_to_run))
    omp_threads = max(1, machine.cores // at_once)
    return Parallelism(workers=workers, omp_threads=omp_threads, budget_gb=budget, machine=machine)


def phase_weights(
    phase_names: Iterable[str], range_looks: int, azimuth_looks: int, budget_gb: float
) -> dict[str, float]:
    """GB each phase reserves from the budget.

    unwrap scales with the multilooked pixel count. A phase heavier than the whole budget is
    clamped to it (it then runs alone) rather than waiting forever; unknown phases weigh as the
    heaviest known one, to be safe.
    """
    weights = {}
    for name in phase_names:
        weight = PHASE_MEMORY_GB.get(name, max(PHASE_MEMORY_GB.values()))
        if name == "unwrap":
            weight = max(MIN_UNWRAP_GB, weight * REFERENCE_LOOKS / (range_looks * azimuth_looks))
        if weight > budget_gb:
            log.warning(
                "phase %s may need %.1f GB, more than the %.1f GB budget: it will run alone",
                name,
                weight,
                budget_gb,
            )
            weight = budget_gb
        weights[name] = round(weight, 3)
    return weights


class MemoryBudget:
    """The `PhaseGate` of a local run: running phases share `budget_gb`.

    Requests are served oldest first; a younger, lighter request may overtake the oldest waiting
    one only if it fits beside what the oldest needs, so a heavy phase (ionosphere, unwrap) waits
    for room without being starved by a stream of light ones.
    """

    def __init__(self, budget_gb: float, weights: Mapping[str, float]) -> None:
        self.budget_gb = budget_gb
        self.weights = dict(weights)
        self._cond = threading.Condition()
        self._used = 0.0
        self._held: dict[tuple[str, str], float] = {}
        self._waiting: list[tuple[str, str]] = []
        self._stopping = False
        self.peak_gb = 0.0
        self.waited_s = 0.0

    def weight(self, phase_name: str) -> float:
        return self.weights.get(phase_name, min(max(PHASE_MEMORY_GB.values()), self.budget_gb))

    @property
    def used_gb(self) -> float:
        with self._cond:
            return self._used

    def running(self) -> dict[tuple[str, str], float]:
        """(pair id, phase) -> GB of every phase holding part of the budget now."""
        with self._cond:
            return dict(self._held)

    def acquire(self, pair_id: str, phase: Phase) -> None:
        key, weight = (pair_id, phase.name), self.weight(phase.name)
        started = time.monotonic()
        with self._cond:
            self._waiting.append(key)
            try:
                while not self._may_start(key, weight):
                    if self._stopping:
                        raise Interrupted(f"{pair_id}: stopped before {phase.name} started")
                    self._cond.wait()
            finally:
                self._waiting.remove(key)
                self._cond.notify_all()
            self._used += weight
            self._held[key] = weight
            self.peak_gb = max(self.peak_gb, self._used)
        waited = time.monotonic() - started
        self.waited_s += waited
        if waited > 1.0:
            log.debug(
                "waited %.1f s for %.1f GB of memory",
                waited,
                weight,
                extra={"pair": pair_id, "phase": phase.name},
            )

    def _may_start(self, key: tuple[str, str], weight: float) -> bool:
        if self._stopping:
            return False
        oldest = self._waiting[0]
        if key == oldest:
            return self._used + weight <= self.budget_gb + 1e-9
        reserved = self.weight(oldest[1])
        return self._used + reserved + weight <= self.budget_gb + 1e-9

    def release(self, pair_id: str, phase: Phase) -> None:
        with self._cond:
            weight = self._held.pop((pair_id, phase.name), 0.0)
            self._used = max(0.0, self._used - weight)
            self._cond.notify_all()

    def stop(self) -> None:
        """Wake every waiter with `Interrupted`: the run is stopping."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
