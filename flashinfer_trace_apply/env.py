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
    ``problem`` names a value that is neither on nor off (reported, stays off)."""

    requested: bool
    path: str | None
    problem: str | None = None


def read_env(environ: "os._Environ[str] | dict[str, str] | None" = None) -> EnvSetting:
    env = os.environ if environ is None else environ
    raw = env.get(ENABLE_VAR, "")
    path = env.get(PATH_VAR) or None
    value = raw.strip()
    if value in OFF_VALUES:
        return EnvSetting(requested=False, path=path)
    if value == "1":
        return EnvSetting(requested=True, path=path)
    return EnvSetting(
        requested=False,
        path=path,
        problem=f"{ENABLE_VAR} must be '0', '1' or empty, got {raw!r}; Trace Apply stays off",
    )
