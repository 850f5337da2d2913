"""What a Definition adds to routing: input dtypes and constraints.

A curated folder's ``definitions/`` holds FlashInfer-Bench Definition JSONs.
From each we take the dtypes its tensor inputs must have (a string, or - our
extension - a list of strings, so one definition can serve bf16 and fp16)
and its ``constraints``: Python expressions over the axes. Constraints are
parsed once and sorted by what they need: const axes only (decided once per
shape), any axes (checked per call, from tensor shapes), or tensor data such
as ``kv_indptr[-1].item()`` (not checked per call: that would synchronise
the GPU on every call and cannot run during CUDA-graph capture).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple

from .codegen import PREFIX

_SAFE_CALLS = {"min", "max", "abs", "int"}
_ALLOWED_NODES = (
    ast.Expression, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Name, ast.Load,
    ast.Constant, ast.And, ast.Or, ast.Not, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv,
    ast.Mod, ast.Pow, ast.USub, ast.UAdd, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
    ast.IfExp, ast.Call, ast.In, ast.NotIn, ast.Tuple, ast.List,
)


# Bounds on what a constraint may ask of the evaluator, which runs on the
# hit path for per-call constraints: "9**9**7" or "[0] * 10**9" would burn
# seconds (or memory) per call. Such a constraint is reported, not run.
_MAX_TEXT = 512
_MAX_NODES = 64
_MAX_EXPONENT = 64
_MAX_CONSTANT = 2**63


def _unbounded(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        value = node.value
        return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > _MAX_CONSTANT
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Pow):
            exponent = node.right
            return not (isinstance(exponent, ast.Constant) and isinstance(exponent.value, int)
                        and 0 <= exponent.value <= _MAX_EXPONENT)
        # No arithmetic on sequences: "[0] * n" builds a list per call.
        return isinstance(node.left, (ast.List, ast.Tuple)) or isinstance(node.right, (ast.List, ast.Tuple))
    return False


@dataclass(frozen=True)
class Constraint:
    text: str
    axes: Tuple[str, ...]  # axis names it reads
    source: str  # the expression with each axis renamed to a generated local


@dataclass
class DefinitionRules:
    name: str
    dtypes: Dict[str, FrozenSet[str]] = field(default_factory=dict)  # input -> allowed dtype names
    const_constraints: List[Constraint] = field(default_factory=list)
    call_constraints: List[Constraint] = field(default_factory=list)
    unchecked: List[str] = field(default_factory=list)


class _Rename(ast.NodeTransformer):
    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in _SAFE_CALLS:
            return node
        return ast.copy_location(ast.Name(id=f"{PREFIX}ax_{node.id}", ctx=node.ctx), node)


def parse_constraint(text: str, axes: Mapping[str, str]) -> Optional[Constraint]:
    """A checkable constraint over ``axes`` (name -> "const"/"var"), or None
    when it needs tensor data or anything else we will not evaluate."""
    if len(text) > _MAX_TEXT:
        return None
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return None
    nodes = list(ast.walk(tree))
    if len(nodes) > _MAX_NODES or any(_unbounded(node) for node in nodes):
        return None
    names: List[str] = []
    for node in nodes:
        if not isinstance(node, _ALLOWED_NODES):
            return None
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _SAFE_CALLS):
            return None
        if isinstance(node, ast.Name) and node.id not in _SAFE_CALLS:
            if node.id not in axes:
                return None
            names.append(node.id)
    renamed = ast.fix_missing_locations(_Rename().visit(tree))
    return Constraint(text=text, axes=tuple(dict.fromkeys(names)), source=ast.unparse(renamed))


def axis_kinds(definition: Mapping[str, Any]) -> Dict[str, str]:
    """Axis name -> "const" or "var". An axis without ``type`` is const when
    it has a ``value``, as FlashInfer-Bench's models read it."""
    kinds = {}
    for name, spec in (definition.get("axes") or {}).items():
        spec = spec if isinstance(spec, Mapping) else {}
        kinds[name] = spec.get("type") or ("const" if "value" in spec else "var")
    return kinds


