"""Cleaning finished pairs (SPEC.md section 7): keep-lists per level, as data.

A full-resolution run is ~64 bytes per burst pixel of work products (geom_reference, fine_coreg,
fine_offsets, fine_interferogram: ISCE2_CONTRACT.md section 8) that nobody reads once the merged
and geocoded products exist. A file survives a level when it matches one of the level's keep
patterns and none of its drop patterns. PICKLE/ is kept at every level: it is tiny and it is what
tells a rerun that the pair is finished. Cleaning only ever touches a finished pair, walks its
folder without following symbolic links (a link is removed, never its target), and counts a file
with several hard links once.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from insar_pipeline.errors import InputError, PipelineError
from insar_pipeline.inputs.config import CLEAN_LEVELS, Settings
from insar_pipeline.topsapp.steps import FINAL_STEP, checkpoint_paths

log = logging.getLogger(__name__)

# Patterns are relative to the pair folder, matched segment by segment: `*` stays within one
# folder level, `**` spans any number of them.
_ALWAYS = (
    "topsApp.xml",
    "pair_decisions.json",  # pair/decisions.py: what the pair decided for itself (no ESD)
    "topsProc.xml",
    "*.log",
    "logs/**",
    "PICKLE/**",
    "reference/IW*.xml",
    "secondary/IW*.xml",
    "quicklook*/**",
    "*.png",
)
KEEP: dict[str, tuple[str, ...]] = {
    "none": ("**",),
    "standard": (*_ALWAYS, "merged/**", "baselines/**"),
    "nuclear": (*_ALWAYS, "merged/*.geo*", "merged/dem.crop*"),
}
DROP: dict[str, tuple[str, ...]] = {
    "none": (),
    # Full-resolution VRTs into geom_reference/, fine_coreg/... dangle once those are gone.
    "standard": ("merged/*.full", "merged/*.full.*"),
    "nuclear": (),
}
_KEEP_FOLDERS = frozenset({"logs", "PICKLE"})


@dataclass(frozen=True)
class CleanResult:
    bytes_before: int
    bytes_after: int
    files_removed: int


def is_finished(run_dir: Path) -> bool:
    """A pair is finished when its last step's checkpoint exists."""
    return checkpoint_paths(run_dir, FINAL_STEP)[0].is_file()


def kept(relative: str, level: str, hold: tuple[str, ...] = ()) -> bool:
    """Whether a path (relative, '/'-separated) survives a cleaning level.

    `hold` patterns survive any level (a geometry other pairs may still link).
    """
    parts = relative.split("/")
    if any(_matches(parts, p.split("/")) for p in hold):
        return True
    return any(_matches(parts, p.split("/")) for p in KEEP[level]) and not any(
        _matches(parts, p.split("/")) for p in DROP[level]
    )


def clean_pair(run_dir: Path, level: str, hold: tuple[str, ...] = ()) -> CleanResult:
    """Apply a cleaning level to a finished pair folder, keeping `hold` patterns too.

    Cleaning again later without `hold` removes what was held.

    Raises
    ------
    PipelineError
        When the pair is not finished (no PICKLE/geocode.xml): nothing is touched.
    """
    before, after, removed = _clean(run_dir, level, hold)
    return CleanResult(sum(before.values()), sum(after.values()), removed)


def _clean(run_dir: Path, level: str, hold: tuple[str, ...] = ()) -> tuple[dict, dict, int]:
    """Clean; return {inode: size} before and after, and the number of entries removed."""
    if level not in KEEP:
        raise ValueError(f"unknown cleaning level {level!r} (one of {', '.join(CLEAN_LEVELS)})")
    if not is_finished(run_dir):
        raise PipelineError(
            f"{run_dir.name}: not finished (no PICKLE/{FINAL_STEP}.xml), not cleaned"
        )
    before: dict[tuple[int, int], int] = {}
    after: dict[tuple[int, int], int] = {}
    removed = 0
    for path, relative in _entries(run_dir):
        status = path.lstat()
        inode = (status.st_dev, status.st_ino)
        before[inode] = status.st_size
        if kept(relative, level, hold):
            after[inode] = status.st_size
        else:
            path.unlink()
            removed += 1
    _remove_empty_folders(run_dir)
    return before, after, removed


def _entries(run_dir: Path) -> Iterator[tuple[Path, str]]:
    """(path, relative path) of every file and symlink under run_dir, links not followed."""
    for root, folders, files in os.walk(run_dir):  # followlinks=False: never leaves the pair
        base = Path(root)
        linked = [name for name in folders if (base / name).is_symlink()]
        for name in sorted(files) + linked:
            path = base / name
            yield path, path.relative_to(run_dir).as_posix()


def _remove_empty_folders(run_dir: Path) -> None:
    for root, _, _ in os.walk(run_dir, topdown=False):
        folder = Path(root)
        if folder != run_dir and folder.name not in _KEEP_FOLDERS and not any(folder.iterdir()):
            folder.rmdir()


def _matches(parts: list[str], pattern: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_matches(parts[skip:], pattern[1:]) for skip in range(len(parts) + 1))
    return (
        bool(parts)
        and fnmatch.fnmatchcase(parts[0], pattern[0])
        and _matches(parts[1:], pattern[1:])
    )


def clean_command(settings: Settings, args: argparse.Namespace) -> int:
    """`clean [--level L] [PAIR...]`: clean finished pairs, print bytes before/after."""
    level = getattr(args, "level", None) or settings.clean
    folders = _pair_folders(
        settings.runs_dir, list(getattr(args, "pair_ids", None) or settings.only)
    )
    total_before: dict[tuple[int, int], int] = {}
    total_after: dict[tuple[int, int], int] = {}
    for folder in folders:
        if not is_finished(folder):
            log.warning("%s: not finished (no PICKLE/%s.xml), skipped", folder.name, FINAL_STEP)
            continue
        before, after, _ = _clean(folder, level)
        total_before.update(before)
        total_after.update(after)
        print(_line(folder.name, sum(before.values()), sum(after.values())))
    print(_line(f"total ({level})", sum(total_before.values()), sum(total_after.values())))
    return 0


def _pair_folders(runs_dir: Path, pair_ids: list[str]) -> list[Path]:
    if not pair_ids:
        if not runs_dir.is_dir():
            return []
        return sorted(p for p in runs_dir.iterdir() if (p / "topsApp.xml").is_file())
    folders = []
    for pair_id in pair_ids:
        folder = runs_dir / pair_id
        if Path(pair_id).name != pair_id or pair_id in (".", ".."):
            raise InputError(f"clean: {pair_id!r} is not a pair id (e.g. 20230203_20230215)")
        if not folder.is_dir():
            raise InputError(f"clean: there is no pair folder {folder}")
        folders.append(folder)
    return folders


def _line(name: str, before: int, after: int) -> str:
    removed = f"{1 - after / before:.1%} removed" if before else "empty"
    return f"{name}: {_size(before)} -> {_size(after)} ({removed})"


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count} B"
