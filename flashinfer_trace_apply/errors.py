"""Exception types shared by the whole package.

They live in one leaf module (no imports from the rest of the package) so any
module, and any user catching them, can import them without cycles. The
hierarchy separates problems the user fixes by editing configuration or
solution files (``ConfigError`` and subclasses) from problems that appear when
a solution is built or called (``SolutionLoadError``, ``SolutionCallError``).
"""

from __future__ import annotations

import os

__all__ = [
    "TraceApplyError",
    "ConfigError",
    "SolutionFormatError",
    "DuplicateSolutionError",
    "SolutionLoadError",
    "SolutionCallError",
]


class TraceApplyError(RuntimeError):
    """Base class: catch this to handle every error raised by this package."""


class ConfigError(TraceApplyError):
    """The environment or a solution folder is configured wrongly."""


class SolutionFormatError(ConfigError):
    """A Solution (JSON file, dict or object) does not follow the schema.

    ``origin`` is the file the solution came from (when there is one) and
    ``field`` the dotted path of the offending field, e.g. ``spec.entry_point``.
    Both are kept as attributes so callers can re-locate an error raised deep
    inside validation without parsing the message.
    """

    def __init__(
        self,
        problem: str,
        *,
        origin: str | os.PathLike[str] | None = None,
        field: str | None = None,
    ) -> None:
        self.problem = problem
        self.origin = os.fspath(origin) if origin is not None else None
        self.field = field
        super().__init__(self._render())

    def _render(self) -> str:
        # "<file>: <field> <problem>", e.g. "solutions/x.json: spec.entry_point
        # must contain exactly one '::'"; parts that are unknown are left out.
        text = f"{self.field} {self.problem}" if self.field else self.problem
        return f"{self.origin}: {text}" if self.origin else text

    def located(
        self,
        *,
        origin: str | os.PathLike[str] | None = None,
        field: str | None = None,
    ) -> SolutionFormatError:
        """A copy with ``origin``/``field`` filled in where this one lacks them."""
        return SolutionFormatError(
            self.problem,
            origin=self.origin if self.origin is not None else origin,
            field=self.field if self.field is not None else field,
        )


class DuplicateSolutionError(ConfigError):
    """Two solution files claim the same definition; routing would be ambiguous."""

    def __init__(
        self,
        definition: str,
        first: str | os.PathLike[str],
        second: str | os.PathLike[str],
    ) -> None:
        self.definition = definition
        self.first = os.fspath(first)
        self.second = os.fspath(second)
        super().__init__(
            f"two solutions for definition '{definition}': {self.first} and "
            f"{self.second} (keep exactly one solution per definition)"
        )

    def __reduce__(self):  # type: ignore[override]
        # The constructor takes structured arguments, not the message, so
        # pickling (e.g. across multiprocessing) must pass those back.
        return (type(self), (self.definition, self.first, self.second))


class SolutionLoadError(TraceApplyError):
    """A solution could not be materialized, imported or built."""

    def __init__(
        self,
        message: str,
        *,
        solution: str | None = None,
        definition: str | None = None,
    ) -> None:
        self.solution = solution
        self.definition = definition
        super().__init__(message)

    @classmethod
    def from_cause(
        cls, solution: str, definition: str, cause: BaseException
    ) -> SolutionLoadError:
        """The one message format for load failures; raise it ``from cause``."""
        return cls(
            f"failed to load solution '{solution}' for definition "
            f"'{definition}': {type(cause).__name__}: {cause}",
            solution=solution,
            definition=definition,
        )


class SolutionCallError(TraceApplyError):
    """A loaded solution failed while being called (raised by the dispatcher)."""
