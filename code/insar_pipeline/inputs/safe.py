"""Sentinel-1 IW SLC product metadata, read from a `.SAFE` folder or a `.zip` without unpacking.

The manifest (`manifest.safe`, parsed with lxml and its real namespaces) is the authority; the
product name is only a fallback for what it carries (mission, mode, type, start/stop, orbit).
Swaths and polarizations are what the product really holds: an annotation file
`annotation/s1?-iwN-slc-<pol>-*.xml` and a measurement file `measurement/...tiff` for that swath
and polarization (its size is not checked), which the manifest lists when it lists measurements
at all (ASF burst2safe products keep annotations of swaths that have no burst).
"""

from __future__ import annotations

import logging
import re
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TypeVar

from insar_pipeline.errors import InputError
from insar_pipeline.geo import BBox
from insar_pipeline.inputs.manifest import ManifestFields, parse_manifest

_T = TypeVar("_T")

log = logging.getLogger(__name__)

# S1A_IW_SLC__1SDV_20250406T022008_20250406T022035_058630_07421F_93A7
NAME_RE = re.compile(
    r"^(?P<mission>S1[A-D])_(?P<mode>[A-Z0-9]{2})_(?P<type>[A-Z]{3})[A-Z_]_"
    r"(?P<level>\d)(?P<klass>[A-Z])(?P<pols>[SD][HV])_"
    r"(?P<start>\d{8}T\d{6})_(?P<stop>\d{8}T\d{6})_(?P<orbit>\d{6})_"
    r"(?P<datatake>[0-9A-F]{6})_(?P<uid>[0-9A-F]{4})$"
)
NAME_POLARIZATIONS = {"SH": ("hh",), "SV": ("vv",), "DH": ("hh", "hv"), "DV": ("vv", "vh")}
# annotation/s1a-iw1-slc-vv-20250406t022009-...-004.xml (annotation/calibration/ does not match)
SWATH_FILE_RE = re.compile(r"^s1[a-d]-iw([1-3])-slc-(vv|vh|hh|hv)-[^/]*\.(?:xml|tiff)$", re.I)
# Relative orbit from the absolute one, for names without a manifest value (ESA's formulae;
# S1C/S1D have no published offset here, so they must come from the manifest).
ORBITS_PER_CYCLE = 175
RELATIVE_ORBIT_OFFSET = {"S1A": 73, "S1B": 27}
PRODUCT_SUFFIXES = (".safe", ".zip")
MANIFEST_IN_ZIP_RE = re.compile(r"[^/]+\.SAFE/manifest\.safe", re.IGNORECASE)


@dataclass(frozen=True)
class Product:
    """One Sentinel-1 product as the pipeline needs it. Times are timezone-aware UTC."""

    path: Path  # the .SAFE folder or .zip in data/raw
    name: str  # product name without .SAFE/.zip, e.g. S1A_IW_SLC__1SDV_20250406T022008_...
    mission: str  # S1A, S1B, S1C, S1D
    mode: str  # IW
    product_type: str  # SLC
    polarizations: tuple[str, ...]  # lower case, e.g. ("vv", "vh")
    relative_orbit: int
    absolute_orbit: int
    start: datetime
    stop: datetime
    footprint: tuple[tuple[float, float], ...]  # (lat, lon) corners from manifest.safe
    swaths: tuple[int, ...]  # IW swaths with annotation + measurement for at least one polarization

    @property
    def bbox(self) -> BBox:
        return BBox.around(list(self.footprint))

    @property
    def date(self) -> date:
        return self.start.date()

    @property
    def is_zip(self) -> bool:
        return self.path.suffix.lower() == ".zip"


def product_name(path: Path) -> str:
    """`X` for `data/raw/X.SAFE` or `data/raw/X.zip`."""
    return path.name[: -len(path.suffix)] if path.suffix.lower() in PRODUCT_SUFFIXES else path.name


def scan_raw(raw_dir: Path) -> dict[str, Path]:
    """Product name -> its `.SAFE` folder or `.zip` in raw_dir (other entries are ignored).

    When both `X.SAFE` and `X.zip` are present the unpacked `.SAFE` is used (a warning says so):
    it is the same product, and keeping the download beside its unpacked copy is common.
    """
    found: dict[str, Path] = {}
    for entry in sorted(raw_dir.iterdir()):
        if not is_product_path(entry):
            continue
        name = product_name(entry)
        other = found.get(name)
        if other is not None:
            safe, packed = (other, entry) if entry.suffix.lower() == ".zip" else (entry, other)
            log.warning(
                "%s and %s are the same product; using %s", safe.name, packed.name, safe.name
            )
            entry = safe
        found[name] = entry
    return found


def is_product_path(entry: Path) -> bool:
    """A `.SAFE` folder or a `.zip` file (a download in progress or a stray file is not)."""
    suffix = entry.suffix.lower()
    return suffix == ".safe" and entry.is_dir() or suffix == ".zip" and entry.is_file()


def read_product(path: Path) -> Product:
    """Read a product's metadata from its `.SAFE` folder or `.zip` (never unpacked).

    Raises InputError naming the file when it is not a readable, complete Sentinel-1 product.
    """
    if path.suffix.lower() == ".zip":
        name, manifest, members = _open_zip(path)
    else:
        name, manifest, members = _open_folder(path)
    fields = parse_manifest(manifest, f"{path}/manifest.safe")
    return _build(path, name, fields, members)


