"""Fixtures shared by the DEM tests: a synthetic source raster and the loopback OpenTopography.

Import `source_fixture` and `server_fixture`; tests ask for `source` and `server`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from opentopo_server import OpenTopoEmulator, synthetic_source

KEY = "test-opentopo-key-5f3a9c"


@pytest.fixture(scope="module", name="source")
def source_fixture(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("opentopo")
    return synthetic_source(folder / "source.tif", 33.9, 34.1, -118.1, -117.9)


@pytest.fixture(name="server")
def server_fixture(source):
    with OpenTopoEmulator(source, api_key=KEY) as emulator:
        yield emulator


def write_egm2008_stand_in(folder: Path, undulation: np.ndarray) -> Path:
    """A stand-in for PROJ's us_nga_egm08_25.tif (Debian's proj-data lacks it) in `folder`:
    every 10th node of the real Los Angeles pair's per-pixel undulation (dem-stitcher's EGM2008),
    on its 1" grid from 118.05 W, 34.05 N."""
    nodes = undulation[::10, ::10]
    folder.mkdir(parents=True, exist_ok=True)
    step = 10 / 3600
    grid = folder / "us_nga_egm08_25.tif"
    dataset = gdal.GetDriverByName("GTiff").Create(
        str(grid), nodes.shape[1], nodes.shape[0], 1, gdal.GDT_Float32
    )
    dataset.SetGeoTransform((-118.05 - step / 2, step, 0, 34.05 + step / 2, 0, -step))
    dataset.SetProjection("EPSG:4326")
    dataset.GetRasterBand(1).WriteArray(nodes.astype(np.float32))
    dataset = None  # closes the file
    return grid
