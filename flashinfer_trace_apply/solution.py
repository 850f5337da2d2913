"""Our own typed model of a FlashInfer-Bench ``Solution`` (JSON schema).

Solutions arrive in several shapes: JSON files in a curated folder, plain
dicts, ``flashinfer.trace.Solution`` objects and flashinfer-bench pydantic
models. Everything downstream (catalog, loaders, dispatcher) works on this one
immutable type, validated once at the boundary, so later code can trust it.
Validation failures raise ``SolutionFormatError`` naming the file (when known)
and the offending field, because a curated folder is edited by hand.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from .errors import SolutionFormatError

__all__ = [
    "PYTHON_FAMILY_LANGUAGES",
    "CPP_FAMILY_LANGUAGES",
    "SUPPORTED_LANGUAGES",
    "SUPPORTED_BINDINGS",
    "SourceFile",
    "BuildSpec",
    "Solution",
]

# Loaded by importing a Python module and picking the entry function.
PYTHON_FAMILY_LANGUAGES: frozenset[str] = frozenset(
    {"python", "triton", "cutedsl", "cutile", "tilelang"}
)
# Compiled as a C++/CUDA extension and called through its binding.
CPP_FAMILY_LANGUAGES: frozenset[str] = frozenset({"cpp", "cuda", "cutlass"})
SUPPORTED_LANGUAGES: frozenset[str] = PYTHON_FAMILY_LANGUAGES | CPP_FAMILY_LANGUAGES
SUPPORTED_BINDINGS: frozenset[str] = frozenset({"tvm-ffi", "torch"})


def _type_name(value: object) -> str:
    return type(value).__name__


def _require_str(value: object, field_name: str, *, non_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise SolutionFormatError(
            f"must be a string (got {_type_name(value)})", field=field_name
        )
    if non_empty and not value.strip():
        raise SolutionFormatError("must be a non-empty string", field=field_name)
    return str(value)


def _str_tuple(value: object, field_name: str) -> tuple[str, ...]:
    # A bare string is iterable too; accepting it would split "sm90" into chars.
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise SolutionFormatError(
            f"must be a list of strings (got {_type_name(value)})", field=field_name
        )
    items = tuple(value)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise SolutionFormatError(
                f"must be a string (got {_type_name(item)})",
                field=f"{field_name}[{i}]",
            )
    return items


def _plain_str(value: object) -> object:
    # flashinfer's SupportedLanguages/SupportedBindings are str-valued enums;
    # keep only their value so our fields stay plain strings.
    return value.value if isinstance(value, enum.Enum) else value


def _normalized_source_path(path: str) -> PurePosixPath:
    """Validated, normalized relative path; raises a bare SolutionFormatError."""
    if not path or not path.strip():
        raise SolutionFormatError("must be a non-empty relative path")
    if "\x00" in path:
        raise SolutionFormatError(f"must not contain NUL characters ({path!r})")
    posix = PurePosixPath(path)
    # Reject Windows-style absolute paths too ("C:\\x", "\\\\server\\x"): the
    # same JSON may be materialized on any OS.
    if posix.is_absolute() or PureWindowsPath(path).anchor:
        raise SolutionFormatError(f"must be a relative path (got {path!r})")
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if ".." in parts:
        raise SolutionFormatError(f"must not contain '..' parts (got {path!r})")
    if posix.name in ("", "."):
        raise SolutionFormatError(f"must name a file (got {path!r})")
    return posix


@dataclass(frozen=True)
class SourceFile:
    """One source file of a solution, content inlined."""

    path: str
    content: str

    def __post_init__(self) -> None:
        _require_str(self.path, "path")
        _require_str(self.content, "content", non_empty=False)
        try:
            _normalized_source_path(self.path)
        except SolutionFormatError as exc:
            raise exc.located(field="path") from None

    @property
    def normalized_path(self) -> str:
        """The path with redundant "./" and "//" removed (used for lookups)."""
        return str(PurePosixPath(self.path))


@dataclass(frozen=True)
class BuildSpec:
    """How to build a solution and which symbol to call."""

    language: str
    target_hardware: tuple[str, ...]
    entry_point: str
    dependencies: tuple[str, ...] = ()
    # None: the file does not say. FlashInfer-Bench then means True (its
    # default, and its saver omits defaults) and FlashInfer means False, so
    # the catalog decides from the entry point's parameters instead
    # (calling_style.py).
    destination_passing_style: bool | None = None
    binding: str | None = None
    # Our extension: constraints over the definition's axes (as in a
    # Definition's "constraints") saying where this solution should run,
    # e.g. ["num_tokens <= 128"]; elsewhere the original kernel runs.
    applies_when: tuple[str, ...] = ()
    # Our extension: API arguments this solution deliberately does without
    # (a call setting one still runs the solution); any other argument it
    # cannot receive sends a call that sets it to the original kernel.
    ignored_arguments: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Field names carry the "spec." prefix: a BuildSpec only ever appears
        # as Solution.spec, and that is the path a JSON author sees.
        language = _plain_str(self.language)
        _require_str(language, "spec.language")
        assert isinstance(language, str)
        language = language.strip().lower()
        if language not in SUPPORTED_LANGUAGES:
            raise SolutionFormatError(
                f"must be one of {sorted(SUPPORTED_LANGUAGES)} (got {self.language!r})",
                field="spec.language",
            )
        object.__setattr__(self, "language", language)

        object.__setattr__(
            self,
            "target_hardware",
            _str_tuple(self.target_hardware, "spec.target_hardware"),
        )
        object.__setattr__(
            self, "dependencies", _str_tuple(self.dependencies, "spec.dependencies")
        )

        entry = _require_str(self.entry_point, "spec.entry_point")
        if entry.count("::") != 1:
            raise SolutionFormatError(
                f"must contain exactly one '::' as in 'kernel.py::run' (got {entry!r})",
                field="spec.entry_point",
            )
        entry_file, symbol = entry.split("::")
        if not entry_file.strip():
            raise SolutionFormatError(
                f"has an empty file part (got {entry!r})", field="spec.entry_point"
            )
        if not symbol.isidentifier():
            raise SolutionFormatError(
                f"must end in an identifier after '::' (got {entry!r})",
                field="spec.entry_point",
            )

        if self.destination_passing_style is not None and not isinstance(self.destination_passing_style, bool):
            raise SolutionFormatError(
                f"must be true or false (got {_type_name(self.destination_passing_style)})",
                field="spec.destination_passing_style",
            )

        binding = _plain_str(self.binding)
        if binding is not None:
            _require_str(binding, "spec.binding")
            assert isinstance(binding, str)
            binding = binding.strip().lower()
            if binding not in SUPPORTED_BINDINGS:
                raise SolutionFormatError(
                    f"must be null or one of {sorted(SUPPORTED_BINDINGS)} "
                    f"(got {self.binding!r})",
                    field="spec.binding",
                )
        object.__setattr__(self, "binding", binding)

        applies_when = _str_tuple(self.applies_when, "spec.applies_when")
        if any(not text.strip() for text in applies_when):
            raise SolutionFormatError("must not contain empty expressions", field="spec.applies_when")
        object.__setattr__(self, "applies_when", applies_when)
        ignored = _str_tuple(self.ignored_arguments, "spec.ignored_arguments")
        if any(not name.isidentifier() for name in ignored):
            raise SolutionFormatError("must hold argument names", field="spec.ignored_arguments")
        object.__setattr__(self, "ignored_arguments", ignored)

    @property
    def is_python_family(self) -> bool:
        """True when loaded by importing Python; False for C++/CUDA builds."""
        return self.language in PYTHON_FAMILY_LANGUAGES

    @property
    def entry_file(self) -> str:
        return self.entry_point.split("::")[0]

    @property
    def entry_symbol(self) -> str:
        return self.entry_point.split("::")[1]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BuildSpec:
        if not isinstance(data, Mapping):
            raise SolutionFormatError(
                f"must be an object (got {_type_name(data)})", field="spec"
            )
        for key in ("language", "entry_point"):
            if key not in data:
                raise SolutionFormatError("is missing", field=f"spec.{key}")
        return cls(
            language=data["language"],
            target_hardware=data.get("target_hardware", ()),
            entry_point=data["entry_point"],
            dependencies=data.get("dependencies") or (),
            destination_passing_style=data.get("destination_passing_style"),
            binding=data.get("binding"),
            applies_when=data.get("applies_when") or (),
            ignored_arguments=data.get("ignored_arguments") or (),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "target_hardware": list(self.target_hardware),
            "entry_point": self.entry_point,
            "dependencies": list(self.dependencies),
            # Left out when the source did not say (see the field's comment).
            **({} if self.destination_passing_style is None
               else {"destination_passing_style": self.destination_passing_style}),
            "binding": self.binding,
            # Written only when set: other readers of the schema never see it.
            **({"applies_when": list(self.applies_when)} if self.applies_when else {}),
            **({"ignored_arguments": list(self.ignored_arguments)} if self.ignored_arguments else {}),
        }


@dataclass(frozen=True)
class Solution:
    """A concrete implementation of one FlashInfer-Bench definition."""

    name: str
    definition: str
    author: str
    spec: BuildSpec
    sources: tuple[SourceFile, ...]
    description: str | None = field(default=None)

    def __post_init__(self) -> None:
        _require_str(self.name, "name")
        _require_str(self.definition, "definition")
        _require_str(self.author, "author", non_empty=False)
        if self.description is not None:
            _require_str(self.description, "description", non_empty=False)
        if not isinstance(self.spec, BuildSpec):
            raise SolutionFormatError(
                f"must be a BuildSpec (got {_type_name(self.spec)})", field="spec"
            )
        if isinstance(self.sources, (str, bytes, Mapping)) or not isinstance(
            self.sources, Iterable
        ):
            raise SolutionFormatError(
                f"must be a list of source files (got {_type_name(self.sources)})",
                field="sources",
            )
        sources = tuple(self.sources)
        if not sources:
            raise SolutionFormatError("must contain at least one file", field="sources")

        seen: dict[str, int] = {}
        for i, src in enumerate(sources):
            if not isinstance(src, SourceFile):
                raise SolutionFormatError(
                    f"must be a SourceFile (got {_type_name(src)})",
                    field=f"sources[{i}]",
                )
            # "./k.py" and "k.py" are the same file once written to disk.
            key = src.normalized_path
            if key in seen:
                raise SolutionFormatError(
                    f"duplicates the path of sources[{seen[key]}] ({src.path!r})",
                    field=f"sources[{i}].path",
                )
            seen[key] = i
        object.__setattr__(self, "sources", sources)

        entry_file = str(PurePosixPath(self.spec.entry_file))
        if entry_file not in seen:
            raise SolutionFormatError(
                f"names file {self.spec.entry_file!r}, which is not among the "
                f"sources {[s.path for s in sources]}",
                field="spec.entry_point",
            )

    # -- accessors ---------------------------------------------------------

    @property
    def entry_file(self) -> str:
        """Relative path of the file holding the entry symbol."""
        return self.spec.entry_file

    @property
    def entry_symbol(self) -> str:
        """Function (Python) or exported symbol (C++/CUDA) to call."""
        return self.spec.entry_symbol

    def content_hash(self) -> str:
        """sha256 hex of everything that changes what gets built.

        Used as the cache key for materialized files, imported modules and
        compiled extensions. Name, author, description, definition and
        calling-convention flags are left out on purpose: they do not change
        the artifact, so identical code shares one build.
        """
        cached = self.__dict__.get("_content_hash")
        if cached is None:
            canonical = json.dumps(
                {
                    "language": self.spec.language,
                    "entry_point": self.spec.entry_point,
                    "binding": self.spec.binding,
                    "sources": sorted([s.path, s.content] for s in self.sources),
                },
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
            )
            cached = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
            # Frozen dataclass: bypass __setattr__; a benign race at worst
            # computes the same value twice.
            object.__setattr__(self, "_content_hash", cached)
        return cached

    # -- conversions -------------------------------------------------------

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], origin: str | os.PathLike[str] | None = None
    ) -> Solution:
        """Build from the JSON schema; ``origin`` is named in error messages."""
        try:
            return cls._from_dict(data)
        except SolutionFormatError as exc:
            if origin is None:
                raise
            raise exc.located(origin=origin) from None

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> Solution:
        if not isinstance(data, Mapping):
            raise SolutionFormatError(
                f"a solution must be a JSON object (got {_type_name(data)})"
            )
        for key in ("name", "definition", "author", "spec", "sources"):
            if key not in data:
                raise SolutionFormatError("is missing", field=key)
        raw_sources = data["sources"]
        if isinstance(raw_sources, (str, bytes, Mapping)) or not isinstance(
            raw_sources, Iterable
        ):
            raise SolutionFormatError(
                f"must be a list of {{path, content}} objects (got {_type_name(raw_sources)})",
                field="sources",
            )
        sources: list[SourceFile] = []
        for i, raw in enumerate(raw_sources):
            where = f"sources[{i}]"
            if not isinstance(raw, Mapping):
                raise SolutionFormatError(
                    f"must be an object (got {_type_name(raw)})", field=where
                )
            for key in ("path", "content"):
                if key not in raw:
                    raise SolutionFormatError("is missing", field=f"{where}.{key}")
            try:
                sources.append(SourceFile(path=raw["path"], content=raw["content"]))
            except SolutionFormatError as exc:
                # SourceFile only knows its own field name; prefix the index.
                raise SolutionFormatError(
                    exc.problem, field=f"{where}.{exc.field}"
                ) from None
        return cls(
            name=data["name"],
            definition=data["definition"],
            author=data["author"],
            spec=BuildSpec.from_dict(data["spec"]),
            sources=tuple(sources),
            description=data.get("description"),
        )

    @classmethod
    def from_json_file(cls, path: str | os.PathLike[str]) -> Solution:
        """Read one Solution JSON file; errors name the file (and JSON line)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SolutionFormatError(
                f"cannot be read: {type(exc).__name__}: {exc}", origin=path
            ) from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SolutionFormatError(
                f"is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}",
                origin=path,
            ) from None
        return cls.from_dict(data, origin=path)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``Solution.from_dict(s.to_dict()) == s``."""
        out: dict[str, Any] = {
            "name": self.name,
            "definition": self.definition,
            "author": self.author,
            "spec": self.spec.to_dict(),
            "sources": [{"path": s.path, "content": s.content} for s in self.sources],
        }
        if self.description is not None:
            out["description"] = self.description
        return out

    @classmethod
    def coerce(cls, obj: object) -> Solution:
        """Accept any supported solution shape and return our ``Solution``.

        Supported: ``Solution`` (returned as is), a mapping in the JSON schema,
        a flashinfer-bench pydantic model (``model_dump``) and
        ``flashinfer.trace.Solution`` (``to_dict``). Conversion goes through
        the dict form so every source is validated by the same code.
        """
        if isinstance(obj, Solution):
            return obj
        if isinstance(obj, Mapping):
            return cls.from_dict(obj)
        model_dump = getattr(obj, "model_dump", None)
        if callable(model_dump):
            try:
                # mode="json" turns enum members into their string values;
                # exclude_unset keeps "destination_passing_style not stated"
                # apart from a stated True (FlashInfer-Bench's default).
                data = model_dump(mode="json", exclude_unset=True)
            except TypeError:
                data = model_dump(mode="json")
            return cls.from_dict(data, origin=f"<{_type_name(obj)} object>")
        to_dict = getattr(obj, "to_dict", None)
        if callable(to_dict):
            return cls.from_dict(to_dict(), origin=f"<{_type_name(obj)} object>")
        raise TypeError(
            "expected a Solution, a dict in the Solution JSON schema, a "
            "flashinfer.trace.Solution or a flashinfer-bench Solution "
            f"(got {_type_name(obj)})"
        )
