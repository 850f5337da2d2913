"""Names outside FlashInfer that hold an API object we replaced.

Engines bind some FlashInfer APIs once: ``from flashinfer.norm import
fused_add_rmsnorm_quant`` at engine import, or a lazy import kept in a module
global. Patching ``flashinfer.norm`` afterwards does not reach those names. The
import hook patches inside ``import flashinfer``, before any engine can bind
anything; a programmatic ``enable_apply()`` comes too late for them, so they
are found here and named (or, on request, rebound and restored on disable).

The scan is one pass over ``sys.modules``: every module namespace value is
compared by identity with the objects we replaced (a set lookup of its id).
Objects held anywhere else (a closure, an ``lru_cache``, an instance) are not
seen.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Tuple

from .patcher import PatchSet

_OWN_PACKAGES = ("flashinfer", "flashinfer_trace_apply")


@dataclass(frozen=True)
class StaleBinding:
    module: str
    attr: str
    fi_api: str  # the API whose original object the attribute holds

    @property
    def where(self) -> str:
        return f"{self.module}.{self.attr}"


def _outside_flashinfer(name: str) -> bool:
    return not any(name == p or name.startswith(p + ".") for p in _OWN_PACKAGES)


def _scan(table: Dict[int, Any]) -> Iterable[Tuple[str, Any, str, Any]]:
    """``(module name, module, attr, value)`` for every module attribute,
    outside FlashInfer and this package, whose value's id is in ``table``."""
    if not table:
        return
    seen = set()  # one module under two names (__main__ and __mp_main__)
    for name, module in list(sys.modules.items()):
        if module is None or id(module) in seen or not _outside_flashinfer(name):
            continue
        seen.add(id(module))
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            if id(value) in table:
                yield name, module, attr, value


def _api_name(wrapper: Any) -> str:
    route = getattr(wrapper, "__fita_route__", None)
    return route.spec.fi_api if route is not None else getattr(wrapper, "__qualname__", repr(wrapper))


def find_stale(patches: PatchSet) -> List[StaleBinding]:
    """Module attributes outside FlashInfer that still hold an original we
    replaced in ``patches``."""
    originals = {
        id(original): (original, wrapper)
        for original, wrapper in patches.originals_by_replacement().values()
        if getattr(wrapper, "__fita_route__", None) is not None  # routing wrappers, not the built-in's refusal
    }
    found = []
    for name, _module, attr, value in _scan(originals):
        original, wrapper = originals[id(value)]
        if value is original:
            found.append(StaleBinding(name, attr, _api_name(wrapper)))
    return sorted(found, key=lambda b: (b.module, b.attr))


def rebind(patches: PatchSet, stale: Iterable[StaleBinding]) -> List[StaleBinding]:
    """Give each stale attribute our wrapper, recorded in ``patches`` (so
    disable restores the original there). Returns those rebound."""
    originals = {id(original): (original, wrapper) for original, wrapper in patches.originals_by_replacement().values()}
    done = []
    for binding in stale:
        module = sys.modules.get(binding.module)
        value = getattr(module, "__dict__", {}).get(binding.attr) if module is not None else None
        pair = originals.get(id(value))
        if pair is not None and value is pair[0] and patches.replace(module, binding.attr, pair[0], pair[1]):
            done.append(binding)
    return done


def adopt_wrappers_bound_outside(patches: PatchSet) -> int:
    """Module attributes outside FlashInfer that were bound to one of our
    wrappers during the session (``from flashinfer.norm import rmsnorm`` after
    enable): record them, so disable puts the original back there too and no
    caller keeps routing after ``disable_apply()``."""
    ours = patches.originals_by_replacement()
    count = 0
    for _name, module, attr, value in list(_scan(ours)):
        original, wrapper = ours[id(value)]
        if value is wrapper and patches.adopt(module, attr, original, wrapper):
            count += 1
    return count


def stale_warning(stale: List[StaleBinding], env_var: str, rebind_var: str) -> str:
    shown = ", ".join(f"{b.where} ({b.fi_api})" for b in stale)
    return (
        f"{len(stale)} name(s) outside FlashInfer were bound to the original FlashInfer API before "
        f"enable_apply() and will not be routed: {shown}. Fix: enable through the import hook "
        f"({env_var}=1 and the path variable, or `flashinfer-trace-apply run`), which patches inside "
        f"`import flashinfer` before engines bind names; or pass enable_apply(..., rebind=True) "
        f"(or set {rebind_var}=1) to rebind them now (restored by disable_apply())"
    )
