"""What the user gives: settings (`config.Settings`, from .env, environment and CLI), pairs.txt
(`pairs`, `pairs_text`), SAFE product metadata (`safe`, `manifest`) and the pairs network
(`network`, the `pairs` command).

May import: the primitives (`errors`, `geo`, `_io`, `logs`). Nothing else in the package.
"""
