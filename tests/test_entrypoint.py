"""code/entrypoint.sh, run for real: with a fake topsApp.py and a fake `isce` package on the
paths the container gives it, and without them; with the data folder missing, a file, or not
writable by the user it runs as.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FAKE_MAIN = """import json, os, sys
record = {"argv": sys.argv[1:], "cwd": os.getcwd(), "home": os.environ["HOME"],
          "isce2": os.environ.get("ISCE2_VERSION")}
open(os.environ["ENTRY_RECORD"], "w").write(json.dumps(record))
sys.exit(int(os.environ.get("FAKE_MAIN_RC", "0")))
"""
TOPSAPP_OK = """#!/bin/sh
[ "$*" = "--help --steps" ] || exit 9
echo "The step names are chosen from the following list:"
"""
TOPSAPP_BROKEN = """#!/bin/sh
echo "Traceback (most recent call last):"
echo "ImportError: libgfortran.so.5: cannot open shared object file"
exit 1
"""


def make_app(root: Path, topsapp: str | None = TOPSAPP_OK, isce: bool = True) -> Path:
    """An /app-like tree: code/entrypoint.sh beside a fake main_parallel.py, a bin/ folder for
    PATH (python, and topsApp.py unless None), a pylib/ folder with a fake `isce` package."""
    (root / "code").mkdir(parents=True)
    shutil.copy2(REPO / "code" / "entrypoint.sh", root / "code" / "entrypoint.sh")
    (root / "code" / "main_parallel.py").write_text(FAKE_MAIN)
    (root / "bin").mkdir()
    (root / "bin" / "python").symlink_to(sys.executable)
    if topsapp is not None:
        (root / "bin" / "topsApp.py").write_text(topsapp)
        (root / "bin" / "topsApp.py").chmod(0o755)
    (root / "pylib").mkdir()
    if isce:
        (root / "pylib" / "isce").mkdir()
        (root / "pylib" / "isce" / "__init__.py").write_text('__version__ = "2.6.4"\n')
    (root / "data").mkdir()
    return root


def run_entrypoint(
    app: Path, *args: str, data: Path | None = None, prefix: tuple[str, ...] = (), **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": f"{app / 'bin'}:/usr/bin:/bin",
        "PYTHONPATH": str(app / "pylib"),
        "HOME": str(app),
        "TMPDIR": str(app),
        "INSAR_DATA_DIR": str(data or app / "data"),
        "ENTRY_RECORD": str(app / "record.json"),
        **env,
    }
    return subprocess.run(
        [*prefix, "bash", str(app / "code" / "entrypoint.sh"), *args],
        cwd=app,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_entrypoint_execs_the_scheduler_with_the_arguments(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    result = run_entrypoint(app, "status", "--json", FAKE_MAIN_RC="7")
    assert result.returncode == 7, result.stderr  # the scheduler's status, through exec
    record = json.loads((app / "record.json").read_text())
    assert record == {
        "argv": ["status", "--json"],
        "cwd": str(app),
        "home": str(app),
        "isce2": "2.6.4",  # the version the image got, for `plan` to show
    }
    assert "entrypoint: ISCE2 2.6.4" in result.stderr
    assert list((app / "data").iterdir()) == []  # the write probe cleaned up after itself


def test_entrypoint_without_topsapp_on_path(tmp_path: Path) -> None:
    app = make_app(tmp_path, topsapp=None)
    result = run_entrypoint(app)
    assert result.returncode == 2
    assert "topsApp.py is not on PATH" in result.stderr
    assert "--rebuild" in result.stderr
    assert not (app / "record.json").exists()


def test_entrypoint_with_a_topsapp_that_does_not_run(tmp_path: Path) -> None:
    app = make_app(tmp_path, topsapp=TOPSAPP_BROKEN)
    result = run_entrypoint(app)
    assert result.returncode == 2
    assert "libgfortran.so.5" in result.stderr  # ISCE's own words are shown
    assert "topsApp.py is on PATH but does not run" in result.stderr
    assert not (app / "record.json").exists()


def test_entrypoint_without_isce_importable(tmp_path: Path) -> None:
    app = make_app(tmp_path, isce=False)
    result = run_entrypoint(app)
    assert result.returncode == 2
    assert "ModuleNotFoundError: No module named 'isce'" in result.stderr
    assert "python cannot import isce" in result.stderr


def test_entrypoint_needs_a_mounted_data_folder(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    result = run_entrypoint(app, data=tmp_path / "nowhere")
    assert result.returncode == 2
    assert "does not exist: mount your data folder there" in result.stderr
    (tmp_path / "a-file").write_text("")
    result = run_entrypoint(app, data=tmp_path / "a-file")
    assert result.returncode == 2
    assert "is not a folder" in result.stderr


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder that another user can enter (pytest's tmp_path is private to its owner)."""
    folder = Path(tempfile.mkdtemp(prefix="insar-entrypoint-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def test_entrypoint_needs_a_writable_data_folder(shared_tmp: Path) -> None:
    app = make_app(shared_tmp)
    for path in (app, app / "code"):
        path.chmod(0o755)
    (app / "code" / "entrypoint.sh").chmod(0o755)
    (app / "data").chmod(0o555)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root writes anywhere: run as nobody, as a mismatched UID would
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv (util-linux) is not installed")
        prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    result = run_entrypoint(app, prefix=prefix)
    assert result.returncode == 2, result.stderr
    assert "is not writable by user" in result.stderr
    assert "--user $(id -u):$(id -g)" in result.stderr


def test_entrypoint_gives_a_homeless_user_a_writable_home(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    assert run_entrypoint(app, HOME="/").returncode == 0
    record = json.loads((app / "record.json").read_text())
    assert record["home"] == f"{app}/insar-home-{os.getuid()}"
    assert Path(record["home"]).is_dir()
