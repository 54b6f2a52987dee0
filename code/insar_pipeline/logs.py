"""Logging: readable lines on stderr, JSON lines in data/runs/pipeline.log, secrets masked in both.

Modules log with `logging.getLogger(__name__)`; a record may carry
`extra={"pair": ..., "phase": ...}`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

_MASK = "***"
# A key in a query string (OpenTopography's API_Key=...) reaches urllib3's request log lines.
_SECRET_PARAMETER = re.compile(r"((?:api_key|apikey|access_token|password)=)[^&\s'\"]*", re.I)
_secrets: list[str] = []


class SecretMaskFilter(logging.Filter):
    """Masks secrets in a record's final message: the one filter, on every handler the CLI makes.

    Known secrets (the settings' keys and passwords) and any key in a URL's query string;
    installed by `configure_logging` and `attach_pipeline_log`, never on import.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def mask_secrets(text: str, *extra: str | None) -> str:
    """`text` with every known secret, every `extra` one and every key in a URL's query masked."""
    text = _SECRET_PARAMETER.sub(rf"\1{_MASK}", text)
    for secret in (*_secrets, *(value for value in extra if value)):
        text = text.replace(secret, _MASK)
    return text


class _StderrFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "".join(
            f"[{value}] "
            for value in (getattr(record, "pair", None), getattr(record, "phase", None))
            if value
        )
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"{level}{prefix}{record.getMessage()}"


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in ("pair", "phase", "attempt"):
            value = getattr(record, field, None)
            if value is not None:
                event[field] = value
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event)


def configure_logging(verbose: bool = False, secrets: Iterable[str] = ()) -> None:
    """(Re)configure the root logger's stderr handler; safe to call more than once."""
    _secrets[:] = sorted({secret for secret in secrets if secret}, key=len, reverse=True)
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        if getattr(handler, "_insar_stderr", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._insar_stderr = True  # type: ignore[attr-defined]
    handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler.setFormatter(_StderrFormatter())
    handler.addFilter(SecretMaskFilter())
    root.addHandler(handler)
    for noisy in ("urllib3", "distributed", "matplotlib", "asyncio", "fsspec", "tornado"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def attach_pipeline_log(runs_dir: Path) -> Path:
    """Append every event, with pair and phase, to runs_dir/pipeline.log as JSON lines."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    path = runs_dir / "pipeline.log"
    root = logging.getLogger()
    for handler in root.handlers:
        if (
            isinstance(handler, logging.FileHandler)
            and Path(handler.baseFilename) == path.resolve()
        ):
            return path
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(JsonLinesFormatter())
    handler.addFilter(SecretMaskFilter())
    root.addHandler(handler)
    return path


def write_traceback(runs_dir: Path, what: str, err: BaseException) -> Path | None:
    """Log `err` with its traceback to runs_dir/pipeline.log only (never to stderr); the path
    written, or None when the file cannot be written (a full disk, a read-only folder)."""
    path = runs_dir / "pipeline.log"
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        handler = _QuietFileHandler(path, encoding="utf-8")
    except OSError:
        return None
    handler.setFormatter(JsonLinesFormatter())
    handler.addFilter(SecretMaskFilter())
    record = logging.getLogger("insar_pipeline").makeRecord(
        "insar_pipeline", logging.ERROR, __file__, 0, "%s: %r", (what, err),
        (type(err), err, err.__traceback__),
    )  # fmt: skip
    try:
        handler.handle(record)
    finally:
        handler.close()
    return None if handler.failed else path


class _QuietFileHandler(logging.FileHandler):
    """A file handler that notes a failed write instead of printing a traceback to stderr."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        self.failed = True
