"""The `search`, `download` and `pairs` commands of the CLI (`(settings, args) -> exit code`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from insar_pipeline.acquire import stage
from insar_pipeline.acquire.search import check_search_settings, search_requested
from insar_pipeline.errors import InputError
from insar_pipeline.inputs import network

if TYPE_CHECKING:
    from insar_pipeline.inputs.config import Settings

log = logging.getLogger(__name__)


def network_options(args: argparse.Namespace) -> stage.NetworkOptions:
    return stage.NetworkOptions(
        max_days=getattr(args, "max_days", None) or network.DEFAULT_MAX_DAYS,
        neighbours=getattr(args, "neighbours", None) or network.DEFAULT_NEIGHBOURS,
        max_bperp=getattr(args, "max_bperp", None),
    )


def search_command(settings: Settings, args: argparse.Namespace) -> int:
    """Print what would be downloaded and the network; download and write nothing."""
    _require_search(settings)
    text = stage.describe(settings, network_options(args))
    sys.stdout.write(f"{text}Nothing was downloaded.\n")
    return 0


def download_command(settings: Settings, args: argparse.Namespace) -> int:
    """Fetch what the search finds into data/raw (resumable, verified)."""
    _require_search(settings)
    selection = stage.find(settings)
    if not selection.acquisitions:
        raise InputError("the search found no date that covers AOI; see the warnings above")
    fetched = stage.download(settings, selection)
    log.info(
        "%s: %d dates ready (%d downloaded now)",
        settings.raw_dir,
        len(selection.acquisitions),
        fetched,
    )
    return 0


def pairs_command(settings: Settings, args: argparse.Namespace) -> int:
    """`pairs`: from the search when AOI is set, else from the scenes in data/raw."""
    if not search_requested(settings):
        return network.pairs_command(settings, args)
    options = network_options(args)
    output = Path(getattr(args, "output", None) or settings.pairs_file)
    if output.exists() and not getattr(args, "force", False):
        raise InputError(f"{output} exists; pass --force to overwrite it or --output FILE")
    stage.write_pairs(settings, stage.find(settings), options, output)
    return 0


def _require_search(settings: Settings) -> None:
    if not search_requested(settings):
        raise InputError(
            "set AOI (S,N,W,E or a WKT polygon), START, END and RELATIVE_ORBIT in .env to"
            " search; see README 'Finding and downloading the data'"
        )
    check_search_settings(settings)
