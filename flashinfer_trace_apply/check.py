"""``flashinfer-trace-apply check``: prove a curated folder works here.

For each solution: find the FlashInfer API whose template names its
definition, build inputs with the template's ``init`` at the definition's
const axes (in bf16 and fp16, at a few batch sizes), call the real API with
the plugin enabled for that one definition (and the folder's Definition, so
its dtype and constraint rules route as in deployment), and compare what the
caller sees with the template's reference under the template's own check.

Without a GPU, Triton solutions run under the Triton interpreter on small
batches; the interpreter truncates to bf16/fp16 where a GPU rounds, so one
ulp is forgiven before the template's check. On a GPU the original
FlashInfer kernel and the routed call are also timed (CUDA events).

A definition that no FlashInfer API can route (no template names it, or the
plugin reports it cannot deliver its outputs) is a "skip" with the reason,
not a failure.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

CPU_BATCHES = [1, 3]
GPU_BATCHES = [1, 3, 127, 4096]
FAILED = ("fail", "error")


@dataclass
class CheckRow:
    definition: str
    solution: str
    api: str
    dtype: str
    batch: int
    result: str  # "pass" | "fail" | "error" | "skip"
    max_abs_error: Optional[float] = None
    detail: str = ""
    stats: Optional[Dict[str, Dict[str, int]]] = None  # the plugin's counters for this call
    original_us: Optional[float] = None  # GPU only: FlashInfer's own call, per call
    solution_us: Optional[float] = None  # GPU only: the same call routed to the solution
    axes: Optional[Dict[str, int]] = None  # check --workloads: the recorded shape replayed
    dtypes: Optional[Dict[str, str]] = None  # check --workloads: its inputs' recorded dtypes
    shape: str = ""  # check --workloads: its variable axes, as the table shows them

    @property
    def speedup(self) -> Optional[float]:
        if self.original_us and self.solution_us:
            return self.original_us / self.solution_us
        return None


# ---------------------------------------------------------------------------
# Finding the API and building its inputs.
# ---------------------------------------------------------------------------


def _axis_values(template: Any, definition: str) -> Optional[Dict[str, int]]:
    """Const-axis values encoded in ``definition`` for this template, or None."""
    from flashinfer.trace.template import Const  # noqa: PLC0415

    from .registry import name_prefix  # noqa: PLC0415

    pattern = re.escape(name_prefix(template))
    axes: List[str] = []
    for axis, marker in template.axes.items():
        if isinstance(marker, Const) and (marker.abbrev is None or marker.abbrev != ""):
            abbrev = marker.abbrev if marker.abbrev is not None else axis
            pattern += f"(?:_{re.escape(abbrev)}(?P<a{len(axes)}>-?\\d+))?"
            axes.append(axis)
    match = re.fullmatch(pattern, definition)
    if match is None:
        return None
    return {axis: int(match.group(f"a{i}")) for i, axis in enumerate(axes) if match.group(f"a{i}") is not None}


def find_api(definition: str) -> Optional[Tuple[Any, Any, Dict[str, int]]]:
    from .registry import discover_apis  # noqa: PLC0415

    for spec in discover_apis():
        if spec.is_method:
            continue
        for template in spec.templates:
            axes = _axis_values(template, definition)
            if axes is not None and template.init is not None and template.reference is not None:
                return spec, template, axes
    return None


def _why_not_checked(definition: str) -> str:
    """The reason a definition has no plain API to check it through."""
    from .registry import discover_apis  # noqa: PLC0415

    for spec in discover_apis():
        if spec.is_method and any(_axis_values(t, definition) is not None for t in spec.templates):
            return (f"not checked: {spec.fi_api} is a wrapper-class method (plan, then run); check builds "
                    "inputs for plain functions only (the plugin still routes such calls)")
    return "not checked: no FlashInfer API with an init and a reference names it"


def describe_device(solutions: Any = ()) -> str:
    """The device line of the report: the GPU, or the CPU and, when the
    folder has Triton solutions, the interpreter they run under."""
    import torch  # noqa: PLC0415

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    values = solutions.values() if hasattr(solutions, "values") else solutions
    triton = any(getattr(getattr(s, "spec", None), "language", None) == "triton" for s in values)
    return "cpu (Triton interpreter)" if triton else "cpu"


# Const axes a definition name does not carry, whose ``init`` defaults do not
# fit every value of the ones it does: name_prefix -> f(axes, init defaults).
_INIT_FIXUPS: Dict[str, Callable[[Dict[str, int], Dict[str, Any]], Dict[str, int]]] = {
    # rope_..._d64: the default rotary_dim (128) cannot exceed head_size.
    "rope_cos_sin_cache_inplace": lambda axes, d: {"rotary_dim": min(d["rotary_dim"], axes["head_size"])}
    if "head_size" in axes and "rotary_dim" in d else {},
}


def _build_inputs(template: Any, axes: Dict[str, int], batch: int, device: str, dtype: Any,
                  recorded_dtypes: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """The template's inputs at ``axes`` (the variable ones at ``batch`` unless
    given), floating tensors in ``dtype``, or each input in its recorded dtype."""
    import torch  # noqa: PLC0415

    from .registry import name_prefix  # noqa: PLC0415

    params = inspect.signature(template.init).parameters
    kwargs: Dict[str, Any] = {k: v for k, v in axes.items() if k in params}
    fixup = _INIT_FIXUPS.get(name_prefix(template))
    if fixup is not None:
        defaults = {p.name: p.default for p in params.values() if p.default is not p.empty}
        kwargs.update({k: v for k, v in fixup(axes, defaults).items() if k not in kwargs})
    for p in params.values():
        if p.kind is p.KEYWORD_ONLY and p.default is p.empty and p.name not in kwargs:
            kwargs[p.name] = batch
    kwargs["device"] = device
    inputs = template.init(**kwargs)
    declared = getattr(template, "inputs", {})
    for key, value in inputs.items():
        desc = declared.get(key) or next((d for d in declared.values() if getattr(d, "param", None) == key), None)
        if recorded_dtypes is not None:
            name = next((k for k, d in declared.items() if (getattr(d, "param", None) or k) == key), key)
            wanted = recorded_dtypes.get(name)
            if isinstance(value, torch.Tensor) and wanted is not None:
                inputs[key] = value.to(getattr(torch, wanted))
            continue
        fixed = getattr(desc, "dtype", None)  # e.g. rope's float32 cos/sin cache stays as the template makes it
        # An fp8 tensor is a quantized buffer (rmsnorm_quant's out): its format
        # is the API's choice, not the activation dtype under test.
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not fixed and value.element_size() > 1:
            inputs[key] = value.to(dtype)
    return inputs


def _replay_inputs(template: Any, axes: Dict[str, int], shape: Dict[str, Dict[str, Any]], device: str) -> Dict[str, Any]:
    """Inputs at exactly a recorded shape (axes and dtypes), or ValueError
    saying which axis or dtype the template's ``init`` could not give."""
    from .workloads import call_axes  # noqa: PLC0415

    params = inspect.signature(template.init).parameters.values()
    missing = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty and p.name not in shape["axes"]]
    if missing:
        raise ValueError(f"the recorded shape has no value for {', '.join(missing)}")
    for axis, value in axes.items():
        if axis in shape["axes"] and shape["axes"][axis] != value:
            raise ValueError(f"the recorded shape has {axis}={shape['axes'][axis]}, the definition's name says {value}")
    inputs = _build_inputs(template, {**axes, **shape["axes"]}, 0, device, None, shape["dtypes"])
    made_axes, made_dtypes = call_axes(template, inputs)
    wrong = [f"{a}={made_axes.get(a)} (recorded {v})" for a, v in shape["axes"].items() if made_axes.get(a) != v]
    wrong += [f"{k} in {made_dtypes.get(k)} (recorded {v})" for k, v in shape["dtypes"].items() if made_dtypes.get(k) != v]
    if wrong:
        raise ValueError("the template's init cannot build the recorded shape: it made " + ", ".join(wrong))
    return inputs


