"""The command line: fast lazy help, unknown and not-yet-available commands, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MAIN, REPO, clean_environ, run_main

# Modules that make startup slow; `--help` must import none of them.
HEAVY = ("pydantic", "lxml", "requests", "numpy", "osgeo", "dask", "distributed", "dotenv",
         "matplotlib", "tqdm", "urllib3")  # fmt: skip


def imported_modules(args: list[str], cwd: Path) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(MAIN), *args],
        cwd=cwd, env=clean_environ(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {
        line.split("|")[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


@pytest.mark.parametrize(
    "args", [["--help"], ["plan", "--help"], ["pairs", "--help"], ["--version"]]
)
def test_help_imports_nothing_heavy(args: list[str], tmp_path: Path) -> None:
    modules = imported_modules(args, tmp_path)
    assert "insar_pipeline.cli" in modules  # the measurement did see our imports
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert heavy == []
    assert not any(m.startswith("insar_pipeline.") and m not in (
        "insar_pipeline.cli", "insar_pipeline.errors") for m in modules)  # fmt: skip


def test_help_lists_every_command(tmp_path: Path) -> None:
    result = run_main(["--help"], tmp_path)
    assert result.returncode == 0
    for command in ("run", "plan", "status", "clean", "report", "pairs"):
        assert f"    {command} " in result.stdout


def test_pairs_help_shows_its_options(tmp_path: Path) -> None:
    result = run_main(["pairs", "--help"], tmp_path)
    assert result.returncode == 0
    for option in ("--max-days", "--neighbours", "--output", "--force", "--data"):
        assert option in result.stdout


@pytest.mark.parametrize("argv", [["frobnicate"], ["--data", "plan", "frobnicate"]])
def test_unknown_command_exits_2_naming_it(argv: list[str], tmp_path: Path) -> None:
    result = run_main(argv, tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "main_parallel.py: error: unknown command 'frobnicate' "
        "(choose from run, plan, status, clean, report, pairs, search, download, timeseries)"
    )
    assert "Traceback" not in result.stderr


# A command the parser knows but whose module does not exist, and commands that end in each way
# a command can end, run through cli.main in a child process (main configures logging).
SCRIPT = """
import sys, types
sys.path.insert(0, {code!r})
from insar_pipeline import cli
from insar_pipeline import errors
module = types.ModuleType("insar_pipeline.fake_command")
def ok(settings, args): return 0
def pair_failed(settings, args): return 1
def bad_input(settings, args): raise errors.InputError("pairs.txt:3: bad line")
def provisioning(settings, args): raise errors.CredentialError("OpenTopography refused the key")
def interrupted(settings, args): raise KeyboardInterrupt
for function in (ok, pair_failed, bad_input, provisioning, interrupted):
    setattr(module, function.__name__, function)
sys.modules[module.__name__] = module
cli.COMMANDS["later"] = ("no_such_module", "later_command", "filled in by a later issue")
cli.COMMANDS["try"] = ("fake_command", sys.argv[1], "test")
sys.exit(cli.main(sys.argv[2:]))
"""


def run_script(function: str, argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = SCRIPT.format(code=str(REPO / "code"))
    return subprocess.run(
        [sys.executable, "-c", script, function, *argv],
        cwd=tmp_path, env=clean_environ(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_not_yet_available_command_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run_script("ok", ["later"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: this command is not available yet (no_such_module is missing)"
    ]


@pytest.mark.parametrize(("function", "code", "stderr"), [
    ("ok", 0, []),
    ("pair_failed", 1, []),
    ("bad_input", 2, ["error: pairs.txt:3: bad line"]),
    ("provisioning", 2, ["error: OpenTopography refused the key"]),
    ("interrupted", 130, ["error: interrupted; rerun the same command to resume"]),
])  # fmt: skip
def test_exit_codes(function: str, code: int, stderr: list[str], tmp_path: Path) -> None:
    result = run_script(function, ["try"], tmp_path)
    assert (result.returncode, result.stderr.splitlines()) == (code, stderr)


def test_bad_option_value_exits_2_naming_the_option(tmp_path: Path) -> None:
    result = run_main(["plan", "--workers", "0"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: command line: --workers='0' is invalid: Input should be greater than or equal to 1"
    ]


def test_bad_env_value_exits_2_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("POLARIZATION = xx  # typo\n")
    result = run_main(["plan"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: .env: POLARIZATION='xx' is invalid: Input should be 'vv', 'vh', 'hh' or 'hv'"
    ]


def test_options_before_the_command_are_kept(tmp_path: Path) -> None:
    result = run_main(["--data", str(tmp_path / "nowhere"), "plan"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: data folder {tmp_path / 'nowhere'} does not exist; create it with a raw/ folder"
        " holding the Sentinel-1 products, or pass --data DIR"
    ]
