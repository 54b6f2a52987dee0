"""One pair's `topsApp.xml`, built element by element with lxml (ISCE2_CONTRACT.md section 3).

ISCE evaluates property values as Python, so booleans are written `True`/`False` and lists as
Python literals. Paths are written relative to the pair folder (topsApp runs with cwd there):
the same data folder mounted elsewhere (container or host) then yields the same bytes, so a
rerun does not look like a new configuration. Each pair gets a private orbit folder holding only
its two chosen orbit files, so ISCE's own orbit search cannot pick another one.
"""

from __future__ import annotations

import ast
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from insar_pipeline._io import atomic_output, write_bytes
from insar_pipeline.errors import InputError
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.pairs import Pair
from insar_pipeline.inputs.safe import Product

XML_NAME = "topsApp.xml"
ORBIT_DIR = "orbits"
# The products geocoded (hyp3-isce2's list): what the report and users read.
GEOCODE_LIST = (
    "merged/phsig.cor",
    "merged/topophase.cor",
    "merged/filt_topophase.flat",
    "merged/los.rdr",
    "merged/filt_topophase.unw",
    "merged/filt_topophase.unw.conncomp",
)
ION_GEOCODE = "merged/topophase.ion"  # ISCE's default list names it without merged/ (a bug)

# property (ISCE-normalized name) -> (first step that reads it, the setting behind it).
# A changed property spoils a run folder only once that step has finished; anything not
# listed (inputs, swaths, region of interest...) is read by `preprocess`.
PROPERTY_RULES: dict[str, tuple[str, str]] = {
    "rangelooks": ("burstifg", "RANGE_LOOKS"),
    "azimuthlooks": ("burstifg", "AZIMUTH_LOOKS"),
    "filterstrength": ("filter", "FILTER_STRENGTH"),
    "dounwrap": ("unwrap", "UNWRAP"),
    "unwrappername": ("unwrap", "UNWRAPPER"),
    "doionospherecorrection": ("ion", "IONOSPHERE"),
    "applyionospherecorrection": ("ion", "IONOSPHERE"),
    "doesd": ("subsetoverlaps", "ESD"),
    "esdcoherencethreshold": ("esd", "ESD_COHERENCE_THRESHOLD"),
    "demfilename": ("verifyDEM", "the DEM (ROI, DEM_TYPE)"),
    "geocodedemfilename": ("geocode", "the DEM (ROI, DEM_TYPE)"),
    "geocodeboundingbox": ("geocode", "GEOCODE_BBOX"),
    "geocodelist": ("geocode", "IONOSPHERE"),
    "swaths": ("preprocess", "SWATHS"),
    "regionofinterest": ("preprocess", "REGION_OF_INTEREST"),
    "reference.polarization": ("preprocess", "POLARIZATION"),
    "secondary.polarization": ("preprocess", "POLARIZATION"),
}
_DEFAULT_RULE = ("preprocess", "the pair's inputs")
# ISCE's defaults of properties a topsApp.xml may leave out (applications/topsApp.py): an absent
# property and its default are the same configuration, not a change.
ISCE_DEFAULTS: dict[str, str] = {"doesd": "True", "esdcoherencethreshold": "0.85"}


def normalize(name: str) -> str:
    """ISCE's property-name matching: case and white space do not count (underscores do)."""
    return "".join(name.split()).lower()


