"""Turn one (API, definition, solution) into the function a hit calls.

The solution is called in its own convention (keywords named after the
definition's inputs, or positional for compiled solutions; value-returning or
destination-passing) and its results are delivered in the caller's: written
into ``out=`` / ``lse=`` buffers (which are then returned), written back into
in-place inputs, returned with the arity ``return_lse`` asks for. Results are
checked against where they go (count, shape, dtype, device) so a wrong
solution raises instead of being broadcast or half-applied.

Everything is decided here, once per resolved shape; the generated function
holds only the per-call work.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .codegen import PREFIX, CallShape, compile_function
from .errors import SolutionCallError, TraceApplyError
from .layout import CACHE_PARAM, nhd_view


@dataclass(frozen=True)
class OutputPlan:
    key: str  # the definition's output name
    dest: Optional[str]  # API parameter the result is written into, if any
    in_place: bool  # dest is an input buffer (template ``param``), not out=/lse=
    dtype_like: Optional[str]  # API parameter whose dtype the result must have
    shape_like: Optional[str] = None  # API parameter whose shape and device it must have


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


# ---------------------------------------------------------------------------
# Helpers the generated code calls on the rare paths (errors, odd results).
# ---------------------------------------------------------------------------


class _Context:
    """Names used in error messages and the error counter of one entry."""

    def __init__(self, fi_api: str, definition: str, label: str, tick_error: Callable[[], int]) -> None:
        self.fi_api, self.definition, self.label = fi_api, definition, label
        self.tick_error = tick_error

    def where(self) -> str:
        return f"{self.fi_api} -> definition '{self.definition}' -> solution '{self.label}'"

    def fail(self, message: str) -> "TraceApplyError":
        self.tick_error()
        return SolutionCallError(f"Trace Apply: {self.where()}: {message}")

    def annotate(self, exc: BaseException) -> None:
        """A solution raised: count it and say where, keeping the exception
        type (engines catch e.g. torch.OutOfMemoryError by type)."""
        self.tick_error()
        note = f"raised by Trace Apply solution for {self.where()}"
        if hasattr(exc, "add_note"):
            exc.add_note(note)
        else:  # Python 3.10
            print(f"[flashinfer_trace_apply] {note}", file=sys.stderr)


def _describe(value: Any) -> str:
    import torch  # noqa: PLC0415

    if isinstance(value, torch.Tensor):
        return f"Tensor(shape={tuple(value.shape)}, dtype={value.dtype}, device={value.device})"
    return type(value).__name__


def _make_helpers(ctx: _Context) -> Dict[str, Callable]:
    import torch  # noqa: PLC0415

    def results(value: Any, low: int, high: int, one_sequence: bool = False) -> tuple:
        """The solution's results as a tuple, checked for count and type.
        ``one_sequence``: the API writes one output that is itself a pair
        (a paged cache given as ``(k, v)``), so a returned pair is that output."""
        if one_sequence and isinstance(value, (tuple, list)) and len(value) != 1:
            items = (tuple(value),)
        elif isinstance(value, (tuple, list)):
            items = tuple(value)
        else:
            items = (value,)
        if not low <= len(items) <= high:
            want = str(low) if low == high else f"{low} to {high}"
            raise ctx.fail(f"returned {len(items)} result(s), the API needs {want}")
        for i, item in enumerate(items):
            if item is None and i >= low:
                continue  # an optional output the call did not ask for
            if not isinstance(item, (torch.Tensor, tuple, list)):
                raise ctx.fail(f"result {i} is {_describe(item)}, expected a Tensor")
        return items

    def into(result: Any, buffer: Any, what: str) -> Any:
        """Write ``result`` into the caller's ``buffer`` after checking that it
        fits exactly (no broadcasting, no silent dtype/device conversion)."""
        if result is buffer:
            return buffer
        if isinstance(buffer, (tuple, list)):  # e.g. a paged cache given as (k, v)
            if not isinstance(result, (tuple, list)) or len(result) != len(buffer):
                raise ctx.fail(f"{what}: expected {len(buffer)} tensors to write into the caller's {type(buffer).__name__}, got {_describe(result)}")
            for i, (part, target) in enumerate(zip(result, buffer)):
                into(part, target, f"{what}[{i}]")
            return buffer
        if not isinstance(result, torch.Tensor):
            raise ctx.fail(f"{what}: result is {_describe(result)}, expected a Tensor")
        if result.shape != buffer.shape or result.dtype != buffer.dtype or result.device != buffer.device:
            raise ctx.fail(f"{what}: result {_describe(result)} does not match the destination {_describe(buffer)}")
        buffer.copy_(result)
        return buffer

    def wrong_result(result: Any, dtype_like: Any, shape_like: Any, what: str) -> None:
        if not isinstance(result, torch.Tensor):
            raise ctx.fail(f"{what}: result is {_describe(result)}, expected a Tensor")
        if isinstance(dtype_like, torch.Tensor) and result.dtype != dtype_like.dtype:
            raise ctx.fail(f"{what}: result dtype {result.dtype} differs from the API's {dtype_like.dtype}")
        if isinstance(shape_like, torch.Tensor):
            raise ctx.fail(
                f"{what}: result {_describe(result)} does not match the shape/device the API returns, "
                f"that of {_describe(shape_like)}"
            )

    return {
        f"{PREFIX}results": results,
        f"{PREFIX}into": into,
        f"{PREFIX}wrong": wrong_result,
        f"{PREFIX}annotate": ctx.annotate,
        f"{PREFIX}fail": ctx.fail,
    }


# ---------------------------------------------------------------------------
# Code generation of the hit entry.
# ---------------------------------------------------------------------------


def _accepts(fn: Callable) -> Tuple[Optional[set], bool, Dict[str, bool]]:
    """(named parameters or None if unknown, takes **kwargs, name -> has default)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None, True, {}
    named = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    has_default = {p.name: p.default is not p.empty for p in params}
    return named, var_kw, has_default


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


