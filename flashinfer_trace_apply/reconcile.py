"""How an API's conventions and a definition's inputs and outputs meet.

Decided once per API template: where each output of the definition goes
(returned, written into ``out=`` / ``lse=``, written back into an in-place
input, returned only when ``return_lse`` asks), and where each input is read
from inside generated code. ``hit_entry`` turns these into the function a
hit calls.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .codegen import PREFIX, CallShape
from .errors import TraceApplyError
from .layout import CACHE_PARAM


@dataclass(frozen=True)
class OutputPlan:
    key: str  # the definition's output name
    dest: Optional[str]  # API parameter the result is written into, if any
    in_place: bool  # dest is an input buffer (template ``param``), not out=/lse=
    dtype_like: Optional[str]  # API parameter whose dtype the result must have
    shape_like: Optional[str] = None  # API parameter whose shape and device it must have
    # Filled per resolved shape (see expected_shapes): source text of the
    # shape a returned result must have, and a parameter on its device.
    shape_expr: Optional[str] = None
    device_like: Optional[str] = None
    fixed_dtype: Optional[str] = None  # the template's own dtype (``float32``), when no input gives it


@dataclass(frozen=True)
class ReturnConvention:
    returns_none: bool  # in-place API: results go back into inputs
    arity_param: Optional[str]  # e.g. "return_lse": the second output only on request
    outputs: Tuple[OutputPlan, ...]
    fixed_tuple: bool = False  # returns (out, lse-or-None) whatever return_lse says


def _return_annotation(fn: Callable) -> Any:
    try:
        return inspect.signature(fn).return_annotation
    except (TypeError, ValueError):
        return inspect.Signature.empty


def _annotation_is_none(fn: Callable) -> bool:
    ann = _return_annotation(fn)
    return ann is None or ann is type(None) or ann == "None"


def _annotation_is_fixed_tuple(fn: Callable) -> bool:
    """``-> tuple[Tensor, Optional[Tensor]]`` (always a pair), as opposed to
    ``-> Union[Tensor, Tuple[Tensor, Tensor]]`` (a pair only on request)."""
    text = _return_annotation(fn)
    text = text if isinstance(text, str) else str(text)
    text = text.replace("typing.", "").strip()
    return text.lower().startswith("tuple[")


def plan_outputs(template: Any, shape: CallShape, api_fn: Callable, fi_api: str = "") -> ReturnConvention:
    """Where each output of ``template`` goes for this API, or raise
    ``TraceApplyError`` when the API cannot be routed faithfully."""
    from flashinfer.trace.template import Tensor  # noqa: PLC0415

    from .inplace import UNDECLARED_WRITES, output_buffer, write_back_target  # noqa: PLC0415

    if fi_api in UNDECLARED_WRITES:
        raise TraceApplyError(
            f"the API also writes '{UNDECLARED_WRITES[fi_api]}', for which its template declares no output"
        )
    returns_none = _annotation_is_none(api_fn)
    plans: List[OutputPlan] = []
    out_taken = False
    api_params = [p.name for p in shape.parameters]
    for key, desc in template.outputs.items():
        if not isinstance(desc, Tensor):
            continue
        dest: Optional[str] = None
        in_place = False
        if returns_none:
            param = write_back_target(fi_api, template, key, api_params)
        else:
            param = getattr(desc, "param", None) or output_buffer(template, key, shape)
        if param is not None and shape.has(param):
            dest, in_place = param, returns_none or param not in ("out", "lse")
        elif key == "lse" and shape.has("lse"):
            dest = "lse"
        elif key != "lse" and not out_taken and shape.has("out"):
            dest, out_taken = "out", True
        dtype_like = desc.dtype_from if desc.dtype_from and shape.has(desc.dtype_from) else None
        plans.append(OutputPlan(key=key, dest=dest, in_place=in_place, dtype_like=dtype_like, shape_like=_same_dims_input(template, desc, shape)))
    if returns_none:
        missing = [p.key for p in plans if p.dest is None]
        if missing or not plans:
            raise TraceApplyError(
                f"in-place API has no write-back target for output(s) {missing or '[]'} in its template"
            )
    arity = "return_lse" if shape.has("return_lse") and any(p.key == "lse" for p in plans) else None
    return ReturnConvention(
        returns_none=returns_none,
        arity_param=arity,
        outputs=tuple(plans),
        fixed_tuple=bool(arity) and _annotation_is_fixed_tuple(api_fn),
    )


def _same_dims_input(template: Any, desc: Any, shape: CallShape) -> Optional[str]:
    """A required tensor argument with exactly the output's dims: the
    result must then have that argument's shape and device."""
    from flashinfer.trace.template import Tensor  # noqa: PLC0415

    for key, d in template.inputs.items():
        if not isinstance(d, Tensor) or d.optional or d.tuple_idx is not None:
            continue
        param = d.param if d.param is not None else key
        if list(d.dim_names) == list(desc.dim_names) and shape.has(param):
            return param
    return None


