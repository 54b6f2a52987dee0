"""The `run` and `plan` commands: the driver (`driver`), the coordinator (`coordinator`), dispatch
planning (`dispatch`), the memory budget (`budget`), geometry sharing (`geometry`), the local
executor (`local`) and the Dask one (`dask/`), signals (`signals`) and progress (`progress`).

May import: everything below it (`report`, `ledger`, `pair`, `georeuse`, `topsapp`, `dem`,
`orbits`, `inputs`, the primitives). Only `cli` imports `run`.
"""
