"""Definition names that moved between FlashInfer releases.

A definition's name spells each const axis of its template. When a release
adds a const axis to a template (0.7.1 added ``act`` to the fp4 MoE
templates and ``ps`` to ``top_k_page_table_transform``; 0.7.4 added
``r4o6`` to eleven MoE templates), every call on the new release carries the
axis, so a name written for the old release never matches again; a name
written for the new release never matches on the old one. Nothing fails:
the solution silently stops being used. This module finds such names from
the live templates alone (no list of releases):

* **gained**: the name parses against a template with exactly one const axis
  missing, an axis every call of that API carries. When the API's own
  default fixes the axis's value (the value an older release, which had no
  such axis, implicitly used), the name is routed as the name this release
  gives those calls; otherwise only reported.
* **lost**: the name is a template's name plus one ``_<abbrev><int>``
  segment this release's template has no axis for. Reported with the name
  this release would use; never routed (what the extra value meant here is
  unknown).

``find_renames`` is what enable and ``doctor`` call; ``follow_renames``
turns the routable ones into the mapping enable installs.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .axes import AxisSource, const_axis_sources
from .warn import warn

GAINED = "gained"
LOST = "lost"


@dataclass(frozen=True)
class Rename:
    registered: str  # the name as registered
    fi_api: str
    change: str  # GAINED | LOST
    axis: str  # the axis's abbreviation in names ("act"; for LOST, as the segment reads)
    segment: str  # the segment this release adds ("_act3") or lacks ("_r4o60"); "<value>" when unknown
    current: Optional[str]  # the name this release gives these calls (None: depends on each call)
    routable: bool  # True: enable routes ``current`` to the registered solution

    def describe(self) -> str:
        axis = self.axis
        if self.change == GAINED:
            if self.current is None:
                return (f"'{self.registered}' matches no call of {self.fi_api} on this FlashInfer release: its "
                        f"template gained the const axis '{axis}', which every call carries with its own value; "
                        f"rename it (e.g. '{self.registered}{self.segment}'); not routed")
            routed = "routed as that name" if self.routable else f"not routed ('{self.current}' is registered too)"
            return (f"'{self.registered}' matches no call of {self.fi_api} on this FlashInfer release: its "
                    f"template gained the const axis '{axis}'; this release names these calls "
                    f"'{self.current}' (the API's default); {routed}")
        return (f"'{self.registered}' matches no call of {self.fi_api} on this FlashInfer release: its template "
                f"has no const axis for the segment '{self.segment}' (a name from another release); this release "
                f"would use '{self.current}'; not routed (rename it if the solution fits every such call)")


def _named_axes(template: Any, sources: Sequence[AxisSource]) -> List[Tuple[AxisSource, str]]:
    """(source, abbrev) for each const axis that appears in names, in order."""
    from flashinfer.trace.template import Const  # noqa: PLC0415

    out = []
    by_axis = {s.axis: s for s in sources}
    for axis, marker in template.axes.items():
        if not isinstance(marker, Const):
            continue
        abbrev = marker.abbrev if marker.abbrev is not None else axis
        if abbrev:
            out.append((by_axis[axis], abbrev))
    return out


_MISSING = object()


def _carried_value(source: AxisSource, signature: Optional[inspect.Signature]) -> Any:
    """What every call of the API carries for this axis: an int (the value
    when the caller leaves the argument out), None (present, but the value is
    the call's own), or _MISSING (some calls may lack it: an old name can
    still match those)."""
    if source.kind == "fixed":
        return source.value
    if signature is None:
        return _MISSING
    param = signature.parameters.get(source.param or "")
    if param is None or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
        return _MISSING
    if param.default is param.empty:
        return None
    if source.kind == "tensor" or param.default is None:
        return _MISSING
    value = source.read({source.param: param.default})  # the collector's own reading of the default
    return _MISSING if value is None else value


def _parse(prefix: str, named: Sequence[Tuple[AxisSource, str]], name: str) -> Optional[Dict[str, int]]:
    pattern = re.escape(prefix) + "".join(
        f"(?:_{re.escape(abbrev)}(?P<a{i}>-?\\d+))?" for i, (_, abbrev) in enumerate(named)
    )
    match = re.fullmatch(pattern, name)
    if match is None:
        return None
    return {src.axis: int(match.group(f"a{i}")) for i, (src, _) in enumerate(named) if match.group(f"a{i}") is not None}


def _lost_segment(prefix: str, named: Sequence[Tuple[AxisSource, str]], name: str) -> Optional[Tuple[str, str]]:
    """(extra segment, name without it) when ``name`` is one of this
    template's names with one unknown ``_<abbrev><int>`` segment added."""
    known = [f"(?:_{re.escape(abbrev)}-?\\d+)?" for _, abbrev in named]
    extra = r"(?P<extra>_[A-Za-z][A-Za-z0-9]*?-?\d+)"
    for position in range(len(known) + 1):
        pattern = re.escape(prefix) + "".join(known[:position]) + extra + "".join(known[position:])
        match = re.fullmatch(pattern, name)
        if match is not None:
            start, end = match.span("extra")
            return match.group("extra"), name[:start] + name[end:]
    return None


