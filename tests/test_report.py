"""`report`: report.html assembled from the ledger (failures first, escaped log tails, pages for
large batches) with the quicklooks the workers rendered, linked as lazily loaded files."""

from __future__ import annotations

import argparse
import io
import os
import re
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from insar_pipeline.inputs.config import Settings
from insar_pipeline.ledger.store import Ledger
from insar_pipeline.report.html import report_command, write_report
from insar_pipeline.report.quicklook import read_decimated, render_finished_pair
from insar_pipeline.topsapp.job import PairResult

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


def images_of(page: str) -> list[str]:
    return re.findall(r"<img loading='lazy' [^>]*src='([^']+)'", page)


def test_report_links_the_workers_quicklooks_lazily_with_escaped_failures(data):
    runs = data / "runs"
    assert render_finished_pair(runs / DONE, DONE) == 3  # what the worker does at the end
    path = write_report(Settings(data_dir=data))
    page = path.read_text()
    assert path == runs / "report.html"
    # Offline: every src/href is a file of the runs folder or a fragment; nothing embedded.
    refs = re.findall(r"(?:src|href)='([^']*)'", page)
    assert refs and all(ref.startswith(("#", f"{DONE}/quicklooks/")) for ref in refs)
    assert "data:" not in page and "http://" not in page and "https://" not in page
    assert (
        "<script>alert" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    )
    failures = page[page.index("<h2>Failures</h2>") : page.index("<h2>Pairs</h2>")]
    assert FAILED in failures and "line 1" in failures and DONE not in failures
    assert page.index("<h2>Failures</h2>") < page.index("<h2>Pairs</h2>")
    images = images_of(page)
    assert sorted(images) == [f"{DONE}/quicklooks/{kind}.png" for kind in
                              ("coherence", "unwrapped", "wrapped")]  # fmt: skip
    import matplotlib.image

    for image in images:
        png = (runs / image).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        pixels = matplotlib.image.imread(io.BytesIO(png))
        assert min(pixels.shape[:2]) >= 300  # a real figure, not a thumbnail
        colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
        assert len(colours) > 100 and pixels[..., :3].std() > 0.1  # not blank, not flat


def test_report_only_assembles_and_render_draws_what_is_missing(data):
    runs = data / "runs"
    page = write_report(Settings(data_dir=data)).read_text()
    assert not (runs / DONE / "quicklooks").exists() and images_of(page) == []
    page = write_report(Settings(data_dir=data), render=True).read_text()
    looks = sorted(p.name for p in (runs / DONE / "quicklooks").iterdir())
    assert looks == ["coherence.png", "unwrapped.png", "wrapped.png"]
    assert len(images_of(page)) == 3


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
    run_dir = data / "runs" / DONE
    render_finished_pair(run_dir, DONE)
    png = run_dir / "quicklooks" / "wrapped.png"
    first = png.stat().st_mtime_ns
    render_finished_pair(run_dir, DONE)
    write_report(Settings(data_dir=data), render=True)
    assert png.stat().st_mtime_ns == first  # product unchanged: not re-rendered
    product = run_dir / "merged" / "filt_topophase.flat.geo"
    os.utime(product, ns=(first + 10**9, first + 10**9))
    render_finished_pair(run_dir, DONE)
    assert png.stat().st_mtime_ns > first  # the product changed: drawn again


def test_the_local_worker_renders_a_done_pairs_quicklooks_once(data):
    from batch_factory import pair_result
    from insar_pipeline.run.local import LocalExecutor

    runs = data / "runs"
    rendered = []

    def run(job, on_event=None, gate=None, stop=None):
        return pair_result(job.pair_id, "done" if job.pair_id == DONE else "failed")

    def finish(job):
        rendered.append((job.pair_id, threading.current_thread().name))
        return render_finished_pair(job.run_dir, job.pair_id)

    executor = LocalExecutor(2, run=run, finish=finish)
    for pair in (DONE, FAILED):
        executor.submit(SimpleNamespace(pair_id=pair, run_dir=runs / pair))
    results = []
    while len(results) < 2:
        results += executor.poll(5)
    executor.shutdown()
    assert rendered == [(DONE, f"pair-{DONE}")]  # in the pair's thread, for the done pair only
    png = runs / DONE / "quicklooks" / "wrapped.png"
    first = png.stat().st_mtime_ns
    write_report(Settings(data_dir=data))
    assert png.stat().st_mtime_ns == first and not (runs / FAILED / "quicklooks").exists()


