"""Steps startup … topo of the topsApp double: inputs, orbits, bursts, baselines, DEM, geometry.

preprocess reproduces ISCE's silent failure: a swath that cannot be extracted (no orbit file
covers the scene, no annotation for the polarization) is reported and skipped, exit status 0.
"""

from __future__ import annotations

import errno
import os
import shutil
import xml.etree.ElementTree as ET
import zipfile
import zlib
from datetime import datetime
from pathlib import Path

from double_config import Sensor
from double_context import Context, SwathError
from double_rasters import seed_of, write_noise


def startup(ctx: Context) -> None:
    print("The currently supported sensors are:  ['SENTINEL1']")


def preprocess(ctx: Context) -> None:
    roi = ctx.config.box("region of interest")
    for sensor in (ctx.config.reference, ctx.config.secondary):
        safes = sensor.safes
        for safe in safes:
            if not Path(safe).exists():
                raise FileNotFoundError(errno.ENOENT, "SAFE product not found", safe)
        if sensor.orbit_dir and not Path(sensor.orbit_dir).is_dir():
            raise FileNotFoundError(errno.ENOENT, "orbit directory not found", sensor.orbit_dir)
        extracted: dict[int, tuple[int, int]] = {}
        for swath in ctx.config.swaths:
            try:
                first, count, orbit = _extract(ctx, sensor, swath, roi)
            except SwathError as err:
                print(f"Could not extract swath {swath} from {safes}")
                print(f"Generated error:  {err}")
                continue
            extracted[swath] = (first, count)
            ctx.state[f"{sensor.role}orbit"] = orbit
        ctx.state[f"{sensor.role}slcproduct"] = sensor.output_dir
        ctx.state[f"{sensor.role}safe"] = Path(safes[0]).stem
        ctx.state[f"{sensor.role}bursts"] = [list(extracted.get(n, (0, 0))) for n in (1, 2, 3)]
    ctx.state["numberofswaths"] = 3
    ctx.state["geometrydirectoryname"] = "geom_reference"


def _extract(
    ctx: Context, sensor: Sensor, swath: int, roi: list[float] | None
) -> tuple[int, int, str]:
    """Write <output>/IWn.xml and the virtual bursts; return (first burst, count, orbit file)."""
    safe = Path(sensor.safes[0])
    name = safe.stem
    if not _has_annotation(safe, swath, sensor.polarization):
        raise SwathError(
            f"No annotation xml file found for swath {swath} and polarization "
            f"{sensor.polarization} in {safe}"
        )
    orbit = _orbit_for(sensor, name)
    # The region of interest picks the bursts; their numbering follows the crop.
    first = (0 if roi is None else zlib.crc32(repr(roi).encode()) % 3) + _burst_shift(name, swath)
    width, lines = ctx.burst_shape(swath)
    out = ctx.cwd / sensor.output_dir
    (out / f"IW{swath}").mkdir(parents=True, exist_ok=True)
    for index in range(first, first + ctx.bursts):
        burst = out / f"IW{swath}" / f"burst_{index + 1:02d}.slc"
        burst.with_name(burst.name + ".vrt").write_text(
            f'<VRTDataset rasterXSize="{width}" rasterYSize="{lines}"><!-- virtual burst into '
            f"{safe}/measurement, lines {index * lines}-{(index + 1) * lines} --></VRTDataset>\n"
        )
        burst.with_name(burst.name + ".xml").write_text(
            f"<imageFile><!-- {name} IW{swath} burst {index + 1} --></imageFile>\n"
        )
    start, stop = _sensing(name)
    vectors = "\n".join(  # orbit state vectors: deterministic for this scene and orbit file
        f'    <stateVector time="{start.timestamp() + 10 * i:.1f}">'
        f"{seed_of(name, orbit, i) % 7_000_000} {seed_of(orbit, name, i) % 7_000_000}</stateVector>"
        for i in range(60)
    )
    (out / f"IW{swath}.xml").write_text(
        f"<swathProduct>\n  <safe>{name}</safe>\n  <swath>{swath}</swath>\n"
        f"  <polarization>{sensor.polarization}</polarization>\n  <orbitFile>{orbit}</orbitFile>\n"
        f"  <regionOfInterest>{roi}</regionOfInterest>\n  <firstBurst>{first + 1}</firstBurst>\n"
        f"  <numberOfBursts>{ctx.bursts}</numberOfBursts>\n  <burstWidth>{width}</burstWidth>\n"
        f"  <burstLength>{lines}</burstLength>\n  <sensingStart>{start:%Y-%m-%dT%H:%M:%S}"
        f"</sensingStart>\n  <sensingStop>{stop:%Y-%m-%dT%H:%M:%S}</sensingStop>\n"
        f"  <orbit>\n{vectors}\n  </orbit>\n</swathProduct>\n"
    )
    ctx.wrote()
    return first, ctx.bursts, orbit


