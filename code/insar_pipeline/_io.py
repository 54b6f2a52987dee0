"""File primitives: every file the pipeline writes goes through `atomic_output`; one folder lock.

`atomic_output` is modelled on dolphin's `_decorators.atomic_output`: the body writes a temp
file in the destination's folder (same file system, so the rename is atomic), which is flushed to
disk, given its mode and renamed over the destination; on any error the temp file is removed and
the destination is left as it was. Temp files are hidden and end in `.part`
(`.<name>.<random>.part`): ISCE2's globs never see them, and a cache cleans up its own under its
lock (`remove_partials`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import filelock

from insar_pipeline.errors import ProvisioningError

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
FILE_MODE = 0o644  # mkstemp makes 0600; what the pipeline writes is for everyone who reads the run


@contextlib.contextmanager
def atomic_output(path: Path, mode: int | None = FILE_MODE, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path beside `path`; when the body returns, make it `path` atomically.

    The body may write the temp file itself, open it, hand it to GDAL or replace it (a hard
    link). `mode=None` keeps the temp file's mode (a hard link shares its source's inode).
    `durable=False` skips the fsyncs (still atomic): for many files that are cheap to remake.
    """
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PART_SUFFIX, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        if durable:
            _fsync(temporary)
        if mode is not None:
            temporary.chmod(mode)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    if durable:
        _fsync_folder(path.parent)


def write_bytes(
    path: Path, data: bytes, mode: int | None = FILE_MODE, durable: bool = True
) -> None:
    """Write `data` to `path` through `atomic_output`."""
    with atomic_output(path, mode, durable) as temporary:
        temporary.write_bytes(data)


def write_text(path: Path, text: str, mode: int | None = FILE_MODE, durable: bool = True) -> None:
    """Write `text` (UTF-8) to `path` through `atomic_output`."""
    write_bytes(path, text.encode("utf-8"), mode, durable)


def remove_partials(folder: Path) -> None:
    """Remove the temp files an interrupted writer left in `folder` (call it under its lock)."""
    for leftover in folder.glob(f".*{PART_SUFFIX}"):
        log.info("removing %s, left by an interrupted download or write", leftover.name)
        leftover.unlink(missing_ok=True)


def free_disk_bytes(folder: Path) -> int:
    """Free bytes on the file system of `folder` (or of its nearest existing parent)."""
    path = folder.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


@contextlib.contextmanager
def folder_lock(lock_file: Path, waiting: str) -> Iterator[None]:
    """Hold `lock_file` exclusively (other processes and threads alike); log `waiting` first
    when someone else holds it. The kernel drops the lock if its holder dies.

    A cache folder's lock (orbits, DEMs); the run lock (ledger/lock.py) is its own, since it
    reports its holder's pid. Raises ProvisioningError when the folder cannot be made or locked.
    """
    lock = filelock.FileLock(lock_file, mode=FILE_MODE, thread_local=False)
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            log.info("%s", waiting)
            lock.acquire()
    except OSError as err:
        folder = lock_file.parent
        raise ProvisioningError(f"{folder}: cannot create or lock it ({err.strerror})") from err
    try:
        yield
    finally:
        lock.release()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    # The rename is durable once the folder's entry is on disk; some file systems refuse this.
    with contextlib.suppress(OSError):
        _fsync(folder)
