"""Marks that let torch.compile trace through the dispatch path, set
without importing ``torch._dynamo`` (importing it costs seconds; a process
that never compiles must not pay that).

``torch.compiler.assume_constant_result(fn)`` imports Dynamo only to set
``fn._dynamo_marked_constant = True``, which Dynamo reads when it meets the
function in a trace (``torch/_dynamo/variables/functions.py``). When Dynamo
is already loaded the official function is used; otherwise the same
attribute is set directly. ``tests/test_compile_and_threads.py`` compiles
with ``fullgraph=True`` through these marks, so a torch that reads the mark
differently fails there.
"""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


def constant_under_compile(fn: F) -> F:
    """Mark ``fn`` so a trace runs it once and uses its result as a constant."""
    if "torch._dynamo" in sys.modules:
        try:
            import torch  # noqa: PLC0415

            return torch.compiler.assume_constant_result(fn)
        except (ImportError, AttributeError):
            return fn
    try:
        fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    except AttributeError:  # a builtin: cannot carry the mark
        pass
    return fn
