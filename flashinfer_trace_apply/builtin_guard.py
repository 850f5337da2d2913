"""Keep FlashInfer's built-in ``flashinfer.trace_apply`` from running beside us.

FlashInfer 0.7.x ships its own engine and starts it inside ``import
flashinfer`` when ``FLASHINFER_TRACE_APPLY`` is set - the variable we read
too. Two engines would wrap the same APIs twice and load every solution
twice. The bootstrap silences the built-in's import-time hook before it
runs; while our plugin is enabled, the built-in's ``enable_apply`` refuses.
Releases without the built-in are unaffected.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable

from .patcher import PatchSet, read_attribute
from .warn import warn

BUILTIN = "flashinfer.trace_apply"
_ENV_HOOK = "_enable_apply_from_env"


def _suppressed_env_hook() -> None:
    """Stands in for the built-in's import-time hook: flashinfer_trace_apply
    reads the same variables and enables itself once the import finishes."""


def silence_env_hook(module: Any) -> None:
    """Called when ``flashinfer.trace_apply`` has been imported, before
    ``flashinfer/__init__`` calls its hook."""
    if hasattr(module, _ENV_HOOK):
        setattr(module, _ENV_HOOK, _suppressed_env_hook)


def _refusing(original: Callable) -> Callable:
    import functools  # noqa: PLC0415

    @functools.wraps(original)
    def enable_apply(*_args: Any, **_kwargs: Any) -> int:
        warn(
            "flashinfer.trace_apply.enable_apply() ignored: flashinfer_trace_apply is enabled "
            "and routes FlashInfer calls; call flashinfer_trace_apply.disable_apply() first"
        )
        return 0

    return enable_apply


def _builtin_module() -> Any:
    """The built-in engine module, imported now if this FlashInfer release has
    one. ``import flashinfer`` only imports it when the variable is set; left
    unimported, a later ``flashinfer.trace_apply.enable_apply()`` would find
    no refusal in place and stack a second engine on top of ours."""
    module = sys.modules.get(BUILTIN)
    if module is not None:
        return module
    try:
        return importlib.import_module(BUILTIN)
    except Exception:  # noqa: BLE001 - releases without the built-in (or a broken one)
        return None


def take_over(patches: PatchSet) -> None:
    """Stop a running built-in engine and make its enable refuse while ours
    is on (the refusal is a patch, so our disable undoes it)."""
    builtin = _builtin_module()
    if builtin is None:
        return
    is_enabled = getattr(builtin, "is_enabled", None)
    if callable(is_enabled) and is_enabled():
        warn("FlashInfer's built-in trace_apply was enabled; disabling it so that exactly one engine routes calls")
        builtin.disable_apply()
    for owner in (builtin, sys.modules.get(BUILTIN + ".apply")):
        if owner is None:
            continue
        current = read_attribute(owner, "enable_apply")
        if callable(current) and not getattr(current, "__fita_refusal__", False):
            refusal = _refusing(current)
            refusal.__fita_refusal__ = True
            patches.replace(owner, "enable_apply", current, refusal)
