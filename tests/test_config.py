"""Settings: .env < environment < command line, every bad value, secrets, .env.example."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from conftest import REPO
from insar_pipeline.errors import InputError
from insar_pipeline.geo import BBox
from insar_pipeline.inputs.config import ENV_KEYS, FOREIGN_KEYS, Settings, load_settings

SECRET = "s3cr3t-Key-0123456789"


def write_env(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "test.env"
    path.write_text(text)
    return path


def test_env_file_then_environment_then_command_line(tmp_path: Path) -> None:
    env = write_env(tmp_path, "WORKERS = 2  # as in the seed\nRANGE_LOOKS=5\nCLEAN=none\n")
    file_only = load_settings({"env_file": env}, {})
    assert (file_only.workers, file_only.range_looks, file_only.clean) == (2, 5, "none")
    environ = {"WORKERS": "3", "CLEAN": "nuclear"}
    both = load_settings({"env_file": env}, environ)
    assert (both.workers, both.range_looks, both.clean) == (3, 5, "nuclear")
    assert load_settings({"env_file": env, "workers": "4"}, environ).workers == 4
    assert load_settings({"env_file": env, "workers": None}, environ).workers == 3  # not given
    assert load_settings({"env_file": write_env(tmp_path, "")}, {}).workers is None  # auto


def test_seed_style_values_parse(tmp_path: Path) -> None:
    env = write_env(
        tmp_path,
        "ROI = 51.0, 53.1, -130.2, -125.9  # DEM box\n"
        "SWATHS = 3,1  # comment\n"
        'TOPSAPP = "/opt/isce/topsApp.py"\n'
        "export POLARIZATION=VH\n"
        "ORBIT_SOURCES = aws cdse\n"
        "WORKERS = auto\n"
        "UNWRAP = False\n",
    )
    settings = load_settings({"env_file": env}, {})
    assert settings.roi == BBox(51.0, 53.1, -130.2, -125.9)
    assert settings.swaths == (1, 3) and settings.polarization == "vh"
    assert settings.topsapp == "/opt/isce/topsApp.py" and settings.orbit_sources == ("aws", "cdse")
    assert settings.workers is None and settings.unwrap is False


def test_empty_value_means_default_even_over_the_file(tmp_path: Path) -> None:
    env = write_env(tmp_path, "TOPSAPP=\nROI=1,2,3,4\nDEM_TYPE=cop90\n")
    settings = load_settings({"env_file": env}, {"ROI": ""})
    assert (
        settings.topsapp == "topsApp.py" and settings.roi is None and settings.dem_type == "COP90"
    )


BAD_VALUES = [
    ("ROI", "1,2,3", "expected four numbers S,N,W,E, got '1,2,3'"),
    ("REGION_OF_INTEREST", "5,1,2,3", "south must be below north, both within ±90 (got 5.0, 1.0)"),
    ("GEOCODE_BBOX", "a,b,c,d", "expected four numbers S,N,W,E, got 'a,b,c,d'"),
    ("WORKERS", "zero", "must be a whole number or auto"),
    ("WORKERS", "0", "Input should be greater than or equal to 1"),
    ("MEMORY_PER_WORKER_GB", "-1", "Input should be greater than 0"),
    ("MEMORY_TOTAL_GB", "lots", "must be a number or auto"),
    ("MEMORY_RESERVE_GB", "-2", "Input should be greater than or equal to 0"),
    ("CORES", "0", "Input should be greater than or equal to 1"),
    ("DEM_TYPE", "SRTM", "Input should be 'COP30', 'COP90', 'NASADEM', 'SRTMGL1', 'SRTMGL3', "
     "'AW3D30', 'SRTMGL1_E', 'SRTMGL3_E' or 'AW3D30_E'"),
    ("DEM_TYPE", "EU_DTM", "Input should be 'COP30', 'COP90', 'NASADEM', 'SRTMGL1', 'SRTMGL3', "
     "'AW3D30', 'SRTMGL1_E', 'SRTMGL3_E' or 'AW3D30_E'"),
    ("DEM_BUFFER_DEG", "9", "Input should be less than or equal to 5"),
    ("GEOCODE_DEM_ARCSEC", "0", "Input should be greater than or equal to 1"),
    ("SWATHS", "1,4", "must list IW swaths among 1, 2, 3 (e.g. 1,2,3)"),
    ("SWATHS", "one", "must be a whole number"),
    ("POLARIZATION", "xx", "Input should be 'vv', 'vh', 'hh' or 'hv'"),
    ("RANGE_LOOKS", "0", "Input should be greater than or equal to 1"),
    ("AZIMUTH_LOOKS", "1.5", "must be a whole number"),
    ("FILTER_STRENGTH", "2", "Input should be less than or equal to 1"),
    ("UNWRAP", "maybe", "must be true or false"),
    ("UNWRAPPER", "foo", "Input should be 'snaphu_mcf', 'snaphu', 'downsample_snaphu', 'icu' "
     "or 'grass'"),
    ("IONOSPHERE", "2", "must be true or false"),
    ("MAX_RETRIES", "-1", "Input should be greater than or equal to 0"),
    ("MAX_RETRIES", "21", "Input should be less than or equal to 20"),
    ("RETRY_BACKOFF_S", "-1", "Input should be greater than or equal to 0"),
    ("RETRY_BACKOFF_S", "3601", "Input should be less than or equal to 3600"),
    ("PHASE_TIMEOUT_MIN", "0", "Input should be greater than 0"),
    ("CLEAN", "all", "Input should be 'none', 'standard' or 'nuclear'"),
    ("ORBIT_SOURCES", "asf,ftp", "Input should be 'asf', 'aws' or 'cdse'"),
    ("EXECUTOR", "slurm", "Input should be 'local' or 'dask'"),
    ("DASK_CORES", "0", "Input should be greater than or equal to 1"),
    ("DASK_MEMORY_GB", "0", "Input should be greater than 0"),
    ("DASK_JOBS", "0", "Input should be greater than or equal to 1"),
    ("GEOMETRY_REUSE", "perhaps", "must be true or false"),
    ("ESD", "sometimes", "Input should be 'auto', 'true' or 'false'"),
    ("ESD_COHERENCE_THRESHOLD", "1.5", "Input should be less than or equal to 1"),
    ("DEM_SOURCE", "srtm", "Input should be 'auto', 'opentopography' or 'copernicus'"),
    ("RELATIVE_ORBIT", "176", "Input should be less than or equal to 175"),
    ("FRAME", "-1", "Input should be greater than or equal to 0"),
    ("INPUT_LEVEL", "slc", "Input should be 'scene' or 'burst'"),
    ("TIMESERIES", "maybe", "must be true or false"),
    ("AOI", "1,2,3", "expected four numbers S,N,W,E, got '1,2,3'"),
    ("AOI", "LINESTRING (0 0, 1 1)", "must be S,N,W,E or a WKT POLYGON, not a LineString"),
    ("AOI", "POLYGON ((0 0, 1 0))", "must be S,N,W,E or a WKT POLYGON in lon/lat degrees"),
    ("AOI", "POLYGON ((0 0, 1 1, 1 0, 0 1, 0 0))",
     "is not a valid polygon (its edges cross); check the vertex order"),
    ("AOI", "POLYGON ((54 200, 55 200, 55 201, 54 200))",
     "must be in lon/lat degrees (WKT gives lon first, within ±180/±90)"),
    ("START", "2020-13-01", "must be a date YYYY-MM-DD"),
    ("END", "yesterday", "must be a date YYYY-MM-DD"),
    ("FLIGHT_DIRECTION", "north", "must be ASCENDING or DESCENDING"),
    ("PLATFORMS", "S1A,S2A", "must list platforms among S1A, S1B, S1C, S1D"),
    ("DOWNLOAD_WORKERS", "0", "Input should be greater than or equal to 1"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "value", "message"), BAD_VALUES)
def test_bad_value_names_key_and_what_it_accepts(key: str, value: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        load_settings({"env_file": REPO / ".env.example"}, {key: value})
    assert str(caught.value) == f"environment: {key}={value!r} is invalid: {message}"


def test_bad_values_from_file_and_command_line_all_at_once(tmp_path: Path) -> None:
    env = write_env(tmp_path, "CLEAN = all  # typo\nRANGE_LOOKS = -3\n")
    with pytest.raises(InputError) as caught:
        load_settings({"env_file": env, "workers": "many"}, {})
    assert sorted(str(caught.value).splitlines()) == [
        f"{env}: CLEAN='all' is invalid: Input should be 'none', 'standard' or 'nuclear'",
        f"{env}: RANGE_LOOKS='-3' is invalid: Input should be greater than or equal to 1",
        "command line: --workers='many' is invalid: must be a whole number or auto",
    ]


def test_every_env_key_has_a_bad_value_case_or_accepts_any_text() -> None:
    free_text = {
        "OPENTOPO_API_KEY", "CDSE_USERNAME", "CDSE_PASSWORD", "TOPSAPP", "DASK_SCHEDULER",
        "DASK_WALLTIME", "DASK_QUEUE", "DASK_ACCOUNT", "OPENTOPO_URL", "ASF_ORBIT_URL",
        "AWS_ORBIT_URL", "CDSE_URL", "CDSE_TOKEN_URL", "CDSE_DOWNLOAD_URL", "COPERNICUS_DEM_URL",
        "CMR_HOST", "EDL_HOST", "EARTHDATA_TOKEN", "EARTHDATA_USERNAME", "EARTHDATA_PASSWORD",
        # validated where used (timeseries); give them BAD_VALUES cases once validated here
        "REFERENCE_LALO",
    }  # fmt: skip
    assert set(ENV_KEYS) - free_text == {key for key, _, _ in BAD_VALUES}


def test_secrets_stay_out_of_repr_and_errors(tmp_path: Path) -> None:
    env = write_env(tmp_path, f"OPENTOPO_API_KEY = {SECRET}\nCDSE_PASSWORD='{SECRET}'\n")
    settings = load_settings({"env_file": env}, {})
    assert settings.opentopo_api_key.get_secret_value() == SECRET
    assert settings.cdse_password.get_secret_value() == SECRET
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert SECRET not in text
    with pytest.raises(InputError) as caught:
        load_settings({"env_file": env}, {"CLEAN": "x"})
    assert SECRET not in str(caught.value)


def test_unparsable_env_line_is_an_error_that_does_not_echo_it(tmp_path: Path) -> None:
    env = write_env(tmp_path, f'WORKERS = 2\nOPENTOPO_API_KEY {SECRET}\n\n\nROI="1,2,3,4\n')
    with pytest.raises(InputError) as caught:
        load_settings({"env_file": env}, {})
    assert str(caught.value).splitlines() == [
        f"{env}:2: cannot parse the line of OPENTOPO_API_KEY; write KEY = value"
        " (quote values holding # or spaces)",
        f"{env}:5: cannot parse the line of ROI; write KEY = value"
        " (quote values holding # or spaces)",
    ]


def test_unknown_key_warns_with_a_suggestion(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = write_env(tmp_path, "WORKER = 2\nIMAGE_NAME = insar\n")
    with caplog.at_level(logging.WARNING):
        assert load_settings({"env_file": env}, {}).workers is None
    assert [r.getMessage() for r in caplog.records] == [
        f"{env}: unknown key WORKER is ignored (did you mean WORKERS?)"
    ]


def test_missing_env_file_given_on_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^--env .*absent\.env: no such file"):
        load_settings({"env_file": str(tmp_path / "absent.env")}, {})


def test_with_changes_validates() -> None:
    settings = Settings()
    assert settings.with_changes(swaths="2").swaths == (2,)
    with pytest.raises(ValueError, match="swaths"):
        settings.with_changes(swaths=(4,))


def test_env_example_documents_every_key_with_its_default() -> None:
    example = REPO / ".env.example"
    keys = [
        line.split("=", 1)[0].strip()
        for line in example.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    ]
    # run_docker.sh's own keys (FOREIGN_KEYS) are documented in the same file.
    assert sorted(keys) == sorted([*ENV_KEYS, *FOREIGN_KEYS])
    assert load_settings({"env_file": example}, {}) == Settings(env_file=example)


def test_retry_backoff_reaches_the_pair_job(tmp_path: Path) -> None:
    from insar_pipeline.pair.prepare import prepare_pair
    from pair_factory import make_pair_setup

    env = write_env(tmp_path, "RETRY_BACKOFF_S = 0.25  # short, for a test batch\n")
    assert load_settings({"env_file": env}, {}).retry_backoff_s == 0.25
    assert load_settings({"env_file": env}, {"RETRY_BACKOFF_S": "0"}).retry_backoff_s == 0.0
    assert Settings().retry_backoff_s == 5.0
    setup = make_pair_setup(tmp_path / "batch", retry_backoff_s=0.25)
    pair = setup.pairs[0]
    job = prepare_pair(setup.settings, pair, setup.orbit_files, setup.dem, 1)
    assert job.retry_backoff_s == 0.25


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"MEMORY_TOTAL_GB": "8", "MEMORY_RESERVE_GB": "8"},
            "environment: MEMORY_RESERVE_GB=8 leaves no memory of the MEMORY_TOTAL_GB=8: "
            "lower MEMORY_RESERVE_GB",
        ),
        (
            {"EXECUTOR": "dask", "DASK_SCHEDULER": "my cluster"},
            "environment: DASK_SCHEDULER='my cluster' is not understood: use local, slurm, pbs, "
            "sge, a scheduler address such as tcp://host:8786, or a scheduler file "
            "(scheduler.json)",
        ),
        (
            {"EXECUTOR": "dask", "DASK_SCHEDULER": "slurm", "DASK_WALLTIME": "two hours"},
            "environment: DASK_WALLTIME='two hours' is invalid: use HH:MM:SS (or D-HH:MM:SS)",
        ),
        (
            {"EXECUTOR": "dask", "DASK_SCHEDULER": "pbs", "DASK_MEMORY_GB": "2"},
            "environment: DASK_MEMORY_GB=2 leaves no memory for pairs after "
            "MEMORY_RESERVE_GB=2: request more memory per job",
        ),
    ],
)
def test_keys_checked_together_name_each_key(values: dict[str, str], message: str) -> None:
    with pytest.raises(InputError) as caught:
        load_settings({"env_file": REPO / ".env.example"}, values)
    assert str(caught.value) == message


def test_dask_keys_are_not_checked_for_the_local_executor() -> None:
    settings = load_settings({"env_file": REPO / ".env.example"}, {"DASK_SCHEDULER": "my cluster"})
    assert settings.executor == "local"


def test_orbit_sources_are_lowered_and_deduplicated() -> None:
    settings = load_settings({"env_file": REPO / ".env.example"}, {"ORBIT_SOURCES": "AWS asf,aws"})
    assert settings.orbit_sources == ("aws", "asf")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"AOI": "54.1, 54.4, -121, -120.5"}, {"aoi": "POLYGON ((-120.5 54.1, -120.5 54.4, "
                                                      "-121 54.4, -121 54.1, -120.5 54.1))"}),
        ({"START": "2020-01-05", "END": "2020-03-01T00:00:00"},
         {"start": "2020-01-05", "end": "2020-03-01"}),
        ({"FLIGHT_DIRECTION": "desc"}, {"flight_direction": "DESCENDING"}),
        ({"FLIGHT_DIRECTION": "A"}, {"flight_direction": "ASCENDING"}),
        ({"PLATFORMS": "s1a s1c"}, {"platforms": ("S1A", "S1C")}),
    ],
)  # fmt: skip
def test_search_settings_are_normalized(values: dict, expected: dict) -> None:
    settings = load_settings({"env_file": REPO / ".env.example"}, values)
    assert {name: getattr(settings, name) for name in expected} == expected


def test_end_before_start_is_refused() -> None:
    with pytest.raises(InputError, match=r"END='2020-01-01' is invalid: must not be before START"):
        load_settings(
            {"env_file": REPO / ".env.example"}, {"START": "2021-01-01", "END": "2020-01-01"}
        )
