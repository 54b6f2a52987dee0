"""`report`: `data/runs/report.html`, one self-contained page (opens offline, no external file).

Run summary, every pair's state, a failures table with the last lines of each failing log, the
downloads, and per finished pair its quicklooks (embedded as base64 PNGs; the files also stay in
`<pair>/quicklooks/`). Every string that comes from a log, a ledger or a file name is escaped.
"""

from __future__ import annotations

import argparse
import base64
import html
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from insar_pipeline._io import write_text
from insar_pipeline.inputs.config import Settings
from insar_pipeline.ledger.lock import lock_holder
from insar_pipeline.ledger.store import Ledger, PairRow, Record
from insar_pipeline.logs import mask_secrets
from insar_pipeline.pair.job import PairStatus
from insar_pipeline.report.quicklook import Quicklook, render_quicklooks
from insar_pipeline.report.text import format_duration

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
TAIL_LINES = 20
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}th{background:#eee}
td{overflow-wrap:anywhere}
.done{color:#176b2c}.failed{color:#b00020}.pending,.running{color:#8a6d00}
pre{background:#f6f6f6;padding:.5em;max-width:100em;overflow-x:auto;font-size:85%;margin:0}
.looks{display:flex;flex-wrap:wrap;gap:1em}.looks figure{margin:0}.looks img{max-width:32em}
"""


def report_command(settings: Settings, args: argparse.Namespace) -> int:
    path = write_report(settings)
    sys.stdout.write(f"{path}\n")
    return 0


def write_report(settings: Settings) -> Path:
    """(Re)write runs_dir/report.html atomically from the ledger and the pairs' products."""
    runs_dir = settings.runs_dir
    ledger = Ledger.open_reader(runs_dir)
    if ledger is None:
        run, rows, downloads, phase_logs = None, [], [], {}
    else:
        try:
            run, rows = ledger.latest_run(), ledger.pairs()
            downloads = ledger.downloads()
            phase_logs = {
                row.pair_id: ledger.phase_rows(row.pair_id)
                for row in rows
                if row.status == PairStatus.FAILED
            }
        finally:
            ledger.close()
    looks = {
        row.pair_id: render_quicklooks(settings.run_dir(row.pair_id), row.pair_id)
        for row in rows
        if row.status == PairStatus.DONE and settings.run_dir(row.pair_id).is_dir()
    }
    page = render_html(
        run,
        rows,
        downloads,
        phase_logs,
        looks,
        runs_dir,
        active=lock_holder(runs_dir) not in (None, os.getpid()),
    )
    path = runs_dir / REPORT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, page)
    log.info("report written: %s", path)
    return path


def render_html(
    run: Record | None,
    rows: Sequence[PairRow],
    downloads: Sequence[Record],
    phase_logs: dict[str, list[Record]],
    looks: dict[str, list[Quicklook]],
    runs_dir: Path,
    active: bool = False,
) -> str:
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>InSAR pipeline report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>InSAR pipeline report</h1>",
        f"<p>{_e(str(runs_dir.resolve()))} — written {_e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}"
        + (" — <b>a run is in progress</b>" if active else "")
        + "</p>",
        _summary(run, rows),
        _pairs_table(rows),
        _failures(rows, phase_logs, runs_dir),
        _quicklooks(looks),
        _downloads(downloads),
        "</body></html>",
    ]
    return "\n".join(parts)


def _summary(run: Record | None, rows: Sequence[PairRow]) -> str:
    counts = {
        state: sum(row.status == state for row in rows)
        for state in (PairStatus.DONE, PairStatus.FAILED, PairStatus.RUNNING, PairStatus.PENDING)
    }
    totals = ", ".join(f"<span class='{k}'>{v} {k}</span>" for k, v in counts.items())
    if run is None:
        return f"<h2>Summary</h2><p>No run yet. {len(rows)} pairs: {totals}</p>"
    began = float(str(run["started"]))
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(began))
    wall = format_duration((float(str(run["ended"])) if run["ended"] else time.time()) - began)
    return (
        "<h2>Summary</h2><table>"
        f"<tr><th>last run</th><td>#{run['id']}: {_e(run['status'])}, "
        f"exit {_e(run['exit_code'])}</td></tr>"
        f"<tr><th>started</th><td>{_e(started)} (wall {_e(wall)})</td></tr>"
        f"<tr><th>parallelism</th><td>{_e(run['workers'])} workers × {_e(run['omp_threads'])} "
        f"threads, {float(str(run['budget_gb'])):.1f} GB memory budget "
        f"({_e(run['executor'])})</td></tr>"
        f"<tr><th>pairs</th><td>{len(rows)}: {totals}</td></tr>"
        f"{_geometry_summary(rows)}</table>"
    )


