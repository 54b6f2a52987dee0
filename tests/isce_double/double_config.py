"""topsApp.xml as ISCE2 reads it (ISCE2_CONTRACT.md section 3), for the topsApp double.

- The root tag is free; one `<component name="topsinsar">` holds everything.
- Names match case- and white-space-insensitively, not underscore-insensitively.
- Values are eval()'d when that works and stay strings otherwise: `false` is the (true) string
  'false'; only False, 0, None and empty are false.
- An unknown property stops the program before any step with ISCE's message and exit status 1.
"""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

# Public names of applications/topsApp.py and Sensor/TOPS/Sentinel1.py, ISCE-normalized.
TOPSINSAR_PROPERTIES = frozenset(
    "".join(name.split()).lower()
    for name in (
        "Sensor name",
        "demFilename",
        "geocode demfilename",
        "swaths",
        "region of interest",
        "geocode bounding box",
        "range looks",
        "azimuth looks",
        "filter strength",
        "do ESD",
        "ESD coherence threshold",
        "ESD range looks",
        "ESD azimuth looks",
        "extra ESD cycles",
        "offset SNR threshold",
        "do unwrap",
        "unwrapper name",
        "do unwrap 2 stage",
        "unwrapper 2stage name",
        "SOLVER_2STAGE",
        "use virtual files",
        "do interferogram",
        "do dense offsets",
        "geocode list",
        "use GPU",
        "do ionosphere correction",
        "apply ionosphere correction",
        "consider burst properties in ionosphere computation",
        "start ionosphere step",
        "end ionosphere step",
        "height of ionosphere layer in km",
        "pickle dump directory",
        "pickle load directory",
        "renderer",
        "useHighResolutionDemOnly",
        "number of swaths",
    )
)
SENSOR_PROPERTIES = frozenset(
    "".join(name.split()).lower()
    for name in (
        "safe",
        "orbit directory",
        "orbit file",
        "auxiliary data directory",
        "auxiliary file",
        "output directory",
        "swath number",
        "polarization",
        "region of interest",
        "xml",
        "tiff",
        "manifest",
    )
)
SENSORS = ("reference", "secondary")


class ConfigError(Exception):
    """Printed as is; topsApp exits with status 1."""


def normalize(name: str) -> str:
    return "".join(name.split()).lower()


def isce_value(text: str | None) -> object:
    """ISCE's Parser.parseProperty: eval when it works, else the string."""
    text = (text or "").strip()
    if not text:
        return ""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def as_list(value: object) -> list:
    # Configurable.containerize: a bare string list is split on commas, else on spaces.
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str) and value:
        return [item for item in (value.split(",") if "," in value else value.split()) if item]
    return []


@dataclass
class Sensor:
    role: str
    properties: dict[str, object] = field(default_factory=dict)

    @property
    def safes(self) -> list[str]:
        return [str(item) for item in as_list(self.properties.get("safe"))]

    @property
    def orbit_dir(self) -> str | None:
        value = self.properties.get("orbitdirectory")
        return str(value) if value else None

    @property
    def output_dir(self) -> str:
        return str(self.properties["outputdirectory"])

    @property
    def polarization(self) -> str:
        return str(self.properties.get("polarization") or "vv").lower()


@dataclass
class Config:
    properties: dict[str, object]
    reference: Sensor
    secondary: Sensor

    def get(self, name: str, default: object = None) -> object:
        return self.properties.get(normalize(name), default)

    def flag(self, name: str, default: bool) -> bool:
        return bool(self.get(name, default))

    @property
    def swaths(self) -> list[int]:
        return [int(swath) for swath in as_list(self.get("swaths"))] or [1, 2, 3]

    def box(self, name: str) -> list[float] | None:
        value = self.get(name)
        return [float(v) for v in as_list(value)] if value not in (None, "", []) else None


def load(path: Path) -> Config:
    """Read a topsApp.xml; raise ConfigError with ISCE's wording on an unknown property."""
    root = ET.parse(path).getroot()  # a missing file raises FileNotFoundError: exit 1 as ISCE
    insar = next(
        (c for c in root.findall("component") if normalize(c.get("name", "")) == "topsinsar"), None
    )
    if insar is None:
        raise ConfigError(f"{path}: no component named topsinsar")
    properties = _properties(insar, TOPSINSAR_PROPERTIES, "TopsInSAR", path.parent)
    sensors = {}
    for component in insar.findall("component"):
        name = normalize(component.get("name", ""))
        if name not in SENSORS:
            raise ConfigError(_unknown(name, "TopsInSAR"))
        sensors[name] = Sensor(
            name, _properties(component, SENSOR_PROPERTIES, "Sentinel1", path.parent)
        )
    for role in SENSORS:
        sensor = sensors.setdefault(role, Sensor(role))
        for required in ("safe", "outputdirectory"):
            if sensor.properties.get(required) in (None, "", []):
                raise ConfigError(
                    f"Error. The mandatory parameter {required!r} of the component "
                    f"{role!r} is not set."
                )
    return Config(properties, sensors["reference"], sensors["secondary"])


def _properties(element: ET.Element, known: frozenset[str], owner: str, base: Path) -> dict:
    values: dict[str, object] = {}
    for catalog in element.findall("catalog"):  # <catalog>file.xml</catalog>: properties in a file
        values.update(
            _properties(ET.parse(base / (catalog.text or "").strip()).getroot(), known, owner, base)
        )
    for prop in element.findall("property"):
        name = normalize(prop.get("name", ""))
        if name not in known:
            raise ConfigError(_unknown(name, owner))
        value = prop.find("value")
        values[name] = isce_value(value.text if value is not None else prop.text)
    return values


def _unknown(key: str, owner: str) -> str:
    return (
        f'Error. The attribute corresponding to the key "{key}" is not present in the object '
        f'"{owner}".\nPossible causes are the definition in the xml file of such attribute that '
        f'is no longer defined \nin the object "{owner}" or a spelling error'
    )


def fail(message: str) -> None:
    print(message)
    sys.exit(1)