def _shape_label(template: Any, axes: Dict[str, int]) -> Tuple[int, str]:
    """(the first variable axis's value, "axis=value ..." over the variable axes)."""
    from flashinfer.trace.template import Var  # noqa: PLC0415

    variable = [(a, axes[a]) for a, m in template.axes.items() if isinstance(m, Var) and a in axes]
    return (variable[0][1] if variable else 0), " ".join(f"{a}={v}" for a, v in variable)


def _clone(inputs: Dict[str, Any]) -> Dict[str, Any]:
    import torch  # noqa: PLC0415

    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def _reference(template: Any, inputs: Dict[str, Any]) -> Any:
    """Call the template's reference: each definition input by its own name
    or its API parameter name where the reference uses one of those, else
    all of them positionally in the template's order."""
    params = list(inspect.signature(template.reference).parameters.values())
    names = {p.name for p in params}
    ordered: List[Tuple[str, Any]] = []
    for key, desc in template.inputs.items():
        param = getattr(desc, "param", None) or key
        if param not in inputs:
            continue
        value = inputs[param]
        tuple_idx = getattr(desc, "tuple_idx", None)
        value = value[tuple_idx] if tuple_idx is not None else value
        ordered.append((key if key in names else param, value))
    if all(name in names for name, _ in ordered):
        return template.reference(**dict(ordered))
    return template.reference(*[v for _, v in ordered])


