"""Ready-to-run pairs against the topsApp double: data folder, products, orbits, DEM, settings.

    setup = make_pair_setup(tmp_path, n_pairs=12)   # settings.topsapp = a wrapper of the double
    job = setup.prepare(setup.pairs[0], env=double_env(fail_step="topo", fail_times=2))
    result = run_pair(job)                           # prepare = runner.prepare_pair + test timings
    setup.step_log_rows()                            # what the double ran: pair, step, pid, times
    setup.with_settings(ionosphere=True)             # the same data with other settings

Products are tiny fake `.SAFE` folders (manifest placeholder, one empty annotation per swath and
polarization, 0-byte measurements): enough for the double, which checks that the SAFE exists and
has the swath's annotation for the polarization. Scenes are 12 days apart on one track; pair k is
scenes (k, k+1). Each scene gets a POEORB whose validity covers it, unless listed in
`uncovered_scenes` (then its orbit file covers the week before: preprocess finds no orbit).
The DEM is written by the pipeline's own `isce_image` writer, as DEM provisioning writes it.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from conftest import make_data_folder, make_safe_product, scene_name
from insar_pipeline.geo import BBox
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.pairs import Pair
from insar_pipeline.inputs.safe import Product, read_product
from insar_pipeline.isce_image import IsceDemImage, write_sidecars
from insar_pipeline.pair.prepare import prepare_pair
from insar_pipeline.topsapp.job import PairJob
from isce_double.double_faults import read_step_log

DOUBLE = Path(__file__).resolve().parent / "isce_double" / "topsApp.py"

FIRST_SCENE = datetime(2025, 4, 6, 2, 20, 8, tzinfo=timezone.utc)
REPEAT = timedelta(days=12)
# The footprint of the real s1_slc pair (relative orbit 108) and a region of interest inside it.
FOOTPRINT = ((51.0, -130.2), (51.0, -125.9), (53.1, -125.9), (53.1, -130.2))
REGION_OF_INTEREST = BBox(51.5, 52.5, -129.5, -127.0)
DEM_BOX = BBox(50.9, 53.2, -130.3, -125.8)


@dataclass(frozen=True)
class PairSetup:
    data_dir: Path
    settings: Settings
    pairs: tuple[Pair, ...]
    orbit_files: dict[str, Path]  # product name -> orbit file
    dem: Path  # the ISCE DEM raster; its .xml and .vrt are beside it
    topsapp: Path  # the wrapper script that TOPSAPP points at
    step_log: Path  # where the wrapper makes the double log every step

    def prepare(self, pair: Pair | int = 0, omp_threads: int = 1, **job_changes: Any) -> PairJob:
        """runner.prepare_pair with test timings (backoff 0.01 s, SIGTERM grace 2 s)."""
        pair = self.pairs[pair] if isinstance(pair, int) else pair
        job = prepare_pair(self.settings, pair, self.orbit_files, self.dem, omp_threads)
        return dataclasses.replace(
            job, **{"retry_backoff_s": 0.01, "term_grace_s": 2.0, **job_changes}
        )

    def with_settings(self, **changes: Any) -> PairSetup:
        return dataclasses.replace(self, settings=self.settings.with_changes(**changes))

    def step_log_rows(self) -> list[dict[str, str]]:
        return read_step_log(self.step_log)


def make_pair_setup(
    tmp_path: Path,
    n_pairs: int = 1,
    *,
    swaths: tuple[int, ...] = (1, 2, 3),
    region_of_interest: BBox | None = REGION_OF_INTEREST,
    uncovered_scenes: Iterable[int] = (),
    scale: float = 0.005,
    bursts: int = 2,
    real_metadata: bool = False,
    **settings_changes: Any,
) -> PairSetup:
    """A data folder under tmp_path with n_pairs pairs ready for runner.prepare_pair.

    `scale` and `bursts` are the double's defaults baked into the wrapper script (the process
    environment still overrides them); settings_changes go to Settings (e.g. max_retries=0).
    With real_metadata, products are built from ../shared/realdata by conftest.make_safe_product
    (skipping the test when it is absent) and read back with safe.read_product, so the whole
    pipeline (pairs.txt, `run`) accepts them too; otherwise they are tiny fakes.
    """
    data_dir = make_data_folder(tmp_path)
    uncovered = set(uncovered_scenes)
    products = []
    orbit_files = {}
    for index in range(n_pairs + 1):
        start = FIRST_SCENE + index * REPEAT
        if real_metadata:
            safe = make_safe_product(
                data_dir / "raw", start=start, swaths=swaths, polarizations=("vv", "vh")
            )
            product = read_product(safe)
        else:
            product = make_fake_product(data_dir / "raw", start, index, swaths)
        products.append(product)
        orbit_files[product.name] = make_orbit_file(
            data_dir / "orbit_data", product, covering=index not in uncovered
        )
    pairs = tuple(
        Pair(f"{a.start:%Y%m%d}_{b.start:%Y%m%d}", a, b, tuple(swaths), line=index + 1)
        for index, (a, b) in enumerate(zip(products, products[1:], strict=False))
    )
    step_log = tmp_path / "double_steps.log"
    topsapp = write_wrapper(tmp_path / "bin" / "topsApp.py", scale, bursts, step_log)
    settings = Settings(
        data_dir=data_dir,
        topsapp=str(topsapp),
        swaths=swaths,
        region_of_interest=region_of_interest,
        roi=DEM_BOX,
        **settings_changes,
    )
    dem = make_dem(data_dir / "dem", DEM_BOX)
    return PairSetup(data_dir, settings, pairs, orbit_files, dem, topsapp, step_log)


def make_fake_product(raw_dir: Path, start: datetime, index: int, swaths: Iterable[int]) -> Product:
    """A tiny .SAFE folder the double accepts, and its Product."""
    absolute_orbit = 58630 + 175 * index
    name = scene_name(
        start,
        absolute_orbit=absolute_orbit,
        datatake=f"{0x07421F + index:06X}",
        uid=f"{0xA000 + index:04X}",
    )
    safe = raw_dir / f"{name}.SAFE"
    (safe / "annotation").mkdir(parents=True)
    (safe / "measurement").mkdir()
    (safe / "manifest.safe").write_text("<xfdu:XFDU/>\n")
    stamp = f"{start:%Y%m%dt%H%M%S}-{start + timedelta(seconds=27):%Y%m%dt%H%M%S}"
    for swath in swaths:
        for pol in ("vv", "vh"):
            base = f"s1a-iw{swath}-slc-{pol}-{stamp}-{absolute_orbit:06d}-07421f-00{swath + 3}"
            (safe / "annotation" / f"{base}.xml").write_text("<product/>\n")
            (safe / "measurement" / f"{base}.tiff").touch()
    return Product(
        path=safe,
        name=name,
        mission="S1A",
        mode="IW",
        product_type="SLC",
        polarizations=("vv", "vh"),
        relative_orbit=108,
        absolute_orbit=absolute_orbit,
        start=start,
        stop=start + timedelta(seconds=27),
        footprint=FOOTPRINT,
        swaths=tuple(swaths),
    )


def make_orbit_file(orbit_dir: Path, product: Product, covering: bool = True) -> Path:
    """A POEORB named like ESA's; its validity covers the scene (or the week before)."""
    day = product.start.replace(hour=0, minute=0, second=0, microsecond=0)
    if not covering:
        day -= timedelta(days=7)
    valid_from, valid_to = (
        day - timedelta(minutes=60, seconds=18),
        day + timedelta(days=1, minutes=59, seconds=42),
    )
    name = (
        f"S1A_OPER_AUX_POEORB_OPOD_{day + timedelta(days=20):%Y%m%dT080000}_"
        f"V{valid_from:%Y%m%dT%H%M%S}_{valid_to:%Y%m%dT%H%M%S}.EOF"
    )
    path = orbit_dir / name
    path.write_text(
        '<?xml version="1.0"?>\n<Earth_Explorer_File><Earth_Explorer_Header>'
        f"<Fixed_Header><File_Name>{path.stem}</File_Name></Fixed_Header>"
        "</Earth_Explorer_Header><Data_Block/></Earth_Explorer_File>\n"
    )
    return path


