"""Settings: `.env` file, then the process environment, then CLI options (SPEC.md section 4).

Everything the pipeline reads from the user is validated here once, into a frozen `Settings`
that is passed down; no other module reads `os.environ`.
"""

from __future__ import annotations

import difflib
import io
import logging
import os
import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeAlias, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from insar_pipeline.errors import InputError
from insar_pipeline.geo import BBox

if TYPE_CHECKING:
    from dotenv.parser import Original

log = logging.getLogger(__name__)

# Enumerated settings: pydantic checks them (its message lists what the key accepts).
# OpenTopography global DEMs whose vertical datum the pipeline converts (dem_grid.DEM_SPECS).
DemType: TypeAlias = Literal[
    "COP30", "COP90", "NASADEM", "SRTMGL1", "SRTMGL3", "AW3D30", "SRTMGL1_E", "SRTMGL3_E",
    "AW3D30_E",
]  # fmt: skip
Unwrapper: TypeAlias = Literal["snaphu_mcf", "snaphu", "downsample_snaphu", "icu", "grass"]
OrbitSource: TypeAlias = Literal["asf", "aws", "cdse"]
Polarization: TypeAlias = Literal["vv", "vh", "hh", "hv"]
CleanLevel: TypeAlias = Literal["none", "standard", "nuclear"]
DEM_TYPES: tuple[DemType, ...] = get_args(DemType)
UNWRAPPERS: tuple[Unwrapper, ...] = get_args(Unwrapper)
ORBIT_SOURCES: tuple[OrbitSource, ...] = get_args(OrbitSource)
POLARIZATIONS: tuple[Polarization, ...] = get_args(Polarization)
CLEAN_LEVELS: tuple[CleanLevel, ...] = get_args(CleanLevel)
# DASK_SCHEDULER values besides `local`: a batch system (dask-jobqueue), an address, a file.
JOBQUEUE_KINDS = ("slurm", "pbs", "sge")
DASK_ADDRESS = re.compile(r"^(?:(?:tcp|tls|ws|wss|ucx)://)?\[?[\w.\-:]+\]?:\d{1,5}/?$")
_WALLTIME = re.compile(r"^(?:\d+-)?\d+(?::\d{1,2}){0,2}$")
FLIGHT_DIRECTIONS = ("ASCENDING", "DESCENDING")
PLATFORMS = ("S1A", "S1B", "S1C", "S1D")
SECRET_KEYS = frozenset(
    {"OPENTOPO_API_KEY", "CDSE_PASSWORD", "EARTHDATA_TOKEN", "EARTHDATA_PASSWORD"}
)
# Keys other tools read from the same .env (run_docker.sh); accepted here without a warning.
FOREIGN_KEYS = frozenset({"MEMORY_LIMIT", "SHM_SIZE", "IMAGE_NAME"})


