"""The record of a file a run downloaded (orbit, DEM tile), as the coordinator's ledger keeps it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Download:
    """One file fetched for the run."""

    name: str
    source: str  # where from: a service name or its URL, any key masked
    bytes: int
    path: Path  # where it ended up: for a DEM tile, the DEM it is mosaicked into
    kind: Literal["orbit", "dem"] = "orbit"
