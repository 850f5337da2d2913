"""What FlashInfer can route: its live trace registry, read once per enable.

FlashInfer records every API decorated with a trace template in
``flashinfer.api_logging._TRACE_REGISTRY`` (and the selector functions of APIs
with several templates in ``_TRACE_DISPATCHERS``). This module turns that into
one :class:`ApiSpec` per public API: where the callable lives, the object
that is there now, and the templates (and selector) that name its calls.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import compat


@dataclass
class ApiSpec:
    fi_api: str  # canonical name, as FlashInfer's trace tags it
    owner: Any  # module (free function) or class (wrapper method)
    attr: str
    current: Callable  # the public object found at owner.attr
    original: Callable  # the undecorated function the registry recorded
    templates: List[Any] = field(default_factory=list)
    selector: Optional[Callable] = None  # picks a template per call
    # Another tool's object found at owner.attr in place of ``current`` (which
    # still lives on as a module alias); while enabled ours replaces it, and
    # disable puts it back.
    foreign: Optional[Callable] = None

    @property
    def stored(self) -> Callable:
        """What owner.attr holds now, to be replaced by our wrapper."""
        return self.foreign if self.foreign is not None else self.current

    @property
    def is_method(self) -> bool:
        return inspect.isclass(self.owner)


def _registry() -> Tuple[Sequence[Tuple[Callable, Any, str]], Dict[Callable, Callable], Callable[[Callable], str]]:
    from flashinfer import api_logging  # noqa: PLC0415

    registry = getattr(api_logging, "_TRACE_REGISTRY", [])
    selectors = getattr(api_logging, "_TRACE_DISPATCHERS", {})
    naming = getattr(api_logging, "_trace_fi_api_for", None)
    if naming is None:
        def naming(fn: Callable) -> str:
            return f"{fn.__module__}.{fn.__qualname__}"
    return registry, selectors, naming


def _wraps_original(obj: Any, original: Callable) -> bool:
    """True if ``obj`` is ``original`` or a functools.wraps chain ending there."""
    seen = 0
    while obj is not None and seen < 16:
        if obj is original:
            return True
        obj = getattr(obj, "__wrapped__", None)
        seen += 1
    return False


def _locate(original: Callable) -> Optional[Tuple[Any, str, Any, Any]]:
    """Find (owner, attr, FlashInfer's public object, foreign object or None)
    for a registered function. When another tool has replaced the public
    object at its home with one that does not lead back to FlashInfer's
    function, the public object is looked for among FlashInfer's module
    aliases (``flashinfer.fused_add_rmsnorm`` for ``flashinfer.norm.fused_add_rmsnorm``)."""
    module = sys.modules.get(getattr(original, "__module__", "") or "")
    if module is None:
        try:
            module = importlib.import_module(original.__module__)
        except Exception:  # noqa: BLE001 - an unimportable module has nothing to patch
            return None
    parts = original.__qualname__.split(".")
    if "<locals>" in parts:
        return None
    owner: Any = module
    for part in parts[:-1]:
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    attr = parts[-1]
    # vars() rather than getattr: a method must be read as stored on the class
    # (so a later restore puts back exactly that object).
    namespace = vars(owner) if inspect.isclass(owner) else getattr(owner, "__dict__", {})
    if attr not in namespace:
        return None
    current = namespace[attr]
    if _wraps_original(current, original):
        return owner, attr, current, None
    if inspect.isclass(owner) or not callable(current):
        return None
    public = _public_alias(original)
    if public is None:
        return None
    return owner, attr, public, current


def _public_alias(original: Callable) -> Optional[Callable]:
    for mod_name, module in list(sys.modules.items()):
        if module is None or not (mod_name == "flashinfer" or mod_name.startswith("flashinfer.")):
            continue
        for value in list(getattr(module, "__dict__", {}).values()):
            if callable(value) and value is not original and _wraps_original(value, original):
                return value
    return None


def _group(entries: Sequence[Tuple[Callable, Any]], selectors: Dict[Callable, Callable],
           naming: Callable[[Callable], str]) -> Tuple[List[ApiSpec], List[Tuple[Callable, Any]]]:
    """Registry entries (original, template) grouped into one ApiSpec per
    located public API, in registry order; and the entries not located."""
    by_original: Dict[int, ApiSpec] = {}
    order: List[ApiSpec] = []
    unlocated: List[Tuple[Callable, Any]] = []
    for original, template in entries:
        spec = by_original.get(id(original))
        if spec is None:
            located = _locate(original)
            if located is None:
                unlocated.append((original, template))
                continue
            owner, attr, current, foreign = located
            spec = ApiSpec(
                fi_api=naming(original),
                owner=owner,
                attr=attr,
                current=current,
                original=original,
                selector=compat.template_selector(original, current, selectors),
                foreign=foreign,
            )
            by_original[id(original)] = spec
            order.append(spec)
        if all(t is not template for t in spec.templates):
            spec.templates.append(template)
    return order, unlocated


def discover_apis() -> List[ApiSpec]:
    registry, selectors, naming = _registry()
    order, _unlocated = _group([(o, t) for o, t, _label in list(registry)], selectors, naming)
    # An API with several templates and no way to tell which one names a
    # call would be routed by the wrong template's name: leave it alone.
    return [s for s in order if len(s.templates) == 1 or s.selector is not None]


def name_prefix(template: Any) -> str:
    return template.name_prefix if template.name_prefix is not None else template.op_type


# Per template (by identity; the template is kept in the value, so an id is
# never reused while cached): enable matches every registered name against
# every template, about a thousand times for the bundled folder.
_NAME_PATTERNS: Dict[int, Tuple[Any, "re.Pattern[str]"]] = {}


def name_pattern(template: Any) -> "re.Pattern[str]":
    """A regex matching every definition name this template can produce:
    the prefix, then each const axis as ``_<abbrev><int>`` (omitted when the
    call does not carry the axis, as FlashInfer's naming rule does)."""
    cached = _NAME_PATTERNS.get(id(template))
    if cached is not None and cached[0] is template:
        return cached[1]
    pattern = _build_name_pattern(template)
    _NAME_PATTERNS[id(template)] = (template, pattern)
    return pattern


def _build_name_pattern(template: Any) -> "re.Pattern[str]":
    from flashinfer.trace.template import Const  # noqa: PLC0415

    parts = [re.escape(name_prefix(template))]
    for axis, marker in template.axes.items():
        if not isinstance(marker, Const):
            continue
        abbrev = marker.abbrev if marker.abbrev is not None else axis
        if abbrev == "":
            continue
        parts.append(f"(?:_{re.escape(abbrev)}-?\\d+)?")
    return re.compile("".join(parts) + r"\Z")


def could_produce(template: Any, names: Sequence[str]) -> bool:
    prefix = name_prefix(template)
    if not any(n.startswith(prefix) for n in names):
        return False  # the pattern starts with the prefix: no need to build it
    pattern = name_pattern(template)
    return any(pattern.match(n) for n in names)


def module_aliases(obj: Any, skip: Tuple[Any, str]) -> List[Tuple[Any, str]]:
    """Every ``flashinfer*`` module attribute bound to ``obj`` (by identity),
    other than ``skip``: ``flashinfer.rmsnorm`` is ``flashinfer.norm.rmsnorm``."""
    found: List[Tuple[Any, str]] = []
    for mod_name, module in list(sys.modules.items()):
        if module is None or not (mod_name == "flashinfer" or mod_name.startswith("flashinfer.")):
            continue
        namespace = getattr(module, "__dict__", None)
        if not namespace:
            continue
        for attr, value in list(namespace.items()):
            if value is obj and (module, attr) != skip:
                found.append((module, attr))
    return found


def describe_object(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


# -- discovery after enable (FlashInfer submodules imported late) ----------------


def registry_size() -> int:
    """How many entries FlashInfer's trace registry holds now; a later
    :func:`discover_new_apis` reads only what was appended after it."""
    registry, _selectors, _naming = _registry()
    return len(registry)


def discover_new_apis(start: int, pending: Sequence[Tuple[Callable, Any]] = ()) -> Tuple[List[ApiSpec], List[Tuple[Callable, Any]], int]:
    """The APIs registered since index ``start`` (plus ``pending`` entries
    that could not be located before), as :class:`ApiSpec` s.

    Returns ``(specs, unlocated, next_start)``: ``unlocated`` are entries
    whose public attribute is not bound yet (their module, or the class that
    holds the method, is still being executed); pass them back as
    ``pending`` on the next call. Only the new tail of the registry is read,
    so a late import costs in proportion to what it registered.
    """
    registry, selectors, naming = _registry()
    end = len(registry)
    entries = list(pending) + [(original, template) for original, template, _label in registry[start:end]]
    order, unlocated = _group(entries, selectors, naming)
    return order, unlocated, end


def could_ever_produce(name: str) -> bool:
    """Whether any of FlashInfer's trace templates, those of submodules not
    imported yet included (``flashinfer.comm``'s are only registered when it
    is imported), can produce ``name``. The template modules are small;
    this runs only for names no loaded API serves."""
    import pkgutil  # noqa: PLC0415

    try:
        from flashinfer.trace import templates  # noqa: PLC0415
        from flashinfer.trace.template import TraceTemplate  # noqa: PLC0415
    except Exception:  # noqa: BLE001 - a release without the templates package: cannot tell
        return False
    for info in pkgutil.iter_modules(templates.__path__):
        try:
            module = importlib.import_module(f"{templates.__name__}.{info.name}")
        except Exception:  # noqa: BLE001 - one broken template module hides only its own names
            continue
        for value in vars(module).values():
            if isinstance(value, TraceTemplate) and could_produce(value, [name]):
                return True
    return False
