"""Write a solution's inlined sources to a content-addressed cache directory.

Importers and compilers need real files. The directory name is derived from
the solution's content hash, so identical solutions share one copy and a
changed solution never sees stale files. Several processes (e.g. one per GPU)
may materialize the same solution at once, so the directory only ever appears
complete: it is filled under a temporary name and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..solution import Solution

__all__ = ["cache_root", "solution_dir", "materialize"]

CACHE_DIR_ENV = "FLASHINFER_TRACE_APPLY_CACHE_DIR"
# Length of the hash prefix in directory names: short enough for readable
# paths and compiler command lines, long enough that collisions don't happen.
HASH_PREFIX_LEN = 24


def cache_root() -> Path:
    """The package cache: $FLASHINFER_TRACE_APPLY_CACHE_DIR, else XDG, else ~/.cache."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "flashinfer_trace_apply"


def solution_dir(solution: Solution) -> Path:
    """Where ``materialize`` puts (or has put) this solution's files."""
    return cache_root() / "solutions" / solution.content_hash()[:HASH_PREFIX_LEN]


def _write_sources(solution: Solution, directory: Path) -> None:
    base = directory.resolve()
    for src in solution.sources:
        dest = (base / src.path).resolve()
        # The schema already rejects absolute and ".." paths; check again on
        # the resolved path so no file can ever land outside the directory.
        if dest == base or not dest.is_relative_to(base):
            raise ValueError(
                f"source path {src.path!r} of solution '{solution.name}' "
                f"resolves outside {base}"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Bytes, not text mode: keep the content exactly (no newline rewriting).
        dest.write_bytes(src.content.encode("utf-8"))


def materialize(solution: Solution) -> Path:
    """Ensure the solution's sources exist on disk; return their directory."""
    target = solution_dir(solution)
    if target.is_dir():
        # Only complete directories are ever renamed into place.
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _write_sources(solution, staging)
        # mkdtemp creates 0700; widen to the usual directory mode so the
        # user's other tools (compilers run as helpers, editors) can read it.
        # (Not via os.umask: reading it means setting it, which races threads.)
        os.chmod(staging, 0o755)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process renamed its complete copy first; use that one.
            if target.is_dir():
                shutil.rmtree(staging, ignore_errors=True)
                return target
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
