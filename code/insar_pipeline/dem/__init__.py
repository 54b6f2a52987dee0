"""DEMs: the grid and tiles a pair needs (`grid`), OpenTopography requests (`fetch`), the
windows of the open Copernicus GLO-30 bucket's tiles (`copernicus`), the geoid-to-ellipsoid
conversion into ISCE's format (`convert`), the cache (`cache`) and the entry point
(`provision.provision_dems`).

May import: `inputs`, and the primitives (`_http`, `_io`, `download`, `errors`, `geo`,
`isce_image`, `logs`).
"""
