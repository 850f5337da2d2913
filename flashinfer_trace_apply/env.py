"""The environment variables that drive the import-time hook, in one place.

Both the start-up bootstrap (standard library only) and the programmatic
``enable_apply()`` read the configuration through :func:`read_env`, so the two
paths can never disagree about what a value means.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ENABLE_VAR = "FLASHINFER_TRACE_APPLY"
"""``1`` turns the plugin on when ``flashinfer`` is imported; ``0`` or empty
leaves it off; anything else is reported and leaves it off."""

PATH_VAR = "FLASHINFER_TRACE_APPLY_PATH"
"""Curated folder whose ``solutions/`` subtree is loaded (one solution per
definition; optional ``definitions/`` beside it)."""

CACHE_VAR = "FLASHINFER_TRACE_APPLY_CACHE_DIR"
"""Where Solution sources are written before import or build (default: the
user cache directory)."""

PREBUILD_VAR = "FLASHINFER_TRACE_APPLY_PREBUILD"
"""``1``: load and build every solution when enabling, instead of on the
first matching call (no first-request stall); see ``prebuild``."""

VERIFY_VAR = "FLASHINFER_TRACE_APPLY_VERIFY"
"""``N``: for the first N hits of each definition and shape, also run
FlashInfer's kernel and compare; the caller gets the kernel's results until
the shape is verified, and a mismatch turns the definition off."""

ON_ERROR_VAR = "FLASHINFER_TRACE_APPLY_ON_ERROR"
"""``raise`` (default, strict) or ``fallback``: a solution that raises runs
FlashInfer's kernel for that call, behind a circuit breaker."""

BREAKER_VAR = "FLASHINFER_TRACE_APPLY_BREAKER"
"""``K,WINDOW_S,COOLDOWN_S`` for ``on_error=fallback`` (default ``5,60,30``):
K errors within WINDOW_S seconds open the circuit for COOLDOWN_S seconds."""

STATS_DIR_VAR = "FLASHINFER_TRACE_APPLY_STATS_DIR"
"""A directory where each process with the plugin enabled writes its stats
(at exit, and at most once a second while it runs); ``flashinfer-trace-apply
stats DIR`` adds them up across tensor-parallel workers."""

TRITON_FAST_LAUNCH_VAR = "FLASHINFER_TRACE_APPLY_TRITON_FAST_LAUNCH"
"""``0`` sends the bundled Triton solutions through Triton's standard launch.
Read by ``solutions/src/_fast_launch.py``, which runs without this package
and so restates the name; a test checks the two agree."""

REBIND_VAR = "FLASHINFER_TRACE_APPLY_REBIND"
"""``1``: a programmatic ``enable_apply()`` also rebinds names outside
FlashInfer that still hold an original API object (bound before enable), and
disable restores them; ``0`` or empty (default): such names are only
reported. ``enable_apply(..., rebind=...)`` overrides it."""

OFF_VALUES = ("", "0")


def read_rebind(environ: "os._Environ[str] | dict[str, str] | None" = None) -> "tuple[bool, str | None]":
    """(``FLASHINFER_TRACE_APPLY_REBIND`` is ``1``, problem with its value):
    ``0`` or empty is off; anything else is reported and stays off."""
    env = os.environ if environ is None else environ
    raw = env.get(REBIND_VAR, "")
    value = raw.strip()
    if value in OFF_VALUES:
        return False, None
    if value == "1":
        return True, None
    return False, f"{REBIND_VAR} must be '0', '1' or empty, got {raw!r}; names bound before enable are only reported"


@dataclass(frozen=True)
class EnvSetting:
    """What the environment asks for: ``requested`` is True for ``1``;
    ``problem`` names a value that is neither on nor off (reported, stays off).
    ``path`` has ``~`` expanded, for the hook and ``enable_apply()`` alike."""

    requested: bool
    path: str | None
    problem: str | None = None


def read_env(environ: "os._Environ[str] | dict[str, str] | None" = None) -> EnvSetting:
    env = os.environ if environ is None else environ
    raw = env.get(ENABLE_VAR, "")
    path = env.get(PATH_VAR) or None
    if path:
        path = os.path.expanduser(path)
    # Exactly "1", "0" or empty, as FlashInfer's built-in reads the same
    # variable: " 1" is a typo to report, not a way to turn routing on.
    if raw in OFF_VALUES:
        return EnvSetting(requested=False, path=path)
    if raw == "1":
        return EnvSetting(requested=True, path=path)
    return EnvSetting(
        requested=False,
        path=path,
        problem=f"{ENABLE_VAR} must be '0', '1' or empty, got {raw!r}; Trace Apply stays off",
    )


def cache_dir_setting(environ: "os._Environ[str] | dict[str, str] | None" = None) -> str | None:
    """``FLASHINFER_TRACE_APPLY_CACHE_DIR`` with ``~`` expanded, or None."""
    env = os.environ if environ is None else environ
    value = env.get(CACHE_VAR)
    return os.path.expanduser(value) if value else None


def stats_dir_setting(environ: "os._Environ[str] | dict[str, str] | None" = None) -> str | None:
    env = os.environ if environ is None else environ
    value = env.get(STATS_DIR_VAR)
    return os.path.expanduser(value) if value else None


def prebuild_setting(environ: "os._Environ[str] | dict[str, str] | None" = None) -> tuple[bool, str | None]:
    """(requested, problem): ``1`` on, ``0``/empty off, anything else a problem (off)."""
    env = os.environ if environ is None else environ
    raw = env.get(PREBUILD_VAR, "")
    if raw in OFF_VALUES:
        return False, None
    if raw == "1":
        return True, None
    return False, f"{PREBUILD_VAR} must be '0', '1' or empty, got {raw!r}; solutions build on first use"
