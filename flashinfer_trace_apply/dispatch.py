"""The per-API wrapper: shape key -> cached entry -> solution or original.

Everything that can be decided once per API is decided in :class:`ApiRoute`
when the API is wrapped: which template names the call, where each const
axis is read from, where plan-time inputs come from, whether dtypes take
part in routing. The generated wrapper then does, per call, a few attribute
reads to form the shape key, one dict lookup, and one call of the entry
cached for that key: the prepared solution call on a hit, the original (and
its counter) otherwise. The first call for a new key takes the slow path
(exact binding, template selection, dtype / hardware / constraint checks,
solution load) under a lock; the hit and miss paths take none.
"""

from __future__ import annotations

import functools
import inspect
import re
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from . import counters, loaders, reconcile
from .axes import AxisSource, const_axis_sources, definition_name
from .codegen import PREFIX, CallShape, compile_function
from .definitions import DefinitionRules, evaluate, torch_dtype_name
from .errors import SolutionLoadError, TraceApplyError
from .hardware import HardwareSupport
from .layout import CACHE_PARAM, layout_of, nhd_view, uses_cache_views
from .plan_state import PlanRecorder, make_reader, plan_inputs_for
from .registry import ApiSpec, could_produce

_NO_KEY = object()  # ApiRoute.hot_key before any hit is inlined


def _constant_under_compile(fn: Callable) -> Callable:
    """Let torch.compile run ``fn`` at trace time and use its result as a
    constant, so a wrapped API called inside a compiled function resolves its
    solution without a graph break (``fullgraph=True`` works)."""
    try:
        import torch  # noqa: PLC0415

        mark = torch.compiler.assume_constant_result
    except (ImportError, AttributeError):
        return fn

    def resolve_index(key: Any) -> int:  # a plain function: it carries the mark
        return fn(key)

    return mark(resolve_index)


def is_capturing() -> bool:
    """True inside CUDA-graph capture; False on CPU-only torch builds, where
    the CUDA query itself may raise."""
    try:
        import torch  # noqa: PLC0415

        return bool(torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())
    except Exception:  # noqa: BLE001 - no CUDA means no capture
        return False


class RoutingContext:
    """What the enable session knows beyond the mapping: per-definition rules
    (dtypes, constraints) and hardware support of each solution."""

    def __init__(
        self,
        solutions: Mapping[str, Any],
        rules: Mapping[str, DefinitionRules],
        hardware: Mapping[str, HardwareSupport],
        sm: Optional[int],
        board: counters.StatsBoard,
        recorder: PlanRecorder,
        fired: Set[str],
        report_unaccepted: Callable[[str, str, Any], bool],
    ) -> None:
        self.solutions = solutions
        self.rules = rules
        self.hardware = hardware
        self.sm = sm
        self.board = board
        self.recorder = recorder
        self.fired = fired
        self.report_unaccepted = report_unaccepted

    @classmethod
    def plain(cls, solutions: Mapping[str, Any]) -> "RoutingContext":
        """No definitions, no hardware filter, silent: for tools and tests."""
        return cls(solutions, {}, {}, None, counters.StatsBoard(), PlanRecorder(), set(), lambda *_: True)


class TemplateRoute:
    """One template of an API: naming sources, output plan, dtype inputs."""

    def __init__(self, template: Any, shape: CallShape, api_fn: Callable, fi_api: str) -> None:
        from flashinfer.trace.template import Tensor  # noqa: PLC0415

        self.template = template
        self.sources: List[AxisSource] = const_axis_sources(template)
        self.unroutable: Optional[str] = None
        try:
            self.convention = reconcile.plan_outputs(template, shape, api_fn, fi_api)
        except TraceApplyError as exc:
            self.convention = None
            self.unroutable = str(exc)
        # Required tensor inputs that are arguments of the call: their dtypes
        # join the key when some definition states dtypes.
        self.dtype_inputs: List[Tuple[str, str, Optional[int]]] = [
            (key, d.param if d.param is not None else key, d.tuple_idx)
            for key, d in template.inputs.items()
            if isinstance(d, Tensor) and not d.optional and shape.has(d.param if d.param is not None else key)
        ]


