"""Replace attributes and put the very same objects back.

Each replacement is recorded as a :class:`Patch`; :meth:`PatchSet.restore`
undoes them last-in-first-out. An attribute that someone else replaced after
us is left as they set it (restoring ours would silently drop their patch),
and reported.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

_ABSENT = object()


def read_attribute(owner: Any, attr: str) -> Any:
    """The object stored at ``owner.attr`` (class attributes as stored, so a
    function is not turned into a bound method)."""
    if inspect.isclass(owner):
        return vars(owner).get(attr, _ABSENT)
    return getattr(owner, "__dict__", {}).get(attr, _ABSENT)


def describe(owner: Any, attr: str) -> str:
    if inspect.isclass(owner):
        return f"{owner.__module__}.{owner.__qualname__}.{attr}"
    return f"{getattr(owner, '__name__', owner)}.{attr}"


@dataclass
class Patch:
    owner: Any
    attr: str
    original: Any
    replacement: Any


class PatchSet:
    def __init__(self) -> None:
        self.patches: List[Patch] = []

    def replace(self, owner: Any, attr: str, expected: Any, replacement: Any) -> bool:
        """Set ``owner.attr = replacement`` if it still holds ``expected``."""
        if read_attribute(owner, attr) is not expected:
            return False
        setattr(owner, attr, replacement)
        self.patches.append(Patch(owner, attr, expected, replacement))
        return True

    def adopt(self, owner: Any, attr: str, original: Any, replacement: Any) -> bool:
        """Record that ``owner.attr`` holds ``replacement`` although we did
        not set it (a module imported during the session bound our wrapper:
        ``from .allreduce import allreduce_fusion``), so that restore puts
        back ``original``, the object it would hold without us."""
        if read_attribute(owner, attr) is not replacement:
            return False
        if any(p.owner is owner and p.attr == attr for p in self.patches):
            return False
        self.patches.append(Patch(owner, attr, original, replacement))
        return True

    def originals_by_replacement(self) -> Dict[int, Tuple[Any, Any]]:
        """``id(replacement) -> (original, replacement)`` for module-level
        patches (free functions), to recognise our wrappers bound elsewhere."""
        return {
            id(p.replacement): (p.original, p.replacement)
            for p in self.patches
            if inspect.ismodule(p.owner)
        }

    def restore(self) -> List[str]:
        """Undo every patch; returns the attributes left alone, described."""
        left_alone: List[str] = []
        while self.patches:
            patch = self.patches.pop()
            if read_attribute(patch.owner, patch.attr) is patch.replacement:
                setattr(patch.owner, patch.attr, patch.original)
            else:
                left_alone.append(describe(patch.owner, patch.attr))
        return left_alone

    def __len__(self) -> int:
        return len(self.patches)