class Settings(BaseModel):  # type: ignore[explicit-any]  # pydantic's synthesized __init__
    """Every setting of a run. Field names are the `.env` keys in lower case."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    # Where things are (CLI options; not .env keys).
    data_dir: Path = Field(Path("data"), description="the data folder (raw, orbit_data, dem, runs)")
    pairs_file: Path = Field(Path("pairs.txt"), description="the pairs list")
    env_file: Path = Field(Path(".env"), description="the .env file read")
    only: tuple[str, ...] = Field((), description="restrict to these pair ids")
    verbose: bool = False

    opentopo_api_key: SecretStr | None = Field(None, description="OpenTopography API key")
    roi: BBox | None = Field(None, description="S,N,W,E box of the downloaded DEM")
    region_of_interest: BBox | None = Field(None, description="topsApp region of interest S,N,W,E")
    workers: int | None = Field(None, ge=1, description="parallel pairs ('auto' or a number)")
    memory_per_worker_gb: float = Field(16.0, gt=0)
    memory_total_gb: float | None = Field(None, gt=0, description="RAM to plan with; None = detect")
    memory_reserve_gb: float = Field(2.0, ge=0, description="RAM kept free for the system")
    cores: int | None = Field(None, ge=1, description="cores to plan with; None = detect")
    dem_type: DemType = "COP30"
    dem_buffer_deg: float = Field(0.1, ge=0, le=5)
    geocode_dem_arcsec: int | None = Field(
        None, ge=1, description="arc-second posting of a coarser DEM for geocoding; none: the DEM"
    )
    swaths: tuple[int, ...] = (1, 2, 3)
    polarization: Polarization = "vv"
    range_looks: int = Field(19, ge=1)
    azimuth_looks: int = Field(7, ge=1)
    filter_strength: float = Field(0.5, ge=0, le=1)
    unwrap: bool = True
    unwrapper: Unwrapper = "snaphu_mcf"
    ionosphere: bool = False
    geocode_bbox: BBox | None = None
    max_retries: int = Field(2, ge=0, le=20)
    retry_backoff_s: float = Field(5.0, ge=0, le=3600, description="first retry wait; doubles")
    phase_timeout_min: float | None = Field(None, gt=0)
    clean: CleanLevel = "standard"
    orbit_sources: tuple[OrbitSource, ...] = Field(ORBIT_SOURCES, min_length=1)
    cdse_username: str | None = None
    cdse_password: SecretStr | None = None
    topsapp: str = "topsApp.py"
    executor: Literal["local", "dask"] = "local"
    dask_scheduler: str | None = Field(None, description="'local', an address, 'slurm' or 'pbs'")
    dask_cores: int = Field(1, ge=1, description="cores per dask-jobqueue job")
    dask_memory_gb: float = Field(16.0, gt=0, description="memory per dask-jobqueue job")
    dask_walltime: str = "12:00:00"
    dask_queue: str | None = None
    dask_account: str | None = None
    dask_jobs: int = Field(1, ge=1, description="dask-jobqueue jobs to start")
    geometry_reuse: bool = True
    opentopo_url: str = "https://portal.opentopography.org"
    asf_orbit_url: str = "https://s1-orbits.asf.alaska.edu"
    aws_orbit_url: str = "https://s1-orbits.s3.us-west-2.amazonaws.com"
    cdse_url: str = "https://catalogue.dataspace.copernicus.eu"
    cdse_token_url: str = (
        "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token"
    )
    cdse_download_url: str = "https://zipper.dataspace.copernicus.eu"

    # topsApp's enhanced spectral diversity (issue 12).
    esd: Literal["auto", "true", "false"] = Field(
        "auto", description="auto: rerun coregistration without ESD when no overlap is coherent"
    )
    esd_coherence_threshold: float = Field(0.85, gt=0, le=1, description="ESD coherence threshold")

    # Where the DEM comes from (issue 16).
    dem_source: Literal["auto", "opentopography", "copernicus"] = "auto"
    copernicus_dem_url: str = "https://copernicus-dem-30m.s3.amazonaws.com"

    # Finding and downloading the inputs (issue 14).
    aoi: str | None = Field(None, description="area of interest: S,N,W,E or a WKT polygon")
    start: str | None = Field(None, description="first date searched, YYYY-MM-DD")
    end: str | None = Field(None, description="last date searched, YYYY-MM-DD")
    relative_orbit: int | None = Field(None, ge=1, le=175, description="the track")
    flight_direction: str | None = Field(None, description="ASCENDING or DESCENDING")
    frame: int | None = Field(None, ge=0, description="ASF frame number")
    platforms: tuple[str, ...] = ("S1A", "S1B", "S1C")
    input_level: Literal["scene", "burst"] = "scene"
    earthdata_token: SecretStr | None = None
    earthdata_username: str | None = None
    earthdata_password: SecretStr | None = None
    cmr_host: str = "cmr.earthdata.nasa.gov"
    edl_host: str = "urs.earthdata.nasa.gov"
    download_workers: int = Field(4, ge=1, le=16, description="files downloaded at once")

    @field_validator("aoi")
    @classmethod
    def _check_aoi(cls, value: str | None) -> str | None:
        return None if value is None else normalize_aoi(value)

    @field_validator("start", "end")
    @classmethod
    def _check_date(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return date.fromisoformat(value[:10]).isoformat()
        except ValueError:
            raise ValueError("must be a date YYYY-MM-DD") from None

    @field_validator("end")
    @classmethod
    def _check_end_after_start(cls, value: str | None, info: ValidationInfo) -> str | None:  # type: ignore[explicit-any]
        start = info.data.get("start")
        if value is not None and start is not None and value < start:
            raise ValueError(f"must not be before START ({start})")
        return value

    @field_validator("flight_direction")
    @classmethod
    def _check_direction(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for direction in FLIGHT_DIRECTIONS:
            if direction.startswith(value.upper()):  # ASC, DESC, A, D...
                return direction
        raise ValueError("must be ASCENDING or DESCENDING")

    @field_validator("platforms")
    @classmethod
    def _check_platforms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        value = tuple(platform.upper() for platform in value)
        if not value or any(platform not in PLATFORMS for platform in value):
            raise ValueError(f"must list platforms among {', '.join(PLATFORMS)}")
        return tuple(dict.fromkeys(value))

    # Time series (issue 15).
    timeseries: bool = False
    reference_lalo: str | None = Field(None, description="MintPy reference point 'lat,lon'")

    @field_validator("reference_lalo")
    @classmethod
    def _check_lalo(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = value.split(",")
        try:
            lat, lon = (float(part) for part in parts)
        except ValueError:
            raise ValueError("expected 'lat,lon' in degrees, e.g. 34.05,-118.25") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ValueError("latitude or longitude out of range")
        return f"{lat},{lon}"

    @field_validator("roi", "region_of_interest", "geocode_bbox", mode="before")
    @classmethod
    def _parse_bbox(cls, value: object) -> object:
        if isinstance(value, str):
            return BBox.parse(value) if value.strip() else None
        return value

    @field_validator(
        "workers",
        "phase_timeout_min",
        "memory_total_gb",
        "cores",
        "geocode_dem_arcsec",
        "relative_orbit",
        "frame",
        mode="before",
    )
    @classmethod
    def _auto_is_none(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "auto", "none"):
            return None
        return value

    @field_validator(
        "opentopo_api_key",
        "cdse_username",
        "cdse_password",
        "dask_scheduler",
        "dask_queue",
        "dask_account",
        "aoi",
        "start",
        "end",
        "flight_direction",
        "earthdata_token",
        "earthdata_username",
        "earthdata_password",
        "reference_lalo",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("swaths", "orbit_sources", "only", "platforms", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(item for item in value.replace(",", " ").split() if item)
        return value

    @field_validator("swaths")
    @classmethod
    def _check_swaths(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(swath not in (1, 2, 3) for swath in value):
            raise ValueError("must list IW swaths among 1, 2, 3 (e.g. 1,2,3)")
        return tuple(sorted(set(value)))

    @field_validator("orbit_sources", mode="before")
    @classmethod
    def _unique_sources(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        if isinstance(value, tuple | list):
            return tuple(dict.fromkeys(_lower(source) for source in value))
        return value

    @field_validator("dem_type", mode="before")
    @classmethod
    def _dem_type_case(cls, value: object) -> object:
        for known in DEM_TYPES:
            if isinstance(value, str) and value.strip().lower() == known.lower():
                return known
        return value

    @field_validator(
        "polarization", "unwrapper", "clean", "esd", "dem_source", "input_level", "executor",
        mode="before",
    )  # fmt: skip
    @classmethod
    def _lower(cls, value: object) -> object:
        return _lower(value)

    @model_validator(mode="after")
    def _check_memory(self) -> Settings:
        total = self.memory_total_gb
        if total is not None and self.memory_reserve_gb >= total:
            raise ValueError(
                f"MEMORY_RESERVE_GB={self.memory_reserve_gb:g} leaves no memory of the "
                f"MEMORY_TOTAL_GB={total:g}: lower MEMORY_RESERVE_GB"
            )
        return self

    @model_validator(mode="after")
    def _check_dask(self) -> Settings:
        """The DASK_* keys of EXECUTOR=dask, checked together before anything is provisioned."""
        if self.executor != "dask":
            return self
        scheduler = (self.dask_scheduler or "local").strip()
        kind = scheduler.lower()
        if kind not in ("local", *JOBQUEUE_KINDS) and not (
            scheduler.endswith(".json") or DASK_ADDRESS.match(scheduler)
        ):
            raise ValueError(
                f"DASK_SCHEDULER={scheduler!r} is not understood: use local, slurm, pbs, sge, a "
                "scheduler address such as tcp://host:8786, or a scheduler file (scheduler.json)"
            )
        if kind in JOBQUEUE_KINDS and not _WALLTIME.match(self.dask_walltime.strip()):
            raise ValueError(
                f"DASK_WALLTIME={self.dask_walltime!r} is invalid: use HH:MM:SS (or D-HH:MM:SS)"
            )
        # A job's RAM also holds the Dask worker and the node's own processes: keep the same
        # reserve as on a local machine (MEMORY_RESERVE_GB).
        if kind in JOBQUEUE_KINDS and self.dask_memory_gb <= self.memory_reserve_gb:
            raise ValueError(
                f"DASK_MEMORY_GB={self.dask_memory_gb:g} leaves no memory for pairs after "
                f"MEMORY_RESERVE_GB={self.memory_reserve_gb:g}: request more memory per job"
            )
        return self

    # Derived folders: every path of a run comes from these.
    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def orbit_dir(self) -> Path:
        return self.data_dir / "orbit_data"

    @property
    def dem_dir(self) -> Path:
        return self.data_dir / "dem"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    def run_dir(self, pair_id: str) -> Path:
        return self.runs_dir / pair_id

    @property
    def phase_timeout_s(self) -> float | None:
        return None if self.phase_timeout_min is None else self.phase_timeout_min * 60

    def with_changes(self, **changes: object) -> Settings:
        """A validated copy with some fields changed (tests and the CLI use this)."""
        return _rebuild(self, changes)


def _rebuild(settings: Settings, changes: Mapping[str, object]) -> Settings:
    values = {name: getattr(settings, name) for name in Settings.model_fields}
    values.update(changes)
    return Settings.model_validate(values)


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


ENV_KEYS: dict[str, str] = {
    name.upper(): name
    for name in Settings.model_fields
    if name not in ("data_dir", "pairs_file", "env_file", "only", "verbose")
}


def read_env_file(path: Path) -> dict[str, str]:
    """The key/value pairs of a .env file (python-dotenv syntax, inline `# comments` allowed).

    A line python-dotenv cannot parse would be skipped silently; it is an InputError naming the
    line instead (the line itself is not echoed: it may hold a secret).
    """
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read it ({err})") from err
    bad = [binding.original for binding in parse_stream(io.StringIO(text)) if binding.error]
    if bad:
        raise InputError("\n".join(_unparsable(path, original) for original in bad))
    values = dotenv_values(stream=io.StringIO(text))
    return {key: (value or "") for key, value in values.items()}


def _unparsable(path: Path, original: Original) -> str:
    # parse_stream reports blank lines before a bad statement as part of it.
    text = original.string
    line = original.line + len(text) - len(text.lstrip("\n"))
    word = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)", text.lstrip("\n"))
    what = f"the line of {word[1]}" if word else "this line"
    return (
        f"{path}:{line}: cannot parse {what}; write KEY = value (quote values holding # or spaces)"
    )


def load_settings(
    cli: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings from `.env`, the process environment and CLI options, in that order.

    `cli` holds field names (data_dir, pairs_file, env_file, workers, only, verbose...);
    values of None are "not given". Raises InputError naming the key and what it accepts.
    """
    cli = {key: value for key, value in (cli or {}).items() if value is not None}
    environ = os.environ if environ is None else environ
    env_file = Path(str(cli.get("env_file", ".env")))
    if "env_file" in cli and not env_file.is_file():
        raise InputError(f"--env {env_file}: no such file; copy .env.example there or drop --env")
    file_values = read_env_file(env_file)
    _warn_unknown_keys(env_file, file_values)

    raw: dict[str, object] = {}
    sources: dict[str, str] = {}
    for key, field in ENV_KEYS.items():
        # The environment overrides the file; an empty value at either level means the default.
        value, source = (
            (environ[key], "environment") if key in environ
            else (file_values.get(key), str(env_file))
        )  # fmt: skip
        if value is not None and value.strip():
            raw[field], sources[field] = value, source
    for field, given in cli.items():
        raw[field], sources[field] = given, "command line"
    raw.setdefault("env_file", env_file)
    try:
        return Settings.model_validate(raw)
    except ValidationError as err:
        raise InputError(_describe(err, raw, sources)) from None


