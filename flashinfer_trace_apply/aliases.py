"""Class-body aliases of a patched wrapper method.

FlashInfer's wrapper classes bind second names for their methods when the
class body runs: ``begin_forward = plan`` (the same function object) and
``run_return_lse = functools.partialmethod(run, return_lse=True)``. Those
attributes keep pointing at the original once ``run`` or ``plan`` is
replaced, so calls through them (SGLang's ``forward_return_lse`` goes through
``run_return_lse``) would never be routed. They are found here generically,
by identity, in the class and its subclasses: no list of names.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Iterator, List, Tuple

from .patcher import PatchSet


def _class_and_subclasses(cls: type) -> Iterator[type]:
    seen = set()
    stack = [cls]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        try:
            stack.extend(type.__subclasses__(current))
        except TypeError:  # pragma: no cover - exotic metaclasses
            pass


def find_aliases(cls: type, attr: str, original: Callable) -> List[Tuple[type, str, Any]]:
    """``(owner, name, stored object)`` for every attribute of ``cls`` or a
    subclass, other than ``cls.attr`` itself, that is ``original`` or a
    ``partialmethod`` of it."""
    found: List[Tuple[type, str, Any]] = []
    for owner in _class_and_subclasses(cls):
        for name, value in list(vars(owner).items()):
            if owner is cls and name == attr:
                continue
            if value is original or (isinstance(value, functools.partialmethod) and value.func is original):
                found.append((owner, name, value))
    return found


def alias_of(stored: Any, original: Callable, replacement: Callable) -> Any:
    """What ``stored`` becomes once ``original`` is replaced: the replacement
    itself, or the same ``partialmethod`` over the replacement."""
    if stored is original:
        return replacement
    return functools.partialmethod(replacement, *stored.args, **stored.keywords)


def route_class_aliases(patches: PatchSet, cls: Any, attr: str, original: Callable, replacement: Callable) -> int:
    """Point every alias of ``cls.attr`` at ``replacement``; recorded in
    ``patches`` so that disable puts back the very objects found. Returns
    how many aliases were replaced."""
    if not inspect.isclass(cls):
        return 0
    count = 0
    for owner, name, stored in find_aliases(cls, attr, original):
        if patches.replace(owner, name, stored, alias_of(stored, original, replacement)):
            count += 1
    return count
