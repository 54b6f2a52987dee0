"""Test helper: a scheduler in this process and real `dask worker` processes started beside it, as a
user starts them for DASK_SCHEDULER=tcp://host:8786 (own command line, environment, disk view)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

CODE_DIR = Path(__file__).resolve().parents[1] / "code"


@contextmanager
def scheduler_only() -> Iterator[str]:
    """A Dask scheduler with no worker; yields its address."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=True, dashboard_address=":0", silence_logs=40,
                      host="127.0.0.1") as cluster:  # fmt: skip
        yield cluster.scheduler_address


@contextmanager
def external_worker(
    address: str,
    cwd: Path,
    args: Sequence[str] = ("--nthreads", "1"),
    *,
    importable: bool = True,
    extra_path: Sequence[Path] = (),
    wrap: Sequence[str] = (),
    shell_prefix: str = "",
    joined: int = 1,
) -> Iterator[subprocess.Popen]:
    """`dask worker ADDRESS ARGS` in its own process (no nanny); waits until `joined` workers
    are connected.

    importable: PYTHONPATH holds the pipeline's code (else the worker cannot import it), after
    `extra_path` (which may shadow a dependency).
    wrap/shell_prefix: a command around it (e.g. unshare) and shell commands run first.
    """
    from distributed import Client

    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if importable:
        env["PYTHONPATH"] = os.pathsep.join(map(str, [*extra_path, CODE_DIR]))
    worker = " ".join(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, *args, "--no-dashboard",
         "--no-nanny"]
    )  # fmt: skip
    command = [*wrap, "sh", "-c", f"{shell_prefix}exec {worker}"]
    process = subprocess.Popen(  # noqa: S603 - the test's own command
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with Client(address) as client:
            client.wait_for_workers(joined, timeout=30)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)