# Outputs some templates declare but whose reference does not return:
# name_prefix -> {output: f(inputs before the call)}.
_EXTRA_REFERENCES: Dict[str, Dict[str, Callable[[Dict[str, Any]], Any]]] = {
    "fused_add_rmsnorm": {"residual": lambda a: (a["input"].float() + a["residual"].float()).to(a["residual"].dtype)},
    "gemma_fused_add_rmsnorm": {"residual": lambda a: (a["input"].float() + a["residual"].float()).to(a["residual"].dtype)},
}


def _written_by_reference(template: Any, keys: List[str], given: Dict[str, Any]) -> Optional[List[Any]]:
    """For a reference that writes its outputs into its arguments and returns
    None (fused_topk_deepseek's): each output read from the argument of its
    name, or None when an output has no such argument."""
    written = []
    for key in keys:
        desc = template.inputs.get(key)
        param = (getattr(desc, "param", None) or key) if desc is not None else None
        if param not in given:
            return None
        written.append(given[param])
    return written


def _references(template: Any, inputs: Dict[str, Any]) -> Tuple[Any, str]:
    """The reference outputs in the template's output order (a list when the
    template has several), and a note when some had to be supplied here."""
    from flashinfer.trace.template import Tensor  # noqa: PLC0415
    from .registry import name_prefix  # noqa: PLC0415

    given = _clone(inputs)
    reference = _reference(template, given)
    keys = [k for k, d in template.outputs.items() if isinstance(d, Tensor)]
    if reference is None and keys:
        written = _written_by_reference(template, keys, given)
        if written is not None:
            return (written if len(written) > 1 else written[0]), ""
    given = _as_list(reference)
    if len(given) >= len(keys):
        return reference, ""
    extra = _EXTRA_REFERENCES.get(name_prefix(template), {})
    missing = keys[len(given):]
    if not all(k in extra for k in missing):
        return reference, f"the template's reference gives {len(given)} of {len(keys)} outputs; the rest are not checked"
    return given + [extra[k](inputs) for k in missing], ""


def _as_list(value: Any) -> List[Any]:
    return list(value) if isinstance(value, (tuple, list)) else [value]


# ---------------------------------------------------------------------------
# Comparing.
# ---------------------------------------------------------------------------

_MANTISSA_BITS = {"torch.bfloat16": 7, "torch.float16": 10}


def _ulp(t: Any) -> Any:
    import torch  # noqa: PLC0415

    bits = _MANTISSA_BITS[str(t.dtype)]
    magnitude = t.float().abs().clamp_min(torch.finfo(t.dtype).tiny)
    return torch.exp2(torch.floor(torch.log2(magnitude)) - bits)


def _forgive_one_ulp(refs: List[Any], acts: List[Any]) -> List[Any]:
    """``acts`` moved up to one ulp (of each value) towards ``refs``: what a
    rounding kernel would have stored where the interpreter truncated."""
    import torch  # noqa: PLC0415

    moved = []
    for r, a in zip(refs, acts):
        if isinstance(r, torch.Tensor) and isinstance(a, torch.Tensor) and r.shape == a.shape and str(a.dtype) in _MANTISSA_BITS:
            # The ulp of the larger of the two: across a binade boundary
            # (0.2499 vs 0.25) one rounding step is the upper binade's ulp.
            step = _ulp(torch.maximum(a.float().abs(), r.float().abs()).to(a.dtype))
            moved.append((a.float() + (r.float() - a.float()).clamp(-step, step)).to(a.dtype))
        else:
            moved.append(a)
    return moved


