"""Which argument an in-place API writes each output back into.

FlashInfer's templates name the write-back target (an output's ``param``)
for only some in-place APIs; ``apply_rope*_inplace``, the paged-cache
appends and ``merge_state_in_place`` declare none, so FlashInfer's built-in
cannot route them at all. The target follows from the template in most
cases; the rest are in a small table.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

# (fi_api, output name) -> API parameter, where the template is ambiguous:
# gemma_fused_add_rmsnorm's "output" has the same dims as both inputs
# (fused_add_rmsnorm's too, on releases before 0.6.14, whose templates
# declare no ``param``).
WRITE_BACK_TABLE: Dict[Tuple[str, str], str] = {
    ("flashinfer.norm.gemma_fused_add_rmsnorm", "output"): "input",
    ("flashinfer.norm.fused_add_rmsnorm", "output"): "input",
}


# APIs that write an argument their template has no output for: a solution
# could not produce that write, so routing them would silently drop it.
UNDECLARED_WRITES: Dict[str, str] = {
    "flashinfer.rope.rope_quantize_fp8_append_paged_kv_cache": "paged_kv_cache",
}


def _param(key: str, desc: Any) -> str:
    return desc.param if getattr(desc, "param", None) is not None else key


def write_back_target(fi_api: str, template: Any, output_key: str, api_params: Any) -> Optional[str]:
    """The API parameter an in-place output is written into, or None.

    In order: the template's own ``param``; the table; the API parameter of
    the output's name (``q`` -> ``q``, ``out`` -> ``out``); an input read from
    the parameter of that name; the one input with exactly the output's dims.
    """
    from flashinfer.trace.template import Tensor  # noqa: PLC0415

    desc = template.outputs[output_key]
    declared = getattr(desc, "param", None)
    if declared is not None:
        return declared if declared in api_params else None
    tabled = WRITE_BACK_TABLE.get((fi_api, output_key))
    if tabled is not None:
        return tabled
    if output_key in api_params:
        return output_key
    same_name = template.inputs.get(output_key)
    if isinstance(same_name, Tensor) and same_name.tuple_idx is None and _param(output_key, same_name) in api_params:
        return _param(output_key, same_name)
    matches = [
        _param(key, d)
        for key, d in template.inputs.items()
        if isinstance(d, Tensor) and d.tuple_idx is None and list(d.dim_names) == list(desc.dim_names)
    ]
    if len(matches) == 1 and matches[0] in api_params:
        return matches[0]
    return None


def output_buffer(template: Any, output_key: str, shape: Any) -> Optional[str]:
    """For a value-returning API: an optional buffer parameter named after
    the output (``residual_out=None``), which the caller may pass to receive it."""
    reads = {d.param if getattr(d, "param", None) is not None else k for k, d in template.inputs.items()}
    if shape.has(output_key) and output_key not in reads and output_key in shape.defaults and shape.defaults[output_key] is None:
        return output_key
    return None
