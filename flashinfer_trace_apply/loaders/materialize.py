"""Write a solution's inlined sources to a content-addressed cache directory.

Importers and compilers need real files. The directory name is derived from
the solution's content hash, so identical solutions share one copy and a
changed solution never sees stale files. Several processes (e.g. one per GPU)
may materialize the same solution at once, so the directory only ever appears
complete: it is filled under a temporary name and renamed into place.

What is imported from here runs as code, so the cache is not trusted
blindly: its folders are created private (0700) and must belong to this user
and be writable by nobody else, and a cached copy is used only if every
source file still holds exactly the solution's content; a missing or edited
copy is replaced by a fresh one.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from ..env import CACHE_VAR, cache_dir_setting
from ..errors import ConfigError
from ..solution import Solution

__all__ = ["cache_root", "solution_dir", "materialize", "private_dir"]

CACHE_DIR_ENV = CACHE_VAR
# Length of the hash prefix in directory names: short enough for readable
# paths and compiler command lines, long enough that collisions don't happen.
HASH_PREFIX_LEN = 24


def cache_root() -> Path:
    """The package cache: $FLASHINFER_TRACE_APPLY_CACHE_DIR, else XDG, else ~/.cache."""
    explicit = cache_dir_setting()
    if explicit:
        return Path(explicit)
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


def private_dir(path: Path) -> Path:
    """``path`` as a directory only this user can write, created 0700 if
    missing; a ConfigError if it belongs to someone else or others may write
    it (a shared cache would run whatever another user put there)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private(path)
    return path


def _check_private(path: Path) -> None:
    info = path.lstat()
    getuid = getattr(os, "getuid", None)
    problem = None
    if not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory (a symbolic link is not accepted)"
    elif getuid is not None and info.st_uid != getuid():
        problem = f"belongs to uid {info.st_uid}, not to this user (uid {getuid()})"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"is writable by other users (mode {stat.S_IMODE(info.st_mode):o})"
    if problem:
        raise ConfigError(
            f"solution cache {path} {problem}; solution code is not loaded from it. "
            f"Set {CACHE_VAR} to a private folder"
        )


def _holds_sources(solution: Solution, directory: Path) -> bool:
    """Every source file present with exactly the solution's content."""
    for src in solution.sources:
        try:
            if (directory / src.path).read_bytes() != src.content.encode("utf-8"):
                return False
        except OSError:
            return False
    return True


def materialize(solution: Solution) -> Path:
    """Ensure the solution's sources exist on disk, as written; return their directory."""
    target = solution_dir(solution)
    private_dir(cache_root())
    private_dir(target.parent)
    if target.is_dir():
        _check_private(target)
        if _holds_sources(solution, target):
            return target
        _set_aside(target)  # edited or incomplete: never import it
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))  # 0700
    try:
        _write_sources(solution, staging)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process renamed its complete copy first; use that one.
            if target.is_dir() and _holds_sources(solution, target):
                shutil.rmtree(staging, ignore_errors=True)
                return target
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _set_aside(target: Path) -> None:
    """Move a bad copy out of the way (a rename: atomic, and safe while
    another process may still read it), then delete it."""
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale-", dir=target.parent))
    try:
        os.rename(target, trash / "old")
    except OSError:
        pass  # another process moved it first
    shutil.rmtree(trash, ignore_errors=True)