def _template_views(
    apis: Optional[Sequence[Any]], names: Sequence[str]
) -> List[Tuple[str, str, List[Tuple[AxisSource, str]], Dict[str, Any]]]:
    """(fi_api, prefix, named axes, carried value per axis) per template
    whose prefix begins one of ``names`` (enable pays only for those)."""
    from .registry import discover_apis, name_prefix  # noqa: PLC0415

    views = []
    for spec in discover_apis() if apis is None else apis:
        signature: Optional[inspect.Signature] = None
        for template in spec.templates:
            prefix = name_prefix(template)
            if not any(n.startswith(prefix) for n in names):
                continue
            if signature is None:
                try:
                    signature = inspect.signature(spec.current)
                except (TypeError, ValueError):
                    pass
            named = _named_axes(template, const_axis_sources(template))
            carried = {src.axis: _carried_value(src, signature) for src, _ in named}
            views.append((spec.fi_api, prefix, named, carried))
    return views


def _template_name(prefix: str, named: Sequence[Tuple[AxisSource, str]], values: Mapping[str, int]) -> str:
    parts = [f"{abbrev}{values[src.axis]}" for src, abbrev in named if src.axis in values]
    return prefix + ("_" + "_".join(parts) if parts else "")


def find_renames(names: Sequence[str], apis: Optional[Sequence[Any]] = None) -> List[Rename]:
    """Registered names that match no call on the installed FlashInfer
    because a template gained or lost one const axis. ``apis`` defaults to
    the live registry (``registry.discover_apis()``)."""
    views = _template_views(apis, names)
    registered = set(names)
    found: List[Rename] = []
    for name in names:
        gained: List[Rename] = []
        lost: List[Rename] = []
        matches_as_is = False
        for fi_api, prefix, named, carried in views:
            if not name.startswith(prefix):
                continue
            values = _parse(prefix, named, name)
            if values is not None:
                missing = [src for src, _ in named if src.axis not in values and carried[src.axis] is not _MISSING]
                if not missing:
                    matches_as_is = True
                    break
                if len(missing) == 1:
                    src = missing[0]
                    abbrev = dict((s.axis, a) for s, a in named)[src.axis]
                    implied = carried[src.axis]
                    if implied is None:
                        gained.append(Rename(name, fi_api, GAINED, abbrev, f"_{abbrev}<value>", None, False))
                    else:
                        current = _template_name(prefix, named, {**values, src.axis: implied})
                        gained.append(Rename(name, fi_api, GAINED, abbrev, f"_{abbrev}{implied}", current,
                                             routable=current not in registered))
                continue
            stripped = _lost_segment(prefix, named, name)
            if stripped is not None:
                segment = stripped[0]
                lost.append(Rename(name, fi_api, LOST, segment.lstrip("_").rstrip("-0123456789"), segment,
                                   stripped[1], False))
        if matches_as_is:
            continue
        candidates = gained or lost
        if len({(r.fi_api, r.current) for r in candidates}) > 1:
            # Several readings: report each, route none.
            found.extend(dataclasses.replace(r, routable=False) for r in candidates)
        else:
            found.extend(candidates[:1])
    return found


def follow_renames(
    mapping: Mapping[str, Any], definitions: Mapping[str, Any], apis: Optional[Sequence[Any]] = None
) -> Tuple[Dict[str, Any], Dict[str, Any], List[Rename]]:
    """(mapping, definitions, renames): each routable rename's solution (and
    Definition) registered under the name this release uses, in place of the
    old one."""
    renames = find_renames(sorted(mapping), apis)
    routed_mapping, routed_definitions = dict(mapping), dict(definitions)
    for rename in renames:
        if not rename.routable or rename.current is None:
            continue
        routed_mapping[rename.current] = routed_mapping.pop(rename.registered)
        if rename.registered in routed_definitions:
            routed_definitions[rename.current] = routed_definitions.pop(rename.registered)
    return routed_mapping, routed_definitions, renames


def follow_at_enable(mapping: Mapping[str, Any], definitions: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``follow_renames`` for enable: says once what was found and done."""
    routed_mapping, routed_definitions, renames = follow_renames(mapping, definitions)
    if renames:
        warn("definition names from another FlashInfer release: " + "; ".join(r.describe() for r in renames),
             stacklevel=4)
    return routed_mapping, routed_definitions