def _passes_forgiving_one_ulp(check: Callable[[Any, Any], Any], reference: Any, actual: Any) -> bool:
    """The template's check, after forgiving each value one ulp."""
    moved = _forgive_one_ulp(_as_list(reference), _as_list(actual))
    return bool(check(reference, moved if isinstance(actual, (list, tuple)) else moved[0]))


def _routing_check(template: Any, inputs: Dict[str, Any]) -> Callable[[Any, Any], bool]:
    """fused_topk_deepseek's check. Its reference picks experts with
    ``torch.topk``, whose order among equal scores is unspecified (on CPU it
    varies), and bf16 router logits tie often; FlashInfer's kernel takes the
    lower index. A routing passes when, per token, its experts are distinct,
    in order of biased score, and carry exactly the biased scores the
    reference's do (the same choice up to ties), and its weights pass the
    template's check against the reference's formula at its own experts."""
    import torch  # noqa: PLC0415

    scores, bias = inputs["scores"], inputs["bias"]
    scale = float(inputs["routed_scaling_factor"])

    def check(reference: Any, actual: Any) -> bool:
        (ref_values, ref_idx), (values, idx) = _as_list(reference), _as_list(actual)
        if idx.shape != ref_idx.shape or values.shape != ref_values.shape or values.dtype != ref_values.dtype:
            return False
        if idx.numel() == 0:
            return True
        sig = torch.sigmoid(scores.float())
        biased = sig + bias.float()
        n = scores.shape[-1]
        if bool(((idx < 0) | (idx >= n)).any()):
            return False
        mine, theirs = biased.gather(1, idx.long()), biased.gather(1, ref_idx.long())
        distinct = bool((idx.long().sort(dim=-1).values.diff(dim=-1) != 0).all())
        ordered = bool((mine.diff(dim=-1) <= 0).all())
        same = torch.equal(mine.sort(dim=-1).values, theirs.sort(dim=-1).values)
        picked = sig.gather(1, idx.long())
        expected = (picked / picked.sum(dim=-1, keepdim=True) * scale).to(values.dtype)
        return distinct and ordered and same and bool(template.check([expected], [values]))

    return check


# Templates whose own check cannot judge a correct result: name_prefix ->
# f(template, inputs) -> check(reference, actual).
_CHECKS: Dict[str, Callable[[Any, Dict[str, Any]], Callable[[Any, Any], bool]]] = {
    "fused_topk_deepseek": _routing_check,
}


def _check_for(template: Any, inputs: Dict[str, Any]) -> Callable[[Any, Any], Any]:
    from .registry import name_prefix  # noqa: PLC0415

    special = _CHECKS.get(name_prefix(template))
    return special(template, inputs) if special is not None else template.check


def _ulp_distances(refs: List[Any], acts: List[Any]) -> List[Any]:
    """Per output, |actual - reference| in ulps of the larger magnitude."""
    import torch  # noqa: PLC0415

    out = []
    for r, a in zip(refs, acts):
        if not (isinstance(r, torch.Tensor) and isinstance(a, torch.Tensor)) or r.shape != a.shape or str(a.dtype) not in _MANTISSA_BITS:
            out.append(None)
            continue
        step = _ulp(torch.maximum(a.float().abs(), r.float().abs()).to(a.dtype))
        distance = (a.float() - r.float()).abs() / step
        # NaN or Inf is infinitely far from anything but itself (a NaN
        # distance would vanish in max(): "all-NaN, within 1 ulp").
        same = (a.float() == r.float()) | (torch.isnan(a) & torch.isnan(r))
        out.append(torch.where(same, torch.zeros_like(distance), torch.nan_to_num(distance, nan=math.inf)))
    return out


