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


def arm_late_imports(patches: PatchSet, context: Any, names: Sequence[str]) -> LateImportWatcher:
    """Wrap APIs of ``flashinfer.*`` modules imported from now on, as the
    enable itself did for those already imported."""
    from .wrapping import wrap_api  # noqa: PLC0415

    def wrap(spec: Any) -> Sequence[str]:
        _count, problems = wrap_api(patches, spec, context, names)
        return problems

    watcher = LateImportWatcher(patches, wrap, lambda message: warn(message, stacklevel=2))
    watcher.arm()
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
    """Stop watching imports, and make names bound to our wrappers during the
    session (outside FlashInfer) go back to the originals with the rest."""
    if watcher is not None:
        watcher.disarm()
    adopt_wrappers_bound_outside(patches)
