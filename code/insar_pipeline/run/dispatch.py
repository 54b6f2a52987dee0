"""Pure planning of a run's dispatch: what is left per pair, in which order pairs start.

Order (issue #5): unfinished pairs first, by fewest remaining phases, so that resumed work
finishes (and frees its disk) first; then pairs.txt order. `DispatchQueue` hands out the next
pair that is ready; a pair may be held back (a predicate) and re-queued, which is where a
"wait for a donor's geometry" dependency between pairs plugs in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PairPlan:
    """What is left to do for one pair, from its checkpoints."""

    pair_id: str
    position: int  # index in pairs.txt order
    phases_done: tuple[str, ...]
    remaining: tuple[Any, ...]  # topsapp.Phase records still to run (the first maybe trimmed)

    @property
    def finished(self) -> bool:
        return not self.remaining


def plan_pair(
    pair_id: str, position: int, phases: Sequence[Any], remaining: Sequence[Any]
) -> PairPlan:
    """A pair's plan from the full phase table and `topsapp.remaining_phases`' answer.

    A phase returned trimmed (partly finished) still counts as remaining, not done.
    """
    left = {phase.name for phase in remaining}
    done = tuple(phase.name for phase in phases if phase.name not in left)
    return PairPlan(pair_id, position, done, tuple(remaining))


def dispatch_order(plans: Iterable[PairPlan]) -> list[PairPlan]:
    """Pairs with work left: fewest remaining phases first, then pairs.txt order (stable)."""
    return sorted(
        (plan for plan in plans if not plan.finished),
        key=lambda plan: (len(plan.remaining), plan.position),
    )


class DispatchQueue:
    """The pairs waiting for a slot, in dispatch order (a deque: taking the first is O(1))."""

    def __init__(self, items: Iterable[Any], key: Callable[[Any], str]) -> None:
        self._items: deque[Any] = deque(items)
        self._key = key

    def __len__(self) -> int:
        return len(self._items)

    def pop_ready(self, is_ready: Callable[[str], bool] = lambda pair_id: True) -> Any | None:
        """The first item whose pair is ready, removed from the queue; None if none is."""
        for index, item in enumerate(self._items):
            if is_ready(self._key(item)):
                if index == 0:
                    return self._items.popleft()
                del self._items[index]
                return item
        return None

    def requeue(self, item: Any) -> None:
        """Put a held-back pair first again (it keeps its priority)."""
        self._items.appendleft(item)

    def drain(self) -> list[Any]:
        items, self._items = list(self._items), deque()
        return items


def exit_code_of(done: int, failed: int, interrupted: bool) -> int:
    """SPEC.md section 3: 130 interrupted, 1 when any pair failed, else 0."""
    if interrupted:
        return 130
    return 1 if failed else 0


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], last_width: int = 60) -> str:
    """A plain aligned table; the last column (free text) is cut to `last_width`."""
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header) - 1)]
    lines = []
    for row in (header, *rows):
        last = str(row[-1])
        last = last if len(last) <= last_width else last[: last_width - 1] + "…"
        cells = [str(cell).ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, last]).rstrip())
    return "\n".join(lines)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
