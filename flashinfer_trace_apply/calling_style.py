"""Value-returning or destination-passing, when a Solution does not say.

FlashInfer-Bench's BuildSpec defaults ``destination_passing_style`` to True
and its saver leaves defaults out, while FlashInfer's own Solution defaults it
to False: the same file means opposite things to the two. When the field is
absent we decide as FlashInfer-Bench's apply runtime does, from what the
entry point takes: the definition's inputs only means value-returning, the
inputs followed by the outputs means destination-passing. A stated value that
the entry point contradicts is an error, since either way every routed call
would fail.
"""

from __future__ import annotations

import ast
import functools
import inspect
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import SolutionFormatError
from .solution import Solution

__all__ = ["Parameter", "entry_parameters", "decide", "resolve", "io_names"]


@dataclass(frozen=True)
class Parameter:
    name: str
    required: bool  # no default value
    variadic: bool  # *args or **kwargs


def entry_parameters(solution: Solution) -> Optional[List[Parameter]]:
    """The entry function's parameters, read from its source without
    importing it (Python-family solutions only); None when not found."""
    if not solution.spec.is_python_family:
        return None
    entry = next((s for s in solution.sources if s.normalized_path == solution.entry_file.lstrip("./") or s.path == solution.entry_file), None)
    if entry is None:
        return None
    found = _top_level_functions(entry.content)
    return None if found is None or solution.entry_symbol not in found else list(found[solution.entry_symbol])


@functools.lru_cache(maxsize=64)
def _top_level_functions(source: str) -> Optional[Dict[str, Tuple[Parameter, ...]]]:
    """Each top-level function's parameters in ``source`` (None if it does
    not parse). Cached by text: a curated folder's solutions share a few
    kernel files (the bundled one: 76 solutions, 6 sources), and parsing
    each copy was most of enable_apply()'s time."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    return {node.name: tuple(_from_arguments(node.args)) for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _from_arguments(args: ast.arguments) -> List[Parameter]:
    positional = [*args.posonlyargs, *args.args]
    first_default = len(positional) - len(args.defaults)
    out = [Parameter(a.arg, i < first_default, False) for i, a in enumerate(positional)]
    out += [Parameter(a.arg, d is None, False) for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    if args.vararg is not None:
        out.append(Parameter(args.vararg.arg, False, True))
    if args.kwarg is not None:
        out.append(Parameter(args.kwarg.arg, False, True))
    return out


def signature_parameters(fn: Any) -> Optional[List[Parameter]]:
    """The same from a loaded callable (None if it has no signature)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [Parameter(p.name, p.default is p.empty and p.kind not in variadic, p.kind in variadic)
            for p in sig.parameters.values()]


def io_names(definition: Any) -> Optional[tuple]:
    """(input names, output names) of a Definition JSON dict or object."""
    if definition is None:
        return None
    if not isinstance(definition, Mapping):
        definition = {"inputs": getattr(definition, "inputs", None), "outputs": getattr(definition, "outputs", None)}
    inputs, outputs = definition.get("inputs"), definition.get("outputs")
    if not isinstance(inputs, Mapping) or not isinstance(outputs, Mapping):
        return None
    return list(inputs), list(outputs)


def decide(params: Sequence[Parameter], inputs: Sequence[str], outputs: Sequence[str]) -> Optional[bool]:
    """True (destination-passing), False (value-returning) or None (the
    parameters fit neither)."""
    named = [p for p in params if not p.variadic]
    # Outputs named as required parameters: the solution takes the buffers
    # (an optional one, output=None, is a value-returning solution's out=).
    required_names = {p.name for p in named if p.required}
    if outputs and any(o in required_names and o not in inputs for o in outputs):
        return True
    # Then FlashInfer-Bench's rule, counting parameters (its calls are
    # positional): first the required ones, since output buffers never have
    # defaults and our solutions take extra keyword arguments (eps=...).
    required = [p for p in named if p.required]
    for counted in (required, named):
        if len(counted) == len(inputs):
            return False
        if outputs and len(counted) == len(inputs) + len(outputs):
            return True
    if len(required) < len(inputs):
        return False
    return None


def resolve(solution: Solution, definition: Any, origin: Any = None) -> tuple:
    """(solution with destination_passing_style decided, note or None).

    A stated value is checked against the entry point's parameters where
    both the parameters and the Definition are known; a contradiction raises
    ``SolutionFormatError`` naming ``origin``. An unstated one is decided
    from the parameters; the note says how (for a one-time message)."""
    from dataclasses import replace  # noqa: PLC0415

    io = io_names(definition)
    params = entry_parameters(solution)
    verdict = decide(params, *io) if io is not None and params is not None else None
    stated = solution.spec.destination_passing_style
    if stated is not None:
        if verdict is not None and verdict != stated:
            takes = ", ".join(p.name for p in params if not p.variadic)
            raise SolutionFormatError(
                f"is {str(stated).lower()}, but the entry point {solution.entry_symbol}({takes}) takes "
                + ("the outputs after the inputs (destination-passing)" if verdict else "the inputs only (value-returning)"),
                origin=origin, field="spec.destination_passing_style",
            )
        return solution, None
    if verdict is None:
        return solution, None
    style = "destination-passing" if verdict else "value-returning"
    note = f"{solution.name} ({solution.definition}): {style}"
    return replace(solution, spec=replace(solution.spec, destination_passing_style=verdict)), note


_told: set = set()


def template_io(definition: str) -> Optional[tuple]:
    """(input names, output names) of the FlashInfer template that names
    ``definition``, for a solution that comes without a Definition."""
    from .check import _axis_values  # noqa: PLC0415
    from .registry import discover_apis  # noqa: PLC0415

    for spec in discover_apis():
        for template in spec.templates:
            if _axis_values(template, definition) is not None:
                return list(template.inputs), list(template.outputs)
    return None


def decide_loaded(fn: Any, solution: Solution, definition: str) -> bool:
    """At load, for a solution whose style is still unknown (no Definition
    at hand when it was read): decide from the loaded callable's signature
    and the FlashInfer template's inputs and outputs; value-returning when
    they do not tell. Said once per solution."""
    params = signature_parameters(fn)
    try:
        io = template_io(definition)
    except Exception:  # noqa: BLE001 - the registry is best effort here
        io = None
    verdict = decide(params, *io) if params is not None and io is not None else None
    key = (solution.name, definition)
    if key not in _told:
        _told.add(key)
        from .warn import warn  # noqa: PLC0415

        if verdict is None:
            warn(f"{solution.name} ({definition}): destination_passing_style not stated and its entry point's "
                 "parameters do not tell; called value-returning", stacklevel=4)
        else:
            warn(f"{solution.name} ({definition}): destination_passing_style not stated; decided from the entry "
                 f"point's parameters: {'destination-passing' if verdict else 'value-returning'}", stacklevel=4)
    return bool(verdict)
