"""Reading Sentinel-1 products: the real manifests of ../shared/realdata, zips, broken products."""

from __future__ import annotations

import logging
import shutil
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import (
    BURST_S1A,
    BURST_S1B,
    SLC_REFERENCE,
    SLC_SECONDARY,
    copy_real_safe,
    make_zip_product,
    real_safe,
)
from insar_pipeline.errors import InputError
from insar_pipeline.inputs.manifest import parse_manifest
from insar_pipeline.inputs.safe import read_product, scan_raw


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


# name -> (mission, relative orbit, absolute orbit, start, stop, swaths, first footprint corner)
REAL = {
    SLC_REFERENCE: ("S1A", 108, 58630, "2025-04-06T02:20:08.592193", "2025-04-06T02:20:35.567258",
                    (1, 2, 3), (52.649757, -130.122009)),
    SLC_SECONDARY: ("S1A", 108, 58805, "2025-04-18T02:20:08.470270", "2025-04-18T02:20:35.445335",
                    (1, 2, 3), None),
    # burst2safe keeps the annotations of swaths without a burst; only IW3 has a measurement.
    BURST_S1B[0]: ("S1B", 174, 11575, "2018-06-28T15:15:40.755037", "2018-06-28T15:16:07.721880",
                   (3,), (57.201474, -136.587363)),
    BURST_S1B[1]: ("S1B", 174, 17000, "2019-07-05T15:15:47.472140", "2019-07-05T15:16:14.432817",
                   (3,), None),
    BURST_S1A[0]: ("S1A", 64, 32861, "2020-06-04T02:23:16.647656", "2020-06-04T02:23:44.599110",
                   (2, 3), (27.176659, 54.071436)),
    BURST_S1A[1]: ("S1A", 64, 33036, "2020-06-16T02:23:17.544150", "2020-06-16T02:23:45.495605",
                   (2, 3), None),
}  # fmt: skip


@pytest.mark.parametrize("name", list(REAL))
def test_reads_real_manifests(name: str, tmp_path: Path) -> None:
    mission, relative, absolute, start, stop, swaths, corner = REAL[name]
    product = read_product(copy_real_safe(name, tmp_path))
    assert product.name == name
    assert (product.mission, product.mode, product.product_type) == (mission, "IW", "SLC")
    assert (product.relative_orbit, product.absolute_orbit) == (relative, absolute)
    assert (product.start, product.stop) == (utc(start), utc(stop))
    assert product.start.microsecond and product.start.tzinfo is timezone.utc
    assert product.swaths == swaths
    # The manifests say VV+VH, but only VV annotations were kept (see PROVENANCE.md).
    assert product.polarizations == ("vv",)
    assert len(product.footprint) == 4 and not product.is_zip
    if corner:
        assert product.footprint[0] == corner


def test_real_slc_footprint_box(tmp_path: Path) -> None:
    box = read_product(copy_real_safe(SLC_REFERENCE, tmp_path)).bbox
    assert (box.south, box.north, box.west, box.east) == (
        51.039009,
        53.054619,
        -130.122009,
        -125.93853,
    )


def test_manifest_polarizations_and_measurements_are_parsed() -> None:
    fields = parse_manifest((real_safe(SLC_REFERENCE) / "manifest.safe").read_bytes(), "m")
    assert fields.polarizations == ("vv", "vh")
    assert len(fields.measurements) == 6
    assert all(path.startswith("measurement/s1a-iw") for path in fields.measurements)


def test_zip_reads_like_the_folder(tmp_path: Path) -> None:
    folder = copy_real_safe(SLC_REFERENCE, tmp_path / "folder")
    from_folder = read_product(folder)
    packed = make_zip_product(copy_real_safe(SLC_REFERENCE, tmp_path))
    assert packed.name == f"{SLC_REFERENCE}.zip" and not (tmp_path / folder.name).exists()
    from_zip = read_product(packed)
    assert from_zip.is_zip and from_zip.path == packed
    assert from_zip == type(from_folder)(**{**from_folder.__dict__, "path": packed})


def test_zip_of_product_without_manifest_is_input_error(tmp_path: Path) -> None:
    packed = tmp_path / "S1A_IW_SLC__1SDV_X.zip"
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("S1A_IW_SLC__1SDV_X.SAFE/annotation/a.xml", "<a/>")
    with pytest.raises(InputError, match=r"S1A_IW_SLC__1SDV_X\.zip: not a Sentinel-1 product zip"):
        read_product(packed)


@pytest.mark.parametrize("keep", [0, 100, 0.5])
def test_truncated_zip_is_input_error_naming_it(tmp_path: Path, keep: float) -> None:
    packed = make_zip_product(copy_real(tmp_path))
    data = packed.read_bytes()
    packed.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(InputError, match=rf"{packed.name}: not a readable zip"):
        read_product(packed)


