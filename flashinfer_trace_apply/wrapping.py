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

from typing import Any, List, Optional, Sequence, Tuple

from .aliases import route_class_aliases
from .patcher import PatchSet
from .plan_state import plan_inputs_for
from .registry import ApiSpec, could_produce, module_aliases


def wrap_api(
    patches: PatchSet, spec: ApiSpec, context: Any, names: Sequence[str], alias_scope: Optional[Sequence[Any]] = None
) -> Tuple[int, List[str]]:
    """Wrap ``spec`` if some registered name could route through it.
    ``alias_scope``: the modules that can hold a module alias of it (for an
    API registered by a late import, only modules imported since; default:
    every ``flashinfer*`` module). Returns (attributes wrapped, problems to
    report)."""
    from .dispatch import ApiRoute  # noqa: PLC0415 - dispatch pulls in torch-facing code

    if getattr(spec.current, "__fita_route__", None) is not None:
        return 0, []  # already ours (found again by a later scan)
    if not any(could_produce(template, names) for template in spec.templates):
        return 0, []  # what ApiRoute.routable_names would conclude, without building the route
    route = ApiRoute(spec, context)
    serves, problems = route.routable_names(list(names))
    if not serves:
        return 0, problems
    wrapper = route.build_wrapper()
    wrapped = 0
    targets = [(spec.owner, spec.attr)]
    if not spec.is_method:
        if alias_scope is None:
            targets += module_aliases(spec.current, skip=(spec.owner, spec.attr))
        else:
            targets += _aliases_in(alias_scope, spec.current, skip=(spec.owner, spec.attr))
    for owner, attr in targets:
        if patches.replace(owner, attr, spec.current, wrapper):
            wrapped += 1
    if spec.is_method:
        wrapped += route_class_aliases(patches, spec.owner, spec.attr, spec.current, wrapper)
        if plan_inputs_for(spec.owner) is not None:
            _record_plans(patches, spec.owner, context.recorder)
    return wrapped, problems


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