@dataclass
class InputSource:
    key: str  # definition input name
    param: str  # API parameter it is read from
    expr: str  # source text giving the value inside the generated function
    optional: bool


def cache_prelude(instance: str) -> str:
    """Source line giving ``_fita_kvc``: K and V of ``paged_kv_cache`` as NHD
    tensors. The common case (an NHD ``(k, v)`` tuple) costs one attribute read."""
    return (
        f"{PREFIX}kvc = {CACHE_PARAM} if ({CACHE_PARAM}.__class__ is tuple and "
        f"getattr({instance}, '_kv_layout', 'NHD') == 'NHD') else "
        f"({PREFIX}nhd({PREFIX}layout({instance}), {CACHE_PARAM}, 0), {PREFIX}nhd({PREFIX}layout({instance}), {CACHE_PARAM}, 1))"
    )


def input_sources(
    template: Any,
    shape: CallShape,
    plan_exprs: Dict[str, str],
    cache_layout_expr: Optional[str] = None,
) -> List[InputSource]:
    """How to get each definition input inside the generated function.
    ``cache_layout_expr``: for wrapper ``run()`` methods, source text giving
    the cache layout, so K/V are handed over as NHD views."""
    from flashinfer.trace.template import Tensor  # noqa: PLC0415

    sources: List[InputSource] = []
    for key, desc in template.inputs.items():
        param = desc.param if getattr(desc, "param", None) is not None else key
        tuple_idx = getattr(desc, "tuple_idx", None) if isinstance(desc, Tensor) else None
        if shape.has(param):
            if tuple_idx is not None and param == CACHE_PARAM and cache_layout_expr:
                expr = f"{PREFIX}kvc[{tuple_idx}]"  # see cache_prelude()
            elif tuple_idx is not None:
                expr = f"({param}[{tuple_idx}] if {param}.__class__ in {PREFIX}seq else None)"
            else:
                expr = param
        elif key in plan_exprs:
            expr = plan_exprs[key]
        else:
            expr = "None"
        sources.append(InputSource(key=key, param=param, expr=expr, optional=bool(getattr(desc, "optional", False))))
    return sources


@dataclass(frozen=True)
class CallGuard:
    """Source lines that compute the axes a per-call constraint reads, the
    condition, and the entry to run when it fails."""

    assignments: Tuple[str, ...]
    condition: str
    fallback: Callable


def expected_shapes(
    template: Any, convention: ReturnConvention, inputs: Sequence[InputSource], const_values: Dict[str, Any],
    shapes: Optional[Dict[str, str]] = None,
) -> Tuple[OutputPlan, ...]:
    """The convention's outputs with, for those that match no input's dims,
    the shape a returned result must have (const axes from the definition,
    the others off a required input carrying the axis) and an input whose
    device it must be on. An axis found nowhere leaves the shape unchecked.
    ``shapes``: parameter -> a local already holding its ``.shape``."""
    shapes = shapes or {}
    from flashinfer.trace.template import Tensor  # noqa: PLC0415

    plain = {src.key: src.expr for src in inputs if src.expr.isidentifier() and src.expr != "None"}
    carriers = [
        (plain[key], list(desc.dim_names))
        for key, desc in template.inputs.items()
        if isinstance(desc, Tensor) and not desc.optional and key in plain
    ]
    device_like = carriers[0][0] if carriers else None
    plans = []
    for o in convention.outputs:
        declared = getattr(template.outputs[o.key], "dtype", None)
        # Only floating dtypes are taken from the template: index outputs
        # follow the call (FlashInfer's samplers return int32, or the dtype of
        # ``indices``, where the template says int64).
        if not o.dtype_like and isinstance(declared, str) and _is_torch_dtype(declared) and "float" in declared:
            o = dataclasses.replace(o, fixed_dtype=declared)
        if o.shape_like:
            plans.append(o)
            continue
        dims = []
        for axis in template.outputs[o.key].dim_names:
            if axis in const_values:
                dims.append(repr(int(const_values[axis])))
                continue
            found = next((f"{shapes.get(expr, expr + '.shape')}[{names.index(axis)}]" for expr, names in carriers if axis in names), None)
            if found is None:
                dims = None
                break
            dims.append(found)
        shape_expr = None if dims is None else "(" + "".join(d + ", " for d in dims) + ")"
        plans.append(dataclasses.replace(o, shape_expr=shape_expr, device_like=device_like))
    return tuple(plans)


def _is_torch_dtype(name: str) -> bool:
    import torch  # noqa: PLC0415

    return name.isidentifier() and isinstance(getattr(torch, name, None), torch.dtype)
