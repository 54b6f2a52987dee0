"""What a run tells the user: `status` (`status`), `report.html` (`html`), quicklook PNGs
(`quicklook`) and the plain-text figures they share (`text`).

May import: `ledger`, `topsapp.job`, `inputs`, `timeseries.page` (the track pages report.html
links), and the primitives. Never `run`.
"""
