"""The run's record, `data/runs/ledger.sqlite`: the store (`store.Ledger`), its schema and
migrations (`schema`), the repair from checkpoints (`reconcile`, which uses the store; the store
never imports it) and the run lock (`lock`).

May import: `topsapp.job` (records), and the primitives.
"""