def _geometry_summary(rows: Sequence[PairRow]) -> str:
    """Geometry reuse: how many pairs took another pair's topo output instead of running it."""
    reused = sum(row.geometry_from is not None for row in rows)
    if not reused:
        return ""
    return (
        f"<tr><th>geometry reuse</th><td>{reused} pair{'s' * (reused != 1)} took the geometry "
        "of another pair with the same reference (hard links; topo not run)</td></tr>"
    )


def _pairs_table(rows: Sequence[PairRow]) -> str:
    lines = [
        "<h2>Pairs</h2><table><tr><th>pair</th><th>reference</th><th>secondary</th>"
        "<th>state</th><th>phases done</th><th>topsApp time</th><th>disk after cleaning</th>"
        "<th>geometry</th></tr>"
    ]
    for row in rows:
        disk = (
            f"{_size(row.bytes_after_clean)} (from {_size(row.bytes_before_clean)})"
            if row.bytes_after_clean is not None
            else ""
        )
        lines.append(
            f"<tr><td><a href='#{_e(row.pair_id)}'>{_e(row.pair_id)}</a></td>"
            f"<td>{_e(row.reference)}</td>"
            f"<td>{_e(row.secondary)}</td><td class='{_e(row.status)}'>{_e(row.status)}</td>"
            f"<td>{len(row.phases_done)}/{_e(row.phases_total)}</td>"
            f"<td>{_e(format_duration(row.wall_s))}</td><td>{_e(disk)}</td>"
            f"<td>{_e(f'from {row.geometry_from}' if row.geometry_from else '')}</td></tr>"
        )
    return "\n".join(lines) + "</table>"


def _failures(rows: Sequence[PairRow], phase_logs: dict[str, list[dict]], runs_dir: Path) -> str:
    failed = [row for row in rows if row.status == PairStatus.FAILED]
    if not failed:
        return "<h2>Failures</h2><p>None.</p>"
    lines = [
        "<h2>Failures</h2><table><tr><th>pair</th><th>phase</th><th>reason</th>"
        "<th>last lines of the log</th></tr>"
    ]
    for row in failed:
        tail = row.error_tail or _log_tail(phase_logs.get(row.pair_id, []), runs_dir / row.pair_id)
        lines.append(
            f"<tr id='{_e(row.pair_id)}'><td>{_e(row.pair_id)}</td>"
            f"<td>{_e(row.failed_phase or '')}</td>"
            f"<td>{_e(row.error or '')}</td><td><pre>{_e(mask_secrets(tail or ''))}</pre></td></tr>"
        )
    return "\n".join(lines) + "</table>"


def _log_tail(phases: list[Record], run_dir: Path) -> str | None:
    """The last lines of the newest phase log with a path (when the runner sent no tail)."""
    for phase in reversed(phases):
        if phase.get("log_path"):
            path = Path(str(phase["log_path"]))
            path = path if path.is_absolute() else run_dir / path
            try:
                return "\n".join(path.read_text(errors="replace").splitlines()[-TAIL_LINES:])
            except OSError:
                return None
    return None


def _quicklooks(looks: dict[str, list[Quicklook]]) -> str:
    lines = ["<h2>Quicklooks</h2>"]
    if not any(looks.values()):
        lines.append("<p>No geocoded products yet.</p>")
    for pair_id, items in looks.items():
        if not items:
            continue
        lines.append(f"<h3 id='{_e(pair_id)}'>{_e(pair_id)}</h3><div class='looks'>")
        for look in items:
            data = base64.b64encode(look.png.read_bytes()).decode("ascii")
            lines.append(
                f"<figure><img alt='{_e(pair_id)} {_e(look.title)}' "
                f"src='data:image/png;base64,{data}'><figcaption>{_e(look.title)}: "
                f"{_e(look.source.name)}</figcaption></figure>"
            )
        lines.append("</div>")
    return "\n".join(lines)


def _downloads(downloads: Sequence[dict]) -> str:
    if not downloads:
        return "<h2>Downloads</h2><p>None recorded (everything came from the local caches).</p>"
    lines = [
        "<h2>Downloads</h2><table><tr><th>kind</th><th>file</th><th>source</th><th>size</th></tr>"
    ]
    for item in downloads:
        lines.append(
            f"<tr><td>{_e(item['kind'])}</td><td>{_e(item['name'])}</td>"
            f"<td>{_e(item['source'])}</td><td>{_e(_size(item['bytes']))}</td></tr>"
        )
    return "\n".join(lines) + "</table>"


def _size(count: int | None) -> str:
    if count is None:
        return "?"
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)
