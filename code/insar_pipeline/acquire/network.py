"""The small-baseline network of a search: pairs by temporal and perpendicular baseline (pure).

Each date is paired with its next `neighbours` later dates that are at most `max_days` later
and whose perpendicular baseline (asf_search's baseline stack) differs by at most `max_bperp`
metres (a date over the limit is skipped, so a later one takes its place);
pairs.txt gets one comment line per pair giving both baselines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from insar_pipeline.acquire.coverage import Acquisition


@dataclass(frozen=True)
class NetworkPair:
    reference: Acquisition
    secondary: Acquisition

    @property
    def days(self) -> int:
        return (self.secondary.date - self.reference.date).days

    @property
    def bperp(self) -> float | None:
        if self.reference.bperp is None or self.secondary.bperp is None:
            return None
        return self.secondary.bperp - self.reference.bperp


def small_baseline_pairs(
    acquisitions: Sequence[Acquisition],
    max_days: int,
    neighbours: int,
    max_bperp: float | None = None,
) -> list[NetworkPair]:
    """(reference, secondary) pairs, earlier first, in date order.

    A pair whose perpendicular baseline is unknown (no state vectors) is kept: only a known
    baseline above `max_bperp` rules a pair out.
    """
    ordered = sorted(acquisitions, key=lambda item: (item.date, item.name))
    pairs = []
    for index, reference in enumerate(ordered):
        taken = 0
        for secondary in ordered[index + 1 :]:
            pair = NetworkPair(reference, secondary)
            if pair.days > max_days or taken == neighbours:
                break
            if pair.days == 0:
                continue
            if max_bperp is not None and pair.bperp is not None and abs(pair.bperp) > max_bperp:
                continue
            pairs.append(pair)
            taken += 1
    return pairs


def render_network(
    pairs: Sequence[NetworkPair],
    names: Mapping[str, str],
    options: str,
) -> str:
    """pairs.txt text: a header, then per pair a baseline comment and the pair line (pure).

    `names` maps an acquisition's name to the product name in data/raw (a burst SAFE's full
    name is known only once built); `options` is the line of network options used.
    """
    dates = {item.name for pair in pairs for item in (pair.reference, pair.secondary)}
    lines = [
        "# Small-baseline network written by `main_parallel.py pairs` from the search",
        f"# {options}: {len(pairs)} pairs of {len(dates)} dates."
        " One pair per line, reference (earlier) first.",
    ]
    for pair in pairs:
        lines.append(f"# {describe_pair(pair)}")
        reference, secondary = names[pair.reference.name], names[pair.secondary.name]
        lines.append(f'("{reference}", "{secondary}")')
    return "\n".join(lines) + "\n"


def describe_pair(pair: NetworkPair) -> str:
    bperp = "unknown" if pair.bperp is None else f"{pair.bperp:+.0f} m"
    return (
        f"{pair.reference.date} -> {pair.secondary.date}: temporal baseline {pair.days} days,"
        f" perpendicular baseline {bperp}"
    )
