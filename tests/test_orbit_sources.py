"""Each orbit source against the loopback server: happy path, every fault, credentials."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from insar_pipeline import _http as orbit_http
from insar_pipeline.download import Download
from insar_pipeline.errors import CredentialError
from insar_pipeline.inputs.config import Settings
from insar_pipeline.inputs.safe import Product
from insar_pipeline.orbits.provision import OrbitProvision, provision_orbits
from orbit_factories import poeorb_name, resorb_name, scene
from orbit_server import (
    CUT,
    HTML_PAGE,
    SHORT_READ_TIMEOUT_S,
    TRUNCATED,
    Fault,
    OrbitServer,
    orbit_service_fixture,  # noqa: F401  (the `orbit_service` fixture)
    timeout,
)

SCENE = scene("S1A", "20250406T022008")
POEORB = poeorb_name("S1A", "20250406")
NEIGHBOURS = (
    poeorb_name("S1A", "20250405"),
    poeorb_name("S1B", "20250406"),
    resorb_name("S1A", "20250406T000000"),
)
# Requests of a clean run per source: ASF lookup + file; two monthly listings (April, May:
# the file is made ~20 days after) + file; CDSE query + login + file.
HAPPY = {
    "asf": {"asf": 1, "asf-file": 1},
    "aws": {"aws-list": 2, "aws-file": 1},
    "cdse": {"cdse-query": 1, "cdse-token": 1, "cdse-file": 1},
}
SOURCE_OF = {route: source for source, routes in HAPPY.items() for route in routes}


def provision(
    server: OrbitServer, tmp_path: Path, sources: str, *products: Product, **changes: object
) -> tuple[Settings, OrbitProvision, list[Download]]:
    settings = server.settings(tmp_path / "data", orbit_sources=sources, **changes)
    downloads: list[Download] = []
    result = provision_orbits(settings, list(products) or [SCENE], downloads.append)
    return settings, result, downloads


def folder(settings: Settings) -> list[str]:
    """What the orbit folder holds, lock file aside: never a temp or partial file."""
    return sorted(p.name for p in settings.orbit_dir.iterdir() if p.name != ".orbits.lock")


def counts(server: OrbitServer) -> dict[str, int]:
    routes = {hit.route for hit in server.hits()}
    return {route: server.count(route) for route in sorted(routes)}


@pytest.mark.parametrize("source", ["asf", "aws", "cdse"])
def test_happy_path(orbit_service: OrbitServer, tmp_path: Path, source: str) -> None:
    orbit_service.add(POEORB, *NEIGHBOURS)
    settings, result, downloads = provision(orbit_service, tmp_path, source)
    path = settings.orbit_dir / POEORB
    assert result == OrbitProvision({SCENE.name: path}, {})
    assert path.read_bytes() == orbit_service.body(POEORB)
    assert downloads == [Download(POEORB, source, path.stat().st_size, path)]
    assert folder(settings) == [POEORB]
    assert counts(orbit_service) == HAPPY[source]


ONE_OFF_FAULTS = {
    "timeout": timeout(),
    "500": Fault(500),
    "429": Fault(429, retry_after="0"),
    "html-200": HTML_PAGE,
    "truncated": TRUNCATED,
    "cut": CUT,
}
CASES = [
    (route, fault)
    for route in SOURCE_OF
    for fault in ONE_OFF_FAULTS
    if not (route == "asf" and fault in ("truncated", "cut"))  # a redirect has no body
]


@pytest.mark.parametrize(("route", "fault"), CASES, ids=[f"{r}-{f}" for r, f in CASES])
def test_a_fault_once_is_retried(
    orbit_service: OrbitServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    route: str,
    fault: str,
) -> None:
    orbit_service.add(POEORB, *NEIGHBOURS)
    orbit_service.fail(route, ONE_OFF_FAULTS[fault])
    if fault == "timeout":
        monkeypatch.setattr(orbit_http, "READ_TIMEOUT_S", SHORT_READ_TIMEOUT_S)
    source = SOURCE_OF[route]
    settings, result, downloads = provision(orbit_service, tmp_path, source)
    assert result.files == {SCENE.name: settings.orbit_dir / POEORB} and not result.failures
    assert [d.name for d in downloads] == [POEORB]
    assert (settings.orbit_dir / POEORB).read_bytes() == orbit_service.body(POEORB)
    assert folder(settings) == [POEORB]
    expected = dict(HAPPY[source])
    expected[route] += 1  # exactly one more request, on the faulty route
    assert counts(orbit_service) == expected


@pytest.mark.parametrize(
    ("first", "second", "route", "fault"),
    [
        ("asf", "aws", "asf", Fault(503)),
        ("asf", "cdse", "asf-file", HTML_PAGE),
        ("aws", "cdse", "aws-list", Fault(429, retry_after="0")),
        ("aws", "asf", "aws-file", TRUNCATED),
        ("cdse", "asf", "cdse-query", Fault(502)),
        ("cdse", "aws", "cdse-file", CUT),
    ],
)
def test_a_source_that_keeps_failing_is_left_for_the_next(
    orbit_service: OrbitServer, tmp_path: Path, first: str, second: str, route: str, fault: Fault
) -> None:
    orbit_service.add(POEORB, *NEIGHBOURS)
    orbit_service.fail(route, *[fault] * 10)
    settings, result, downloads = provision(orbit_service, tmp_path, f"{first},{second}")
    assert result.files == {SCENE.name: settings.orbit_dir / POEORB}
    assert [(d.name, d.source) for d in downloads] == [(POEORB, second)]
    assert orbit_service.count(route) == orbit_http.MAX_ATTEMPTS  # bounded, then moved on
    assert folder(settings) == [POEORB]


def test_the_reason_names_each_source_when_all_fail(
    orbit_service: OrbitServer, tmp_path: Path
) -> None:
    orbit_service.add(POEORB)
    orbit_service.fail("asf", *[Fault(500)] * 10)
    orbit_service.fail("aws-list", 403)
    orbit_service.fail("cdse-file", *[HTML_PAGE] * 10)
    settings, result, downloads = provision(orbit_service, tmp_path, "asf,aws,cdse")
    assert result.files == {} and downloads == [] and folder(settings) == []
    reason = result.failures[SCENE.name]
    assert "\n" not in reason and "S1A 2025-04-06T02:20:08" in reason
    assert "asf: lookup" in reason and "HTTP 500 (gave up after 4 attempts)" in reason
    assert "aws: listing" in reason and "HTTP 403" in reason
    assert "cdse: " in reason and "not an orbit file" in reason


def test_sources_are_tried_in_the_configured_order(
    orbit_service: OrbitServer, tmp_path: Path
) -> None:
    orbit_service.add(POEORB)
    orbit_service.answer_asf(SCENE.name, 404)  # ASF: none yet
    orbit_service.fail("aws-list", 401)  # the bucket refuses: no credentials to fix there
    settings, result, downloads = provision(orbit_service, tmp_path, "asf,aws,cdse")
    assert [d.source for d in downloads] == ["cdse"]
    assert [hit.route for hit in orbit_service.hits()] == [
        "asf", "aws-list", "cdse-query", "cdse-token", "cdse-file",
    ]  # fmt: skip
    _, result, _ = provision(orbit_service, tmp_path / "other", "cdse,asf,aws")
    assert orbit_service.hits()[5].route == "cdse-query"


def test_asf_bad_scene_name_is_not_found_there(orbit_service: OrbitServer, tmp_path: Path) -> None:
    orbit_service.add(POEORB)
    orbit_service.answer_asf(SCENE.name, 400)
    _, result, downloads = provision(orbit_service, tmp_path, "asf,aws")
    assert [d.source for d in downloads] == ["aws"] and not result.failures
    _, result, _ = provision(orbit_service, tmp_path / "alone", "asf")
    assert "rejected the scene name (HTTP 400)" in result.failures[SCENE.name]


# --- CDSE credentials ----------------------------------------------------------------------


def test_refused_cdse_login_raises_naming_the_keys_not_the_values(
    orbit_service: OrbitServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    orbit_service.add(POEORB)
    wrong = "not-" + orbit_service.cdse_password
    with pytest.raises(CredentialError) as raised:
        provision(orbit_service, tmp_path, "cdse", cdse_password=wrong)
    message = str(raised.value)
    assert "CDSE_USERNAME" in message and "CDSE_PASSWORD" in message and "401" in message
    for secret in (wrong, orbit_service.cdse_password, orbit_service.token):
        assert secret not in message and secret not in caplog.text
    assert orbit_service.count("cdse-token") == 1  # a refused login is not retried
    assert folder(orbit_service.settings(tmp_path / "data")) == []


def test_an_expired_token_is_renewed_once(orbit_service: OrbitServer, tmp_path: Path) -> None:
    orbit_service.add(POEORB)
    orbit_service.fail("cdse-file", 401)
    _, result, downloads = provision(orbit_service, tmp_path, "cdse")
    assert [d.name for d in downloads] == [POEORB] and not result.failures
    assert orbit_service.count("cdse-token") == 2 and orbit_service.count("cdse-file") == 2


def test_a_download_refused_twice_is_a_credential_error(
    orbit_service: OrbitServer, tmp_path: Path
) -> None:
    orbit_service.add(POEORB)
    orbit_service.fail("cdse-file", 403, 403)
    with pytest.raises(CredentialError, match="CDSE_USERNAME and CDSE_PASSWORD"):
        provision(orbit_service, tmp_path, "cdse")


def test_cdse_credentials_from_netrc_reach_only_the_token_endpoint(
    orbit_service: OrbitServer, tmp_path: Path
) -> None:
    orbit_service.add(POEORB)
    netrc = Path.home() / ".netrc"
    user, password = orbit_service.cdse_user, orbit_service.cdse_password
    netrc.write_text(f"machine 127.0.0.1 login {user} password {password}\n")
    netrc.chmod(0o600)
    orbit_service.answer_asf(SCENE.name, 404)  # ASF first: it goes through the same Session
    _, result, downloads = provision(
        orbit_service, tmp_path, "asf,cdse", cdse_username=None, cdse_password=None
    )
    assert [d.source for d in downloads] == ["cdse"] and not result.failures
    # requests would add a matching ~/.netrc entry as Basic auth to every request: never here.
    assert all("Authorization" not in hit.headers for hit in orbit_service.hits()
               if hit.route != "cdse-file")  # fmt: skip
    assert [h.headers["Authorization"] for h in orbit_service.hits("cdse-file")] == [
        f"Bearer {orbit_service.token}"
    ]


def test_a_refused_netrc_login_names_the_netrc_entry(
    orbit_service: OrbitServer, tmp_path: Path
) -> None:
    orbit_service.add(POEORB)
    netrc = Path.home() / ".netrc"
    netrc.write_text("machine 127.0.0.1 login someone password not-the-right-one\n")
    netrc.chmod(0o600)
    with pytest.raises(CredentialError) as raised:
        provision(orbit_service, tmp_path, "cdse", cdse_username=None, cdse_password=None)
    message = str(raised.value)
    assert "~/.netrc entry for machine 127.0.0.1" in message and "CDSE_PASSWORD" in message
    assert "not-the-right-one" not in message


def test_netrc_readable_by_others_is_reported(orbit_service: OrbitServer, tmp_path: Path) -> None:
    orbit_service.add(POEORB)
    netrc = Path.home() / ".netrc"
    netrc.write_text(f"machine 127.0.0.1 login someone password {orbit_service.cdse_password}\n")
    netrc.chmod(0o644)
    with pytest.raises(CredentialError, match="~/.netrc") as raised:
        provision(orbit_service, tmp_path, "cdse", cdse_username=None, cdse_password=None)
    assert orbit_service.cdse_password not in str(raised.value)


def test_without_cdse_credentials_the_scene_fails_with_a_hint(
    orbit_service: OrbitServer, tmp_path: Path
) -> None:
    orbit_service.add(POEORB)
    _, result, _ = provision(
        orbit_service, tmp_path, "cdse", cdse_username=None, cdse_password=None
    )
    assert "set CDSE_USERNAME and CDSE_PASSWORD" in result.failures[SCENE.name]
    assert orbit_service.count() == 0  # nothing asked that could not be downloaded


def test_half_set_cdse_credentials_are_a_credential_error(
    orbit_service: OrbitServer, tmp_path: Path
) -> None:
    with pytest.raises(CredentialError, match="both CDSE_USERNAME and CDSE_PASSWORD"):
        provision(orbit_service, tmp_path, "cdse", cdse_password=None)
