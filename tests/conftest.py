"""Shared test fixtures: real data, SAFE products built from it, data folders, CLI runs.

Factories are plain functions too (`from conftest import make_safe_product`), so a test module can
build inputs at import or parametrize time; the fixtures wrap them for `tmp_path` use.

Products made here are real ESA metadata with a new identity: `make_safe` copies a real
manifest.safe and the real VV annotation XMLs out of ../shared/realdata, rewrites the manifest's
mission, times, orbits, polarizations, footprint and measurement list to match the new name,
and writes 0-byte measurement tiffs (as in the source repositories). Annotation contents are
the source's own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from lxml import etree

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
MAIN = REPO / "code" / "main_parallel.py"

# The real pair of realdata/s1_slc (S1A, relative orbit 108, 12 days apart).
SLC_REFERENCE = "S1A_IW_SLC__1SDV_20250406T022008_20250406T022035_058630_07421F_93A7"
SLC_SECONDARY = "S1A_IW_SLC__1SDV_20250418T022008_20250418T022035_058805_074946_C7D4"
# The burst2safe pairs of realdata/s1_burst_safe.
BURST_S1B = (
    "S1B_IW_SLC__1SSV_20180628T151555_20180628T151555_011575_015476_33AD",
    "S1B_IW_SLC__1SSV_20190705T151602_20190705T151602_017000_01FFC4_26ED",
)
BURST_S1A = (
    "S1A_IW_SLC__1SSV_20200604T022307_20200604T022318_032861_03CE65_C158",
    "S1A_IW_SLC__1SSV_20200616T022308_20200616T022319_033036_03D3A3_7466",
)
# One orbit of the 12-day, 175-orbit repeat cycle: turns a time shift into an orbit count.
ORBIT_PERIOD_S = 12 * 86400 / 175
POLARIZATION_CODES = {("vv",): "SV", ("hh",): "SH", ("vv", "vh"): "DV", ("hh", "hv"): "DH"}
NS = {
    "safe": "http://www.esa.int/safe/sentinel-1.0",
    "s1sarl1": "http://www.esa.int/safe/sentinel-1.0/sentinel-1/sar/level-1",
    "gml": "http://www.opengis.net/gml",
}


def real_path(*parts: str) -> Path:
    """A path in ../shared/realdata, or skip the test when that folder is absent."""
    path = REALDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} is absent (see ../shared/realdata/PROVENANCE.md)")
    return path


ISCE_DOUBLE_DIR = Path(__file__).resolve().parent / "isce_double"


@pytest.fixture(autouse=True)
def topsapp_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """`topsApp.py` (the double) on PATH, as in the image: the preflight of `run` and `plan`
    refuses a TOPSAPP that does not resolve, and most tests keep the default TOPSAPP."""
    monkeypatch.setenv("PATH", f"{ISCE_DOUBLE_DIR}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.fixture(autouse=True)
def nothing_written_where_the_tests_run() -> Iterable[None]:
    """Every path the pipeline writes derives from its folders: a test that leaves a new file in
    the folder the suite runs from (a relative path resolved against it) fails."""
    here = Path.cwd()
    before = {path.name for path in here.iterdir()}
    yield
    left = sorted({path.name for path in here.iterdir()} - before)
    assert not left, f"written into {here} (a relative path somewhere): {left}"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """../shared/realdata, or skip."""
    return real_path()


def real_safe(name: str) -> Path:
    """The real .SAFE folder of a product name in realdata/s1_slc or s1_burst_safe (or skip)."""
    for folder in ("s1_slc", "s1_burst_safe"):
        path = REALDATA / folder / f"{name}.SAFE"
        if path.is_dir():
            return path
    return real_path("s1_slc", f"{name}.SAFE")  # skips with the path in the reason


def copy_real_safe(name: str, dest_dir: Path) -> Path:
    """Copy a real .SAFE into dest_dir as is, plus the 0-byte measurement tiffs the source
    repositories had (one per annotation, same stem), so that it reads as a complete product."""
    safe = Path(shutil.copytree(real_safe(name), dest_dir / f"{name}.SAFE"))
    (safe / "measurement").mkdir()
    for annotation in (safe / "annotation").glob("s1?-iw?-slc-*.xml"):
        (safe / "measurement" / f"{annotation.stem}.tiff").touch()
    return safe


def scene_name(
    start: datetime,
    mission: str = "S1A",
    seconds: float = 27,
    polarization_code: str = "DV",
    absolute_orbit: int = 58630,
    datatake: str = "07421F",
    uid: str = "93A7",
    mode: str = "IW",
    product_type: str = "SLC",
) -> str:
    """A product name in ESA's convention, e.g. S1A_IW_SLC__1SDV_20250406T022008_..._93A7."""
    stop = start + timedelta(seconds=seconds)
    return (
        f"{mission}_{mode}_{product_type}__1S{polarization_code}_{start:%Y%m%dT%H%M%S}_{stop:%Y%m%dT%H%M%S}_"
        f"{absolute_orbit:06d}_{datatake}_{uid}"
    )


