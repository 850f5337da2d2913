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

from . import builtin_guard, compat, config, renames, stats_files, workloads
from .counters import StatsBoard
from .definition_state import HealthBoard
from .env import ENABLE_VAR, PATH_VAR, prebuild_setting, read_env
from .patcher import PatchSet
from .prebuild import prebuild
from .plan_state import PlanRecorder
from .registry import describe_object, discover_apis
from .warn import warn


@dataclass
class _Session:
    patches: PatchSet = field(default_factory=PatchSet)
    names: List[str] = field(default_factory=list)
    fired: Set[str] = field(default_factory=set)
    board: StatsBoard = field(default_factory=StatsBoard)
    health: HealthBoard = field(default_factory=HealthBoard)
    workloads: Optional[Any] = field(default_factory=workloads.enabled)  # WorkloadBook with a stats dir
    watcher: Any = None  # late_imports.LateImportWatcher while enabled (issue 11)
    routes: List[Any] = field(default_factory=list)  # dispatch.ApiRoute, retired on restore


_lock = threading.RLock()
_session: Optional[_Session] = None
_last_board = StatsBoard()
_last_health = HealthBoard()
_last_workloads: Optional[Any] = None
_enabling_from_hook = False  # the import hook patches before engines bind names


def enable_apply(solutions: Optional[Mapping[str, Any]] = None, *, definitions: Any = None, rebind: Optional[bool] = None) -> int:
    """Route FlashInfer calls whose definition name is in ``solutions``.

    ``solutions`` maps definition names (``"rmsnorm_h4096"``) to a Python
    callable or a Solution, or is a curated folder's path (loaded with its
    Definitions and trace_apply.yaml, as the environment hook does). With no argument, the curated folder named by
    ``FLASHINFER_TRACE_APPLY_PATH`` is loaded (``solutions/`` and, if
    present, ``definitions/``); with nothing configured this is a no-op.
    ``definitions`` (a mapping of Definition JSONs by name, or a curated
    folder) adds dtype and constraint checks to routing. Calling it again
    replaces the previous mapping. Returns the number of attributes wrapped.

    Names outside FlashInfer still bound to an original API object (``from
    flashinfer.norm import f`` before this call) are named in a warning;
    ``rebind=True`` (default: ``FLASHINFER_TRACE_APPLY_REBIND``) points them
    at the wrappers too, until ``disable_apply()``.
    """
    return _enable(solutions, definitions, strict=True, rebind=rebind)


def _enable(solutions: Optional[Mapping[str, Any]], definitions: Any, strict: bool, rebind: Optional[bool] = None) -> int:
    """``enable_apply``; ``strict=False`` (the start-up hook) turns off a
    solution that fails to prebuild instead of raising."""
    global _session, _last_board, _last_health, _last_workloads
    with _lock:
        if isinstance(solutions, (str, os.PathLike)):
            from .catalog import load_solutions  # noqa: PLC0415

            solutions = load_solutions(solutions)  # a curated folder, with its rules
        folder_policy = getattr(solutions, "policy", None)
        if solutions is None:
            loaded, found = config.from_environment()
            folder_policy = getattr(loaded, "policy", None)
            mapping, definition_map = config.validate_mapping(loaded), {**found, **config.coerce_definitions(definitions)}
        else:
            # load_solutions(folder) carries the folder's Definitions (and
            # its policy's dtypes): the same rules as the environment hook.
            carried = getattr(solutions, "definitions", None)
            mapping = config.validate_mapping(solutions)
            definition_map = {**(carried if isinstance(carried, Mapping) else {}), **config.coerce_definitions(definitions)}
        ended = _session is not None
        if ended:
            _restore(_session, report_unmatched=False)
            _session = None
        if not mapping:
            if solutions is not None:
                warn(
                    "enable_apply() was given no solutions: nothing is routed"
                    + (" and the previous session has ended" if ended else ""),
                    stacklevel=3,
                )
            return 0
        compat.require_supported()  # names the installed release and the supported range
        mapping, definition_map = renames.follow_at_enable(mapping, definition_map)
        mapping, left_out = config.admitted(mapping, folder_policy)
        requested, problem = prebuild_setting()
        if problem:
            warn(problem, stacklevel=4)
        wanted = config.prebuild_names(mapping, folder_policy, requested)
        if wanted:
            built = prebuild({n: mapping[n] for n in wanted}, strict=strict)
            mapping = {n: v for n, v in mapping.items() if n not in wanted or n in built}
        configuration = config.configure(mapping, definition_map, folder_policy)
        if left_out:
            configuration.report.add(f"left out by the folder policy's allow/deny: {', '.join(left_out)}")
        session = _Session(names=sorted(mapping))
        _last_board, _last_health, _last_workloads = session.board, session.health, session.workloads
        try:
            count = _install(session, configuration, rebind)
        except BaseException:
            session.patches.restore()
            raise
        _session = session
        configuration.report.emit(stacklevel=4)
        stats_files.ensure_started(_stats_record)
        return count


