"""Steps mergebursts … geocodeoffsets of the topsApp double: real rasters a reader can open.

Merged products are multilooked by the XML's looks; geocoded ones lie on the geocode bounding box
(else the DEM's extent) with as many pixels per burst pixel as the real run had, so merged/ keeps
its ~10 % share of a pair. Contents: a deformation interferogram (see double_rasters).
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from double_config import as_list
from double_context import DEFAULT_GEOCODE_LIST, GEOCODED_PER_BURST_PIXEL, Context
from double_deformation import deformation_fields
from double_radar import dem_box
from double_rasters import heights, interferogram_fields, wrapped, write_image

if TYPE_CHECKING:
    import numpy as np


def _fields(ctx: Context, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    width, lines = shape
    return interferogram_fields(lines, width, ctx.product_seed)


def mergebursts(ctx: Context) -> None:
    ctx.common()
    for name in (
        "los.rdr",
        "lat.rdr",
        "lon.rdr",
        "z.rdr",
        "reference.slc",
        "secondary.slc",
        "topophase.flat",
        "topophase.cor",
    ):
        full = ctx.cwd / "merged" / f"{name}.full"
        full.parent.mkdir(parents=True, exist_ok=True)
        full.with_name(full.name + ".vrt").write_text(
            f"<VRTDataset><!-- bursts of {name} --></VRTDataset>\n"
        )
        full.with_name(full.name + ".xml").write_text(f"<imageFile><!-- {name} --></imageFile>\n")
    shape = ctx.multilooked_shape()
    fields = _fields(ctx, shape)
    merged = ctx.cwd / "merged"
    write_image(merged / "topophase.flat", [wrapped(fields)], "CFLOAT", on_write=ctx.wrote)
    write_image(merged / "topophase.cor", [fields["amplitude"], fields["coherence"]], "FLOAT")
    write_image(merged / "los.rdr", _los(shape, ctx.geometry_seed()), "FLOAT")
    if ctx.config.flag("do ionosphere correction", False):
        write_image(merged / "topophase.ion", [fields["phase"] * 0.05], "FLOAT")
        if ctx.config.flag("apply ionosphere correction", False):
            write_image(merged / "topophase_ori.flat", [wrapped(fields)], "CFLOAT")


def _los(shape: tuple[int, int], geometry_seed: int) -> list[np.ndarray]:
    """Incidence and azimuth angles, merged from topo's los rasters (so: from the geometry)."""
    import numpy as np

    width, lines = shape
    near = 30.0 + (geometry_seed % 1000) / 1000  # each geometry its own near-range incidence
    incidence = np.tile(np.linspace(near, near + 16.0, width), (lines, 1))
    return [incidence, np.full((lines, width), -100.0)]


def filter_(ctx: Context) -> None:
    if not ctx.config.flag("do interferogram", True):
        return
    ctx.common()
    shape = ctx.multilooked_shape()
    fields = _fields(ctx, shape)
    write_image(
        ctx.cwd / "merged/filt_topophase.flat", [wrapped(fields)], "CFLOAT", on_write=ctx.wrote
    )
    write_image(ctx.cwd / "merged/phsig.cor", [fields["coherence"]], "FLOAT")


def unwrap(ctx: Context) -> None:
    if not ctx.config.flag("do unwrap", False):
        return
    ctx.common()
    shape = ctx.multilooked_shape()
    fields = _fields(ctx, shape)
    write_image(
        ctx.cwd / "merged/filt_topophase.unw",
        [fields["amplitude"], fields["phase"]],
        "FLOAT",
        on_write=ctx.wrote,
    )
    write_image(
        ctx.cwd / "merged/filt_topophase.unw.conncomp",
        [(fields["coherence"] > 0.3).astype("uint8")],
        "BYTE",
    )


def unwrap2stage(ctx: Context) -> None:
    unwrapper = str(ctx.config.get("unwrapper name", "icu")).lower()
    if not ctx.config.flag("do unwrap 2 stage", False) or unwrapper in ("icu", "grass"):
        return
    source = ctx.cwd / "merged/filt_topophase.unw"
    shutil.copyfile(source, ctx.cwd / "merged/filt_topophase_2stage.unw")
    for suffix in (".xml", ".vrt"):
        text = (
            Path(str(source) + suffix)
            .read_text()
            .replace("filt_topophase.unw", "filt_topophase_2stage.unw")
        )
        Path(str(ctx.cwd / "merged/filt_topophase_2stage.unw") + suffix).write_text(text)


def geocode(ctx: Context) -> None:
    if not ctx.config.flag("do interferogram", True):
        return
    common = ctx.common()
    dem = str(ctx.config.get("geocode demfilename") or ctx.state["demfilename"])
    south, north, west, east = ctx.config.box("geocode bounding box") or dem_box(Path(dem + ".xml"))
    pixels = GEOCODED_PER_BURST_PIXEL * sum(
        math.prod(ctx.burst_shape(n)) * count for n, _, count in common
    )
    aspect = (east - west) / (north - south)
    lines = max(2, round(math.sqrt(pixels / aspect)))
    width = max(2, round(pixels / lines))
    grid = (west, north, (east - west) / width, -(north - south) / lines)
    fields = deformation_fields(
        os.environ, ctx.state, ctx.cwd.name, lines, width, grid, ctx.product_seed
    ) or interferogram_fields(lines, width, ctx.product_seed)
    conncomp = fields.get("conncomp", (fields["coherence"] > 0.3).astype("uint8"))
    products = {
        "filt_topophase.flat": ([wrapped(fields)], "CFLOAT"),
        "topophase.flat": ([wrapped(fields)], "CFLOAT"),
        "filt_topophase.unw": ([fields["amplitude"], fields["phase"]], "FLOAT"),
        "filt_topophase_2stage.unw": ([fields["amplitude"], fields["phase"]], "FLOAT"),
        "filt_topophase.unw.conncomp": ([conncomp], "BYTE"),
        "phsig.cor": ([fields["coherence"]], "FLOAT"),
        "topophase.cor": ([fields["amplitude"], fields["coherence"]], "FLOAT"),
        "los.rdr": (_los((width, lines), ctx.geometry_seed()), "FLOAT"),
        "topophase.ion": ([fields["phase"] * 0.05], "FLOAT"),
    }
    entries = as_list(ctx.config.get("geocode list")) or list(DEFAULT_GEOCODE_LIST)
    for entry in entries:
        source = ctx.cwd / str(entry)
        if source.exists() and source.name in products:  # ISCE geocodes what exists
            bands, isce_type = products[source.name]
            write_image(source.with_name(source.name + ".geo"), bands, isce_type, grid, ctx.wrote)
    write_image(ctx.cwd / "merged/dem.crop", [heights(lines, width).astype("int16")], "SHORT", grid)


def offsets_step(ctx: Context) -> None:
    """denseoffsets, filteroffsets, geocodeoffsets: never switched on by the pipeline."""
    if ctx.config.flag("do dense offsets", False):
        raise NotImplementedError("the topsApp double does not simulate dense offsets")