def test_corrupt_member_in_zip_is_input_error(tmp_path: Path) -> None:
    packed = make_zip_product(copy_real(tmp_path))
    with zipfile.ZipFile(packed) as archive:
        info = archive.getinfo(f"{SLC_REFERENCE}.SAFE/manifest.safe")
    data = bytearray(packed.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + 200
    data[start : start + 64] = bytes(64)  # damage the compressed manifest
    packed.write_bytes(bytes(data))
    with pytest.raises(InputError, match=rf"{packed.name}: not a readable zip"):
        read_product(packed)


def copy_real(tmp_path: Path, name: str = SLC_REFERENCE) -> Path:
    return copy_real_safe(name, tmp_path)


def test_truncated_manifest_is_input_error(tmp_path: Path) -> None:
    safe = copy_real(tmp_path)
    manifest = safe / "manifest.safe"
    manifest.write_bytes(manifest.read_bytes()[:5000])
    with pytest.raises(InputError, match=r"manifest\.safe: not valid XML"):
        read_product(safe)


@pytest.mark.parametrize(("remove", "message"), [
    ("manifest.safe", "manifest.safe is missing"),
    ("annotation", "annotation is missing"),
])  # fmt: skip
def test_incomplete_folder_is_input_error(tmp_path: Path, remove: str, message: str) -> None:
    safe = copy_real(tmp_path)
    target = safe / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(InputError, match=rf"{safe.name}: {message}"):
        read_product(safe)


def test_missing_measurements(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    safe = copy_real(tmp_path)
    (next((safe / "measurement").glob("s1a-iw2-*.tiff"))).unlink()
    with caplog.at_level(logging.WARNING):
        assert read_product(safe).swaths == (1, 3)
    assert f"{safe.name}: IW2 VV has no measurement file; left out" in caplog.text
    shutil.rmtree(safe / "measurement")
    with pytest.raises(InputError, match=r"no measurement tiff .* the product is incomplete"):
        read_product(safe)


def test_no_swath_annotation_is_input_error(tmp_path: Path) -> None:
    safe = copy_real(tmp_path)
    for annotation in (safe / "annotation").glob("*.xml"):
        annotation.unlink()
    (safe / "annotation" / "calibration").mkdir()
    with pytest.raises(InputError, match="no IW swath annotation"):
        read_product(safe)


def replace_in_manifest(safe: Path, old: str, new: str) -> None:
    manifest = safe / "manifest.safe"
    text = manifest.read_text()
    assert old in text
    manifest.write_text(text.replace(old, new))


def test_relative_orbit_from_absolute_when_manifest_lacks_it(tmp_path: Path) -> None:
    safe = copy_real(tmp_path)
    replace_in_manifest(safe, "relativeOrbitNumber", "relativeOrbitNumberGone")
    assert read_product(safe).relative_orbit == 108  # (58630 - 73) % 175 + 1


def test_times_from_name_when_manifest_lacks_them(tmp_path: Path) -> None:
    safe = copy_real(tmp_path)
    replace_in_manifest(safe, "safe:startTime", "safe:startTimeGone")
    replace_in_manifest(safe, "safe:stopTime", "safe:stopTimeGone")
    product = read_product(safe)
    assert product.start == utc("2025-04-06T02:20:08") and product.stop == utc(
        "2025-04-06T02:20:35"
    )


def test_s1c_needs_relative_orbit_from_manifest(tmp_path: Path, make_safe) -> None:
    safe = make_safe(tmp_path / "raw", mission="S1C", relative_orbit=108)
    assert read_product(safe).relative_orbit == 108 and read_product(safe).mission == "S1C"
    replace_in_manifest(safe, "relativeOrbitNumber", "relativeOrbitNumberGone")
    with pytest.raises(InputError, match="no relative orbit"):
        read_product(safe)


def test_bad_footprint_is_input_error(tmp_path: Path) -> None:
    safe = copy_real(tmp_path)
    replace_in_manifest(safe, "52.649757,-130.122009", "52.649757;-130.122009")
    with pytest.raises(InputError, match="footprint"):
        read_product(safe)


def test_made_product_reads_back(make_safe, tmp_path: Path) -> None:
    start = utc("2025-04-30T02:20:08")
    safe = make_safe(
        tmp_path / "raw", start=start, swaths=(1, 3), polarizations=("hh", "hv"), as_zip=True
    )
    product = read_product(safe)
    assert product.is_zip and product.name.startswith("S1A_IW_SLC__1SDH_20250430T022008_")
    assert product.start == start.replace(microsecond=592193)
    assert product.absolute_orbit == 58630 + 2 * 175 and product.relative_orbit == 108
    assert product.swaths == (1, 3) and product.polarizations == ("hh", "hv")


def test_scan_raw_finds_products_and_prefers_safe_over_zip(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = tmp_path / "raw"
    (raw / "A.SAFE").mkdir(parents=True)
    (raw / "A.zip").write_bytes(b"")
    (raw / "B.zip").write_bytes(b"")
    (raw / "C.zip.part").write_bytes(b"")
    (raw / "D.SAFE").write_bytes(b"")  # a file named .SAFE is not a product folder
    (raw / ".gitkeep").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        found = scan_raw(raw)
    assert found == {"A": raw / "A.SAFE", "B": raw / "B.zip"}
    assert "A.SAFE and A.zip are the same product; using A.SAFE" in caplog.text