class ApiRoute:
    def __init__(self, spec: ApiSpec, context: RoutingContext) -> None:
        self.spec = spec
        self.context = context
        self.solutions = context.solutions
        self.signature = inspect.signature(spec.current)
        self.shape = CallShape(self.signature)
        self.templates = [TemplateRoute(t, self.shape, spec.current, spec.fi_api) for t in spec.templates]
        self.selector = spec.selector if len(spec.templates) > 1 or spec.selector is not None else None
        self.cache: Dict[Any, Callable] = {}
        self.wrapper: Optional[Callable] = None
        self.hot_key: Any = _NO_KEY  # the key whose hit entry the wrapper runs inline
        self._lock = threading.Lock()
        board, api = context.board, spec.fi_api
        self.tick_hit = board.ticker(api, counters.HIT)
        self.tick_error = board.ticker(api, counters.ERROR)
        self.plan_table = plan_inputs_for(spec.owner) if spec.is_method else None
        self.instance = self.shape.parameters[0].name if spec.is_method and self.shape.parameters else None
        self.cache_layout_expr = (
            f"{PREFIX}layout({self.instance})"
            if self.templates and uses_cache_views(self.templates[0].template, spec.is_method, self.plan_table is not None)
            else None
        )
        self.plan_exprs, self.plan_globals = self._plan_sources()
        self.with_dtypes = False
        self._fallbacks: Dict[str, Callable] = {}
        self.miss = self.fallback(counters.FALLBACK_NO_CANDIDATE)
        self.capture_miss = self.fallback(counters.FALLBACK_UNWARMED_IN_CAPTURE)
        # Entries by index: the slow path hands back an int, which
        # torch.compile can take as a constant (see resolve_index).
        self.entries: List[Callable] = [self.miss, self.capture_miss]
        self.resolve_index = _constant_under_compile(self._resolve_index)

    # -- what this API could serve -------------------------------------
    def routable_names(self, names: List[str]) -> Tuple[List[str], List[str]]:
        """(names some routable template can produce, problems to report)."""
        ok: List[str] = []
        problems: List[str] = []
        for route in self.templates:
            hits = [n for n in names if could_produce(route.template, [n])]
            if not hits:
                continue
            if route.unroutable:
                problems.append(f"{self.spec.fi_api}: {route.unroutable}; not routed: {hits}")
            else:
                ok.extend(hits)
                problems.extend(self._constraints_on_unknown_axes(route, hits))
        self.with_dtypes = any(self.context.rules.get(n) and self.context.rules[n].dtypes for n in ok)
        return ok, problems

    def _constraints_on_unknown_axes(self, route: TemplateRoute, names: List[str]) -> List[str]:
        """A definition constraint over an axis FlashInfer's template does not
        have can never hold: every call would fall back. Say so at enable."""
        known = set(route.template.axes)
        problems = []
        for name in names:
            rules = self.context.rules.get(name)
            for c in (rules.const_constraints + rules.call_constraints) if rules else []:
                unknown = [a for a in c.axes if a not in known]
                if unknown:
                    problems.append(
                        f"{name}: constraint {c.text!r} reads {unknown}, which {self.spec.fi_api}'s template "
                        "has no axis for; it cannot hold, so these calls run the original"
                    )
        return problems

    # -- generated code --------------------------------------------------
    def _tensor_base(self, param: str, tuple_idx: Optional[int], memo: Dict[Tuple[str, int], str]) -> str:
        if tuple_idx is None:
            return param
        if param == CACHE_PARAM and self.cache_layout_expr:
            var = memo.get((param, tuple_idx))
            if var is not None:
                return var
            var = memo[(param, tuple_idx)] = f"{PREFIX}kv{tuple_idx}"
            common = f"{param}.__class__ is tuple and getattr({self.instance}, '_kv_layout', 'NHD') == 'NHD'"
            return (
                f"({var} := ({param}[{tuple_idx}] if {common} "
                f"else {PREFIX}nhd({self.cache_layout_expr}, {param}, {tuple_idx})))"
            )
        # A non-sequence indexes (), raising into the exact slow path.
        return f"({param} if {param}.__class__ in {PREFIX}seq else ())[{tuple_idx}]"

    def _fast_axis_expr(self, source: AxisSource, memo: Dict[Tuple[str, int], str]) -> Optional[str]:
        if source.kind == "fixed":
            return repr(source.value)
        if source.kind == "computed":
            return None  # FlashInfer's own function of the call: the exact (slow) path reads it
        if not self.shape.has(source.param):
            # Not an argument of this API: the collector reads None here,
            # unless the name is that of *args / **kwargs (slow path).
            return None if source.param in self.shape.names else "None"
        if source.kind == "scalar":
            return f"int({source.param})"
        return f"{self._tensor_base(source.param, source.tuple_idx, memo)}.shape[{source.dim}]"

    def _key_expr(self) -> Optional[str]:
        if self.selector is not None:
            return None
        route = self.templates[0]
        memo: Dict[Tuple[str, int], str] = {}
        exprs = [self._fast_axis_expr(s, memo) for s in route.sources]
        if self.with_dtypes:
            exprs += [f"{self._tensor_base(p, i, memo)}.dtype" for _, p, i in route.dtype_inputs]
        if any(e is None for e in exprs):
            return None
        if len(exprs) == 1:
            return exprs[0]
        return "(" + ", ".join(exprs) + ")"

    def _plan_sources(self) -> Tuple[Dict[str, str], Dict[str, Any]]:
        if not self.plan_table or not self.instance:
            return {}, {}
        reference = "q" if self.shape.has("q") else "None"
        exprs: Dict[str, str] = {}
        globals_: Dict[str, Any] = {}
        for key, spec in self.plan_table.items():
            if self.shape.has(key):
                continue
            fn_name = f"{PREFIX}plan_{key}"
            globals_[fn_name] = make_reader(self.context.recorder, key, spec)
            if spec.attr:
                # The instance attribute inline (the common case), the
                # reader (recorded plan() arguments, defaults) only when unset.
                var = f"{PREFIX}p_{key}"
                exprs[key] = (
                    f"({var} if ({var} := getattr({self.instance}, {spec.attr!r}, None)) is not None "
                    f"else {fn_name}({self.instance}, {reference}))"
                )
            else:
                exprs[key] = f"{fn_name}({self.instance}, {reference})"
        globals_[f"{PREFIX}layout"] = layout_of
        return exprs, globals_

    def fallback(self, status: str) -> Callable:
        """The entry that counts ``status`` and runs the original."""
        entry = self._fallbacks.get(status)
        if entry is None:
            tick = self.context.board.ticker(self.spec.fi_api, status)
            source = (
                f"def {PREFIX}{status}({self.shape.header(with_defaults=False)}):\n"
                f"    {PREFIX}tick()\n"
                f"    return {PREFIX}orig({self.shape.forward()})\n"
            )
            ns = {f"{PREFIX}tick": tick, f"{PREFIX}orig": self.spec.current}
            entry = compile_function(f"{PREFIX}{status}", source, ns, f"<trace_apply {status} {self.spec.fi_api}>")
            self._fallbacks[status] = entry
        return entry

    def _wrapper_source(self, hot: Sequence[str] = ()) -> str:
        """The wrapper: the key, then (``hot``: lines of one hit entry) that
        entry inline for its key, then the cache."""
        forward = self.shape.forward()
        key_expr = self._key_expr()
        lines = [f"def {self.spec.attr}({self.shape.header(with_defaults=True)}):"]
        if key_expr is None:
            lines.append(f"    {PREFIX}k = {PREFIX}slow_key({forward})")
        else:
            lines += [
                "    try:",
                f"        {PREFIX}k = {key_expr}",
                "    except Exception:",
                f"        {PREFIX}k = {PREFIX}slow_key({forward})",
            ]
        if hot:
            lines.append(f"    if {PREFIX}k == {PREFIX}hot_key:")
            lines += ["        " + line for line in hot]
        lines += [
            "    try:",
            f"        {PREFIX}e = {PREFIX}cache[{PREFIX}k]",
            "    except KeyError:",
            f"        {PREFIX}e = {PREFIX}entries[{PREFIX}resolve({PREFIX}k)]",
            f"    return {PREFIX}e({forward})",
        ]
        return "\n".join(lines) + "\n"

    def _inline_hot(self, key: Any, entry: Callable) -> None:
        """Run ``entry`` (the first hit this API resolved) inside the wrapper
        for its key: one Python frame and one dictionary lookup less per
        call. The wrapper keeps its identity (callers may hold it); its code
        is swapped. Skipped when names would clash."""
        body = getattr(entry, "__fita_hit_body__", None)
        wrapper = self.wrapper
        if body is None or wrapper is None or self.hot_key is not _NO_KEY:
            return
        if any(re.search(rf"\b{PREFIX}[ke]\b", line) for line in body.lines):
            return  # the wrapper's own locals
        space = wrapper.__globals__
        live = {name: entry.__globals__[name] for name in body.namespace}  # state the entry already keeps
        for name, value in live.items():
            if name in space and space[name] is not value and not (type(value) is tuple and space[name] == value):
                return
        source = self._wrapper_source(body.lines)
        scope = dict(space)
        scope.update(live)
        scope[f"{PREFIX}hot_key"] = key
        merged = compile_function(self.spec.attr, source, scope, f"<trace_apply {self.spec.fi_api}>")
        space.update(live)
        space[f"{PREFIX}hot_key"] = key
        body.spaces.append(space)
        self.hot_key = key
        wrapper.__code__ = merged.__code__
        wrapper.__fita_source__ = source

    def build_wrapper(self) -> Callable:
        ns = {
            f"{PREFIX}dflt": self.shape.defaults,
            f"{PREFIX}cache": self.cache,
            f"{PREFIX}slow_key": self.slow_key,
            f"{PREFIX}resolve": self.resolve_index,
            f"{PREFIX}entries": self.entries,
            f"{PREFIX}seq": (tuple, list),
            f"{PREFIX}nhd": nhd_view,
            f"{PREFIX}layout": layout_of,
        }
        wrapper = compile_function(self.spec.attr, self._wrapper_source(), ns, f"<trace_apply {self.spec.fi_api}>")
        functools.update_wrapper(wrapper, self.spec.current)
        wrapper.__fita_route__ = self
        self.wrapper = wrapper
        return wrapper

    # -- slow paths ---------------------------------------------------------
    def namespace(self, args: tuple, kwargs: dict) -> Dict[str, Any]:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        ns = dict(bound.arguments)
        if self.cache_layout_expr and CACHE_PARAM in ns:
            layout = layout_of(ns.get(self.instance))
            cache = ns[CACHE_PARAM]
            ns[CACHE_PARAM] = (nhd_view(layout, cache, 0), nhd_view(layout, cache, 1))
        return ns

    def _key_from(self, route: TemplateRoute, ns: Dict[str, Any]) -> tuple:
        values = tuple(s.read(ns) for s in route.sources)
        if self.with_dtypes:
            values += tuple(_dtype_of(ns, p, i) for _, p, i in route.dtype_inputs)
        return values

    def slow_key(self, *args: Any, **kwargs: Any) -> Any:
        """The key with the collector's exact semantics (first call for a
        shape, odd argument types, APIs whose template is chosen per call)."""
        ns = self.namespace(args, kwargs)
        if self.selector is None:
            values = self._key_from(self.templates[0], ns)
            return values[0] if len(values) == 1 else values
        template = self.selector(save_dir=None, name=None, **ns)
        for index, route in enumerate(self.templates):
            if route.template is template:
                return (index, self._key_from(route, ns))
        return (-1, ())

    def _split(self, key: Any) -> Tuple[Optional[TemplateRoute], tuple, tuple]:
        """(template route, const-axis values, dtypes) of a key."""
        if self.selector is None:
            route = self.templates[0]
            values = key if isinstance(key, tuple) else (key,)
        else:
            index, values = key
            if index < 0:
                return None, (), ()
            route = self.templates[index]
        n = len(route.sources)
        return route, tuple(values[:n]), tuple(values[n:])

    def name_for(self, key: Any) -> Tuple[Optional[TemplateRoute], Optional[str]]:
        route, values, _ = self._split(key)
        if route is None:
            return None, None
        return route, definition_name(route.template, route.sources, values)

    def _resolve_index(self, key: Any) -> int:
        """Index in ``self.entries`` of the entry for ``key``, built on first use."""
        entry = self.cache.get(key)
        if entry is None:
            if is_capturing():
                # Building a solution during capture would record its set-up
                # work into the graph; only shapes resolved eagerly are applied.
                return 1
            with self._lock:
                entry = self.cache.get(key)
                if entry is None:
                    entry = self._build_entry(key)
                    if entry not in self.entries:
                        self.entries.append(entry)
                    self.cache[key] = entry
                    self._inline_hot(key, entry)
        return self.entries.index(entry)

    def _build_entry(self, key: Any) -> Callable:
        route, values, dtypes = self._split(key)
        if route is None or route.unroutable:
            return self.miss
        name = definition_name(route.template, route.sources, values)
        value = self.solutions.get(name)
        if value is None:
            return self.miss
        self.context.fired.add(name)
        hardware = self.context.hardware.get(name)
        if hardware is not None and not hardware.allows(self.context.sm):
            return self.fallback(counters.FALLBACK_UNSUPPORTED_ARCH)
        rules = self.context.rules.get(name)
        guard = None
        if rules is not None:
            if not self._dtypes_allowed(route, rules, dtypes):
                return self.fallback(counters.FALLBACK_DTYPE_MISMATCH)
            const_values = {s.axis: v for s, v in zip(route.sources, values)}
            if not all(_holds(c, const_values) for c in rules.const_constraints):
                return self.fallback(counters.FALLBACK_CONSTRAINT)
            guard = self._call_guard(route, rules, const_values)
        try:
            loaded = loaders.load(value, name)
            return reconcile.build_hit_entry(
                fi_api=self.spec.fi_api,
                definition=name,
                template=route.template,
                shape=self.shape,
                convention=route.convention,
                inputs=self._inputs(route),
                loaded=loaded,
                tick_hit=self.tick_hit,
                tick_error=self.tick_error,
                is_method=self.spec.is_method,
                allocate=self._allocator(route),
                extra_globals=self.plan_globals,
                guard=guard,
                report_unaccepted=functools.partial(self.context.report_unaccepted, self.spec.fi_api),
                prelude=[reconcile.cache_prelude(self.instance)] if self.cache_layout_expr else [],
            )
        except SolutionLoadError as exc:
            self.tick_error()
            raise SolutionLoadError(f"Trace Apply: {self.spec.fi_api}: {exc}") from exc.__cause__
        except TraceApplyError as exc:
            self.tick_error()
            raise type(exc)(f"Trace Apply: {self.spec.fi_api}: {exc}") from exc

    def _dtypes_allowed(self, route: TemplateRoute, rules: DefinitionRules, dtypes: tuple) -> bool:
        if not rules.dtypes or not dtypes:
            return True
        for (key, _, _), dtype in zip(route.dtype_inputs, dtypes):
            allowed = rules.dtypes.get(key)
            if allowed and torch_dtype_name(dtype) not in allowed:
                return False
        return True

    def _call_guard(self, route: TemplateRoute, rules: DefinitionRules, const_values: Dict[str, Any]) -> Optional[reconcile.CallGuard]:
        """Code for the constraints that need per-call axes (batch sizes,
        lengths): each axis read off the shape of an input carrying it."""
        if not rules.call_constraints:
            return None
        inputs = {src.key: src for src in self._inputs(route)}
        assignments: List[str] = []
        for axis in dict.fromkeys(a for c in rules.call_constraints for a in c.axes):
            if axis in const_values:
                assignments.append(f"{PREFIX}ax_{axis} = {const_values[axis]!r}")
                continue
            expr = self._axis_from_inputs(route, axis, inputs)
            if expr is None:
                return None  # reported at enable as not checkable per call
            assignments.append(f"{PREFIX}ax_{axis} = {expr}")
        condition = " and ".join(f"({c.source})" for c in rules.call_constraints)
        return reconcile.CallGuard(tuple(assignments), condition, self.fallback(counters.FALLBACK_CONSTRAINT))

    def _axis_from_inputs(self, route: TemplateRoute, axis: str, inputs: Dict[str, reconcile.InputSource]) -> Optional[str]:
        from flashinfer.trace.template import Tensor  # noqa: PLC0415

        for key, desc in route.template.inputs.items():
            if isinstance(desc, Tensor) and axis in desc.dim_names and key in inputs and inputs[key].expr != "None":
                return f"{inputs[key].expr}.shape[{list(desc.dim_names).index(axis)}]"
        return None

    def _inputs(self, route: TemplateRoute) -> List[reconcile.InputSource]:
        return reconcile.input_sources(route.template, self.shape, self.plan_exprs, self.cache_layout_expr)

    def _allocator(self, route: TemplateRoute) -> Callable[..., List[Any]]:
        from .allocate import make_allocator  # noqa: PLC0415

        return make_allocator(route.template, route.convention)


def _holds(constraint: Any, values: Dict[str, Any]) -> bool:
    try:
        return evaluate(constraint, values)
    except Exception:  # noqa: BLE001 - an axis the call lacks: not satisfied
        return False


def _dtype_of(ns: Dict[str, Any], param: str, tuple_idx: Optional[int]) -> Any:
    value = ns.get(param)
    if tuple_idx is not None:
        value = value[tuple_idx] if isinstance(value, (tuple, list)) and len(value) > tuple_idx else None
    return getattr(value, "dtype", None)