def topsapp_xml(
    settings: Settings, pair: Pair, run_dir: Path, dem: Path, geocode_dem: Path | None = None
) -> bytes:
    """The bytes of the pair's topsApp.xml: a pure function of its arguments."""
    root = etree.Element("topsApp")
    insar = etree.SubElement(root, "component", name="topsinsar")
    _property(insar, "Sensor name", "SENTINEL1")
    for role, product in (("reference", pair.reference), ("secondary", pair.secondary)):
        component = etree.SubElement(insar, "component", name=role)
        _property(component, "safe", repr([_relative(product.path, run_dir, f"{role} product")]))
        _property(component, "orbit directory", ORBIT_DIR)
        _property(component, "output directory", role)
        _property(component, "polarization", settings.polarization)
    _property(insar, "demFilename", _relative(_dem_raster(dem), run_dir, "DEM"))
    geocode_dem = _dem_raster(geocode_dem or dem)
    _property(insar, "geocode demfilename", _relative(geocode_dem, run_dir, "geocode DEM"))
    _property(insar, "swaths", repr(list(pair.swaths)))
    if settings.region_of_interest is not None:
        _property(insar, "region of interest", repr(settings.region_of_interest.snwe()))
    geocode_bbox = settings.geocode_bbox or settings.region_of_interest
    if geocode_bbox is not None:
        _property(insar, "geocode bounding box", repr(geocode_bbox.snwe()))
    _property(insar, "range looks", str(settings.range_looks))
    _property(insar, "azimuth looks", str(settings.azimuth_looks))
    _property(insar, "filter strength", repr(float(settings.filter_strength)))
    do_esd = settings.esd != "false"  # auto starts with ESD; the pair may decide otherwise
    _property(insar, "do ESD", str(do_esd))
    if do_esd:  # read by the esd step only: without ESD it would be a change that changes nothing
        _property(insar, "ESD coherence threshold", repr(float(settings.esd_coherence_threshold)))
    _property(insar, "do unwrap", str(settings.unwrap))
    _property(insar, "unwrapper name", settings.unwrapper)
    _property(insar, "do ionosphere correction", str(settings.ionosphere))
    _property(insar, "apply ionosphere correction", str(settings.ionosphere))
    _property(insar, "use virtual files", "True")
    geocode_list = list(GEOCODE_LIST) + ([ION_GEOCODE] if settings.ionosphere else [])
    _property(insar, "geocode list", repr(geocode_list))
    return etree.tostring(root, pretty_print=True, xml_declaration=True, encoding="UTF-8")


def write_topsapp_xml(
    run_dir: Path,
    settings: Settings,
    pair: Pair,
    orbit_files: Mapping[str, Path],
    dem: Path,
    geocode_dem: Path | None = None,
) -> Path:
    """Fill `run_dir/orbits/` with the pair's two orbit files and write `run_dir/topsApp.xml`.

    `orbit_files` maps product names (`Product.name`) to orbit files. Both writes are atomic and
    idempotent: an unchanged topsApp.xml is not rewritten (same bytes, same mtime).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    link_orbit_files(run_dir / ORBIT_DIR, [_orbit_of(orbit_files, p) for p in pair.products])
    path = run_dir / XML_NAME
    store_if_changed(path, topsapp_xml(settings, pair, run_dir, dem, geocode_dem))
    return path


def store_if_changed(path: Path, data: bytes) -> bool:
    """Write data atomically unless the file already holds exactly it; True when written."""
    if path.is_file() and path.read_bytes() == data:
        return False
    write_bytes(path, data)
    return True


def link_orbit_files(orbit_dir: Path, files: list[Path]) -> None:
    """Make orbit_dir hold exactly these files: hard links (a copy across file systems).

    Hard links keep the run folder working if data/orbit_data is later tidied up, at no cost.
    """
    orbit_dir.mkdir(parents=True, exist_ok=True)
    wanted = {source.name: source for source in files}
    for entry in orbit_dir.iterdir():
        if entry.name not in wanted:
            entry.unlink()
    for name, source in wanted.items():
        target = orbit_dir / name
        if target.exists() and _same_file(source, target):
            continue
        with atomic_output(target, mode=None) as temporary:  # a hard link shares the mode
            temporary.unlink()
            try:
                os.link(source, temporary)
            except OSError:
                shutil.copy2(source, temporary)


def read_properties(data: bytes) -> dict[str, str]:
    """Flatten a topsApp.xml: {"rangelooks": "19", "reference.safe": "[...]", ...}.

    Names are ISCE-normalized; top-level properties have no prefix. Raises ValueError when the
    bytes are not XML.
    """
    try:
        root = etree.fromstring(data)
    except etree.XMLSyntaxError as err:
        raise ValueError(f"not readable XML ({err})") from err
    properties: dict[str, str] = {}
    for element in root.iter("property"):
        owner = element.getparent()
        prefix = "" if owner.get("name", "").lower() == "topsinsar" else f"{owner.get('name')}."
        value = element.findtext("value") if element.find("value") is not None else element.text
        properties[prefix + normalize(element.get("name", ""))] = (value or "").strip()
    return properties


@dataclass(frozen=True)
class Change:
    """One property whose value differs between the existing topsApp.xml and the new one."""

    key: str  # ISCE-normalized, e.g. "rangelooks" or "reference.safe"
    old: str | None
    new: str | None
    step: str  # the first step that reads it
    setting: str  # what the user changes to get it

    def describe(self) -> str:
        return f"{self.setting} ({self.key}: {self.old or 'unset'} -> {self.new or 'unset'})"


def setting_changes(old: Mapping[str, str], new: Mapping[str, str]) -> tuple[Change, ...]:
    """The properties that differ between two flattened topsApp.xml files, sorted by key."""
    changes = []
    for key in sorted(set(old) | set(new)):
        before, after = (values.get(key, ISCE_DEFAULTS.get(key)) for values in (old, new))
        if before != after:
            step, setting = PROPERTY_RULES.get(key, _DEFAULT_RULE)
            changes.append(Change(key, before, after, step, setting))
    return tuple(changes)


@dataclass(frozen=True)
class RunFacts:
    """What a run folder's topsApp.xml asks of topsApp, as far as output checks need it."""

    swaths: tuple[int, ...]
    reference_dir: str
    secondary_dir: str
    do_unwrap: bool
    do_unwrap_2stage: bool
    do_ionosphere: bool
    do_esd: bool = True
    esd_coherence_threshold: float = 0.85
    unwrapper: str = "icu"


