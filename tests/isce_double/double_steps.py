"""The 24 topsApp steps of the double, in ISCE's order (ISCE2_CONTRACT.md section 1)."""

from __future__ import annotations

from double_context import Context, State
from double_coreg import (
    burstifg,
    coarseoffsets,
    coarseresamp,
    esd,
    fineoffsets,
    fineresamp,
    ion,
    overlapifg,
    prepesd,
    rangecoreg,
    subsetoverlaps,
)
from double_merged import filter_, geocode, mergebursts, offsets_step, unwrap, unwrap2stage
from double_radar import compute_baselines, preprocess, startup, topo, verify_dem

__all__ = ["STEP_FUNCTIONS", "Context", "State"]

STEP_FUNCTIONS = {
    "startup": startup,
    "preprocess": preprocess,
    "computeBaselines": compute_baselines,
    "verifyDEM": verify_dem,
    "topo": topo,
    "subsetoverlaps": subsetoverlaps,
    "coarseoffsets": coarseoffsets,
    "coarseresamp": coarseresamp,
    "overlapifg": overlapifg,
    "prepesd": prepesd,
    "esd": esd,
    "rangecoreg": rangecoreg,
    "fineoffsets": fineoffsets,
    "fineresamp": fineresamp,
    "ion": ion,
    "burstifg": burstifg,
    "mergebursts": mergebursts,
    "filter": filter_,
    "unwrap": unwrap,
    "unwrap2stage": unwrap2stage,
    "geocode": geocode,
    "denseoffsets": offsets_step,
    "filteroffsets": offsets_step,
    "geocodeoffsets": offsets_step,
}
