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
from typing import Generic, TypeVar

from insar_pipeline.topsapp.steps import Phase

T = TypeVar("T")


@dataclass(frozen=True)
class PairPlan:
    """What is left to do for one pair, from its checkpoints."""

    pair_id: str
    position: int  # index in pairs.txt order
    phases_done: tuple[str, ...]
    remaining: tuple[Phase, ...]  # still to run (the first maybe trimmed)

    @property
    def finished(self) -> bool:
        return not self.remaining


def plan_pair(
    pair_id: str, position: int, phases: Sequence[Phase], remaining: Sequence[Phase]
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


class DispatchQueue(Generic[T]):
    """The pairs waiting for a slot, in dispatch order (a deque: taking the first is O(1))."""

    def __init__(self, items: Iterable[T], key: Callable[[T], str]) -> None:
        self._items: deque[T] = deque(items)
        self._key = key

    def __len__(self) -> int:
        return len(self._items)

    def pop_ready(self, is_ready: Callable[[str], bool] = lambda pair_id: True) -> T | None:
        """The first item whose pair is ready, removed from the queue; None if none is."""
        for index, item in enumerate(self._items):
            if is_ready(self._key(item)):
                if index == 0:
                    return self._items.popleft()
                del self._items[index]
                return item
        return None

    def requeue(self, item: T) -> None:
        """Put a held-back pair first again (it keeps its priority)."""
        self._items.appendleft(item)

    def drain(self) -> list[T]:
        items, self._items = list(self._items), deque()
        return items


def exit_code_of(done: int, failed: int, interrupted: bool) -> int:
    """SPEC.md section 3: 130 interrupted, 1 when any pair failed, else 0."""
    if interrupted:
        return 130
    return 1 if failed else 0
