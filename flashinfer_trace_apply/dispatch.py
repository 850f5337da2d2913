"""The per-API wrapper: const axes -> cached entry -> solution or original.

Everything that can be decided once per API is decided in :class:`ApiRoute`
when the API is wrapped: which template names the call, where each const
axis is read from, where plan-time inputs come from. The generated wrapper
then does, per call, a few attribute reads to form the shape key, one dict
lookup, and one call of the entry cached for that key (the solution's
prepared call on a hit, the original on a miss). The first call for a new
key takes the slow path (exact binding, template selection, solution load)
under a lock; the hit and miss paths take none.
"""

from __future__ import annotations

import functools
import inspect
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

from . import loaders, reconcile
from .axes import AxisSource, const_axis_sources, definition_name
from .codegen import PREFIX, CallShape, compile_function
from .errors import SolutionLoadError, TraceApplyError
from .plan_state import PlanRecorder, make_reader, plan_inputs_for
from .registry import ApiSpec, could_produce
from .counters import ERROR, FALLBACK_NO_CANDIDATE, FALLBACK_UNWARMED_IN_CAPTURE, HIT, StatsBoard


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


class TemplateRoute:
    """One template of an API, with its naming sources and output plan."""

    def __init__(self, template: Any, shape: CallShape, api_fn: Callable) -> None:
        self.template = template
        self.sources: List[AxisSource] = const_axis_sources(template)
        self.unroutable: Optional[str] = None
        try:
            self.convention = reconcile.plan_outputs(template, shape, api_fn)
        except TraceApplyError as exc:
            self.convention = None
            self.unroutable = str(exc)

    def key_of(self, values: tuple) -> Any:
        return values[0] if len(values) == 1 else values

    def values_of(self, key: Any) -> tuple:
        return (key,) if len(self.sources) == 1 else tuple(key)


