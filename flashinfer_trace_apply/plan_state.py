"""Plan-time inputs for the ``run()`` of FlashInfer's plan/run wrapper classes.

A definition for paged attention needs ``kv_indptr``/``kv_indices``/``sm_scale``,
which the caller gave to ``plan()``, not ``run()``. We read them from the
wrapper instance first (engines such as SGLang plan through fast paths that
skip the public ``plan()``), and from the recorded ``plan()`` arguments second.
"""

from __future__ import annotations

import inspect
import math
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional


@dataclass(frozen=True)
class PlanInput:
    attr: Optional[str]  # instance attribute set by plan()
    plan_param: Optional[str]  # name of the plan() argument
    default_inverse_sqrt_of: Optional[str] = None  # None -> 1/sqrt(param.shape[-1])


_DECODE = {
    "kv_indptr": PlanInput("_paged_kv_indptr_buf", "indptr"),
    "kv_indices": PlanInput("_paged_kv_indices_buf", "indices"),
    "sm_scale": PlanInput("_sm_scale", "sm_scale", default_inverse_sqrt_of="q"),
}
_PAGED_PREFILL = {
    "qo_indptr": PlanInput("_qo_indptr_buf", "qo_indptr"),
    "kv_indptr": PlanInput("_paged_kv_indptr_buf", "paged_kv_indptr"),
    "kv_indices": PlanInput("_paged_kv_indices_buf", "paged_kv_indices"),
    "sm_scale": PlanInput("_sm_scale", "sm_scale", default_inverse_sqrt_of="q"),
}
_RAGGED_PREFILL = {
    "qo_indptr": PlanInput("_qo_indptr_buf", "qo_indptr"),
    "kv_indptr": PlanInput("_kv_indptr_buf", "kv_indptr"),
    "sm_scale": PlanInput("_sm_scale", "sm_scale", default_inverse_sqrt_of="q"),
}
_MLA = {
    "kv_indptr": PlanInput("_kv_indptr_buf", "kv_indptr"),
    "kv_indices": PlanInput("_kv_indices_buf", "kv_indices"),
    "sm_scale": PlanInput("_sm_scale", "sm_scale"),
}

# Keyed by the class's qualified name (the class may be re-exported elsewhere).
PLAN_INPUTS: Dict[str, Dict[str, PlanInput]] = {
    "BatchDecodeWithPagedKVCacheWrapper": _DECODE,
    "CUDAGraphBatchDecodeWithPagedKVCacheWrapper": _DECODE,
    "BatchPrefillWithPagedKVCacheWrapper": _PAGED_PREFILL,
    "BatchPrefillWithRaggedKVCacheWrapper": _RAGGED_PREFILL,
    "BatchMLAPagedAttentionWrapper": _MLA,
}


def plan_inputs_for(owner: Any) -> Optional[Dict[str, PlanInput]]:
    for cls in getattr(owner, "__mro__", ()):
        table = PLAN_INPUTS.get(cls.__qualname__)
        if table is not None:
            return table
    return None


class PlanRecorder:
    """Remembers the bound ``plan()`` arguments of each wrapper instance,
    weakly, so instances are freed as usual."""

    def __init__(self) -> None:
        self._by_instance: "weakref.WeakKeyDictionary[Any, Dict[str, Any]]" = weakref.WeakKeyDictionary()

    def wrap_plan(self, plan: Callable) -> Callable:
        import functools  # noqa: PLC0415

        signature = inspect.signature(plan)
        recorder = self

        @functools.wraps(plan)
        def plan_recording_arguments(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = signature.bind(*args, **kwargs)
                instance = bound.arguments.get(next(iter(signature.parameters)))
                recorder._by_instance[instance] = dict(bound.arguments)
            except Exception:  # noqa: BLE001 - recording must never break plan()
                pass
            return plan(*args, **kwargs)

        # Marked so a class is never given two recorders (``begin_forward``
        # is the same function as ``plan``; several methods share one plan).
        plan_recording_arguments.__fita_plan_recorder__ = True
        return plan_recording_arguments

    def recorded(self, instance: Any) -> Dict[str, Any]:
        try:
            return self._by_instance.get(instance, {})
        except TypeError:
            return {}


def make_reader(recorder: PlanRecorder, key: str, spec: PlanInput) -> Callable[[Any, Any], Any]:
    """``reader(instance, reference_tensor)`` -> the plan-time value of ``key``."""

    def read(instance: Any, reference: Any = None) -> Any:
        value = getattr(instance, spec.attr, None) if spec.attr else None
        if value is None and spec.plan_param:
            value = recorder.recorded(instance).get(spec.plan_param)
        if value is None and spec.default_inverse_sqrt_of and reference is not None:
            value = 1.0 / math.sqrt(reference.shape[-1])
        return value

    read.__name__ = f"plan_input_{key}"
    return read
