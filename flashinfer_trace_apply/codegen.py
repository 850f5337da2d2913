"""Build functions whose parameter list mirrors a FlashInfer API's signature.

A wrapper that takes ``*args, **kwargs`` must bind them to names on every
call (``inspect.Signature.bind`` costs microseconds). Generating a function
with the API's own parameter list lets the interpreter do the binding, so
per-call work is a few attribute reads and one dictionary lookup. The code
is generated once per API (or per resolved shape) and never per call.
"""

from __future__ import annotations

import inspect
import keyword
from typing import Any, Callable, Dict, List, Tuple

_P = inspect.Parameter
PREFIX = "_fita_"  # reserved for generated locals and globals
# Most arguments an entry call passes one by one. CPython 3.11 calls a
# function with 31 or more positional arguments by its slow path (a
# 36-argument call cost ~0.4 us more than a 30-argument one): past this,
# an entry takes its trailing parameters as one tuple.
ENTRY_ARGS = 30


class CallShape:
    """The parameter list of one API, as source text fragments."""

    def __init__(self, signature: inspect.Signature) -> None:
        self.parameters: List[inspect.Parameter] = list(signature.parameters.values())
        for p in self.parameters:
            if p.name.startswith(PREFIX) or keyword.iskeyword(p.name):
                raise ValueError(f"parameter name {p.name!r} clashes with generated code")
        self.names = [p.name for p in self.parameters]
        self.defaults: Dict[str, Any] = {
            p.name: p.default for p in self.parameters if p.default is not _P.empty
        }
        self.reserve(0)

    def header(self, with_defaults: bool) -> str:
        """``a, b, /, c=<default>, *args, d=<default>, **kw`` for a ``def``."""
        out: List[str] = []
        saw_star = False
        for i, p in enumerate(self.parameters):
            if p.kind is _P.VAR_POSITIONAL:
                out.append("*" + p.name)
                saw_star = True
                continue
            if p.kind is _P.VAR_KEYWORD:
                out.append("**" + p.name)
                continue
            if p.kind is _P.KEYWORD_ONLY and not saw_star:
                out.append("*")
                saw_star = True
            text = p.name
            if with_defaults and p.default is not _P.empty:
                text += f"={PREFIX}dflt[{p.name!r}]"
            out.append(text)
            nxt = self.parameters[i + 1] if i + 1 < len(self.parameters) else None
            if p.kind is _P.POSITIONAL_ONLY and (nxt is None or nxt.kind is not _P.POSITIONAL_ONLY):
                out.append("/")
        return ", ".join(out)

    def forward(self) -> str:
        """Argument text that passes every parameter on unchanged."""
        return ", ".join(_forward_text(p) for p in self.parameters)

    def return_call(self, callee: str) -> Tuple[List[str], Dict[str, Any]]:
        """Lines returning ``callee`` called with every parameter, and the
        globals they read. A call of more than ``ENTRY_ARGS`` arguments
        takes CPython's slow path (0.3 us more for trtllm_batch_decode's 36
        than for 30): when each parameter past the first ``ENTRY_ARGS``
        still holds its default object, the call leaves them out, and the
        callee, whose signature these defaults were read from, fills in the
        same objects."""
        full = [f"return {callee}({self.forward()})"]
        tail = self.parameters[ENTRY_ARGS:]
        if not tail or any(p.kind in (_P.VAR_POSITIONAL, _P.VAR_KEYWORD) or p.default is _P.empty for p in tail):
            return full, {}
        tests, names = [], {}
        for p in tail:
            if p.default is None or p.default is True or p.default is False:
                tests.append(f"{p.name} is {p.default!r}")
            else:
                names[f"{PREFIX}dv_{p.name}"] = p.default
                tests.append(f"{p.name} is {PREFIX}dv_{p.name}")
        head = ", ".join(_forward_text(p) for p in self.parameters[:ENTRY_ARGS])
        return [f"if {' and '.join(tests)}: return {callee}({head})"] + full, names

    def reserve(self, extra: int) -> None:
        """Entries also take ``extra`` trailing parameters (the shapes the
        wrapper read): keep the whole entry call within ``ENTRY_ARGS``."""
        n = len(self.parameters)
        self.split = n if n + extra <= ENTRY_ARGS else max(0, ENTRY_ARGS - 1 - extra)

    def entry_header(self) -> str:
        """Parameters of the entries a wrapper calls: every parameter
        positional (``*args`` arrives as the tuple, ``**kwargs`` as the
        dict), so the wrapper's call costs no keyword matching. Past
        ``ENTRY_ARGS`` the trailing parameters arrive as one tuple
        (``_fita_tail``, unpacked by ``entry_unpack``)."""
        head = self.names[: self.split]
        return ", ".join(head + [f"{PREFIX}tail"] if self.split < len(self.names) else head)

    def entry_forward(self) -> str:
        """Argument text calling an entry (see ``entry_header``)."""
        head = self.names[: self.split]
        if self.split < len(self.names):
            head = head + ["(" + "".join(n + ", " for n in self.names[self.split:]) + ")"]
        return ", ".join(head)

    def entry_unpack(self) -> list:
        """Lines an entry starts with: its tail parameters by name."""
        if self.split == len(self.names):
            return []
        return ["".join(n + ", " for n in self.names[self.split:]) + f"= {PREFIX}tail"]

    def entry_arguments(self, args: tuple) -> Dict[str, Any]:
        """Parameter name -> value, from the arguments an entry received."""
        if self.split < len(self.names) and len(args) > self.split:
            args = tuple(args[: self.split]) + tuple(args[self.split])
        return dict(zip(self.names, args))

    def has(self, name: str) -> bool:
        return any(
            p.name == name and p.kind not in (_P.VAR_POSITIONAL, _P.VAR_KEYWORD)
            for p in self.parameters
        )


def _forward_text(p: inspect.Parameter) -> str:
    if p.kind is _P.VAR_POSITIONAL:
        return "*" + p.name
    if p.kind is _P.VAR_KEYWORD:
        return "**" + p.name
    if p.kind is _P.KEYWORD_ONLY:
        return f"{p.name}={p.name}"
    return p.name


def compile_function(name: str, source: str, namespace: Dict[str, Any], filename: str) -> Callable:
    """Compile ``source`` (one ``def name``) against ``namespace`` as globals.

    ``filename`` appears in tracebacks, so a failure inside generated code
    names the API it belongs to.
    """
    code = compile(source, filename, "exec")
    scope: Dict[str, Any] = dict(namespace)
    exec(code, scope)  # noqa: S102 - source is built here from signatures, never from input
    fn = scope[name]
    fn.__fita_source__ = source  # kept for debugging: print(f.__fita_source__)
    return fn
