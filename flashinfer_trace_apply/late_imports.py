"""Wrap the APIs of FlashInfer submodules imported after enable.

``import flashinfer`` leaves ``flashinfer.comm``, ``flashinfer.concat_ops``,
``flashinfer.gdn_decode`` and others unimported; their APIs join FlashInfer's
trace registry only when an engine imports them, which is after the import
hook (or ``enable_apply()``) ran. Importing them eagerly would slow every
worker's start-up, so instead, while a session is active, a ``sys.meta_path``
finder marks each ``flashinfer.*`` module as it is loaded and, once that
module has finished executing (before the importer's next line), hands the
registry entries appended since the last look to the session. Names outside
``flashinfer.`` cost one string comparison per import; a ``flashinfer.*``
import costs a read of the registry's new tail and one pass over the new
module's namespace.

The pass over the namespace keeps restore exact: a late module that binds
one of our wrappers (``from .allreduce import allreduce_fusion``) has that
attribute recorded, so disable puts back the original there too; one that
bound an original of an API already wrapped gets the wrapper.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable, List, Optional, Sequence, Tuple

from .patcher import PatchSet
from .registry import ApiSpec, discover_new_apis, registry_size

PACKAGE_PREFIX = "flashinfer."


class _NotifyingLoader:
    """Stands in for a ``flashinfer.*`` module's loader for one import; the
    module sees its own loader (``__loader__``, ``__spec__.loader``) while it
    runs and afterwards."""

    def __init__(self, loader: Any, watcher: "LateImportWatcher") -> None:
        self._loader = loader
        self._watcher = watcher

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self._loader
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self._loader
        self._loader.exec_module(module)
        self._watcher.module_imported(module)


class _FlashInferImportFinder:
    """A ``sys.meta_path`` entry that finds nothing itself: for
    ``flashinfer.*`` names it asks the finders after it and wraps the loader."""

    def __init__(self, watcher: "LateImportWatcher") -> None:
        self._watcher = watcher

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if not fullname.startswith(PACKAGE_PREFIX) or not self._watcher.armed:
            return None
        for finder in list(sys.meta_path):
            if isinstance(finder, _FlashInferImportFinder):
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is not None and hasattr(loader, "exec_module") and not isinstance(loader, _NotifyingLoader):
            spec.loader = _NotifyingLoader(loader, self._watcher)
        return spec


class LateImportWatcher:
    """One per enable session. ``wrap(spec, modules)`` wraps a newly
    registered API (the session's own wrapping step; ``modules``: those that
    may hold a module alias of it, None for all) and returns problems to report;
    ``report(message)`` warns."""

    def __init__(
        self,
        patches: PatchSet,
        wrap: Callable[[ApiSpec, Optional[Sequence[Any]]], Sequence[str]],
        report: Callable[[str], None],
        start: Optional[int] = None,
    ) -> None:
        self.patches = patches
        self._wrap = wrap
        self._report = report
        self._seen = registry_size() if start is None else start
        self._pending: List[Tuple[Callable, Any]] = []
        # Modules imported while watching: an API registered late can only
        # have module aliases there (older modules could not bind it), so
        # wrapping it does not rescan every FlashInfer module.
        self._late_modules: List[Any] = []
        self._lock = threading.RLock()
        self._finder: Optional[_FlashInferImportFinder] = None
        self.armed = False

    def arm(self) -> None:
        with self._lock:
            if self.armed:
                return
            self._finder = _FlashInferImportFinder(self)
            sys.meta_path.insert(0, self._finder)
            self.armed = True

    def disarm(self) -> None:
        with self._lock:
            self.armed = False
            finder, self._finder = self._finder, None
            if finder is not None:
                try:
                    sys.meta_path.remove(finder)
                except ValueError:
                    pass

    def module_imported(self, module: Any) -> None:
        """A ``flashinfer.*`` module finished executing: wrap what it (and
        the modules it imported) registered, and keep its bindings exact.
        Never raises: a failure here must not fail the engine's import."""
        if not self.armed:
            return
        try:
            with self._lock:
                if self.armed:
                    self._late_modules.append(module)
                    self._catch_up(getattr(module, "__name__", ""))
                    self._bindings_of(module)
        except Exception as exc:  # noqa: BLE001 - never break the importer
            self._report(
                f"could not wrap the APIs of {getattr(module, '__name__', module)!r}, imported after enable: "
                f"{type(exc).__name__}: {exc}; its calls run FlashInfer's own kernels"
            )

    def catch_up_now(self) -> None:
        """Wrap what was registered since ``start`` without waiting for the
        next import (an import that happened during the enable itself)."""
        try:
            with self._lock:
                if self.armed and registry_size() > self._seen:
                    self._catch_up("", alias_scope=None)  # imported before watching: aliases anywhere
        except Exception as exc:  # noqa: BLE001 - the enable itself has succeeded; say what was missed
            self._report(f"could not wrap APIs registered during the enable: {type(exc).__name__}: {exc}")

    def _catch_up(self, finished: str, alias_scope: Any = ...) -> None:
        specs, unlocated, self._seen = discover_new_apis(self._seen, self._pending)
        # An entry whose attribute is still unbound waits for its module to
        # finish; once it has, an unlocated entry has nothing public to wrap.
        self._pending = [(o, t) for o, t in unlocated if getattr(o, "__module__", None) != finished]
        problems: List[str] = []
        for spec in specs:
            if getattr(spec.current, "__fita_route__", None) is not None:
                continue  # already ours (re-registered, or found twice)
            problems.extend(self._wrap(spec, self._late_modules if alias_scope is ... else alias_scope))
        if problems:
            self._report("some registered definitions cannot be routed: " + "; ".join(problems))

    def _bindings_of(self, module: Any) -> None:
        ours = self.patches.originals_by_replacement()
        if not ours:
            return
        by_original = {id(original): wrapper for original, wrapper in ours.values()}
        namespace = getattr(module, "__dict__", None) or {}
        for attr, value in list(namespace.items()):
            key = id(value)
            if key in ours:
                original, wrapper = ours[key]
                self.patches.adopt(module, attr, original, wrapper)
            elif key in by_original:
                self.patches.replace(module, attr, value, by_original[key])
