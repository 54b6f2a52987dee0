"""Which granules to fetch: one acquisition per pass that covers the whole area (pure).

A pass (one absolute orbit) is kept only when it covers the AOI: at scene level one scene
must cover it (pairs take one product per date); at burst level every date gets the same
burst IDs, the ones over the AOI found on at least half of the passes, and a pass missing one
of them is left out. Every pass left out is listed with its reason, never dropped silently.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from shapely import wkt
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from insar_pipeline.acquire.search import Granule

# A footprint covers the area when it holds this fraction of it (corner polygons are coarse).
FULL_COVERAGE = 0.999
POLARIZATION_CODES = {"HH": "SH", "VV": "SV", "VH": "VH", "HV": "HV"}  # burst2safe's names


@dataclass(frozen=True)
class Acquisition:
    """What one date contributes: one scene, or the common bursts of that pass."""

    date: date
    absolute_orbit: int
    platform: str
    granules: tuple[Granule, ...]
    bperp: float | None  # metres, to the stack reference

    @property
    def bytes(self) -> int:
        return sum(granule.bytes or 0 for granule in self.granules)

    @property
    def is_burst(self) -> bool:
        return self.granules[0].burst_id is not None

    @property
    def name(self) -> str:
        """The product name in data/raw: the scene, or the burst SAFE's name up to its CRC."""
        if not self.is_burst:
            return self.granules[0].name
        return burst_safe_prefix(self.granules)


@dataclass(frozen=True)
class Excluded:
    """A pass left out, and why."""

    date: date
    absolute_orbit: int
    reason: str


@dataclass(frozen=True)
class Selection:
    level: Literal["scene", "burst"]
    acquisitions: tuple[Acquisition, ...]
    excluded: tuple[Excluded, ...]
    burst_ids: tuple[str, ...] = ()  # burst level: the IDs every kept date has

    @property
    def bytes(self) -> int:
        return sum(acquisition.bytes for acquisition in self.acquisitions)

    @property
    def granules(self) -> list[Granule]:
        return [granule for item in self.acquisitions for granule in item.granules]


def select(
    granules: Iterable[Granule],
    aoi_wkt: str,
    level: Literal["scene", "burst"],
    polarization: str,
    swaths: Sequence[int] = (1, 2, 3),
) -> Selection:
    """The acquisitions to fetch for the AOI, and the passes left out with their reason."""
    aoi = wkt.loads(aoi_wkt)
    passes: dict[int, list[Granule]] = defaultdict(list)
    for granule in granules:
        passes[granule.absolute_orbit].append(granule)
    ordered = sorted(passes.values(), key=lambda items: min(g.start for g in items))
    if level == "burst":
        return _select_bursts(ordered, aoi, polarization.upper(), swaths)
    kept, excluded = [], []
    for items in ordered:
        choice = _choose_scene(items, aoi, polarization.upper())
        if isinstance(choice, str):
            excluded.append(Excluded(items[0].date, items[0].absolute_orbit, choice))
        else:
            kept.append(_acquisition((choice,)))
    return Selection("scene", tuple(kept), tuple(excluded))


def _choose_scene(items: list[Granule], aoi: BaseGeometry, polarization: str) -> Granule | str:
    """The scene of a pass that covers the AOI, or the reason there is none."""
    scenes = [g for g in items if polarization in g.polarization.split("+")]
    if not scenes:
        found = ", ".join(sorted({g.polarization for g in items}))
        return f"no {polarization} scene (found {found})"
    covered = [(coverage(aoi, [scene]), scene) for scene in scenes]
    best_fraction, best = max(covered, key=lambda item: (item[0], item[1].name))
    if best_fraction >= FULL_COVERAGE:
        return best
    together = [scene for fraction, scene in covered if fraction > 0]
    if len(together) > 1 and coverage(aoi, together) >= FULL_COVERAGE:
        names = ", ".join(scene.name for scene in together)
        return (
            f"the area spans {len(together)} scenes ({names}) and a pair takes one scene per"
            " date: use a smaller AOI, or INPUT_LEVEL=burst"
        )
    return f"{best.name} covers only {best_fraction:.0%} of the area"


def _select_bursts(
    passes: list[list[Granule]], aoi: BaseGeometry, polarization: str, swaths: Sequence[int]
) -> Selection:
    by_pass: list[dict[str, Granule]] = []
    for items in passes:
        bursts: dict[str, Granule] = {}
        for g in sorted(items, key=lambda granule: granule.name):
            if (
                g.burst_id is not None
                and g.polarization == polarization
                and g.swath in swaths
                and coverage(aoi, [g]) > 0
            ):
                bursts.setdefault(g.burst_id, g)
        by_pass.append(bursts)
    counts: dict[str, int] = defaultdict(int)
    for bursts in by_pass:
        for burst_id in bursts:
            counts[burst_id] += 1
    common = sorted(b for b, n in counts.items() if 2 * n >= len(by_pass))
    kept, excluded = [], []
    for items, bursts in zip(passes, by_pass, strict=True):
        missing = [burst_id for burst_id in common if burst_id not in bursts]
        chosen = tuple(bursts[burst_id] for burst_id in common if burst_id in bursts)
        fraction = coverage(aoi, chosen) if chosen else 0.0
        if missing:
            reason = f"burst{'s' if len(missing) > 1 else ''} {', '.join(missing)} missing"
        elif fraction < FULL_COVERAGE:
            reason = f"its bursts cover only {fraction:.0%} of the area"
        else:
            kept.append(_acquisition(chosen))
            continue
        excluded.append(Excluded(items[0].date, items[0].absolute_orbit, reason))
    return Selection("burst", tuple(kept), tuple(excluded), tuple(common))


def _acquisition(granules: tuple[Granule, ...]) -> Acquisition:
    first = granules[0]
    bperps = [g.bperp for g in granules if g.bperp is not None]
    return Acquisition(
        first.date,
        first.absolute_orbit,
        first.platform,
        granules,
        sum(bperps) / len(bperps) if bperps else None,
    )


def coverage(aoi: BaseGeometry, granules: Sequence[Granule]) -> float:
    """The fraction of the AOI's area inside the granules' footprints (0 to 1)."""
    union = unary_union([Polygon(g.footprint) for g in granules])
    return float(aoi.intersection(union).area / aoi.area) if aoi.area else 0.0


def burst_safe_prefix(bursts: Sequence[Granule]) -> str:
    """The name burst2safe gives the SAFE of these bursts, up to its manifest CRC (pure):
    `S1A_IW_SLC__1SSV_<first burst>_<last burst>_<orbit>_<datatake>_`."""
    slc = bursts[0].slc_name or ""
    platform, datatake = slc[:3] or bursts[0].platform, slc.split("_")[-2] if slc else "000000"
    times = sorted(g.name.split("_")[3] for g in bursts)
    code = POLARIZATION_CODES[bursts[0].polarization]
    orbit = bursts[0].absolute_orbit
    return f"{platform}_IW_SLC__1S{code}_{times[0]}_{times[-1]}_{orbit:06d}_{datatake}_"
