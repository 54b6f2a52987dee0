"""Sentinel-1 orbit (.EOF) files: names, contents, and the pure rule that picks one for a scene.

sentineleof's `_select_orbit.py` is the model: a named physical constant, explicit margins,
no I/O in the rule. The rule is stricter than ISCE2's own (contract section 5), so a file we
choose is always one ISCE2 accepts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from lxml import etree

T_ORBIT = 12 * 86400 / 175
"""Sentinel-1 orbital period in seconds (175 orbits in a 12-day repeat cycle)."""

# The file must start one orbit (+60 s) before the scene so that it holds the ascending node
# crossing before the acquisition, and end 60 s after it: ISCE2 keeps state vectors up to 60 s
# either side of the bursts (extractPreciseOrbit margin).
START_MARGIN = timedelta(seconds=T_ORBIT + 60)
STOP_MARGIN = timedelta(seconds=60)
KINDS = ("POEORB", "RESORB")  # preference order: precise, then restituted
MISSIONS = {"Sentinel-1A": "S1A", "Sentinel-1B": "S1B", "Sentinel-1C": "S1C", "Sentinel-1D": "S1D"}
# State vectors are 10 s apart (60 s in test fixtures); the first and last must lie this close
# to the validity bounds, else the file lost part of its data.
OSV_SPAN_TOLERANCE = timedelta(seconds=90)
HEADER_BYTES = 8192  # the Earth Explorer header always fits in the first few kB
# POEORB files are published about 20 days after sensing; until then RESORB is the best there is.
POEORB_LATENCY = timedelta(days=21)

NAME_RE = re.compile(
    r"^(?P<mission>S1[A-D])_OPER_AUX_(?P<kind>POEORB|RESORB)_OPOD_(?P<created>\d{8}T\d{6})"
    r"_V(?P<start>\d{8}T\d{6})_(?P<stop>\d{8}T\d{6})\.EOF$"
)
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


class EofError(ValueError):
    """An orbit file's contents are not a complete Earth Explorer orbit file."""


@dataclass(frozen=True)
class OrbitFile:
    """One orbit file, known by name (remote listing) or by path (in the orbit folder)."""

    name: str  # S1A_OPER_AUX_POEORB_OPOD_<created>_V<start>_<stop>.EOF
    mission: str  # S1A, S1B, S1C, S1D
    kind: str  # POEORB or RESORB
    created: datetime  # UTC-aware, as all times here
    valid_start: datetime
    valid_stop: datetime
    path: Path | None = None

    def at(self, path: Path) -> OrbitFile:
        return replace(self, path=path)


def _utc(text: str, fmt: str = "%Y%m%dT%H%M%S") -> datetime:
    return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)


def parse_orbit_name(name: str, path: Path | None = None) -> OrbitFile | None:
    """The orbit file a name stands for, or None when it is not an S1 orbit file name."""
    match = NAME_RE.match(name)
    if match is None:
        return None
    return OrbitFile(
        name=name,
        mission=match["mission"],
        kind=match["kind"],
        created=_utc(match["created"]),
        valid_start=_utc(match["start"]),
        valid_stop=_utc(match["stop"]),
        path=path,
    )


def qualifies(orbit: OrbitFile, mission: str, start: datetime, stop: datetime) -> bool:
    """True when `orbit` may serve a scene of `mission` sensed from `start` to `stop`."""
    return (
        orbit.mission == mission
        and orbit.valid_start <= start - START_MARGIN
        and orbit.valid_stop >= stop + STOP_MARGIN
    )


def select_orbit(
    candidates: Iterable[OrbitFile], mission: str, start: datetime, stop: datetime
) -> OrbitFile | None:
    """The orbit file to use for a scene, or None when no candidate qualifies.

    Parameters
    ----------
    candidates
        Orbit files known by name (a listing, the orbit folder, a service's answer).
    mission
        The scene's mission (S1A, S1B, S1C, S1D); only files of that mission qualify.
    start, stop
        The scene's sensing window (UTC-aware).

    Returns
    -------
    OrbitFile or None
        Precise (POEORB) files win over restituted (RESORB) ones whenever one qualifies
        (`qualifies`: valid from one orbit + 60 s before `start` to 60 s after `stop`); among
        those of that kind the newest creation time wins (a reprocessed file supersedes the
        older one), then the name, so the choice never depends on the order of `candidates`.
    """
    pool = [orbit for orbit in candidates if qualifies(orbit, mission, start, stop)]
    for kind in KINDS:
        of_kind = [orbit for orbit in pool if orbit.kind == kind]
        if of_kind:
            return max(of_kind, key=lambda orbit: (orbit.created, orbit.name))
    return None


def precise_expected(stop: datetime, now: datetime) -> bool:
    """True when a precise orbit should exist by `now` for a scene that ended at `stop`."""
    return now - stop >= POEORB_LATENCY


