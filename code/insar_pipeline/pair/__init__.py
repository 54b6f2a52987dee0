"""One pair: preparing its folder (`prepare`), the decisions it keeps across runs
(`decisions`) and running its phases with retries (`runner.run_pair`).

May import: `georeuse`, `topsapp`, `inputs`, and the primitives.
"""
