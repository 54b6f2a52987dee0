"""Time series: a MintPy-ready stack per track from the finished pairs, and MintPy's velocity.

What it owns: `data/timeseries/<track>/` (inputs/ifgramStack.h5, inputs/geometryGeo.h5 in
MintPy's own layout, smallbaselineApp.cfg, MintPy's outputs and log, the report page and PNGs).
Modules: `network` (dates, pairs, connected components: pure), `grid` (one lat/lon grid per
track, GDAL resampling), `metadata` (MintPy attributes from the SAFE annotation and topsProc.xml),
`stack` (streamed, appendable HDF5 writing), `mintpy_app` (smallbaselineApp.cfg and the MintPy
subprocess), `page` (the per-track report page), `command` (the `timeseries` command and the
final stage of `run`).

May import: `ledger`, `topsapp`, `inputs`, and the primitives (`_io`, `errors`). `run/` and
`report/` call it; it never imports them.
"""
