"""Generate the function a hit calls for one (API, definition, solution).

The entry's source is assembled from small pieces, each decided once per
resolved shape: the arguments test (a caller's argument the solution cannot
receive sends the call to the original), the re-entry test (a solution
calling the API it replaces reaches the original), the per-call constraint
guard, the solution call in its own convention, and the delivery of its
results in the API's convention, every result checked before the first
write. Per call the entry does only identity tests, a few attribute reads
and the copies the convention needs.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .arguments import Receivable, is_default, receivable
from .codegen import PREFIX, CallShape, compile_function
from .errors import TraceApplyError
from .layout import nhd_view
from .reconcile import CallGuard, InputSource, OutputPlan, ReturnConvention, expected_shapes
from .results import EntryContext, helpers

P = PREFIX


class InsideSolution(threading.local):
    """Per route and thread: ``flag[0]`` is True while this thread loads or
    runs the route's solution, so a call of the same API from inside it
    reaches the original kernel instead of recursing (or waiting on its own
    load). A one-item list read once per call: setting and clearing its item
    costs a fraction of setting a thread-local attribute twice."""

    def __init__(self) -> None:
        self.flag = [False]


@dataclass
class EntryParts:
    """Everything one hit entry needs, decided by the route."""

    fi_api: str
    definition: str
    template: Any
    shape: CallShape
    convention: ReturnConvention
    inputs: Sequence[InputSource]
    loaded: Any  # loaders.LoadedSolution
    tick_hit: Callable[[], int]
    tick_error: Callable[[], int]
    inside: InsideSolution
    inside_fallback: Callable  # counts and runs the original (re-entry)
    unaccepted_fallback: Callable  # counts and runs the original (argument)
    report_unaccepted: Callable[[str, Any, str], Any]  # (argument, value, solution label)
    is_method: bool = False
    allocate: Optional[Callable[..., List[Any]]] = None
    extra_globals: Dict[str, Any] = field(default_factory=dict)
    guard: Optional[CallGuard] = None
    prelude: Sequence[str] = ()
    const_values: Dict[str, Any] = field(default_factory=dict)
    # Parameter -> the entry parameter holding its ``.shape`` as the wrapper
    # read it for the key (None when the key took the slow path), and the
    # header text of those trailing parameters (every entry of the API takes them).
    shape_reads: Dict[str, str] = field(default_factory=dict)
    extra_header: str = ""


@dataclass
class SolutionCall:
    """How the solution is called: argument texts, arguments passed only
    when not None, and the API arguments it cannot receive."""

    args: List[str]
    conditional: List[Tuple[str, str]]
    unaccepted: List[str]


def build_hit_entry(parts: EntryParts) -> Callable:
    import torch  # noqa: PLC0415

    loaded = parts.loaded
    ctx = EntryContext(parts.fi_api, parts.definition, loaded.label, parts.tick_error)
    ns: Dict[str, Any] = {
        f"{P}fn": loaded.fn,
        f"{P}tick": parts.tick_hit,
        f"{P}seq": (tuple, list),
        f"{P}T": torch.Tensor,
        f"{P}alloc": parts.allocate,
        f"{P}nhd": nhd_view,
        f"{P}torch": torch,
        f"{P}inside": parts.inside,
        f"{P}reentered": parts.inside_fallback,
    }
    ns.update(helpers(ctx))
    ns.update(parts.extra_globals)
    call = solution_call(parts)
    # A call from inside this solution first: it reaches the original whatever its arguments.
    body = parts.shape.entry_unpack()
    body += [f"{P}in = {P}inside.flag", f"if {P}in[0]: return {P}reentered({parts.shape.entry_forward()})"]
    body += arguments_lines(parts, call, ns)
    body += list(parts.prelude)
    body += guard_lines(parts, ns)
    body += call_lines(parts, call)
    shapes = parts.shape_reads
    convention = dataclasses.replace(
        parts.convention,
        outputs=expected_shapes(parts.template, parts.convention, parts.inputs, parts.const_values, shapes),
    )
    delivery = delivery_lines(convention, shapes)
    # The shapes the wrapper read for the key: read here only when it did not.
    text = "\n".join(delivery)
    for param, var in shapes.items():
        if re.search(rf"\b{var}\b", text):
            body.append(f"if {var} is None: {var} = {param}.shape")
    body += delivery
    source = f"def {P}hit({parts.shape.entry_header()}{parts.extra_header}):\n" + _indent(body)
    return compile_function(f"{P}hit", source, ns, f"<trace_apply hit {parts.fi_api} {parts.definition}>")


def _indent(lines: Sequence[str]) -> str:
    return "".join("    " + line + "\n" for line in lines)


# -- arguments the solution cannot receive ------------------------------------


def arguments_lines(parts: EntryParts, call: SolutionCall, ns: Dict[str, Any]) -> List[str]:
    """Per argument the solution cannot receive, an identity test that the
    caller left it at the API's default (the singletons None/True/False as
    constants, other defaults as globals). Anything else takes the slow
    test, which lets an equal value (``eps=1e-6`` written at the call site)
    through and sends the rest to the original kernel."""
    if not call.unaccepted:
        return []
    tests = []
    for name in call.unaccepted:
        default = parts.shape.defaults[name]
        if default is None or default is True or default is False:
            tests.append(f"{name} is not {default!r}")
        else:
            ns[f"{P}dv_{name}"] = default
            tests.append(f"{name} is not {P}dv_{name}")
    ns[f"{P}only_defaults"] = _defaults_test(parts, call.unaccepted)
    ns[f"{P}unaccepted"] = parts.unaccepted_fallback
    return [
        f"if {' or '.join(tests)}:",
        f"    if not {P}only_defaults({', '.join(call.unaccepted)}):",
        f"        return {P}unaccepted({parts.shape.entry_forward()})",
    ]


def _defaults_test(parts: EntryParts, names: List[str]) -> Callable[..., bool]:
    """True when every value equals the API's default; else report the
    first that does not (once per API and argument, by the session)."""
    defaults = [parts.shape.defaults[n] for n in names]
    label = parts.loaded.label

    def only_defaults(*values: Any) -> bool:
        for name, value, default in zip(names, values, defaults):
            if not is_default(value, default):
                parts.report_unaccepted(name, value, label)
                return False
        return True

    return only_defaults


# -- the solution's arguments ---------------------------------------------


def solution_call(parts: EntryParts) -> SolutionCall:
    loaded = parts.loaded
    solution = getattr(loaded, "solution", None)
    ignores = solution.spec.ignored_arguments if solution is not None else ()
    if loaded.positional:
        # A compiled solution receives the definition's inputs only: any
        # other argument set at the call sends it to the original.
        takes = Receivable(frozenset(), False, frozenset(), frozenset(ignores))
        unaccepted = _other_arguments(parts, takes, {src.param for src in parts.inputs}, set(), [])
        args = [src.expr for src in parts.inputs]
        if loaded.destination_passing:
            args += _destination_args(parts)
        return SolutionCall(args, [], unaccepted)
    takes = receivable(loaded.fn, ignores)
    args, conditional, used = _definition_inputs(parts, takes)
    passed = {a.split("=", 1)[0] for a in args} | {t for t, _ in conditional}
    unaccepted = _other_arguments(parts, takes, used, passed, args)
    if loaded.destination_passing:
        args += _destination_args(parts)
    else:
        args = _positional_where_possible(args, loaded.fn)
    return SolutionCall(args, conditional, unaccepted)


def _definition_inputs(parts: EntryParts, takes: Receivable) -> Tuple[List[str], List[Tuple[str, str]], set]:
    """Keyword arguments for the definition's inputs, by the definition's
    name or else the API parameter's."""
    args: List[str] = []
    conditional: List[Tuple[str, str]] = []
    used = set()
    for src in parts.inputs:
        target = next((c for c in (src.key, src.param) if takes.named is None or takes.takes(c)), None)
        if target is None:
            if src.optional:
                continue
            raise TraceApplyError(
                f"solution '{parts.loaded.label}' for definition '{parts.definition}' does not accept the "
                f"definition input '{src.key}' (nor the API parameter '{src.param}')"
            )
        used.add(src.param)
        may_be_none = src.expr != src.param or parts.shape.defaults.get(src.param, None) is None
        if src.optional and target in takes.defaults and may_be_none:
            conditional.append((target, src.expr))  # the solution's own default applies when the caller gave none
        else:
            args.append(f"{target}={src.expr}")
    return args, conditional, used


