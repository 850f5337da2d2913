"""Which FlashInfer releases the plugin routes on, and what older supported
releases lack, supplied here (the one place that knows release differences).

Routing reads FlashInfer's live trace registry
(``flashinfer.api_logging._TRACE_REGISTRY``) and its template classes
(``flashinfer.trace.template``). Releases before 0.6.11 have neither: there
is nothing to route by, so enabling is refused with the reason. Inside the
supported range, three things changed that the rest of the package needs to
see one way:

* ``Const(value=)`` (a fixed axis value) arrived in 0.6.18, together with a
  new order for where the collector reads an axis (required tensor, declared
  scalar, optional tensor, keyword). Before it, the collector read the first
  tensor that carries the axis, optional or not, then a keyword named after
  the axis. ``fixed_axis_value`` and ``ordered_axis_sources`` cover both.
* ``TraceTemplate.definition_name`` (the naming rule as a method) arrived in
  0.6.14; the rule itself is the same in every release since 0.6.11, so
  ``definition_name`` applies it where the method is missing.
* The map from an API with several templates to the function that picks one
  per call (``_TRACE_DISPATCHERS``) arrived in 0.7.0; earlier, that function
  is only held by the API's ``fi_trace``.

Capabilities are probed, not inferred from the version number, so a
re-packaged or patched release is judged by what it has.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from .errors import ConfigError
from .warn import warn

FLOOR = "0.6.13"
"""Oldest FlashInfer release the plugin supports (kept equal to the floor
declared in pyproject.toml; a test checks the two agree). 0.6.12 routes with
the bridges below, but its templates have no ``check`` (the comparison
``flashinfer-trace-apply check`` relies on), so it is refused."""

CEILING = "0.8"
"""First FlashInfer release line not yet tested (newer releases are used when
they have what routing needs, with one warning)."""

SUPPORTED = f">={FLOOR},<{CEILING}"


class UnsupportedFlashInfer(ConfigError):
    """The installed FlashInfer cannot be routed by this plugin."""


@dataclass(frozen=True)
class FlashInferFeatures:
    """What the installed FlashInfer offers the plugin (each probed)."""

    version: Optional[str]
    imports: bool = True  # ``import flashinfer`` succeeds
    import_error: Optional[str] = None
    trace_registry: bool = False  # flashinfer.api_logging._TRACE_REGISTRY
    trace_templates: bool = False  # flashinfer.trace.template.{TraceTemplate, Const, Tensor}
    fixed_axis_values: bool = False  # Const.value and the 0.6.18 axis-source order
    naming_method: bool = False  # TraceTemplate.definition_name
    template_check: bool = False  # TraceTemplate(check=) and standard_check
    dispatcher_map: bool = False  # api_logging._TRACE_DISPATCHERS


def release_tuple(version: Optional[str]) -> Tuple[int, ...]:
    """The numeric release part: ``0.7.2.post1`` -> (0, 7, 2); ``0.8.0rc1`` -> (0, 8, 0)."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", version or "")
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


def installed_version() -> Optional[str]:
    module = sys.modules.get("flashinfer")
    version = getattr(module, "__version__", None) if module is not None else None
    if isinstance(version, str) and version:
        return version
    try:
        return importlib.metadata.version("flashinfer-python")
    except importlib.metadata.PackageNotFoundError:
        return None


def _has_module(name: str) -> bool:
    # find_spec, not import: on releases without the module, a failed
    # ``from flashinfer import x`` inside the post-import hook is reported by
    # Python as a circular import, which misleads.
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _probe() -> FlashInferFeatures:
    try:
        import flashinfer  # noqa: F401, PLC0415
    except Exception as exc:  # noqa: BLE001 - reported as the reason, never raised here
        return FlashInferFeatures(version=installed_version(), imports=False,
                                  import_error=f"{type(exc).__name__}: {exc}")
    version = installed_version()
    try:
        return _probe_pieces(version)
    except Exception:  # noqa: BLE001 - a release whose pieces break on probing has none of them
        return FlashInferFeatures(version=version)


def _probe_pieces(version: Optional[str]) -> FlashInferFeatures:
    registry = dispatchers = templates = fixed = naming = check = False
    if _has_module("flashinfer.api_logging"):
        api_logging = importlib.import_module("flashinfer.api_logging")
        registry = isinstance(getattr(api_logging, "_TRACE_REGISTRY", None), list)
        dispatchers = isinstance(getattr(api_logging, "_TRACE_DISPATCHERS", None), dict)
    if _has_module("flashinfer.trace") and _has_module("flashinfer.trace.template"):
        module = importlib.import_module("flashinfer.trace.template")
        template_cls = getattr(module, "TraceTemplate", None)
        const_cls = getattr(module, "Const", None)
        templates = all(getattr(module, n, None) is not None for n in ("TraceTemplate", "Const", "Tensor", "Scalar"))
        if templates:
            fixed = hasattr(const_cls(), "value")
            naming = callable(getattr(template_cls, "definition_name", None))
            check = callable(getattr(module, "standard_check", None))
    return FlashInferFeatures(
        version=version,
        trace_registry=registry,
        trace_templates=templates,
        fixed_axis_values=fixed,
        naming_method=naming,
        template_check=check,
        dispatcher_map=dispatchers,
    )


