"""Load Python-family solutions (python, triton, cutedsl, cutile, tilelang).

The entry file is imported from its materialized copy under a module name
derived from the content hash, never under its own file name: many solutions
ship a ``kernel.py``, and importing them all as ``kernel`` would make the
second one silently reuse the first.

Sibling imports. A solution with more than one source file is imported as a
package named after its content hash, rooted at its folder, with the entry
file as a module of it, as FlashInfer-Bench's builder does: relative imports
(``from .helpers import f``) work, and siblings imported that way stay in
``sys.modules`` under that unique package (torch.compile looks up the module
of every function it inlines). It may also import its other files by plain
name (``from helpers import f``), as it would when run from its own folder. Only for such solutions is the folder put at the front of
``sys.path``, and only while the entry module executes: a single-file
solution has nothing to import from there, and leaving per-solution folders on
``sys.path`` would let one solution's ``helpers.py`` shadow another's. For
the same reason, modules that were imported from the folder are dropped from
``sys.modules`` afterwards (the entry module keeps its own references), and
same-named modules imported elsewhere are hidden during the import and put
back after it. The consequence: siblings must be imported at module level,
not lazily inside the entry function. All of this mutates process-global
state, so imports of solutions are serialized by one lock.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import SolutionLoadError
from ..solution import Solution
from .materialize import materialize

__all__ = ["module_name", "load_python"]

# Re-entrant: a solution's top-level code may itself load another solution.
_IMPORT_LOCK = threading.RLock()


def module_name(solution: Solution) -> str:
    """The unique ``sys.modules`` name the entry file is imported under."""
    return f"_fita_solution_{solution.content_hash()[:24]}"


def _sibling_top_names(solution: Solution) -> set[str]:
    """Top-level module names that the solution's own files can provide."""
    names: set[str] = set()
    for src in solution.sources:
        parts = Path(src.normalized_path).parts
        if len(parts) > 1:
            top = parts[0]  # a package (or namespace package) directory
        elif parts[0].endswith(".py"):
            top = parts[0][: -len(".py")]
        else:
            continue
        if top.isidentifier():
            names.add(top)
    return names


def _is_inside(module: ModuleType, folder: Path) -> bool:
    locations: list[str] = []
    file = getattr(module, "__file__", None)
    if file:
        locations.append(file)
    path = getattr(module, "__path__", None)
    # Only a real package path: some modules (torch.classes) answer any
    # attribute with an object of their own.
    if isinstance(path, (list, tuple)) or type(path).__name__ == "_NamespacePath":
        locations.extend(p for p in path if isinstance(p, str))
    for location in locations:
        try:
            if Path(location).resolve().is_relative_to(folder):
                return True
        except (OSError, ValueError, TypeError):
            continue
    return False


def _package(name: str, folder: Path) -> ModuleType:
    """A package ``name`` whose modules are the files in ``folder`` (like a
    namespace package: the folder needs no ``__init__.py``)."""
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [str(folder)]
    package = importlib.util.module_from_spec(spec)
    package.__path__ = [str(folder)]
    return package


def _entry_module_name(package: str, folder: Path, entry: Path) -> str:
    relative = entry.relative_to(folder).with_suffix("")
    return ".".join((package, *relative.parts))


def _drop_package(name: str) -> None:
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


def _exec_entry(
    name: str, entry: Path, folder: Path | None, siblings: set[str]
) -> ModuleType:
    """Import ``entry`` as module ``name`` or, with ``folder``, as a module of
    package ``name`` rooted at ``folder``.

    ``folder`` (if given) is also on sys.path during the import, and modules
    named in ``siblings`` are hidden from sys.modules so the folder's files win.
    """
    package = name
    if folder is not None:
        sys.modules[package] = _package(package, folder)
        name = _entry_module_name(package, folder, entry)
    spec = importlib.util.spec_from_file_location(name, entry)
    if spec is None or spec.loader is None:
        _drop_package(package)
        raise ImportError(f"cannot create an import spec for {entry}")
    module = importlib.util.module_from_spec(spec)

    hidden: dict[str, ModuleType] = {}
    folder_entry = str(folder) if folder is not None else None
    if folder is not None:
        for key in list(sys.modules):
            if key.split(".", 1)[0] in siblings:
                hidden[key] = sys.modules.pop(key)
        sys.path.insert(0, folder_entry)  # type: ignore[arg-type]
    before = set(sys.modules)

    # Registered before executing, as a normal import does: dataclasses,
    # pickling and typing look the module up by name while it runs.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        _drop_package(package)
        raise
    finally:
        if folder is not None:
            try:
                sys.path.remove(folder_entry)  # type: ignore[arg-type]
            except ValueError:
                pass  # the solution removed it itself
            resolved = folder.resolve()
            # Only modules new since the import started can come from folder.
            for key in set(sys.modules) - before:
                mod = sys.modules.get(key)
                ours = key == package or key.startswith(package + ".")
                if not ours and mod is not None and _is_inside(mod, resolved):
                    del sys.modules[key]
            for key, mod in hidden.items():
                sys.modules.setdefault(key, mod)
    return module


def load_python(solution: Solution, definition: str | None = None) -> Callable[..., Any]:
    """Import the solution's entry file and return its entry function.

    ``definition`` only names the definition in error messages (defaults to
    ``solution.definition``). Every call imports afresh; callers cache.
    """
    definition = definition if definition is not None else solution.definition
    if not solution.spec.is_python_family:
        raise SolutionLoadError.from_cause(
            solution.name,
            definition,
            ValueError(
                f"language '{solution.spec.language}' is not loaded as Python"
            ),
        )
    folder = materialize(solution)
    entry = folder / solution.entry_file
    name = module_name(solution)
    multi_file = len(solution.sources) > 1
    with _IMPORT_LOCK:
        if multi_file:
            module = _exec_entry(name, entry, folder, _sibling_top_names(solution))
        else:
            module = _exec_entry(name, entry, None, set())

    fn = getattr(module, solution.entry_symbol, None)
    if fn is None or not callable(fn):
        problem = "has no attribute" if fn is None else "has a non-callable"
        cause = AttributeError(
            f"{solution.entry_file} {problem} '{solution.entry_symbol}'"
        )
        _drop_package(name)
        raise SolutionLoadError.from_cause(solution.name, definition, cause) from cause
    return fn
