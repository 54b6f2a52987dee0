"""Which Dask cluster runs the pairs (`EXECUTOR=dask`) and its size; starting or joining it.

`plan_cluster` turns the settings into a `ClusterPlan` (pure, tested without a cluster);
`open_cluster` starts or joins that cluster and yields a connected `Client` (`dask_probe` then
checks its workers before any pair is submitted).
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from insar_pipeline.errors import InputError
from insar_pipeline.inputs.config import JOBQUEUE_KINDS, Settings

log = logging.getLogger(__name__)

# The worker resource that bounds how many pairs a worker runs at once (GB of RAM).
MEMORY_RESOURCE = "MEMORY_GB"
# A scheduler that cannot be reached, or a LocalCluster worker that does not start, is a setup
# problem the user must fix; batch jobs may wait in a queue for hours, so they have no limit.
CONNECT_TIMEOUT_S = 30.0
# Where workers import the package from: the folder holding `insar_pipeline/`.
CODE_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ClusterPlan:
    """The shape of the Dask cluster of a run."""

    kind: str  # "local" | "address" | "scheduler-file" | "slurm" | "pbs" | "sge"
    target: str | None  # the address or scheduler file (None for the others)
    workers: int  # local: worker processes; jobqueue: batch jobs (one worker each); else 0
    threads_per_worker: int  # pairs a worker may run at once (before the memory resource)
    worker_memory_gb: float | None  # the MEMORY_GB resource each worker declares; None: unknown


def plan_cluster(settings: Settings, local_workers: int, budget_gb: float) -> ClusterPlan:
    """The cluster `settings` ask for (DASK_SCHEDULER and the DASK_* keys).

    `local_workers` and `budget_gb` (RAM minus reserve) size a LocalCluster the way the local
    executor sizes its pool. The keys were checked together when the settings were made.
    """
    scheduler = (settings.dask_scheduler or "local").strip()
    kind = scheduler.lower()
    if kind == "local":
        workers = max(1, local_workers)
        return ClusterPlan("local", None, workers, 1, round(budget_gb / workers, 3))
    if kind in JOBQUEUE_KINDS:
        return _jobqueue_plan(settings, kind)
    if scheduler.endswith(".json"):
        return ClusterPlan("scheduler-file", scheduler, 0, 0, None)
    return ClusterPlan("address", scheduler, 0, 0, None)


def _jobqueue_plan(settings: Settings, kind: str) -> ClusterPlan:
    # A job's RAM also holds the Dask worker and the node's own processes: the same reserve
    # as on a local machine (MEMORY_RESERVE_GB; Settings checked that some is left).
    usable = settings.dask_memory_gb - settings.memory_reserve_gb
    return ClusterPlan(kind, None, settings.dask_jobs, settings.dask_cores, round(usable, 3))


def local_worker_count(workers: int, budget_gb: float, pair_memory_gb: float) -> int:
    """LocalCluster workers: WORKERS, but never so many that a worker's share of the budget
    (budget / workers, its MEMORY_GB) is less than a pair needs, or no task could ever start."""
    if pair_memory_gb <= 0:
        return max(1, workers)
    return max(1, min(workers, int(budget_gb // pair_memory_gb)))


def pairs_per_worker(plan: ClusterPlan, pair_memory_gb: float) -> int:
    """How many pairs of `pair_memory_gb` one worker of `plan` runs at once (at least 1)."""
    slots = max(1, plan.threads_per_worker)
    if plan.worker_memory_gb is not None and pair_memory_gb > 0:
        slots = min(slots, int(plan.worker_memory_gb // pair_memory_gb))
    return max(1, slots)


def omp_threads(plan: ClusterPlan, pair_memory_gb: float, cores: int) -> int:
    """OMP_NUM_THREADS of each topsApp child: `cores` shared by the pairs running beside it.

    `cores` is what the workers of `plan` share: the machine's cores for a LocalCluster (all its
    workers), DASK_CORES for a batch job (its one worker), a host's cores for an existing cluster.
    """
    if plan.kind == "local":
        return max(1, cores // max(1, plan.workers))
    return max(1, cores // pairs_per_worker(plan, pair_memory_gb))


def jobqueue_cluster(settings: Settings, plan: ClusterPlan) -> Any:
    """A dask-jobqueue cluster for `plan` (not scaled yet: no job is submitted here).

    Values from the user's own jobqueue.yaml (python, interface, job-script-prologue, ...) are
    kept; ours are added: the memory resource, and PYTHONPATH so workers import this package.
    """
    import dask
    import dask_jobqueue

    classes = {
        "slurm": dask_jobqueue.SLURMCluster,
        "pbs": dask_jobqueue.PBSCluster,
        "sge": dask_jobqueue.SGECluster,
    }
    config = f"jobqueue.{plan.kind}"
    prologue = list(dask.config.get(f"{config}.job-script-prologue", None) or [])
    extra_args = list(dask.config.get(f"{config}.worker-extra-args", None) or [])
    code_dir = shlex.quote(str(CODE_DIR))
    kwargs: dict[str, Any] = {
        "name": "insar-worker",
        "cores": settings.dask_cores,
        "processes": 1,
        "memory": f"{settings.dask_memory_gb:g}GB",
        "walltime": settings.dask_walltime.strip(),
        "queue": settings.dask_queue,
        "job_script_prologue": [
            *prologue,
            f"export PYTHONPATH={code_dir}${{PYTHONPATH:+:$PYTHONPATH}}",
        ],
        "worker_extra_args": [
            *extra_args,
            "--resources",
            f"{MEMORY_RESOURCE}={plan.worker_memory_gb:g}",
        ],
        "log_directory": str((settings.runs_dir / "dask-logs").resolve()),
    }
    # SGE calls the accounting string a project (-P); SLURM and PBS an account (-A).
    kwargs["project" if plan.kind == "sge" else "account"] = settings.dask_account
    return classes[plan.kind](**kwargs)


@contextmanager
def open_cluster(settings: Settings, plan: ClusterPlan) -> Iterator[Any]:
    """A `distributed.Client` connected to the cluster of `plan`; closes what it started."""
    _route_dask_logs()
    cluster = None
    try:
        if plan.kind == "local":
            cluster = _local_cluster(plan)
        elif plan.kind in JOBQUEUE_KINDS:
            cluster = jobqueue_cluster(settings, plan)
            cluster.scale(jobs=plan.workers)
            log.info("submitted %d %s job(s) for Dask workers", plan.workers, plan.kind.upper())
        client = _connect(plan, cluster)
    except OSError as err:
        if cluster is not None:
            cluster.close()
        raise InputError(
            f"cannot reach the Dask scheduler {plan.target or plan.kind} ({err}): start it or fix "
            "DASK_SCHEDULER"
        ) from err
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _local_cluster(plan: ClusterPlan) -> Any:
    import dask
    from distributed import LocalCluster

    # The workers only wait on topsApp children: their statistical profiler (a stack sample
    # every 10 ms) would take CPU from those children and tell nothing.
    with dask.config.set({"distributed.worker.profile.enabled": False}):
        return LocalCluster(
            n_workers=plan.workers, threads_per_worker=1, processes=True,
            dashboard_address=None, silence_logs=logging.WARNING,
            # The memory is topsApp's (child processes), bounded by the resource; Dask's own
            # spill/pause/kill thresholds watch the worker process, which holds none.
            memory_limit=0, resources={MEMORY_RESOURCE: plan.worker_memory_gb},
        )  # fmt: skip


def _route_dask_logs() -> None:
    """Send distributed's warnings through the pipeline's handlers, and drop its INFO chatter.

    Importing distributed installs its own stderr handler at INFO (after `configure_logging` ran),
    which would bypass pipeline.log and flood the terminal with connection messages.
    """
    import distributed  # noqa: F401  (its import configures the loggers undone below)

    for name in [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "distributed"]:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    logging.getLogger("distributed").setLevel(logging.WARNING)


def _connect(plan: ClusterPlan, cluster: Any) -> Any:
    from distributed import Client

    if cluster is not None:
        return Client(cluster)
    if plan.kind == "scheduler-file":
        return Client(scheduler_file=plan.target, timeout=CONNECT_TIMEOUT_S)
    return Client(plan.target, timeout=CONNECT_TIMEOUT_S)


def wait_for_workers(client: Any, plan: ClusterPlan) -> None:
    """Block until at least one worker is connected (batch jobs may wait in their queue)."""
    from distributed.client import TimeoutError as DaskTimeout

    while True:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except (DaskTimeout, TimeoutError):
            if plan.kind not in JOBQUEUE_KINDS:
                raise InputError(
                    f"no Dask worker joined {plan.target or 'the LocalCluster'} within "
                    f"{CONNECT_TIMEOUT_S:.0f} s: start workers (dask worker ADDRESS) or fix "
                    "DASK_SCHEDULER"
                ) from None
            log.info("waiting for a Dask worker: the %s jobs are still queued", plan.kind.upper())
        else:
            return


def visible_cores() -> int:
    """Runs on a worker: the cores its process may use."""
    import os

    return len(os.sched_getaffinity(0))


def validate_settings(settings: Settings) -> None:
    """Raise InputError for DASK_* keys that cannot work (for the checks before a run starts)."""
    if settings.executor == "dask":
        plan_cluster(settings, 1, 1.0)
