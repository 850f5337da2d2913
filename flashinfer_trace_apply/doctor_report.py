"""``doctor``: will each registered definition be reached, here?

For every definition a curated folder (or the running session) registers:
which FlashInfer APIs can produce its name, which attributes carry the
routing wrapper, which names outside FlashInfer still hold the original API
(bound before a programmatic enable, so never routed), and, for a name no
API can produce, the closest names FlashInfer's templates can produce (a
typo such as ``rmsnorm_d4096`` for ``rmsnorm_h4096``).

Inside a running process ``flashinfer_trace_apply.doctor()`` inspects the
active session as it is. Without one (the command line), it enables the
folder for the duration of the inspection, through the same path as
``enable_apply``, and disables it again.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import re
import sys
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

OK = "ok"
STALE = "partly reachable"  # wrapped, but some names bound before enable keep the original
NOT_WRAPPED = "not wrapped"  # an API names it, but nothing was wrapped for it (see problems)
NEVER = "never matches"  # no FlashInfer API (in the modules imported) can produce the name


@dataclass
class DefinitionReport:
    name: str
    status: str
    apis: List[str] = field(default_factory=list)
    wrapped: List[str] = field(default_factory=list)
    stale: List[str] = field(default_factory=list)
    closest: List[str] = field(default_factory=list)


@dataclass
class DoctorReport:
    source: str  # "running session" or the folder inspected
    definitions: List[DefinitionReport]
    imported: List[str] = field(default_factory=list)
    import_errors: Dict[str, str] = field(default_factory=dict)
    flashinfer_submodules_not_imported: List[str] = field(default_factory=list)
    enable_warnings: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No definition that can never match or was left unwrapped."""
        return all(d.status in (OK, STALE) for d in self.definitions)

    def as_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data

    def format_table(self) -> str:
        rows = [("definition", "status", "FlashInfer APIs (or closest names)", "wrapped", "stale bindings")]
        for d in self.definitions:
            apis = ", ".join(d.apis) if d.apis else ("closest: " + ", ".join(d.closest) if d.closest else "-")
            rows.append((d.name, d.status, apis, str(len(d.wrapped)), ", ".join(d.stale) or "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(rows[0][-1]))
        notes = [f"inspected: {self.source}"]
        if any(d.stale for d in self.definitions):
            notes.append(
                "stale bindings hold FlashInfer's original object (bound before enable_apply()): enable through "
                "the import hook (FLASHINFER_TRACE_APPLY=1), or enable_apply(..., rebind=True)"
            )
        if any(d.status == NEVER for d in self.definitions) and self.flashinfer_submodules_not_imported:
            notes.append(
                f"{len(self.flashinfer_submodules_not_imported)} FlashInfer submodule(s) not imported here; an API "
                "there may produce a name marked 'never matches' (import them, or run the command-line doctor)"
            )
        for module, error in sorted(self.import_errors.items()):
            notes.append(f"could not import {module}: {error}")
        return "\n".join(lines + [""] + notes)


# -- what FlashInfer can name ---------------------------------------------------------


def _const_abbrevs(template: Any) -> List[str]:
    from flashinfer.trace.template import Const  # noqa: PLC0415

    out = []
    for axis, marker in template.axes.items():
        if isinstance(marker, Const):
            abbrev = marker.abbrev if marker.abbrev is not None else axis
            if abbrev:
                out.append(abbrev)
    return out


def _candidate_names(name: str, templates: Iterable[Any]) -> List[str]:
    """Names the templates can produce, with the numbers of ``name`` put in
    their const axes in order: what the author most likely meant."""
    from .registry import name_prefix  # noqa: PLC0415

    numbers = re.findall(r"\d+", name)
    seen: Dict[str, None] = {}
    for template in templates:
        prefix = name_prefix(template)
        abbrevs = _const_abbrevs(template)
        seen[prefix + "".join(f"_{a}{n}" for a, n in zip(abbrevs, numbers))] = None
    return list(seen)


def closest_names(name: str, templates: Sequence[Any], n: int = 3) -> List[str]:
    return difflib.get_close_matches(name, _candidate_names(name, templates), n=n, cutoff=0.6)


def _flashinfer_submodules_not_imported() -> List[str]:
    import pkgutil  # noqa: PLC0415

    import flashinfer  # noqa: PLC0415

    return sorted(
        f"flashinfer.{m.name}" for m in pkgutil.iter_modules(flashinfer.__path__)
        if f"flashinfer.{m.name}" not in sys.modules and not m.name.startswith("_")
    )


def _import_all(modules: Iterable[str], errors: Dict[str, str]) -> List[str]:
    done = []
    for module in modules:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importlib.import_module(module)
            done.append(module)
        except Exception as exc:  # noqa: BLE001 - reported, the rest goes on
            errors[module] = f"{type(exc).__name__}: {exc}"
    return done


# -- the inspection -----------------------------------------------------------------------


def _route_api(obj: Any) -> Optional[str]:
    if isinstance(obj, functools.partialmethod):
        obj = obj.func
    route = getattr(obj, "__fita_route__", None)
    return route.spec.fi_api if route is not None else None


def _inspect_session(session: Any) -> List[DefinitionReport]:
    from .patcher import describe  # noqa: PLC0415
    from .registry import could_produce, discover_apis  # noqa: PLC0415
    from .stale_bindings import find_stale  # noqa: PLC0415

    specs = discover_apis()
    all_templates = [t for s in specs for t in s.templates]
    wrapped_by_api: Dict[str, List[str]] = {}
    for patch in session.patches.patches:
        api = _route_api(patch.replacement)
        if api is not None:
            wrapped_by_api.setdefault(api, []).append(describe(patch.owner, patch.attr))
    stale_by_api: Dict[str, List[str]] = {}
    for binding in find_stale(session.patches):
        stale_by_api.setdefault(binding.fi_api, []).append(binding.where)
    reports = []
    for name in session.names:
        apis = list(dict.fromkeys(s.fi_api for s in specs if any(could_produce(t, [name]) for t in s.templates)))
        wrapped = sorted(w for api in apis for w in wrapped_by_api.get(api, []))
        stale = sorted(w for api in apis for w in stale_by_api.get(api, []))
        if not apis:
            status = NEVER
        elif not wrapped:
            status = NOT_WRAPPED
        else:
            status = STALE if stale else OK
        closest = closest_names(name, all_templates) if status == NEVER else []
        reports.append(DefinitionReport(name, status, apis, wrapped, stale, closest))
    return reports


def doctor(
    folder: Any = None,
    *,
    solutions: Optional[Mapping[str, Any]] = None,
    imports: Sequence[str] = (),
    import_flashinfer_submodules: bool = False,
) -> DoctorReport:
    """Report, per registered definition, whether and where it is routed.

    With a session enabled and neither ``folder`` nor ``solutions`` given,
    inspects that session. Otherwise registers ``solutions`` (a mapping, as
    for ``enable_apply``) or the curated ``folder`` (default:
    ``FLASHINFER_TRACE_APPLY_PATH``) for the inspection only. ``imports``
    are imported first (engine modules whose early bindings should be
    checked); ``import_flashinfer_submodules`` also imports every FlashInfer
    submodule, so APIs of late modules (``flashinfer.comm``) are known.
    """
    from . import api  # noqa: PLC0415

    import flashinfer  # noqa: F401, PLC0415

    errors: Dict[str, str] = {}
    imported = _import_all(imports, errors)
    if import_flashinfer_submodules:
        _import_all(_flashinfer_submodules_not_imported(), errors)
    running = api._session
    if running is not None and folder is None and solutions is None:
        return DoctorReport("running session", _inspect_session(running), imported, errors,
                            _flashinfer_submodules_not_imported())
    if running is not None:
        raise RuntimeError("doctor(folder or solutions) would replace the enabled session; call disable_apply() first, "
                           "or call doctor() with no folder to inspect the session")
    definitions = None
    if solutions is None:
        from .catalog import load_solutions  # noqa: PLC0415
        from .env import PATH_VAR, read_env  # noqa: PLC0415

        folder = folder or read_env().path
        if not folder:
            raise ValueError(f"doctor() needs a curated folder, solutions, or {PATH_VAR}")
        solutions, definitions, source = load_solutions(folder), folder, str(folder)
    else:
        source = "solutions given"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            api.enable_apply(solutions, definitions=definitions, rebind=False)
            session = api._session
            reports = _inspect_session(session) if session is not None else []
        finally:
            api.disable_apply()
    told = [str(w.message) for w in caught if "never matched a call" not in str(w.message)]
    return DoctorReport(source, reports, imported, errors, _flashinfer_submodules_not_imported(), told)


# -- command line (registered by cli.py) -------------------------------------------------


def _run_command(args: Any) -> int:
    import json  # noqa: PLC0415

    folder = args.folder
    if folder is None:
        from .env import read_env  # noqa: PLC0415

        folder = read_env().path
    if folder is None:
        from .bundled import bundled_solutions_path  # noqa: PLC0415

        folder = str(bundled_solutions_path())
    report = doctor(folder, imports=args.imports or (), import_flashinfer_submodules=not args.no_submodules)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.format_table())
    return 0 if report.ok else 1


def add_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor", help="will each definition of a curated folder be routed here (APIs, wrapped attributes, stale names)")
    parser.add_argument("folder", nargs="?", help="curated folder (default: FLASHINFER_TRACE_APPLY_PATH, else the bundled one)")
    parser.add_argument("--import", dest="imports", action="append", metavar="MOD",
                        help="import MOD first, as the engine would (repeatable), to find names it binds early")
    parser.add_argument("--no-submodules", action="store_true",
                        help="do not import FlashInfer's submodules (their APIs then count only if already imported)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=_run_command)
