"""Steps subsetoverlaps … burstifg of the topsApp double: work products at ISCE's sizes.

Each burst pixel costs what ISCE2_CONTRACT.md section 8 measured: fine_offsets 8 B, fine_coreg
8 B, fine_interferogram 16 B; ESD overlaps are ~10 % of a burst's lines. Steps switched off
(ESD, ionosphere) are no-ops that touch no state, as in ISCE.
"""

from __future__ import annotations

import zlib

from double_context import OVERLAP_FRACTION, Context


def _overlaps(ctx: Context):
    for swath, first, count in ctx.common():
        width, lines = ctx.burst_shape(swath)
        for index in range(first, first + count - 1):
            yield (
                swath,
                f"{index + 1:02d}_{index + 2:02d}",
                width,
                max(1, round(lines * OVERLAP_FRACTION)),
            )


def _esd_step(outputs: tuple[tuple[str, str, int], ...]):
    """An ESD step: per burst overlap, these (path template, type, bands); no-op without ESD."""

    def run(ctx: Context) -> None:
        if not ctx.config.flag("do ESD", True):
            return
        seed = ctx.product_seed
        for swath, pair, width, lines in _overlaps(ctx):
            for template, isce_type, bands in outputs:
                path = template.format(n=swath, p=pair, ref=ctx.state["referenceslcproduct"])
                ctx.noise(path, isce_type, bands, width, lines, seed)

    return run


subsetoverlaps = _esd_step(
    tuple(
        (f"{folder}/IW{{n}}/{name}_{half}_{{p}}.{ext}", isce_type, bands)
        for half in ("top", "bot")
        for folder, name, ext, isce_type, bands in (
            ("{ref}/overlaps", "burst", "slc", "CFLOAT", 1),
            ("geom_reference/overlaps", "lat", "rdr", "DOUBLE", 1),
            ("geom_reference/overlaps", "lon", "rdr", "DOUBLE", 1),
            ("geom_reference/overlaps", "hgt", "rdr", "DOUBLE", 1),
            ("geom_reference/overlaps", "los", "rdr", "FLOAT", 2),
        )
    )
)
coarseoffsets = _esd_step(
    tuple(
        (f"coarse_offsets/overlaps/IW{{n}}/{axis}_{half}_{{p}}.off", "FLOAT", 1)
        for axis in ("azimuth", "range")
        for half in ("top", "bot")
    )
)
coarseresamp = _esd_step(
    tuple(
        (f"coarse_coreg/overlaps/IW{{n}}/burst_{half}_{{p}}.slc", "CFLOAT", 1)
        for half in ("top", "bot")
    )
)
overlapifg = _esd_step(
    tuple(
        (f"coarse_interferogram/overlaps/IW{{n}}/burst_{half}_{{p}}.int", "CFLOAT", 1)
        for half in ("top", "bot")
    )
)
prepesd = _esd_step(
    (("ESD/overlap_IW{n}_{p}.int", "CFLOAT", 1), ("ESD/freq_IW{n}_{p}.bin", "FLOAT", 1))
)


def esd(ctx: Context) -> None:
    """runESD.py: the combined overlaps, then the azimuth misregistration from the overlap
    pixels whose coherence passes the threshold; none left is ISCE's exception (exit 1)."""
    if not ctx.config.flag("do ESD", True):
        return
    seed = ctx.product_seed
    for swath, _, _ in ctx.common():
        width, lines = ctx.burst_shape(swath)
        for ext, isce_type in (("int", "CFLOAT"), ("cor", "FLOAT"), ("off", "FLOAT")):
            ctx.noise(
                f"ESD/combined_IW{swath}.{ext}",
                isce_type,
                1,
                max(1, width // 15),
                max(1, lines // 5),
                seed,
            )
    threshold = float(str(ctx.config.get("ESD coherence threshold", 0.85)))
    if not ctx.faults.overlap_coherence > threshold:  # runESD.py: cor > esdCoherenceThreshold
        raise Exception("Coherence threshold too strict. No points left for reliable ESD estimate")  # noqa: TRY002
    (ctx.cwd / "ESD" / "ESDmisregistration.png").write_bytes(_tiny_png())


def rangecoreg(ctx: Context) -> None:
    if ctx.config.flag("do ESD", True):
        (ctx.cwd / "ESD" / "rangeMisregistration.jpg").write_bytes(b"\xff\xd8\xff\xd9")


def _per_burst(outputs: tuple[tuple[str, str, int], ...]):
    """A step writing, per common burst, these (path template, type, bands)."""

    def run(ctx: Context) -> None:
        seed = ctx.product_seed  # fineoffsets' geo2rdr reads the geometry: all that follows does
        for swath, first, count in ctx.common():
            width, lines = ctx.burst_shape(swath)
            for index in range(first, first + count):
                for template, isce_type, bands in outputs:
                    ctx.noise(
                        template.format(n=swath, b=f"{index + 1:02d}"),
                        isce_type,
                        bands,
                        width,
                        lines,
                        seed,
                    )
        for template, _, _ in outputs:  # the swath products' metadata
            folder = template.split("/IW")[0]
            for swath, _, count in ctx.common():
                (ctx.cwd / folder / f"IW{swath}.xml").write_text(
                    f"<swathProduct><bursts>{count}</bursts></swathProduct>\n"
                )

    return run


fineoffsets = _per_burst(
    (
        ("fine_offsets/IW{n}/azimuth_{b}.off", "FLOAT", 1),
        ("fine_offsets/IW{n}/range_{b}.off", "FLOAT", 1),
    )
)
fineresamp = _per_burst((("fine_coreg/IW{n}/burst_{b}.slc", "CFLOAT", 1),))


def ion(ctx: Context) -> None:
    if not ctx.config.flag("do ionosphere correction", False):
        return
    _per_burst(
        tuple(
            (f"ion/{band}/fine_interferogram/IW{{n}}/burst_{{b}}.int", "CFLOAT", 1)
            for band in ("lower", "upper")
        )
    )(ctx)
    width, lines = ctx.merged_shape(200, 50)
    seed = ctx.product_seed
    for name in (
        "raw_no_projection.ion",
        "raw_no_projection.cor",
        "raw.ion",
        "raw.cor",
        "filt.ion",
        "azshift.ion",
    ):
        ctx.noise(f"ion/ion_cal/{name}", "FLOAT", 1, width, lines, seed)
    (ctx.cwd / "ion" / "ion_cal" / "warning.txt").write_text("")


burstifg = _per_burst(
    (
        ("fine_interferogram/IW{n}/burst_{b}.int", "CFLOAT", 1),
        ("fine_interferogram/IW{n}/burst_{b}.cor", "FLOAT", 2),
    )
)


def _tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
        + chunk(b"IEND", b"")
    )
