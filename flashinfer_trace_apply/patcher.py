"""Replace attributes and put the very same objects back.

Each replacement is recorded as a :class:`Patch`; :meth:`PatchSet.restore`
undoes them last-in-first-out. An attribute that someone else replaced after
us is left as they set it (restoring ours would silently drop their patch),
and reported.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, List

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
