"""run_docker.sh, part 2: what the container gets. Mounts, user, settings from .env and the
environment, the pipeline's arguments and the paths in them, secrets kept off command lines.
Against the fake docker client (see run_docker_harness.py): no Docker engine runs here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from run_docker_harness import ENV_TEXT, SECRET, Project, make_project, run_script


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path)


def test_mounts_data_code_pairs_and_env_and_runs_as_the_host_user(project: Project) -> None:
    assert run_script(project).returncode == 0
    call = project.run_call()
    root = str(project.root)
    assert call.mounts == {
        "/data": (f"{root}/data", False),
        "/app/code": (f"{root}/code", True),
        "/app/.env": (f"{root}/.env", True),
        "/app/pairs.txt": (f"{root}/pairs.txt", True),
    }
    assert call.one("--user") == f"{os.getuid()}:{os.getgid()}"
    assert {"--rm", "--init"} <= call.flags
    assert call.one("--platform") == "linux/amd64"
    assert call.one("--shm-size") == "2g"
    assert call.one("--memory") is None
    assert call.args == []  # the image's CMD: run


def test_rootless_docker_runs_as_container_root(project: Project) -> None:
    assert run_script(project, FAKE_DOCKER_INFO="rootless").returncode == 0
    assert project.run_call().one("--user") == "0:0"


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--json"],
        ["clean", "--level", "nuclear", "20230203_20230215"],
        ["report", "-v", "an argument with spaces, 'quotes' and $dollars"],
    ],
)
def test_arguments_pass_through_unchanged(project: Project, args: list[str]) -> None:
    assert run_script(project, *args).returncode == 0
    assert project.run_call().args == args


def test_option_paths_are_mounted_in_their_place(project: Project, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "my data").mkdir(parents=True)
    (elsewhere / "my pairs.txt").write_text("a b\n")
    (elsewhere / "alt.env").write_text("WORKERS = 2\n")
    result = run_script(
        project,
        "plan",
        "--pairs",
        "my pairs.txt",
        "--env=alt.env",
        "--data",
        "my data",
        "--workers",
        "2",
        cwd=elsewhere,
    )
    assert result.returncode == 0, result.stderr
    call = project.run_call()
    assert call.args == [
        "plan",
        "--pairs",
        "/app/pairs.txt",
        "--env",
        "/app/.env",
        "--data",
        "/data",
        "--workers",
        "2",
    ]
    assert call.mounts["/app/pairs.txt"] == (f"{elsewhere}/my pairs.txt", True)
    assert call.mounts["/app/.env"] == (f"{elsewhere}/alt.env", True)
    assert call.mounts["/data"] == (f"{elsewhere}/my data", False)


def test_pairs_command_mounts_the_folder_it_writes_into(project: Project) -> None:
    assert run_script(project, "pairs", "--max-days", "24").returncode == 0
    call = project.run_call()
    assert call.args == ["pairs", "--max-days", "24", "--pairs", "/app/pairs-folder/pairs.txt"]
    assert call.mounts["/app/pairs-folder"] == (str(project.root), False)
    assert "/app/pairs.txt" not in call.mounts


def test_pairs_command_output_option(project: Project, tmp_path: Path) -> None:
    (tmp_path / "networks").mkdir()
    result = run_script(
        project, "pairs", "--output=../../networks/short.txt", "--force", cwd=project.root / "data"
    )
    assert result.returncode == 0, result.stderr
    call = project.run_call()
    assert call.args == ["pairs", "--output", "/app/pairs-folder/short.txt", "--force"]
    assert call.mounts["/app/pairs-folder"] == (str(tmp_path / "networks"), False)
    assert call.mounts["/app/pairs.txt"] == (str(project.root / "pairs.txt"), True)


def test_a_missing_pairs_file_is_left_to_the_pipeline(project: Project) -> None:
    (project.root / "pairs.txt").unlink()
    assert run_script(project, "status").returncode == 0
    assert "/app/pairs.txt" not in project.run_call().mounts


def test_missing_env_file_refuses_to_start(project: Project) -> None:
    (project.root / ".env").unlink()
    result = run_script(project)
    assert result.returncode == 2
    assert ".env not found" in result.stderr
    assert "cp .env.example .env" in result.stderr
    assert project.calls() == []


def test_missing_data_folder_refuses_to_start(project: Project) -> None:
    shutil.rmtree(project.root / "data")
    result = run_script(project)
    assert result.returncode == 2
    assert "mkdir -p data/raw" in result.stderr
    assert project.calls() == []


@pytest.mark.parametrize(
    ("env_line", "memory", "total_gb"),
    [
        ("MEMORY_LIMIT = 32g   # docker --memory", "32g", "32"),
        ('MEMORY_LIMIT="1536m"', "1536m", "1.5"),
        ("export MEMORY_LIMIT=2GiB", "2GiB", "2"),
    ],
)
def test_memory_limit_from_env_file(
    project: Project, env_line: str, memory: str, total_gb: str
) -> None:
    (project.root / ".env").write_text(f"{ENV_TEXT}{env_line}\nSHM_SIZE = 4g\n")
    assert run_script(project).returncode == 0
    call = project.run_call()
    assert call.one("--memory") == memory
    assert call.one("--shm-size") == "4g"
    # Inside the container the pipeline would see the host's RAM: it is told the limit.
    assert f"MEMORY_TOTAL_GB={total_gb}" in call.options["--env"]


def test_environment_overrides_env_file_and_own_budget_is_kept(project: Project) -> None:
    (project.root / ".env").write_text(f"{ENV_TEXT}MEMORY_LIMIT=32g\nMEMORY_TOTAL_GB = 20  # GB\n")
    assert run_script(project, MEMORY_LIMIT="8g").returncode == 0
    call = project.run_call()
    assert call.one("--memory") == "8g"
    assert not any(e.startswith("MEMORY_TOTAL_GB") for e in call.options.get("--env", []))


def test_a_bad_memory_limit_is_refused_by_name(project: Project) -> None:
    (project.root / ".env").write_text(f"{ENV_TEXT}MEMORY_LIMIT = lots\n")
    result = run_script(project)
    assert result.returncode == 2
    assert "MEMORY_LIMIT=lots" in result.stderr
    assert project.calls() == []


def test_image_name_setting(project: Project) -> None:
    (project.root / ".env").write_text(f"{ENV_TEXT}IMAGE_NAME=lab/insar:dev\n")
    assert run_script(project).returncode == 0
    (build,) = project.builds()
    assert build[build.index("--tag") + 1] == "lab/insar:dev"
    assert project.run_call().image == "lab/insar:dev"


def test_environment_settings_are_passed_by_name_and_secrets_never_shown(project: Project) -> None:
    result = run_script(
        project,
        "plan",
        WORKERS="3",
        OPENTOPO_API_KEY="host-secret",
        CDSE_PASSWORD="host-password",
        UNRELATED_VARIABLE="x",
    )
    assert result.returncode == 0, result.stderr
    call = project.run_call()
    assert sorted(call.options["--env"]) == ["CDSE_PASSWORD", "OPENTOPO_API_KEY", "WORKERS"]
    assert call.env == {
        "WORKERS": "3",
        "OPENTOPO_API_KEY": "host-secret",
        "CDSE_PASSWORD": "host-password",
    }
    everything = result.stdout + result.stderr + json.dumps([c["argv"] for c in project.calls()])
    assert "host-secret" not in everything
    assert "host-password" not in everything
    assert SECRET not in everything


def test_the_real_docker_client_accepts_every_call(project: Project, tmp_path: Path) -> None:
    # The docker client parses its options before it contacts an engine: replayed against a
    # socket where no engine listens, a bad option is refused, a good call cannot connect.
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client is installed here")
    (project.root / ".env").write_text(f"{ENV_TEXT}MEMORY_LIMIT = 1.5g\n")
    (project.root / "my pairs.txt").write_text("a b\n")
    result = run_script(project, "plan", "--pairs", "my pairs.txt", WORKERS="2")
    assert result.returncode == 0, result.stderr
    isolated = {
        **os.environ,
        "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock",
        "DOCKER_CONFIG": str(tmp_path / "docker-config"),
        "WORKERS": "2",
    }
    calls = [call["argv"][1:] for call in project.calls()]
    assert [call[0] for call in calls] == ["info", "image", "build", "run"]
    for call in calls:
        replay = subprocess.run(
            [docker, *call],
            env=isolated,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert "Cannot connect to the Docker daemon" in replay.stderr, (call, replay.stderr)
