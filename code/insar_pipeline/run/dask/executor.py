"""`DaskExecutor`: the executor seam of `executor.py`, running each pair as one Dask task.

`EXECUTOR=dask` spreads pairs over a Dask cluster (`dask_cluster`: LocalCluster, an existing
scheduler, or SLURM/PBS/SGE jobs through dask-jobqueue). The coordinator keeps everything that
must be done once or by one writer: provisioning, `prepare_pair`, the ledger. A task runs
`runner.run_pair` on a worker (`dask_task`) and sends its phase events back as Dask structured
events; they reach `poll` through a subscription, and `dask_events.Executions` keeps them
consistent across reruns when a worker is lost. Memory is a worker resource (MEMORY_GB): each
task declares what its heaviest remaining phase needs, so no worker runs more pairs than its
memory holds.
"""

from __future__ import annotations

import logging
import queue
import secrets
import time
from contextlib import ExitStack
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from insar_pipeline.inputs.config import JOBQUEUE_KINDS, Settings
from insar_pipeline.run.budget import Parallelism, phase_weights
from insar_pipeline.run.dask.cluster import (
    MEMORY_RESOURCE,
    ClusterPlan,
    local_worker_count,
    omp_threads,
    open_cluster,
    pairs_per_worker,
    plan_cluster,
    visible_cores,
    wait_for_workers,
)
from insar_pipeline.run.dask.events import Executions
from insar_pipeline.run.dask.probe import probe_shared_data
from insar_pipeline.run.dask.task import TaskOutcome, not_run_result, run_pair_task, set_stop_flag
from insar_pipeline.run.local import Executor
from insar_pipeline.topsapp.job import Message, PairStatus, PhaseEvent
from insar_pipeline.topsapp.steps import phase_table, remaining_phases

if TYPE_CHECKING:
    from insar_pipeline.topsapp.job import PairJob, PairResult

log = logging.getLogger(__name__)

CATCH_UP_S = 0.5  # how long a finished pair's last events may trail its result
CAPACITY_REFRESH_S = 2.0


