"""The pipeline's exceptions; `cli` maps each family to an exit code (SPEC.md section 3).

A failed topsApp phase is not an exception: the phase judge (`topsapp/checks.py`) returns a
`Verdict(ok, transient, reason)` that the pair runner's retry loop reads (transient: retried
while attempts remain; fatal: the pair fails), and that events and results carry to the ledger.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PAIR_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3  # an error the pipeline did not expect: traceback in data/runs/pipeline.log
EXIT_INTERRUPTED = 130


class PipelineError(Exception):
    """Base class of every error the pipeline raises on purpose."""

    exit_code = EXIT_PAIR_FAILED


class InputError(PipelineError):
    """Bad user input (pairs.txt, .env, CLI option, a SAFE product): nothing was started."""

    exit_code = EXIT_BAD_INPUT


class ProvisioningError(PipelineError):
    """An orbit or DEM could not be provided before processing."""

    exit_code = EXIT_BAD_INPUT


class ServiceError(ProvisioningError):
    """A remote service failed in a way a retry may fix (timeout, 429, 5xx)."""


class CredentialError(ProvisioningError):
    """A service refused our credentials (401/403): the user must fix a key or password."""


class RunLockedError(PipelineError):
    """Another `run` holds the data folder's lock."""

    exit_code = EXIT_BAD_INPUT


class InternalError(PipelineError):
    """An error the pipeline did not expect (a full disk, a broken ledger, a bug), wrapped with
    the stage it stopped; its cause's traceback goes to data/runs/pipeline.log only."""

    exit_code = EXIT_INTERNAL


class Interrupted(PipelineError):
    """The user interrupted the run (Ctrl-C/SIGTERM); state is saved and a rerun resumes."""

    exit_code = EXIT_INTERRUPTED