def _other_arguments(parts: EntryParts, takes: Receivable, used: set, passed: set, args: List[str]) -> List[str]:
    """Call arguments outside the definition (eps, is_neox, ...): passed to
    a solution that can receive them; the rest (bar those it may do without)
    returned, to be tested per call."""
    shape, convention = parts.shape, parts.convention
    dests = {o.dest for o in convention.outputs if o.dest}
    # A value-returning solution that names an out=/lse= buffer gets the
    # caller's (or None) and may write into it: nothing left to copy. So does
    # an in-place API's destination that is no definition input (the fp8
    # ``out`` of rmsnorm_quant(out, input, ...)): the solution writes there
    # and returns it, and the identity test skips the copy.
    buffers = {o.dest for o in convention.outputs
               if o.dest and (not o.in_place or o.dest not in used) and not parts.loaded.destination_passing}
    instance = shape.parameters[0].name if parts.is_method and shape.parameters else None
    unaccepted: List[str] = []
    for p in shape.parameters:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name == instance:
            continue
        if p.name in used or p.name in passed or (p.name in dests and p.name not in buffers):
            continue
        if takes.takes(p.name):
            args.append(f"{p.name}={p.name}")
        elif p.name in dests:
            continue  # a buffer the solution does not take: filled by copy
        elif p.name == convention.arity_param:
            continue  # return_lse: which outputs to hand back, kept by the plugin from the solution's
        elif p.default is not p.empty and not takes.may_drop(p.name):
            unaccepted.append(p.name)
    return unaccepted


