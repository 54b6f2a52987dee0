"""The pairs.txt grammar (SPEC.md section 4), pure: text in, names and line problems out.

One pair per line: `("A.SAFE", "B.SAFE")` as in the seed, or the two names separated by a comma or
white space, with or without quotes, brackets and `.SAFE`/`.zip`. `#` starts a comment. A name is a
file name in data/raw, never a path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from insar_pipeline.errors import InputError

# What a name may look like once its quotes are gone: a file name in data/raw, nothing more.
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
SUFFIX_RE = re.compile(r"\.(safe|zip)$", re.IGNORECASE)
# Every character of a line falls in one alternative: separators, a quoted name, a bare name,
# or a quote that is never closed.
TOKEN_RE = re.compile(
    r"""[\s,]+|"(?P<double>[^"]*)"|'(?P<single>[^']*)'|(?P<bare>[^\s,"']+)|(?P<unclosed>["'])"""
)


@dataclass(frozen=True)
class PairLine:
    """One pair as written in pairs.txt: two product names, `.SAFE`/`.zip` removed."""

    line: int
    first: str
    second: str


@dataclass(frozen=True)
class Problem:
    """Something wrong (or worth a warning) on one line of pairs.txt."""

    line: int
    message: str

    def render(self, filename: str) -> str:
        return f"{filename}:{self.line}: {self.message}"


def split_pairs_text(text: str) -> tuple[list[PairLine], list[Problem]]:
    """The pairs of a pairs.txt text and its grammar errors (pure)."""
    entries, problems = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        body = raw.split("#", 1)[0].strip()
        if not body:
            continue
        try:
            first, second = _parse_line(body)
        except ValueError as err:
            problems.append(Problem(number, str(err)))
            continue
        entries.append(PairLine(number, first, second))
    return entries, problems


def parse_pairs_text(text: str, filename: str = "pairs.txt") -> list[PairLine]:
    """The pairs of a pairs.txt text; InputError listing every bad line."""
    entries, problems = split_pairs_text(text)
    if problems:
        raise InputError("\n".join(problem.render(filename) for problem in problems))
    return entries


def _parse_line(body: str) -> tuple[str, str]:
    """`("a.SAFE", "b.SAFE")`, `a, b`, `'a' b`... -> ("a", "b")."""
    body = body.rstrip(",").strip()  # a line copied from a Python list of tuples
    if body and body[0] in "([":
        closing = ")" if body[0] == "(" else "]"
        if not body.endswith(closing):
            raise ValueError(f'{body[0]!r} is never closed; write ("A.SAFE", "B.SAFE")')
        body = body[1:-1]
    tokens = _tokens(body)
    if len(tokens) != 2:
        found = ", ".join(repr(token) for token in tokens) or "none"
        raise ValueError(f"expected two product names (one pair per line), found {found}")
    return _clean_name(tokens[0]), _clean_name(tokens[1])


def _tokens(body: str) -> list[str]:
    """Names separated by commas and/or white space, each optionally in matching quotes."""
    tokens = []
    for match in TOKEN_RE.finditer(body):
        if match["unclosed"]:
            raise ValueError(f"unclosed quote {match['unclosed']} in {body!r}")
        token = next(
            (match[kind] for kind in ("double", "single", "bare") if match[kind] is not None), None
        )
        if token is not None:
            tokens.append(token.strip())
    return tokens


def _clean_name(token: str) -> str:
    if any(quote in token for quote in "\"'()[]"):
        raise ValueError(f"unexpected quote or bracket in {token!r}")
    if not NAME_RE.fullmatch(token) or ".." in token:
        raise ValueError(
            f"{token!r}: names must be product names in data/raw (no folders, paths or '..')"
        )
    return SUFFIX_RE.sub("", token)
