"""Progress: tqdm bars on a terminal, plain lines otherwise; log lines stay readable with bars."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from insar_pipeline.logs import configure_logging
from insar_pipeline.run.progress import Progress
from insar_pipeline.topsapp.job import PhaseEvent


@dataclass(frozen=True)
class Result:
    pair_id: str
    status: str


@dataclass(frozen=True)
class Download:
    kind: str = "orbit"
    name: str = "S1A_OPER_AUX_POEORB_OPOD_20250426T070640_V20250405T225942_20250407T005942.EOF"
    source: str = "asf"
    bytes: int = 4_500_000
    path: Path = Path("/x")


def test_plain_mode_logs_phases_at_info_and_counts():
    progress = Progress(stream=io.StringIO(), tty=False)
    assert progress.phase_level == logging.INFO
    progress.pairs_begin(total=5, done=1)
    progress.phase_event(PhaseEvent("a", "geometry", 2, "start", 0.0))
    progress.phase_event(PhaseEvent("b", "unwrap", 1, "start", 0.0))
    progress.pair_result(Result("b", "failed"))
    assert progress.totals_line() == (
        "1 done, 1 failed, 1 running, 2 waiting of 5 [a geometry (attempt 2)]"
    )
    progress.close()
    assert progress.stream.getvalue() == ""  # no bar drawn


@pytest.fixture
def stderr_logging():
    """The CLI's stderr handler, removed again after the test."""
    root = logging.getLogger()
    level = root.level
    configure_logging()
    yield
    for handler in [h for h in root.handlers if getattr(h, "_insar_stderr", False)]:
        root.removeHandler(handler)
    root.setLevel(level)


def test_terminal_mode_draws_bars_and_keeps_log_lines_above_them(stderr_logging):
    stream = io.StringIO()
    progress = Progress(stream=stream, tty=True)
    assert progress.phase_level == logging.DEBUG  # phase lines go to pipeline.log only
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "_insar_stderr", False))
    original = handler.stream
    progress.downloads_begin()
    progress.download(Download())
    progress.downloads_end()
    progress.pairs_begin(total=3)
    progress.phase_event(PhaseEvent("20250406_20250418", "geometry", 1, "start", 0.0))
    assert handler.stream is not original  # logging goes through tqdm.write now
    handler.stream.stream = stream  # capture what a log line would print
    logging.getLogger("insar_pipeline.test").warning("a warning while bars are drawn")
    progress.pair_result(Result("20250406_20250418", "done"))
    progress.close()
    assert handler.stream is original
    text = stream.getvalue()
    assert "downloads" in text and "4.50MB" in text
    assert "20250406_20250418:geometry" in text and "done 1 failed 0" in text
    assert "1/3" in text and "a warning while bars are drawn" in text