class ApiRoute:
    def __init__(
        self,
        spec: ApiSpec,
        solutions: Mapping[str, Any],
        board: StatsBoard,
        recorder: PlanRecorder,
        fired: Set[str],
    ) -> None:
        self.spec = spec
        self.solutions = solutions
        self.fired = fired
        self.recorder = recorder
        self.signature = inspect.signature(spec.current)
        self.shape = CallShape(self.signature)
        self.templates = [TemplateRoute(t, self.shape, spec.current) for t in spec.templates]
        self.selector = spec.selector if len(spec.templates) > 1 or spec.selector is not None else None
        self.cache: Dict[Any, Callable] = {}
        self._lock = threading.Lock()
        api = spec.fi_api
        self.tick_hit = board.ticker(api, HIT)
        self.tick_miss = board.ticker(api, FALLBACK_NO_CANDIDATE)
        self.tick_capture = board.ticker(api, FALLBACK_UNWARMED_IN_CAPTURE)
        self.tick_error = board.ticker(api, ERROR)
        self.plan_exprs, self.plan_globals = self._plan_sources()
        self.miss = self._passthrough(self.tick_miss, "miss")
        self.capture_miss = self._passthrough(self.tick_capture, "capture")
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
        return ok, problems

    # -- generated code --------------------------------------------------
    def _fast_axis_expr(self, source: AxisSource) -> Optional[str]:
        if source.kind == "fixed":
            return repr(source.value)
        if not self.shape.has(source.param):
            # Not an argument of this API: the collector reads None here,
            # unless the name is that of *args / **kwargs (slow path).
            if source.param in self.shape.names:
                return None
            return "None"
        if source.kind == "scalar":
            return f"int({source.param})"
        base = source.param
        if source.tuple_idx is not None:
            # A non-sequence indexes (), raising into the exact slow path.
            base = f"({base} if {base}.__class__ in {PREFIX}seq else ())[{source.tuple_idx}]"
        return f"{base}.shape[{source.dim}]"

    def _key_expr(self) -> Optional[str]:
        if self.selector is not None:
            return None
        exprs = [self._fast_axis_expr(s) for s in self.templates[0].sources]
        if any(e is None for e in exprs):
            return None
        if len(exprs) == 1:
            return exprs[0]
        return "(" + ", ".join(exprs) + ("," if len(exprs) == 1 else "") + ")"

    def _plan_sources(self) -> Tuple[Dict[str, str], Dict[str, Any]]:
        if not self.spec.is_method:
            return {}, {}
        table = plan_inputs_for(self.spec.owner)
        if not table or not self.shape.parameters:
            return {}, {}
        instance = self.shape.parameters[0].name
        reference = "q" if self.shape.has("q") else "None"
        exprs: Dict[str, str] = {}
        globals_: Dict[str, Any] = {}
        for key, spec in table.items():
            if self.shape.has(key):
                continue
            fn_name = f"{PREFIX}plan_{key}"
            globals_[fn_name] = make_reader(self.recorder, key, spec)
            if spec.attr:
                # The instance attribute inline (the common case), the
                # reader (recorded plan() arguments, defaults) only when unset.
                var = f"{PREFIX}p_{key}"
                exprs[key] = (
                    f"({var} if ({var} := getattr({instance}, {spec.attr!r}, None)) is not None "
                    f"else {fn_name}({instance}, {reference}))"
                )
            else:
                exprs[key] = f"{fn_name}({instance}, {reference})"
        return exprs, globals_

    def _passthrough(self, tick: Callable[[], int], kind: str) -> Callable:
        forward = self.shape.forward()
        source = (
            f"def {PREFIX}{kind}({self.shape.header(with_defaults=False)}):\n"
            f"    {PREFIX}tick()\n"
            f"    return {PREFIX}orig({forward})\n"
        )
        ns = {f"{PREFIX}tick": tick, f"{PREFIX}orig": self.spec.current}
        return compile_function(f"{PREFIX}{kind}", source, ns, f"<trace_apply {kind} {self.spec.fi_api}>")

    def build_wrapper(self) -> Callable:
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
        lines += [
            "    try:",
            f"        {PREFIX}e = {PREFIX}cache[{PREFIX}k]",
            "    except KeyError:",
            f"        {PREFIX}e = {PREFIX}entries[{PREFIX}resolve({PREFIX}k)]",
            f"    return {PREFIX}e({forward})",
        ]
        ns = {
            f"{PREFIX}dflt": self.shape.defaults,
            f"{PREFIX}cache": self.cache,
            f"{PREFIX}slow_key": self.slow_key,
            f"{PREFIX}resolve": self.resolve_index,
            f"{PREFIX}entries": self.entries,
            f"{PREFIX}seq": (tuple, list),
        }
        wrapper = compile_function(self.spec.attr, "\n".join(lines) + "\n", ns, f"<trace_apply {self.spec.fi_api}>")
        functools.update_wrapper(wrapper, self.spec.current)
        wrapper.__fita_route__ = self
        return wrapper

    # -- slow paths ---------------------------------------------------------
    def namespace(self, args: tuple, kwargs: dict) -> Dict[str, Any]:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def slow_key(self, *args: Any, **kwargs: Any) -> Any:
        """The key with the collector's exact semantics (first call for a
        shape, odd argument types, APIs whose template is chosen per call)."""
        ns = self.namespace(args, kwargs)
        if self.selector is None:
            route = self.templates[0]
            return route.key_of(tuple(s.read(ns) for s in route.sources))
        template = self.selector(save_dir=None, name=None, **ns)
        for index, route in enumerate(self.templates):
            if route.template is template:
                return (index, tuple(s.read(ns) for s in route.sources))
        return (-1, ())

    def name_for(self, key: Any) -> Tuple[Optional[TemplateRoute], Optional[str]]:
        if self.selector is None:
            route = self.templates[0]
            values = route.values_of(key)
        else:
            index, values = key
            if index < 0:
                return None, None
            route = self.templates[index]
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
                    if entry is not self.miss:
                        self.entries.append(entry)
                    self.cache[key] = entry
        return 0 if entry is self.miss else self.entries.index(entry)

    def resolve(self, key: Any) -> Callable:
        return self.entries[self.resolve_index(key)]

    def _build_entry(self, key: Any) -> Callable:
        route, name = self.name_for(key)
        if route is None or name is None or route.unroutable:
            return self.miss
        value = self.solutions.get(name)
        if value is None:
            return self.miss
        self.fired.add(name)
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
            )
        except SolutionLoadError as exc:
            self.tick_error()
            raise SolutionLoadError(f"Trace Apply: {self.spec.fi_api}: {exc}") from exc.__cause__
        except TraceApplyError as exc:
            self.tick_error()
            raise type(exc)(f"Trace Apply: {self.spec.fi_api}: {exc}") from exc

    def _inputs(self, route: TemplateRoute) -> List[reconcile.InputSource]:
        sources = reconcile.input_sources(route.template, self.shape, self.plan_exprs)
        return sources

    def _allocator(self, route: TemplateRoute) -> Callable[..., List[Any]]:
        from .allocate import make_allocator  # noqa: PLC0415

        return make_allocator(route.template, route.convention)
