"""run_docker.sh, part 1: Docker present and running, the image built when needed, the run's
terminal, exit status and Ctrl-C. Against the fake docker client (see run_docker_harness.py):
no Docker engine runs here.
"""

from __future__ import annotations

import os
import pty
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from run_docker_harness import HASH_LABEL, Project, make_project, run_script, script_env


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path)


# What run_docker.sh itself runs on the host (besides docker).
HOST_TOOLS = ("bash", "dirname", "printenv", "id", "cat", "sha256sum", "awk")


def test_docker_not_installed(project: Project, tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in HOST_TOOLS:
        (tools / tool).symlink_to(shutil.which(tool))
    result = run_script(project, PATH=str(tools))
    assert result.returncode == 2
    assert "Docker is not installed" in result.stderr
    assert "https://docs.docker.com/get-docker/" in result.stderr


@pytest.mark.parametrize(
    ("info", "message"),
    [("down", "engine is not running"), ("denied", "sudo usermod -aG docker")],
)
def test_docker_engine_unusable(project: Project, info: str, message: str) -> None:
    result = run_script(project, FAKE_DOCKER_INFO=info)
    assert result.returncode == 2
    assert message in result.stderr
    assert project.commands() == ["info --format"]


def test_real_docker_client_without_an_engine(project: Project) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client is installed here")
    probe = subprocess.run([docker, "info"], capture_output=True, timeout=30, check=False)
    if probe.returncode == 0:
        pytest.skip("a Docker engine runs here: this test would build the real image")
    result = run_script(project, PATH=os.environ["PATH"])  # the real client, not the fake
    assert result.returncode == 2
    assert "engine is not running" in result.stderr or "permission denied" in result.stderr


def test_builds_the_image_when_missing_then_runs_it(project: Project) -> None:
    result = run_script(project)
    assert result.returncode == 0, result.stderr
    assert project.commands() == ["info --format", "image inspect", "build --platform", "run --rm"]
    (build,) = project.builds()
    assert f"{HASH_LABEL}={project.image_hash()}" in build
    assert build[build.index("--tag") + 1] == "insar-pipeline:latest"
    assert build[build.index("--platform") + 1] == "linux/amd64"
    assert build[build.index("--file") + 1] == str(project.root / "Dockerfile")
    assert build[-1] == str(project.root)
    assert project.run_call().image == "insar-pipeline:latest"


def test_reuses_the_image_while_its_files_are_unchanged(project: Project) -> None:
    assert run_script(project).returncode == 0
    project.log.unlink()
    result = run_script(project, "status")
    assert result.returncode == 0, result.stderr
    assert project.commands() == ["info --format", "image inspect", "run --rm"]


@pytest.mark.parametrize("changed", ["Dockerfile", "environment.yml"])
def test_rebuilds_when_dockerfile_or_environment_changes(project: Project, changed: str) -> None:
    assert run_script(project).returncode == 0
    with (project.root / changed).open("a") as file:
        file.write("# changed\n")
    project.log.unlink()
    result = run_script(project)
    assert result.returncode == 0, result.stderr
    (build,) = project.builds()
    assert f"{HASH_LABEL}={project.image_hash()}" in build
    assert "changed" in result.stderr


def test_rebuild_option_forces_a_build_and_is_not_passed_on(project: Project) -> None:
    assert run_script(project).returncode == 0
    project.log.unlink()
    assert run_script(project, "--rebuild", "plan").returncode == 0
    assert len(project.builds()) == 1
    assert project.run_call().args == ["plan"]


def test_a_failed_build_runs_nothing(project: Project) -> None:
    result = run_script(project, FAKE_DOCKER_BUILD_RC="1")
    assert result.returncode == 2
    assert "docker build failed" in result.stderr
    assert "run --rm" not in project.commands()


def test_source_label_has_no_credentials(project: Project) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    subprocess.run(["git", "init", "-q", str(project.root)], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(project.root),
            "remote",
            "add",
            "origin",
            "https://someone:t0ken@example.org/team/insar.git",
        ],
        check=True,
    )
    assert run_script(project).returncode == 0
    (build,) = project.builds()
    assert "SOURCE_URL=https://example.org/team/insar.git" in build
    assert not any("t0ken" in arg for call in project.calls() for arg in call["argv"])


def test_tty_flags_only_on_a_terminal(project: Project) -> None:
    assert run_script(project).returncode == 0
    assert "-it" not in project.run_call().flags
    project.log.unlink()
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [str(project.root / "run_docker.sh")],
            cwd=project.root,
            env=script_env(project),
            stdin=terminal,
            stdout=terminal,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode == 0, result.stderr
    assert "-it" in project.run_call().flags


@pytest.mark.parametrize("status", [0, 1, 2, 130])
def test_exit_code_is_the_pipelines(project: Project, status: int) -> None:
    assert run_script(project, FAKE_DOCKER_RUN_RC=str(status)).returncode == status


def test_ctrl_c_reaches_docker_run(project: Project) -> None:
    # Ctrl-C signals the terminal's foreground process group; docker (which the script
    # becomes) must get it to forward it to the container, and its status must come back.
    env = script_env(project, FAKE_DOCKER_RUN_WAIT="20")
    process = subprocess.Popen(
        [str(project.root / "run_docker.sh")],
        cwd=project.root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    ready = Path(f"{project.log}.ready")
    deadline = time.monotonic() + 20
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert ready.exists(), process.communicate(timeout=5)
        assert int(ready.read_text()) == process.pid  # exec'd: no shell left to eat the signal
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    assert process.returncode == 130
    runs = [call for call in project.calls() if call["argv"][1] == "run"]
    assert runs[0]["signal"] == "SIGINT"
