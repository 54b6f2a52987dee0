"""The `pairs` command: a small-baseline network of the scenes in data/raw, written as pairs.txt.

`small_baseline_network` is pure: scenes are grouped by track (relative orbit) and frame
(overlapping footprints), and each scene is paired with the scenes of its next `neighbours`
later dates no more than `max_days` after it.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from insar_pipeline._io import FILE_MODE, write_text
from insar_pipeline.errors import InputError
from insar_pipeline.geo import BBox
from insar_pipeline.inputs.safe import Product, read_product, scan_raw

if TYPE_CHECKING:
    from insar_pipeline.inputs.config import Settings

log = logging.getLogger(__name__)

# Two scenes of one track are the same frame when their footprint boxes share at least this
# fraction of the smaller box; consecutive slices of a pass overlap by a few percent only.
MIN_FRAME_OVERLAP = 0.5
DEFAULT_MAX_DAYS = 48
DEFAULT_NEIGHBOURS = 3


def small_baseline_network(
    products: Sequence[Product], max_days: int, neighbours: int
) -> list[tuple[Product, Product]]:
    """(reference, secondary) pairs, earlier first, ordered by track then date (pure).

    Each scene is paired with every scene of the same track and frame acquired on one of its
    next `neighbours` later dates, at most `max_days` days later. Same-date scenes never pair.
    """
    by_track: dict[int, list[Product]] = defaultdict(list)
    for product in products:
        by_track[product.relative_orbit].append(product)
    pairs = []
    for track in sorted(by_track):
        scenes = sorted(by_track[track], key=lambda product: (product.start, product.name))
        for index, reference in enumerate(scenes):
            dates: list = []
            for secondary in scenes[index + 1 :]:
                days = (secondary.date - reference.date).days
                if days > max_days:
                    break
                if days == 0 or not same_frame(reference, secondary):
                    continue
                if secondary.date not in dates:
                    if len(dates) == neighbours:
                        break
                    dates.append(secondary.date)
                pairs.append((reference, secondary))
    return pairs


def same_frame(first: Product, second: Product) -> bool:
    """Whether two scenes of a track image the same ground (see MIN_FRAME_OVERLAP)."""
    a, b = first.bbox, second.bbox
    if not a.intersects(b):
        return False
    shared = BBox(
        max(a.south, b.south), min(a.north, b.north), max(a.west, b.west), min(a.east, b.east)
    )
    return _area(shared) >= MIN_FRAME_OVERLAP * min(_area(a), _area(b))


def _area(box: BBox) -> float:
    # Degrees squared is enough to compare boxes of one frame at one latitude.
    return (box.north - box.south) * (box.east - box.west)


def render_pairs_file(
    pairs: Sequence[tuple[Product, Product]], max_days: int, neighbours: int
) -> str:
    """pairs.txt text in the seed's tuple syntax, one comment line per track (pure)."""
    scenes = {product.path for pair in pairs for product in pair}
    lines = [
        "# Small-baseline network written by `main_parallel.py pairs`",
        f"# --max-days {max_days} --neighbours {neighbours}: {len(pairs)} pairs of"
        f" {len(scenes)} scenes. One pair per line, reference (earlier) first.",
    ]
    per_track = Counter(reference.relative_orbit for reference, _ in pairs)
    track = None
    for reference, secondary in pairs:
        if reference.relative_orbit != track:
            track = reference.relative_orbit
            lines += ["", f"# relative orbit {track}: {per_track[track]} pairs"]
        lines.append(f'("{reference.path.name}", "{secondary.path.name}")')
    return "\n".join(lines) + "\n"


def pairs_command(settings: Settings, args: argparse.Namespace) -> int:
    """Write a small-baseline pairs.txt from the scenes in data/raw."""
    max_days = getattr(args, "max_days", DEFAULT_MAX_DAYS)
    neighbours = getattr(args, "neighbours", DEFAULT_NEIGHBOURS)
    if max_days < 1 or neighbours < 1:
        raise InputError("--max-days and --neighbours must be at least 1")
    output = Path(getattr(args, "output", None) or settings.pairs_file)
    if output.exists() and not getattr(args, "force", False):
        raise InputError(f"{output} exists; pass --force to overwrite it or --output FILE")
    scenes = _usable(_read_all(settings.raw_dir), settings.polarization)
    pairs = small_baseline_network(scenes, max_days, neighbours)
    if not pairs:
        raise InputError(
            f"no pair can be made from the {len(scenes)} usable scenes in {settings.raw_dir}: "
            f"a pair needs two dates of one track and frame at most {max_days} days apart"
        )
    write_atomic(output, render_pairs_file(pairs, max_days, neighbours))
    tracks = len({reference.relative_orbit for reference, _ in pairs})
    log.info("wrote %d pairs on %d track(s) to %s", len(pairs), tracks, output)
    return 0


def _read_all(raw_dir: Path) -> list[Product]:
    if not raw_dir.is_dir():
        raise InputError(f"{raw_dir} does not exist; put the .SAFE folders or .zip files there")
    products, errors = [], []
    for path in scan_raw(raw_dir).values():
        try:
            products.append(read_product(path))
        except InputError as err:
            errors.append(str(err))
    if errors:
        raise InputError("\n".join(errors))
    if not products:
        raise InputError(f"{raw_dir} holds no .SAFE folder or .zip file")
    return products


def _usable(products: list[Product], polarization: str) -> list[Product]:
    usable = []
    for product in products:
        if (product.mode, product.product_type) != ("IW", "SLC"):
            log.warning("%s skipped: not an IW SLC product", product.path.name)
        elif polarization not in product.polarizations:
            log.warning("%s skipped: no %s polarization", product.path.name, polarization.upper())
        else:
            usable.append(product)
    return usable


def write_atomic(path: Path, text: str) -> None:
    """Write text to path through a temp file in the same folder, so it is never half-written."""
    if not path.parent.is_dir():
        raise InputError(f"{path.parent} does not exist; create it or choose another --output")
    # The pairs file keeps the mode the user gave it.
    write_text(path, text, path.stat().st_mode & 0o777 if path.exists() else FILE_MODE)
