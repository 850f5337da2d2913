"""Load and build every solution when enabling, not on the first matching call.

A server's first request for a shape would otherwise wait for an import or a
compile (a CUDA build takes minutes). With ``FLASHINFER_TRACE_APPLY_PREBUILD=1``
each solution is loaded once at enable, with a progress bar on a terminal and
a one-line summary; the loaded result is cached, so the first call finds it.

Strict (``enable_apply`` in code): the first solution that fails raises,
naming it, and nothing is patched. Lenient (the start-up hook): a solution
that fails is reported by name and left out, its calls run FlashInfer's
kernel, and ``import flashinfer`` goes on.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, List, TextIO, Tuple

from .warn import warn


def _label(name: str, value: Any) -> str:
    solution_name = getattr(value, "name", None)
    return f"{name} ({solution_name})" if isinstance(solution_name, str) else name


def prebuild(mapping: Dict[str, Any], strict: bool, stream: TextIO | None = None) -> Dict[str, Any]:
    """The mapping, each value loaded once; failures raise (strict) or are
    reported and left out."""
    from . import loaders  # noqa: PLC0415 - only when asked for

    stream = sys.stderr if stream is None else stream
    bar = getattr(stream, "isatty", lambda: False)()
    kept: Dict[str, Any] = {}
    failed: List[Tuple[str, str]] = []
    start = time.perf_counter()
    total = len(mapping)
    for index, (name, value) in enumerate(sorted(mapping.items()), 1):
        if bar:
            stream.write(f"\r[flashinfer_trace_apply] building solutions {index}/{total}: {name[:60]:<60}")
            stream.flush()
        try:
            loaders.load(value, name)
        except Exception as exc:  # noqa: BLE001 - reported below, or re-raised when strict
            if bar:
                stream.write("\n")
            if strict:
                raise
            failed.append((_label(name, value), f"{type(exc).__name__}: {exc}"))
            continue
        kept[name] = value
    elapsed = time.perf_counter() - start
    if bar:
        stream.write("\r" + " " * 110 + "\r")
    summary = f"[flashinfer_trace_apply] prebuilt {len(kept)} of {total} solution(s) in {elapsed:.1f} s"
    stream.write(summary + (f"; {len(failed)} failed and are off" if failed else "") + "\n")
    stream.flush()
    if failed:
        warn(
            "these solutions failed to load or build and are turned off (their calls run FlashInfer's kernel): "
            + "; ".join(f"{label}: {why}" for label, why in failed),
            stacklevel=5,
        )
    return kept