def nonfinite_mismatches(refs: List[Any], acts: List[Any]) -> int:
    """How many values are NaN or Inf where the reference has another value:
    a failure whatever the tolerance."""
    import torch  # noqa: PLC0415

    count = 0
    for r, a in zip(refs, acts):
        if isinstance(r, torch.Tensor) and isinstance(a, torch.Tensor) and a.is_floating_point() and r.shape == a.shape:
            if a.element_size() == 1:  # fp8: torch has no isfinite for it
                a, r = a.float(), r.float()
            bad = ~torch.isfinite(a) & ~((a == r) | (torch.isnan(a) & torch.isnan(r)))
            count += int(bad.sum())
    return count


def _ulp_distance(refs: List[Any], acts: List[Any]) -> float:
    """The largest distance in ulps over all outputs (inf if not measurable)."""
    worst = 0.0
    for d in _ulp_distances(refs, acts):
        if d is None:
            return float("inf")
        if d.numel():
            worst = max(worst, float(d.max()))
    return worst


def _no_worse_than_original(spec: Any, template: Any, check: Callable[[Any, Any], Any], inputs: Dict[str, Any],
                            reference: Any, refs: List[Any], acts: List[Any]) -> str:
    """A pass reason if FlashInfer's kernel fails the template's check on
    these inputs and the solution is nowhere further from the reference."""
    fresh = _clone(inputs)
    result = getattr(spec.owner, spec.attr)(**fresh)
    original = _written_buffers(spec, template, fresh) if result is None else result
    if check(reference, original):
        return ""
    ours, theirs = _ulp_distances(refs, acts), _ulp_distances(refs, _as_list(original))
    for a, b in zip(ours, theirs):
        if a is None or b is None:
            return ""
        if a.numel() and (float(a.max()) > float(b.max()) or int((a > 1).sum()) > int((b > 1).sum())):
            return ""
    worst_ours, worst_theirs = _ulp_distance(refs, acts), _ulp_distance(refs, _as_list(original))
    return f"FlashInfer's kernel fails the template's check here too; ours is no further off (max {worst_ours:g} ulp vs {worst_theirs:g})"


def _max_error(refs: List[Any], acts: List[Any]) -> float:
    import torch  # noqa: PLC0415

    errors = [
        float(torch.nan_to_num((a.float() - r.float()).abs(), nan=math.inf).max()) if a.numel() else 0.0
        for r, a in zip(refs, acts)
        if isinstance(r, torch.Tensor) and isinstance(a, torch.Tensor) and r.shape == a.shape
    ]
    return max(errors) if errors else math.nan


def _written_buffers(spec: Any, template: Any, inputs: Dict[str, Any]) -> List[Any]:
    """For an in-place API: the caller's buffers its outputs were written into."""
    from .codegen import CallShape  # noqa: PLC0415
    from .reconcile import plan_outputs  # noqa: PLC0415

    original = getattr(spec.owner, spec.attr)
    convention = plan_outputs(template, CallShape(inspect.signature(original)), original, spec.fi_api)
    return [inputs[o.dest] for o in convention.outputs]


def _per_call_us(fn: Callable[[], Any], iters: int = 100, warmup: int = 10) -> float:
    """Mean time per call between CUDA events over ``iters`` back-to-back calls."""
    import torch  # noqa: PLC0415

    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1000.0 / iters


# ---------------------------------------------------------------------------
# One check.
# ---------------------------------------------------------------------------


def _label(solution: Any) -> str:
    return getattr(solution, "name", None) or getattr(solution, "__qualname__", None) or "?"


def _enable(definition: str, solution: Any, definition_json: Optional[Dict[str, Any]]) -> List[str]:
    """Enable the plugin for one definition; the warnings it gave."""
    from . import api  # noqa: PLC0415

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if definition_json is not None:
            api.enable_apply({definition: solution}, definitions={definition: definition_json})
        else:
            api.enable_apply({definition: solution})
    return [str(w.message) for w in caught]


def _disable() -> None:
    from . import api  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "never matched" is reported by the row itself
        api.disable_apply()