def _burst_shift(name: str, swath: int) -> int:
    """ISCE_DOUBLE_BURST_SHIFT=YYYYMMDD=N,YYYYMMDD:IWn=N,...: the scene of that date starts N
    bursts later (in every swath, or in swath n only).

    Frames of one track do not always start at the same burst; a secondary that slid along
    track shares fewer bursts with the reference (another common-burst range), or none.
    """
    day = _sensing(name)[0].strftime("%Y%m%d")
    shift = 0
    for item in os.environ.get("ISCE_DOUBLE_BURST_SHIFT", "").split(","):
        where, _, count = item.strip().partition("=")
        if where in (day, f"{day}:IW{swath}") and count:
            shift += int(count)
    return shift


def _has_annotation(safe: Path, swath: int, polarization: str) -> bool:
    pattern = f"s1?-iw{swath}-slc-{polarization}-*.xml"
    if safe.suffix == ".zip":
        with zipfile.ZipFile(safe) as archive:
            names = [Path(name).name for name in archive.namelist() if "/annotation/" in name]
        return any(Path(name).match(pattern) for name in names)
    return any((safe / "annotation").glob(pattern))


def _sensing(name: str) -> tuple[datetime, datetime]:
    fields = name.split("_")
    return (
        datetime.strptime(fields[5], "%Y%m%dT%H%M%S"),
        datetime.strptime(fields[6], "%Y%m%dT%H%M%S"),
    )


def _orbit_for(sensor: Sensor, name: str) -> str:
    """Sentinel1.py s1_findOrbitFile: POEORB before RESORB, validity covering the scene."""
    if not sensor.orbit_dir:
        print("Extracting orbit from annotation XML file")
        return "annotation"
    start, stop = _sensing(name)
    middle = start + (stop - start) / 2
    for kind in ("POEORB", "RESORB"):
        candidates = []
        for path in Path(sensor.orbit_dir).glob(f"{name[:3]}_OPER_AUX_{kind}_OPOD*"):
            fields = path.name.split("_")
            valid_from = datetime.strptime(fields[-2][1:16], "%Y%m%dT%H%M%S")
            valid_to = datetime.strptime(fields[-1][0:15], "%Y%m%dT%H%M%S")
            if valid_from <= start and valid_to >= stop:
                candidates.append(
                    (abs((valid_from + (valid_to - valid_from) / 2 - middle)), path.name)
                )
        if candidates:
            return min(candidates)[1]
    raise SwathError(
        "No suitable orbit file found. If you want to process anyway - unset the orbitdir parameter"
    )


