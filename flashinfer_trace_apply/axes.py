"""Where each const axis of a template is read from, decided once per template.

FlashInfer's collector reads an axis from the first source that exists, in a
fixed priority (a fixed ``Const(value=)`` or, from 0.7.4, FlashInfer's own
``Const(extract=)`` function; a required tensor's dimension, a scalar input
named after the axis, an optional tensor, a keyword named after the axis).
Before 0.6.18 the order was: the first tensor carrying the axis, optional or
not, then the keyword. We derive the same choice as data, so the dispatcher
can compile it into plain attribute reads instead of re-deriving it on every
call; the parity test checks the result against ``fi_trace`` for every API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional

from . import compat


@dataclass(frozen=True)
class AxisSource:
    axis: str
    kind: str  # "fixed" | "tensor" | "scalar" | "computed"
    param: Optional[str] = None
    tuple_idx: Optional[int] = None
    dim: int = 0
    value: Optional[int] = None
    extract: Optional[Callable[[Mapping[str, Any]], Optional[int]]] = None  # Const(extract=), 0.7.4+
    # The template tensor's rank. A tensor of another rank is no instance of
    # the definition, though its dimension ``dim`` exists: rmsnorm takes
    # (batch, hidden) or (batch, heads, head_dim), and a 3-D call with 64
    # heads must not be read as hidden size 64. FlashInfer's collector reads
    # it so; here the axis is then absent, and no definition matches.
    rank: Optional[int] = None

    def read(self, namespace: Mapping[str, Any]) -> Optional[int]:
        """The collector's exact semantics on a bound-argument namespace:
        ``None`` when the source is absent or unusable (the axis then drops
        out of the name)."""
        import torch  # noqa: PLC0415

        if self.kind == "fixed":
            return self.value
        if self.kind == "computed":
            return self.extract(namespace)
        raw = namespace.get(self.param)
        if self.kind == "scalar":
            if raw is None:
                return None
            try:
                return int(raw)
            except (TypeError, ValueError):
                return None
        if raw is None:
            return None
        if self.tuple_idx is not None:
            if isinstance(raw, (tuple, list)) and len(raw) > self.tuple_idx:
                raw = raw[self.tuple_idx]
            else:
                return None
        if not isinstance(raw, torch.Tensor) or self.dim >= raw.ndim:
            return None
        if self.rank is not None and raw.ndim != self.rank:
            return None
        return int(raw.shape[self.dim])


def _param_of(key: str, descriptor: Any) -> str:
    return descriptor.param if getattr(descriptor, "param", None) is not None else key


def _tensor_source(template: Any, axis: str, allow_optional: bool) -> Optional[AxisSource]:
    from flashinfer.trace.template import Tensor  # noqa: PLC0415

    for key, descriptor in template.inputs.items():
        if not isinstance(descriptor, Tensor):
            continue
        if descriptor.optional and not allow_optional:
            continue
        if axis not in descriptor.dim_names:
            continue
        return AxisSource(
            axis=axis,
            kind="tensor",
            param=_param_of(key, descriptor),
            tuple_idx=descriptor.tuple_idx,
            dim=descriptor.dim_names.index(axis),
            rank=len(descriptor.dim_names),
        )
    return None


def const_axis_sources(template: Any) -> List[AxisSource]:
    """One source per const axis, in the template's axis order."""
    from flashinfer.trace.template import Const, Scalar  # noqa: PLC0415

    sources: List[AxisSource] = []
    legacy_order = compat.optional_tensors_first()
    for axis, marker in template.axes.items():
        if not isinstance(marker, Const):
            continue
        fixed = compat.fixed_axis_value(marker)
        if fixed is not None:
            sources.append(AxisSource(axis=axis, kind="fixed", value=fixed))
            continue
        extract = getattr(marker, "extract", None)
        if callable(extract):
            sources.append(AxisSource(axis=axis, kind="computed", extract=extract))
            continue
        if legacy_order:
            source = _tensor_source(template, axis, allow_optional=True)
            sources.append(source or AxisSource(axis=axis, kind="scalar", param=axis))
            continue
        source = _tensor_source(template, axis, allow_optional=False)
        if source is None:
            scalar = template.inputs.get(axis)
            if isinstance(scalar, Scalar):
                source = AxisSource(axis=axis, kind="scalar", param=_param_of(axis, scalar))
        if source is None:
            source = _tensor_source(template, axis, allow_optional=True)
        if source is None:
            source = AxisSource(axis=axis, kind="scalar", param=axis)
        sources.append(source)
    return sources


def definition_name(template: Any, sources: List[AxisSource], values: tuple) -> str:
    axis_values: Dict[str, int] = {
        s.axis: v for s, v in zip(sources, values) if v is not None
    }
    return compat.definition_name(template, axis_values)
