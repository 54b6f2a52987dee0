"""Quicklook PNGs of a finished pair's geocoded products (GDAL in, matplotlib Agg out).

Wrapped phase in a cyclic colour map, unwrapped phase, coherence; each decimated on read to
about `TARGET_PX` on its longer side, written atomically to `<run dir>/quicklooks/<kind>.png`
(a folder every cleaning level keeps) and re-rendered only when its product is newer.

Whoever ran the pair renders them as the pair finishes (`render_finished_pair`: the local
executor's worker thread, the Dask worker), so `report` only links the PNGs it finds
(`existing_quicklooks`, one directory listing per pair).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from insar_pipeline._io import atomic_output

log = logging.getLogger(__name__)

TARGET_PX = 1000
QUICKLOOK_DIR = "quicklooks"


@dataclass(frozen=True)
class ProductView:
    """How to draw one kind of product; candidates are tried in order (band 0 = last band)."""

    kind: str
    title: str
    candidates: tuple[str, ...]  # paths under the run folder (ISCE raster, read via .vrt/.xml)
    cmap: str
    units: str


VIEWS = (
    ProductView(
        "wrapped",
        "wrapped phase",
        ("merged/filt_topophase.flat.geo", "merged/topophase.flat.geo"),
        "twilight",
        "rad",
    ),
    ProductView(
        "unwrapped", "unwrapped phase", ("merged/filt_topophase.unw.geo",), "RdBu_r", "rad"
    ),
    ProductView(
        "coherence", "coherence", ("merged/phsig.cor.geo", "merged/topophase.cor.geo"), "gray", ""
    ),
)


@dataclass(frozen=True)
class Quicklook:
    kind: str
    title: str
    png: Path
    source: Path


def render_quicklooks(run_dir: Path, pair_id: str) -> list[Quicklook]:
    """The quicklooks of one pair, rendering those missing or older than their product."""
    looks = []
    for view in VIEWS:
        source = _first_existing(run_dir, view.candidates)
        if source is None:
            continue
        png = run_dir / QUICKLOOK_DIR / f"{view.kind}.png"
        if not png.exists() or png.stat().st_mtime < _mtime(source):
            try:
                data, extent = read_decimated(source, view.kind)
            except RuntimeError as err:  # GDAL cannot read it: say so, draw the others
                log.warning("cannot read %s: %s", source, err, extra={"pair": pair_id})
                continue
            draw_png(data, extent, view, f"{pair_id} {view.title}", png)
        looks.append(Quicklook(view.kind, view.title, png, source))
    return looks


def render_finished_pair(run_dir: Path, pair_id: str) -> int:
    """Render a pair's quicklooks where it just finished; how many it has (0 when its products
    cannot be drawn: the pair stays done, the report shows no quicklook for it)."""
    try:
        return len(render_quicklooks(run_dir, pair_id))
    except (OSError, RuntimeError, ValueError) as err:
        log.warning("quicklooks not rendered: %s", err, extra={"pair": pair_id})
        return 0


def existing_quicklooks(run_dir: str | Path) -> list[ProductView]:
    """The views whose PNG a pair folder holds (`<run dir>/quicklooks/<kind>.png`), in VIEWS
    order, without rendering anything: one directory listing, no path object per file."""
    try:
        names = {entry.name for entry in os.scandir(f"{run_dir}/{QUICKLOOK_DIR}")}
    except OSError:  # no folder: not rendered (yet)
        return []
    return [view for view in VIEWS if f"{view.kind}.png" in names]


def _first_existing(run_dir: Path, candidates: tuple[str, ...]) -> Path | None:
    for candidate in candidates:
        path = run_dir / candidate
        if any(Path(f"{path}{suffix}").exists() for suffix in ("", ".vrt", ".xml")):
            return path
    return None


def _mtime(source: Path) -> float:
    times = [
        Path(f"{source}{s}").stat().st_mtime for s in ("", ".vrt") if Path(f"{source}{s}").exists()
    ]
    return max(times, default=0.0)


def read_decimated(source: Path, kind: str) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The product's display values, decimated to ~TARGET_PX, and its lon/lat extent.

    Zero is "no data" in ISCE geocoded products (outside the swath); it becomes NaN.
    """
    from osgeo import gdal

    gdal.UseExceptions()
    vrt = Path(f"{source}.vrt")
    dataset = gdal.Open(str(vrt if vrt.exists() else source))
    step = max(1.0, max(dataset.RasterXSize, dataset.RasterYSize) / TARGET_PX)
    width = max(1, int(round(dataset.RasterXSize / step)))
    height = max(1, int(round(dataset.RasterYSize / step)))
    # Two-band ISCE products put the magnitude first: .unw (amp, phase), .cor (amp, coherence).
    band = dataset.GetRasterBand(dataset.RasterCount)
    raw = band.ReadAsArray(buf_xsize=width, buf_ysize=height)
    if np.iscomplexobj(raw):
        values = np.angle(raw).astype(np.float32)
        invalid = raw == 0
    else:
        values = raw.astype(np.float32)
        invalid = ~np.isfinite(values) | (values == 0)
    values[invalid] = np.nan
    x0, dx, _, y0, _, dy = dataset.GetGeoTransform()
    extent = (x0, x0 + dx * dataset.RasterXSize, y0 + dy * dataset.RasterYSize, y0)
    return values, extent


def draw_png(
    data: np.ndarray,
    extent: tuple[float, float, float, float],
    view: ProductView,
    title: str,
    png: Path,
) -> None:
    """Draw one product with its colour bar and lon/lat axes; the PNG is replaced atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # NaN pixels (no data) are drawn as the colour map's "bad" colour; matplotlib's resampling
    # casts them on the way and numpy warns about it (a warning the tests turn into an error).
    with np.errstate(invalid="ignore"):
        height, width = data.shape
        aspect = height / max(width, 1)
        figure = Figure(figsize=(8.0, max(2.5, min(12.0, 7.0 * aspect + 1.0))), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        vmin, vmax = _limits(data, view.kind)
        image = axes.imshow(
            data,
            cmap=view.cmap,
            vmin=vmin,
            vmax=vmax,
            extent=extent,
            interpolation="nearest",
            aspect="auto",
        )
        axes.set_title(title)
        axes.set_xlabel("longitude (°)")
        axes.set_ylabel("latitude (°)")
        colorbar = figure.colorbar(image, ax=axes)
        colorbar.set_label(view.units)
        png.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(png) as temporary:
            figure.savefig(temporary, format="png")


def _limits(data: np.ndarray, kind: str) -> tuple[float, float]:
    if kind == "wrapped":
        return -np.pi, np.pi
    if kind == "coherence":
        return 0.0, 1.0
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return -1.0, 1.0
    low, high = np.percentile(finite, [2, 98])
    return float(low), float(high if high > low else low + 1.0)
