"""Earthdata credentials: EARTHDATA_TOKEN, else EARTHDATA_USERNAME/PASSWORD, else ~/.netrc.

`earthdata_token` turns whichever is given into a bearer token checked against Earthdata
Login (`EDL_HOST`) before anything is downloaded: a refusal is a CredentialError (exit 2).
Nothing here logs a secret or writes a file; the token is what burst and scene downloads send.
"""

from __future__ import annotations

import logging
import netrc
from pathlib import Path
from typing import TYPE_CHECKING

from insar_pipeline.acquire import http
from insar_pipeline.errors import InputError

if TYPE_CHECKING:
    from insar_pipeline.inputs.config import Settings

log = logging.getLogger(__name__)


def earthdata_token(settings: Settings, home: Path | None = None) -> str:
    """A bearer token Earthdata Login accepts (InputError when no credential is given)."""
    host = settings.edl_host
    if settings.earthdata_token is not None:
        token = settings.earthdata_token.get_secret_value()
        http.check_token(host, token)
        log.info("Earthdata login: EARTHDATA_TOKEN accepted by %s", host)
        return token
    if settings.earthdata_username and settings.earthdata_password is not None:
        password = settings.earthdata_password.get_secret_value()
        where = "EARTHDATA_USERNAME/EARTHDATA_PASSWORD"
        return _login(host, settings.earthdata_username, password, where)
    if settings.earthdata_username or settings.earthdata_password is not None:
        raise InputError("set both EARTHDATA_USERNAME and EARTHDATA_PASSWORD, or EARTHDATA_TOKEN")
    found = netrc_login(host, home or Path.home())
    if found is None:
        raise InputError(
            "downloads need a NASA Earthdata login: set EARTHDATA_TOKEN (or EARTHDATA_USERNAME"
            f" and EARTHDATA_PASSWORD) in .env, or add 'machine {host.split(':')[0]}' to ~/.netrc"
        )
    return _login(host, found[0], found[1], "~/.netrc")


def _login(host: str, username: str, password: str, where: str) -> str:
    token = http.token_from_password(host, username, password, where)
    log.info("Earthdata login: %s accepted by %s", where, host)
    return token


def netrc_login(host: str, home: Path) -> tuple[str, str] | None:
    """(login, password) of `host`'s machine entry in home/.netrc, or None (read only)."""
    path = home / ".netrc"
    if not path.is_file():
        return None
    try:
        entry = netrc.netrc(path).authenticators(host.split(":")[0])
    except (netrc.NetrcParseError, OSError) as err:
        raise InputError(f"{path}: cannot read it ({type(err).__name__})") from None
    if entry is None or not entry[0] or not entry[2]:
        return None
    return entry[0], entry[2]