def build_hit_entry(
    *,
    fi_api: str,
    definition: str,
    template: Any,
    shape: CallShape,
    convention: ReturnConvention,
    inputs: Sequence[InputSource],
    loaded: Any,  # loaders.LoadedSolution
    tick_hit: Callable[[], int],
    tick_error: Callable[[], int],
    is_method: bool = False,
    allocate: Optional[Callable[..., List[Any]]] = None,
    extra_globals: Optional[Dict[str, Any]] = None,
    guard: Optional["CallGuard"] = None,
    report_unaccepted: Optional[Callable[[str, Any], bool]] = None,
    prelude: Sequence[str] = (),
) -> Callable:
    import torch  # noqa: PLC0415

    ctx = _Context(fi_api, definition, loaded.label, tick_error)
    ns: Dict[str, Any] = {
        f"{PREFIX}fn": loaded.fn,
        f"{PREFIX}tick": tick_hit,
        f"{PREFIX}seq": (tuple, list),
        f"{PREFIX}T": torch.Tensor,
        f"{PREFIX}alloc": allocate,
        f"{PREFIX}nhd": nhd_view,
    }
    ns.update(_make_helpers(ctx))
    ns.update(extra_globals or {})
    outputs = convention.outputs
    dests = {o.dest for o in outputs if o.dest}
    lines: List[str] = []
    emit = lines.append

    for line in prelude:
        emit(line)
    # 0. Per-call constraints of the definition (var axes): a violating call
    # runs the original instead.
    if guard is not None:
        ns[f"{PREFIX}cmiss"] = guard.fallback
        emit("try:")
        for line in guard.assignments:
            emit("    " + line)
        emit(f"    {PREFIX}ok = {guard.condition}")
        emit("except Exception:")
        emit(f"    {PREFIX}ok = False")
        emit(f"if not {PREFIX}ok:")
        emit(f"    return {PREFIX}cmiss({shape.forward()})")

    # 1. The solution's arguments.
    unaccepted: List[str] = []
    call_args: List[str] = []
    conditional: List[Tuple[str, str]] = []  # passed only when not None
    if loaded.positional:
        call_args = [src.expr for src in inputs]
    else:
        named, var_kw, has_default = _accepts(loaded.fn)
        used_params = set()
        for src in inputs:
            target = None
            for candidate in (src.key, src.param):
                if named is None or var_kw or candidate in named:
                    target = candidate
                    break
            if target is None:
                if src.optional:
                    continue
                raise TraceApplyError(
                    f"solution '{loaded.label}' for definition '{definition}' does not accept the "
                    f"definition input '{src.key}' (nor the API parameter '{src.param}')"
                )
            used_params.add(src.param)
            may_be_none = src.expr != src.param or shape.defaults.get(src.param, None) is None
            if src.optional and has_default.get(target, False) and may_be_none:
                # Let the solution's own default apply when the caller gave nothing.
                conditional.append((target, src.expr))
            else:
                call_args.append(f"{target}={src.expr}")
        # Call arguments outside the definition (eps, is_neox, ...) reach a
        # solution that names them, instead of being dropped.
        passed = {a.split("=", 1)[0] for a in call_args} | {t for t, _ in conditional}
        instance = shape.parameters[0].name if is_method and shape.parameters else None
        # A value-returning solution that names an out=/lse= buffer gets the
        # caller's (or None) and may write into it: nothing left to copy.
        buffers = {o.dest for o in outputs if o.dest and not o.in_place and not loaded.destination_passing}
        for p in shape.parameters:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name == instance:
                continue
            if p.name in used_params or p.name in passed or (p.name in dests and p.name not in buffers):
                continue
            if named is not None and p.name in named:
                call_args.append(f"{p.name}={p.name}")
            elif p.name in dests:
                continue  # a buffer the solution does not take: filled by copy
            elif report_unaccepted is not None and p.default is not p.empty:
                unaccepted.append(p.name)

    # 2. Destination-passing: outputs are caller buffers or fresh tensors.
    if loaded.destination_passing:
        if allocate is None:
            raise TraceApplyError(f"cannot allocate outputs of definition '{definition}'")
        dest_args = ", ".join(o.dest if o.dest else "None" for o in outputs)
        in_args = ", ".join(f"{s.key!r}: {s.expr}" for s in inputs)
        emit(f"{PREFIX}outs = {PREFIX}alloc({{{in_args}}}, ({dest_args},))")
        if loaded.positional:
            call_args += [f"{PREFIX}outs[{i}]" for i in range(len(outputs))]
        else:
            call_args += [f"{o.key}={PREFIX}outs[{i}]" for i, o in enumerate(outputs)]

    # A call argument the solution cannot take, set to a non-default value,
    # is reported once per API and argument (then no longer checked).
    # One test per argument, identity first: a default value costs one `is`.
    tests = []
    for name in unaccepted:
        ns[f"{PREFIX}told_{name}"] = False
        ns[f"{PREFIX}dv_{name}"] = shape.defaults[name]
        tests.append(f"({name} is not {PREFIX}dv_{name} and not {PREFIX}told_{name})")
    if tests:
        emit(f"if {' or '.join(tests)}: {PREFIX}unaccepted({', '.join(f'{n}={n}' for n in unaccepted)})")

    if not loaded.positional:
        call_args = _positional_where_possible(call_args, loaded.fn)

    if conditional:
        emit(f"{PREFIX}kw = {{}}")
        for target, expr in conditional:
            emit(f"{PREFIX}v = {expr}")
            emit(f"if {PREFIX}v is not None: {PREFIX}kw[{target!r}] = {PREFIX}v")
        call_args.append(f"**{PREFIX}kw")

    emit("try:")
    emit(f"    {PREFIX}r = {PREFIX}fn({', '.join(call_args)})")
    emit("except Exception as _fita_exc:")
    emit(f"    {PREFIX}annotate(_fita_exc)")
    emit("    raise")
    if loaded.destination_passing:
        emit(f"{PREFIX}r = tuple({PREFIX}outs)")

    # 3. Deliver the results in the API's convention.
    n = len(outputs)
    arity = convention.arity_param
    if convention.returns_none:
        one_sequence = f"{outputs[0].dest}.__class__ in {PREFIX}seq" if n == 1 else "False"
        # A solution that wrote in place and returned the caller's own
        # tensors leaves nothing to check or copy: identity tests only.
        if n == 1:
            written = f"{PREFIX}r is {outputs[0].dest}"
        else:
            written = f"{PREFIX}r.__class__ is tuple and len({PREFIX}r) == {n} and " + " and ".join(
                f"{PREFIX}r[{i}] is {o.dest}" for i, o in enumerate(outputs)
            )
        emit(f"if not ({written}):")
        emit(f"    {PREFIX}rs = {PREFIX}results({PREFIX}r, {n}, {n}, {one_sequence})")
        for i, o in enumerate(outputs):
            emit(f"    {PREFIX}into({PREFIX}rs[{i}], {o.dest}, {o.key!r})")
        emit(f"{PREFIX}tick()")
        emit("return None")
    else:
        if n == 1 and arity is None:
            o = outputs[0]
            emit(f"if {PREFIX}r.__class__ is not {PREFIX}T:")
            emit(f"    {PREFIX}r = {PREFIX}results({PREFIX}r, 1, 1)[0]")
            _deliver(emit, 0, o, f"{PREFIX}r")
            emit(f"{PREFIX}tick()")
            emit(f"return {PREFIX}r")
        else:
            low = 1 if arity else n
            if arity:
                emit(f"if {PREFIX}r.__class__ is {PREFIX}T: {PREFIX}rs = [{PREFIX}r]")
                emit(f"else: {PREFIX}rs = list({PREFIX}results({PREFIX}r, {low}, {n}))")
            else:
                emit(f"{PREFIX}rs = list({PREFIX}results({PREFIX}r, {low}, {n}))")
            if arity:
                emit(f"if {arity} and (len({PREFIX}rs) < {n} or {PREFIX}rs[-1] is None):")
                emit(f"    raise {PREFIX}fail('{arity}=True but the solution returned no ' + {outputs[-1].key!r})")
                emit(f"if not {arity}: del {PREFIX}rs[1:]")
            for i, o in enumerate(outputs):
                if arity and i > 0:
                    emit(f"if {arity}:")
                    _deliver(lambda s: emit("    " + s), i, o, f"{PREFIX}rs[{i}]")
                else:
                    _deliver(emit, i, o, f"{PREFIX}rs[{i}]")
            emit(f"{PREFIX}tick()")
            if arity and convention.fixed_tuple:
                emit(f"return tuple({PREFIX}rs) if {arity} else ({PREFIX}rs[0], None)")
            elif arity:
                emit(f"return tuple({PREFIX}rs) if {arity} else {PREFIX}rs[0]")
            else:
                emit(f"return tuple({PREFIX}rs)")

    scope: Dict[str, Any] = {"globals": []}  # every namespace running these lines

    def unaccepted_arguments(**values: Any) -> None:
        spaces = scope["globals"]
        for name, value in values.items():
            if value is shape.defaults[name] or spaces[0][f"{PREFIX}told_{name}"]:
                continue
            try:
                if bool(value == shape.defaults[name]):
                    # Equal, not identical (a literal at the call site): take
                    # this object as the default so the next call passes on `is`.
                    for space in spaces:
                        space[f"{PREFIX}dv_{name}"] = value
                    continue
            except Exception:  # noqa: BLE001 - e.g. a tensor: not the default
                pass
            if report_unaccepted is not None and report_unaccepted(name, value):
                for space in spaces:
                    space[f"{PREFIX}told_{name}"] = True

    ns[f"{PREFIX}unaccepted"] = unaccepted_arguments
    body = "\n".join("    " + line for line in lines)
    source = f"def {PREFIX}hit({shape.header(with_defaults=False)}):\n{body}\n"
    entry = compile_function(f"{PREFIX}hit", source, ns, f"<trace_apply hit {fi_api} {definition}>")
    scope["globals"].append(entry.__globals__)
    entry.__fita_hit_body__ = HitBody(tuple(lines), ns, scope["globals"])
    return entry


