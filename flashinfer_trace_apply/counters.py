"""Per-API dispatch counters that are exact under threads without a lock.

Each counter is an ``itertools.count``: advancing it is a single C call that
the interpreter never interrupts, so concurrent callers cannot lose updates,
and the hot path pays one call instead of a lock round-trip.
"""

from __future__ import annotations

import itertools
from typing import Callable, Dict

from .compile_marks import constant_under_compile

HIT = "hit"
FALLBACK_NO_CANDIDATE = "fallback_no_candidate"
FALLBACK_UNWARMED_IN_CAPTURE = "fallback_unwarmed_in_capture"
FALLBACK_DTYPE_MISMATCH = "fallback_dtype_mismatch"
FALLBACK_UNSUPPORTED_ARCH = "fallback_unsupported_arch"
FALLBACK_CONSTRAINT = "fallback_constraint"
# The call set an argument the routed solution cannot receive (see arguments.py).
FALLBACK_UNACCEPTED_ARGUMENT = "fallback_unaccepted_argument"
# The routed solution (or its import) called the API it replaces.
FALLBACK_INSIDE_SOLUTION = "fallback_inside_solution"
ERROR = "error"
# Always reported for an API that saw calls; the rarer fallbacks only when they happened.
STATUSES = (HIT, FALLBACK_NO_CANDIDATE, FALLBACK_UNWARMED_IN_CAPTURE, ERROR)


def _value(counter: "itertools.count[int]") -> int:
    # repr(count(n)) is "count(n)": reads without advancing. (__reduce__ would
    # too, but it warns from Python 3.12 and goes away in 3.14.)
    return int(repr(counter)[len("count("):-1])


class StatsBoard:
    """Counters for one enable session: ``board.ticker(api, status)`` returns
    the function the dispatch code calls once per event."""

    def __init__(self) -> None:
        self._counters: Dict[str, Dict[str, "itertools.count[int]"]] = {}

    def ticker(self, api: str, status: str) -> Callable[[], int]:
        per_api = self._counters.setdefault(api, {})
        counter = per_api.get(status)
        if counter is None:
            counter = per_api[status] = itertools.count()
        return _traceable(counter.__next__)

    def snapshot(self) -> Dict[str, Dict[str, int]]:
        out: Dict[str, Dict[str, int]] = {}
        for api, per_api in list(self._counters.items()):
            counts = {status: _value(c) for status, c in list(per_api.items())}
            if any(counts.values()):
                out[api] = {status: counts.get(status, 0) for status in STATUSES}
                for status, n in counts.items():
                    if n:  # a rarer fallback: shown once it happened
                        out[api].setdefault(status, n)
        return out


def _traceable(advance: Callable[[], int]) -> Callable[[], int]:
    """``advance`` in a plain Python function marked for torch.compile as
    giving a constant: Dynamo runs it once when it traces a call (the call is
    counted then) instead of failing on the C method (torch 2.11 has no rule
    for ``itertools.count.__next__``: a graph break, an error under
    ``fullgraph=True``). So a compiled function's calls count once per
    trace, eager calls every time."""

    def tick() -> int:
        return advance()

    return constant_under_compile(tick)