def big_batch(runs, count: int, failed_every: int = 7) -> list[str]:
    """A ledger of `count` pairs (every `failed_every`-th failed), a quicklook per done pair."""
    from batch_factory import pair_result

    ids = [f"2025{index:06d}" for index in range(count)]
    ledger = Ledger.open_writer(runs)
    ledger.register_pairs([(pair, "R", "S", n + 1) for n, pair in enumerate(ids)], 6)
    run_id = ledger.start_run(
        workers=2, omp_threads=1, budget_gb=8.0, pairs_total=count, executor="local"
    )
    for index, pair in enumerate(ids):
        if index % failed_every == 3:
            ledger.record_result(run_id, pair_result(pair, "failed", error=f"boom {index}"))
        else:
            ledger.record_result(run_id, pair_result(pair, "done", bytes_after_clean=index))
            (runs / pair / "quicklooks").mkdir(parents=True)
            (runs / pair / "quicklooks" / "wrapped.png").write_bytes(b"\x89PNG")
    ledger.end_run(run_id, "finished", 1)
    ledger.close()
    return ids


def test_a_large_batch_gets_pages_failures_first_sortable_and_lazy(tmp_path, monkeypatch):
    import insar_pipeline.report.html as report_html

    monkeypatch.setattr(report_html, "PAGE_SIZE", 10)
    runs = tmp_path / "data" / "runs"
    ids = big_batch(runs, 35)
    failed = [pair for index, pair in enumerate(ids) if index % 7 == 3]
    index = write_report(Settings(data_dir=tmp_path / "data")).read_text()
    pages = sorted((runs / "report").glob("pairs-*.html"))
    assert [page.name for page in pages] == [f"pairs-000{n}.html" for n in (1, 2, 3, 4)]
    # The summary page: counts, the failures, links to the pages; no image at all.
    assert "35: <span class='done'>30 done</span>, <span class='failed'>5 failed</span>" in index
    assert images_of(index) == [] and "<img" not in index
    assert all(f"href='report/pairs-0001.html#{pair}'" in index for pair in failed)
    assert [f"report/{page.name}" for page in pages] == re.findall(
        r"href='(report/pairs-\d+\.html)'>", index
    )
    # The pages: failed pairs first, then pairs.txt order; each page's own quicklooks, lazy.
    rows = []
    for page in pages:
        text = page.read_text()
        shown = re.findall(r"<tr id='(\d+)'>", text)
        assert len(shown) <= 10
        assert sorted(images_of(text)) == sorted(
            f"../{pair}/quicklooks/wrapped.png" for pair in shown if pair not in failed
        )
        assert "<table class='sortable'>" in text and "data-v=" in text
        assert 'addEventListener("click"' in text  # the columns sort on a click
        rows += shown
    assert rows == failed + [pair for pair in ids if pair not in failed]
    # Numeric columns sort by value: the disk column carries the bytes.
    page_two = pages[1].read_text()
    assert f"<tr id='{ids[8]}'>" in page_two and "<td data-v='8'>8 B (from ?)</td>" in page_two


def test_pages_of_a_larger_earlier_report_are_removed(tmp_path, monkeypatch):
    import insar_pipeline.report.html as report_html

    monkeypatch.setattr(report_html, "PAGE_SIZE", 10)
    data = tmp_path / "data"
    big_batch(data / "runs", 35)
    write_report(Settings(data_dir=data))
    assert len(list((data / "runs" / "report").glob("pairs-*.html"))) == 4
    monkeypatch.setattr(report_html, "PAGE_SIZE", 50)  # now fits on report.html
    page = write_report(Settings(data_dir=data)).read_text()
    assert list((data / "runs" / "report").glob("pairs-*.html")) == []
    assert len(images_of(page)) == 30 and "<h2>Pairs</h2>" in page


def test_report_command_without_any_run(tmp_path, capsys):
    assert report_command(Settings(data_dir=tmp_path / "data"), argparse.Namespace()) == 0
    path = tmp_path / "data" / "runs" / "report.html"
    assert capsys.readouterr().out.strip() == str(path)
    assert "No run yet" in path.read_text()
