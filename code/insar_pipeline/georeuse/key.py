"""Compute each reference's geometry once: when may a pair reuse another pair's `topo`?

ISCE2_CONTRACT.md section 9, verified on ISCE2 2.6.5: on the CPU path `topo` is a pure function
of the reference bursts (metadata and orbit), the DEM and the common-burst range, writes only
`geom_reference/IWn/{lat,lon,hgt,los}_NN.rdr` and changes no state a later step reads. So a pair
may take the geometry of another pair whose `topo` finished when both have the same reference
product, the same orbit file for it, the same swaths, region of interest and explicit WGS84 DEM,
`use GPU` off, the same common-burst range, and byte-identical `reference/IW*.xml`.

Everything here reads a pair folder and decides; nothing is written (see `georeuse_link`).
The key can be predicted from `topsApp.xml` and the private `orbits/` folder before topsApp
runs (the scheduler groups pairs by it); the common-burst range is only known after
`verifyDEM`, and `guard` checks every condition again right before a link.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path

from lxml import etree

from insar_pipeline.isce_image import read_xml
from insar_pipeline.orbits.files import parse_orbit_name
from insar_pipeline.topsapp.steps import checkpoint_paths, finished_steps
from insar_pipeline.topsapp.xml import XML_NAME, read_properties, run_facts

TOPO = "topo"
BEFORE_TOPO = "verifyDEM"  # the checkpoint `--start=topo` loads, copied to PICKLE/topo
# The TopsProc properties that must agree (contract section 9); topo changes none of them.
GUARD_PROPERTIES = (
    "numberofcommonbursts",
    "commonburststartreferenceindex",
    "geometrydirectoryname",
    "referenceslcproduct",
    "numberofswaths",
)
RASTERS = ("lat", "lon", "hgt", "los")  # per common burst: runTopo's outputs
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


@dataclass(frozen=True)
class GeometryKey:
    """What a pair's geometry depends on; pairs with equal keys share one geometry."""

    reference: str  # the reference product, resolved path
    reference_orbit: str  # the orbit file ISCE picks for it (name)
    polarization: str
    swaths: tuple[int, ...]
    region_of_interest: tuple[float, ...] | None
    dem: str  # the DEM raster, resolved path
    # (first burst index, burst count) per swath 1..3, from PICKLE/verifyDEM.xml; None when
    # predicted before topsApp ran.
    common_bursts: tuple[tuple[int, int], ...] | None = None

    def predicted(self) -> GeometryKey:
        """The part known before topsApp runs (what the scheduler groups pairs by)."""
        return replace(self, common_bursts=None)

    def differences(self, other: GeometryKey) -> list[str]:
        """'<field>: <mine> vs <other's>' for each field that differs."""
        return [
            f"{field.name.replace('_', ' ')}: {getattr(self, field.name)} vs "
            f"{getattr(other, field.name)}"
            for field in fields(self)
            if getattr(self, field.name) != getattr(other, field.name)
        ]


def predicted_key(run_dir: Path) -> GeometryKey | None:
    """The key from topsApp.xml and orbits/ (no common-burst range), or None: never reusable."""
    key, _ = read_key(run_dir, with_bursts=False)
    return key


def geometry_key(run_dir: Path) -> GeometryKey | None:
    """The full key once `verifyDEM` finished in run_dir, else None."""
    key, _ = read_key(run_dir, with_bursts=True)
    return key


