"""ISCE2 image sidecars for a DEM: the `.xml` ISCE loads and the `.vrt` GDAL reads.

The XML follows `isceobj/Image/Image.py::renderHdr` for a `DemImage`: root `imageFile`,
`<property name="PUBLIC_NAME"><value>…</value><doc>…</doc></property>` per parameter, and the
`Coordinate1` (longitude, width) / `Coordinate2` (latitude, length) components. `startingValue`
is the centre of the first pixel (`DemImage.getsnwe` adds (size-1)*delta to it). `REFERENCE` is
WGS84: without it ISCE assumes EGM96 and "corrects" the heights a second time.

The VRT is what `Image.renderVRT()` writes (and so what `fixImageXml.py` regenerates): a
`VRTRawRasterBand` relative to the VRT, SRS EPSG:4326, and the GeoTransform built from the
coordinates verbatim. ISCE puts the pixel-centre `startingValue` where GDAL expects a pixel
edge; we reproduce that rather than "fix" it, since ISCE rewrites the VRT its own way anyway.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from insar_pipeline._io import write_bytes

DATA_TYPES = {"FLOAT": ("Float32", 4), "SHORT": ("Int16", 2)}
_DOCS = {
    "WIDTH": "Image width",
    "LENGTH": "Image length",
    "NUMBER_BANDS": "Number of image bands.",
    "DATA_TYPE": "Image data type.",
    "SCHEME": "Interleaving scheme of the image.",
    "BYTE_ORDER": "Endianness of the image.",
    "ACCESS_MODE": "Image access mode.",
    "FILE_NAME": "Name of the image file.",
    "EXTRA_FILE_NAME": "For example name of vrt metadata.",
    "IMAGE_TYPE": "Image type used for displaying.",
    "REFERENCE": "Geodetic datum",
    "XMIN": "Minimum range value",
    "XMAX": "Maximum range value",
}
_COORDINATE_DOCS = {
    "Coordinate1": "First coordinate of a 2D image (width).",
    "Coordinate2": "Second coordinate of a 2D image (length).",
}


@dataclass(frozen=True)
class IsceDemImage:
    """The geometry and format of an ISCE DEM raster (one band, BIP, little-endian)."""

    width: int
    length: int
    first_longitude: float  # centre of the first (north-west) pixel
    first_latitude: float
    delta_longitude: float
    delta_latitude: float  # negative: rows go south
    data_type: str = "FLOAT"
    reference: str = "WGS84"
    byte_order: str = "l"
    scheme: str = "BIP"

    @property
    def bytes_per_pixel(self) -> int:
        return DATA_TYPES[self.data_type][1]

    @property
    def file_size(self) -> int:
        return self.width * self.length * self.bytes_per_pixel


def _format(value: float | int | str) -> str:
    # ISCE renders str(value): repr-precision floats, which round-trip exactly.
    return repr(value) if isinstance(value, float) else str(value)


def _property(parent: etree._Element, name: str, value: float | int | str, doc: str | None) -> None:
    element = etree.SubElement(parent, "property", name=name)
    etree.SubElement(element, "value").text = _format(value)
    if doc:
        etree.SubElement(element, "doc").text = doc


def _coordinate(root: etree._Element, name: str, start: float, delta: float, size: int) -> None:
    component = etree.SubElement(root, "component", name=name)
    etree.SubElement(component, "factorymodule").text = "isceobj.Image"
    etree.SubElement(component, "factoryname").text = "createCoordinate"
    etree.SubElement(component, "doc").text = _COORDINATE_DOCS[name]
    _property(component, "name", "ImageCoordinate_name", None)
    _property(component, "family", "ImageCoordinate", None)
    _property(component, "size", size, "Coordinate size.")
    _property(component, "startingValue", start, "Starting value of the coordinate.")
    # ImageCoordinate.coordEnd: start + size * delta (the far edge, not the last centre).
    _property(component, "endingValue", start + size * delta, "Ending value of the coordinate.")
    _property(component, "delta", delta, "Coordinate quantization.")


def render_xml(raster: Path, image: IsceDemImage) -> bytes:
    """The ISCE XML of a DEM raster; FILE_NAME is absolute (as `fixImageXml.py --full`)."""
    raster = raster.resolve()
    root = etree.Element("imageFile")
    properties: list[tuple[str, float | int | str]] = [
        ("WIDTH", image.width),
        ("LENGTH", image.length),
        ("NUMBER_BANDS", 1),
        ("DATA_TYPE", image.data_type),
        ("SCHEME", image.scheme),
        ("BYTE_ORDER", image.byte_order),
        ("ACCESS_MODE", "read"),
        ("FILE_NAME", str(raster)),
        ("EXTRA_FILE_NAME", f"{raster}.vrt"),
        ("IMAGE_TYPE", "dem"),
        ("REFERENCE", image.reference),
        ("XMIN", image.first_longitude),
        ("XMAX", image.first_longitude + image.width * image.delta_longitude),
    ]
    for name, value in properties:
        _property(root, name, value, _DOCS[name])
    _coordinate(root, "Coordinate1", image.first_longitude, image.delta_longitude, image.width)
    _coordinate(root, "Coordinate2", image.first_latitude, image.delta_latitude, image.length)
    return etree.tostring(
        root, pretty_print=True, xml_declaration=False, encoding="unicode"
    ).encode()


def render_vrt(raster: Path, image: IsceDemImage) -> bytes:
    """The VRT `Image.renderVRT()` writes beside the raster."""
    gdal_type, size = DATA_TYPES[image.data_type]
    root = etree.Element("VRTDataset", rasterXSize=str(image.width), rasterYSize=str(image.length))
    etree.SubElement(root, "SRS").text = "EPSG:4326"
    etree.SubElement(root, "GeoTransform").text = (
        f"{_format(image.first_longitude)}, {_format(image.delta_longitude)}, 0.0, "
        f"{_format(image.first_latitude)}, 0.0, {_format(image.delta_latitude)}"
    )
    band = etree.SubElement(
        root, "VRTRasterBand", dataType=gdal_type, band="1", subClass="VRTRawRasterBand"
    )
    etree.SubElement(band, "SourceFilename", relativeToVRT="1").text = raster.name
    etree.SubElement(band, "ByteOrder").text = "LSB" if image.byte_order == "l" else "MSB"
    etree.SubElement(band, "ImageOffset").text = "0"
    etree.SubElement(band, "PixelOffset").text = str(size)
    etree.SubElement(band, "LineOffset").text = str(image.width * size)
    return etree.tostring(root, pretty_print=True, encoding="unicode").encode()


def write_sidecars(raster: Path, image: IsceDemImage) -> None:
    """Write `<raster>.vrt` then `<raster>.xml`, each atomically; the XML last marks completion."""
    if image.byte_order != "l" or sys.byteorder != "little":
        raise ValueError("only little-endian rasters are written")
    write_bytes(raster.with_name(raster.name + ".vrt"), render_vrt(raster, image))
    write_bytes(raster.with_name(raster.name + ".xml"), render_xml(raster, image))


@dataclass(frozen=True)
class IsceImageXml:
    """What an ISCE image XML says (properties by upper-case public name)."""

    properties: dict[str, str]
    coordinates: dict[str, dict[str, str]]  # "Coordinate1" -> {"startingvalue": ..., ...}

    def dem_image(self) -> IsceDemImage:
        first, second = self.coordinates["Coordinate1"], self.coordinates["Coordinate2"]
        return IsceDemImage(
            width=int(self.properties["WIDTH"]),
            length=int(self.properties["LENGTH"]),
            first_longitude=float(first["startingvalue"]),
            first_latitude=float(second["startingvalue"]),
            delta_longitude=float(first["delta"]),
            delta_latitude=float(second["delta"]),
            data_type=self.properties.get("DATA_TYPE", "").upper(),
            # DemImage's default: an XML without REFERENCE is taken as EGM96.
            reference=self.properties.get("REFERENCE", "EGM96").upper(),
            byte_order=self.properties.get("BYTE_ORDER", "l").lower(),
            scheme=self.properties.get("SCHEME", "BIP").upper(),
        )


def read_xml(path: Path) -> IsceImageXml:
    """Parse an ISCE image XML as ISCE does: names matched case- and space-insensitively."""
    root = etree.parse(str(path), etree.XMLParser(resolve_entities=False)).getroot()

    def values(element: etree._Element) -> dict[str, str]:
        found = {}
        for prop in element.findall("property"):
            value = prop.find("value")
            text = value.text if value is not None else prop.text
            found[prop.get("name", "").replace(" ", "").lower()] = (text or "").strip()
        return found

    properties = {key.upper(): value for key, value in values(root).items()}
    coordinates = {}
    for component in root.findall("component"):
        name = component.get("name", "").replace(" ", "").lower()
        if name in ("coordinate1", "coordinate2"):
            coordinates[f"Coordinate{name[-1]}"] = values(component)
    return IsceImageXml(properties, coordinates)