class DaskExecutor(Executor):
    """Runs pairs as Dask tasks; starts (or joins) the cluster and checks it on construction."""

    name = "dask"

    def __init__(self, settings: Settings, parallelism: Parallelism) -> None:

        self._run_id = secrets.token_hex(6)
        self._topic = f"insar-pipeline-{self._run_id}"
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._futures: dict[str, tuple[Any, PairJob]] = {}
        self._executions = Executions()
        self._submitted = 0
        self._capacity: tuple[float, int] = (0.0, 1)
        self._stopping = False
        run_phases = [phase.name for phase in phase_table(settings.ionosphere)]
        self._looks = (settings.range_looks, settings.azimuth_looks)
        self.plan = self._plan(settings, parallelism, run_phases)
        self._stack = ExitStack()
        try:
            self._client = self._stack.enter_context(open_cluster(settings, self.plan))
            wait_for_workers(self._client, self.plan)
            settings.runs_dir.mkdir(parents=True, exist_ok=True)
            checked = probe_shared_data(self._client, settings.runs_dir)
            self._memory_gb, self._resources = self._worker_memory()
            self._weights = phase_weights(run_phases, *self._looks, self._memory_gb)
            self._pair_gb = max(self._weights.values())
            self._omp = self._omp_threads(parallelism)
            self._client.subscribe_topic(self._topic, self._on_event)
        except BaseException:
            self._stack.close()
            raise
        log.info(
            "Dask cluster %s: %d worker(s) share the data folder; %d pair(s) at once, "
            "%d OpenMP thread(s) each",
            self._client.scheduler.address, checked, self.slots, self._omp,
        )  # fmt: skip

    def _plan(
        self, settings: Settings, parallelism: Parallelism, run_phases: list[str]
    ) -> ClusterPlan:
        # A LocalCluster worker holds budget / workers GB: never fewer than a whole pair needs.
        weights = phase_weights(run_phases, *self._looks, parallelism.budget_gb)
        pair_gb = max(weights.values())
        local_workers = local_worker_count(parallelism.workers, parallelism.budget_gb, pair_gb)
        plan = plan_cluster(settings, local_workers, parallelism.budget_gb)
        if plan.kind == "local" and local_workers < parallelism.workers:
            log.warning("a pair may need %.1f GB: the LocalCluster runs %d pair(s) at once, not %d",
                        pair_gb, local_workers, parallelism.workers)  # fmt: skip
        return plan

    def _worker_memory(self) -> tuple[float, bool]:
        """The memory one pair may plan with, and whether tasks declare the MEMORY_GB resource."""
        if self.plan.worker_memory_gb is not None:
            return self.plan.worker_memory_gb, True
        declared = [
            info["resources"][MEMORY_RESOURCE]
            for info in self._workers().values()
            if MEMORY_RESOURCE in info.get("resources", {})
        ]
        if not declared:
            log.warning(
                "the Dask workers declare no %s resource, so the pipeline cannot bound pairs per "
                "worker by memory: start them with `dask worker ADDRESS --resources "
                "%s=<GB of RAM for pairs>`", MEMORY_RESOURCE, MEMORY_RESOURCE,
            )  # fmt: skip
            return float("inf"), False
        return float(max(declared)), True

    def _workers(self) -> dict[str, Any]:
        return dict(self._client.scheduler_info(n_workers=-1).get("workers", {}))

    def _omp_threads(self, parallelism: Parallelism) -> int:
        if self.plan.kind == "local":
            # As the local executor's plan (fewer pairs than workers get more threads each),
            # unless the LocalCluster runs fewer pairs at once than WORKERS.
            cores = parallelism.machine.cores
            return max(parallelism.omp_threads, omp_threads(self.plan, self._pair_gb, cores))
        if self.plan.kind in JOBQUEUE_KINDS:
            return omp_threads(self.plan, self._pair_gb, self.plan.threads_per_worker)
        # An existing cluster: each host's cores shared by the pairs its workers may run at once.
        cores = self._client.run(visible_cores, on_error="ignore")
        per_host: dict[str, tuple[int, int]] = {}
        for address, info in self._workers().items():
            host_cores, host_slots = per_host.get(info["host"], (cores.get(address, 1), 0))
            per_host[info["host"]] = (host_cores, host_slots + self._slots_of(info))
        return min((max(1, c // max(1, s)) for c, s in per_host.values()), default=1)

    def _slots_of(self, info: dict[str, Any]) -> int:
        memory = info.get("resources", {}).get(MEMORY_RESOURCE) if self._resources else None
        shape = ClusterPlan("address", None, 0, int(info.get("nthreads", 1)), memory)
        return pairs_per_worker(shape, self._pair_gb)

    @property
    def slots(self) -> int:
        if self.plan.kind == "local":
            return self.plan.workers
        checked, capacity = self._capacity
        if time.monotonic() - checked > CAPACITY_REFRESH_S:
            # Batch jobs start and end, and workers get lost: count what is connected now.
            capacity = max(1, sum(self._slots_of(info) for info in self._workers().values()))
            self._capacity = (time.monotonic(), capacity)
        return capacity

    @property
    def omp_threads(self) -> int:
        """OMP_NUM_THREADS given to every topsApp child of this run."""
        return self._omp

    @property
    def active(self) -> int:
        return len(self._futures)

    def submit(self, job: PairJob) -> None:

        remaining = remaining_phases(job.run_dir, job.phases) or job.phases
        need = max(self._weights.get(phase.name, self._pair_gb) for phase in remaining)
        job = replace(job, omp_threads=self._omp)
        self._submitted += 1
        self._executions.begin(job.pair_id)
        future = self._client.submit(
            run_pair_task, job, self._topic, self._run_id,
            key=f"pair-{job.pair_id}-{self._run_id}-{self._submitted}", pure=False,
            priority=-self._submitted,  # dispatch order: the first submitted starts first
            resources={MEMORY_RESOURCE: need} if self._resources else None,
        )  # fmt: skip
        self._futures[job.pair_id] = (future, job)
        future.add_done_callback(lambda _, pair_id=job.pair_id: self._inbox.put(("done", pair_id)))

    def _on_event(self, event: tuple[float, Any]) -> None:
        # Called in the client's event-loop thread: hand over, do nothing else here.
        self._inbox.put(("event", event[1]))

    def poll(self, timeout: float) -> list[Message]:
        items = _drain(self._inbox, timeout)
        # Events first: a pair's last events may sit behind its "done" in the same batch.
        messages: list[Message] = []
        for kind, payload in sorted(items, key=lambda item: item[0] != "event"):
            if kind == "event":
                messages.extend(self._executions.ingest(payload, time.time()))
            else:
                messages.extend(self._finished(payload))
        if self._stopping and any(
            isinstance(m, PhaseEvent) and m.kind == "start" for m in messages
        ):
            # A task that started after `cancel` ran on a worker that did not exist then (a
            # restarted or newly joined one): tell the workers again.
            self._client.run(set_stop_flag, self._run_id, on_error="ignore")
        if self.plan.kind != "local":
            # A pid on another host means nothing here: the coordinator must never signal a
            # local process group that happens to have that number (its second Ctrl-C does).
            messages = [_without_pid(message) for message in messages]
        return messages

    def _finished(self, pair_id: str) -> list[Message]:
        future, job = self._futures.pop(pair_id)
        if future.status == "finished":
            outcome: TaskOutcome = future.result()
            caught = self._catch_up(pair_id, outcome)
            events, result = self._executions.finish(pair_id, outcome, time.time())
            return [*caught, *events, result]
        if future.cancelled():
            status, reason = PairStatus.INTERRUPTED, "stopped before it started on a Dask worker"
        else:
            status, reason = PairStatus.FAILED, _describe_failure(future.exception())
        events, attempts, open_phase = self._executions.abandon(pair_id, reason, time.time())
        abandoned: PairResult = replace(
            not_run_result(pair_id, status, reason, _phases_done(job)),
            attempts=attempts,
            failed_phase=open_phase if status == PairStatus.FAILED else None,
        )
        if status == PairStatus.FAILED:
            log.error("%s", reason, extra={"pair": pair_id})
        return [*events, abandoned]

    def _catch_up(self, pair_id: str, outcome: TaskOutcome) -> list[Message]:
        """Events the task sent that have not arrived yet: wait briefly, then ask the scheduler."""
        caught: list[Message] = []
        later: list[tuple[str, Any]] = []  # other pairs' results, handled by the next poll
        deadline = time.monotonic() + CATCH_UP_S
        while self._executions.received(outcome.token, pair_id) < outcome.events:
            left = deadline - time.monotonic()
            if left <= 0:
                for _, message in self._client.get_events(self._topic):
                    caught.extend(self._executions.ingest(message, time.time()))
                break
            for kind, payload in _drain(self._inbox, left):
                if kind == "event":
                    caught.extend(self._executions.ingest(payload, time.time()))
                else:
                    later.append((kind, payload))
        for item in later:
            self._inbox.put(item)
        return caught

    def cancel(self) -> None:
        # Running pairs stop their topsApp (the runner's graceful stop) and still report; pairs
        # that have not started are cancelled in Dask and reported "interrupted".
        self._stopping = True
        self._client.run(set_stop_flag, self._run_id, on_error="ignore")
        waiting = [future for pair_id, (future, _) in self._futures.items()
                   if not self._executions.started(pair_id)]  # fmt: skip
        if waiting:
            self._client.cancel(waiting)

    def shutdown(self) -> None:
        try:
            self._client.unsubscribe_topic(self._topic)
        except ValueError:
            pass
        self._stack.close()


def _drain(inbox: queue.SimpleQueue[tuple[str, Any]], timeout: float) -> list[tuple[str, Any]]:
    items = []
    try:
        items.append(inbox.get(timeout=max(0.0, timeout)))
        while True:
            items.append(inbox.get_nowait())
    except queue.Empty:
        pass
    return items


def _describe_failure(error: BaseException | None) -> str:
    from distributed import KilledWorker

    if isinstance(error, KilledWorker):
        return (
            "every Dask worker that ran this pair died (killed or out of memory) "
            f"{error.allowed_failures + 1} times; see the worker logs and lower WORKERS or "
            "raise the memory per worker"
        )
    return f"the pair's Dask task failed: {type(error).__name__}: {error}"


def _without_pid(message: Message) -> Message:
    if isinstance(message, PhaseEvent) and message.pid is not None:
        return replace(message, pid=None)
    return message


def _phases_done(job: PairJob) -> tuple[str, ...]:
    """The phases finished in the pair's folder (its checkpoints are the truth)."""

    left = {phase.name for phase in remaining_phases(job.run_dir, job.phases)}
    return tuple(phase.name for phase in job.phases if phase.name not in left)