def _not_routed(definition: str, api_name: str, stats: Dict[str, Dict[str, int]], said: List[str],
                solution: Any = None) -> Tuple[str, str]:
    """(result, detail) for a call that did not reach the solution."""
    for message in said:
        if "cannot be routed" in message and definition in message:
            reason = message.split("cannot be routed:", 1)[-1].strip()
            return "skip", f"not routable: {reason}"[:300]
        if "not routed, the original runs instead" in message and definition in message:
            return "fail", message[:300]  # an applies_when that cannot be read
    counts = {k: v for k, v in stats.get(api_name, {}).items() if v and k != "hit"}
    if counts.get("fallback_unsupported_arch"):
        return "skip", "the solution's target_hardware excludes this GPU"
    if counts.get("fallback_dtype_mismatch"):
        return "skip", "the definition does not allow this dtype (its Definition or the folder's trace_apply.yaml)"
    applies_when = getattr(getattr(solution, "spec", None), "applies_when", ())
    if counts.get("fallback_constraint") and applies_when:
        return "skip", f"outside the solution's applies_when {list(applies_when)}: the original runs"
    return "fail", "the call was not routed to the solution" + (f" ({counts})" if counts else "")


def check_one(
    definition: str,
    solution: Any,
    batch: int,
    device: str,
    dtype: Any,
    definition_json: Optional[Dict[str, Any]] = None,
    timing: bool = False,
    shape: Optional[Dict[str, Dict[str, Any]]] = None,
) -> CheckRow:
    """One call of ``definition``'s API at ``batch`` in ``dtype``, or, with
    ``shape`` (a recorded one: axes and dtypes), at exactly that shape."""
    from . import api  # noqa: PLC0415

    label = _label(solution)
    dtype_name = str(dtype).replace("torch.", "")
    found = find_api(definition)
    if found is None:
        return CheckRow(definition, label, "-", dtype_name, batch, "skip", detail=_why_not_checked(definition))
    spec, template, axes = found
    row = CheckRow(definition, label, spec.fi_api, dtype_name, batch, "fail")
    if shape is not None:
        row.axes, row.dtypes = dict(shape["axes"]), dict(shape["dtypes"])
        row.batch, row.shape = _shape_label(template, shape["axes"])
    try:
        inputs = _replay_inputs(template, axes, shape, device) if shape is not None else _build_inputs(template, axes, batch, device, dtype)
        reference, note = _references(template, inputs)
        check = _check_for(template, inputs)
        call_inputs = _clone(inputs)
        said = _enable(definition, solution, definition_json)
        try:
            public = getattr(spec.owner, spec.attr)
            try:
                result = public(**call_inputs)
            except Exception:
                # Not routed, and the original failed (on CPU FlashInfer needs CUDA): a
                # call the solution declines is a skip, anything else the error it is.
                row.stats = api.stats()
                if not row.stats.get(spec.fi_api, {}).get("hit", 0):
                    verdict = _not_routed(definition, spec.fi_api, row.stats, said, solution)
                    if verdict[0] == "skip":
                        row.result, row.detail = verdict
                        return row
                raise
            row.stats = api.stats()
            hits = row.stats.get(spec.fi_api, {}).get("hit", 0)
        finally:
            _disable()
        if hits != 1:
            row.result, row.detail = _not_routed(definition, spec.fi_api, row.stats or {}, said, solution)
            return row
        actual = _written_buffers(spec, template, call_inputs) if result is None else result
        refs, acts = _as_list(reference), _as_list(actual)
        row.max_abs_error = _max_error(refs, acts)
        broken = nonfinite_mismatches(refs, acts)
        if broken:
            row.detail = f"{broken} value(s) NaN or Inf where the reference is finite"
        elif check(reference, actual):
            row.result = "pass"
        elif _passes_forgiving_one_ulp(check, reference, actual):
            # The reference rounds its fp32 result to bf16/fp16 once; a kernel
            # computing in fp32 may land on the neighbouring value (and the
            # Triton interpreter truncates where a GPU rounds). Some template
            # checks (rmsnorm: rtol=atol=1e-3) are tighter than one bf16 ulp,
            # which FlashInfer's own kernel fails as well.
            row.result, row.detail = "pass", "passes with 1 ulp forgiven"
        elif _ulp_distance(refs, acts) <= 1.0:
            row.result, row.detail = "pass", "every value within 1 ulp of the reference"
        elif device == "cuda":
            # Where FlashInfer's own kernel fails the template's check on the
            # same inputs, the bar is that kernel: no value further from the
            # reference, and no more values beyond one ulp.
            verdict = _no_worse_than_original(spec, template, check, inputs, reference, refs, acts)
            if verdict:
                row.result, row.detail = "pass", verdict
        if row.result == "fail" and not row.detail:
            row.detail = (f"differs from the template's reference beyond its tolerance "
                          f"(max abs error {row.max_abs_error:.3g}, {_ulp_distance(refs, acts):g} ulp)")
        if note:
            row.detail = "; ".join(d for d in (row.detail, note) if d)
        if timing and row.result == "pass":
            row.original_us, row.solution_us = _time_both(spec, definition, solution, definition_json, inputs)
    except Exception as exc:  # noqa: BLE001 - a report, not a crash
        row.result = "error"
        row.detail = f"{type(exc).__name__}: {exc}"[:300]
    return row


