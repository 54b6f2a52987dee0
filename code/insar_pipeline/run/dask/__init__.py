"""The Dask executor: cluster plans and clusters (`cluster`), the shared-folder probe (`probe`),
the task a worker runs (`task`), the events it sends back (`events`) and the executor
(`executor`).

May import: what `run` may import, and `run.budget`.
"""
