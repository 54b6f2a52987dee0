"""Orbit files: choosing the file a scene needs (`files`), the cache folder (`cache`), the three
services (`sources`: asf, aws; `cdse`), fetching what the cache lacks (`fetch`) and the entry point
(`provision.provision_orbits`).

May import: `inputs`, and the primitives (`_http` for every request, `_io`, `download`, `errors`).
"""
