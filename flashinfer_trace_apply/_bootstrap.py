"""Start-up hook, run from ``flashinfer_trace_apply.pth`` when
``FLASHINFER_TRACE_APPLY`` is set to anything but ``0``/empty.

Standard library only, and only modules the interpreter has already loaded
at start-up (``sys``, ``os``): this runs in every Python process of the
environment, so it must cost next to nothing and never raise. (``wrapt``'s
post-import hooks pull in ``asyncio`` and ``importlib.metadata``: about
0.1 s in every process, most of which never import FlashInfer.) It arms two
post-import hooks and imports nothing else:

* on ``flashinfer.trace_apply`` (FlashInfer's built-in engine, imported in
  the middle of ``import flashinfer``): silence its import-time hook, so
  exactly one engine routes calls;
* on ``flashinfer``: once the import has finished, enable our plugin from
  the environment, before the importer's next line runs.
"""

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


class PostImportFinder:
    """A ``sys.meta_path`` entry that runs a callback right after one of a
    few named modules finishes executing, inside the importer's ``import``
    statement. It finds nothing itself: it asks the finders after it for
    the real spec and wraps that spec's loader's ``exec_module`` on the
    loader instance (the spec, the loader object and ``__loader__`` stay
    what the import system made; the wrap is removed once it has run)."""

    def __init__(self) -> None:
        self.callbacks = {}  # module name -> callback(module); one shot each

    def watch(self, name: str, callback) -> None:
        module = sys.modules.get(name)
        if module is not None:
            callback(module)
        else:
            self.callbacks[name] = callback

    def find_spec(self, fullname, path=None, target=None):
        callback = self.callbacks.get(fullname)
        if callback is None:
            return None
        spec = None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec  # namespace package or legacy loader: leave it alone
        del self.callbacks[fullname]
        original = loader.exec_module

        def exec_module(module):
            if getattr(module, "__name__", None) != fullname:
                return original(module)  # a loader shared by several modules
            try:
                original(module)
            finally:
                try:
                    del loader.exec_module  # back to the class's method
                except AttributeError:
                    pass
            callback(module)  # only after a successful import

        try:
            loader.exec_module = exec_module
        except (AttributeError, TypeError):  # a loader with slots: no hook, no harm
            self.callbacks[fullname] = callback
        return spec

    def invalidate_caches(self) -> None:
        pass


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
        finder = PostImportFinder()
        finder.watch("flashinfer.trace_apply", _on_builtin_imported)
        finder.watch("flashinfer", _on_flashinfer_imported)
        sys.meta_path.insert(0, finder)
        _armed = True
    except Exception as exc:  # noqa: BLE001 - interpreter start-up must survive
        print(f"[flashinfer_trace_apply] could not arm the import hook: {exc!r}", file=sys.stderr)