def _destination_args(parts: EntryParts) -> List[str]:
    outputs = parts.convention.outputs
    if parts.allocate is None:
        raise TraceApplyError(f"cannot allocate outputs of definition '{parts.definition}'")
    if parts.loaded.positional:
        return [f"{P}outs[{i}]" for i in range(len(outputs))]
    return [f"{o.key}={P}outs[{i}]" for i, o in enumerate(outputs)]


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


# -- per-call constraints ----------------------------------------------------


def guard_lines(parts: EntryParts, ns: Dict[str, Any]) -> List[str]:
    """A call violating a per-call constraint of the definition (var axes)
    runs the original instead."""
    guard = parts.guard
    if guard is None:
        return []
    ns[f"{P}cmiss"] = guard.fallback
    return [
        "try:",
        *("    " + line for line in guard.assignments),
        f"    {P}ok = {guard.condition}",
        "except Exception:",
        f"    {P}ok = False",
        f"if not {P}ok:",
        f"    return {P}cmiss({parts.shape.entry_forward()})",
    ]


# -- the call ----------------------------------------------------------------


def call_lines(parts: EntryParts, call: SolutionCall) -> List[str]:
    lines: List[str] = []
    args = list(call.args)
    if parts.loaded.destination_passing:
        outputs = parts.convention.outputs
        dest_args = ", ".join(o.dest if o.dest else "None" for o in outputs)
        in_args = ", ".join(f"{s.key!r}: {s.expr}" for s in parts.inputs)
        lines.append(f"{P}outs = {P}alloc({{{in_args}}}, ({dest_args},))")
    if len(call.conditional) == 1:
        # One argument passed only when not None: two calls, no dict per call.
        (target, expr), = call.conditional
        lines.append(f"{P}v = {expr}")
        calls = [
            f"    if {P}v is None: {P}r = {P}fn({', '.join(args)})",
            f"    else: {P}r = {P}fn({', '.join(args + [f'{target}={P}v'])})",
        ]
    else:
        if call.conditional:
            lines.append(f"{P}kw = {{}}")
            for target, expr in call.conditional:
                lines.append(f"{P}v = {expr}")
                lines.append(f"if {P}v is not None: {P}kw[{target!r}] = {P}v")
            args.append(f"**{P}kw")
        calls = [f"    {P}r = {P}fn({', '.join(args)})"]
    lines += [
        f"{P}in[0] = True",
        "try:",
        *calls,
        f"except Exception as {P}exc:",
        f"    {P}annotate({P}exc)",
        "    raise",
        "finally:",
        f"    {P}in[0] = False",
    ]
    if parts.loaded.destination_passing:
        lines.append(f"{P}r = tuple({P}outs)")
    return lines


