"""Factories for orbit tests and the orbit benchmark: orbit file names, EOF files in the
Earth Explorer layout of the real ones (../shared/realdata/orbits), and scenes (`Product`).
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from insar_pipeline.inputs.safe import Product

UTC = timezone.utc
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
STAMP = "%Y%m%dT%H%M%S"


def utc(text: str) -> datetime:
    """'20250406T022008' or ISO text -> aware UTC datetime."""
    fmt = STAMP if "-" not in text else "%Y-%m-%dT%H:%M:%S"
    return datetime.strptime(text, fmt).replace(tzinfo=UTC)


def orbit_name(mission: str, kind: str, created: datetime, start: datetime, stop: datetime) -> str:
    return f"{mission}_OPER_AUX_{kind}_OPOD_{created:{STAMP}}_V{start:{STAMP}}_{stop:{STAMP}}.EOF"


def poeorb_name(mission: str, day: str, version: int = 0) -> str:
    """The precise file ESA makes for `day` (YYYYMMDD): 22:59:42 the day before to 00:59:42
    the day after, created ~20 days later (a later `version` is created a day later)."""
    midnight = utc(day + "T000000")
    start = midnight - timedelta(hours=1, seconds=18)
    created = midnight + timedelta(days=20 + version, hours=8, seconds=version)
    return orbit_name(mission, "POEORB", created, start, start + timedelta(hours=26))


def resorb_name(mission: str, start: str, minutes: int = 197) -> str:
    """A restituted file valid for `minutes` from `start` (YYYYMMDDTHHMMSS), made 40 min after."""
    begin = utc(start)
    stop = begin + timedelta(minutes=minutes)
    return orbit_name(mission, "RESORB", stop + timedelta(minutes=40), begin, stop)


EOF_HEAD = """<?xml version="1.0" encoding="UTF-8" standalone="no" ?>
<Earth_Explorer_File>

  <Earth_Explorer_Header>
    <Fixed_Header>
      <File_Name>{stem}</File_Name>
      <File_Description>{description}</File_Description>
      <Notes></Notes>
      <Mission>Sentinel-1{letter}</Mission>
      <File_Class>OPER</File_Class>
      <File_Type>AUX_{kind}</File_Type>
      <Validity_Period>
        <Validity_Start>UTC={start:%Y-%m-%dT%H:%M:%S}</Validity_Start>
        <Validity_Stop>UTC={stop:%Y-%m-%dT%H:%M:%S}</Validity_Stop>
      </Validity_Period>
      <File_Version>0001</File_Version>
      <Source>
        <System>OPOD</System>
        <Creator>OPOD</Creator>
        <Creator_Version>3.5.0</Creator_Version>
        <Creation_Date>UTC={created:%Y-%m-%dT%H:%M:%S}</Creation_Date>
      </Source>
    </Fixed_Header>
    <Variable_Header>
      <Ref_Frame>EARTH_FIXED</Ref_Frame>
      <Time_Reference>UTC</Time_Reference>
    </Variable_Header>
  </Earth_Explorer_Header>

  <Data_Block type="xml">
    <List_of_OSVs count="{count}">
"""
EOF_OSV = """      <OSV>
        <TAI>TAI={tai}</TAI>
        <UTC>UTC={utc}</UTC>
        <UT1>UT1={utc}</UT1>
        <Absolute_Orbit>+{orbit}</Absolute_Orbit>
        <X unit="m">{x:.6f}</X>
        <Y unit="m">{y:.6f}</Y>
        <Z unit="m">{z:.6f}</Z>
        <VX unit="m/s">{vx:.6f}</VX>
        <VY unit="m/s">{vy:.6f}</VY>
        <VZ unit="m/s">{vz:.6f}</VZ>
        <Quality>NOMINAL</Quality>
      </OSV>
"""
EOF_TAIL = """    </List_of_OSVs>
  </Data_Block>

</Earth_Explorer_File>
"""
DESCRIPTIONS = {"POEORB": "Precise Orbit Ephemerides (POE) Orbit File",
                "RESORB": "NRT POD Restituted Orbit File"}  # fmt: skip
T_ORBIT = 12 * 86400 / 175


def make_eof(name: str, step_s: int = 60) -> bytes:
    """An orbit file in the Earth Explorer layout of the real ones, with state vectors on a
    circular polar orbit every `step_s` seconds across the validity window."""
    match = re.match(r"S1([A-D])_OPER_AUX_(\w{6})_OPOD_(\w{15})_V(\w{15})_(\w{15})\.EOF$", name)
    if match is None:
        raise ValueError(f"not an orbit file name: {name}")
    letter, kind = match[1], match[2]
    created, start, stop = (utc(match[i]) for i in (3, 4, 5))
    count = int((stop - start).total_seconds()) // step_s + 1
    parts = [
        EOF_HEAD.format(
            stem=name[:-4],
            description=DESCRIPTIONS[kind],
            letter=letter,
            kind=kind,
            start=start,
            stop=stop,
            created=created,
            count=count,
        )
    ]
    radius, speed = 7_070_000.0, 7_500.0
    for index in range(count):
        moment = start + timedelta(seconds=index * step_s)
        angle = 2 * math.pi * (moment.timestamp() % T_ORBIT) / T_ORBIT
        parts.append(EOF_OSV.format(
            tai=(moment + timedelta(seconds=37)).strftime("%Y-%m-%dT%H:%M:%S.000000"),
            utc=moment.strftime("%Y-%m-%dT%H:%M:%S.000000"),
            orbit=int(moment.timestamp() // T_ORBIT) % 100000,
            x=radius * math.cos(angle), y=0.0, z=radius * math.sin(angle),
            vx=-speed * math.sin(angle), vy=0.0, vz=speed * math.cos(angle),
        ))  # fmt: skip
    parts.append(EOF_TAIL)
    return "".join(parts).encode()


def scene_name(mission: str, start: str, seconds: int = 27) -> str:
    begin = utc(start)
    stop = begin + timedelta(seconds=seconds)
    return f"{mission}_IW_SLC__1SDV_{begin:{STAMP}}_{stop:{STAMP}}_058630_07421F_93A7"


SCENE_RE = re.compile(r"^(S1[A-D])_IW_SLC__1S[SD][VH]_(\d{8}T\d{6})_(\d{8}T\d{6})_(\d{6})_")


def make_product(name: str, folder: Path = Path("data/raw")) -> Product:
    match = SCENE_RE.match(name)
    if match is None:
        raise ValueError(f"not a scene name: {name}")
    return Product(
        path=folder / f"{name}.SAFE", name=name, mission=match[1], mode="IW",
        product_type="SLC", polarizations=("vv", "vh"), relative_orbit=108,
        absolute_orbit=int(match[4]), start=utc(match[2]), stop=utc(match[3]),
        footprint=((51.0, -130.1), (53.0, -130.1), (53.0, -126.0), (51.0, -126.0)),
        swaths=(1, 2, 3),
    )  # fmt: skip


def scene(mission: str, start: str, seconds: int = 27) -> Product:
    return make_product(scene_name(mission, start, seconds))
