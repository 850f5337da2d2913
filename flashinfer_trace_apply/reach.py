"""The enable session's reach beyond what ``import flashinfer`` registers
(issue 11), as three calls for ``api``: arm the late-import watcher, check
(and on request rebind) names bound before enable, and undo both before
restore.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from .env import ENABLE_VAR, REBIND_VAR, read_rebind
from .late_imports import LateImportWatcher
from .patcher import PatchSet
from .stale_bindings import adopt_wrappers_bound_outside, find_stale, rebind, stale_warning
from .warn import warn


def arm_late_imports(patches: PatchSet, context: Any, names: Sequence[str], registry_mark: int) -> LateImportWatcher:
    """Wrap APIs of ``flashinfer.*`` modules imported from now on, as the
    enable itself did for those already imported. ``registry_mark``: the
    registry's size when the enable read it; anything registered since (an
    import during the enable itself) is caught up at once."""
    from .wrapping import wrap_api  # noqa: PLC0415

    def wrap(spec: Any, alias_scope: Optional[Sequence[Any]]) -> Sequence[str]:
        return wrap_api(patches, spec, context, names, alias_scope).problems

    watcher = LateImportWatcher(patches, wrap, lambda message: warn(message, stacklevel=2), start=registry_mark)
    watcher.arm()
    watcher.catch_up_now()
    return watcher


def check_bindings(patches: PatchSet, requested: Optional[bool], from_hook: bool) -> int:
    """Names outside FlashInfer that hold an original we replaced: warned
    about, or rebound when asked. Skipped for the import hook, which runs
    inside ``import flashinfer`` (nothing can have bound a name yet; and it
    keeps every worker's start-up free of the scan). Returns how many were
    rebound."""
    if from_hook:
        return 0
    if requested is None:
        requested, problem = read_rebind()
        if problem:
            warn(problem, stacklevel=5)
    stale = find_stale(patches)
    if not stale:
        return 0
    if requested:
        return len(rebind(patches, stale))
    warn(stale_warning(stale, ENABLE_VAR, REBIND_VAR), stacklevel=5)
    return 0


def before_restore(watcher: Optional[LateImportWatcher], patches: PatchSet) -> None:
    """Stop watching imports, make names bound to our wrappers during the
    session (outside FlashInfer) go back to the originals with the rest, and
    make every wrapper of the session a plain call of its original."""
    if watcher is not None:
        watcher.disarm()
    adopt_wrappers_bound_outside(patches)
    make_wrappers_inert(patches)


def make_wrappers_inert(patches: PatchSet) -> None:
    """A wrapper held where no scan looks (vLLM caches its lazily imported
    FlashInfer functions in a ``functools.cache``) must not keep routing once
    the session ends: its code becomes a plain call of the original. Its
    identity, signature and defaults stay as they were."""
    from .codegen import PREFIX, compile_function  # noqa: PLC0415

    for patch in patches.patches:
        wrapper = patch.replacement
        route = getattr(wrapper, "__fita_route__", None)
        if route is None or not hasattr(wrapper, "__code__") or getattr(wrapper, "__fita_inert__", False):
            continue
        name = f"{PREFIX}inert_original"
        call, _defaults = route.shape.return_call(name)  # the wrapper's globals hold these defaults already
        source = f"def {wrapper.__code__.co_name}({route.shape.header(with_defaults=False)}):\n" + "".join(
            f"    {line}\n" for line in call
        )
        scope = dict(wrapper.__globals__)
        scope[name] = route.spec.current
        inert = compile_function(wrapper.__code__.co_name, source, scope, f"<trace_apply disabled {route.spec.fi_api}>")
        wrapper.__globals__[name] = route.spec.current
        wrapper.__code__ = inert.__code__
        wrapper.__fita_inert__ = True