def _open_folder(path: Path) -> tuple[str, bytes, list[str]]:
    """Name, manifest bytes and the annotation/measurement files of a .SAFE folder."""
    try:
        manifest = (path / "manifest.safe").read_bytes()
        members = [f"annotation/{p.name}" for p in (path / "annotation").iterdir()]
        if (path / "measurement").is_dir():
            members += [f"measurement/{p.name}" for p in (path / "measurement").iterdir()]
    except FileNotFoundError as err:
        missing = Path(err.filename).name if err.filename else "a file"
        raise InputError(
            f"{path}: {missing} is missing; the product is incomplete, download it again"
        ) from None
    except OSError as err:
        raise InputError(f"{path}: cannot read it ({err.strerror or err})") from err
    return product_name(path), manifest, members


def _open_zip(path: Path) -> tuple[str, bytes, list[str]]:
    """Name, manifest bytes and member paths (relative to `<name>.SAFE/`) of a product zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            manifests = [n for n in names if MANIFEST_IN_ZIP_RE.fullmatch(n)]
            if len(manifests) != 1:
                raise InputError(
                    f"{path}: not a Sentinel-1 product zip (expected one <name>.SAFE/manifest.safe"
                    f" inside, found {len(manifests)})"
                )
            folder = manifests[0].split("/", 1)[0]
            manifest = archive.read(manifests[0])
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise InputError(f"{path}: not a readable zip ({err}); download it again") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read it ({err.strerror or err})") from err
    prefix = folder + "/"
    return (
        folder[: -len(".SAFE")],
        manifest,
        [n[len(prefix) :] for n in names if n.startswith(prefix)],
    )


def _build(path: Path, name: str, fields: ManifestFields, members: list[str]) -> Product:
    """The Product: manifest values first, the product name for what the manifest lacks."""
    named = match.groupdict() if (match := NAME_RE.match(name)) else {}

    def need(value: _T | None, what: str) -> _T:
        if value is None:
            raise InputError(
                f"{path}: manifest.safe has no {what} and the name does not carry it; "
                "the product is incomplete or renamed, download it again"
            )
        return value

    mission = need(fields.mission or named.get("mission"), "mission")
    absolute = need(fields.absolute_orbit or _opt_int(named.get("orbit")), "absolute orbit")
    relative = fields.relative_orbit or _relative_orbit(mission, absolute)
    swaths, pols = _swaths_and_polarizations(path, members, fields.measurements)
    order = fields.polarizations or NAME_POLARIZATIONS.get(named.get("pols", ""), ())
    return Product(
        path=path,
        name=name,
        mission=mission,
        mode=need(fields.mode or named.get("mode"), "acquisition mode"),
        product_type=need(fields.product_type or named.get("type"), "product type"),
        polarizations=tuple(sorted(pols, key=lambda p: (order.index(p) if p in order else 9, p))),
        relative_orbit=need(relative, "relative orbit"),
        absolute_orbit=absolute,
        start=need(fields.start or _name_time(named.get("start")), "sensing start"),
        stop=need(fields.stop or _name_time(named.get("stop")), "sensing stop"),
        footprint=need(fields.footprint or None, "footprint (gml:coordinates)"),
        swaths=swaths,
    )


def _swaths_and_polarizations(
    path: Path, members: list[str], listed: tuple[str, ...]
) -> tuple[tuple[int, ...], set[str]]:
    """The (swath, polarization) images a product holds: annotation and measurement present.

    When the manifest lists measurements, an image must be listed too: burst2safe products keep
    the annotations of swaths that have no burst.
    """
    annotations, measurements = (
        _images(members, "annotation", ".xml"),
        _images(members, "measurement", ".tiff"),
    )
    if listed:
        annotations &= _images(listed, "measurement", ".tiff")
    if not annotations:
        raise InputError(f"{path}: no IW swath annotation (annotation/s1?-iwN-slc-*.xml) found")
    found = annotations & measurements
    if not found:
        raise InputError(
            f"{path}: no measurement tiff (measurement/s1?-iwN-slc-*.tiff) for its annotations;"
            " the product is incomplete, download it again"
        )
    for swath, pol in sorted(annotations - found):
        log.warning("%s: IW%d %s has no measurement file; left out", path.name, swath, pol.upper())
    return tuple(sorted({swath for swath, _ in found})), {pol for _, pol in found}


def _images(members: Iterable[str], folder: str, suffix: str) -> set[tuple[int, str]]:
    """(swath, pol) of the files directly in `folder` (annotation/calibration/ is not)."""
    images = set()
    for member in members:
        parent, _, base = member.rpartition("/")
        match = SWATH_FILE_RE.match(base)
        if parent == folder and match and base.lower().endswith(suffix):
            images.add((int(match[1]), match[2].lower()))
    return images


def _relative_orbit(mission: str, absolute: int) -> int | None:
    offset = RELATIVE_ORBIT_OFFSET.get(mission)
    return None if offset is None else (absolute - offset) % ORBITS_PER_CYCLE + 1


def _name_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.strptime(value, "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)


def _opt_int(value: str | None) -> int | None:
    return None if value is None else int(value)
