"""Every settings key reaches the place that uses it (issue 12).

`REACH` has one entry per key of `inputs.config.ENV_KEYS` (a test checks that, so a new key
without an entry fails): the value to change it to, and where the change must show:

- "xml": the pair's topsApp.xml (parsed back);
- "job": the pair job that `prepare_pair` returns and the run's parallelism behind it;
- "plan": the text `plan` prints (same validate and preflight as `run`);
- "request": the download requests: the DEM tile requests, and what a loopback server received
  from the orbit clients (ASF, AWS, CDSE search and login);
- "cluster": the Dask cluster plan and the arguments of its dask-jobqueue cluster;
- "search": the asf_search query of `search`, `download` and `run` with an AOI;
- "mintpy": the smallbaselineApp.cfg the time series writes.

Keys whose effect another test asserts against the real (loopback) service are `Elsewhere`
entries naming that test, which must exist.
"""

from __future__ import annotations

import ast
import dataclasses
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dask_jobqueue
import pytest

from batch_factory import FIRST_DATE, FOOTPRINT, REPEAT
from conftest import make_data_folder, make_safe_product
from insar_pipeline._http import HttpClient
from insar_pipeline.acquire.search import search_options
from insar_pipeline.dem import copernicus
from insar_pipeline.dem.fetch import tile_url
from insar_pipeline.dem.provision import geocode_dem_path, plan_dems
from insar_pipeline.errors import PipelineError
from insar_pipeline.inputs.config import ENV_KEYS, Settings
from insar_pipeline.inputs.pairs import load_pairs
from insar_pipeline.orbits.cdse import CdseSource
from insar_pipeline.orbits.provision import describe_orbit_plan
from insar_pipeline.orbits.sources import AsfSource, AwsSource
from insar_pipeline.pair.prepare import pair_xml, prepare_pair
from insar_pipeline.run.budget import plan_parallelism
from insar_pipeline.run.dask.cluster import jobqueue_cluster, plan_cluster
from insar_pipeline.run.plan import build_plan, render_plan
from insar_pipeline.run.preflight import machine_of, preflight, validate
from insar_pipeline.timeseries.mintpy_app import config_text
from insar_pipeline.topsapp.xml import normalize, read_properties

DOUBLE = Path(__file__).resolve().parent / "isce_double" / "topsApp.py"
BOX = "51.55,51.65,-126.9,-126.7"  # inside the batch's footprint


@dataclasses.dataclass(frozen=True)
class Reach:
    where: str  # xml | job | plan | request | cluster | search | mintpy
    value: Any  # what the key is changed to
    base: tuple[tuple[str, Any], ...] = ()  # fields set on both sides (e.g. EXECUTOR=dask)
    why: str = ""


@dataclasses.dataclass(frozen=True)
class Elsewhere:
    """A key whose effect another test asserts against the real service (`test` names it,
    checked to exist), or none can (`test` empty, `why` says why)."""

    test: str
    why: str


# A search the search keys change (issue 14): the settings a search needs.
SEARCH = (("aoi", "51.55,51.65,-126.9,-126.7"), ("start", "2025-01-01"), ("relative_orbit", 108))