def _warn_unknown_keys(env_file: Path, values: Mapping[str, str]) -> None:
    for key in values:
        if key in ENV_KEYS or key in FOREIGN_KEYS:
            continue
        close = difflib.get_close_matches(key, list(ENV_KEYS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        log.warning("%s: unknown key %s is ignored%s", env_file, key, hint)


def _describe(err: ValidationError, raw: Mapping[str, object], sources: Mapping[str, str]) -> str:
    """One line per bad key, never echoing a secret."""
    lines = []
    for problem in err.errors():
        if not problem["loc"]:  # a check of keys together (a model validator) names them itself
            named = sorted((problem["msg"].find(f"{key}="), key) for key in ENV_KEYS)
            first = next((key for at, key in named if at >= 0), None)  # the key it starts with
            where = sources.get(ENV_KEYS[first], "settings") if first else "settings"
            lines.append(f"{where}: {problem['msg'].removeprefix('Value error, ')}")
            continue
        field = str(problem["loc"][0]) if problem["loc"] else "?"
        where = sources.get(field, "settings")
        if field.upper() in ENV_KEYS and where != "command line":
            key = field.upper()
        else:
            key = f"--{field.replace('_', '-')}"
        message = _EXPECTED.get(problem["type"], problem["msg"].removeprefix("Value error, "))
        if field in _AUTO_FIELDS and problem["type"] in ("int_parsing", "float_parsing"):
            message += " or auto"
        if field.upper() in SECRET_KEYS or field not in raw:
            shown = ""
        else:
            shown = f"={raw[field]!r}"
        lines.append(f"{where}: {key}{shown} is invalid: {message}")
    return "\n".join(lines)


# pydantic's words for a wrong type, replaced by what the key accepts.
_EXPECTED = {
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
}
_AUTO_FIELDS = frozenset({"workers", "cores", "memory_total_gb"})


def normalize_aoi(text: str) -> str:
    """AOI as `S,N,W,E` or a WKT (multi)polygon, returned as WKT in lon/lat degrees.

    Raises ValueError saying what AOI accepts.
    """
    from shapely import wkt
    from shapely.errors import ShapelyError
    from shapely.geometry import box

    if text.lstrip()[:1].isdigit() or text.lstrip()[:1] in "-+.[(":
        bbox = BBox.parse(text)
        return box(bbox.west, bbox.south, bbox.east, bbox.north).wkt
    try:
        shape = wkt.loads(text)
    except ShapelyError:
        raise ValueError("must be S,N,W,E or a WKT POLYGON in lon/lat degrees") from None
    if shape.geom_type not in ("Polygon", "MultiPolygon") or shape.is_empty:
        raise ValueError(f"must be S,N,W,E or a WKT POLYGON, not a {shape.geom_type}")
    if not shape.is_valid:
        raise ValueError("is not a valid polygon (its edges cross); check the vertex order")
    west, south, east, north = shape.bounds
    if not (-90 <= south and north <= 90 and -180 <= west and east <= 180):
        raise ValueError("must be in lon/lat degrees (WKT gives lon first, within ±180/±90)")
    return shape.wkt
