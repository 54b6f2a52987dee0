"""The acquisition stage: search -> download -> pairs, each resumable, as `run` and the commands
call it. `prepare_inputs` is the one call `run` makes; `describe` the one `plan` makes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from insar_pipeline._io import free_disk_bytes
from insar_pipeline.acquire import bursts, fetch, http
from insar_pipeline.acquire.coverage import Acquisition, Selection, select
from insar_pipeline.acquire.credentials import earthdata_token
from insar_pipeline.acquire.network import render_network, small_baseline_pairs
from insar_pipeline.acquire.render import render_search
from insar_pipeline.acquire.search import check_search_settings, search_granules, search_requested
from insar_pipeline.errors import InputError, ServiceError
from insar_pipeline.inputs.network import DEFAULT_MAX_DAYS, DEFAULT_NEIGHBOURS, write_atomic
from insar_pipeline.inputs.safe import read_product

if TYPE_CHECKING:
    from insar_pipeline.inputs.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkOptions:
    """How `pairs` builds the network from the search."""

    max_days: int = DEFAULT_MAX_DAYS
    neighbours: int = DEFAULT_NEIGHBOURS
    max_bperp: float | None = None  # metres; None: no limit

    def __post_init__(self) -> None:
        if self.max_days < 1 or self.neighbours < 1:
            raise InputError("--max-days and --neighbours must be at least 1")
        if self.max_bperp is not None and self.max_bperp <= 0:
            raise InputError("--max-bperp must be a positive number of metres")

    @property
    def text(self) -> str:
        bperp = "" if self.max_bperp is None else f" --max-bperp {self.max_bperp:g}"
        return f"--max-days {self.max_days} --neighbours {self.neighbours}{bperp}"


def find(settings: Settings) -> Selection:
    """Search once and select what covers the AOI."""
    check_search_settings(settings)
    aoi = settings.aoi or ""  # set: check_search_settings says so otherwise
    granules = search_granules(settings)
    selection = select(granules, aoi, settings.input_level, settings.polarization, settings.swaths)
    for item in selection.excluded:
        log.warning("%s (orbit %d) left out: %s", item.date, item.absolute_orbit, item.reason)
    return selection


def in_raw(raw_dir: Path, acquisition: Acquisition) -> Path | None:
    """The acquisition's product in data/raw, when it is there (complete by construction)."""
    if acquisition.is_burst:
        return bursts.built_safe(raw_dir, acquisition)
    for suffix in (".SAFE", ".zip"):
        path = raw_dir / f"{acquisition.name}{suffix}"
        if path.exists():
            return path
    return None


def download(settings: Settings, selection: Selection) -> int:
    """Fetch what is missing from data/raw; return how many dates were fetched."""
    raw = settings.raw_dir
    missing = [item for item in selection.acquisitions if in_raw(raw, item) is None]
    if not missing:
        log.info("all %d dates are already in %s", len(selection.acquisitions), raw)
        return 0
    jobs = [job for item in missing for job in _jobs(raw, item)]
    factor = bursts.BUILD_FACTOR if selection.level == "burst" else 1
    fetch.check_disk(raw, fetch.bytes_to_fetch(jobs) * factor)
    token = earthdata_token(settings)  # a refused login: exit 2, nothing written
    raw.mkdir(parents=True, exist_ok=True)
    log.info("downloading %d of %d dates into %s", len(missing), len(selection.acquisitions), raw)
    if selection.level == "burst":
        # ASF's extractor may want its login cookie beside the token (burst2safe gets it
        # first); a mirror (another host) gets the token only.
        first = selection.granules[0].url
        cookies = http.asf_cookies(token) if http.is_asf(first) else None
        fetch.fetch_all(jobs, token, settings.download_workers, cookies)
        for item in missing:
            bursts.build_safe(raw, item)
    else:
        fetch.fetch_all(jobs, token, settings.download_workers)
    return len(missing)


def _jobs(raw: Path, acquisition: Acquisition) -> list[fetch.FileJob]:
    if acquisition.is_burst:
        return bursts.burst_jobs(raw, acquisition)
    scene = acquisition.granules[0]
    target = raw / f"{scene.name}.zip"
    part = raw / fetch.PARTIAL_DIR / target.name
    return [fetch.FileJob(scene.url, target, part, scene.bytes, scene.md5, _zip_check(scene.name))]


def _zip_check(name: str) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        product = read_product(path)  # opens the zip, reads manifest.safe; InputError if bad
        if product.name != name:
            raise ServiceError(f"{path.name} holds {product.name}, not {name}")

    return check


def write_pairs(
    settings: Settings, selection: Selection, options: NetworkOptions, output: Path
) -> int:
    """Write the network of the downloaded dates to `output`; return the pair count."""
    names = {}
    for item in selection.acquisitions:
        path = in_raw(settings.raw_dir, item)
        if path is not None:
            names[item.name] = path.name
    absent = len(selection.acquisitions) - len(names)
    if absent:
        raise InputError(
            f"{absent} of the {len(selection.acquisitions)} dates found are not in"
            f" {settings.raw_dir} yet; run `download` first (or `run`, which does both)"
        )
    pairs = small_baseline_pairs(
        selection.acquisitions, options.max_days, options.neighbours, options.max_bperp
    )
    if not pairs:
        raise InputError(
            f"no pair can be made from the {len(selection.acquisitions)} dates found with"
            f" {options.text}; widen START/END or raise --max-days/--max-bperp"
        )
    write_atomic(output, render_network(pairs, names, options.text))
    log.info("wrote %d pairs of %d dates to %s", len(pairs), len(names), output)
    return len(pairs)


def prepare_inputs(settings: Settings) -> None:
    """`run`'s acquisition stage: with search settings and no pairs.txt, search, download what
    is missing and write pairs.txt; returns when data/raw and pairs.txt are ready. Without
    search settings, or once pairs.txt exists, it does nothing (a rerun resumes at `run`)."""
    if not search_requested(settings) or settings.pairs_file.exists():
        return
    selection = find(settings)
    if not selection.acquisitions:
        raise InputError("the search found no date that covers AOI; see the warnings above")
    download(settings, selection)
    write_pairs(settings, selection, NetworkOptions(), settings.pairs_file)


def describe(settings: Settings, options: NetworkOptions | None = None) -> str | None:
    """The search result and what data/raw holds of it, as `search` and `plan` print it;
    None without search settings."""
    if not search_requested(settings):
        return None
    options = options or NetworkOptions()
    selection = find(settings)
    present = {
        item.name: in_raw(settings.raw_dir, item) is not None for item in selection.acquisitions
    }
    pairs = small_baseline_pairs(
        selection.acquisitions, options.max_days, options.neighbours, options.max_bperp
    )
    return render_search(
        selection, present, free_disk_bytes(settings.raw_dir), pairs, options.text, settings
    )
