"""pairs.txt: validation against data/raw and pair ids (SPEC.md section 4).

The grammar is in `pairs_text` (re-exported here). `pair_problems` and `build_pairs` are pure;
`load_pairs` reads the file and the products and raises one InputError that lists every
`pairs.txt:LINE: problem`.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from insar_pipeline.errors import InputError
from insar_pipeline.inputs.pairs_text import Problem, split_pairs_text
from insar_pipeline.inputs.safe import Product, read_product, scan_raw

if TYPE_CHECKING:
    from insar_pipeline.inputs.config import Settings


log = logging.getLogger(__name__)

MAX_SUGGESTIONS = 20  # "did you mean" costs a fuzzy search over data/raw; only for the first few


@dataclass(frozen=True)
class Pair:
    """A validated interferometric pair, reference (earlier) first."""

    id: str  # YYYYMMDD_YYYYMMDD, disambiguated when two products share a date
    reference: Product
    secondary: Product
    swaths: tuple[int, ...]  # settings.swaths present in both products
    line: int  # line of pairs.txt it came from (0 when generated)

    @property
    def products(self) -> tuple[Product, Product]:
        return (self.reference, self.secondary)


def pair_problems(first: Product, second: Product, polarization: str) -> list[str]:
    """Why two products cannot form an interferogram; empty when they can (pure)."""
    problems = []
    if first.name == second.name:
        return [f"both names are the same product {first.name}"]
    for product in (first, second):
        if (product.mode, product.product_type) != ("IW", "SLC"):
            problems.append(
                f"{product.name} is an {product.mode} {product.product_type} product; "
                "only IW SLC products can be paired"
            )
    if first.relative_orbit != second.relative_orbit:
        problems.append(
            f"the products are on different tracks (relative orbit {first.relative_orbit}"
            f" and {second.relative_orbit})"
        )
    if polarization not in first.polarizations or polarization not in second.polarizations:
        problems.append(
            f"POLARIZATION={polarization} is not in both products ({first.name} has "
            f"{_pols(first)}, {second.name} has {_pols(second)})"
        )
    if first.date == second.date:
        problems.append(f"both products were acquired on {first.date}; a pair needs two dates")
    return problems


def _pols(product: Product) -> str:
    return "+".join(pol.upper() for pol in product.polarizations) or "none"


def pair_id(reference: Product, secondary: Product) -> str:
    return f"{reference.start:%Y%m%d}_{secondary.start:%Y%m%d}"


def build_pairs(
    candidates: Iterable[tuple[int, Product, Product]],
    swaths: Sequence[int],
    polarization: str,
) -> tuple[list[Pair], list[Problem], list[Problem]]:
    """Validate (line, first, second) candidates into pairs (pure).

    Returns (pairs, errors, warnings). Earlier date first (swapped with a warning), duplicates
    dropped with a warning, swaths narrowed to those in both products. Ids are disambiguated in
    file order (so appending lines never renames an existing pair), see `_unique_id`.
    """
    pairs: list[Pair] = []
    errors: list[Problem] = []
    warnings: list[Problem] = []
    seen: dict[tuple[Path, Path], int] = {}
    taken: set[str] = set()
    renamed: list[Pair] = []
    for line, first, second in candidates:
        problems = pair_problems(first, second, polarization)
        errors.extend(Problem(line, message) for message in problems)
        if problems:
            continue
        if second.start < first.start:
            warnings.append(Problem(line, f"{second.name} is the earlier date; swapped"))
            first, second = second, first
        key = (first.path, second.path)
        if key in seen:
            warnings.append(Problem(line, f"duplicate of line {seen[key]}; dropped"))
            continue
        seen[key] = line
        kept = tuple(s for s in swaths if s in first.swaths and s in second.swaths)
        if not kept:
            errors.append(Problem(line, _no_swath(swaths, first, second)))
            continue
        if kept != tuple(swaths):
            left = ", ".join(f"IW{s}" for s in swaths if s not in kept)
            warnings.append(Problem(line, f"{left} left out: not in both products"))
        pairs.append(Pair(_unique_id(first, second, taken), first, second, kept, line))
        if pairs[-1].id != pair_id(first, second):
            renamed.append(pairs[-1])
    if renamed:
        # One line, not one per pair: a batch over many tracks renames most of its pairs.
        warnings.append(Problem(renamed[0].line, (
            f"{len(renamed)} pair(s) share their dates with an earlier pair (other tracks or"
            f" frames); their ids get the reference start time, e.g. {renamed[0].id}"
        )))  # fmt: skip
    return pairs, errors, warnings


def _no_swath(swaths: Sequence[int], first: Product, second: Product) -> str:
    def names(items: Iterable[int]) -> str:
        return ",".join(f"IW{s}" for s in items) or "none"

    return (
        f"no swath of SWATHS={','.join(map(str, swaths))} is in both products "
        f"({first.name} has {names(first.swaths)}, {second.name} has {names(second.swaths)})"
    )


def _unique_id(reference: Product, secondary: Product, taken: set[str]) -> str:
    """`YYYYMMDD_YYYYMMDD`; when an earlier pair holds it (other tracks or frames on the same
    dates), the reference's start time of day is appended, then a counter if still taken."""
    base = pair_id(reference, secondary)
    candidates = [base, f"{base}_{reference.start:%H%M%S}"]
    number = 2
    while all(candidate in taken for candidate in candidates):
        candidates.append(f"{candidates[1]}_{number}")
        number += 1
    identifier = next(candidate for candidate in candidates if candidate not in taken)
    taken.add(identifier)
    return identifier