# -- delivery ------------------------------------------------------------------


def delivery_lines(convention: ReturnConvention, shapes: Optional[Dict[str, str]] = None) -> List[str]:
    if convention.returns_none:
        return _in_place_delivery(convention.outputs)
    return _returned_delivery(convention, shapes or {})


def _in_place_delivery(outputs: Sequence[OutputPlan]) -> List[str]:
    """Results go back into the caller's inputs: all checked, then all
    written. A solution that wrote in place and returned the caller's own
    tensors leaves nothing to check or copy (identity tests only)."""
    n = len(outputs)
    one_sequence = f"{outputs[0].dest}.__class__ in {P}seq" if n == 1 else "False"
    if n == 1:
        written = f"{P}r is {outputs[0].dest}"
    else:
        written = f"{P}r.__class__ is tuple and len({P}r) == {n} and " + " and ".join(
            f"{P}r[{i}] is {o.dest}" for i, o in enumerate(outputs)
        )
    lines = [f"if not ({written}):", f"    {P}rs = {P}results({P}r, {n}, {n}, {one_sequence})"]
    lines += [f"    {P}fits({P}rs[{i}], {o.dest}, {o.key!r})" for i, o in enumerate(outputs)]
    lines += [f"    {P}put({P}rs[{i}], {o.dest})" for i, o in enumerate(outputs)]
    return lines + [f"{P}tick()", "return None"]


def _returned_delivery(convention: ReturnConvention, shapes: Dict[str, str]) -> List[str]:
    outputs = convention.outputs
    n = len(outputs)
    arity = convention.arity_param
    lines: List[str] = []
    # An input attribute several results are compared with is read once.
    reads: Dict[str, int] = {}
    for o in outputs:
        for text in _compared_reads(o):
            reads[text] = reads.get(text, 0) + 1
    hoisted = {text: f"{P}a{i}" for i, text in enumerate(t for t, count in reads.items() if count > 1)}
    if n == 1 and arity is None:
        lines += [f"if {P}r.__class__ is not {P}T:", f"    {P}r = {P}results({P}r, 1, 1)[0]"]
        var = [f"{P}r"]
    else:
        low = 1 if arity else n
        if arity:
            lines.append(f"if {P}r.__class__ is {P}T: {P}rs = [{P}r]")
            lines.append(f"else: {P}rs = list({P}results({P}r, {low}, {n}))")
            lines.append(f"if {arity} and (len({P}rs) < {n} or {P}rs[-1] is None):")
            lines.append(f"    raise {P}fail('{arity}=True but the solution returned no ' + {outputs[-1].key!r})")
            lines.append(f"if not {arity}: del {P}rs[1:]")
        else:
            # A tuple of the right length is the common case; the per-result
            # checks below catch anything in it that is not a tensor.
            lines.append(f"if {P}r.__class__ is tuple and len({P}r) == {n}: {P}rs = list({P}r)")
            lines.append(f"else: {P}rs = list({P}results({P}r, {low}, {n}))")
        var = [f"{P}rs[{i}]" for i in range(n)]

    def only_if_asked(i: int, block: List[str]) -> List[str]:
        if not block or not (arity and i > 0):
            return block
        return [f"if {arity}:"] + ["    " + line for line in block]

    # Every result is checked before any is written into a caller's buffer.
    lines += [f"{name} = {text}" for text, name in hoisted.items()]
    for i, o in enumerate(outputs):
        lines += only_if_asked(i, _check_lines(o, var[i], shapes, hoisted))
    for i, o in enumerate(outputs):
        lines += only_if_asked(i, _write_lines(o, var[i]))
    lines.append(f"{P}tick()")
    if n == 1 and arity is None:
        lines.append(f"return {P}r")
    elif arity and convention.fixed_tuple:
        lines.append(f"return tuple({P}rs) if {arity} else ({P}rs[0], None)")
    elif arity:
        lines.append(f"return tuple({P}rs) if {arity} else {P}rs[0]")
    else:
        lines.append(f"return tuple({P}rs)")
    return lines


