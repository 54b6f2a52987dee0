"""Rasters of the topsApp double: raw binary + ISCE `.xml` + GDAL `.vrt`, as ISCE writes them.

Work products (geom_reference, fine_coreg...) are seeded noise of the right type and size; the
merged and geocoded products hold a plausible interferogram: a phase ramp plus a deformation bowl,
coherence high in the middle, amplitude with some texture. Sizes follow ISCE2_CONTRACT.md
section 8 (bytes per pixel per product), so cleaning measured on them means something.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# ISCE DATA_TYPE -> (numpy dtype, GDAL type, bytes)
TYPES = {
    "CFLOAT": ("complex64", "CFloat32", 8),
    "FLOAT": ("float32", "Float32", 4),
    "DOUBLE": ("float64", "Float64", 8),
    "SHORT": ("int16", "Int16", 2),
    "BYTE": ("uint8", "Byte", 1),
}


def seed_of(*parts: object) -> int:
    """A stable seed from any values (hash() is salted per process)."""
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def write_image(
    path: Path,
    bands: list[np.ndarray],
    isce_type: str,
    geo: tuple[float, float, float, float] | None = None,
    on_write: Callable[[], None] | None = None,
) -> int:
    """Write `path` (BIL when several bands) and its `.xml` and `.vrt`; return the raster bytes.

    geo = (west, north, delta_lon, delta_lat) puts the raster on a lat/lon grid.
    """
    import numpy as np  # only the merged products need it: the other phases start faster

    dtype, _, size = TYPES[isce_type]
    length, width = bands[0].shape
    stack = np.stack([band.astype(dtype, copy=False) for band in bands], axis=1)  # BIL
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(stack.tobytes())
    if on_write is not None:
        on_write()
    _write_sidecars(path, width, length, len(bands), isce_type, geo)
    return width * length * len(bands) * size


def write_noise(
    path: Path,
    width: int,
    length: int,
    isce_type: str,
    band_count: int,
    seed: int,
    on_write: Callable[[], None] | None = None,
) -> int:
    """A work product: deterministic bytes for this seed, with sidecars."""
    _, _, size = TYPES[isce_type]
    nbytes = width * length * band_count * size
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(nbytes))
    if on_write is not None:
        on_write()
    _write_sidecars(path, width, length, band_count, isce_type, None)
    return nbytes


def interferogram_fields(length: int, width: int, seed: int) -> dict[str, np.ndarray]:
    """Unwrapped phase, amplitude and coherence of a synthetic deformation scene."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:length, 0:width].astype("float64")
    x /= max(width - 1, 1)
    y /= max(length - 1, 1)
    bowl = 10 * math.pi * np.exp(-((x - 0.55) ** 2 + (y - 0.45) ** 2) / 0.02)
    phase = 2 * math.pi * (3 * x + 1.5 * y) + bowl + rng.normal(0, 0.2, x.shape)
    coherence = 0.25 + 0.7 * np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.15)
    coherence = np.clip(coherence + rng.normal(0, 0.04, x.shape), 0, 1)
    amplitude = 40 + 25 * np.abs(np.sin(9 * x) * np.cos(7 * y)) + rng.gamma(2, 4, x.shape)
    return {"phase": phase, "coherence": coherence, "amplitude": amplitude}


def wrapped(fields: dict[str, np.ndarray]) -> np.ndarray:
    import numpy as np

    return fields["amplitude"] * np.exp(1j * fields["phase"])


def heights(length: int, width: int) -> np.ndarray:
    import numpy as np

    y, x = np.mgrid[0:length, 0:width]
    return 800 + 400 * np.sin(x / max(width, 1) * 3) * np.cos(y / max(length, 1) * 2)


def _write_sidecars(
    path: Path,
    width: int,
    length: int,
    band_count: int,
    isce_type: str,
    geo: tuple[float, float, float, float] | None,
) -> None:
    path.with_name(path.name + ".vrt").write_text(
        _vrt(path, width, length, band_count, isce_type, geo)
    )
    path.with_name(path.name + ".xml").write_text(
        _isce_xml(path, width, length, band_count, isce_type, geo)
    )


def _vrt(
    path: Path,
    width: int,
    length: int,
    band_count: int,
    isce_type: str,
    geo: tuple[float, float, float, float] | None,
) -> str:
    _, gdal_type, size = TYPES[isce_type]
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{length}">']
    if geo is not None:
        west, north, delta_lon, delta_lat = geo
        lines += [
            "    <SRS>EPSG:4326</SRS>",
            f"    <GeoTransform>{west!r}, {delta_lon!r}, 0.0, {north!r}, 0.0, {delta_lat!r}"
            "</GeoTransform>",
        ]
    for band in range(band_count):
        lines += [
            f'    <VRTRasterBand dataType="{gdal_type}" band="{band + 1}"'
            ' subClass="VRTRawRasterBand">',
            f'        <SourceFilename relativeToVRT="1">{path.name}</SourceFilename>',
            "        <ByteOrder>LSB</ByteOrder>",
            f"        <ImageOffset>{band * width * size}</ImageOffset>",
            f"        <PixelOffset>{size}</PixelOffset>",
            f"        <LineOffset>{band_count * width * size}</LineOffset>",
            "    </VRTRasterBand>",
        ]
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"


def _isce_xml(
    path: Path,
    width: int,
    length: int,
    band_count: int,
    isce_type: str,
    geo: tuple[float, float, float, float] | None,
) -> str:
    def prop(name: str, value: object, indent: str = "  ") -> str:
        return (
            f'{indent}<property name="{name}">\n'
            f"{indent}  <value>{value}</value>\n{indent}</property>"
        )

    lines = ["<imageFile>"]
    for name, value in (
        ("WIDTH", width),
        ("LENGTH", length),
        ("NUMBER_BANDS", band_count),
        ("DATA_TYPE", isce_type),
        ("SCHEME", "BIL"),
        ("BYTE_ORDER", "l"),
        ("ACCESS_MODE", "read"),
        ("FILE_NAME", path.name),
        ("EXTRA_FILE_NAME", f"{path.name}.vrt"),
    ):
        lines.append(prop(name, value))
    if geo is not None:
        west, north, delta_lon, delta_lat = geo
        for name, start, delta, count in (
            ("Coordinate1", west, delta_lon, width),
            ("Coordinate2", north, delta_lat, length),
        ):
            lines += [
                f'  <component name="{name}">',
                "    <factorymodule>isceobj.Image</factorymodule>",
                "    <factoryname>createCoordinate</factoryname>",
                prop("size", count, "    "),
                prop("startingValue", repr(start), "    "),
                prop("delta", repr(delta), "    "),
                "  </component>",
            ]
    lines.append("</imageFile>")
    return "\n".join(lines) + "\n"
