"""The text `search` (and `plan`) print: dates, files, sizes, left-out dates, the network (pure)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from shapely import wkt

from insar_pipeline.acquire.coverage import Selection
from insar_pipeline.acquire.fetch import gigabytes
from insar_pipeline.acquire.network import NetworkPair, describe_pair

if TYPE_CHECKING:
    from insar_pipeline.inputs.config import Settings


def render_search(
    selection: Selection,
    present: Mapping[str, bool],
    free: int,
    pairs: Sequence[NetworkPair],
    network_options: str,
    settings: Settings,
) -> str:
    """`present` maps an acquisition's name to whether data/raw already holds it."""
    west, south, east, north = wkt.loads(settings.aoi or "POINT (0 0)").bounds
    lines = [
        f"Search at {settings.cmr_host}: relative orbit {settings.relative_orbit}"
        f"{' ' + settings.flight_direction if settings.flight_direction else ''},"
        f" {settings.start} to {settings.end or 'today'}, {selection.level} level,"
        f" {settings.polarization.upper()}, AOI S,N,W,E {south:g},{north:g},{west:g},{east:g}",
        f"{len(selection.acquisitions)} dates to use, {len(selection.excluded)} left out",
    ]
    if selection.burst_ids:
        lines.append(f"bursts on every date: {_bursts_by_swath(selection.burst_ids)}")
    lines.append("")
    for item in selection.acquisitions:
        state = "in data/raw" if present.get(item.name) else gigabytes(item.bytes)
        bperp = "" if item.bperp is None else f"  bperp {item.bperp:+.0f} m"
        what = f"{len(item.granules)} bursts -> {item.name}*.SAFE" if item.is_burst else item.name
        lines.append(f"  {item.date}  {item.platform}  orbit {item.absolute_orbit}  {what}"
                     f"  {state}{bperp}")  # fmt: skip
    if selection.excluded:
        lines += ["", "left out (the area is not fully covered):"]
        lines += [
            f"  {item.date}  orbit {item.absolute_orbit}: {item.reason}"
            for item in selection.excluded
        ]
    to_fetch = sum(item.bytes for item in selection.acquisitions if not present.get(item.name))
    held = selection.bytes - to_fetch
    lines += [
        "",
        f"total: {gigabytes(selection.bytes)} in {len(selection.granules)} files;"
        f" {gigabytes(to_fetch)} to download ({gigabytes(held)} already in data/raw);"
        f" {gigabytes(free)} free in data/raw",
        "",
        f"network ({network_options}): {len(pairs)} pairs",
        *(f"  {describe_pair(pair)}" for pair in pairs),
    ]
    return "\n".join(lines) + "\n"


def _bursts_by_swath(burst_ids: Sequence[str]) -> str:
    by_swath: dict[str, list[str]] = defaultdict(list)
    for burst_id in burst_ids:
        track, number, swath = burst_id.split("_")
        by_swath[swath].append(number)
    return (
        "  ".join(f"{swath} {' '.join(numbers)}" for swath, numbers in sorted(by_swath.items()))
        + f"  (track {burst_ids[0].split('_')[0]}, {len(burst_ids)} bursts)"
    )
