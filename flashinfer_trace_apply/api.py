"""The public entry points: enable_apply, disable_apply, is_enabled, stats.

One enable session at a time: ``enable_apply`` builds a route per FlashInfer
API that some registered definition could name, patches the public
attributes (and module aliases, and wrapper-class methods), and records
everything in a :class:`~.patcher.PatchSet` so ``disable_apply`` restores the
identical objects. Enabling is all-or-nothing: if anything fails part-way,
what was patched is put back before the error propagates.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

from . import builtin_guard, compat, renames
from .env import ENABLE_VAR, PATH_VAR, read_env
from .errors import ConfigError
from .patcher import PatchSet
from .counters import StatsBoard
from .plan_state import PlanRecorder, plan_inputs_for
from .registry import discover_apis, module_aliases
from .warn import warn


@dataclass
class _Session:
    patches: PatchSet = field(default_factory=PatchSet)
    names: List[str] = field(default_factory=list)
    fired: Set[str] = field(default_factory=set)
    board: StatsBoard = field(default_factory=StatsBoard)


_lock = threading.RLock()
_session: Optional[_Session] = None
_last_board = StatsBoard()


def _validate(solutions: Mapping[str, Any]) -> Dict[str, Any]:
    from .solution import Solution  # noqa: PLC0415

    if not isinstance(solutions, Mapping):
        raise TypeError(f"enable_apply() takes a mapping {{definition_name: solution}}, got {type(solutions).__name__}")
    checked: Dict[str, Any] = {}
    for name, value in solutions.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"definition names must be non-empty strings, got {name!r}")
        if callable(value) and not isinstance(value, type):
            checked[name] = value
            continue
        try:
            checked[name] = Solution.coerce(value)
        except Exception as exc:
            raise TypeError(
                f"solution for definition '{name}' must be a callable or a Solution: {exc}"
            ) from exc
    return checked


def _from_environment() -> Tuple[Dict[str, Any], Dict[str, Any]]:
    from .catalog import load_definitions, load_solutions  # noqa: PLC0415

    path = read_env().path
    if not path:
        return {}, {}
    return load_solutions(path), load_definitions(path)


def _definitions(definitions: Any) -> Dict[str, Any]:
    if definitions is None:
        return {}
    if isinstance(definitions, (str, os.PathLike)):
        from .catalog import load_definitions  # noqa: PLC0415

        return load_definitions(definitions)
    if not isinstance(definitions, Mapping):
        raise TypeError(f"definitions must be a mapping {{name: Definition JSON}} or a folder, got {type(definitions).__name__}")
    return dict(definitions)


def enable_apply(solutions: Optional[Mapping[str, Any]] = None, *, definitions: Any = None) -> int:
    """Route FlashInfer calls whose definition name is in ``solutions``.

    ``solutions`` maps definition names (``"rmsnorm_h4096"``) to a Python
    callable or a Solution. With no argument, the curated folder named by
    ``FLASHINFER_TRACE_APPLY_PATH`` is loaded (``solutions/`` and, if
    present, ``definitions/``); with nothing configured this is a no-op.
    ``definitions`` (a mapping of Definition JSONs by name, or a curated
    folder) adds dtype and constraint checks to routing. Calling it again
    replaces the previous mapping. Returns the number of attributes wrapped.
    """
    global _session, _last_board
    with _lock:
        if solutions is None:
            loaded, found = _from_environment()
            mapping, definition_map = _validate(loaded), {**found, **_definitions(definitions)}
        else:
            mapping, definition_map = _validate(solutions), _definitions(definitions)
        if _session is not None:
            _restore(_session, report_unmatched=False)
            _session = None
        if not mapping:
            return 0
        compat.require_supported()  # names the installed release and the supported range
        mapping, definition_map = renames.follow_at_enable(mapping, definition_map)
        session = _Session(names=sorted(mapping))
        _last_board = session.board
        try:
            count = _install(session, mapping, definition_map)
        except BaseException:
            session.patches.restore()
            raise
        _session = session
        return count


def _routing_context(session: _Session, mapping: Dict[str, Any], definition_map: Dict[str, Any]) -> Any:
    """Rules and hardware support per registered name; reports, once, what
    will not be routed here or not be checked per call."""
    from .definitions import add_applies_when, rules_from_definition  # noqa: PLC0415
    from .dispatch import RoutingContext  # noqa: PLC0415
    from .hardware import current_sm, read_targets  # noqa: PLC0415

    sm = current_sm()
    rules = {name: rules_from_definition(d) for name, d in definition_map.items() if name in mapping}
    hardware = {}
    excluded, unreadable, unusable = [], [], []
    for name, value in mapping.items():
        spec = getattr(value, "spec", None)
        if spec is None:
            continue
        if spec.applies_when:
            rules[name], problems = add_applies_when(rules.get(name), name, spec.applies_when, definition_map.get(name))
            unusable += problems
        support = read_targets(spec.target_hardware)
        hardware[name] = support
        unreadable += [f"{name}: {e!r}" for e in support.unreadable]
        if not support.allows(sm):
            excluded.append(f"{name} (targets {list(spec.target_hardware)})")
    if excluded:
        warn(f"not routed on this GPU (sm{sm}): {', '.join(excluded)}; such calls count as fallback_unsupported_arch", stacklevel=5)
    if unreadable:
        warn(f"target_hardware entries not understood (ignored): {', '.join(unreadable)}", stacklevel=5)
    if unusable:
        warn(f"not routed, the original runs instead: {'; '.join(unusable)}; such calls count as fallback_constraint",
             stacklevel=5)
    unchecked = [f"{n}: {c!r}" for n, r in rules.items() for c in r.unchecked]
    if unchecked:
        warn(
            "constraints that need tensor data are not checked per call (a GPU sync per call, "
            f"impossible in CUDA-graph capture): {', '.join(unchecked)}",
            stacklevel=5,
        )
    told: Set[Tuple[str, str]] = set()

    def report_unaccepted(fi_api: str, argument: str, value: Any) -> bool:
        if (fi_api, argument) not in told:
            told.add((fi_api, argument))
            shown = f"Tensor(shape={tuple(value.shape)}, dtype={value.dtype})" if hasattr(value, "shape") else repr(value)
            warn(
                f"{fi_api} was called with {argument}={shown}, which the routed solution does not "
                "accept; the solution ran without it (add the parameter to the solution to receive it)",
                stacklevel=4,
            )
        return True

    return RoutingContext(mapping, rules, hardware, sm, session.board, PlanRecorder(), session.fired, report_unaccepted)


def _install(session: _Session, mapping: Dict[str, Any], definition_map: Dict[str, Any]) -> int:
    import flashinfer  # noqa: F401, PLC0415 - fills the trace registry

    from .dispatch import ApiRoute  # noqa: PLC0415

    context = _routing_context(session, mapping, definition_map)
    recorder = context.recorder
    names = session.names
    problems: List[str] = []
    wrapped = 0
    for spec in discover_apis():
        route = ApiRoute(spec, context)
        serves, issues = route.routable_names(names)
        problems.extend(issues)
        if not serves:
            continue
        wrapper = route.build_wrapper()
        targets = [(spec.owner, spec.attr)]
        if not spec.is_method:
            targets += module_aliases(spec.current, skip=(spec.owner, spec.attr))
        for owner, attr in targets:
            if session.patches.replace(owner, attr, spec.current, wrapper):
                wrapped += 1
        if spec.is_method and plan_inputs_for(spec.owner) is not None:
            plan = vars(spec.owner).get("plan")
            if callable(plan):
                session.patches.replace(spec.owner, "plan", plan, recorder.wrap_plan(plan))
    builtin_guard.take_over(session.patches)
    if problems:
        warn("some registered definitions cannot be routed: " + "; ".join(problems))
    return wrapped


def _restore(session: _Session, report_unmatched: bool) -> None:
    left_alone = session.patches.restore()
    if left_alone:
        warn(
            "left these attributes as they are, because something re-patched them after "
            f"flashinfer_trace_apply: {', '.join(left_alone)}"
        )
    if report_unmatched:
        never = [n for n in session.names if n not in session.fired]
        if never:
            warn(
                f"{len(never)} registered definition(s) never matched a call and were not applied: "
                f"{', '.join(never)}. Check the definition names and shapes."
            )


def disable_apply() -> None:
    """Restore every patched FlashInfer attribute (the identical objects).
    ``stats()`` keeps the finished session's counts until the next enable."""
    global _session
    with _lock:
        if _session is None:
            return
        session, _session = _session, None
        _restore(session, report_unmatched=True)


def is_enabled() -> bool:
    return _session is not None


def stats() -> Dict[str, Dict[str, int]]:
    """Per-API counts of ``hit``, ``fallback_no_candidate``,
    ``fallback_unwarmed_in_capture`` and ``error`` for the current (or last)
    enable session; APIs with no calls are left out."""
    return _last_board.snapshot()


def enable_from_environment() -> int:
    """The import-time hook's body: never raises; reports problems as one
    warning and leaves FlashInfer unpatched."""
    setting = read_env()
    if setting.problem:
        warn(setting.problem)
        return 0
    if not setting.requested:
        return 0
    try:
        if not setting.path:
            raise ConfigError(f"{ENABLE_VAR}=1 but {PATH_VAR} is not set; set it to a curated solutions folder")
        if not os.path.isdir(setting.path):
            raise ConfigError(f"{PATH_VAR}={setting.path!r} is not a directory")
        count = enable_apply()
        if not is_enabled():
            warn(f"{ENABLE_VAR}=1 but {PATH_VAR}={setting.path!r} holds no solutions; Trace Apply stays off")
        return count
    except Exception as exc:  # noqa: BLE001 - start-up must survive any configuration
        warn(f"Trace Apply not enabled: {type(exc).__name__}: {exc}")
        return 0
