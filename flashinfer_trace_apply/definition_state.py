"""Each definition's health in this process: a circuit breaker over its
solution's errors (closed / open / half-open, for ``on_error: fallback``) and
whether verification turned it off. Read by ``fita.health()`` and the stats
files; changed only on calls that already take a guarded entry, never on a
plain hit."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional

from .policy_settings import Breaker
from .warn import warn

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class DefinitionHealth:
    def __init__(self, name: str, breaker: Breaker, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.breaker = breaker
        self.clock = clock
        self.state = CLOSED
        self.off_reason: Optional[str] = None  # set once verification found a mismatch
        self.errors_total = 0
        self.verified_shapes = 0
        self._recent: Deque[float] = deque()
        self._opened_at = 0.0
        self._probing = False
        self._lock = threading.Lock()
        self._warned = False
        self._demoters: List[Callable[[], None]] = []  # put each promoted shape back on the original

    # -- the circuit -------------------------------------------------------
    def allows_solution(self) -> bool:
        """Closed: yes. Open: no, until the cooldown has passed; then one
        caller gets to probe (half-open) while the others keep falling back."""
        if self.state == CLOSED:
            return True
        with self._lock:
            if self.state == OPEN and self.clock() - self._opened_at >= self.breaker.cooldown_s:
                self.state = HALF_OPEN
            if self.state == HALF_OPEN and not self._probing:
                self._probing = True
                return True
            return False

    def record_success(self) -> None:
        if self.state != CLOSED:
            with self._lock:
                self.state, self._probing = CLOSED, False
                self._recent.clear()

    def record_error(self, api: str, exc: BaseException) -> None:
        with self._lock:
            now = self.clock()
            self.errors_total += 1
            if not self._warned:
                self._warned = True
                warn(
                    f"{api}: solution for {self.name} raised {type(exc).__name__}: {exc}; FlashInfer's kernel ran "
                    f"instead (on_error: fallback). After {self.breaker.errors} errors within "
                    f"{self.breaker.window_s:g} s the solution is off for {self.breaker.cooldown_s:g} s",
                    stacklevel=5,
                )
            if self.state == HALF_OPEN:
                self.state, self._opened_at, self._probing = OPEN, now, False
                return
            self._recent.append(now)
            while self._recent and now - self._recent[0] > self.breaker.window_s:
                self._recent.popleft()
            if len(self._recent) >= self.breaker.errors:
                self.state, self._opened_at = OPEN, now
                self._recent.clear()
                warn(f"{self.name}: circuit open after {self.breaker.errors} errors; FlashInfer's kernel serves it "
                     f"for {self.breaker.cooldown_s:g} s, then one call probes the solution again", stacklevel=5)

    # -- verification ---------------------------------------------------------
    def add_demoter(self, demote: Callable[[], None]) -> None:
        with self._lock:
            self._demoters.append(demote)
        if self.off_reason is not None:
            demote()

    def turn_off(self, reason: str) -> bool:
        """Off for the process: every shape already promoted to the plain
        solution goes back to the original. True the first time (the caller
        warns once)."""
        with self._lock:
            if self.off_reason is not None:
                return False
            self.off_reason = reason
            demoters, self._demoters = self._demoters, []
        for demote in demoters:
            demote()
        return True

    def snapshot(self) -> Dict[str, Any]:
        return {
            "circuit": self.state,
            "off": self.off_reason,
            "errors": self.errors_total,
            "verified_shapes": self.verified_shapes,
        }


class HealthBoard:
    """The health of every guarded definition of one enable session."""

    def __init__(self) -> None:
        self._by_name: Dict[str, DefinitionHealth] = {}
        self._lock = threading.Lock()

    def get(self, name: str, breaker: Breaker) -> DefinitionHealth:
        with self._lock:
            health = self._by_name.get(name)
            if health is None:
                health = self._by_name[name] = DefinitionHealth(name, breaker)
            return health

    def snapshot(self) -> Dict[str, Dict[str, Any]]:
        with self._lock:
            return {name: h.snapshot() for name, h in sorted(self._by_name.items())}
