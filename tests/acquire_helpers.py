"""Additions to tests/acquire_services.py for the acquisition tests (kept apart from it).

- `add_noise_and_calibration`: wraps `ProductFactory.burst_xml` so that the served bursts are
  SMALL_LINES x SMALL_SAMPLES (the real size makes burst2safe write ~150 MB and take ~20 s per
  burst), with the geolocation grid and minimal noise and calibration annotations (realdata has
  none) on that smaller grid.
- `neighbour_bursts`: the archive records one burst ID (174_372326_IW3); a copy of each record
  shifted one burst along track (ID 372327, index + 1, 2.758 s later, footprint moved along
  the pass) makes a two-burst area, so that one date can miss a burst.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

from lxml import etree

from acquire_services import ProductFactory, attribute, set_attribute

BURST_INTERVAL_S = 2.758277
Record = dict[str, Any]


# Test bursts are cut to this size (the real 1518 x 23826 makes burst2safe write 145 MB each).
SMALL_LINES, SMALL_SAMPLES = 150, 2000


def add_noise_and_calibration(products: ProductFactory, monkeypatch: Any) -> None:
    original = products.burst_xml

    def burst_xml(slc_name: str, swath: str, pol: str, bursts: Sequence[Record]) -> bytes:
        root = etree.fromstring(original(slc_name, swath, pol, bursts))
        metadata = root.find("metadata")
        for kind in ("noise", "calibration"):  # full-size ones, if the server adds them: ours
            for old in metadata.findall(kind):
                metadata.remove(old)
        content = metadata.find("product/content")
        _shrink(content)
        for kind, build in (("noise", _noise), ("calibration", _calibration)):
            item = etree.SubElement(metadata, kind)
            etree.SubElement(item, "swath").text = swath
            etree.SubElement(item, "polarisation").text = pol
            body = etree.SubElement(item, "content")
            body.append(copy.deepcopy(content.find("adsHeader")))
            for element in build(content):
                body.append(element)
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    monkeypatch.setattr(products, "burst_xml", burst_xml)


def _shrink(content: etree._Element) -> None:
    """Bursts of SMALL_LINES x SMALL_SAMPLES, and the real geolocation grid (which covers the
    one burst of its SAFE) repeated for every burst of the list at its lines and time, scaled
    to the smaller size (burst2safe takes the SAFE's footprint from it)."""
    timing = content.find("swathTiming")
    lines = int(timing.find("linesPerBurst").text)
    samples = int(timing.find("samplesPerBurst").text)
    timing.find("linesPerBurst").text = str(SMALL_LINES)
    timing.find("samplesPerBurst").text = str(SMALL_SAMPLES)
    info = content.find("imageAnnotation/imageInformation")
    if info is not None:
        info.find("numberOfSamples").text = str(SMALL_SAMPLES)
    grid = content.find("geolocationGrid/geolocationGridPointList")
    points = grid.findall("geolocationGridPoint")
    t0 = min(dt.datetime.fromisoformat(p.find("azimuthTime").text) for p in points)
    template = [p for p in points if int(p.find("line").text) < lines]
    for point in points:
        grid.remove(point)
    bursts = content.findall("swathTiming/burstList/burst")
    for index, burst in enumerate(bursts):
        start = dt.datetime.fromisoformat(burst.find("azimuthTime").text)
        for point in template:
            new = copy.deepcopy(point)
            when = start + (dt.datetime.fromisoformat(point.find("azimuthTime").text) - t0)
            new.find("azimuthTime").text = f"{when:%Y-%m-%dT%H:%M:%S.%f}"
            line = int(point.find("line").text) * SMALL_LINES // lines
            new.find("line").text = str(line + index * SMALL_LINES)
            new.find("pixel").text = str(int(point.find("pixel").text) * SMALL_SAMPLES // samples)
            grid.append(new)
    grid.set("count", str(len(template) * len(bursts)))


def small_bursts(records: Sequence[Record]) -> list[Record]:
    """The burst records with the served TIFF's size cut to SMALL_LINES x SMALL_SAMPLES."""
    made = copy.deepcopy(list(records))
    for record in made:
        set_attribute(record["umm"], "LINES_PER_BURST", str(SMALL_LINES))
        set_attribute(record["umm"], "SAMPLES_PER_BURST", str(SMALL_SAMPLES))
    return made


def _times(content: etree._Element) -> tuple[list[dt.datetime], float, int, int]:
    bursts = content.findall("swathTiming/burstList/burst")
    first = dt.datetime.fromisoformat(bursts[0].find("azimuthTime").text)
    interval = float(content.find(".//azimuthTimeInterval").text)
    lines = int(content.find("swathTiming/linesPerBurst").text)
    samples = int(content.find("swathTiming/samplesPerBurst").text)
    span = len(bursts) * lines * interval
    times = [first + dt.timedelta(seconds=s) for s in range(-2, int(span) + 3)]
    return times, interval, lines * len(bursts), samples


def _vector(tag: str, when: dt.datetime, line: int, fields: dict[str, str]) -> etree._Element:
    vector = etree.Element(tag)
    etree.SubElement(vector, "azimuthTime").text = f"{when:%Y-%m-%dT%H:%M:%S.%f}"
    etree.SubElement(vector, "line").text = str(line)
    for name, text in fields.items():
        element = etree.SubElement(vector, name)
        element.text = text
        element.set("count", str(len(text.split())))
    return vector


def _noise(content: etree._Element) -> list[etree._Element]:
    times, interval, total, samples = _times(content)
    pixels = " ".join(str(p) for p in range(0, samples, max(1, samples // 4)))
    lut = " ".join("1.0" for _ in pixels.split())
    ranges = etree.Element("noiseRangeVectorList", count=str(len(times)))
    for when in times:
        line = round((when - times[2]).total_seconds() / interval)
        ranges.append(
            _vector("noiseRangeVector", when, line, {"pixel": pixels, "noiseRangeLut": lut})
        )
    azimuth = etree.Element("noiseAzimuthVectorList", count="1")
    vector = etree.SubElement(azimuth, "noiseAzimuthVector")
    for name, text in (("swath", content.findtext("adsHeader/swath")),
                       ("firstAzimuthLine", "0"), ("firstRangeSample", "0"),
                       ("lastAzimuthLine", str(total - 1)),
                       ("lastRangeSample", str(samples - 1))):  # fmt: skip
        etree.SubElement(vector, name).text = text
    az_lines = f"0 {total // 2} {total - 1}"
    etree.SubElement(vector, "line", count="3").text = az_lines
    etree.SubElement(vector, "noiseAzimuthLut", count="3").text = "1.0 1.0 1.0"
    return [ranges, azimuth]


def _calibration(content: etree._Element) -> list[etree._Element]:
    times, interval, _, samples = _times(content)
    information = etree.Element("calibrationInformation")
    etree.SubElement(information, "absoluteCalibrationConstant").text = "1.0"
    pixels = " ".join(str(p) for p in range(0, samples, max(1, samples // 4)))
    ones = " ".join("500.0" for _ in pixels.split())
    vectors = etree.Element("calibrationVectorList", count=str(len(times)))
    for when in times:
        line = round((when - times[2]).total_seconds() / interval)
        fields = {"pixel": pixels, "sigmaNought": ones, "betaNought": ones, "gamma": ones,
                  "dn": ones}  # fmt: skip
        vectors.append(_vector("calibrationVector", when, line, fields))
    return [information, vectors]


def neighbour_bursts(records: Sequence[Record], step: int = 1) -> list[Record]:
    """A copy of each burst record `step` bursts further along the pass (see module doc)."""
    made = []
    for record in records:
        new = copy.deepcopy(record)
        umm = new["umm"]
        relative = int(attribute(umm, "BURST_ID_RELATIVE")) + step
        index = int(attribute(umm, "BURST_INDEX")) + step
        track, _, swath = attribute(umm, "BURST_ID_FULL").split("_")
        shift = dt.timedelta(seconds=BURST_INTERVAL_S * step)
        set_attribute(umm, "AZIMUTH_TIME", _later(attribute(umm, "AZIMUTH_TIME"), shift))
        anx = float(attribute(umm, "AZIMUTH_ANX_TIME")) + shift.total_seconds()
        set_attribute(umm, "AZIMUTH_ANX_TIME", f"{anx:.10f}")
        set_attribute(umm, "BURST_ID_RELATIVE", str(relative))
        set_attribute(
            umm, "BURST_ID_ABSOLUTE", str(int(attribute(umm, "BURST_ID_ABSOLUTE")) + step)
        )
        set_attribute(umm, "BURST_ID_FULL", f"{track}_{relative}_{swath}")
        set_attribute(umm, "BURST_INDEX", str(index))
        old_time = umm["GranuleUR"].split("_")[3]
        new_time = (dt.datetime.strptime(old_time, "%Y%m%dT%H%M%S") + shift).strftime(
            "%Y%m%dT%H%M%S"
        )
        name = (
            umm["GranuleUR"]
            .replace(f"_{old_time}_", f"_{new_time}_")
            .replace(f"S1_{relative - step}_", f"S1_{relative}_")
        )
        umm["GranuleUR"] = name
        new["meta"]["native-id"] = name
        new["meta"]["concept-id"] = f"{new['meta']['concept-id']}-{step}"
        span = umm["TemporalExtent"]["RangeDateTime"]
        for key in ("BeginningDateTime", "EndingDateTime"):
            span[key] = _later(span[key], shift)
        for related in umm.get("RelatedUrls", []):
            related["URL"] = re.sub(
                r"/(\d+)\.(tiff|xml)$", lambda m: f"/{int(m[1]) + step}.{m[2]}", related["URL"]
            )
        for ident in umm.get("DataGranule", {}).get("Identifiers", []):
            ident["Identifier"] = name
        _shift_footprint(umm, step)
        made.append(new)
    return made


def _later(text: str, shift: dt.timedelta) -> str:
    zulu = text.endswith("Z")
    moment = dt.datetime.fromisoformat(text.removesuffix("Z")) + shift
    return f"{moment:%Y-%m-%dT%H:%M:%S.%f}" + ("Z" if zulu else "")


def _shift_footprint(umm: Record, step: int) -> None:
    """Move the burst polygon along track by one burst (descending: south, ~0.18 degrees)."""
    polygons = umm["SpatialExtent"]["HorizontalSpatialDomain"]["Geometry"]["GPolygons"]
    descending = attribute(umm, "ASCENDING_DESCENDING") == "DESCENDING"
    dlat = (-0.18 if descending else 0.18) * step
    for polygon in polygons:
        for point in polygon["Boundary"]["Points"]:
            point["Latitude"] += dlat