def read_key(run_dir: Path, with_bursts: bool) -> tuple[GeometryKey | None, str | None]:
    """(key, None) or (None, why this folder's geometry cannot be shared)."""
    try:
        properties = read_properties((run_dir / XML_NAME).read_bytes())
    except (OSError, ValueError) as err:
        return None, f"cannot read {XML_NAME} ({err})"
    if _isce_value(properties.get("usegpu", "False")):
        return None, "use GPU is on (reuse is verified for CPU topo only)"
    dem_text = properties.get("demfilename", "")
    if not dem_text:
        return None, "no explicit demFilename (topsApp would stitch its own DEM)"
    dem = (run_dir / dem_text).resolve()
    datum = _dem_datum(dem)
    if datum != "WGS84":
        return None, f"the DEM {dem.name} is {datum}, not WGS84 (ISCE converts it per pair)"
    safes = _isce_value(properties.get("reference.safe", ""))
    if not isinstance(safes, list) or len(safes) != 1:
        return None, "the reference is not one product (several slices or none)"
    reference = (run_dir / str(safes[0])).resolve()
    orbit, why = _reference_orbit(run_dir, properties, reference.name)
    if orbit is None:
        return None, why
    roi = _isce_value(properties.get("regionofinterest", ""))
    if roi and not (isinstance(roi, (list, tuple)) and len(roi) == 4):
        return None, f"the region of interest {roi!r} is not S, N, W, E"
    key = GeometryKey(
        reference=str(reference),
        reference_orbit=orbit,
        polarization=(properties.get("reference.polarization") or "vv").lower(),
        swaths=tuple(sorted(run_facts(properties).swaths)),
        region_of_interest=tuple(map(float, roi)) if isinstance(roi, (list, tuple)) else None,
        dem=str(dem),
    )
    if not with_bursts:
        return key, None
    state = read_checkpoint(checkpoint_paths(run_dir, BEFORE_TOPO)[0])
    counts = _isce_value(state.get("numberofcommonbursts", ""))
    starts = _isce_value(state.get("commonburststartreferenceindex", ""))
    if not (isinstance(counts, list) and isinstance(starts, list) and len(counts) == len(starts)):
        return None, f"PICKLE/{BEFORE_TOPO}.xml has no common-burst range"
    bursts = tuple((int(start), int(count)) for start, count in zip(starts, counts, strict=True))
    return replace(key, common_bursts=bursts), None


def guard(donor_dir: Path, run_dir: Path) -> list[str]:
    """Why run_dir must NOT take donor_dir's geometry; empty when every condition holds."""
    if donor_dir.resolve() == run_dir.resolve():
        return ["the donor is this pair"]
    done, donor_done = finished_steps(run_dir), finished_steps(donor_dir)
    if BEFORE_TOPO not in done or TOPO in done:
        return [f"this pair is not just after {BEFORE_TOPO} (finished: {', '.join(done)})"]
    if TOPO not in donor_done:
        return ["the donor's topo has not finished"]
    mine, why = read_key(run_dir, with_bursts=True)
    theirs, their_why = read_key(donor_dir, with_bursts=False)
    if mine is None or theirs is None:
        return [why or f"donor: {their_why}"]
    reasons = mine.predicted().differences(theirs)
    here = read_checkpoint(checkpoint_paths(run_dir, BEFORE_TOPO)[0])
    there = read_checkpoint(checkpoint_paths(donor_dir, TOPO)[0])
    for name in GUARD_PROPERTIES:
        if name not in here or here.get(name) != there.get(name):
            reasons.append(f"{name}: {here.get(name, 'absent')} vs {there.get(name, 'absent')}")
    reasons += _reference_metadata_differences(donor_dir, run_dir)
    if not reasons:
        reasons += [f"donor's geometry lacks {path}" for path in missing_geometry(donor_dir)[:3]]
    return reasons


def missing_geometry(run_dir: Path) -> list[str]:
    """The rasters (and ISCE headers) of topo's output that are not in run_dir.

    Read from `PICKLE/topo.xml`; a folder without it has no geometry (['PICKLE/topo.xml']).
    """
    state = read_checkpoint(checkpoint_paths(run_dir, TOPO)[0])
    counts = _isce_value(state.get("numberofcommonbursts", ""))
    starts = _isce_value(state.get("commonburststartreferenceindex", ""))
    folder = str(_isce_value(state.get("geometrydirectoryname", "")) or "geom_reference")
    if not (isinstance(counts, list) and isinstance(starts, list)):
        return [f"PICKLE/{TOPO}.xml"]
    expected = [
        f"{folder}/IW{swath}/{raster}_{index + 1:02d}.rdr{suffix}"
        for swath, (start, count) in enumerate(zip(starts, counts, strict=False), 1)
        for index in range(int(start), int(start) + int(count))
        for raster in RASTERS
        for suffix in ("", ".xml")
    ]
    if not expected:
        return ["any common burst"]
    return [path for path in expected if not (run_dir / path).is_file()]