def read_eof(data: bytes, name: str) -> OrbitFile:
    """Check a whole downloaded file and return what its header says.

    Rejects HTML or error bodies, truncated documents, headers that contradict the file
    name, and state-vector lists that do not span the validity window.
    """
    expected = _expected(name)
    if not data[:512].lstrip().startswith(b"<?xml") and b"<Earth_Explorer_File" not in data[:512]:
        raise EofError(f"{name}: not an orbit file (starts with {data[:40]!r})")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as err:
        raise EofError(f"{name}: incomplete or malformed XML ({err})") from None
    orbit = _check_header(root, expected)
    _check_state_vectors(root, orbit)
    return orbit


def read_eof_header(path: Path) -> OrbitFile:
    """Cheap check of a file already in the orbit folder: its header, and that it is complete.

    Files get there only through `read_eof` + rename, or by the user's hand; a full parse
    of every cached 4 MB file on every run would cost more than it protects against.
    """
    expected = _expected(path.name)
    try:
        with path.open("rb") as stream:
            head = stream.read(HEADER_BYTES)
            stream.seek(max(0, path.stat().st_size - 256))
            tail = stream.read()
    except OSError as err:
        raise EofError(f"{path}: cannot read it ({err.strerror})") from None
    if not tail.rstrip().endswith(b"</Earth_Explorer_File>"):
        raise EofError(f"{path}: the file is truncated (no closing tag)")
    end = head.find(b"</Earth_Explorer_Header>")
    if end < 0:
        raise EofError(f"{path}: no Earth Explorer header in its first {HEADER_BYTES} bytes")
    header = head[: end + len(b"</Earth_Explorer_Header>")] + b"</Earth_Explorer_File>"
    try:
        root = etree.fromstring(header, _PARSER)
    except etree.XMLSyntaxError as err:
        raise EofError(f"{path}: malformed header ({err})") from None
    return _check_header(root, expected).at(path)


def _expected(name: str) -> OrbitFile:
    orbit = parse_orbit_name(name)
    if orbit is None:
        raise EofError(f"{name}: not a Sentinel-1 orbit file name")
    return orbit


def _text(root: etree._Element, path: str, name: str) -> str:
    value = root.findtext(path)
    if value is None or not value.strip():
        raise EofError(f"{name}: header has no {path.rsplit('/', 1)[-1]}")
    return value.strip()


def _header_time(root: etree._Element, path: str, name: str) -> datetime:
    value = _text(root, path, name).removeprefix("UTC=")
    try:
        return _utc(value, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise EofError(f"{name}: bad time {value!r} in {path}") from None


def _check_header(root: etree._Element, expected: OrbitFile) -> OrbitFile:
    name = expected.name
    if root.tag != "Earth_Explorer_File":
        raise EofError(f"{name}: root element is <{root.tag}>, not an orbit file")
    fixed = "Earth_Explorer_Header/Fixed_Header/"
    found = OrbitFile(
        name=name,
        mission=MISSIONS.get(_text(root, fixed + "Mission", name), "?"),
        kind=_text(root, fixed + "File_Type", name).removeprefix("AUX_"),
        created=_header_time(root, fixed + "Source/Creation_Date", name),
        valid_start=_header_time(root, fixed + "Validity_Period/Validity_Start", name),
        valid_stop=_header_time(root, fixed + "Validity_Period/Validity_Stop", name),
    )
    if _text(root, fixed + "File_Name", name) != name.removesuffix(".EOF"):
        raise EofError(f"{name}: the header names another file")
    if found != expected:
        raise EofError(f"{name}: header (mission, type or validity) contradicts the file name")
    return found


def _check_state_vectors(root: etree._Element, orbit: OrbitFile) -> None:
    listing = root.find("Data_Block/List_of_OSVs")
    if listing is None:
        raise EofError(f"{orbit.name}: no List_of_OSVs")
    vectors = listing.findall("OSV")
    if len(vectors) < 2 or listing.get("count") != str(len(vectors)):
        raise EofError(
            f"{orbit.name}: {len(vectors)} state vectors, header count {listing.get('count')}"
        )
    first, last = (_osv_time(vector, orbit.name) for vector in (vectors[0], vectors[-1]))
    tolerance = OSV_SPAN_TOLERANCE
    if first > orbit.valid_start + tolerance or last < orbit.valid_stop - tolerance:
        raise EofError(f"{orbit.name}: state vectors span {first} to {last}, short of validity")


def _osv_time(vector: etree._Element, name: str) -> datetime:
    value = _text(vector, "UTC", name).removeprefix("UTC=")
    try:
        return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
    except ValueError:
        raise EofError(f"{name}: bad state vector time {value!r}") from None
