"""Which call arguments a solution receives, and which it may go without.

A caller's argument is never silently dropped. When a call sets an
argument (to anything but the API's default) that the routed solution can
neither receive nor declares it ignores, the call runs the original kernel
(counted ``fallback_unaccepted_argument``). The only arguments a solution
may go without by default are those below: they change how FlashInfer
launches its kernel, never what the kernel computes.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Optional

# Argument name -> why ignoring it cannot change a result. The one place
# such a list lives; add an entry only with a reason of this kind.
IGNORED_BY_DEFAULT: Dict[str, str] = {
    "enable_pdl": "programmatic dependent launch only lets the kernel's prologue overlap the previous "
    "kernel on the same stream; the values written are the same",
    "launch_with_pdl": "the same launch option as enable_pdl under another name",
    "pdl": "the same launch option as enable_pdl under another name",
}
# Considered and left out, because they can change what is computed or where
# it goes: backend / tactic / tune_max_num_tokens (another algorithm, other
# rounding), deterministic / is_deterministic (reduction order), check_nan
# (raises), aux_stream / sm_count (a solution ignoring them could race or
# oversubscribe what the caller reserved), workspace buffers and out_dtype.


@dataclass(frozen=True)
class Receivable:
    """What a solution's signature can take.

    ``named``: its named parameters, or None when the signature cannot be
    read (then only the definition's inputs are passed). ``var_keyword``: it
    takes ``**kwargs``, so every call argument reaches it by name.
    ``defaults``: named parameters that have a default.
    ``ignores``: arguments the solution declares it does without.
    """

    named: Optional[FrozenSet[str]]
    var_keyword: bool
    defaults: FrozenSet[str]
    ignores: FrozenSet[str]

    def takes(self, name: str) -> bool:
        return self.var_keyword or (self.named is not None and name in self.named)

    def may_drop(self, name: str) -> bool:
        return name in IGNORED_BY_DEFAULT or name in self.ignores


def receivable(fn: Callable, ignores: Any = ()) -> Receivable:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return Receivable(None, False, frozenset(), frozenset(ignores or ()))
    return Receivable(
        named=frozenset(p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)),
        var_keyword=any(p.kind is p.VAR_KEYWORD for p in params),
        defaults=frozenset(p.name for p in params if p.default is not p.empty),
        ignores=frozenset(ignores or ()),
    )


def is_default(value: Any, default: Any) -> bool:
    """The slow half of the per-call test (the fast half is ``value is
    default``, compiled into the entry): an equal literal such as ``eps=1e-6``
    is the default; a tensor or anything that will not compare is not."""
    if value is default:
        return True
    if type(value) is not type(default):
        return False
    try:
        return bool(value == default)
    except Exception:  # noqa: BLE001 - e.g. an ambiguous comparison: not the default
        return False
