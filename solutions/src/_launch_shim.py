"""Build, load and feed the compiled launch site (``_launch_shim.c``), used
by ``_fast_launch.LaunchSite`` for keys it has validated.

The C site does what the Python site's generated launch function does (key
the call, check hooks, launch), minus the interpreter: on an H100 host the
Python key alone costs about as much as the kernel launch. It is built once
per machine and Python build with the C compiler Triton itself needs for its
launchers, into the package cache
(``$FLASHINFER_TRACE_APPLY_CACHE_DIR``, else ``~/.cache/flashinfer_trace_apply``),
under a name derived from the source and the interpreter, and written
complete or not at all. Any failure (no compiler, no headers, a read-only
cache) only means the Python site keeps the job: ``status()`` says why.
``FLASHINFER_TRACE_APPLY_LAUNCH_SHIM=0`` turns it off (read by
``_fast_launch.FastLauncher`` with its other switches).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

__all__ = ["ENV_SWITCH", "MODULE", "load", "params_of", "status"]

ENV_SWITCH = "FLASHINFER_TRACE_APPLY_LAUNCH_SHIM"
MODULE = "_fita_launch_shim"  # the C module's name (its PyInit function)
SOURCE = Path(__file__).with_name("_launch_shim.c")

_lock = threading.Lock()
_state = {"module": None, "reason": None, "tried": False}

# Parameter kinds the C site packs (see site_add in _launch_shim.c).
POINTER, F32, F64, CONST = 0, 1, 2, 3
_INT_WIDTH = {"i1": 8, "i8": 8, "i16": 16, "i32": 32, "i64": 64, "u1": 8, "u8": 8, "u16": 16, "u32": 32, "u64": 64}


def status() -> str | None:
    """None once the C site is loaded, else why it is not (or not yet)."""
    return None if _state["module"] is not None else (_state["reason"] or "not built yet")


def _cache_root() -> Path:
    """The package cache, by the rule of the plugin's loaders.materialize.cache_root,
    restated here because solution sources also run without the plugin
    (tests/test_launch_shim.py keeps the two in step)."""
    explicit = os.environ.get("FLASHINFER_TRACE_APPLY_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "flashinfer_trace_apply"


def _compiler() -> str | None:
    """$CC, else gcc, else clang, else cc: the order Triton looks in."""
    named = os.environ.get("CC")
    if named:
        return named
    for name in ("gcc", "clang", "cc"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _target(source: bytes) -> Path:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    tag = hashlib.sha256(source + sys.version.encode() + suffix.encode()).hexdigest()[:20]
    return _cache_root() / "launch_shim" / tag / f"{MODULE}{suffix}"


def _build(source_path: Path, target: Path) -> None:
    """Compile into a temporary folder beside ``target``, then rename it in
    place: other processes see the library complete or not at all."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler (set CC, or install gcc or clang)")
    paths = sysconfig.get_paths()
    includes = {paths["include"], paths.get("platinclude", paths["include"])}
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        built = staging / target.name
        command = [cc, str(source_path), "-O2", "-shared", "-fPIC", "-o", str(built)]
        command += [f"-I{path}" for path in sorted(includes)] + ["-ldl"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-2000:]}")
        os.replace(built, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _import(target: Path):
    """The module at ``target``; one copy per process, shared by every
    solution (each solution imports its own copy of this file)."""
    key = f"{MODULE}_{target.parent.name}"
    module = sys.modules.get(key)
    if module is None:
        loader = importlib.machinery.ExtensionFileLoader(MODULE, str(target))
        spec = importlib.util.spec_from_file_location(MODULE, str(target), loader=loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        sys.modules[key] = module
    return module


def load():
    """The C module, building it on first use; None when it cannot be had
    (``status()`` says why). Never raises."""
    if _state["tried"]:
        return _state["module"]
    with _lock:
        if _state["tried"]:
            return _state["module"]
        try:
            source = SOURCE.read_bytes()
            target = _target(source)
            if not target.is_file():
                _build(SOURCE, target)
            _state["module"] = _import(target)
        except Exception as exc:  # noqa: BLE001 - the Python site keeps the job
            _state["reason"] = f"{type(exc).__name__}: {exc}"
        _state["tried"] = True
        return _state["module"]


def params_of(signature: dict, names: list, values: list, kinds: str):
    """The C site's parameter list for a compiled kernel, or None when a
    parameter is of a type it does not pack.

    ``signature``: the compiled kernel's ``src.signature`` (parameter name ->
    Triton type; ``constexpr`` for parameters folded into the kernel);
    ``names``/``values``: every bound parameter in order; ``kinds``: the
    site's slot letters for the leading runtime arguments. Triton's launcher
    passes the non-constexpr parameters in order, then the global and
    profile scratch pointers; ints are keyed by value, so they are constants
    of the key."""
    out, pointer, floats = [], 0, 0
    for index, (name, value) in enumerate(zip(names, values)):
        kind = kinds[index] if index < len(kinds) else None
        ty = signature.get(name)
        if not isinstance(ty, str):
            return None
        if ty == "constexpr":
            pass
        elif ty.startswith("*"):
            if kind != "p":
                return None
            out.append((POINTER, pointer))
        elif ty in ("fp32", "f32", "fp64"):
            wide = ty == "fp64"
            if kind == "f":
                out.append((F64 if wide else F32, floats))
            elif value.__class__ is float:
                packed = struct.pack("<d" if wide else "<f", value)
                out.append((CONST, int.from_bytes(packed, "little")))
            else:
                return None
        elif ty in _INT_WIDTH and value.__class__ in (int, bool) and kind in ("i", None):
            out.append((CONST, int(value) & ((1 << _INT_WIDTH[ty]) - 1)))
        else:
            return None
        if kind == "p":
            pointer += 1
        elif kind == "f":
            floats += 1
    return tuple(out) + ((CONST, 0), (CONST, 0))  # global and profile scratch: none
