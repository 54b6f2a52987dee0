"""run_docker.sh reads .env exactly as python-dotenv does, and the README's first steps work.

The shell's reader (run_docker.sh's dotenv_* functions, sourced) and python-dotenv (what the
pipeline uses) are given the same files: every line of .env.example, then lines that exercise
each rule of python-dotenv's grammar. Then the README's getting-started steps are typed, as a
newcomer would, in a fresh copy of the tree against a recording docker client.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from dotenv import dotenv_values

from run_docker_harness import FAKES, Project, parse_run, script_env

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "run_docker.sh"

# Lines python-dotenv reads in a way a naive reader gets wrong, with what it reads.
TRICKY_LINES = [
    "MEMORY_LIMIT =                  # docker --memory, e.g. 48g; empty = none",
    "A = # comment only",
    "A=#not-a-comment",
    "A = value#still-value",
    "A = value #comment",
    "A = value\t# tab before the comment",
    "A = 'single # quoted'  # comment",
    'A = "double # quoted"  # comment',
    'A = "with \\"escaped\\" quotes and \\\\ backslash"',
    "A = 'it\\'s'",
    'A = "tab\\tand\\nnewline"',
    "A = 'no \\n escape in single quotes'",
    "export A = exported",
    "export   A=exported with spaces",
    "exportA = a key named exportA",
    "A=value\r",
    "  A  =  spaced both sides  ",
    "A=",
    "A",
    "A = 1\nA = 2",
    'A = "unterminated',
    'A = "closed" trailing words',
    "'QUOTED_KEY' = value",
    "= no key",
    "# a comment line",
    "",
    "\ufeffA = bom",
    'A = "multi\nline"',
    "A = ${HOME_FOR_TEST}/sub",
    "A = ${UNSET_FOR_TEST:-fallback}",
    "B = first\nA = ${B}-second",
    "A = ${EMPTY_FOR_TEST:-not used}",
    "A = $NOT_BRACED",
    "A=caf\u00e9 \u00fcml\u00e4ut",
    "A = a=b=c",
    "A = tail spaces   ",
    "A = 'x' # ok",
    'A="x"# no space before the hash',
]


def shell_values(path: Path) -> dict[str, str]:
    """What run_docker.sh's reader makes of a file: key -> value, the last binding winning."""
    dump = (
        'source "$1"; dotenv_load "$2"; '
        'for i in "${!dotenv_keys[@]}"; do '
        'printf "%s\\0%s\\0" "${dotenv_keys[$i]}" "${dotenv_vals[$i]}"; done'
    )
    result = subprocess.run(
        ["bash", "-c", dump, "dump", str(SCRIPT), str(path)],
        capture_output=True,
        check=True,
        timeout=30,
    )
    fields = result.stdout.decode("utf-8").split("\0")[:-1]
    values: dict[str, str] = {}
    for key, value in zip(fields[::2], fields[1::2], strict=True):
        values[key] = value
    return values


def python_values(path: Path) -> dict[str, str]:
    """What the pipeline reads (inputs/config.py: python-dotenv, a bare KEY as empty)."""
    text = path.read_text(encoding="utf-8-sig")
    return {key: value or "" for key, value in dotenv_values(stream=io.StringIO(text)).items()}


@pytest.fixture(autouse=True)
def interpolation_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME_FOR_TEST", "/home/someone")
    monkeypatch.setenv("EMPTY_FOR_TEST", "")
    monkeypatch.delenv("UNSET_FOR_TEST", raising=False)


def example_lines() -> list[str]:
    return (REPO / ".env.example").read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("line", example_lines() + TRICKY_LINES)
def test_shell_reads_each_line_as_python_dotenv(tmp_path: Path, line: str) -> None:
    env = tmp_path / ".env"
    env.write_bytes(line.encode("utf-8") + b"\n")
    assert shell_values(env) == python_values(env)


