"""Turn a routing target (a callable or a Solution) into something callable.

The dispatcher may ask for the same solution from many threads at once (for
example the first forward pass of a multi-threaded server). Importing or
compiling is slow and must not run twice, so each distinct solution is loaded
once per process behind its own lock, while unrelated solutions still load in
parallel. Only successes are cached: a failure is re-raised to every caller
and retried on the next request, so a fixed environment needs no restart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import SolutionLoadError
from ..solution import Solution
from .cpp_family import load_cpp
from .materialize import materialize
from .python_family import load_python

__all__ = [
    "LoadedSolution",
    "load",
    "clear_cache",
    "materialize",
    "load_python",
    "load_cpp",
]


@dataclass(frozen=True)
class LoadedSolution:
    """A ready-to-call target plus how the dispatcher must call it.

    ``positional``: pass the definition's inputs positionally (compiled
    TVM-FFI/torch functions have no keyword names) rather than by keyword.
    ``destination_passing``: the function writes into output tensors passed
    after the inputs and returns nothing, instead of returning the outputs.
    """

    fn: Callable[..., Any]
    positional: bool
    destination_passing: bool
    solution: Solution | None
    label: str


# key -> loaded entry function; only successful loads are stored.
_cache: dict[Hashable, Callable[..., Any]] = {}
# key -> lock serializing loads of that key; created under _locks_guard.
_locks: dict[Hashable, threading.Lock] = {}
_locks_guard = threading.Lock()


def _load_once(key: Hashable, build: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
    fn = _cache.get(key)  # fast path: a dict read is atomic under the GIL
    if fn is not None:
        return fn
    with _locks_guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        # Re-check: another thread may have finished while we waited.
        fn = _cache.get(key)
        if fn is None:
            fn = build()
            _cache[key] = fn
    with _locks_guard:
        # Loaded for good; later callers take the fast path. A waiter still
        # holding this lock object is unaffected.
        if _locks.get(key) is lock:
            del _locks[key]
    return fn


def _label_of(fn: Callable[..., Any]) -> str:
    label = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    # functools.partial and other callable objects have neither.
    return label if isinstance(label, str) else type(fn).__qualname__


def load(value: object, definition: str) -> LoadedSolution:
    """Load ``value`` for ``definition``; raise ``SolutionLoadError`` on failure.

    ``value`` is either a plain callable (used as is: called with keyword
    arguments, returns its outputs) or anything ``Solution.coerce`` accepts.
    """
    if callable(value) and not isinstance(value, (Solution, Mapping)):
        # Nothing to load, so nothing cached: the process keeps no reference
        # to a callable once the session that registered it ends.
        fn = value
        return LoadedSolution(
            fn=fn,
            positional=False,
            destination_passing=False,
            solution=None,
            label=_label_of(fn),
        )

    try:
        solution = Solution.coerce(value)
    except Exception as exc:
        name = getattr(value, "name", None)
        if not isinstance(name, str):
            name = value.get("name") if isinstance(value, Mapping) else None
        if not isinstance(name, str):
            name = f"<{type(value).__name__}>"
        raise SolutionLoadError.from_cause(name, definition, exc) from exc

    def build() -> Callable[..., Any]:
        if solution.spec.is_python_family:
            return load_python(solution, definition)
        return load_cpp(solution, definition)

    try:
        fn = _load_once(("solution", solution.content_hash()), build)
    except SolutionLoadError:
        raise  # already says which solution and definition
    except Exception as exc:
        raise SolutionLoadError.from_cause(solution.name, definition, exc) from exc
    destination_passing = solution.spec.destination_passing_style
    if destination_passing is None:
        # Not stated, and no Definition decided it when it was read.
        from ..calling_style import decide_loaded  # noqa: PLC0415

        destination_passing = decide_loaded(fn, solution, definition)
    # Built fresh each time (cheap) because name, definition and the
    # destination-passing flag are not part of the cache key.
    return LoadedSolution(
        fn=fn,
        positional=not solution.spec.is_python_family,
        destination_passing=destination_passing,
        solution=solution,
        label=solution.name,
    )


def clear_cache() -> None:
    """Forget every loaded solution (tests). Imported modules stay imported."""
    with _locks_guard:
        _cache.clear()
        _locks.clear()
