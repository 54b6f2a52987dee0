"""The pair network of a track: dates, pairs, connected components (pure).

Union-find over dates with path halving and union by size: linear in the number of pairs. The
pieces MintPy inverts are the finished pairs' components; a date joined to the rest only through
failed pairs drops out of the network and is reported, and pairs outside the largest component
are marked dropped (MintPy's `dropIfgram` and `mintpy.network.excludeDate12`) rather than letting
the inversion tie unrelated pieces together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Link:
    """A pair of the track as the ledger holds it."""

    pair_id: str
    reference: str  # YYYYMMDD
    secondary: str  # YYYYMMDD
    finished: bool

    @property
    def date12(self) -> str:
        return f"{self.reference}_{self.secondary}"


@dataclass(frozen=True)
class Network:
    """The finished pairs of a track and how they hang together."""

    links: tuple[Link, ...]  # finished pairs, sorted by (reference, secondary)
    components: tuple[tuple[str, ...], ...]  # dates per component, largest first
    stranded: tuple[str, ...]  # dates only failed pairs reach
    failed: tuple[Link, ...]

    @property
    def dates(self) -> tuple[str, ...]:
        return tuple(sorted({d for link in self.links for d in (link.reference, link.secondary)}))

    @property
    def is_split(self) -> bool:
        return len(self.components) > 1

    @property
    def kept_dates(self) -> frozenset[str]:
        return frozenset(self.components[0]) if self.components else frozenset()

    def keeps(self, link: Link) -> bool:
        """Whether MintPy inverts this pair (it is in the largest component)."""
        return link.reference in self.kept_dates

    @property
    def dropped(self) -> tuple[Link, ...]:
        return tuple(link for link in self.links if not self.keeps(link))


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.size: dict[str, int] = {}

    def add(self, item: str) -> None:
        if item not in self.parent:
            self.parent[item] = item
            self.size[item] = 1

    def find(self, item: str) -> str:
        parent = self.parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]  # path halving
            item = parent[item]
        return item

    def union(self, first: str, second: str) -> None:
        a, b = self.find(first), self.find(second)
        if a == b:
            return
        if self.size[a] < self.size[b]:
            a, b = b, a
        self.parent[b] = a
        self.size[a] += self.size[b]


def build_network(links: Iterable[Link]) -> Network:
    """The network of these pairs; only finished ones join dates."""
    every = list(links)
    done = sorted((link for link in every if link.finished), key=lambda k: k.date12)
    failed = tuple(link for link in every if not link.finished)
    sets = _UnionFind()
    for link in done:
        sets.add(link.reference)
        sets.add(link.secondary)
        sets.union(link.reference, link.secondary)
    groups: dict[str, list[str]] = {}
    for day in sorted(sets.parent):
        groups.setdefault(sets.find(day), []).append(day)
    components = sorted((tuple(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))
    failed_dates = {d for link in failed for d in (link.reference, link.secondary)}
    stranded = tuple(sorted(failed_dates - set(sets.parent)))
    return Network(tuple(done), tuple(components), stranded, failed)


def describe(network: Network, track: str) -> list[str]:
    """What a user should know about this network, one line each (empty when all is well)."""
    lines = []
    for day in network.stranded:
        through = [
            link.pair_id for link in network.failed if day in (link.reference, link.secondary)
        ]
        lines.append(
            f"track {track}: date {day} is joined to the others only through failed pairs"
            f" ({', '.join(through)}); it is left out of the time series"
        )
    if network.is_split:
        pieces = "; ".join(f"{c[0]}..{c[-1]} ({len(c)} dates)" for c in network.components)
        dropped = ", ".join(link.pair_id for link in network.dropped)
        lines.append(
            f"track {track}: the network is in {len(network.components)} pieces ({pieces});"
            f" MintPy inverts the largest, the pairs {dropped} are marked dropped"
        )
    return lines