def make_dem(dem_dir: Path, box: BBox, posting: float = 0.05) -> Path:
    """A small WGS84 Float32 DEM in ISCE format covering box."""
    width = round((box.east - box.west) / posting)
    length = round((box.north - box.south) / posting)
    raster = dem_dir / "demLat_N50_N54_Lon_W131_W125_COP30.dem.wgs84"
    rows, cols = np.mgrid[0:length, 0:width]
    (500 + 300 * np.sin(cols / 7.0) * np.cos(rows / 5.0)).astype("<f4").tofile(raster)
    image = IsceDemImage(
        width=width,
        length=length,
        first_longitude=box.west + posting / 2,
        first_latitude=box.north - posting / 2,
        delta_longitude=posting,
        delta_latitude=-posting,
    )
    write_sidecars(raster, image)
    return raster


def write_wrapper(path: Path, scale: float, bursts: int, step_log: Path) -> Path:
    """`#!/bin/sh` that runs the double with this venv's python and test-sized defaults."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/bin/sh\n"
        f': "${{ISCE_DOUBLE_SCALE:={scale}}}" "${{ISCE_DOUBLE_BURSTS:={bursts}}}"\n'
        f': "${{ISCE_DOUBLE_LOG:={step_log}}}"\n'
        "export ISCE_DOUBLE_SCALE ISCE_DOUBLE_BURSTS ISCE_DOUBLE_LOG\n"
        f'exec {shlex.quote(sys.executable)} {shlex.quote(str(DOUBLE))} "$@"\n'
    )
    path.chmod(0o755)
    return path


def double_env(**values: Any) -> tuple[tuple[str, str], ...]:
    """PairJob.env for the double: double_env(fail_step="topo", fail_times=2) ->
    (("ISCE_DOUBLE_FAIL_STEP", "topo"), ("ISCE_DOUBLE_FAIL_TIMES", "2"))."""
    return tuple((f"ISCE_DOUBLE_{key.upper()}", str(value)) for key, value in values.items())
