"""Output buffers for destination-passing solutions.

When the caller passed no ``out=`` buffer, a destination-passing solution
still needs somewhere to write: allocate each output from the template's
dimension names, with sizes read off the input tensors and the dtype the
template states (``dtype_from`` an input, a fixed ``dtype``, or the dtype of
the first input sharing a dimension). This is the rare path.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence


def make_allocator(template: Any, convention: Any) -> Callable[[Dict[str, Any], Sequence[Any]], List[Any]]:
    from flashinfer.trace.template import Tensor  # noqa: PLC0415

    outputs = [(key, template.outputs[key]) for key in (o.key for o in convention.outputs)] if convention else []
    inputs = [(k, d) for k, d in template.inputs.items() if isinstance(d, Tensor)]
    param_to_key = {(d.param or k): k for k, d in template.inputs.items()}

    def allocate(values: Dict[str, Any], buffers: Sequence[Any]) -> List[Any]:
        import torch  # noqa: PLC0415

        sizes: Dict[str, int] = {}
        device = None
        for key, desc in inputs:
            tensor = values.get(key)
            if not isinstance(tensor, torch.Tensor):
                continue
            device = device or tensor.device
            for axis, size in zip(desc.dim_names, tensor.shape):
                sizes.setdefault(axis, int(size))
        result: List[Any] = []
        for (key, desc), buffer in zip(outputs, buffers):
            if buffer is not None:
                result.append(buffer)
                continue
            missing = [a for a in desc.dim_names if a not in sizes]
            if missing:
                raise ValueError(f"cannot size output '{key}': axes {missing} are not on any input")
            result.append(torch.empty([sizes[a] for a in desc.dim_names], dtype=_dtype(desc, values, inputs, param_to_key), device=device))
        return result

    return allocate


def _dtype(desc: Any, values: Dict[str, Any], inputs: List, param_to_key: Dict[str, str]) -> Any:
    import torch  # noqa: PLC0415

    if desc.dtype_from:
        source = values.get(param_to_key.get(desc.dtype_from, desc.dtype_from))
        if isinstance(source, torch.Tensor):
            return source.dtype
    if desc.dtype:
        return getattr(torch, desc.dtype)
    for key, in_desc in inputs:
        tensor = values.get(key)
        if isinstance(tensor, torch.Tensor) and set(in_desc.dim_names) & set(desc.dim_names):
            return tensor.dtype
    return torch.float32


__all__ = ["make_allocator"]