DASK = (("executor", "dask"), ("dask_scheduler", "slurm"))
REACH: dict[str, Reach | Elsewhere] = {
    "OPENTOPO_API_KEY": Reach("request", "another-key", why="the key of each DEM tile request"),
    "ROI": Reach("request", "51.4,51.8,-127.1,-126.5", why="the DEM box of the tile requests"),
    "REGION_OF_INTEREST": Reach("xml", BOX),
    "WORKERS": Reach("job", 2, why="pairs at once, hence each child's OpenMP threads"),
    "MEMORY_PER_WORKER_GB": Reach("job", 32.0, why="auto WORKERS = RAM / this"),
    "MEMORY_TOTAL_GB": Reach("job", 32.0, why="auto WORKERS and the memory budget"),
    "MEMORY_RESERVE_GB": Reach("job", 4.0, why="the memory budget (RAM - reserve)"),
    "CORES": Reach("job", 4, why="each child's OpenMP threads"),
    "DEM_TYPE": Reach("xml", "SRTMGL1_E", why="the DEM file, hence demFilename"),
    "DEM_BUFFER_DEG": Reach("request", 0.3, why="the DEM box of the tile requests"),
    "GEOCODE_DEM_ARCSEC": Reach("xml", 3, why="geocode demfilename names the coarse DEM"),
    "SWATHS": Reach("xml", "1,2"),
    "POLARIZATION": Reach("xml", "vh"),
    "RANGE_LOOKS": Reach("xml", 9),
    "AZIMUTH_LOOKS": Reach("xml", 3),
    "FILTER_STRENGTH": Reach("xml", 0.8),
    "UNWRAP": Reach("xml", False),
    "UNWRAPPER": Reach("xml", "icu"),
    "IONOSPHERE": Reach("xml", True),
    "GEOCODE_BBOX": Reach("xml", BOX),
    "MAX_RETRIES": Reach("job", 5),
    "RETRY_BACKOFF_S": Reach("job", 30.0),
    "PHASE_TIMEOUT_MIN": Reach("job", 90.0),
    "CLEAN": Reach("job", "nuclear", why="the cleaning level applied after success"),
    "ORBIT_SOURCES": Reach("plan", "aws,asf", why="the orbit service tried first"),
    "CDSE_USERNAME": Reach("request", "other@example.org", why="the CDSE login form"),
    "CDSE_PASSWORD": Reach("request", "another-secret", why="the CDSE login form (secret)"),
    "TOPSAPP": Reach("job", f"{sys.executable} {DOUBLE}", why="the command each phase runs"),
    "EXECUTOR": Reach("plan", "dask"),
    "DASK_SCHEDULER": Reach("cluster", "pbs", base=DASK),
    "DASK_CORES": Reach("cluster", 4, base=DASK),
    "DASK_MEMORY_GB": Reach("cluster", 32.0, base=DASK),
    "DASK_WALLTIME": Reach("cluster", "02:00:00", base=DASK, why="the job's walltime (-t)"),
    "DASK_QUEUE": Reach("cluster", "long", base=DASK, why="the job's queue (-p)"),
    "DASK_ACCOUNT": Reach("cluster", "insar-lab", base=DASK, why="the job's account (-A)"),
    "DASK_JOBS": Reach("cluster", 3, base=DASK),
    "GEOMETRY_REUSE": Reach("plan", False, why="the plan's geometry line"),
    "OPENTOPO_URL": Reach("request", "/ot2", why="each DEM tile request"),
    "ASF_ORBIT_URL": Reach("request", "/asf2"),
    "AWS_ORBIT_URL": Reach("request", "/aws2"),
    "CDSE_URL": Reach("request", "/cdse2", why="the CDSE orbit search"),
    "CDSE_TOKEN_URL": Reach("request", "/token2", why="the CDSE login"),
    "CDSE_DOWNLOAD_URL": Reach(
        "request",
        "/zipper2",
        why="the download of an orbit the CDSE search found: a search must answer first, "
        "which tests/test_orbits.py does against the loopback CDSE server (orbit_server.py)",
    ),
    "DEM_SOURCE": Reach("plan", "copernicus", why="where plan says the DEM comes from"),
    "COPERNICUS_DEM_URL": Reach(
        "request", "/cop2", base=(("dem_source", "copernicus"),), why="each bucket tile read"
    ),
    "ESD": Reach(
        "xml",
        "false",
        why="`do ESD` (auto and true both write True: auto differs in the job's no_esd_xml, "
        "tests/test_esd.py)",
    ),
    "ESD_COHERENCE_THRESHOLD": Reach("xml", 0.7, why="`ESD coherence threshold`"),
    "AOI": Reach("search", "51.5,51.7,-127.0,-126.6", SEARCH, "the searched area"),
    "START": Reach("search", "2025-02-01", SEARCH, "the searched time span"),
    "END": Reach("search", "2025-06-30", SEARCH, "the searched time span"),
    "RELATIVE_ORBIT": Reach("search", 35, SEARCH, "the searched track"),
    "FLIGHT_DIRECTION": Reach("search", "ASCENDING", SEARCH, "the searched direction"),
    "FRAME": Reach("search", 163, SEARCH, "the searched frame"),
    "PLATFORMS": Reach("search", "S1A", SEARCH, "the searched platforms"),
    "INPUT_LEVEL": Reach("search", "burst", SEARCH, "scenes or bursts are searched"),
    "EARTHDATA_TOKEN": Elsewhere(
        "test_acquire.py::test_a_wrong_token_is_exit_2_before_any_download",
        "the token the loopback Earthdata login checks before any download (secret)",
    ),
    "EARTHDATA_USERNAME": Elsewhere(
        "test_acquire.py::test_username_password_and_netrc_logins_never_write_the_netrc",
        "the login the loopback Earthdata service receives",
    ),
    "EARTHDATA_PASSWORD": Elsewhere(
        "test_acquire.py::test_username_password_and_netrc_logins_never_write_the_netrc",
        "the login the loopback Earthdata service receives (secret)",
    ),
    "CMR_HOST": Elsewhere(
        "test_acquire.py::test_search_command_in_a_child_process_reaches_the_cmr_host_setting",
        "the host the search goes to, seen by the loopback CMR",
    ),
    "EDL_HOST": Elsewhere(
        "test_acquire.py::test_a_wrong_token_is_exit_2_before_any_download",
        "the Earthdata login host, set to the loopback one there",
    ),
    "DOWNLOAD_WORKERS": Elsewhere(
        "", "the bound of download's thread pool (acquire/fetch.py): timing, not an output"
    ),
    "TIMESERIES": Elsewhere(
        "test_timeseries_run.py::test_run_with_timeseries_writes_the_stack_and_mintpys_velocity",
        "the stage after the pairs: `run` writes the MintPy stack and velocity",
    ),
    "REFERENCE_LALO": Reach("mintpy", "51.6,-126.8", why="mintpy.reference.lalo in the cfg"),
}