def run_facts(properties: Mapping[str, str]) -> RunFacts:
    """Read the facts from flattened properties with ISCE's defaults and boolean rules."""
    swaths = _isce_value(properties.get("swaths", "")) or [1, 2, 3]
    listed = swaths if isinstance(swaths, list | tuple) else [swaths]
    return RunFacts(
        swaths=tuple(int(str(swath)) for swath in listed),
        reference_dir=properties.get("reference.outputdirectory", "reference"),
        secondary_dir=properties.get("secondary.outputdirectory", "secondary"),
        do_unwrap=bool(_isce_value(properties.get("dounwrap", "False"))),
        do_unwrap_2stage=bool(_isce_value(properties.get("dounwrap2stage", "False"))),
        do_ionosphere=bool(_isce_value(properties.get("doionospherecorrection", "False"))),
        do_esd=bool(_isce_value(properties.get("doesd", "True"))),
        esd_coherence_threshold=_float(properties.get("esdcoherencethreshold"), 0.85),
        unwrapper=properties.get("unwrappername") or "icu",
    )


def _float(text: str | None, default: float) -> float:
    try:
        return float(text) if text else default
    except ValueError:
        return default


def _isce_value(text: str) -> object:
    # ISCE eval()s a value and keeps the string when that fails: 'false' stays a (true) string.
    try:
        return ast.literal_eval(text) if text else None
    except (ValueError, SyntaxError):
        return text


def _property(parent: etree._Element, name: str, value: str) -> None:
    etree.SubElement(parent, "property", name=name).text = value


def _relative(path: Path, run_dir: Path, what: str) -> str:
    # Physical paths on both sides: topsApp resolves "../" from its real working directory.
    text = os.path.relpath(path.resolve(), run_dir.resolve())
    if any(char.isspace() or char in "'\"," for char in text):
        raise InputError(
            f"{what} {path}: topsApp cannot read a path with spaces, quotes or commas "
            "(ISCE evaluates and splits property values); move it to a plain path"
        )
    return text


def _dem_raster(dem: Path) -> Path:
    # ISCE wants the raster path and loads "<raster>.xml" itself.
    return dem.with_suffix("") if dem.suffix == ".xml" else dem


def _orbit_of(orbit_files: Mapping[str, Path], product: Product) -> Path:
    try:
        return orbit_files[product.name]
    except KeyError:
        raise KeyError(f"no orbit file given for {product.name}") from None


def _same_file(source: Path, target: Path) -> bool:
    if source.samefile(target):
        return True
    first, second = source.stat(), target.stat()
    return (first.st_size, first.st_mtime_ns) == (second.st_size, second.st_mtime_ns)
