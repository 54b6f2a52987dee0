"""Command line: parse arguments, build the settings, run one command, map errors to exit codes.

Command modules are imported lazily so that `--help` and `status` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from insar_pipeline import __version__
from insar_pipeline.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    InputError,
    InternalError,
    PipelineError,
)

if TYPE_CHECKING:
    from insar_pipeline.inputs.config import Settings

Command: TypeAlias = "Callable[[Settings, argparse.Namespace], int]"

log = logging.getLogger(__name__)

# command -> (module, function); each function is `(settings, args) -> exit code`.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("run.driver", "run_command", "process every pair in parallel, clean, report"),
    "plan": ("run.plan", "plan_command", "validate inputs and print what `run` would do"),
    "status": ("report.status", "status_command", "per-pair state from the ledger"),
    "clean": ("topsapp.clean", "clean_command", "apply a cleaning level to finished pairs"),
    "report": ("report.html", "report_command", "(re)write data/runs/report.html and quicklooks"),
    "pairs": ("acquire.commands", "pairs_command", "write a small-baseline pairs.txt"),
    "search": ("acquire.commands", "search_command", "print what `download` would fetch"),
    "download": ("acquire.commands", "download_command", "fetch what `search` finds"),
    "timeseries": (
        "timeseries.command",
        "timeseries_command",
        "MintPy stack per track from the finished pairs, and MintPy's velocity",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    # SUPPRESS: an option given before the command must survive the subparser's own defaults.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--data", dest="data_dir", metavar="DIR", help="data folder (./data)")
    common.add_argument(
        "--pairs", dest="pairs_file", metavar="FILE", help="pairs list (./pairs.txt)"
    )
    common.add_argument("--env", dest="env_file", metavar="FILE", help="settings file (./.env)")
    common.add_argument("--workers", metavar="N", help="parallel pairs (a number or 'auto')")
    common.add_argument(
        "--only", action="append", metavar="PAIR_ID", help="process only this pair (repeatable)"
    )
    common.add_argument("-v", "--verbose", action="store_true", help="debug logs")

    parser = argparse.ArgumentParser(
        prog="main_parallel.py",
        description="Sentinel-1 IW SLC pairs -> geocoded interferograms with ISCE2 topsApp.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, _, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text, parents=[common])
        _add_command_options(name, sub)
    return parser


def _add_command_options(name: str, sub: argparse.ArgumentParser) -> None:
    if name == "status":
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.add_argument("--all", action="store_true", help="list every pair (large batches)")
    elif name == "report":
        sub.add_argument(
            "--render", action="store_true", help="draw the quicklooks finished pairs lack"
        )
    elif name == "clean":
        sub.add_argument("--level", choices=("none", "standard", "nuclear"), help="default: CLEAN")
        sub.add_argument("pair_ids", nargs="*", metavar="PAIR", help="pairs to clean (default all)")
    elif name == "pairs":
        sub.add_argument("--max-days", type=int, default=48, help="longest temporal baseline")
        sub.add_argument("--neighbours", type=int, default=3, help="later dates paired with each")
        sub.add_argument("--output", metavar="FILE", help="where to write (default: --pairs)")
        sub.add_argument("--force", action="store_true", help="overwrite an existing file")
    if name in ("pairs", "search"):
        if name == "search":
            sub.add_argument("--max-days", type=int, default=48, help="longest temporal baseline")
            sub.add_argument("--neighbours", type=int, default=3, help="later dates per date")
        sub.add_argument("--max-bperp", type=float, help="longest perpendicular baseline, m")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    word = _first_word(argv)
    if word is None and not _asks_help(argv):
        argv = ["run", *argv]
    elif word is not None and word not in COMMANDS:
        parser.error(f"unknown command {word!r} (choose from {', '.join(COMMANDS)})")
    args = parser.parse_args(argv)
    from insar_pipeline.logs import configure_logging

    configure_logging(verbose=bool(getattr(args, "verbose", False)))
    settings = None
    try:
        settings = _settings_from(args)
        configure_logging(verbose=settings.verbose, secrets=_secrets_of(settings))
        module_name, function_name, _ = COMMANDS[args.command]
        command = _load_command(module_name, function_name)
        return int(command(settings, args))
    except InternalError as err:
        return _internal_error(args, settings, err)
    except PipelineError as err:
        log.error("%s", err)  # noqa: TRY400 (a message for the user, never a traceback)
        return err.exit_code
    except KeyboardInterrupt:
        log.error("interrupted; rerun the same command to resume")  # noqa: TRY400
        return EXIT_INTERRUPTED
    except Exception as err:  # not expected: a full disk, a broken ledger, a bug
        return _internal_error(args, settings, err)


def _internal_error(args: argparse.Namespace, settings: object, err: Exception) -> int:
    """One line on stderr naming what failed; the traceback only in data/runs/pipeline.log."""
    from insar_pipeline.logs import write_traceback

    runs_dir = (
        getattr(settings, "runs_dir", None) or Path(getattr(args, "data_dir", "data")) / "runs"
    )
    where = write_traceback(runs_dir, f"internal error in `{args.command}`", err)
    what = str(err) if isinstance(err, InternalError) else f"{type(err).__name__}: {err}"
    log.error(  # noqa: TRY400 (the traceback goes to the file, not the terminal)
        "internal error in `%s`: %s; the traceback is in %s (a bug unless it is a full disk "
        "or a damaged file: please report it)",
        args.command,
        what,
        where or "no file: it could not be written",
    )
    return EXIT_INTERNAL


# Common options that take a value: the word after them is that value, not a command.
_VALUE_OPTIONS = frozenset({"--data", "--pairs", "--env", "--workers", "--only"})


def _first_word(argv: Sequence[str]) -> str | None:
    """The first argument that is neither an option nor an option's value: the command."""
    skip_next = False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg.startswith("-"):
            skip_next = arg in _VALUE_OPTIONS
        else:
            return arg
    return None


def _asks_help(argv: Sequence[str]) -> bool:
    return any(arg in ("-h", "--help", "--version") for arg in argv)


def _settings_from(args: argparse.Namespace) -> Settings:
    from insar_pipeline.inputs.config import load_settings

    only = getattr(args, "only", None)
    cli = {
        name: getattr(args, name, None)
        for name in ("data_dir", "pairs_file", "env_file", "workers", "verbose")
    }
    cli["only"] = tuple(only) if only else None
    return load_settings(cli)


def _secrets_of(settings: Settings) -> list[str]:
    secrets = [
        settings.opentopo_api_key,
        settings.cdse_password,
        settings.earthdata_token,
        settings.earthdata_password,
    ]
    return [secret.get_secret_value() for secret in secrets if secret is not None]


def _load_command(module_name: str, function_name: str) -> Command:
    try:
        module = importlib.import_module(f".{module_name}", __package__)
    except ModuleNotFoundError as err:
        if err.name != f"{__package__}.{module_name}":
            raise
        raise InputError(f"this command is not available yet ({module_name} is missing)") from None
    command = getattr(module, function_name, None)
    if command is None:
        raise InputError(f"this command is not available yet ({module_name}.{function_name})")
    return command
