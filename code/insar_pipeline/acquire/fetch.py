"""Fetching files into data/raw: atomic, resumable, verified, in parallel within a bound.

A file is written under `data/raw/.partial/` (never a product path, so a partial file never
looks complete), resumed there with a Range request after a cut or a Ctrl-C, checked (size,
md5 where the search gives one, and the caller's own check: a zip's manifest read by the
pipeline's SAFE reader), and only then renamed into place. A rerun fetches only what is missing.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from requests.cookies import RequestsCookieJar
from tqdm import tqdm

from insar_pipeline._io import free_disk_bytes
from insar_pipeline.acquire import http
from insar_pipeline.errors import InputError, ServiceError

log = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"  # under data/raw; scan_raw ignores it (not a .SAFE or .zip)
DISK_MARGIN_BYTES = 1 << 30  # kept free beyond what the downloads need
MD5_CHUNK = 1 << 22


@dataclass(frozen=True)
class FileJob:
    """One file to fetch: where it is assembled, where it lands, and how it is checked."""

    url: str
    target: Path  # the final path; its existence means complete
    part: Path  # where it is assembled and resumed (under data/raw/.partial)
    size: int | None  # bytes, when the search gives them
    md5: str | None = None
    check: Callable[[Path], None] | None = None  # raises InputError/ServiceError when bad


def bytes_to_fetch(jobs: Sequence[FileJob]) -> int:
    """Bytes still to download: known sizes less what part files already hold."""
    total = 0
    for job in jobs:
        have = job.part.stat().st_size if job.part.exists() else 0
        total += max(0, (job.size or 0) - have)
    return total


def check_disk(folder: Path, needed: int) -> None:
    """InputError before any download when the disk cannot hold `needed` bytes."""
    free = free_disk_bytes(folder)
    if needed + DISK_MARGIN_BYTES > free:
        raise InputError(
            f"the downloads need {gigabytes(needed)} in {folder} (plus"
            f" {gigabytes(DISK_MARGIN_BYTES)} kept free) but only {gigabytes(free)} is free;"
            " free some space, or narrow AOI/START/END (INPUT_LEVEL=burst fetches much less)"
        )


def gigabytes(count: int) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e8 else f"{count / 1e6:.1f} MB"


def fetch_all(
    jobs: Sequence[FileJob],
    token: str,
    workers: int,
    cookies: RequestsCookieJar | None = None,
) -> None:
    """Fetch every job whose target is missing, `workers` at a time, with one progress bar.

    The first failure stops the others (their part files stay, for the rerun to resume).
    """
    todo = [job for job in jobs if not job.target.exists()]
    if not todo:
        return
    bar = _progress(bytes_to_fetch(todo) + sum(_held(job) for job in todo), len(todo))
    bar.update(sum(_held(job) for job in todo))
    lock = threading.Lock()

    def advance(count: int) -> None:
        with lock:
            bar.update(count)

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(fetch_one, job, token, advance, cookies) for job in todo]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [future for future in done if future.exception() is not None]
            if failed:
                for future in futures:
                    future.cancel()
                raise failed[0].exception()  # type: ignore[misc]
    finally:
        bar.close()


def _held(job: FileJob) -> int:
    return job.part.stat().st_size if job.part.exists() else 0


def _progress(total: int, files: int) -> tqdm[NoReturn]:

    return tqdm(
        total=total or None,
        unit="B",
        unit_scale=True,
        desc=f"downloading {files} file{'s' if files != 1 else ''}",
        disable=not sys.stderr.isatty(),
    )


def fetch_one(
    job: FileJob,
    token: str,
    advance: Callable[[int], None] = lambda n: None,
    cookies: RequestsCookieJar | None = None,
) -> Path:
    """Fetch one file into place (resuming its part file); return the target."""
    job.part.parent.mkdir(parents=True, exist_ok=True)
    what = job.target.name
    with http.EarthdataSession(token) as session:
        if cookies is not None:
            session.cookies.update(cookies)
        for attempt in range(2):
            size = http.download_resumable(session, job.url, job.part, what, advance, job.size)
            problem = _problem(job, size)
            if problem is None:
                break
            advance(-size)
            job.part.unlink(missing_ok=True)  # a bad file is not resumed: start over once
            if attempt == 1:
                raise ServiceError(f"{what}: {problem} after downloading it twice")
            log.warning("%s: %s; downloading it again", what, problem)
    job.part.replace(job.target)
    log.info("downloaded %s (%s)", what, gigabytes(size))
    return job.target


def _problem(job: FileJob, size: int) -> str | None:
    """Why the downloaded part file is not the file the search described, or None."""
    if job.size is not None and size != job.size:
        return f"{size} bytes where the search gives {job.size}"
    if job.md5 is not None and md5_of(job.part) != job.md5.lower():
        return "md5 differs from the search's"
    if job.check is not None:
        try:
            job.check(job.part)
        except (InputError, ServiceError) as err:
            return str(err)
    return None


def md5_of(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 (the archive's checksum, not a security use)
    with path.open("rb") as handle:
        while chunk := handle.read(MD5_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
