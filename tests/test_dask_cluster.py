"""dask_cluster: the cluster a setting asks for, the batch job script, the shared-data probe."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import dask
import dask_jobqueue  # noqa: F401  (loads jobqueue's config defaults before tests override them)
import pytest
from distributed import Client
from pydantic import ValidationError

from dask_workers import external_worker, scheduler_only
from insar_pipeline.errors import InputError
from insar_pipeline.inputs.config import Settings
from insar_pipeline.run.dask.cluster import (
    CODE_DIR,
    ClusterPlan,
    jobqueue_cluster,
    local_worker_count,
    omp_threads,
    pairs_per_worker,
    plan_cluster,
)
from insar_pipeline.run.dask.probe import probe_shared_data


def settings_for(tmp_path: Path, **fields) -> Settings:
    return Settings(data_dir=tmp_path / "data", executor="dask", **fields)


@pytest.mark.parametrize(
    ("scheduler", "kind", "target"),
    [
        (None, "local", None),
        ("local", "local", None),
        ("LOCAL", "local", None),
        ("tcp://10.0.0.5:8786", "address", "tcp://10.0.0.5:8786"),
        ("tls://head.cluster.org:8786", "address", "tls://head.cluster.org:8786"),
        ("head-node:8786", "address", "head-node:8786"),
        ("/shared/scheduler.json", "scheduler-file", "/shared/scheduler.json"),
        ("slurm", "slurm", None),
        ("PBS", "pbs", None),
        ("sge", "sge", None),
    ],
)
def test_plan_cluster_kinds(tmp_path, scheduler, kind, target):
    plan = plan_cluster(settings_for(tmp_path, dask_scheduler=scheduler), 3, 30.0)
    assert (plan.kind, plan.target) == (kind, target)


def test_local_plan_splits_the_budget_over_single_threaded_workers(tmp_path):
    plan = plan_cluster(settings_for(tmp_path, dask_scheduler="local"), 3, 30.0)
    assert plan == ClusterPlan("local", None, 3, 1, 10.0)
    assert omp_threads(plan, 3.0, cores=12) == 4


@pytest.mark.parametrize(
    ("workers", "budget", "pair_gb", "expected"),
    [(4, 62.0, 3.0, 4), (4, 6.0, 3.0, 2), (4, 2.0, 2.0, 1), (3, 30.0, 0.0, 3)],
)
def test_local_workers_never_get_less_memory_than_a_pair_needs(workers, budget, pair_gb, expected):
    assert local_worker_count(workers, budget, pair_gb) == expected
    plan = ClusterPlan("local", None, expected, 1, budget / expected)
    assert pairs_per_worker(plan, pair_gb) == 1


def test_jobqueue_plan_keeps_the_reserve_and_shares_cores(tmp_path):
    settings = settings_for(
        tmp_path, dask_scheduler="slurm", dask_cores=8, dask_memory_gb=16, dask_jobs=5,
        memory_reserve_gb=2,
    )  # fmt: skip
    plan = plan_cluster(settings, 1, 1.0)
    assert plan == ClusterPlan("slurm", None, 5, 8, 14.0)
    assert pairs_per_worker(plan, 3.0) == 4  # 14 GB hold four 3 GB pairs; 8 threads allow 8
    assert omp_threads(plan, 3.0, cores=8) == 2
    assert pairs_per_worker(plan, 7.0) == 2
    assert pairs_per_worker(plan, 20.0) == 1  # never zero: a clamped pair runs alone


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"dask_scheduler": "my cluster"}, "DASK_SCHEDULER"),
        ({"dask_scheduler": "http//x"}, "DASK_SCHEDULER"),
        ({"dask_scheduler": "slurm", "dask_walltime": "two hours"}, "DASK_WALLTIME"),
        ({"dask_scheduler": "pbs", "dask_memory_gb": 2, "memory_reserve_gb": 2}, "DASK_MEMORY_GB"),
    ],
)
def test_bad_cluster_settings_name_the_key(tmp_path, fields, key):
    # Checked together when the settings are made (a model validator), before any provisioning.
    with pytest.raises(ValidationError, match=key):
        settings_for(tmp_path, **fields)


@pytest.fixture
def no_dashboard():
    # What a user would put in ~/.config/dask/jobqueue.yaml; keeps the test off port 8787.
    options = {f"jobqueue.{kind}.scheduler-options": {"dashboard_address": None}
               for kind in ("slurm", "pbs", "sge")}  # fmt: skip
    with dask.config.set(options):
        yield


def _job_script(settings: Settings) -> list[str]:
    plan = plan_cluster(settings, 1, 1.0)
    cluster = jobqueue_cluster(settings, plan)
    try:
        return cluster.job_script().splitlines()
    finally:
        cluster.close()


def test_slurm_job_script(tmp_path, no_dashboard):
    settings = settings_for(
        tmp_path, dask_scheduler="slurm", dask_cores=8, dask_memory_gb=64, dask_jobs=4,
        dask_walltime="12:00:00", dask_queue="normal", dask_account="insar-lab",
        memory_reserve_gb=4,
    )  # fmt: skip
    lines = _job_script(settings)
    directives = [line for line in lines if line.startswith("#SBATCH")]
    assert "#SBATCH -p normal" in directives
    assert "#SBATCH -A insar-lab" in directives
    assert "#SBATCH -t 12:00:00" in directives
    assert "#SBATCH --cpus-per-task=8" in directives
    assert any(line.startswith("#SBATCH --mem=") for line in directives)
    assert f"export PYTHONPATH={CODE_DIR}${{PYTHONPATH:+:$PYTHONPATH}}" in lines
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line).split()
    assert worker[worker.index("--nthreads") + 1] == "8"
    assert worker[worker.index("--resources") + 1] == "MEMORY_GB=60"
    assert "--nanny" in worker  # a killed worker process is restarted in the job


def test_slurm_job_script_keeps_the_users_jobqueue_config(tmp_path, no_dashboard):
    settings = settings_for(tmp_path, dask_scheduler="slurm", dask_queue=None, dask_account=None)
    user = {"jobqueue.slurm.job-script-prologue": ["module load isce2"],
            "jobqueue.slurm.worker-extra-args": ["--lifetime", "11h"]}  # fmt: skip
    with dask.config.set(user):
        lines = _job_script(settings)
    assert lines.index("module load isce2") < lines.index(
        f"export PYTHONPATH={CODE_DIR}${{PYTHONPATH:+:$PYTHONPATH}}"
    )
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert "--lifetime 11h" in worker and "--resources MEMORY_GB=14" in worker
    assert not any(line.startswith(("#SBATCH -p", "#SBATCH -A")) for line in lines)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("pbs", ["#PBS -q long", "#PBS -A geo", "#PBS -l walltime=04:00:00"]),
        ("sge", ["#$ -q long", "#$ -P geo", "#$ -l h_rt=04:00:00"]),
    ],
)
def test_pbs_and_sge_job_scripts(tmp_path, no_dashboard, kind, expected):
    settings = settings_for(
        tmp_path, dask_scheduler=kind, dask_cores=4, dask_memory_gb=32, dask_walltime="04:00:00",
        dask_queue="long", dask_account="geo",
    )  # fmt: skip
    lines = _job_script(settings)
    for directive in expected:
        assert directive in lines
    assert "--resources MEMORY_GB=30" in next(line for line in lines if "dask_worker" in line)


# --- the shared-data probe on real workers ---------------------------------------------------


@pytest.fixture
def local_client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as client:  # fmt: skip
        yield client


def test_probe_passes_when_workers_share_the_folder(tmp_path, local_client):
    runs = tmp_path / "data" / "runs"
    runs.mkdir(parents=True)
    assert probe_shared_data(local_client, runs) == 2
    assert list(runs.iterdir()) == []  # the probe files are removed


def test_probe_names_a_worker_that_cannot_write(tmp_path, local_client):
    runs = tmp_path / "data" / "runs"  # never created: the worker's write fails
    with pytest.raises(InputError, match=r"cannot write to .*runs \(FileNotFoundError") as error:
        probe_shared_data(local_client, runs)
    assert "shared filesystem" in str(error.value)


def _unshare_command() -> list[str] | None:
    """`unshare` with a private mount namespace, when this machine allows it."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    command = [unshare, "--mount"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    probe = subprocess.run([*command, "true"], capture_output=True, check=False)
    return command if probe.returncode == 0 else None


