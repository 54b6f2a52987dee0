"""Before any pair is submitted to Dask: can every worker run the pipeline on our data folder?

Each worker imports the runner (the pipeline's code and its dependencies) and writes a probe file
with a random token into data/runs; the coordinator must read that token back. A worker on a
node without the shared filesystem, or with another Python, is refused with what to do.
"""

from __future__ import annotations

import importlib
import os
import secrets
import socket
from pathlib import Path
from typing import Any

from insar_pipeline.errors import InputError
from insar_pipeline.run.dask.cluster import CODE_DIR


def probe_shared_data(client: Any, runs_dir: Path) -> int:
    """Check that every connected worker sees `runs_dir` at the same path as this machine.

    Each worker writes a probe file with a random token; this machine must read it back.
    Returns the number of workers checked; raises InputError with what to do otherwise.
    """
    runs_dir = runs_dir.resolve()
    token = secrets.token_hex(8)
    try:
        answers = client.run(write_probe, str(runs_dir), token)
    except Exception as err:  # raised on a worker; distributed re-raises some as bare Exception
        if "insar_pipeline" in str(err):
            raise InputError(
                f"the Dask workers cannot import this pipeline ({err}): start them with "
                f"{CODE_DIR} on their PYTHONPATH (the same code as this machine)"
            ) from err
        raise InputError(f"the shared-data probe failed on a Dask worker: {err!r}") from err
    for worker, (host, written, error) in sorted(answers.items()):
        _check_probe(worker, host, Path(written) if written else None, error, token, runs_dir)
    return len(answers)


def _check_probe(
    worker: str, host: str, written: Path | None, error: str | None, token: str, runs_dir: Path
) -> None:
    share = (
        f"every Dask worker must see the data folder {runs_dir.parent} at this same path "
        "(a shared filesystem such as NFS or Lustre), the coordinator's machine included"
    )
    if written is None and error and error.startswith("cannot import"):
        raise InputError(
            f"Dask worker {worker} on {host} {error}: install the pipeline's dependencies "
            "(pyproject.toml) in the workers' Python"
        )
    if written is None:
        raise InputError(f"Dask worker {worker} on {host} {error}: {share}")
    try:
        seen = written.read_text(encoding="utf-8")
    except FileNotFoundError:
        seen = None
    finally:
        written.unlink(missing_ok=True)
    if seen != token:
        raise InputError(
            f"Dask worker {worker} on {host} wrote {written}, but this machine "
            f"({socket.gethostname()}) does not see that file: {share}"
        )


def write_probe(runs_dir: str, token: str) -> tuple[str, str | None, str | None]:
    """Runs on a worker: import the runner (all a pair task needs), then write `token` into a
    probe file under `runs_dir`.

    Returns (host, path written or None, error or None); never raises, so every worker answers.
    """
    host = socket.gethostname()
    try:
        importlib.import_module("insar_pipeline.pair.runner")
    except ImportError as err:  # a worker Python without the pipeline's dependencies
        return host, None, f"cannot import the pipeline's code: {err}"
    path = Path(runs_dir) / f".dask-probe-{token}-{host}-{os.getpid()}"
    try:
        path.write_text(token, encoding="utf-8")
    except OSError as err:
        return (
            host,
            None,
            f"cannot write to {runs_dir} ({type(err).__name__}: {err.strerror or err})",
        )
    return host, str(path), None
