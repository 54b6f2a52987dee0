"""What the user sees while a run goes: tqdm bars on a terminal, plain log lines otherwise.

On a terminal: a downloads bar during provisioning, then a pairs bar (done/failed/total) whose
postfix names the current phase of each running pair; log lines are written above the bars.
Phase start/end lines then go to the pipeline log only (DEBUG). Not on a terminal (CI, nohup,
a pipe): every phase start/end is an INFO line on stderr, plus a totals line every minute.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import IO

from tqdm import tqdm

from insar_pipeline.download import Download
from insar_pipeline.topsapp.job import PairResult, PairStatus, PhaseEvent

log = logging.getLogger(__name__)

PLAIN_TOTALS_EVERY_S = 60.0


class Progress:
    """Progress display of one run. Call from the coordinator's main thread, except `download`."""

    def __init__(self, stream: IO[str] | None = None, tty: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(self.stream.isatty()) if tty is None else tty
        # Phase start/end: INFO lines on a plain stderr, DEBUG (pipeline.log only) under bars.
        self.phase_level = logging.DEBUG if self.tty else logging.INFO
        self.total = self.done = self.failed = 0
        self.running: dict[str, str] = {}
        self._pairs_bar: tqdm | None = None
        self._downloads_bar: tqdm | None = None
        self._lock = threading.Lock()
        self._last_totals = time.monotonic()
        self._redirected: list[tuple[logging.StreamHandler, IO[str]]] = []

    # ---- downloads (provisioning may call `download` from its own threads) ---------------

    def downloads_begin(self) -> None:
        if self.tty:
            self._redirect_logging()
            self._downloads_bar = tqdm(
                desc="downloads", unit="B", unit_scale=True, file=self.stream, leave=False
            )

    def download(self, download: Download) -> None:
        with self._lock:
            if self._downloads_bar is not None:
                self._downloads_bar.update(download.bytes or 0)
                self._downloads_bar.set_postfix_str(download.name[-40:])
        log.log(
            self.phase_level,
            "downloaded %s %s from %s (%s bytes)",
            download.kind,
            download.name,
            download.source,
            download.bytes,
        )

    def downloads_end(self) -> None:
        with self._lock:
            if self._downloads_bar is not None:
                self._downloads_bar.close()
                self._downloads_bar = None

    # ---- pairs ---------------------------------------------------------------------------

    def pairs_begin(self, total: int, done: int = 0, failed: int = 0) -> None:
        self.total, self.done, self.failed = total, done, failed
        if self.tty:
            self._redirect_logging()
            self._pairs_bar = tqdm(
                total=total,
                initial=done + failed,
                desc="pairs",
                unit="pair",
                file=self.stream,
                dynamic_ncols=True,
            )
            self._refresh()

    def phase_event(self, event: PhaseEvent) -> None:
        if event.kind == "start":
            suffix = f" (attempt {event.attempt})" if event.attempt > 1 else ""
            self.running[event.pair_id] = f"{event.phase}{suffix}"
        self._refresh()
        self.tick()

    def pair_result(self, result: PairResult) -> None:
        self.running.pop(result.pair_id, None)
        if result.status == PairStatus.DONE:
            self.done += 1
        elif result.status == PairStatus.FAILED:
            self.failed += 1
        if self._pairs_bar is not None and result.status in (PairStatus.DONE, PairStatus.FAILED):
            self._pairs_bar.update(1)
        self._refresh()

    def pair_failed_to_start(self) -> None:
        self.failed += 1
        if self._pairs_bar is not None:
            self._pairs_bar.update(1)
        self._refresh()

    def tick(self) -> None:
        """A totals line every minute when there are no bars."""
        if self.tty or time.monotonic() - self._last_totals < PLAIN_TOTALS_EVERY_S:
            return
        self._last_totals = time.monotonic()
        log.info("%s", self.totals_line())

    def totals_line(self) -> str:
        running = ", ".join(f"{pair} {phase}" for pair, phase in sorted(self.running.items()))
        return (
            f"{self.done} done, {self.failed} failed, {len(self.running)} running, "
            f"{self.total - self.done - self.failed - len(self.running)} waiting of {self.total}"
            + (f" [{running}]" if running else "")
        )

    def _refresh(self) -> None:
        if self._pairs_bar is None:
            return
        running = " ".join(f"{pair}:{phase}" for pair, phase in sorted(self.running.items()))
        self._pairs_bar.set_postfix_str(
            f"done {self.done} failed {self.failed}" + (f" | {running}" if running else ""),
            refresh=True,
        )

    def close(self) -> None:
        self.downloads_end()
        if self._pairs_bar is not None:
            self._pairs_bar.close()
            self._pairs_bar = None
        for handler, stream in self._redirected:
            handler.setStream(stream)
        self._redirected.clear()

    def _redirect_logging(self) -> None:
        """Route the stderr log handler through tqdm.write so lines appear above the bars."""
        if self._redirected:
            return
        for handler in logging.getLogger().handlers:
            if getattr(handler, "_insar_stderr", False) and isinstance(
                handler, logging.StreamHandler
            ):
                previous = handler.stream
                handler.setStream(_TqdmWriter(previous))
                self._redirected.append((handler, previous))


class _TqdmWriter:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        if text.strip():
            tqdm.write(text.rstrip("\n"), file=self.stream)

    def flush(self) -> None:
        self.stream.flush()
