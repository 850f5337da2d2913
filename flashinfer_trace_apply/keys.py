"""The shape key of a call: source text that reads it inline, and the exact
(slow) reading by signature binding.

A call's key is what names its definition: the values of the template's
const axes (read off argument shapes), plus input dtypes when some
definition states dtypes. For an API that chooses its template per call,
the key starts with the chosen template's index; the choice is cached per
*selector key*: the arguments the selector reads, tensors summarized by
type, dtype and rank (selectors choose by these, never by sizes or data),
and an argument the selector only tests for its type by its class alone.
"""

from __future__ import annotations

import ast
import builtins
import enum
import inspect
import textwrap
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from .axes import AxisSource
from .codegen import PREFIX, CallShape
from .layout import CACHE_PARAM

P = PREFIX
ATOMS = (int, str, bool, float, type(None))  # hashable by value: used as they are
# What the inline key reads off a tensor whose rank is not its template's:
# every dimension absent, as AxisSource.read finds it. The key then names no
# definition, and its miss entry is cached like any other (no slow key per call).
OTHER_RANK = (None,) * 8


def summary(value: Any) -> Any:
    """What a selector may look at in one argument, as a hashable value."""
    if value.__class__ in ATOMS:
        return (value.__class__, value)  # 1, 1.0 and True compare equal; a selector may tell them apart
    if isinstance(value, (tuple, list)):
        return (value.__class__, tuple(summary(v) for v in value))
    dtype = getattr(value, "dtype", None)
    if dtype is not None:  # a tensor: the inline text reads the same three
        return (value.__class__, dtype, getattr(value, "ndim", None))
    try:
        hash(value)
    except TypeError:
        return (value.__class__,)
    return (value.__class__, value)


def _selector_function(selector: Callable) -> Optional[ast.FunctionDef]:
    """The parsed ``def`` of a selector taking ``**kwargs``, or None."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(selector)))
    except (OSError, TypeError, SyntaxError):
        return None
    func = tree.body[0] if tree.body else None
    if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)) or func.args.kwarg is None:
        return None
    return func


def selector_reads(selector: Callable) -> Optional[List[str]]:
    """The keyword names ``selector(**kwargs)`` reads, when its source shows
    them all (``kwargs.get("x")``, ``kwargs["x"]``, ``"x" in kwargs``); None
    when it uses its keywords any other way."""
    func = _selector_function(selector)
    if func is None:
        return None
    kw = func.args.kwarg.arg
    names: List[str] = []
    allowed = set()
    for node in ast.walk(func):
        name = _read_name(node, kw)
        if name is not None:
            names.append(name)
            allowed.add(id(node.func.value if isinstance(node, ast.Call) else node.value))
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.In, ast.NotIn)):
            right = node.comparators[0]
            if isinstance(right, ast.Name) and right.id == kw and isinstance(node.left, ast.Constant):
                names.append(node.left.value)
                allowed.add(id(right))
    for node in ast.walk(func):
        if isinstance(node, ast.Name) and node.id == kw and id(node) not in allowed:
            return None  # kwargs passed on or iterated: what it reads is unknown
    if not all(isinstance(n, str) for n in names):
        return None
    return list(dict.fromkeys(names))


# Builtin classes whose isinstance() depends on an object's class alone (no
# __instancecheck__ that looks at the instance, as torch.nn.Parameter's does).
PLAIN_CLASSES = ("int", "float", "bool", "str", "bytes", "complex", "tuple", "list", "dict", "set", "frozenset")


def selector_type_only(selector: Callable) -> Set[str]:
    """The arguments ``selector`` reads only through their type: each of its
    reads is compared ``is None`` / ``is not None`` or is the first argument
    of the builtin ``isinstance`` against builtin classes (``PLAIN_CLASSES``).
    What the selector returns then depends on the argument's class alone, so
    the selector key holds just the class (a float that changes on every
    call, gated_residual_next_rmsnorm's alpha, would otherwise be a new key
    each time)."""
    func = _selector_function(selector)
    if func is None:
        return set()
    # The builtins the tests rely on, unless the selector's module or body rebinds them.
    rebound = {node.id for node in ast.walk(func) if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load)}
    rebound |= {a.arg for a in ast.walk(func.args) if isinstance(a, ast.arg)}
    scope = getattr(selector, "__globals__", {})
    trusted = {name for name in ("isinstance", *PLAIN_CLASSES)
               if name not in rebound and scope.get(name, getattr(builtins, name)) is getattr(builtins, name)}
    kw = func.args.kwarg.arg
    parents = {id(child): node for node in ast.walk(func) for child in ast.iter_child_nodes(node)}
    by_type: Dict[str, bool] = {}
    for node in ast.walk(func):
        name = _read_name(node, kw)
        if name is not None:
            by_type[name] = by_type.get(name, True) and _type_only_use(node, parents.get(id(node)), trusted)
    return {name for name, only in by_type.items() if only}


def _read_name(node: ast.AST, kw: str) -> Optional[str]:
    """``x`` when ``node`` is ``kwargs.get("x", ...)`` or ``kwargs["x"]``."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == kw
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return node.args[0].value
    if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == kw
            and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)):
        return node.slice.value
    return None


