"""Start-up hook, run from ``flashinfer_trace_apply.pth`` when
``FLASHINFER_TRACE_APPLY`` is set to anything but ``0``/empty.

Standard library and wrapt only: this runs in every Python process of the
environment, so it must be cheap and must never raise. It arms two
post-import hooks and imports nothing else:

* on ``flashinfer.trace_apply`` (FlashInfer's built-in engine, imported in
  the middle of ``import flashinfer``): silence its import-time hook, so
  exactly one engine routes calls;
* on ``flashinfer``: once the import has finished, enable our plugin from
  the environment, before the importer's next line runs.
"""

from __future__ import annotations

import os
import sys

_armed = False


def _on_builtin_imported(module: object) -> None:
    try:
        from .builtin_guard import silence_env_hook

        silence_env_hook(module)
    except Exception as exc:  # noqa: BLE001 - never break the host's import
        _report(exc)


def _on_flashinfer_imported(_module: object) -> None:
    try:
        from .api import enable_from_environment

        enable_from_environment()
    except Exception as exc:  # noqa: BLE001 - never break the host's import
        _report(exc)


def _report(exc: BaseException) -> None:
    try:
        from .warn import warn

        warn(f"Trace Apply start-up hook failed: {type(exc).__name__}: {exc}")
    except Exception:  # noqa: BLE001
        print(f"[flashinfer_trace_apply] start-up hook failed: {exc!r}", file=sys.stderr)


def install() -> None:
    """Arm the hooks once per process (idempotent)."""
    global _armed
    if _armed:
        return
    try:
        # Armed for any value but exactly "" or "0" (FlashInfer's built-in
        # reacts to those too), so a bad value is reported once, by us.
        if os.environ.get("FLASHINFER_TRACE_APPLY", "") in ("", "0"):
            return
        from wrapt import register_post_import_hook

        register_post_import_hook(_on_builtin_imported, "flashinfer.trace_apply")
        register_post_import_hook(_on_flashinfer_imported, "flashinfer")
        _armed = True
    except Exception as exc:  # noqa: BLE001 - interpreter start-up must survive
        print(f"[flashinfer_trace_apply] could not arm the import hook: {exc!r}", file=sys.stderr)
