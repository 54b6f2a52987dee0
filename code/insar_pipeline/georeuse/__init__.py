"""Geometry reuse across pairs sharing a reference: the key and guard (`key`), the pure
dispatch state machine (`plan`), and linking a donor's geometry into a pair (`link`).

May import: `topsapp`, `orbits`, `inputs`, the primitives, and `pair.job` (the job and event
records; `pair.runner` calls `link`). The coordinator's side is `run/geometry.py`.
"""