def _type_only_use(node: ast.AST, parent: Optional[ast.AST], trusted: Set[str]) -> bool:
    if isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name) and parent.func.id == "isinstance":
        if "isinstance" not in trusted or len(parent.args) != 2 or parent.keywords or parent.args[0] is not node:
            return False
        kinds = parent.args[1]
        names = kinds.elts if isinstance(kinds, ast.Tuple) else [kinds]
        return all(isinstance(n, ast.Name) and n.id in trusted and n.id != "isinstance" for n in names)
    if isinstance(parent, ast.Compare) and len(parent.ops) == 1 and isinstance(parent.ops[0], (ast.Is, ast.IsNot)):
        other = parent.comparators[0] if parent.left is node else parent.left
        return isinstance(other, ast.Constant) and other.value is None
    return False


class KeyCode:
    """Key source text for one API (``instance``: ``self`` of a wrapper
    method; ``cache_layout_expr``: text giving a paged cache's layout)."""

    def __init__(self, shape: CallShape, instance: Optional[str], cache_layout_expr: Optional[str],
                 type_only: Sequence[str] = ()) -> None:
        self.shape = shape
        self.instance = instance
        self.cache_layout_expr = cache_layout_expr
        self.type_only = frozenset(type_only)  # selector arguments keyed by their class (selector_type_only)

    def tensor_base(self, param: str, tuple_idx: Optional[int], memo: Dict[Any, str]) -> str:
        if tuple_idx is None:
            return param
        if param == CACHE_PARAM and self.cache_layout_expr:
            var = memo.get((param, tuple_idx))
            if var is not None:
                return var
            var = memo[(param, tuple_idx)] = f"{P}kv{tuple_idx}"
            common = f"{param}.__class__ is tuple and getattr({self.instance}, '_kv_layout', 'NHD') == 'NHD'"
            return (
                f"({var} := ({param}[{tuple_idx}] if {common} "
                f"else {P}nhd({self.cache_layout_expr}, {param}, {tuple_idx})))"
            )
        # A non-sequence indexes (), raising into the exact slow path.
        return f"({param} if {param}.__class__ in {P}seq else ())[{tuple_idx}]"

    def axis_expr(self, source: AxisSource, memo: Dict[Any, str]) -> Optional[str]:
        if source.kind == "fixed":
            return repr(source.value)
        if source.kind == "computed":
            return None  # FlashInfer's own function of the call (0.7.4's Const(extract=)): the exact slow path reads it
        if not self.shape.has(source.param):
            # Not an argument of this API: the collector reads None here,
            # unless the name is that of *args / **kwargs (slow path).
            return None if source.param in self.shape.names else "None"
        if source.kind == "scalar":
            return f"int({source.param})"
        return f"{self.shape_of(source.param, source.tuple_idx, memo, source.rank)}[{source.dim}]"

    def shape_of(self, param: str, tuple_idx: Optional[int], memo: Dict[Any, str], rank: Optional[int] = None) -> str:
        """A tensor's ``.shape``, read once per key: each read builds a new
        ``torch.Size`` (about as dear as the rest of a plain key), and a
        template often takes several axes off one tensor. With ``rank``, a
        shape of another rank reads as ``OTHER_RANK``."""
        var = memo.get(("shape", param, tuple_idx))
        if var is not None:
            return var
        var = memo[("shape", param, tuple_idx)] = shape_var(param, tuple_idx)
        read = f"{self.tensor_base(param, tuple_idx, memo)}.shape"
        if rank is None:
            return f"({var} := {read})"
        return f"({var} if len({var} := {read}) == {rank} else {P}other_rank)"

    def shape_reads(self, sources: Sequence[AxisSource]) -> Dict[str, str]:
        """Parameter -> the wrapper local holding its ``.shape``, for the
        plain tensor parameters the inline key of ``sources`` reads (none
        when the key takes the slow path). The wrapper hands these to the
        entry, whose result checks then compare against them instead of
        reading the shape again."""
        memo: Dict[Any, str] = {}
        exprs = [self.axis_expr(s, memo) for s in sources]
        if any(e is None for e in exprs):
            return {}
        return {key[1]: var for key, var in memo.items() if key[0] == "shape" and key[2] is None}

    def values_expr(self, sources: Sequence[AxisSource], dtype_inputs: Sequence[Tuple[str, str, Optional[int]]]) -> Optional[List[str]]:
        """One expression per key value of a template, or None when some
        value cannot be read inline."""
        memo: Dict[Any, str] = {}
        exprs = [self.axis_expr(s, memo) for s in sources]
        exprs += [f"{self.tensor_base(p, i, memo)}.dtype" for _, p, i in dtype_inputs]
        return None if any(e is None for e in exprs) else exprs  # type: ignore[return-value]

    def selector_key_expr(self, reads: Sequence[str]) -> Optional[str]:
        """Text of the selector key: each argument the selector reads, as is
        when it is a plain value, else summarized."""
        parts = []
        for name in reads:
            if not self.shape.has(name):
                if name in self.shape.names or any(p.kind is p.VAR_KEYWORD for p in self.shape.parameters):
                    return None  # arrives through *args / **kwargs: slow path
                continue  # the selector sees it missing on every call
            if name in self.type_only:
                parts.append(f"({name}.__class__,)")
                continue
            parts.append(
                f"(({name}.__class__, {name}) if {name}.__class__ in {P}atoms else "
                f"({name}.__class__, {name}.dtype, {name}.ndim) if {name}.__class__ is {P}T else {P}summary({name}))"
            )
        return "(" + "".join(p + ", " for p in parts) + ")"

    def selector_args(self, reads: Sequence[str]) -> Optional[List[str]]:
        """The parameters a selector reads that the call names (those it
        never gets it sees missing every time); None when one arrives through
        ``*args`` / ``**kwargs`` (every call then takes the slow key)."""
        if self.selector_key_expr(reads) is None:
            return None
        return [name for name in reads if self.shape.has(name)]

    def choose_source(self, args: Sequence[str], learned: Sequence[Tuple[tuple, int]], ns: Dict[str, Any]) -> str:
        """``def _fita_choose(<args>)``: the template index the selector chose
        for these arguments' summaries. Choices already learned are tested
        inline, fact by fact (identity tests and attribute reads, no tuple
        to build and hash); anything else looks the summary up in
        ``_fita_choices``, whose KeyError sends the call to the slow key.
        A test here only ever answers what the dictionary would."""
        lines = [f"def {P}choose({', '.join(args)}):"]
        for facts, index in learned[:INLINE_CHOICES]:
            tests = [_fact_test(name, fact, ns) for name, fact in zip(args, facts)]
            if len(facts) == len(args) and all(t is not None for t in tests):
                lines.append(f"    if {' and '.join(tests) or 'True'}: return {index}")
        key = self.selector_key_expr(args)
        lines.append(f"    return {P}choices[{key}]")
        return "\n".join(lines) + "\n"

    def selector_key_slow(self, reads: Sequence[str], ns: Dict[str, Any]) -> tuple:
        """The selector key from a bound call (``ns``): the same value the
        inline text gives."""
        return tuple((ns[name].__class__,) if name in self.type_only else summary(ns[name])
                     for name in reads if self.shape.has(name))