def _time_both(spec: Any, definition: str, solution: Any, definition_json: Optional[Dict[str, Any]], inputs: Dict[str, Any]) -> Tuple[float, float]:
    """Per-call µs of FlashInfer's own call and of the routed call, same inputs."""
    fn = getattr(spec.owner, spec.attr)
    bufs = _clone(inputs)  # in-place APIs keep updating these; timing does not care
    original = _per_call_us(lambda: fn(**bufs))
    _enable(definition, solution, definition_json)
    try:
        routed_fn = getattr(spec.owner, spec.attr)
        routed = _per_call_us(lambda: routed_fn(**bufs))
    finally:
        _disable()
    return original, routed


# ---------------------------------------------------------------------------
# A whole folder.
# ---------------------------------------------------------------------------


def run_check(
    path: str,
    batches: Optional[List[int]] = None,
    progress: Optional[Callable[[str], None]] = None,
    dtypes: Optional[List[Any]] = None,
    timing: Optional[bool] = None,
    recorded: Optional[Dict[str, List[Dict[str, Dict[str, Any]]]]] = None,
) -> List[CheckRow]:
    """Check every solution of ``path``; with ``recorded`` (definition ->
    shapes, see recorded_shapes) only at those shapes, and only the
    definitions that have some."""
    import torch  # noqa: PLC0415

    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        # Triton kernels run on CPU tensors only under the interpreter, which
        # must be chosen before triton is first imported.
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from .catalog import load_definitions, load_solutions  # noqa: PLC0415

    device = "cuda" if on_gpu else "cpu"
    batches = batches or (GPU_BATCHES if on_gpu else CPU_BATCHES)
    dtypes = dtypes or [torch.bfloat16, torch.float16]
    timing = on_gpu if timing is None else (timing and on_gpu)
    solutions = load_solutions(path)
    definitions = load_definitions(path)
    if solutions:
        from .compat import require_supported  # noqa: PLC0415

        require_supported()  # not "all skipped" on a FlashInfer that cannot route: say why
    rows: List[CheckRow] = []
    began = time.perf_counter()
    for index, (definition, solution) in enumerate(sorted(solutions.items())):
        started = time.perf_counter()
        mine: List[CheckRow] = []
        if recorded is not None:
            if definition not in recorded:
                continue  # reported by the caller as having no recorded shapes
            for shape in recorded[definition]:
                label = _label_dtype(shape["dtypes"])
                mine.append(check_one(definition, solution, 0, device, label, definitions.get(definition), timing, shape))
        else:
            for dtype in dtypes:
                for batch in batches:
                    mine.append(check_one(definition, solution, batch, device, dtype, definitions.get(definition), timing))
        rows.extend(mine)
        if progress is not None:
            verdicts = ", ".join(f"{s.dtype} {s.result}" for s in summarize(mine))
            progress(
                f"[{index + 1}/{len(solutions)}] {definition}: {verdicts} "
                f"({time.perf_counter() - started:.1f}s, {time.perf_counter() - began:.0f}s total)"
            )
    return rows


def _label_dtype(dtypes: Dict[str, str]) -> str:
    """A recorded shape's dtype column: its first floating input's dtype."""
    floating = [d for d in dtypes.values() if d.startswith(("float", "bfloat"))]
    return (floating or list(dtypes.values()) or ["-"])[0]


