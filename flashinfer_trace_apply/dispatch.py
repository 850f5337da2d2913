"""The per-API wrapper: shape key -> cached entry -> solution or original.

Everything that can be decided once per API is decided in :class:`ApiRoute`
when the API is wrapped: which template names the call, where each const
axis is read from, where plan-time inputs come from, whether dtypes take
part in routing. The generated wrapper then does, per call, a few attribute
reads to form the shape key, one dict lookup, and one call of the entry
cached for that key: the prepared solution call on a hit, the original (and
its counter) otherwise. The first call for a new key takes the slow path
(exact binding, template selection, dtype / hardware / constraint checks,
solution load) under a lock; the hit and miss paths take none. Key text
comes from ``keys``, hit entries from ``hit_entry``.
"""

from __future__ import annotations

import functools
import inspect
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

from . import counters, loaders, reconcile
from .axes import AxisSource, const_axis_sources, definition_name
from .codegen import PREFIX, CallShape, compile_function
from .compile_marks import constant_under_compile
from .definitions import DefinitionRules, evaluate, torch_dtype_name
from .errors import SolutionLoadError, TraceApplyError
from .hardware import HardwareSupport
from .hit_entry import EntryParts, InsideSolution, build_hit_entry
from .keys import ATOMS, INLINE_CHOICES, OTHER_RANK, KeyCode, dtype_of, selector_reads, selector_type_only, summary
from .layout import CACHE_PARAM, layout_of, nhd_view, uses_cache_views
from .plan_state import PlanRecorder, make_reader, plan_inputs_for
from .registry import ApiSpec, could_produce

# Fixed slots of ApiRoute.entries (the slow path hands back an index).
MISS, CAPTURE_MISS, INSIDE_MISS = 0, 1, 2
# Distinct selector keys whose template choice is remembered; past this
# (e.g. a float the selector reads, different on every call) the choice is
# made by the exact slow path each time instead of growing without bound.
MAX_CHOICES = 256


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
        # (API, argument, value, solution label): tell the user, once per API
        # and argument, that such calls run the original kernel.
        report_unaccepted: Callable[[str, str, Any, str], Any],
        policies: Optional[Mapping[str, Any]] = None,
        health: Optional[Any] = None,
        workloads: Optional[Any] = None,
    ) -> None:
        self.solutions = solutions
        self.rules = rules
        self.hardware = hardware
        self.sm = sm
        self.board = board
        self.recorder = recorder
        self.fired = fired
        self.report_unaccepted = report_unaccepted
        # Definitions under an operating policy (verify, on_error: fallback)
        # and their health; the others get plain hit entries.
        self.policies = policies or {}
        if health is None:
            from .definition_state import HealthBoard  # noqa: PLC0415

            health = HealthBoard()
        self.health = health
        self.workloads = workloads  # a WorkloadBook while call shapes are recorded

    @classmethod
    def plain(cls, solutions: Mapping[str, Any]) -> "RoutingContext":
        """No definitions, no hardware filter, silent: for tools and tests."""
        return cls(solutions, {}, {}, None, counters.StatsBoard(), PlanRecorder(), set(), lambda *_: None)


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
        self.shape_reads: Dict[str, str] = {}  # set by ApiRoute (parameter -> wrapper local)
        self.dtype_inputs: List[Tuple[str, str, Optional[int]]] = [
            (key, d.param if d.param is not None else key, d.tuple_idx)
            for key, d in template.inputs.items()
            if isinstance(d, Tensor) and not d.optional and shape.has(d.param if d.param is not None else key)
        ]