def make_safe_product(
    raw_dir: Path,
    name: str | None = None,
    from_real: str = SLC_REFERENCE,
    *,
    start: datetime | None = None,
    mission: str | None = None,
    relative_orbit: int | None = None,
    swaths: Iterable[int] | None = None,
    polarizations: Sequence[str] | None = None,
    footprint: Sequence[tuple[float, float]] | None = None,
    mode: str | None = None,
    product_type: str | None = None,
    as_zip: bool = False,
    empty_annotations: bool = False,
) -> Path:
    """Write a product into raw_dir built from a real one; return its .SAFE folder (or .zip).

    `name` fixes mission, start/stop and absolute orbit (they are read back from it); without a
    name, one is made from `start` (default: the source's start) and `mission`. The relative
    orbit stays the source's unless given. Swaths and polarizations default to the source's.
    `empty_annotations` writes 0-byte annotation files (benchmarks making thousands of products:
    reading a product's metadata only lists them).
    """
    source = real_safe(from_real)
    root = etree.parse(str(source / "manifest.safe")).getroot()
    old_start = _manifest_time(root, "startTime")
    old_stop = _manifest_time(root, "stopTime")
    pols = tuple(polarizations or ("vv",))
    if name is None:
        start = start or old_start
        shift = (start - old_start).total_seconds()
        name = scene_name(
            start,
            mission=mission or from_real[:3],
            seconds=(old_stop - old_start).total_seconds(),
            polarization_code=POLARIZATION_CODES.get(pols, "SV"),
            absolute_orbit=int(from_real.split("_")[7]) + round(shift / ORBIT_PERIOD_S),
            mode=mode or "IW",
            product_type=product_type or "SLC",
        )
    fields = re.match(r"(S1[A-D])_\w\w_\w{4}_\w{4}_(\d{8}T\d{6})_(\d{8}T\d{6})_(\d{6})_", name)
    if fields is None:
        raise ValueError(f"not a Sentinel-1 product name: {name}")
    named_start = datetime.strptime(fields[2], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
    # Keep the source's sub-second part and duration so times stay realistic.
    new_start = named_start + timedelta(microseconds=old_start.microsecond)
    safe = raw_dir / f"{name}.SAFE"
    annotations = _copy_annotations(
        source, safe, fields[1].lower(), swaths, pols, empty_annotations
    )
    _rewrite_manifest(
        root,
        mission=fields[1],
        start=new_start,
        stop=new_start + (old_stop - old_start),
        absolute_orbit=int(fields[4]),
        relative_orbit=relative_orbit,
        polarizations=pols,
        footprint=footprint,
        mode=mode,
        product_type=product_type,
        measurements=[f"./measurement/{Path(a).stem}.tiff" for a in annotations],
    )
    (safe / "manifest.safe").write_bytes(
        etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    )
    return make_zip_product(safe) if as_zip else safe


def _manifest_time(root, tag: str) -> datetime:
    text = root.find(f".//safe:acquisitionPeriod/safe:{tag}", NS).text
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def _copy_annotations(
    source: Path,
    safe: Path,
    mission: str,
    swaths: Iterable[int] | None,
    pols: Sequence[str],
    empty: bool = False,
) -> list[str]:
    """Copy the source's VV annotations once per wanted polarization; 0-byte measurements."""
    (safe / "annotation").mkdir(parents=True)
    (safe / "measurement").mkdir()
    wanted = set(swaths) if swaths is not None else {1, 2, 3}
    written = []
    for annotation in sorted((source / "annotation").glob("s1?-iw?-slc-vv-*.xml")):
        swath = int(annotation.name[6])
        if swath not in wanted:
            continue
        for pol in pols:
            base = f"{mission}-iw{swath}-slc-{pol}-" + annotation.name.split("-", 4)[4]
            if empty:
                (safe / "annotation" / base).touch()
            else:
                shutil.copyfile(annotation, safe / "annotation" / base)
            (safe / "measurement" / f"{Path(base).stem}.tiff").touch()
            written.append(base)
    if (source / "preview").is_dir():
        shutil.copytree(source / "preview", safe / "preview")
    return written


def _rewrite_manifest(
    root, *, mission, start, stop, absolute_orbit, relative_orbit, polarizations, footprint,
    mode, product_type, measurements,
) -> None:  # fmt: skip
    def set_all(path: str, value: str) -> None:
        for element in root.iterfind(path, NS):
            element.text = value

    set_all(".//safe:platform/safe:number", mission[-1])
    set_all(".//safe:acquisitionPeriod/safe:startTime", f"{start:%Y-%m-%dT%H:%M:%S.%f}")
    set_all(".//safe:acquisitionPeriod/safe:stopTime", f"{stop:%Y-%m-%dT%H:%M:%S.%f}")
    set_all(".//safe:orbitReference/safe:orbitNumber", str(absolute_orbit))
    if relative_orbit is not None:
        set_all(".//safe:orbitReference/safe:relativeOrbitNumber", str(relative_orbit))
    if footprint is not None:
        set_all(".//gml:coordinates", " ".join(f"{lat},{lon}" for lat, lon in footprint))
    if mode is not None:
        set_all(".//s1sarl1:instrumentMode/s1sarl1:mode", mode)
    if product_type is not None:
        set_all(".//s1sarl1:productType", product_type)
    pols = root.findall(".//s1sarl1:transmitterReceiverPolarisation", NS)
    parent, index = pols[0].getparent(), parent_index(pols[0])
    for element in pols:
        parent.remove(element)
    for offset, pol in enumerate(polarizations):
        element = etree.Element(f"{{{NS['s1sarl1']}}}transmitterReceiverPolarisation")
        element.text = pol.upper()
        element.tail = pols[0].tail
        parent.insert(index + offset, element)
    section = root.find("dataObjectSection")
    for data_object in list(section):
        location = data_object.find("byteStream/fileLocation")
        if location is not None and "measurement/" in location.get("href", ""):
            section.remove(data_object)
    for number, href in enumerate(measurements):
        data_object = etree.SubElement(section, "dataObject", ID=f"measurement{number}")
        stream = etree.SubElement(data_object, "byteStream", mimeType="application/octet-stream")
        etree.SubElement(stream, "fileLocation", locatorType="URL", href=href)


def parent_index(element) -> int:
    return list(element.getparent()).index(element)


def make_zip_product(safe: Path, remove_safe: bool = True) -> Path:
    """Zip a .SAFE folder as ESA/ASF do (`<name>.SAFE/...` inside `<name>.zip`) beside it."""
    target = safe.with_suffix(".zip")
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(safe.rglob("*")):
            archive.write(path, Path(safe.name) / path.relative_to(safe))
    if remove_safe:
        shutil.rmtree(safe)
    return target


def make_data_folder(root: Path) -> Path:
    """root/data with raw, orbit_data, dem and runs folders; returns root/data."""
    data = root / "data"
    for folder in ("raw", "orbit_data", "dem", "runs"):
        (data / folder).mkdir(parents=True, exist_ok=True)
    return data


@pytest.fixture
def make_safe(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_safe(raw_dir=None, name=None, from_real=SLC_REFERENCE, **options) -> path.

    raw_dir defaults to tmp_path/data/raw. See make_safe_product for the options.
    """

    def factory(raw_dir: Path | None = None, name: str | None = None, **options) -> Path:
        raw_dir = raw_dir or make_data_folder(tmp_path) / "raw"
        raw_dir.mkdir(parents=True, exist_ok=True)
        return make_safe_product(raw_dir, name, **options)

    return factory


@pytest.fixture
def make_zip() -> Callable[..., Path]:
    """Factory: make_zip(safe_dir, remove_safe=True) -> the .zip beside it."""
    return make_zip_product


@pytest.fixture
def make_data_dir(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_data_dir(root=tmp_path) -> root/data with raw, orbit_data, dem, runs."""

    def factory(root: Path | None = None) -> Path:
        return make_data_folder(root or tmp_path)

    return factory


def clean_environ(**extra: str) -> dict[str, str]:
    """os.environ without any pipeline setting (a developer's shell must not leak in)."""
    from insar_pipeline.inputs.config import ENV_KEYS

    environ = {key: value for key, value in os.environ.items() if key not in ENV_KEYS}
    environ.update(extra)
    return environ


def run_main(
    args: Sequence[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `python code/main_parallel.py ARGS` as the user does, in cwd, output captured."""
    return subprocess.run(
        [sys.executable, str(MAIN), *args],
        cwd=cwd,
        env=env if env is not None else clean_environ(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Factory: run_cli(args, cwd, env=None, timeout=60) -> CompletedProcess (text, captured)."""
    return run_main


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """pytest's caplog with the secret filter the CLI puts on every handler it makes."""
    from insar_pipeline.logs import SecretMaskFilter

    caplog.handler.addFilter(SecretMaskFilter())
    return caplog
