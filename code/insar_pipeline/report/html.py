"""`report`: `data/runs/report.html`, assembled from the ledger and the quicklooks on disk.

A summary with the counts, the failures first (with the last lines of each failing log), the
pairs in a sortable table, the downloads; quicklooks are the PNGs the workers rendered in
`<pair>/quicklooks/` (`report --render` draws those missing), linked as files and loaded lazily,
never embedded. Up to PAGE_SIZE pairs everything is on report.html; a larger batch gets pages of
PAGE_SIZE pairs each (`report/pairs-0001.html`, ...: table and quicklooks of those pairs, failed
pairs on the first pages), so that no page holds more than a few hundred images. Rows are read
from the ledger with a cursor, page by page. It opens offline: no external file, no network.
Every string that comes from a log, a ledger or a file name is escaped.
"""

from __future__ import annotations

import argparse
import html
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from insar_pipeline._io import FILE_MODE, write_text
from insar_pipeline.inputs.config import Settings
from insar_pipeline.ledger.lock import lock_holder
from insar_pipeline.ledger.store import Ledger, PairRow, Record
from insar_pipeline.logs import mask_secrets
from insar_pipeline.pair.decisions import WITHOUT_ESD_NOTE
from insar_pipeline.report.quicklook import (
    QUICKLOOK_DIR,
    ProductView,
    existing_quicklooks,
    render_finished_pair,
)
from insar_pipeline.report.text import format_duration
from insar_pipeline.timeseries.page import timeseries_links

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
PAGES_DIR = "report"  # runs/report/pairs-0001.html, ... for batches of more than PAGE_SIZE
PAGE_SIZE = 100  # pairs per page: at most 3 x PAGE_SIZE quicklooks on one page
FAILURES_LISTED = 200  # failures in the index's table (all of them are on the first pages)
FAILURE_TAILS = 50  # failures shown with the last lines of their log
TAIL_LINES = 20
STATES = ("failed", "running", "pending", "done")
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}th{background:#eee}
td{overflow-wrap:anywhere}th.sort{cursor:pointer}th.sort:after{content:" \\2195";color:#888}
.done{color:#176b2c}.failed{color:#b00020}.pending,.running{color:#8a6d00}
pre{background:#f6f6f6;padding:.5em;max-width:100em;overflow-x:auto;font-size:85%;margin:0}
.looks{display:flex;flex-wrap:wrap;gap:1em}.looks figure{margin:0}.looks img{max-width:32em}
nav a{margin-right:1em}
"""
# Click a column header to sort the table's rows by it (numbers by data-v), again to reverse.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.classList.add("sort");
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var up = th.getAttribute("data-dir") !== "up";
      th.setAttribute("data-dir", up ? "up" : "down");
      var key = function (row) {
        var cell = row.cells[column];
        var value = cell.getAttribute("data-v");
        return value === null ? cell.textContent : parseFloat(value);
      };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        var order = typeof x === "number" ? x - y : String(x).localeCompare(String(y));
        return up ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


@dataclass(frozen=True)
class Page:
    """One page of pairs: its number (1-based), its rows, the quicklooks of its done pairs."""

    number: int
    rows: tuple[PairRow, ...]
    looks: dict[str, list[ProductView]]


def report_command(settings: Settings, args: argparse.Namespace) -> int:
    path = write_report(settings, render=bool(getattr(args, "render", False)))
    sys.stdout.write(f"{path}\n")
    return 0


def write_report(settings: Settings, render: bool = False) -> Path:
    """(Re)write runs_dir/report.html (and its pages) atomically from the ledger and the
    quicklooks on disk; `render` first draws the quicklooks a finished pair lacks (pairs
    finished by an older version), as the workers do for new ones."""
    runs_dir = settings.runs_dir
    active = lock_holder(runs_dir) not in (None, os.getpid())
    ledger = Ledger.open_reader(runs_dir)
    written: list[Path] = []
    if ledger is None:
        page = _document("InSAR pipeline report", [_header(runs_dir, active), _summary(None, {})])
    else:
        try:
            ledger.conn.execute("BEGIN")  # one snapshot for the counts and the rows
            page = _write_pages(settings, ledger, active, render, written)
        finally:
            ledger.close()
    path = runs_dir / REPORT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, page)
    _remove_stale_pages(runs_dir / PAGES_DIR, set(written))
    log.info("report written: %s (%d more pages)", path, len(written))
    return path


def _write_pages(
    settings: Settings, ledger: Ledger, active: bool, render: bool, written: list[Path]
) -> str:
    """Write the pages of a large batch; return report.html's text."""
    runs_dir = settings.runs_dir
    counts = ledger.pair_counts()
    total = sum(counts.values())
    paged = total > PAGE_SIZE
    pages = _pages(settings, ledger.iter_pairs(failures_first=True), render)
    failed = list(ledger.iter_pairs(states=("failed",), limit=FAILURES_LISTED))
    tails = {row.pair_id: _tail(ledger, row, runs_dir) for row in failed[:FAILURE_TAILS]}
    parts = [
        _header(runs_dir, active),
        _summary(ledger.latest_run(), counts, len(ledger.geometry_sources()), ledger.without_esd()),
        _failures(failed, counts.get("failed", 0), tails, paged),
    ]
    if not paged:
        page = next(pages, Page(1, (), {}))
        parts += ["<h2>Pairs</h2>", _pairs_table(page.rows, page.looks), _quicklooks(page, "")]
    else:
        index = []  # a line per page, not the pages: their rows are gone once written
        where = str(runs_dir.resolve())
        for page in pages:
            path = runs_dir / PAGES_DIR / _page_name(page.number)
            _write_page(path, _page_html(page, _page_count(total), where))
            written.append(path)
            index.append(_page_line(page))
        parts.append(_page_index(index))
    parts.append(timeseries_links(runs_dir))
    parts.append(_downloads(ledger.downloads()))
    return _document("InSAR pipeline report", parts)


def _pages(settings: Settings, rows: Iterator[PairRow], render: bool) -> Iterator[Page]:
    """The pairs, PAGE_SIZE at a time, with the quicklooks of their done pairs."""
    runs_dir = str(settings.runs_dir)
    for number in range(1, sys.maxsize):
        chunk = tuple(islice(rows, PAGE_SIZE))
        if not chunk:
            return
        looks = {}
        for row in chunk:
            if row.status != "done":
                continue
            if render and settings.run_dir(row.pair_id).is_dir():
                render_finished_pair(settings.run_dir(row.pair_id), row.pair_id)
            looks[row.pair_id] = existing_quicklooks(f"{runs_dir}/{row.pair_id}")
        yield Page(number, chunk, looks)


def _page_count(total: int) -> int:
    return max(1, -(-total // PAGE_SIZE))


def _page_name(number: int) -> str:
    return f"pairs-{number:04d}.html"


def _page_html(page: Page, pages: int, runs_dir: str) -> str:
    first, last = page.rows[0], page.rows[-1]
    nav = ["<nav><a href='../report.html'>summary</a>"]
    if page.number > 1:
        nav.append(f"<a href='{_page_name(page.number - 1)}'>previous</a>")
    if page.number < pages:
        nav.append(f"<a href='{_page_name(page.number + 1)}'>next</a>")
    nav.append(f"page {page.number} of {pages}</nav>")
    return _document(
        f"InSAR pipeline report: pairs page {page.number}",
        [
            f"<h1>Pairs {_e(first.pair_id)} … {_e(last.pair_id)}</h1>",
            f"<p>{_e(runs_dir)}</p>",
            "".join(nav),
            _pairs_table(page.rows, page.looks),
            _quicklooks(page, "../"),
            "".join(nav),
        ],
    )


def _page_line(page: Page) -> str:
    """The row of the page index that links a page (its pair range and its states)."""
    states = [sum(row.status == state for row in page.rows) for state in STATES]
    name = f"{PAGES_DIR}/{_page_name(page.number)}"
    return (
        f"<tr><td data-v='{page.number}'><a href='{_e(name)}'>{page.number}</a></td>"
        f"<td>{_e(page.rows[0].pair_id)} … {_e(page.rows[-1].pair_id)}</td>"
        + "".join(f"<td data-v='{count}'>{count}</td>" for count in states)
        + "</tr>"
    )


def _page_index(lines: Sequence[str]) -> str:
    return (
        "\n".join(
            [
                "<h2>Pairs</h2><p>Failed pairs first, then running, pending and done ones; "
                f"{PAGE_SIZE} pairs and their quicklooks per page.</p>",
                "<table class='sortable'><thead><tr><th>page</th><th>pairs</th><th>failed</th>"
                "<th>running</th><th>pending</th><th>done</th></tr></thead><tbody>",
                *lines,
            ]
        )
        + "</tbody></table>"
    )


def _document(title: str, parts: Iterable[str]) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>{_e(title)}</title>",
            f"<style>{STYLE}</style></head><body>",
            *parts,
            f"<script type='text/javascript'>{SORT_SCRIPT}</script>",
            "</body></html>",
        ]
    )


def _header(runs_dir: Path, active: bool) -> str:
    return (
        "<h1>InSAR pipeline report</h1>"
        f"<p>{_e(str(runs_dir.resolve()))} — written {_e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}"
        + (" — <b>a run is in progress</b>" if active else "")
        + "</p>"
    )


def _summary(
    run: Record | None, counts: dict[str, int], reused: int = 0, without_esd: Sequence[str] = ()
) -> str:
    shown = {state: 0 for state in ("done", "failed", "running", "pending")}
    for status, count in counts.items():
        shown[status if status in shown else "pending"] += count
    total = sum(shown.values())
    totals = ", ".join(f"<span class='{k}'>{v} {k}</span>" for k, v in shown.items())
    if run is None:
        return f"<h2>Summary</h2><p>No run yet. {total} pairs: {totals}</p>"
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
        f"<tr><th>pairs</th><td>{total}: {totals}</td></tr>"
        f"{_geometry_summary(reused)}{_esd_summary(without_esd)}</table>"
    )


def _esd_summary(without: Sequence[str]) -> str:
    """ESD=auto: the pairs that dropped ESD, whose products may show burst-boundary jumps."""
    if not without:
        return ""
    shown = ", ".join(without[:50]) + (
        f" and {len(without) - 50} more" if len(without) > 50 else ""
    )
    return (
        f"<tr><th>without ESD</th><td>{len(without)} pair{'s' * (len(without) != 1)} "
        f"{_e(WITHOUT_ESD_NOTE)} ({_e(shown)})</td></tr>"
    )


def _geometry_summary(reused: int) -> str:
    """Geometry reuse: how many pairs took another pair's topo output instead of running it."""
    if not reused:
        return ""
    return (
        f"<tr><th>geometry reuse</th><td>{reused} pair{'s' * (reused != 1)} took the geometry "
        "of another pair with the same reference (hard links; topo not run)</td></tr>"
    )


def _pairs_table(rows: Sequence[PairRow], looks: dict[str, list[ProductView]]) -> str:
    lines = [
        "<table class='sortable'><thead><tr><th>#</th><th>pair</th><th>reference</th>"
        "<th>secondary</th><th>state</th><th>phases done</th><th>topsApp time</th>"
        "<th>disk after cleaning</th><th>geometry</th><th>notes</th></tr></thead><tbody>"
    ]
    for row in rows:
        disk = (
            f"{_size(row.bytes_after_clean)} (from {_size(row.bytes_before_clean)})"
            if row.bytes_after_clean is not None
            else ""
        )
        pair = _e(row.pair_id)
        name = f"<a href='#ql-{pair}'>{pair}</a>" if looks.get(row.pair_id) else pair
        lines.append(
            f"<tr id='{pair}'><td data-v='{row.position or 0}'>{(row.position or 0) + 1}</td>"
            f"<td>{name}</td><td>{_e(row.reference)}</td><td>{_e(row.secondary)}</td>"
            f"<td class='{_e(row.status)}' data-v='{_rank(row.status)}'>{_e(row.status)}</td>"
            f"<td data-v='{len(row.phases_done)}'>{len(row.phases_done)}/{_e(row.phases_total)}"
            f"</td><td data-v='{row.wall_s or 0:.1f}'>{_e(format_duration(row.wall_s))}</td>"
            f"<td data-v='{row.bytes_after_clean or 0}'>{_e(disk)}</td>"
            f"<td>{_e(f'from {row.geometry_from}' if row.geometry_from else '')}</td>"
            f"<td>{_e(WITHOUT_ESD_NOTE if row.without_esd else '')}</td></tr>"
        )
    return "\n".join(lines) + "</tbody></table>"


def _rank(status: str) -> int:
    return STATES.index(status) if status in STATES else 2


def _failures(
    failed: Sequence[PairRow], count: int, tails: dict[str, str | None], paged: bool
) -> str:
    if not failed:
        return "<h2>Failures</h2><p>None.</p>"
    lines = [
        f"<h2>Failures</h2><p>{count} pair{'s' * (count != 1)} failed"
        + (
            f"; the first {len(failed)} are listed here, all on the pages"
            if count > len(failed)
            else ""
        )
        + ".</p>",  # fmt: skip
        "<table class='sortable'><thead><tr><th>pair</th><th>phase</th><th>reason</th>"
        "<th>last lines of the log</th></tr></thead><tbody>",
    ]
    for number, row in enumerate(failed):
        pair = _e(row.pair_id)
        # Failed pairs come first in the pages: the n-th failure is on page n // PAGE_SIZE + 1.
        target = f"{PAGES_DIR}/{_page_name(number // PAGE_SIZE + 1)}" if paged else ""
        tail = tails.get(row.pair_id)
        shown = f"<pre>{_e(mask_secrets(tail))}</pre>" if tail else ""
        lines.append(
            f"<tr><td><a href='{_e(target)}#{pair}'>{pair}</a></td>"
            f"<td>{_e(row.failed_phase or '')}</td><td>{_e(row.error or '')}</td>"
            f"<td>{shown}</td></tr>"
        )
    return "\n".join(lines) + "</tbody></table>"


def _tail(ledger: Ledger, row: PairRow, runs_dir: Path) -> str | None:
    return row.error_tail or _log_tail(ledger.phase_rows(row.pair_id), runs_dir / row.pair_id)


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


def _quicklooks(page: Page, up: str) -> str:
    """The page's quicklooks as lazily loaded image files (`up`: the way to runs_dir)."""
    lines = ["<h2>Quicklooks</h2>"]
    if not any(page.looks.values()):
        lines.append("<p>No quicklooks yet.</p>")
    for pair_id, items in page.looks.items():
        if not items:
            continue
        pair = _e(pair_id)  # once per pair: kinds and titles are the module's constants
        lines.append(f"<h3 id='ql-{pair}'>{pair}</h3><div class='looks'>")
        for look in items:
            lines.append(
                f"<figure><img loading='lazy' alt='{pair} {look.title}' "
                f"src='{_e(up)}{pair}/{QUICKLOOK_DIR}/{look.kind}.png' width='800'>"
                f"<figcaption>{look.title}</figcaption></figure>"
            )
        lines.append("</div>")
    return "\n".join(lines)


def _remove_stale_pages(folder: Path, keep: set[Path]) -> None:
    """Pages of an earlier, larger report (the batch shrank, or is small now)."""
    if not folder.is_dir():
        return
    for path in folder.glob("pairs-*.html"):
        if path not in keep:
            path.unlink(missing_ok=True)


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


def _write_page(path: Path, text: str) -> None:
    """A page, atomically (temp file, rename) but without `_io`'s fsyncs: a report of 100,000
    pairs writes 1,000 pages, each rewritten from the ledger by the next `report` if lost."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(temp).chmod(FILE_MODE)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