def shape_var(param: str, tuple_idx: Optional[int]) -> str:
    """The wrapper local holding one tensor's ``.shape`` (named by what it
    holds, so every template of an API names it alike)."""
    return f"{P}s_{param}" if tuple_idx is None else f"{P}s_{param}_{tuple_idx}"


# Learned selector choices tested inline in _fita_choose (the rest: one dict lookup).
INLINE_CHOICES = 8


def _fact_test(name: str, fact: tuple, ns: Dict[str, Any]) -> Optional[str]:
    """Text true exactly when ``summary(name) == fact``, for the summaries a
    test can state cheaply (a plain value, an enum member, a tensor's class,
    dtype and rank); None for the others (sequences, other objects)."""
    cls = fact[0]
    const = f"{P}c{len(ns)}"
    if len(fact) == 1:  # the class alone
        if cls is type(None):
            return f"{name} is None"  # a stand-in claiming NoneType falls through to the dictionary
        ns[const] = cls
        return f"{name}.__class__ is {const}"
    if len(fact) == 3:  # class, dtype, rank: read off anything with a dtype
        if fact[2].__class__ is not int:
            return None
        ns[const], ns[const + "d"] = cls, fact[1]
        # dtypes are singletons; an equal dtype that is not the same object
        # only misses the test and finds the choice in the dictionary.
        return f"{name}.__class__ is {const} and {name}.dtype is {const}d and {name}.ndim == {fact[2]}"
    if len(fact) != 2:
        return None
    value = fact[1]
    if value is None or value is True or value is False:
        return f"{name} is {value!r}"
    if cls in (int, str, float):
        ns[const], ns[const + "v"] = cls, value
        return f"{name}.__class__ is {const} and {name} == {const}v"
    if isinstance(value, enum.Enum):  # members are singletons
        ns[const + "v"] = value
        return f"{name} is {const}v"
    return None


def dtype_of(ns: Dict[str, Any], param: str, tuple_idx: Optional[int]) -> Any:
    value = ns.get(param)
    if tuple_idx is not None:
        value = value[tuple_idx] if isinstance(value, (tuple, list)) and len(value) > tuple_idx else None
    return getattr(value, "dtype", None)
