"""The report's page of a track: network, velocity map, displacement histories (PNGs, Agg).

`data/timeseries/<track>/timeseries.html` with its PNGs beside it; report.html links to it
(`track_pages`). Only pixels that are plotted are read from MintPy's time series.
"""

from __future__ import annotations

import html
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from insar_pipeline._io import atomic_output

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from insar_pipeline.timeseries.command import TrackResult

PAGE_NAME = "timeseries.html"
TIMESERIES_FOLDER = "timeseries"  # beside runs/ in the data folder
POINTS = 4  # displacement histories drawn


def date_baselines(links: list[tuple[str, str, float]]) -> dict[str, float]:
    """Per-date perpendicular baseline from the pairs' (least squares, first date 0; pure)."""
    dates = sorted({d for a, b, _ in links for d in (a, b)})
    index = {d: i for i, d in enumerate(dates)}
    if len(dates) < 2:
        return dict.fromkeys(dates, 0.0)
    design = np.zeros((len(links), len(dates) - 1))
    for row, (a, b, _) in enumerate(links):
        if index[b]:
            design[row, index[b] - 1] = 1
        if index[a]:
            design[row, index[a] - 1] = -1
    values = np.linalg.lstsq(design, np.array([v for *_, v in links]), rcond=None)[0]
    return {d: (0.0 if i == 0 else float(values[i - 1])) for d, i in index.items()}


def write_track_page(result: TrackResult) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    work = result.work_dir
    work.mkdir(parents=True, exist_ok=True)
    figures = [("network", _network_png(result))]
    if result.mintpy is not None and result.mintpy.ok and result.mintpy.velocity:
        points = _points(result.mintpy.velocity)
        figures.append(("velocity", _velocity_png(result.mintpy.velocity, work, points)))
        if result.mintpy.timeseries:
            figures.append(("displacement", _history_png(result.mintpy.timeseries, work, points)))
    body = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(result.track)}"
        "</title></head><body>",
        f"<h1>Time series {_e(result.track)}</h1>",
        f"<p>{len(result.network.dates)} dates, {len(result.network.links)} pairs,"
        f" {len(result.network.components)} piece(s) of network</p>",
    ]
    body += [f"<p><b>note</b>: {_e(note)}</p>" for note in result.notes]
    if result.mintpy is None or not result.mintpy.ok:
        body.append("<p>No MintPy result (see smallbaselineApp.log).</p>")
    body += [
        f"<figure><img src='{_e(png.name)}' alt='{name}'><figcaption>{name}</figcaption></figure>"
        for name, png in figures
    ]
    body.append("</body></html>")
    path = work / PAGE_NAME
    with atomic_output(path) as partial:
        partial.write_text("\n".join(body))
    return path


def track_pages(timeseries_folder: Path) -> list[tuple[str, Path]]:
    """(track, page) of every track that has a page, for report.html to link."""
    if not timeseries_folder.is_dir():
        return []
    return [(page.parent.name, page) for page in sorted(timeseries_folder.glob(f"*/{PAGE_NAME}"))]


def timeseries_links(runs_dir: Path) -> str:
    """report.html's section linking every track's page (empty when there is none)."""
    pages = track_pages(runs_dir.parent / TIMESERIES_FOLDER)
    if not pages:
        return ""
    items = "".join(
        f"<li><a href='{_e(os.path.relpath(page, runs_dir))}'>{_e(track)}</a></li>"
        for track, page in pages
    )
    return f"<h2>Time series</h2><ul>{items}</ul>"


