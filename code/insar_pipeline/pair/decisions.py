"""Decisions a pair made for itself while it ran, kept in its folder.

A pair may change how it is processed on its own: with `ESD=auto`, a pair whose burst overlaps
are too incoherent for enhanced spectral diversity is coregistered without it. Such a decision is
the pair's, not the user's: `pair_settings` applies it on every later run, so the topsApp.xml the
pair gets (and the settings-change guard compares) is the one its finished steps used.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from insar_pipeline._io import write_text
from insar_pipeline.errors import InputError
from insar_pipeline.inputs.config import Settings

DECISIONS_NAME = "pair_decisions.json"
# What the ledger, `status`, the run summary and the report say of a pair that dropped ESD.
WITHOUT_ESD_NOTE = "coregistered without ESD: burst-boundary phase jumps may remain"
NAMED_AT_MOST = 10  # pairs named in one line; a large batch gets "and N more"


def without_esd_line(pair_ids: list[str]) -> str:
    """One line naming the pairs that dropped ESD (for the run summary and `status`)."""
    named = ", ".join(pair_ids[:NAMED_AT_MOST])
    more = len(pair_ids) - NAMED_AT_MOST
    return f"{named}{f' and {more} more' if more > 0 else ''}: {WITHOUT_ESD_NOTE}"


@dataclass(frozen=True)
class PairDecisions:
    """What a pair decided for itself; the defaults mean "as the settings say"."""

    esd_disabled: bool = False
    reason: str = ""


def read_decisions(run_dir: Path) -> PairDecisions:
    """The pair's recorded decisions, or the defaults when it made none."""
    path = run_dir / DECISIONS_NAME
    if not path.is_file():
        return PairDecisions()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return PairDecisions(
            esd_disabled=bool(data.get("esd_disabled", False)), reason=str(data.get("reason", ""))
        )
    except (OSError, ValueError, AttributeError) as err:
        raise InputError(
            f"{path}: cannot read it ({err}); delete it to let the pair decide again"
        ) from err


def record_decisions(run_dir: Path, decisions: PairDecisions) -> None:
    """Write the pair's decisions atomically."""
    write_text(run_dir / DECISIONS_NAME, json.dumps(asdict(decisions), indent=1))


def pair_settings(settings: Settings, run_dir: Path) -> Settings:
    """The settings this pair runs with: the run's, with the pair's own decisions applied."""
    return apply_decisions(settings, read_decisions(run_dir))


def apply_decisions(settings: Settings, decisions: PairDecisions) -> Settings:
    """The settings with these decisions applied (pure).

    A decision only fills in what the user left to the pair: "no ESD" applies under `ESD=auto`.
    `ESD=true` is the user asking for ESD, so a pair that decided otherwise shows up as a change
    of settings (refused once its steps used the other value), never silently overridden.
    """
    if decisions.esd_disabled and settings.esd == "auto":
        return settings.with_changes(esd="false")
    return settings