@functools.lru_cache(maxsize=1)
def probe() -> FlashInferFeatures:
    """The installed FlashInfer's features (probed once per process)."""
    return _probe()


def refusal(features: FlashInferFeatures) -> Optional[str]:
    """Why routing cannot work with ``features`` (None: it can)."""
    installed = f"FlashInfer {features.version}" if features.version else "FlashInfer (version unknown)"
    supported = f"flashinfer_trace_apply supports flashinfer-python {SUPPORTED}"
    if features.version is None and not features.imports:
        return f"flashinfer-python is not installed; {supported}"
    if not features.imports:
        return f"{installed} cannot be imported ({features.import_error}); {supported}"
    if release_tuple(features.version) and release_tuple(features.version) < release_tuple(FLOOR):
        lacks = [] if features.trace_registry else ["the trace registry (flashinfer.api_logging._TRACE_REGISTRY)"]
        why = f", it lacks {lacks[0]}" if lacks else ""
        return f"{installed} is older than the oldest supported release{why}; {supported}"
    missing = []
    if not features.trace_registry:
        missing.append("flashinfer.api_logging._TRACE_REGISTRY")
    if not features.trace_templates:
        missing.append("flashinfer.trace.template (TraceTemplate, Const, Tensor, Scalar)")
    if missing:
        return f"{installed} lacks what routing reads: {', '.join(missing)}; {supported}"
    return None


_told_untested = False


def require_supported() -> FlashInferFeatures:
    """Raise :class:`UnsupportedFlashInfer` naming the installed release and
    the supported range when routing cannot work; warn once per process when
    the release is newer than the tested range but has what routing reads."""
    global _told_untested
    features = probe()
    problem = refusal(features)
    if problem is not None:
        raise UnsupportedFlashInfer(problem)
    if release_tuple(features.version) >= release_tuple(CEILING) and not _told_untested:
        _told_untested = True
        warn(f"FlashInfer {features.version} is newer than the releases this plugin was tested "
             f"with ({SUPPORTED}); routing it anyway, as it has the trace registry and templates")
    return features


# ---------------------------------------------------------------------------
# Bridges: one behaviour for every supported release.
# ---------------------------------------------------------------------------


def fixed_axis_value(marker: Any) -> Optional[int]:
    """``Const(value=)`` where the release has it; None before 0.6.18."""
    return getattr(marker, "value", None)


def definition_name(template: Any, axis_values: Mapping[str, int]) -> str:
    """The template's naming rule: ``name_prefix`` (else ``op_type``), then
    ``_<abbrev><value>`` for each const axis present, in axis order (an empty
    abbrev leaves the axis out, None uses the axis name)."""
    method = getattr(template, "definition_name", None)
    if callable(method):
        return method(dict(axis_values))
    from flashinfer.trace.template import Const  # noqa: PLC0415

    prefix = template.name_prefix if template.name_prefix is not None else template.op_type
    parts = []
    for axis, marker in template.axes.items():
        if not isinstance(marker, Const) or axis not in axis_values:
            continue
        abbrev = marker.abbrev if marker.abbrev is not None else axis
        if abbrev:
            parts.append(f"{abbrev}{axis_values[axis]}")
    return prefix + ("_" + "_".join(parts) if parts else "")


def optional_tensors_first() -> bool:
    """True on releases (before 0.6.18) whose collector reads an axis from
    the first tensor carrying it, optional or not, then from a keyword named
    after the axis (declared scalars are not consulted)."""
    return not probe().fixed_axis_values


def template_selector(original: Callable, public: Any, selectors: Dict[Callable, Callable]) -> Optional[Callable]:
    """The function that picks one of an API's templates per call:
    ``_TRACE_DISPATCHERS`` on 0.7+, else the one its ``fi_trace`` closes over."""
    chosen = selectors.get(original)
    if chosen is not None:
        return chosen
    fi_trace = getattr(public, "fi_trace", None)
    code = getattr(fi_trace, "__code__", None)
    cells = getattr(fi_trace, "__closure__", None)
    if code is None or not cells:
        return None
    for name, cell in zip(code.co_freevars, cells):
        if name == "_dispatch_fn":
            try:
                value = cell.cell_contents
            except ValueError:
                return None
            return value if callable(value) else None
    return None