@dataclass
class SummaryRow:
    """One (definition, dtype) over all batch sizes checked."""

    definition: str
    solution: str
    dtype: str
    batches: List[int]
    result: str
    max_abs_error: Optional[float]
    detail: str
    timed_batch: Optional[int] = None  # the largest batch timed
    original_us: Optional[float] = None
    solution_us: Optional[float] = None
    speedup: Optional[float] = None
    shapes: Optional[List[str]] = None  # check --workloads: the recorded shapes' variable axes


def summarize(rows: List[CheckRow]) -> List[SummaryRow]:
    groups: Dict[Tuple[str, str], List[CheckRow]] = {}
    for r in rows:
        groups.setdefault((r.definition, r.dtype), []).append(r)
    out: List[SummaryRow] = []
    for (definition, dtype), group in groups.items():
        results = {r.result for r in group}
        result = next((x for x in ("error", "fail") if x in results), None) or ("skip" if results == {"skip"} else "pass")
        errors = [r.max_abs_error for r in group if r.max_abs_error is not None and not math.isnan(r.max_abs_error)]
        details = list(dict.fromkeys(f"{r.shape or f'batch {r.batch}'}: {r.detail}" if r.result != "pass" else r.detail for r in group if r.detail))
        timed = [r for r in group if r.solution_us is not None]
        last = max(timed, key=lambda r: r.batch) if timed else None
        out.append(
            SummaryRow(
                definition, group[0].solution, dtype, [r.batch for r in group], result,
                max(errors) if errors else None, "; ".join(details),
                last.batch if last else None, last.original_us if last else None,
                last.solution_us if last else None, last.speedup if last else None,
                [r.shape for r in group] if group[0].axes is not None else None,
            )
        )
    return out


def format_table(rows: List[CheckRow]) -> str:
    summary = summarize(rows)
    timed = any(s.solution_us is not None for s in summary)
    replayed = any(s.shapes is not None for s in summary)
    header = ["definition", "solution", "dtype", "recorded shapes" if replayed else "batches", "result", "max_abs_err"]
    if timed:
        batch = max(s.timed_batch or 0 for s in summary)
        header += [f"original_us@{batch}", f"solution_us@{batch}", "speedup"]
    lines = [header]
    for s in summary:
        err = "-" if s.max_abs_error is None else f"{s.max_abs_error:.3g}"
        sizes = ", ".join(s.shapes) if s.shapes is not None else ",".join(map(str, s.batches))
        line = [s.definition, s.solution, s.dtype, sizes, s.result, err]
        if timed:
            line += [
                "-" if s.original_us is None else f"{s.original_us:.2f}",
                "-" if s.solution_us is None else f"{s.solution_us:.2f}",
                "-" if s.speedup is None else f"{s.speedup:.2f}x",
            ]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    table = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)
    notes = [f"  {s.definition} {s.dtype} {s.result}: {s.detail}" for s in summary if s.result != "pass" and s.detail]
    return table + ("\n\nnot passed:\n" + "\n".join(notes) if notes else "")


def counts(rows: List[CheckRow]) -> Dict[str, int]:
    tally = {"pass": 0, "skip": 0, "fail": 0, "error": 0}
    for r in rows:
        tally[r.result] = tally.get(r.result, 0) + 1
    return tally


def summary_counts(rows: List[CheckRow]) -> Dict[str, int]:
    """Counts over the table's rows (definition x dtype), as printed."""
    tally = {"pass": 0, "skip": 0, "fail": 0, "error": 0}
    for s in summarize(rows):
        tally[s.result] = tally.get(s.result, 0) + 1
    return tally


def succeeded(rows: List[CheckRow]) -> bool:
    """Nothing failed and something passed."""
    tally = counts(rows)
    return tally["pass"] > 0 and not any(tally[k] for k in FAILED)


def total_stats(rows: List[CheckRow]) -> Dict[str, Dict[str, int]]:
    total: Dict[str, Dict[str, int]] = {}
    for row in rows:
        for api_name, per in (row.stats or {}).items():
            per_api = total.setdefault(api_name, {})
            for status, n in per.items():
                per_api[status] = per_api.get(status, 0) + n
    return total


def rows_as_dicts(rows: List[CheckRow]) -> List[Dict[str, Any]]:
    return [{**asdict(r), "speedup": r.speedup} for r in rows]


def summary_as_dicts(rows: List[CheckRow]) -> List[Dict[str, Any]]:
    return [asdict(s) for s in summarize(rows)]