def test_every_settings_key_has_an_entry():
    assert sorted(REACH) == sorted(ENV_KEYS), (
        "add the new key to REACH with where it must show (or why it shows elsewhere)"
    )


# ---- the loopback server the orbit clients talk to ---------------------------------------------


class Recorder(BaseHTTPRequestHandler):
    received: list[tuple[str, str, str]]

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._answer()

    def do_POST(self) -> None:  # noqa: N802
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        self.server.received.append((self.command, self.path, body))  # type: ignore[attr-defined]
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def loopback() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@dataclasses.dataclass(frozen=True)
class Batch:
    root: Path
    data: Path
    pairs_file: Path


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Batch:
    """One dual-polarization pair (VV and VH, so POLARIZATION may change) in a small footprint."""
    root = tmp_path_factory.mktemp("reach")
    data = make_data_folder(root)
    names = [
        make_safe_product(
            data / "raw", start=start, footprint=FOOTPRINT, polarizations=("vv", "vh")
        ).name
        for start in (FIRST_DATE, FIRST_DATE + REPEAT)
    ]
    pairs_file = root / "pairs.txt"
    pairs_file.write_text(f"{names[0]} {names[1]}\n")
    return Batch(root, data, pairs_file)


def base_settings(batch: Any, loopback: Any) -> Settings:
    url = f"http://127.0.0.1:{loopback.server_address[1]}"
    return Settings(
        data_dir=batch.data,
        pairs_file=batch.pairs_file,
        env_file=batch.root / ".env",
        cores=8,
        memory_total_gb=64.0,
        opentopo_api_key="a-key",
        cdse_username="someone@example.org",
        cdse_password="a-secret",
        opentopo_url=f"{url}/ot",
        asf_orbit_url=f"{url}/asf",
        aws_orbit_url=f"{url}/aws",
        cdse_url=f"{url}/cdse",
        cdse_token_url=f"{url}/token",
        cdse_download_url=f"{url}/zipper",
    )


def changed(settings: Settings, key: str, value: Any, loopback: Any) -> Settings:
    if isinstance(value, str) and value.startswith("/"):  # a path on the loopback server
        value = f"http://127.0.0.1:{loopback.server_address[1]}{value}"
    return settings.with_changes(**{ENV_KEYS[key]: value})


# ---- what each place shows ----------------------------------------------------------------------


def dem_of(settings: Settings) -> Path:
    pair = load_pairs(settings)[0]
    return next(plan.path for plan in plan_dems(settings, [pair]) if pair.id in plan.pair_ids)


def seen_in_xml(settings: Settings, loopback: Any) -> Any:
    """The topsApp.xml `prepare_pair` writes for the pair, with the DEM that DEM planning names
    (what provisioning then provides), parsed back."""
    pair = load_pairs(settings)[0]
    run_dir = settings.run_dir(pair.id).resolve()
    return read_properties(pair_xml(settings, pair, run_dir, dem_of(settings)))


def prepared(settings: Settings, pair: Any, omp_threads: int) -> Any:
    """The real `prepare_pair`, with orbit files and a DEM sidecar beside the data folder."""
    inputs = settings.data_dir.parent / "inputs"
    inputs.mkdir(exist_ok=True)
    orbits = {}
    for product in pair.products:
        orbits[product.name] = inputs / f"{product.name}.EOF"
        orbits[product.name].touch()
    dem = inputs / "dem.wgs84"
    (inputs / "dem.wgs84.xml").touch()
    return prepare_pair(settings, pair, orbits, dem, omp_threads)


def seen_in_job(settings: Settings, loopback: Any) -> Any:
    pair = load_pairs(settings)[0]
    parallelism = plan_parallelism(
        machine_of(settings),
        settings.workers,
        settings.memory_per_worker_gb,
        settings.memory_reserve_gb,
    )
    job = prepared(settings, pair, parallelism.omp_threads)
    return dataclasses.replace(job, phases=tuple(job.phases)), parallelism


def seen_in_plan(settings: Settings, loopback: Any) -> str:
    checked = preflight(settings, validate(settings))
    products = [product for pair in checked.pairs for product in pair.products]
    plan = build_plan(
        settings,
        list(checked.pairs),
        checked.left,
        orbits=describe_orbit_plan(settings, products),
        dems=checked.dems,
        excluded=checked.excluded,
        warnings=checked.warnings,
    )
    return render_plan(plan)


