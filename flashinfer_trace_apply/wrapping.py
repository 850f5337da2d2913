"""Wrap one discovered FlashInfer API, everywhere FlashInfer binds it.

Used at enable for every API in the trace registry, and again for APIs of
submodules imported later (``late_imports``). One API's wrapper goes to:
its public attribute; every ``flashinfer*`` module alias of it
(``flashinfer.rmsnorm`` is ``flashinfer.norm.rmsnorm``); for a wrapper-class
method, every class-body alias (``run_return_lse = partialmethod(run, ...)``);
and the class's ``plan()`` (and its aliases, ``begin_forward``) gets the
recorder that keeps plan-time arguments for ``run()``.
"""

from __future__ import annotations

from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

from .aliases import route_class_aliases
from .patcher import PatchSet
from .plan_state import plan_inputs_for
from .registry import ApiSpec, could_produce, module_aliases


class Outcome(NamedTuple):
    wrapped: int  # attributes replaced
    problems: List[str]  # to report at enable
    serves: List[str]  # registered names this API can route


def wrap_api(
    patches: PatchSet, spec: ApiSpec, context: Any, names: Sequence[str], alias_scope: Optional[Sequence[Any]] = None
) -> Outcome:
    """Wrap ``spec`` if some registered name could route through it.
    ``alias_scope``: the modules that can hold a module alias of it (for an
    API registered by a late import, only modules imported since; default:
    every ``flashinfer*`` module)."""
    from .dispatch import ApiRoute  # noqa: PLC0415 - dispatch pulls in torch-facing code

    if getattr(spec.current, "__fita_route__", None) is not None:
        return Outcome(0, [], [])  # already ours (found again by a later scan)
    # Only APIs some registered name could match get a route: building one
    # reads signatures and templates, paid in every worker.
    if not any(could_produce(template, names) for template in spec.templates):
        return Outcome(0, [], [])
    route = ApiRoute(spec, context)
    serves, problems = route.routable_names(list(names))
    if not serves:
        return Outcome(0, problems, [])
    wrapper = route.build_wrapper()
    routes = getattr(context, "routes", None)
    if routes is not None:
        routes.append(route)
    wrapped = 0
    # The home attribute may hold another tool's object (spec.foreign): ours
    # replaces it while enabled; module aliases hold FlashInfer's own.
    if patches.replace(spec.owner, spec.attr, spec.stored, wrapper):
        wrapped += 1
    if not spec.is_method:
        if alias_scope is None:
            aliases = module_aliases(spec.current, skip=(spec.owner, spec.attr))
        else:
            aliases = _aliases_in(alias_scope, spec.current, skip=(spec.owner, spec.attr))
        for owner, attr in aliases:
            if patches.replace(owner, attr, spec.current, wrapper):
                wrapped += 1
    if spec.is_method:
        wrapped += route_class_aliases(patches, spec.owner, spec.attr, spec.current, wrapper)
        if plan_inputs_for(spec.owner) is not None:
            _record_plans(patches, spec.owner, context.recorder)
    return Outcome(wrapped, problems, serves)


def _aliases_in(modules: Sequence[Any], obj: Any, skip: Tuple[Any, str]) -> List[Tuple[Any, str]]:
    found = []
    for module in modules:
        for attr, value in list(getattr(module, "__dict__", {}).items()):
            if value is obj and (module, attr) != skip:
                found.append((module, attr))
    return found


def _record_plans(patches: PatchSet, owner: Any, recorder: Any) -> None:
    plan = vars(owner).get("plan")
    if not callable(plan) or getattr(plan, "__fita_plan_recorder__", False):
        return
    recording = recorder.wrap_plan(plan)
    if patches.replace(owner, "plan", plan, recording):
        # begin_forward = plan: plans made through the alias are recorded too.
        route_class_aliases(patches, owner, "plan", plan, recording)
