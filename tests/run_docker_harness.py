"""Running run_docker.sh against the fake docker client (tests/fakes/docker), for its tests.

`make_project` copies the Docker files into a project folder; `run_script` runs the real script
there as a user would, with the fake first on PATH; `Project` reads back what docker was asked
(`parse_run` turns a `docker run` into options, mounts, image and pipeline arguments).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAKES = REPO / "tests" / "fakes"
HASH_LABEL = "org.insar-pipeline.build-hash"
SECRET = "s3cr3t-opentopo-key"
ENV_TEXT = f"""# settings
OPENTOPO_API_KEY = {SECRET}   # never printed
WORKERS = auto
MEMORY_TOTAL_GB = auto          # as .env.example has it
"""
# The `docker run` options run_docker.sh gives that take a value.
VALUE_OPTIONS = frozenset(
    ("--platform", "--user", "--shm-size", "--stop-timeout", "--memory", "--env", "--mount")
)


@dataclass(frozen=True)
class RunCall:
    """A parsed `docker run`: its options, the image, and the arguments for the pipeline."""

    options: dict[str, list[str]]
    flags: frozenset[str]
    image: str
    args: list[str]
    env: dict[str, str | None] = field(default_factory=dict)

    @property
    def mounts(self) -> dict[str, tuple[str, bool]]:
        """target -> (source, read-only)."""
        mounts = {}
        for spec in self.options.get("--mount", []):
            parts = dict(p.split("=", 1) if "=" in p else (p, "") for p in spec.split(","))
            assert parts.pop("type") == "bind"
            mounts[parts["target"]] = (parts["source"], "readonly" in parts)
        return mounts

    def one(self, option: str) -> str | None:
        values = self.options.get(option, [])
        assert len(values) <= 1, f"{option} given {len(values)} times"
        return values[0] if values else None


def parse_run(argv: list[str]) -> RunCall:
    assert argv[:2] == ["docker", "run"]
    options: dict[str, list[str]] = {}
    flags = set()
    rest = argv[2:]
    while rest[0].startswith("-"):
        if rest[0] in VALUE_OPTIONS:
            options.setdefault(rest[0], []).append(rest[1])
            rest = rest[2:]
        else:
            flags.add(rest[0])
            rest = rest[1:]
    return RunCall(options, frozenset(flags), rest[0], rest[1:])


@dataclass
class Project:
    """A project folder holding copies of the Docker files, and the fake docker's records."""

    root: Path
    log: Path
    state: Path

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def commands(self) -> list[str]:
        return [" ".join(call["argv"][1:3]) for call in self.calls()]

    def run_call(self) -> RunCall:
        runs = [call for call in self.calls() if call["argv"][1] == "run"]
        assert len(runs) == 1, self.commands()
        parsed = parse_run(runs[0]["argv"])
        return RunCall(parsed.options, parsed.flags, parsed.image, parsed.args, runs[0]["env"])

    def builds(self) -> list[list[str]]:
        return [call["argv"] for call in self.calls() if call["argv"][1] == "build"]

    def image_hash(self) -> str:
        files = (self.root / "Dockerfile", self.root / "environment.yml")
        return hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()


def make_project(tmp_path: Path) -> Project:
    root = tmp_path / "project"
    (root / "code").mkdir(parents=True)
    (root / "data" / "raw").mkdir(parents=True)
    for name in ("run_docker.sh", "Dockerfile", "environment.yml"):
        shutil.copy2(REPO / name, root / name)
    (root / "code" / "entrypoint.sh").write_text("# mounted, not run here\n")
    (root / "pairs.txt").write_text("S1A_a.SAFE S1A_b.SAFE\n")
    (root / ".env").write_text(ENV_TEXT)
    (root / ".env.example").write_text("WORKERS =\nCDSE_PASSWORD =  # only here\n")
    return Project(root, tmp_path / "docker-calls.jsonl", tmp_path / "docker-images.json")


def script_env(project: Project, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FAKE_DOCKER")}
    for key in (
        "IMAGE_NAME",
        "MEMORY_LIMIT",
        "SHM_SIZE",
        "MEMORY_TOTAL_GB",
        "WORKERS",
        "OPENTOPO_API_KEY",
        "CDSE_PASSWORD",
    ):
        env.pop(key, None)
    env.update(
        # The fake's `python3` is this interpreter: a version manager's shim costs 0.2 s a call.
        PATH=f"{FAKES}:{Path(sys.executable).parent}:{env['PATH']}",
        FAKE_DOCKER_LOG=str(project.log),
        FAKE_DOCKER_STATE=str(project.state),
    )
    env.update(extra)
    return env


def run_script(
    project: Project, *args: str, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(project.root / "run_docker.sh"), *args],
        cwd=cwd or project.root,
        env=script_env(project, **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