def seen_in_requests(settings: Settings, loopback: Any) -> Any:
    pair = load_pairs(settings)[0]
    key = settings.opentopo_api_key.get_secret_value() if settings.opentopo_api_key else ""
    tiles = [
        tile_url(settings.opentopo_url, settings.dem_type, tile, key)
        if plan.source == "opentopography"
        else copernicus.BucketTile(round(tile.south), round(tile.west), 0).url(
            settings.copernicus_dem_url
        )
        for plan in plan_dems(settings, [pair])
        for tile in plan.tiles
    ]
    loopback.received.clear()
    http = HttpClient()
    try:
        now = datetime(2025, 6, 1, tzinfo=timezone.utc)
        cdse = CdseSource(settings, http)
        attempts: list[Callable[[], Any]] = [
            lambda: AsfSource(settings, http).find(pair.reference),
            lambda: AwsSource(settings, http, now).find(pair.reference),
            lambda: cdse.find(pair.reference),
            lambda: cdse._access_token(),  # the login, which a download needs first
        ]
        for attempt in attempts:
            try:
                attempt()
            except PipelineError:
                pass  # the loopback server answers 404: only the requests matter here
    finally:
        http.close()
    return tiles, sorted(loopback.received)


def seen_in_cluster(settings: Settings, loopback: Any) -> Any:
    """The cluster plan and the arguments the dask-jobqueue cluster class gets (recorded by a
    stand-in class: no scheduler is started)."""
    plan = plan_cluster(settings, 2, 62.0)
    recorded: dict[str, Any] = {}

    def cluster_class(**kwargs: Any) -> None:
        recorded.update(kwargs)

    kinds = ("SLURMCluster", "PBSCluster", "SGECluster")
    saved = {kind: getattr(dask_jobqueue, kind) for kind in kinds}
    try:
        for kind in kinds:
            setattr(dask_jobqueue, kind, cluster_class)
        jobqueue_cluster(settings, plan)
    finally:
        for kind, cls in saved.items():
            setattr(dask_jobqueue, kind, cls)
    return plan, sorted((name, repr(value)) for name, value in recorded.items())


def seen_in_search(settings: Settings, loopback: Any) -> Any:
    """The asf_search query `search`/`download`/`run` make (acquire/search.py)."""
    return search_options(settings)


def seen_in_mintpy(settings: Settings, loopback: Any) -> Any:
    """The smallbaselineApp.cfg `timeseries` writes (timeseries/mintpy_app.py)."""
    return config_text((), settings.reference_lalo)


SEEN: dict[str, Callable[[Settings, Any], Any]] = {
    "search": seen_in_search,
    "mintpy": seen_in_mintpy,
    "xml": seen_in_xml,
    "job": seen_in_job,
    "plan": seen_in_plan,
    "request": seen_in_requests,
    "cluster": seen_in_cluster,
}


@pytest.mark.parametrize("key", sorted(REACH))
def test_changing_a_key_changes_what_uses_it(key, batch, loopback):
    entry = REACH[key]
    if isinstance(entry, Elsewhere):
        if not entry.test:
            pytest.skip(entry.why)
        module, name = entry.test.split("::")
        tree = ast.parse((Path(__file__).parent / module).read_text())
        defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert name in defined, f"{key}: {entry.test} is gone; say where {key} is checked now"
        return
    if key == "CDSE_DOWNLOAD_URL":
        pytest.skip(entry.why)
    settings = base_settings(batch, loopback).with_changes(**dict(entry.base))
    other = changed(settings, key, entry.value, loopback)
    assert getattr(other, ENV_KEYS[key]) != getattr(settings, ENV_KEYS[key])
    seen = SEEN[entry.where]
    assert seen(other, loopback) != seen(settings, loopback), f"{key} does not reach {entry.where}"


def test_geocode_dem_arcsec_names_the_coarse_dem_for_geocoding(batch, loopback):
    settings = base_settings(batch, loopback).with_changes(geocode_dem_arcsec=3)
    properties = seen_in_xml(settings, loopback)
    run_dir = settings.run_dir(load_pairs(settings)[0].id)
    dem = dem_of(settings)
    coarse = (run_dir / properties[normalize("geocode demfilename")]).resolve()
    assert coarse == geocode_dem_path(settings, dem).resolve()
    assert coarse.name.endswith(".3arcsec.dem.wgs84") and coarse != dem.resolve()
    assert (run_dir / properties[normalize("demFilename")]).resolve() == dem.resolve()
    plain = seen_in_xml(settings.with_changes(geocode_dem_arcsec=None), loopback)
    assert plain[normalize("geocode demfilename")] == plain[normalize("demFilename")]
