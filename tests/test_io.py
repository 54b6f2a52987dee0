"""File primitives (_io.py): atomic_output and the folder lock."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from insar_pipeline._io import atomic_output, folder_lock, remove_partials, write_text
from insar_pipeline.errors import ProvisioningError


def test_the_file_appears_whole_with_its_mode_and_no_temp_is_left(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    with atomic_output(target) as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".report.html.")
        assert temporary.name.endswith(".part")
        temporary.write_text("<html>", encoding="utf-8")
        assert not target.exists()
    assert target.read_text(encoding="utf-8") == "<html>"
    assert target.stat().st_mode & 0o777 == 0o644
    assert list(tmp_path.iterdir()) == [target]


def test_an_error_leaves_the_old_file_and_removes_the_temp(tmp_path: Path) -> None:
    target = tmp_path / "topsApp.xml"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as temporary:
        temporary.write_text("half", encoding="utf-8")
        raise KeyboardInterrupt
    assert target.read_text(encoding="utf-8") == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_a_mode_is_kept_or_set(tmp_path: Path) -> None:
    write_text(tmp_path / "pairs.txt", "a b\n", mode=0o600)
    assert (tmp_path / "pairs.txt").stat().st_mode & 0o777 == 0o600


def test_remove_partials_removes_only_hidden_temp_files(tmp_path: Path) -> None:
    (tmp_path / ".x.EOF.abc.part").write_bytes(b"half")
    (tmp_path / "x.EOF").write_bytes(b"whole")
    remove_partials(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["x.EOF"]


def test_the_folder_lock_excludes_other_threads_and_says_it_waits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lock_file = tmp_path / "cache" / ".lock"
    inside: list[str] = []

    def hold(name: str) -> None:
        with folder_lock(lock_file, f"{name} waits"):
            inside.append(f"{name} in")
            time.sleep(0.2)
            inside.append(f"{name} out")

    with caplog.at_level("INFO"):
        first = threading.Thread(target=hold, args=("first",))
        first.start()
        while not inside:
            time.sleep(0.01)
        hold("second")
        first.join()
    assert inside == ["first in", "first out", "second in", "second out"]
    assert "second waits" in caplog.text


def test_a_folder_that_cannot_be_made_is_a_provisioning_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(ProvisioningError, match="cannot create or lock it"):
        with folder_lock(tmp_path / "file" / "cache" / ".lock", "waits"):
            pass