def load_pairs(settings: Settings) -> list[Pair]:
    """Read pairs.txt, resolve its names in data/raw, read and validate the products.

    Each product is read once however many pairs use it. Raises one InputError listing
    every `pairs.txt:LINE: problem`; warnings (swaps, duplicates, swaths left out) are logged.
    """
    filename = str(settings.pairs_file)
    entries, problems = split_pairs_text(_read_text(settings.pairs_file))
    resolver = _Resolver(settings.raw_dir)
    candidates: list[tuple[int, Product, Product]] = []
    for entry in entries:
        products, messages = resolver.products(entry.first, entry.second)
        problems.extend(Problem(entry.line, message) for message in messages)
        if not messages:
            candidates.append((entry.line, products[0], products[1]))
    pairs, errors, warnings = build_pairs(candidates, settings.swaths, settings.polarization)
    problems = sorted(problems + errors, key=lambda problem: problem.line)
    if problems:
        raise InputError("\n".join(problem.render(filename) for problem in problems))
    for warning in warnings:
        log.warning("%s", warning.render(filename))
    if not pairs:
        raise InputError(
            f'{filename} lists no pair; write one pair per line, e.g. ("A.SAFE", "B.SAFE"),'
            " or generate them with `main_parallel.py pairs`"
        )
    return select_pairs(pairs, settings.only, filename)


def select_pairs(pairs: list[Pair], only: Sequence[str], filename: str) -> list[Pair]:
    """The pairs named by --only (all when empty); an unknown id is an InputError."""
    if not only:
        return pairs
    known = {pair.id for pair in pairs}
    unknown = [identifier for identifier in only if identifier not in known]
    if unknown:
        examples = ", ".join(sorted(known)[:5])
        raise InputError(
            f"--only {', '.join(unknown)}: no such pair id in {filename} (ids there: {examples}"
            f"{', ...' if len(known) > 5 else ''})"
        )
    wanted = set(only)
    return [pair for pair in pairs if pair.id in wanted]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(
            f"{path} not found; write one pair per line (see the example pairs.txt)"
            " or generate one with `main_parallel.py pairs`"
        ) from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read it ({err.strerror or err})") from err


class _Resolver:
    """Names -> products in data/raw, each product read once (reading is the slow part)."""

    def __init__(self, raw_dir: Path) -> None:
        if not raw_dir.is_dir():
            raise InputError(f"{raw_dir} does not exist; put the .SAFE folders or .zip files there")
        self.raw_dir = raw_dir
        self.index = scan_raw(raw_dir)
        self.read: dict[Path, Product | InputError] = {}
        self.suggested = 0

    def products(self, *names: str) -> tuple[list[Product], list[str]]:
        products, errors = [], []
        for name in names:
            path = self.index.get(name)
            if path is None:
                errors.append(self._missing(name))
                continue
            if path not in self.read:
                try:
                    self.read[path] = read_product(path)
                except InputError as err:
                    self.read[path] = err
            result = self.read[path]
            if isinstance(result, InputError):
                errors.append(str(result))
            else:
                products.append(result)
        return products, errors

    def _missing(self, name: str) -> str:
        message = f"{name} is not in {self.raw_dir} (no {name}.SAFE folder or {name}.zip file)"
        if self.suggested < MAX_SUGGESTIONS:
            self.suggested += 1
            close = difflib.get_close_matches(name, list(self.index), n=1, cutoff=0.9)
            if close:
                message += f"; did you mean {close[0]}?"
        return message
