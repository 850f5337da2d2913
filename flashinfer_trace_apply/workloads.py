"""The distinct call shapes each definition saw in this process, for checking
a folder on the shapes real traffic produces (``check --workloads DIR``) and
for FlashInfer-Bench workloads.

Recorded only while ``FLASHINFER_TRACE_APPLY_STATS_DIR`` is set, by an entry
that stands in front of a shape's hit (or guarded) entry for its first
``CALLS_PER_SHAPE`` calls, then steps aside: the steady-state hit path is
the plain one. A definition keeps at most ``SHAPES_PER_DEFINITION`` shapes.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

CALLS_PER_SHAPE = 1000
SHAPES_PER_DEFINITION = 64

Shape = Tuple[Tuple[Tuple[str, int], ...], Tuple[Tuple[str, str], ...]]  # (axes, input dtypes)


class WorkloadBook:
    def __init__(self) -> None:
        self._seen: Dict[str, Dict[Shape, None]] = {}  # insertion-ordered sets
        self._lock = threading.Lock()

    def full(self, definition: str) -> bool:
        return len(self._seen.get(definition, ())) >= SHAPES_PER_DEFINITION

    def record(self, definition: str, axes: Mapping[str, int], dtypes: Mapping[str, str]) -> None:
        shape: Shape = (tuple(sorted(axes.items())), tuple(sorted(dtypes.items())))
        with self._lock:
            seen = self._seen.setdefault(definition, {})
            if shape not in seen and len(seen) < SHAPES_PER_DEFINITION:
                seen[shape] = None

    def snapshot(self) -> Dict[str, List[Dict[str, Any]]]:
        with self._lock:
            return {
                name: [{"axes": dict(axes), "dtypes": dict(dtypes)} for axes, dtypes in shapes]
                for name, shapes in sorted(self._seen.items())
            }


def call_axes(template: Any, namespace: Mapping[str, Any]) -> Tuple[Dict[str, int], Dict[str, str]]:
    """Every axis a call's tensors carry, and each tensor input's dtype,
    read as the template describes its inputs."""
    axes: Dict[str, int] = {}
    dtypes: Dict[str, str] = {}
    for key, desc in (getattr(template, "inputs", None) or {}).items():
        names = getattr(desc, "dim_names", None)
        if names is None:
            continue
        value = namespace.get(getattr(desc, "param", None) or key)
        index = getattr(desc, "tuple_idx", None)
        if index is not None and isinstance(value, (tuple, list)) and len(value) > index:
            value = value[index]
        shape = getattr(value, "shape", None)
        if shape is None or len(shape) != len(names):
            continue
        for name, size in zip(names, shape):
            axes.setdefault(str(name), int(size))
        dtypes[key] = str(value.dtype).replace("torch.", "")
    return axes, dtypes


def recording_entry(
    inner: Callable[..., Any],
    *,
    book: WorkloadBook,
    definition: str,
    template: Any,
    namespace: Callable[[tuple, dict], Mapping[str, Any]],
    step_aside: Callable[[Callable[..., Any]], None],
) -> Callable[..., Any]:
    """``inner`` with the first calls' shapes recorded, then ``inner`` alone."""
    calls = [0]

    def entry(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        try:
            axes, dtypes = call_axes(template, namespace(args, kwargs))
            book.record(definition, axes, dtypes)
        except Exception:  # noqa: BLE001 - recording never changes a call's outcome
            pass
        if calls[0] >= CALLS_PER_SHAPE or book.full(definition):
            step_aside(inner)
        return inner(*args, **kwargs)

    return entry


def enabled() -> Optional[WorkloadBook]:
    from .env import stats_dir_setting  # noqa: PLC0415

    return WorkloadBook() if stats_dir_setting() else None
