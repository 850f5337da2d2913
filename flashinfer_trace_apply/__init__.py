"""flashinfer_trace_apply: run your own kernels in place of FlashInfer's, per
definition (op + compile-time shape), with the caller's conventions kept.

    import flashinfer_trace_apply as fita
    fita.enable_apply({"rmsnorm_h4096": my_rmsnorm})
    ...
    fita.stats(); fita.disable_apply()

The names below are loaded on first use: the start-up hook imports
``flashinfer_trace_apply._bootstrap`` in every process where the plugin is
armed, and that must not pull in torch or FlashInfer.
"""

# Nothing is imported here at module level (not even ``typing`` or
# ``importlib``): the .pth hook imports this package in every armed process.
TYPE_CHECKING = False
__version__ = "0.1.0"

_EXPORTS = {
    "enable_apply": "api",
    "disable_apply": "api",
    "is_enabled": "api",
    "stats": "api",
    "health": "api",
    "load_solutions": "catalog",
    "load_definitions": "catalog",
    "Solution": "solution",
    "BuildSpec": "solution",
    "SourceFile": "solution",
    "TraceApplyError": "errors",
    "ConfigError": "errors",
    "SolutionLoadError": "errors",
    "SolutionCallError": "errors",
    "TraceApplyWarning": "warn",
    "bundled_solutions_path": "bundled",
    "doctor": "doctor_report",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flashinfer_trace_apply' has no attribute {name!r}")
    import importlib  # noqa: PLC0415 - first use only

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .api import disable_apply, enable_apply, health, is_enabled, stats
    from .bundled import bundled_solutions_path
    from .doctor_report import doctor
    from .catalog import load_definitions, load_solutions
    from .errors import ConfigError, SolutionCallError, SolutionLoadError, TraceApplyError
    from .solution import BuildSpec, Solution, SourceFile
    from .warn import TraceApplyWarning