def read_checkpoint(path: Path) -> dict[str, str]:
    """The top-level properties of a `PICKLE/<step>.xml` (names lower case, values as text)."""
    try:
        root = etree.parse(str(path), _PARSER).getroot()
    except (OSError, etree.XMLSyntaxError):
        return {}
    found: dict[str, str] = {}
    for prop in root.findall("property"):
        value = prop.find("value")
        text = value.text if value is not None else prop.text
        found["".join(prop.get("name", "").split()).lower()] = " ".join((text or "").split())
    return found


def _reference_metadata_differences(donor_dir: Path, run_dir: Path) -> list[str]:
    """reference/IW*.xml must be byte-identical: same bursts, crop, orbit vectors."""
    folders = []
    for folder in (donor_dir, run_dir):
        facts = run_facts(read_properties((folder / XML_NAME).read_bytes()))
        folders.append(folder / facts.reference_dir)
    theirs = {p.name: p for p in folders[0].glob("IW*.xml")}
    mine = {p.name: p for p in folders[1].glob("IW*.xml")}
    if not mine:
        return ["this pair has no reference/IW*.xml"]
    if sorted(theirs) != sorted(mine):
        return [f"reference swaths: {sorted(theirs)} vs {sorted(mine)}"]
    return [
        f"reference/{name} differs from the donor's"
        for name in sorted(mine)
        if mine[name].read_bytes() != theirs[name].read_bytes()
    ]


def _reference_orbit(
    run_dir: Path, properties: dict[str, str], reference: str
) -> tuple[str | None, str | None]:
    """The orbit file ISCE uses for the reference: `orbit file`, else its pick in the folder.

    ISCE's rule (contract section 5): the first kind (POEORB, then RESORB) with a file whose
    validity covers the scene; of those, the validity midpoint closest to the scene's.
    """
    explicit = properties.get("reference.orbitfile", "")
    if explicit:
        return Path(explicit).name, None
    folder_text = properties.get("reference.orbitdirectory", "")
    if not folder_text:
        return None, "no orbit directory: ISCE would use the annotation orbits"
    try:
        start, stop = (_scene_time(reference, index) for index in (5, 6))
    except (IndexError, ValueError):
        return None, f"cannot read the sensing time from {reference}"
    candidates = [
        orbit
        for path in sorted((run_dir / folder_text).glob("*.EOF"))
        if (orbit := parse_orbit_name(path.name)) is not None
        and orbit.mission == reference[:3]
        and orbit.valid_start <= start
        and orbit.valid_stop >= stop
    ]
    for kind in ("POEORB", "RESORB"):
        of_kind = [orbit for orbit in candidates if orbit.kind == kind]
        if of_kind:
            middle = start + (stop - start) / 2
            best = min(
                of_kind,
                key=lambda o: abs(o.valid_start + (o.valid_stop - o.valid_start) / 2 - middle),
            )
            return best.name, None
    return None, f"no orbit file in {folder_text}/ covers {reference}"


def _scene_time(name: str, index: int) -> datetime:
    text = name.split("_")[index]
    return datetime.strptime(text, "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)


def _dem_datum(dem: Path) -> str:
    header = dem.with_name(dem.name + ".xml")
    try:
        return read_xml(header).properties.get("REFERENCE", "EGM96").upper()
    except (OSError, etree.XMLSyntaxError):
        return f"unreadable ({header.name})"


def _isce_value(text: str) -> object:
    # As ISCE: eval when possible, else the string (so 'false' is a true string).
    try:
        return ast.literal_eval(text) if text else None
    except (ValueError, SyntaxError):
        return text