def _check_lines(o: OutputPlan, var: str, shapes: Optional[Dict[str, str]] = None,
                 hoisted: Optional[Dict[str, str]] = None) -> List[str]:
    """Raise unless the result fits: exactly its destination buffer when
    the caller gave one, else the dtype, full shape and device the API
    returns (read off the input it must resemble, or its template dims)."""
    lines: List[str] = []
    returned = _returned_check(o, var, shapes or {}, hoisted or {})
    if o.dest:
        lines.append(
            f"if {o.dest} is not None: "
            f"{P}fits({var}, {o.dest}, {o.key!r}) if ({var} is not {o.dest} and ({var}.__class__ is not {P}T "
            f"or {o.dest}.__class__ is not {P}T or {var}.dtype is not {o.dest}.dtype or {var}.shape != {o.dest}.shape "
            f"or {var}.device != {o.dest}.device)) else None"
        )
        if returned:
            lines.append("el" + returned)
    elif returned:
        lines.append(returned)
    return lines


def _compared_reads(o: OutputPlan) -> List[str]:
    """The input attributes a returned result is compared with (dtype, device)."""
    out = [f"{o.dtype_like}.dtype"] if o.dtype_like and o.dtype_like.isidentifier() else []
    device_like = o.shape_like or o.device_like
    if device_like and device_like.isidentifier():
        out.append(f"{device_like}.device")
    return out


def _returned_check(o: OutputPlan, var: str, shapes: Dict[str, str], hoisted: Dict[str, str]) -> str:
    """The inline test of a returned result: its class, then dtype, shape
    and device against what the API returns (shapes the wrapper read for
    the key are reused; dtypes compared by identity, they are singletons)."""
    tests = [f"{var}.__class__ is not {P}T"]
    dtype = f"{o.dtype_like}.dtype" if o.dtype_like else f"{P}torch.{o.fixed_dtype}" if o.fixed_dtype else None
    if dtype:
        tests.append(f"{var}.dtype is not {hoisted.get(dtype, dtype)}")
    if o.shape_like:
        shape_expr = shapes.get(o.shape_like, f"{o.shape_like}.shape")
    else:
        shape_expr = o.shape_expr
    if shape_expr:
        tests.append(f"{var}.shape != {shape_expr}")
    device_like = o.shape_like or o.device_like
    if device_like:
        device = f"{device_like}.device"
        tests.append(f"{var}.device != {hoisted.get(device, device)}")
    if len(tests) == 1:
        # Nothing known to compare with: a tensor, or a (k, v) pair, passes.
        return f"if {var}.__class__ is not {P}T and {var}.__class__ not in {P}seq: {P}wrong({var}, None, None, None, {o.key!r})"
    return (
        f"if {' or '.join(tests)}: "
        f"{P}wrong({var}, {dtype or 'None'}, {shape_expr or 'None'}, {device_like or 'None'}, {o.key!r})"
    )


def _write_lines(o: OutputPlan, var: str) -> List[str]:
    if not o.dest:
        return []
    return [
        f"if {o.dest} is not None:",
        f"    if {var} is not {o.dest}: {o.dest}.copy_({var}) if {o.dest}.__class__ is {P}T else {P}put({var}, {o.dest})",
        f"    {var} = {o.dest}",
    ]