@dataclass(frozen=True)
class HitBody:
    """A hit entry's source lines and namespace, for the API wrapper to run
    inline (dispatch.ApiRoute inlines its first hit). ``spaces``: the
    namespaces running these lines; state the lines keep in globals (the
    once-per-argument warnings) is written to each."""

    lines: Tuple[str, ...]
    namespace: Dict[str, Any]
    spaces: List[Dict[str, Any]]


@dataclass(frozen=True)
class CallGuard:
    """Source lines that compute the axes a per-call constraint reads, the
    condition, and the entry to run when it fails."""

    assignments: Tuple[str, ...]
    condition: str
    fallback: Callable


def _positional_where_possible(call_args: List[str], fn: Callable) -> List[str]:
    """Pass the leading keyword arguments positionally when they are, in
    order, the solution's first parameters: a positional call is cheaper,
    and it means the same."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return call_args
    by_name = {}
    for arg in call_args:
        name, sep, expr = arg.partition("=")
        if not sep or name.startswith("*"):
            return call_args
        by_name[name] = expr
    positional: List[str] = []
    for p in params:
        if p.kind is not p.POSITIONAL_OR_KEYWORD or p.name not in by_name:
            break
        positional.append(by_name.pop(p.name))
    return positional + [f"{n}={e}" for n, e in by_name.items()]


def _deliver(emit: Callable[[str], None], i: int, o: OutputPlan, var: str) -> None:
    """Source lines that check one result and move it to its destination:
    into the caller's buffer (checked there), or returned after cheap
    metadata checks against the input it must resemble."""
    tests = []
    if o.dtype_like:
        tests.append(f"{var}.dtype is not {o.dtype_like}.dtype")
    if o.shape_like:
        # Element count on every hit (a partial or broadcastable result: the
        # silent kind of wrong); full shape and device where a result is
        # copied into a buffer. numel() is half the cost of comparing shapes.
        tests.append(f"{var}.numel() != {o.shape_like}.numel()")
    check = ""
    if tests:
        check = (
            f"if {' or '.join(tests)}: "
            f"{PREFIX}wrong({var}, {o.dtype_like or 'None'}, {o.shape_like or 'None'}, {o.key!r})"
        )
    if o.dest:
        # The common case inline (a tensor that fits exactly is copied in);
        # into() handles the rest and raises with the details.
        emit(f"if {o.dest} is not None:")
        emit(
            f"    if {var} is not {o.dest} and ({var}.__class__ is not {PREFIX}T or {o.dest}.__class__ is not {PREFIX}T "
            f"or {var}.dtype is not {o.dest}.dtype or {var}.shape != {o.dest}.shape "
            f"or {var}.get_device() != {o.dest}.get_device()): {var} = {PREFIX}into({var}, {o.dest}, {o.key!r})"
        )
        emit(f"    elif {var} is not {o.dest}: {o.dest}.copy_({var}); {var} = {o.dest}")
        if check:
            emit("el" + check)
    elif check:
        emit(check)
