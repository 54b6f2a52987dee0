"""`report`: a self-contained report.html with failures, escaped log tails and real quicklooks."""

from __future__ import annotations

import argparse
import base64
import io
import re

import numpy as np
import pytest

from insar_pipeline.inputs.config import Settings
from insar_pipeline.ledger.store import Ledger
from insar_pipeline.pair.job import PairResult
from insar_pipeline.report.html import report_command, write_report
from insar_pipeline.report.quicklook import read_decimated

DONE, FAILED, BARE = "20250406_20250418", "20250418_20250430", "20250430_20250512"
HOSTILE = "<script>alert('x')</script> & \"quotes\""


def write_isce(path, array, bands=1):
    """An ISCE raster (raw + .xml, as topsApp writes) with a lon/lat geotransform."""
    from osgeo import gdal

    gdal.UseExceptions()
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = gdal.GDT_CFloat32 if np.iscomplexobj(array) else gdal.GDT_Float32
    height, width = array.shape[-2:]
    dataset = gdal.GetDriverByName("ISCE").Create(str(path), width, height, bands, dtype)
    dataset.SetGeoTransform((-125.0, 0.0005, 0.0, 52.0, 0.0, -0.0005))
    for band in range(bands):
        dataset.GetRasterBand(band + 1).WriteArray(array if bands == 1 else array[band])
    dataset = None


def write_products(run_dir, width=1500, height=900):
    """Geocoded products with a fringe pattern, zero (no data) outside a tilted swath."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = 0.02 * x + 0.0001 * (y - height / 2) ** 2
    swath = np.abs((x - width / 2) - 0.3 * (y - height / 2)) < width / 3
    wrapped = np.where(swath, np.exp(1j * phase), 0).astype(np.complex64)
    unwrapped = np.stack([np.where(swath, 1.0, 0), np.where(swath, phase, 0)]).astype(np.float32)
    coherence = np.where(swath, 0.5 + 0.4 * np.sin(x / 50) * np.cos(y / 70), 0).astype(np.float32)
    write_isce(run_dir / "merged" / "filt_topophase.flat.geo", wrapped)
    write_isce(run_dir / "merged" / "filt_topophase.unw.geo", unwrapped, bands=2)
    write_isce(run_dir / "merged" / "phsig.cor.geo", coherence)


@pytest.fixture
def data(tmp_path):
    runs = tmp_path / "data" / "runs"
    ledger = Ledger.open_writer(runs)
    ledger.register_pairs(
        [(DONE, "REF", "SEC", 1), (FAILED, "SEC", "T3", 2), (BARE, "T3", "T4", 3)], 6
    )
    run_id = ledger.start_run(
        workers=2, omp_threads=1, budget_gb=22, pairs_total=3, executor="local"
    )
    common = dict(attempts={}, phase_wall_s={}, bytes_before_clean=None, bytes_after_clean=None)
    ledger.record_result(
        run_id,
        PairResult(
            DONE, "done", ("preprocess",), error=None, error_tail=None, failed_phase=None, **common
        ),
    )
    ledger.record_result(
        run_id,
        PairResult(
            FAILED,
            "failed",
            (),
            error=f"unwrap: {HOSTILE}",
            error_tail=f"line 1\n{HOSTILE}",
            failed_phase="unwrap",
            **common,
        ),
    )
    ledger.record_result(
        run_id,
        PairResult(BARE, "done", (), error=None, error_tail=None, failed_phase=None, **common),
    )
    ledger.end_run(run_id, "finished", 1)
    ledger.close()
    write_products(runs / DONE)
    (runs / BARE).mkdir()  # done per the ledger, but no products (e.g. cleaned away by hand)
    return tmp_path / "data"


def images_of(page: str) -> list[bytes]:
    return [
        base64.b64decode(data) for data in re.findall(r"src='data:image/png;base64,([^']+)'", page)
    ]


def test_report_is_self_contained_with_escaped_failures_and_quicklooks(data):
    path = write_report(Settings(data_dir=data))
    page = path.read_text()
    assert path == data / "runs" / "report.html"
    # Offline: every src/href is inline data or a fragment, nothing is fetched.
    assert all(
        ref.startswith(("data:", "#")) for ref in re.findall(r"(?:src|href)='([^']*)'", page)
    )
    assert "http://" not in page and "https://" not in page
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    failures = page[page.index("<h2>Failures</h2>") : page.index("<h2>Quicklooks</h2>")]
    assert FAILED in failures and "line 1" in failures and DONE not in failures
    pngs = images_of(page)
    assert len(pngs) == 3
    import matplotlib.image

    for png in pngs:
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        pixels = matplotlib.image.imread(io.BytesIO(png))
        assert min(pixels.shape[:2]) >= 300  # a real figure, not a thumbnail
        colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
        assert len(colours) > 100 and pixels[..., :3].std() > 0.1  # not blank, not flat
    looks = sorted(p.name for p in (data / "runs" / DONE / "quicklooks").iterdir())
    assert looks == ["coherence.png", "unwrapped.png", "wrapped.png"]


def test_quicklooks_are_decimated_and_cached(data):
    values, extent = read_decimated(
        data / "runs" / DONE / "merged" / "filt_topophase.flat.geo", "wrapped"
    )
    assert values.shape == (600, 1000)  # 1500 x 900 decimated to ~1000 px
    assert extent == pytest.approx((-125.0, -124.25, 51.55, 52.0))
    assert np.isnan(values).any() and np.nanmax(np.abs(values)) <= np.pi + 1e-6
    unwrapped, _ = read_decimated(
        data / "runs" / DONE / "merged" / "filt_topophase.unw.geo", "unwrapped"
    )
    assert np.nanmax(unwrapped) > 2 * np.pi  # the phase band, not the amplitude band
    write_report(Settings(data_dir=data))
    png = data / "runs" / DONE / "quicklooks" / "wrapped.png"
    first = png.stat().st_mtime_ns
    write_report(Settings(data_dir=data))
    assert png.stat().st_mtime_ns == first  # product unchanged: not re-rendered


def test_report_command_without_any_run(tmp_path, capsys):
    assert report_command(Settings(data_dir=tmp_path / "data"), argparse.Namespace()) == 0
    path = tmp_path / "data" / "runs" / "report.html"
    assert capsys.readouterr().out.strip() == str(path)
    assert "No run yet" in path.read_text()