def _routing_context(session: _Session, configuration: "config.Configuration") -> Any:
    from .dispatch import RoutingContext  # noqa: PLC0415

    told: Set[Tuple[str, str]] = set()

    def report_unaccepted(fi_api: str, argument: str, value: Any, solution: str) -> None:
        if (fi_api, argument) not in told:
            told.add((fi_api, argument))
            shown = f"Tensor(shape={tuple(value.shape)}, dtype={value.dtype})" if hasattr(value, "shape") else repr(value)
            warn(
                f"{fi_api} was called with {argument}={shown}, which solution '{solution}' does not accept; "
                "such calls run the original kernel (counted as fallback_unaccepted_argument). Add the "
                "parameter to the solution, or list it in the solution's spec.ignored_arguments if it "
                "cannot change the result",
                stacklevel=4,
            )

    context = RoutingContext(
        configuration.solutions, configuration.rules, configuration.hardware, configuration.sm,
        session.board, PlanRecorder(), session.fired, report_unaccepted,
        policies=configuration.policies, health=session.health, workloads=session.workloads,
    )
    context.routes = session.routes  # every route built (at enable or on a late import), retired on restore
    return context


def _install(session: _Session, configuration: "config.Configuration", rebind: Optional[bool] = None) -> int:
    import flashinfer  # noqa: F401, PLC0415 - fills the trace registry

    from .wrapping import wrap_api  # noqa: PLC0415

    # The built-in engine goes first: its disable puts FlashInfer's originals
    # back, which must happen before we read and wrap them, not over our wrappers.
    builtin_guard.take_over(session.patches)
    context = _routing_context(session, configuration)
    names = session.names
    problems: List[str] = []
    served: Set[str] = set()
    taken: List[str] = []  # APIs another tool had replaced: ours routes them while enabled
    wrapped = 0
    from .registry import registry_size  # noqa: PLC0415 - issue 11: where the late-import watcher starts

    registry_mark = registry_size()
    for spec in discover_apis():
        outcome = wrap_api(session.patches, spec, context, names)
        wrapped += outcome.wrapped
        problems.extend(outcome.problems)
        served.update(outcome.serves)
        if outcome.serves and spec.foreign is not None:
            taken.append(f"{spec.fi_api} (was {describe_object(spec.foreign)})")
    if problems:
        configuration.report.add("some registered definitions cannot be routed: " + "; ".join(problems))
    if taken:
        configuration.report.add(
            "another tool had replaced these FlashInfer APIs; flashinfer_trace_apply routes them while "
            f"it is enabled (calls it does not route run FlashInfer's kernel) and puts the tool's objects "
            f"back on disable: {', '.join(taken)}"
        )
    # -- reach (issue 11): late submodules, names bound before enable ------
    from . import reach  # noqa: PLC0415

    wrapped += reach.check_bindings(session.patches, rebind, from_hook=_enabling_from_hook)
    session.watcher = reach.arm_late_imports(session.patches, context, names, registry_mark)
    _report_unservable(configuration, [n for n in names if n not in served])
    return wrapped


def _report_unservable(configuration: "config.Configuration", unserved: List[str]) -> None:
    """Say at enable, not at a disable a server never calls, which names no
    FlashInfer template can produce. A name that a template of a submodule
    not imported yet can produce (``allreduce_fusion_h4096`` before
    ``import flashinfer.comm``) is wrapped when that module is imported."""
    from .registry import could_ever_produce  # noqa: PLC0415

    never = [name for name in unserved if not could_ever_produce(name)]
    if never:
        configuration.report.add(
            f"{len(never)} registered definition name(s) can never match a call: no FlashInfer API names "
            f"calls so: {', '.join(never)}. Check the spelling and the shape (`flashinfer-trace-apply doctor` "
            "shows the closest names)"
        )


def _restore(session: _Session, report_unmatched: bool) -> None:
    from . import reach  # noqa: PLC0415 - issue 11

    reach.before_restore(session.watcher, session.patches)
    left_alone = session.patches.restore()
    for route in session.routes:
        route.retire()  # a wrapper still referenced now acts as the original
    session.routes.clear()
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


def health() -> Dict[str, Dict[str, Any]]:
    """Per definition under an operating policy (``FLASHINFER_TRACE_APPLY_VERIFY``,
    ``..._ON_ERROR=fallback``): its circuit (``closed``, ``open``,
    ``half_open``), whether verification turned it off and why, its errors
    and its verified shapes, for the current (or last) session."""
    return _last_health.snapshot()


def _stats_record() -> Dict[str, Any]:
    """What a stats file holds besides who wrote it (see stats_files)."""
    session = _session
    return {
        "enabled": session is not None,
        "apis": stats(),
        "health": health(),
        "matched_definitions": sorted(session.fired) if session is not None else [],
        "workloads": _last_workloads.snapshot() if _last_workloads is not None else {},
    }


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
        path = config.check_environment_folder()
        global _enabling_from_hook
        _enabling_from_hook = True
        try:
            count = _enable(None, None, strict=False)
        finally:
            _enabling_from_hook = False
        if not is_enabled():
            warn(f"{ENABLE_VAR}=1 but {PATH_VAR}={path!r} holds no solutions; Trace Apply stays off")
        return count
    except Exception as exc:  # noqa: BLE001 - start-up must survive any configuration
        warn(f"Trace Apply not enabled: {type(exc).__name__}: {exc}")
        return 0
