"""The Docker files (issue #6), checked with what runs here, since no Docker engine does.

Every shell script of the project parses (bash -n) and passes shellcheck; the Dockerfile,
.dockerignore and environment.yml are parsed and held against each other and against
pyproject.toml. code/entrypoint.sh is run in test_entrypoint.py, run_docker.sh in
test_run_docker*.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", "data", "__pycache__", ".pytest_cache", ".venv", "node_modules"}
# environment.yml packages that pyproject.toml cannot list: ISCE2 and its native stack, and
# GDAL's bindings, which must match the libgdal they run on (tests/run.sh takes Debian's).
CONDA_ONLY = {"python", "isce2", "gdal", "proj-data"}
# pip name -> conda-forge name where the two differ for the same package.
PIP_TO_CONDA = {"dask": "dask-core", "matplotlib": "matplotlib-base", "asf-search": "asf_search"}


# ---- shell scripts ------------------------------------------------------------------------


def shell_scripts() -> list[Path]:
    """Files named *.sh or starting with a sh/bash shebang (data/ and caches are not walked)."""
    scripts = []
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = sorted(name for name in subfolders if name not in SKIP_DIRS)
        for path in (Path(folder) / name for name in sorted(files)):
            with path.open("rb") as file:
                first_line = file.readline(200)
            if path.suffix == ".sh" or re.match(rb"#!\s*\S*(/|env\s+)(ba)?sh\b", first_line):
                scripts.append(path)
    return scripts


def test_shell_scripts_are_found() -> None:
    found = {path.relative_to(REPO).as_posix() for path in shell_scripts()}
    assert {"run_docker.sh", "code/entrypoint.sh", "tests/run.sh", ".ci/run"} <= found


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_shell_script_parses_and_passes_shellcheck(script: Path) -> None:
    parsed = subprocess.run(
        ["bash", "-n", str(script)], capture_output=True, text=True, check=False
    )
    assert parsed.returncode == 0, parsed.stderr
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed (tests/run.sh installs it with apt)"
    checked = subprocess.run(
        [shellcheck, "--external-sources", str(script)],
        capture_output=True,
        text=True,
        cwd=script.parent,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout


# ---- Dockerfile and .dockerignore ---------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    instructions, pending = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


INSTRUCTIONS = dockerfile_instructions((REPO / "Dockerfile").read_text())


def expand(value: str, variables: dict[str, str]) -> str:
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), value
    )


def dockerfile_variables() -> dict[str, str]:
    """ARG defaults and ENV values after the last instruction, expanded in order."""
    # What the micromamba base image defines.
    variables = {"PATH": "<base PATH>", "MAMBA_USER": "mambauser", "MAMBA_USER_ID": "57439"}
    for keyword, arguments in INSTRUCTIONS:
        if keyword in ("ARG", "ENV"):
            for item in shlex.split(arguments):
                name, _, value = item.partition("=")
                variables[name] = expand(value, variables)
    return variables


def labels() -> dict[str, str]:
    variables = dockerfile_variables()
    pairs = [
        item.partition("=")
        for keyword, arguments in INSTRUCTIONS
        if keyword == "LABEL"
        for item in shlex.split(arguments)
    ]
    return {name: expand(value, variables) for name, _, value in pairs}


def environment() -> dict:
    return yaml.safe_load((REPO / "environment.yml").read_text())


def conda_specs() -> dict[str, str]:
    specs = {}
    for dependency in environment()["dependencies"]:
        name, spec = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", dependency).groups()
        specs[name.lower()] = spec.replace(" ", "")
    return specs


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_base_image_is_a_pinned_micromamba() -> None:
    ((keyword, base),) = [(k, a) for k, a in INSTRUCTIONS if k == "FROM"]
    image = expand(base, dockerfile_variables())
    name, _, tag = image.partition(":")
    assert name == "mambaorg/micromamba"
    assert tag and tag != "latest"


def test_environment_is_created_in_one_layer_with_caches_cleaned() -> None:
    copies = [a for k, a in INSTRUCTIONS if k == "COPY" and "environment.yml" in a]
    assert copies and copies[0].endswith("environment.yml /tmp/environment.yml")
    (run,) = [a for k, a in INSTRUCTIONS if k == "RUN" and "micromamba create" in a]
    assert "--file /tmp/environment.yml" in run
    assert "micromamba clean --all --yes" in run


def test_isce_home_and_path_follow_environment_yml() -> None:
    variables = dockerfile_variables()
    name = environment()["name"]
    python = conda_specs()["python"].removeprefix("=")
    assert variables["ENV_NAME"] == name
    assert variables["PYTHON_VERSION"] == python
    isce_home = f"/opt/conda/envs/{name}/lib/python{python}/site-packages/isce"
    assert variables["ISCE_HOME"] == isce_home
    path = variables["PATH"].split(":")
    assert path[:2] == [f"/opt/conda/envs/{name}/bin", f"{isce_home}/applications"]


def test_runs_as_a_non_root_user_through_the_entrypoint() -> None:
    users = [expand(a, dockerfile_variables()) for k, a in INSTRUCTIONS if k == "USER"]
    assert users[-1] not in ("root", "0")
    entrypoint = json.loads(next(a for k, a in INSTRUCTIONS if k == "ENTRYPOINT"))
    assert entrypoint == ["/usr/local/bin/_entrypoint.sh", "bash", "/app/code/entrypoint.sh"]
    workdirs = [a for k, a in INSTRUCTIONS if k == "WORKDIR"]
    app = re.search(r"^readonly APP=(\S+)", (REPO / "run_docker.sh").read_text(), re.M)
    assert workdirs[-1] == app.group(1) == "/app"  # where run_docker.sh mounts code/.env/pairs
    assert "HEALTHCHECK" not in [k for k, _ in INSTRUCTIONS], "a batch image needs no health"


def test_labels_name_the_version_and_source() -> None:
    found = labels()
    assert found["org.opencontainers.image.version"] == pyproject()["project"]["version"]
    assert "org.opencontainers.image.source" in found
    assert "SOURCE_URL=" in (REPO / "run_docker.sh").read_text()


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    excluded = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("data/raw/S1A_IW_SLC__1SDV_x.zip", True),
        ("data/runs/ledger.sqlite", True),
        (".env", True),
        (".git/config", True),
        ("code/insar_pipeline/__pycache__/x.pyc", True),
        ("code/insar_pipeline/config.py", False),
        ("environment.yml", False),
    ],
)
def test_dockerignore(path: str, excluded: bool) -> None:
    assert dockerignore_excludes(path) is excluded


def test_files_the_dockerfile_copies_are_in_the_build_context() -> None:
    for keyword, arguments in INSTRUCTIONS:
        if keyword != "COPY":
            continue
        sources = [a for a in shlex.split(arguments) if not a.startswith("--")][:-1]
        for source in sources:
            assert (REPO / source).exists(), source
            assert not dockerignore_excludes(source.strip("/")), source


# ---- environment.yml against pyproject.toml -----------------------------------------------


def test_environment_uses_conda_forge_only() -> None:
    assert environment()["channels"] == ["conda-forge", "nodefaults"]


def test_environment_pins_python_and_isce2() -> None:
    specs = conda_specs()
    assert re.fullmatch(r"=3\.\d+", specs["python"])
    # conda-forge's feedstock carries 2.6.4; ISCE2 tagged 2.6.5 later: the range takes either.
    isce2 = SpecifierSet(specs["isce2"])
    assert "2.6.4" in isce2 and "2.6.5" in isce2
    assert "2.6.3" not in isce2 and "2.7.0" not in isce2
    assert set(CONDA_ONLY) <= set(specs), "a conda-only package left environment.yml"


def test_environment_agrees_with_pyproject() -> None:
    project = pyproject()["project"]
    requirements = [
        Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]
    ]
    from_pip = {}
    for requirement in requirements:
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        from_pip[PIP_TO_CONDA.get(name, name)] = requirement.specifier
    from_conda = {
        name: SpecifierSet(spec) for name, spec in conda_specs().items() if name not in CONDA_ONLY
    }
    assert from_conda == from_pip
    assert not CONDA_ONLY & set(from_pip), "a conda-only package is also in pyproject.toml"