def test_probe_fails_clearly_when_a_worker_has_its_own_disk(tmp_path):
    """A worker that sees an empty tmpfs over data/runs: what a worker on another node without
    the shared filesystem sees (it can write there, but nobody else sees the file)."""
    command = _unshare_command()
    if command is None:
        pytest.skip("needs `unshare --mount` (root or user namespaces) for a worker's own disk")
    runs = tmp_path / "data" / "runs"
    runs.mkdir(parents=True)
    mount = f"mount -t tmpfs insar-test {runs} && "
    with scheduler_only() as address, Client(address) as client:
        with external_worker(address, tmp_path, wrap=command, shell_prefix=mount):
            with pytest.raises(InputError) as error:
                probe_shared_data(client, runs)
    message = str(error.value)
    assert "does not see that file" in message
    assert f"data folder {runs.parent} at this same path" in message
    assert list(runs.iterdir()) == []  # the worker's file went to its own tmpfs


def test_probe_tells_when_workers_cannot_import_the_pipeline(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    with scheduler_only() as address, Client(address) as client:
        with external_worker(address, tmp_path, importable=False):
            with pytest.raises(InputError) as error:
                probe_shared_data(client, runs)
    assert "cannot import this pipeline" in str(error.value)
    assert f"{CODE_DIR} on their PYTHONPATH" in str(error.value)


def test_probe_tells_when_workers_lack_a_dependency(tmp_path):
    shadow = tmp_path / "shadow" / "lxml"  # a worker Python where lxml cannot be imported
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("lxml is not installed here")\n')
    runs = tmp_path / "runs"
    runs.mkdir()
    with scheduler_only() as address, Client(address) as client:
        with external_worker(address, tmp_path, extra_path=[shadow.parent]):
            with pytest.raises(InputError) as error:
                probe_shared_data(client, runs)
    assert "cannot import the pipeline's code: lxml is not installed here" in str(error.value)
    assert "install the pipeline's dependencies" in str(error.value)