def test_shell_reads_the_whole_example_and_crlf_files_as_python_dotenv(tmp_path: Path) -> None:
    example = (REPO / ".env.example").read_text(encoding="utf-8")
    for name, text in [
        ("lf.env", example),
        ("crlf.env", example.replace("\n", "\r\n")),
        ("tricky.env", "\n".join(TRICKY_LINES)),
        ("tricky-crlf.env", "\r\n".join(TRICKY_LINES)),
        ("no-final-newline.env", "A = 1\nB = two # c"),
    ]:
        path = tmp_path / name
        path.write_bytes(text.encode("utf-8"))
        assert shell_values(path) == python_values(path), name
    values = shell_values(tmp_path / "lf.env")
    assert values["MEMORY_LIMIT"] == ""
    assert values["SHM_SIZE"] == "2g"
    assert values["IMAGE_NAME"] == "insar-pipeline:latest"


# ---- the README's first steps, literally ------------------------------------------------------


def fresh_tree(tmp_path: Path) -> Path:
    """The project's tracked files, as a fresh clone has them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=30
    ).stdout.decode()
    root = tmp_path / "insar-pipeline"
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if not source.is_file():
            continue  # deleted in the work tree
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return root


def typed(root: Path, command: str, project: Project) -> subprocess.CompletedProcess[str]:
    env = script_env(project)
    env["PATH"] = f"{FAKES}:{env['PATH']}"
    return subprocess.run(
        ["bash", "-c", command],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("with_key", [False, True], ids=["as-copied", "key-typed-in"])
def test_readme_first_steps_work_on_a_fresh_tree(tmp_path: Path, with_key: bool) -> None:
    root = fresh_tree(tmp_path)
    project = Project(root, tmp_path / "docker-calls.jsonl", tmp_path / "docker-images.json")
    readme = (root / "README.md").read_text()
    assert "cp .env.example .env" in readme
    assert "./run_docker.sh plan" in readme

    copied = typed(root, "cp .env.example .env", project)
    assert copied.returncode == 0, copied.stderr
    env = root / ".env"
    if with_key:  # the optional OPENTOPO_API_KEY, typed after the `=` of its line
        lines = env.read_text().splitlines(keepends=True)
        key_line = next(i for i, line in enumerate(lines) if line.startswith("OPENTOPO_API_KEY"))
        lines[key_line] = lines[key_line].replace("=", "= my-key-123", 1)
        env.write_text("".join(lines))

    planned = typed(root, "./run_docker.sh plan", project)
    assert planned.returncode == 0, planned.stderr
    ran = typed(root, "./run_docker.sh", project)
    assert ran.returncode == 0, ran.stderr

    runs = [parse_run(call["argv"]) for call in project.calls() if call["argv"][1] == "run"]
    assert [run.args for run in runs] == [["plan"], []]
    for run in runs:
        assert "--memory" not in run.options  # MEMORY_LIMIT is empty in .env.example
        assert run.one("--shm-size") == "2g"
        assert run.image == "insar-pipeline:latest"
        assert run.mounts["/app/.env"] == (str(env.resolve()), True)
    assert len(project.builds()) == 1  # built once, then reused
    assert "my-key-123" not in planned.stderr + ran.stderr + project.log.read_text()


def test_a_memory_limit_typed_into_env_reaches_docker(tmp_path: Path) -> None:
    root = fresh_tree(tmp_path)
    project = Project(root, tmp_path / "docker-calls.jsonl", tmp_path / "docker-images.json")
    text = (root / ".env.example").read_text()
    text = text.replace("MEMORY_LIMIT =     ", "MEMORY_LIMIT = 48g", 1)
    (root / ".env").write_text(text)
    ran = typed(root, "./run_docker.sh status", project)
    assert ran.returncode == 0, ran.stderr
    (run,) = [parse_run(call["argv"]) for call in project.calls() if call["argv"][1] == "run"]
    assert run.one("--memory") == "48g"
    assert f"MEMORY_TOTAL_GB={48:g}" in run.options["--env"]


def test_source_guard_keeps_the_script_from_running_when_sourced() -> None:
    result = subprocess.run(
        ["bash", "-c", 'source "$1" && echo sourced', "x", str(SCRIPT)],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{FAKES}:{os.environ['PATH']}"},
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "sourced\n"
