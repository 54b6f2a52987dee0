"""Fixtures shared by the DEM tests: a synthetic source raster and the loopback OpenTopography.

Import `source_fixture` and `server_fixture`; tests ask for `source` and `server`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