def as_definition_dict(definition: Any) -> Dict[str, Any]:
    """A Definition as a JSON dict: a dict as is, a FlashInfer-Bench
    ``Definition`` (pydantic) through ``model_dump``, else ``to_dict``."""
    if isinstance(definition, Mapping):
        return dict(definition)
    for method, kwargs in (("model_dump", {"mode": "json", "exclude_none": True}), ("to_dict", {})):
        fn = getattr(definition, method, None)
        if callable(fn):
            data = fn(**kwargs)
            if isinstance(data, Mapping):
                return dict(data)
    raise TypeError(f"expected a Definition (a dict in the Definition JSON schema or a FlashInfer-Bench Definition), got {type(definition).__name__}")


def definition_map(value: Any) -> Dict[str, Dict[str, Any]]:
    """``{name: Definition JSON}`` from a mapping of them, one Definition, or
    a list of them (dicts or FlashInfer-Bench objects)."""
    if value is None:
        return {}
    if isinstance(value, Mapping) and not ("name" in value and "axes" in value):
        return {str(k): as_definition_dict(v) for k, v in value.items()}
    items = value if isinstance(value, (list, tuple)) else [value]
    out: Dict[str, Dict[str, Any]] = {}
    for item in items:
        data = as_definition_dict(item)
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise TypeError(f"a Definition needs a non-empty name (got {name!r})")
        out[name] = data
    return out


def _dtype_names(spec: Any) -> FrozenSet[str]:
    if isinstance(spec, str):
        return frozenset({spec})
    if isinstance(spec, (list, tuple)):
        return frozenset(str(s) for s in spec)
    return frozenset()


def rules_from_definition(definition: Any) -> DefinitionRules:
    definition = as_definition_dict(definition)
    name = str(definition.get("name", ""))
    rules = DefinitionRules(name=name)
    axes = axis_kinds(definition)
    for key, spec in (definition.get("inputs") or {}).items():
        spec = spec or {}
        if spec.get("shape") is None:  # a scalar: dtype is the parameter's, not checked
            continue
        allowed = _dtype_names(spec.get("dtype"))
        if allowed and "unknown" not in allowed:
            rules.dtypes[key] = allowed
    for text in definition.get("constraints") or []:
        constraint = parse_constraint(str(text), axes)
        if constraint is None:
            rules.unchecked.append(str(text))
        elif all(axes.get(a) == "const" for a in constraint.axes):
            rules.const_constraints.append(constraint)
        else:
            rules.call_constraints.append(constraint)
    return rules


# Stands for a solution's applies_when that cannot be checked: never holds,
# so the original runs rather than the solution outside its declared range.
NEVER = Constraint(text="False", axes=(), source="False")


def add_applies_when(rules: Optional[DefinitionRules], name: str, texts: Tuple[str, ...],
                     definition: Optional[Mapping[str, Any]]) -> Tuple[DefinitionRules, List[str]]:
    """``rules`` (made if None) with a solution's ``spec.applies_when``
    added: each expression parsed over the definition's axes and kept with
    the constraints of its kind. Returns (rules, problems): an expression
    that cannot be parsed, reads an axis the definition lacks, or comes with
    no Definition at all is a problem, and the solution is then never routed
    (``NEVER``), since where it holds cannot be told."""
    rules = rules if rules is not None else DefinitionRules(name=name)
    problems: List[str] = []
    definition = as_definition_dict(definition) if definition is not None else None
    axes = axis_kinds(definition or {})
    for text in texts:
        constraint = parse_constraint(text, axes) if definition is not None else None
        if constraint is None:
            why = "no Definition to read its axes from" if definition is None else "not an expression over the definition's axes"
            problems.append(f"{name}: applies_when {text!r}: {why}")
            constraint = NEVER
        if all(axes.get(a) == "const" for a in constraint.axes):
            rules.const_constraints.append(constraint)
        else:
            rules.call_constraints.append(constraint)
    return rules, problems


_SAFE_BUILTINS = {"min": min, "max": max, "abs": abs, "int": int}


def evaluate(constraint: Constraint, values: Mapping[str, Any]) -> bool:
    """Evaluate on concrete axis values (the once-per-shape path)."""
    scope = {f"{PREFIX}ax_{k}": v for k, v in values.items()}
    return bool(eval(constraint.source, {"__builtins__": _SAFE_BUILTINS}, scope))  # noqa: S307 - parsed and restricted above


def torch_dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")
