"""Acquisition (issue 14): search, download, burst SAFEs and pairs against loopback services."""

from __future__ import annotations

from pathlib import Path

import pytest
from acquire_services import AcquireServices, acquire_products, acquire_services, acquire_tls

from insar_pipeline.acquire import stage
from insar_pipeline.inputs.config import Settings

__all__ = ["acquire_products", "acquire_services", "acquire_tls"]

# Inside the footprints of the recorded track-13 frame 411 scenes (S1B, 2016..2021).
AOI_411 = "54.7,54.9,-121.0,-120.6"


def settings_for(tmp_path: Path, services: AcquireServices, **values: object) -> Settings:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    base: dict[str, object] = {
        "data_dir": data,
        "pairs_file": tmp_path / "pairs.txt",
        "env_file": tmp_path / ".env",
        "aoi": AOI_411,
        "start": "2017-01-01",
        "end": "2017-03-01",
        "relative_orbit": 13,
        **services.settings_values(),
    }
    base.update(values)
    return Settings(**base)


def test_smoke(tmp_path: Path, acquire_services: AcquireServices) -> None:
    settings = settings_for(tmp_path, acquire_services)
    selection = stage.find(settings)
    print(stage.describe(settings))
    stage.download(settings, selection)
    print(sorted(p.name for p in settings.raw_dir.iterdir()))
    print(acquire_services.download.counts())


def test_smoke_burst(tmp_path: Path, acquire_tls, acquire_products, monkeypatch) -> None:
    from acquire_helpers import add_noise_and_calibration, neighbour_bursts, small_bursts
    from insar_pipeline.acquire import http
    monkeypatch.setattr(http, "ACCEPTED_WAIT_S", 0.01)
    from acquire_services import recorded, running_services
    add_noise_and_calibration(acquire_products, monkeypatch)
    records = recorded("burst")
    records = small_bursts(records + neighbour_bursts(records))
    with running_services(acquire_tls, acquire_products, records=records) as services:
        settings = settings_for(tmp_path, services, input_level="burst", aoi="56.9,57.05,-136.2,-135.6", start="2018-01-01", end="2018-02-20", relative_orbit=174)
        selection = stage.find(settings)
        print(stage.describe(settings))
        stage.download(settings, selection)
        print(sorted(p.name for p in settings.raw_dir.iterdir()))
        print(services.download.counts())
