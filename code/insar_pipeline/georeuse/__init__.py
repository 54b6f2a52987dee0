"""Geometry reuse across pairs sharing a reference: the key and guard (`key`), the pure
dispatch state machine (`plan`), and linking a donor's geometry into a pair (`link`).

May import: `topsapp` (its `job` records among them), `orbits`, `inputs`, and the primitives;
`pair.runner` calls `link`. The coordinator's side is `run/geometry.py`.
"""
