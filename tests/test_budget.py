"""The parallelism plan (WORKERS=auto, OMP threads, budget) and the memory gate."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

import pytest

from insar_pipeline.errors import InputError, Interrupted
from insar_pipeline.run import budget
from insar_pipeline.run.budget import Machine, MemoryBudget, phase_weights, plan_parallelism


@dataclass(frozen=True)
class FakePhase:
    name: str


@pytest.mark.parametrize(
    ("cores", "memory_gb", "workers", "per_worker", "expected_workers", "expected_threads"),
    [
        (2, 24.0, None, 16.0, 1, 2),  # this machine: RAM allows one 16 GB worker
        (16, 64.0, None, 16.0, 4, 4),  # RAM-bound: 64 / 16
        (4, 256.0, None, 16.0, 4, 1),  # core-bound
        (8, 8.0, None, 16.0, 1, 8),  # less RAM than one worker: still 1
        (8, 64.0, 3, 16.0, 3, 2),  # explicit WORKERS wins; 8 // 3 threads
        (2, 64.0, 6, 16.0, 6, 1),  # more workers than cores: 1 thread each, never 0
    ],
)
def test_plan_parallelism(
    cores, memory_gb, workers, per_worker, expected_workers, expected_threads
):
    plan = plan_parallelism(Machine(cores, memory_gb), workers, per_worker, 2.0)
    assert (plan.workers, plan.omp_threads) == (expected_workers, expected_threads)
    assert plan.budget_gb == pytest.approx(memory_gb - 2.0)


def test_threads_are_shared_among_pairs_that_really_run():
    plan = plan_parallelism(Machine(8, 128.0), 4, 16.0, 2.0, pairs_to_run=2)
    assert (plan.workers, plan.omp_threads) == (4, 4)
    assert plan_parallelism(Machine(8, 128.0), 4, 16.0, 2.0, pairs_to_run=0).omp_threads == 8


def test_reserve_larger_than_ram_is_an_input_error():
    with pytest.raises(InputError, match="MEMORY_RESERVE_GB=10"):
        plan_parallelism(Machine(4, 8.0), None, 16.0, 10.0)


def test_phase_weights_follow_the_contract_and_scale_unwrap_with_looks():
    names = [
        "preprocess",
        "geometry",
        "coregistration",
        "ionosphere",
        "interferogram",
        "unwrap",
        "geocode",
    ]
    weights = phase_weights(names, 19, 7, budget_gb=100.0)
    assert max(weights, key=weights.get) == "ionosphere"  # the heaviest, per the issue
    assert weights["unwrap"] == pytest.approx(budget.PHASE_MEMORY_GB["unwrap"])
    # snaphu's memory scales with the multilooked pixel count: 5x1 looks ~ 26.6 x the pixels.
    fine = phase_weights(["unwrap"], 5, 1, budget_gb=1000.0)
    assert fine["unwrap"] == pytest.approx(budget.PHASE_MEMORY_GB["unwrap"] * 133 / 5)
    coarse = phase_weights(["unwrap"], 100, 100, budget_gb=100.0)
    assert coarse["unwrap"] == budget.MIN_UNWRAP_GB


def test_a_phase_heavier_than_the_budget_is_clamped_so_it_can_run_alone(caplog):
    weights = phase_weights(["ionosphere", "geocode"], 19, 7, budget_gb=4.0)
    assert weights == {"ionosphere": 4.0, "geocode": 1.0}
    assert "more than the 4.0 GB budget" in caplog.text


def test_unknown_phases_weigh_as_the_heaviest_known():
    assert phase_weights(["custom"], 19, 7, 100.0) == {
        "custom": max(budget.PHASE_MEMORY_GB.values())
    }


def test_meminfo_and_cgroup_limits(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24576000 kB\nMemFree: 1 kB\n")
    assert budget._meminfo_total_bytes(meminfo) == 24576000 * 1024
    limit = tmp_path / "memory.max"
    limit.write_text("max\n")
    assert budget._read_limit_bytes(limit) is None
    limit.write_text(str(8 * 2**30))
    assert budget._read_limit_bytes(limit) == 8 * 2**30
    limit.write_text(str(2**63 - 4096))  # cgroup v1's "no limit"
    assert budget._read_limit_bytes(limit) is None
    cpu = tmp_path / "cpu.max"
    cpu.write_text("200000 100000\n")
    assert budget._cgroup_cpu_quota(cpu) == 2
    cpu.write_text("max 100000\n")
    assert budget._cgroup_cpu_quota(cpu) is None


def test_detected_machine_is_plausible():
    assert 1 <= budget.detect_cores() <= 4096
    assert 0.1 < budget.detect_memory_gb() < 65536


def test_gate_never_overcommits_under_concurrency():
    weights = {"light": 1.0, "medium": 2.0, "heavy": 5.0}
    gate = MemoryBudget(6.0, weights)
    lock = threading.Lock()
    in_use = [0.0]
    peak = [0.0]
    errors = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(30):
            phase = FakePhase(rng.choice(list(weights)))
            gate.acquire(f"pair{seed}", phase)
            with lock:
                in_use[0] += weights[phase.name]
                peak[0] = max(peak[0], in_use[0])
                if in_use[0] > 6.0 + 1e-9:
                    errors.append(in_use[0])
            time.sleep(rng.random() * 0.002)
            with lock:
                in_use[0] -= weights[phase.name]
            gate.release(f"pair{seed}", phase)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert peak[0] > 5.0  # the gate did let phases run side by side
    assert gate.used_gb == 0.0 and gate.peak_gb <= 6.0


def test_heavy_phase_is_not_starved_by_light_ones():
    gate = MemoryBudget(4.0, {"light": 1.0, "heavy": 4.0})
    gate.acquire("a", FakePhase("light"))
    started = threading.Event()

    def heavy() -> None:
        gate.acquire("h", FakePhase("heavy"))
        started.set()

    thread = threading.Thread(target=heavy)
    thread.start()
    time.sleep(0.05)  # the heavy request is now the oldest waiter
    # A light request would fit (1 + 1 <= 4) but must not overtake: the heavy one needs all 4.
    overtook = threading.Event()
    light = threading.Thread(target=lambda: (gate.acquire("b", FakePhase("light")), overtook.set()))
    light.start()
    time.sleep(0.05)
    assert not overtook.is_set() and not started.is_set()
    gate.release("a", FakePhase("light"))
    assert started.wait(5)
    assert not overtook.is_set()
    gate.release("h", FakePhase("heavy"))
    assert overtook.wait(5)
    thread.join(5)
    light.join(5)


def test_light_phase_overtakes_when_it_fits_beside_the_oldest_waiter():
    gate = MemoryBudget(6.0, {"light": 1.0, "heavy": 4.0})
    gate.acquire("a", FakePhase("heavy"))  # 4 of 6 used
    waiting = threading.Thread(target=gate.acquire, args=("h", FakePhase("heavy")))
    waiting.start()
    time.sleep(0.05)
    # 4 used + 4 reserved for the waiter > 6: the light one may not pass yet...
    done = threading.Event()
    light = threading.Thread(target=lambda: (gate.acquire("b", FakePhase("light")), done.set()))
    light.start()
    assert not done.wait(0.1)
    gate.release("a", FakePhase("heavy"))  # the heavy waiter gets 4, then 1 more fits: 5 <= 6
    assert done.wait(5)
    waiting.join(5)
    light.join(5)
    assert gate.used_gb == pytest.approx(5.0)


def test_stop_wakes_waiters_with_interrupted():
    gate = MemoryBudget(2.0, {"heavy": 2.0})
    gate.acquire("a", FakePhase("heavy"))
    outcome = []

    def wait() -> None:
        try:
            gate.acquire("b", FakePhase("heavy"))
            outcome.append("acquired")
        except Interrupted as err:
            outcome.append(str(err))

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.05)
    gate.stop()
    thread.join(5)
    assert outcome and "stopped before heavy started" in outcome[0]
