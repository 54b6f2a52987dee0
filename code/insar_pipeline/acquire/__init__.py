"""Finding and downloading the inputs: Sentinel-1 SLC scenes or bursts for an area and dates.

Owns the `search` and `download` commands, the search-driven `pairs` network, and the
acquisition stage that `run` and `plan` call once (`stage.prepare_inputs`, `stage.describe`).
Built on asf_search (search, baseline stack) and burst2safe (bursts -> SAFE).

May import `inputs` and the primitives (errors, geo, logs) only; `run/` and `cli` call it.
Its HTTP is in `acquire.http` alone, so it can move onto a shared layer in one place.
"""