def _network_png(result: TrackResult) -> Path:
    import h5py
    import matplotlib.pyplot as plt

    stack = result.work_dir / "inputs" / "ifgramStack.h5"
    with h5py.File(stack, "r") as f:
        dates = [(a.decode(), b.decode()) for a, b in f["date"][:]]
        bperp, keep = f["bperp"][:], f["dropIfgram"][:]
    kept = [(a, b, float(v)) for (a, b), v, k in zip(dates, bperp, keep, strict=True) if k]
    per_date = date_baselines(kept)
    per_date.update({d: np.nan for a, b in dates for d in (a, b) if d not in per_date})
    day = {d: _day(d) for d in per_date}
    figure, axes = plt.subplots(figsize=(8, 4))
    for (a, b), kept in zip(dates, keep, strict=True):
        axes.plot(
            np.array([day[a], day[b]]), [per_date[a], per_date[b]], "-" if kept else ":",
            color="tab:blue" if kept else "tab:gray", lw=1,
        )  # fmt: skip
    axes.plot(np.array(list(day.values())), list(per_date.values()), "o", color="k", ms=4)
    axes.set_xlabel("date")
    axes.set_ylabel("perpendicular baseline (m)")
    axes.set_title(f"{result.track}: {len(dates)} pairs (dotted: dropped)")
    figure.autofmt_xdate()
    return _save(figure, result.work_dir / "network.png")


def _points(velocity: Path) -> list[tuple[int, int]]:
    """The reference pixel, the fastest one, and two between."""
    import h5py

    with h5py.File(velocity, "r") as f:
        data = f["velocity"][:]
        ref = (int(f.attrs.get("REF_Y", 0)), int(f.attrs.get("REF_X", 0)))
    finite = np.where(np.isfinite(data), np.abs(data), -1)
    order = np.argsort(finite, axis=None)[::-1]
    valid = order[: max(1, int(np.isfinite(data).sum()))]
    picks = [valid[0], valid[len(valid) // 8], valid[len(valid) // 3]]
    points = [ref]
    for index in picks:
        row, col = np.unravel_index(index, data.shape)
        points.append((int(row), int(col)))
    return list(dict.fromkeys(points))[:POINTS]


def _velocity_png(velocity: Path, work: Path, points: list[tuple[int, int]]) -> Path:
    import h5py
    import matplotlib.pyplot as plt

    with h5py.File(velocity, "r") as f:
        mm = f["velocity"][:] * 1000
        attrs = dict(f.attrs)
    x0, dx = float(attrs["X_FIRST"]), float(attrs["X_STEP"])
    y0, dy = float(attrs["Y_FIRST"]), float(attrs["Y_STEP"])
    extent = (x0, x0 + dx * mm.shape[1], y0 + dy * mm.shape[0], y0)
    limit = float(np.nanpercentile(np.abs(mm), 99)) if np.isfinite(mm).any() else 1.0
    figure, axes = plt.subplots(figsize=(7, 6))
    image = axes.imshow(mm, cmap="RdBu_r", vmin=-limit, vmax=limit, extent=extent)
    figure.colorbar(image, label="LOS velocity (mm/yr)")
    for number, (row, col) in enumerate(points):
        lon, lat = x0 + (col + 0.5) * dx, y0 + (row + 0.5) * dy
        style = ("ks", "reference") if number == 0 else ("k^", f"P{number}")
        axes.plot(lon, lat, style[0], ms=7, mfc="none" if number else "k")
        axes.annotate(style[1], (lon, lat), textcoords="offset points", xytext=(4, 4))
    axes.set_aspect(1 / max(np.cos(np.radians(y0)), 0.1))  # a degree of longitude is shorter
    axes.tick_params(axis="x", labelrotation=30)
    axes.set_xlabel("longitude")
    axes.set_ylabel("latitude")
    return _save(figure, work / "velocity.png")


def _history_png(timeseries: Path, work: Path, points: list[tuple[int, int]]) -> Path:
    import h5py
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4))
    with h5py.File(timeseries, "r") as f:
        days = np.array([_day(d.decode()) for d in f["date"][:]])
        for number, (row, col) in enumerate(points):
            label = "reference" if number == 0 else f"P{number}"
            axes.plot(days, f["timeseries"][:, row, col] * 1000, "o-", ms=3, label=label)
    axes.set_ylabel("LOS displacement (mm)")
    axes.legend()
    figure.autofmt_xdate()
    return _save(figure, work / "displacement.png")


def _save(figure: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        with atomic_output(path) as partial:
            figure.savefig(partial, format="png", dpi=90, bbox_inches="tight")
    finally:
        plt.close(figure)
    return path


def _day(yyyymmdd: str) -> np.datetime64:
    return np.datetime64(datetime.strptime(yyyymmdd, "%Y%m%d").date(), "D")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)