def compute_baselines(ctx: Context) -> None:
    reference, secondary = ctx.state["referencebursts"], ctx.state["secondarybursts"]
    counts, starts = [0, 0, 0], [0, 0, 0]
    for swath in ctx.config.swaths:
        if not all(
            (ctx.cwd / ctx.state[f"{role}slcproduct"] / f"IW{swath}.xml").exists()
            for role in ("reference", "secondary")
        ):
            print(f"Skipping processing for swath number IW-{swath}")
            continue
        first = max(reference[swath - 1][0], secondary[swath - 1][0])
        last = min(sum(reference[swath - 1]), sum(secondary[swath - 1]))
        if last < first:  # TOPSSwathSLCProduct.getBurstOffset: no burst near another
            raise Exception("Could not determine a suitable burst offset")  # noqa: TRY002
        if last > first and not ctx.faults.no_overlap:
            counts[swath - 1], starts[swath - 1] = last - first, first
        else:
            print(f"No common bursts found for swath {swath}")
    ctx.state["numberofcommonbursts"] = counts
    ctx.state["commonburststartreferenceindex"] = starts
    if not any(counts):
        print(
            "No swaths contain any burst overlaps ... cannot continue for interferometry "
            "applications"
        )


def verify_dem(ctx: Context) -> None:
    ctx.common()  # needs the burst state, as the bounding box does in ISCE
    dem = str(ctx.config.get("demFilename") or "")
    if not dem:
        raise RuntimeError("Something went wrong in determining bboxes (no DEM and no network)")
    header = Path(dem + ".xml")
    if not header.exists():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(header))
    reference = (_image_property(header, "reference") or "EGM96").upper()
    if reference == "EGM96":  # ISCE corrects it into the working directory
        print(f"Correcting the DEM {dem} from EGM96 to WGS84 heights")
        shutil.copyfile(dem, ctx.cwd / (Path(dem).name + ".wgs84"))
        dem = Path(dem).name + ".wgs84"
    elif reference != "WGS84":
        raise RuntimeError("Unknown reference system for DEM")
    ctx.state["demfilename"] = dem


def _image_property(header: Path, name: str) -> str | None:
    for prop in ET.parse(header).getroot().iter("property"):
        if prop.get("name", "").lower() == name.lower():
            value = prop.find("value")
            return (value.text if value is not None else prop.text or "").strip()
    return None


def dem_box(header: Path) -> list[float]:
    """[S, N, W, E] of an ISCE DEM from its Coordinate1/Coordinate2."""
    root = ET.parse(header).getroot()
    coordinates = {}
    for component in root.iter("component"):
        values = {
            p.get("name", "").lower(): float(_value(p))
            for p in component.iter("property")
            if p.get("name", "").lower() in ("startingvalue", "delta", "size")
        }
        coordinates[component.get("name", "").lower()] = values
    lon, lat = coordinates["coordinate1"], coordinates["coordinate2"]
    north, south = lat["startingvalue"], lat["startingvalue"] + lat["size"] * lat["delta"]
    return [
        min(north, south),
        max(north, south),
        lon["startingvalue"],
        lon["startingvalue"] + lon["size"] * lon["delta"],
    ]


def _value(prop: ET.Element) -> str:
    value = prop.find("value")
    return (value.text if value is not None else prop.text or "").strip()


def topo(ctx: Context) -> None:
    common = ctx.common()
    if not common:
        raise IndexError("too many indices for array")  # ISCE's error on an empty bbox array
    roi = ctx.config.box("region of interest")
    for swath, first, count in common:
        width, lines = ctx.burst_shape(swath)
        # The geometry key of ISCE2_CONTRACT.md section 9, and nothing else.
        key = (
            ctx.state["referencesafe"],
            ctx.state["referenceorbit"],
            swath,
            first,
            count,
            roi,
            Path(str(ctx.state["demfilename"])).name,
        )
        for index in range(first, first + count):
            for name, isce_type, bands in (
                ("lat", "DOUBLE", 1),
                ("lon", "DOUBLE", 1),
                ("hgt", "DOUBLE", 1),
                ("los", "FLOAT", 2),
            ):
                path = f"geom_reference/IW{swath}/{name}_{index + 1:02d}.rdr"
                write_noise(
                    ctx.cwd / path,
                    width,
                    lines,
                    isce_type,
                    bands,
                    seed_of(*key, name, index),
                    ctx.wrote,
                )