class ApiRoute:
    """One wrapped API: its wrapper, the entry cached per shape key, and the
    slow path that builds entries."""

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
        self._lock = threading.Lock()
        # True on a thread while it loads or runs this API's solution: a call
        # of this API from there reaches the original (checked on the slow
        # path and at the top of each hit entry).
        self.inside = InsideSolution()
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
        self.keys = KeyCode(self.shape, self.instance, self.cache_layout_expr)
        # Shapes the inline key reads, handed on to every entry after the
        # call's parameters (None when the key took the slow path): a hit
        # entry checks its results against them instead of reading them again.
        for route in self.templates:
            route.shape_reads = self.keys.shape_reads(route.sources)
        self.shape_vars = list(dict.fromkeys(v for route in self.templates for v in route.shape_reads.values()))
        self.extra_header = "".join(f", {v}=None" for v in self.shape_vars)
        self.extra_forward = "".join(f", {v}" for v in self.shape_vars)
        self.shape.reserve(len(self.shape_vars))
        self.unpack = "".join(f"    {line}\n" for line in self.shape.entry_unpack())
        # Selector APIs: the arguments the selector reads (None: unknown, so
        # every call binds), and the template chosen per selector key.
        self.selector_reads = selector_reads(self.selector) if self.selector is not None else None
        if self.selector_reads is not None:
            self.keys.type_only = frozenset(selector_type_only(self.selector))
        self.selector_args = self.keys.selector_args(self.selector_reads) if self.selector_reads is not None else None
        self.choices: Dict[Any, int] = {}
        self.plan_exprs, self.plan_globals = self._plan_sources()
        self.with_dtypes = False
        self._fallbacks: Dict[str, Callable] = {}
        # Entries by index: the slow path hands back an int, which
        # torch.compile can take as a constant (see resolve_index).
        self.entries: List[Callable] = [
            self.fallback(counters.FALLBACK_NO_CANDIDATE),
            self.fallback(counters.FALLBACK_UNWARMED_IN_CAPTURE),
            self.fallback(counters.FALLBACK_INSIDE_SOLUTION),
        ]
        self.miss = self.entries[MISS]
        self.miss_tick = self.context.board.ticker(spec.fi_api, counters.FALLBACK_NO_CANDIDATE)

        def resolve_index(key: Any) -> int:  # a plain function: it can carry the compile mark
            return self._resolve_index(key)

        self.resolve_index = constant_under_compile(resolve_index)

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
    def _template_values(self, route: TemplateRoute) -> Optional[List[str]]:
        return self.keys.values_expr(route.sources, route.dtype_inputs if self.with_dtypes else ())

    def _key_lines(self) -> List[str]:
        """Wrapper lines setting ``_fita_k``; anything odd takes the exact slow key."""
        forward = self.shape.forward()
        unset = [f"{' = '.join(self.shape_vars)} = None"] if self.shape_vars else []
        slow = f"{PREFIX}k = {PREFIX}slow_key({forward})"
        if self.selector is None:
            values = self._template_values(self.templates[0])
            if values is None:
                return unset + [slow]
            key = values[0] if len(values) == 1 else "(" + ", ".join(values) + ")"
            return ["try:", f"    {PREFIX}k = {key}", "except Exception:", *("    " + u for u in unset), f"    {slow}"]
        if self.selector_args is None:
            return unset + [slow]
        # The template the selector chose for this selector key (KeyError:
        # not seen yet, the slow key asks the selector), then its key.
        # A branch sets only its template's shapes: the others stay None.
        lines = unset + ["try:", f"    {PREFIX}t = {PREFIX}choose({', '.join(self.selector_args)})"]
        for index, route in enumerate(self.templates):
            values = self._template_values(route)
            key = f"({index}, " + "".join(v + ", " for v in values) + ")" if values is not None else None
            lines.append(f"    {'if' if index == 0 else 'elif'} {PREFIX}t == {index}: " + (f"{PREFIX}k = {key}" if key else slow))
        lines += [f"    else: {PREFIX}k = (-1,)", "except Exception:", *("    " + u for u in unset), f"    {slow}"]
        return lines

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
            call, ns = self._call_original()
            source = (
                f"def {PREFIX}{status}({self.shape.entry_header()}{self.extra_header}):\n"
                f"{self.unpack}"
                f"    {PREFIX}tick()\n"
                f"{call}"
            )
            ns[f"{PREFIX}tick"] = tick
            entry = compile_function(f"{PREFIX}{status}", source, ns, f"<trace_apply {status} {self.spec.fi_api}>")
            self._fallbacks[status] = entry
        return entry

    def _call_original(self) -> Tuple[str, Dict[str, Any]]:
        """Function-body lines returning the original called with every
        parameter (see ``CallShape.return_call``), and their globals."""
        lines, ns = self.shape.return_call(f"{PREFIX}orig")
        ns[f"{PREFIX}orig"] = self.spec.current
        return "".join("    " + line + "\n" for line in lines), ns

    def _choose_function(self) -> Callable:
        """The selector's choice per call, from the choices learned so far
        (see ``KeyCode.choose_source``)."""
        ns: Dict[str, Any] = {f"{PREFIX}choices": self.choices, f"{PREFIX}atoms": ATOMS, f"{PREFIX}T": _tensor_type(),
                              f"{PREFIX}summary": summary}
        source = self.keys.choose_source(self.selector_args or [], list(self.choices.items()), ns)
        return compile_function(f"{PREFIX}choose", source, ns, f"<trace_apply selector {self.spec.fi_api}>")

    def _learn_choice(self, facts: tuple, index: int) -> None:
        """Remember the selector's choice for ``facts``; the first few learned
        become inline tests in the wrapper's ``_fita_choose``."""
        if facts in self.choices or len(self.choices) >= MAX_CHOICES:
            return
        self.choices[facts] = index
        wrapper = self.wrapper
        if wrapper is not None and self.selector_args is not None and len(self.choices) <= INLINE_CHOICES:
            wrapper.__globals__[f"{PREFIX}choose"] = self._choose_function()

    def _wrapper_source(self, miss_call: List[str]) -> str:
        """The wrapper: the key, one dictionary lookup, the entry
        (``miss_call``: the lines returning the original, from ``return_call``)."""
        lines = [f"def {self.spec.attr}({self.shape.header(with_defaults=True)}):"]
        lines += ["    " + line for line in self._key_lines()]
        lines += [
            "    try:",
            f"        {PREFIX}e = {PREFIX}cache[{PREFIX}k]",
            "    except KeyError:",
            f"        {PREFIX}e = {PREFIX}entries[{PREFIX}resolve({PREFIX}k)]",
            # No candidate: the original straight from here (one call fewer).
            f"    if {PREFIX}e is {PREFIX}miss:",
            f"        {PREFIX}miss_tick()",
            *("        " + line for line in miss_call),
            f"    return {PREFIX}e({self.shape.entry_forward()}{self.extra_forward})",
        ]
        return "\n".join(lines) + "\n"

    def build_wrapper(self) -> Callable:
        miss_call, miss_globals = self.shape.return_call(f"{PREFIX}orig")
        ns = {
            f"{PREFIX}dflt": self.shape.defaults,
            f"{PREFIX}cache": self.cache,
            f"{PREFIX}choose": self._choose_function() if self.selector_args is not None else None,
            f"{PREFIX}slow_key": self.slow_key,
            f"{PREFIX}resolve": self.resolve_index,
            f"{PREFIX}entries": self.entries,
            f"{PREFIX}miss": self.miss,
            f"{PREFIX}miss_tick": self.miss_tick,
            f"{PREFIX}orig": self.spec.current,
            f"{PREFIX}seq": (tuple, list),
            f"{PREFIX}atoms": ATOMS,
            f"{PREFIX}other_rank": OTHER_RANK,
            f"{PREFIX}summary": summary,
            f"{PREFIX}T": _tensor_type(),
            f"{PREFIX}nhd": nhd_view,
            f"{PREFIX}layout": layout_of,
            **miss_globals,
        }
        wrapper = compile_function(self.spec.attr, self._wrapper_source(miss_call), ns, f"<trace_apply {self.spec.fi_api}>")
        functools.update_wrapper(wrapper, self.spec.current)
        wrapper.__fita_route__ = self
        self.wrapper = wrapper
        return wrapper

    def retire(self) -> None:
        """After disable: a wrapper someone still holds behaves as the
        original (no routing, no counting) and keeps nothing of the session
        alive (solutions, entries, this route)."""
        wrapper, self.wrapper = self.wrapper, None
        self.cache.clear()
        self.choices.clear()
        if wrapper is None:
            return
        call, ns = self._call_original()
        source = f"def {PREFIX}original({self.shape.entry_header()}{self.extra_header}):\n{self.unpack}{call}"
        passthrough = compile_function(f"{PREFIX}original", source, ns, "<trace_apply retired>")
        space = wrapper.__globals__
        space[f"{PREFIX}entries"] = (passthrough,)
        space[f"{PREFIX}resolve"] = _first_entry
        space[f"{PREFIX}slow_key"] = _no_key
        space[f"{PREFIX}cache"] = {}
        space[f"{PREFIX}choose"] = _no_choice
        space[f"{PREFIX}miss"] = space[f"{PREFIX}miss_tick"] = None
        wrapper.__dict__.pop("__fita_route__", None)

    # -- slow paths ---------------------------------------------------------
    def _bind(self, args: tuple, kwargs: dict) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """(the call's arguments by name, the same with a paged cache as
        NHD views: what templates read)."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        raw = dict(bound.arguments)
        ns = raw
        if self.cache_layout_expr and CACHE_PARAM in raw:
            layout = layout_of(raw.get(self.instance))
            cache = raw[CACHE_PARAM]
            ns = dict(raw)
            ns[CACHE_PARAM] = (nhd_view(layout, cache, 0), nhd_view(layout, cache, 1))
        return raw, ns

    def namespace(self, args: tuple, kwargs: dict) -> Dict[str, Any]:
        return self._bind(args, kwargs)[1]

    def _key_from(self, route: TemplateRoute, ns: Dict[str, Any]) -> tuple:
        values = tuple(s.read(ns) for s in route.sources)
        if self.with_dtypes:
            values += tuple(dtype_of(ns, p, i) for _, p, i in route.dtype_inputs)
        return values

    def slow_key(self, *args: Any, **kwargs: Any) -> Any:
        """The key with the collector's exact semantics (first call for a
        shape or a selector key, odd argument types)."""
        raw, ns = self._bind(args, kwargs)
        if self.selector is None:
            values = self._key_from(self.templates[0], ns)
            return values[0] if len(values) == 1 else values
        template = self.selector(save_dir=None, name=None, **ns)
        index = next((i for i, route in enumerate(self.templates) if route.template is template), -1)
        if self.selector_reads is not None:
            try:
                self._learn_choice(self.keys.selector_key_slow(self.selector_reads, raw), index)
            except TypeError:
                pass  # an unhashable argument: this call stays on the slow path
        return (index, *self._key_from(self.templates[index], ns)) if index >= 0 else (-1,)

    def _split(self, key: Any) -> Tuple[Optional[TemplateRoute], tuple, tuple]:
        """(template route, const-axis values, dtypes) of a key."""
        if self.selector is None:
            route = self.templates[0]
            values = key if isinstance(key, tuple) else (key,)
        else:
            index, values = key[0], key[1:]
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
            inside = self.inside.flag
            if inside[0]:
                # This thread is loading this API's solution, whose import
                # called the API: the original runs (no lock taken, none held
                # by this thread is waited on).
                return INSIDE_MISS
            if is_capturing():
                # Building a solution during capture would record its set-up
                # work into the graph; only shapes resolved eagerly are applied.
                return CAPTURE_MISS
            with self._lock:
                entry = self.cache.get(key)
                if entry is None:
                    inside[0] = True
                    try:
                        entry = self._build_entry(key)
                    finally:
                        inside[0] = False
                    if entry not in self.entries:
                        self.entries.append(entry)
                    self.cache[key] = entry
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
        const_values = {s.axis: v for s, v in zip(route.sources, values)}
        guard = None
        if rules is not None:
            if not self._dtypes_allowed(route, rules, dtypes):
                return self.fallback(counters.FALLBACK_DTYPE_MISMATCH)
            if not all(_holds(c, const_values) for c in rules.const_constraints):
                return self.fallback(counters.FALLBACK_CONSTRAINT)
            guard = self._call_guard(route, rules, const_values)
        policy = self.context.policies.get(name)
        try:
            loaded = loaders.load(value, name)
            report = self.context.report_unaccepted

            def build(tick_hit: Callable[[], Any]) -> Callable:
                return build_hit_entry(EntryParts(
                    fi_api=self.spec.fi_api,
                    definition=name,
                    template=route.template,
                    shape=self.shape,
                    convention=route.convention,
                    inputs=self._inputs(route),
                    loaded=loaded,
                    tick_hit=tick_hit,
                    tick_error=self.tick_error,
                    inside=self.inside,
                    inside_fallback=self.entries[INSIDE_MISS],
                    unaccepted_fallback=self.fallback(counters.FALLBACK_UNACCEPTED_ARGUMENT),
                    report_unaccepted=functools.partial(report, self.spec.fi_api),
                    is_method=self.spec.is_method,
                    allocate=self._allocator(route),
                    extra_globals=self.plan_globals,
                    guard=guard,
                    prelude=[reconcile.cache_prelude(self.instance)] if self.cache_layout_expr else [],
                    const_values=const_values,
                    shape_reads=route.shape_reads,
                    extra_header=self.extra_header,
                ))

            hit = build(self.tick_hit)
            # Verification runs the solution on copies, for a caller who gets
            # the original's results: not a hit.
            trial = build(_no_tick) if policy is not None and policy.verify > 0 else hit
        except SolutionLoadError as exc:
            self.tick_error()
            raise SolutionLoadError(f"Trace Apply: {self.spec.fi_api}: {exc}") from exc.__cause__
        except TraceApplyError as exc:
            self.tick_error()
            raise type(exc)(f"Trace Apply: {self.spec.fi_api}: {exc}") from exc
        entry = self._guarded(hit, trial, name, key, policy) if policy is not None and policy.active else hit
        if self.context.workloads is not None:
            from .workloads import recording_entry  # noqa: PLC0415

            entry = recording_entry(
                entry, book=self.context.workloads, definition=name, template=route.template,
                namespace=self._entry_namespace, step_aside=lambda inner: self._promote(key, inner),
            )
        return entry

    # -- operating policies (verify, fallback on error) -------------------------
    def _entry_namespace(self, args: tuple, kwargs: dict) -> Dict[str, Any]:
        """Parameter name -> value of a call as entries receive it (every
        parameter positional: see CallShape.entry_header)."""
        return self.shape.entry_arguments(args)

    def _original_entry(self) -> Callable:
        """An entry that runs the original and counts nothing (the guarded
        entries count for themselves)."""
        entry = self._fallbacks.get(None)
        if entry is None:
            call, ns = self._call_original()
            source = f"def {PREFIX}original({self.shape.entry_header()}{self.extra_header}):\n{self.unpack}{call}"
            entry = compile_function(f"{PREFIX}original", source, ns, f"<trace_apply original {self.spec.fi_api}>")
            self._fallbacks[None] = entry
        return entry

    def _promote(self, key: Any, entry: Callable) -> None:
        """Serve ``key`` with ``entry`` from now on (the wrapper reads the
        cache on every call; ``entries`` keeps indices valid for compile)."""
        with self._lock:
            if entry not in self.entries:
                self.entries.append(entry)
            self.cache[key] = entry

    def _guarded(self, hit: Callable, trial: Callable, name: str, key: Any, policy: Any) -> Callable:
        from . import guarded  # noqa: PLC0415

        health = self.context.health.get(name, policy.breaker)
        off = self.fallback(guarded.FALLBACK_TURNED_OFF)
        tickers: Dict[str, Callable] = {}

        def tick(status: str) -> None:
            ticker = tickers.get(status)
            if ticker is None:
                ticker = tickers[status] = self.context.board.ticker(self.spec.fi_api, status)
            ticker()

        def promote(entry: Callable) -> None:
            self._promote(key, entry)
            health.add_demoter(lambda: self._promote(key, off))

        return guarded.guarded_entry(
            hit=hit, trial=trial, original=self._original_entry(), policy=policy, health=health, api=self.spec.fi_api,
            tick=tick, promote=promote, off_entry=off, is_capturing=is_capturing,
        )

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


def _tensor_type() -> type:
    import torch  # noqa: PLC0415

    return torch.Tensor


def _first_entry(key: Any) -> int:
    return 0


def _no_key(*args: Any, **kwargs: Any) -> None:
    return None


def _no_choice(*args: Any) -> int:
    raise KeyError("retired")  # the wrapper's slow key, retired too, takes over


def _no_tick() -> None:
    return None


def _holds(constraint: Any, values: Dict[str, Any]) -> bool:
    try:
        return evaluate(constraint, values)
    except Exception:  # noqa: BLE001 - an axis the call lacks: not satisfied
        return False
