"""A curated folder's policy file: our rules, kept out of the shared schema.

FlashInfer-Bench and FlashInfer read and re-save Definitions and Solutions
with their own models, which allow one dtype per tensor and drop fields they
do not know (a Solution's ``applies_when`` included). What this plugin adds
to routing therefore lives in ``trace_apply.yaml`` beside ``solutions/``,
which those tools never rewrite:

    version: 1
    definitions:
      silu_and_mul_h12288:
        dtypes:                      # input -> the dtypes it may have
          input: [bfloat16, float16]
        applies_when:                # where the solution beats FlashInfer's kernel
          - num_tokens <= 128

Every key is checked: an unknown key or a bad value is an error naming the
file, the key and its line. New per-definition keys are added by giving
``DEFINITION_KEYS`` a parser (and ``DefinitionPolicy`` a field); new
top-level sections by extending ``TOP_KEYS``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from .errors import ConfigError

__all__ = ["POLICY_FILE", "DTYPE_NAMES", "PolicyError", "DefinitionPolicy", "FolderPolicy", "load_policy", "parse_policy", "dump_policy"]

POLICY_FILE = "trace_apply.yaml"
VERSION = 1
# The dtype names a Definition may use (FlashInfer-Bench's DType, plus the
# few torch dtypes FlashInfer's templates also name).
DTYPE_NAMES = frozenset({
    "float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float4_e2m1",
    "int64", "int32", "int16", "int8", "uint8", "bool",
})


class PolicyError(ConfigError):
    """The policy file is malformed; the message names file, key and line."""


@dataclass(frozen=True)
class DefinitionPolicy:
    """What the policy says about one definition."""

    # input name -> dtypes it may have (replaces the Definition's one dtype)
    dtypes: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)
    # constraints over the definition's axes where the solution is routed
    applies_when: Tuple[str, ...] = ()
    # operating policy (see policy_settings): None leaves the environment's
    verify: Optional[int] = None
    on_error: Optional[str] = None
    breaker: Optional[str] = None
    prebuild: Optional[bool] = None
    # 1-based line of each key, for errors found later (an unknown input)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def operating(self) -> Dict[str, Any]:
        """The operating keys this definition sets."""
        return {k: getattr(self, k) for k in ("verify", "on_error", "breaker", "prebuild") if getattr(self, k) is not None}

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        if self.dtypes:
            out["dtypes"] = {k: list(v) for k, v in self.dtypes.items()}
        if self.applies_when:
            out["applies_when"] = list(self.applies_when)
        out.update(self.operating())
        return out


@dataclass(frozen=True)
class FolderPolicy:
    """The whole file (empty when the folder has none)."""

    definitions: Mapping[str, DefinitionPolicy] = field(default_factory=dict)
    path: Optional[Path] = None
    # fnmatch patterns over definition names: only allowed, not denied, names route
    allow: Tuple[str, ...] = ()
    deny: Tuple[str, ...] = ()

    def admits(self, definition: str) -> bool:
        from fnmatch import fnmatchcase  # noqa: PLC0415

        if self.allow and not any(fnmatchcase(definition, p) for p in self.allow):
            return False
        return not any(fnmatchcase(definition, p) for p in self.deny)

    def get(self, definition: str) -> DefinitionPolicy:
        return self.definitions.get(definition) or DefinitionPolicy()

    def where(self, definition: str, key: str) -> str:
        """``file:line`` of a definition's key, for error messages."""
        line = self.get(definition).lines.get(key)
        return f"{self.path}:{line}" if line else str(self.path or POLICY_FILE)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"version": VERSION}
        if self.allow:
            out["allow"] = list(self.allow)
        if self.deny:
            out["deny"] = list(self.deny)
        out["definitions"] = {n: p.to_dict() for n, p in sorted(self.definitions.items()) if p.to_dict()}
        return out


# -- parsing -----------------------------------------------------------------


class _Located:
    """Raises PolicyError at a node's line."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, node: Any, where: str, problem: str) -> PolicyError:
        line = node.start_mark.line + 1 if node is not None else None
        at = f"{self.origin}:{line}" if line else self.origin
        return PolicyError(f"{at}: {where} {problem}")


def _construct(node: Any) -> Any:
    import yaml  # noqa: PLC0415

    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _mapping(loc: _Located, node: Any, where: str) -> Dict[str, Tuple[Any, Any]]:
    """key -> (key node, value node); keys must be unique strings."""
    import yaml  # noqa: PLC0415

    if not isinstance(node, yaml.MappingNode):
        raise loc.fail(node, where, "must be a mapping of keys to values")
    out: Dict[str, Tuple[Any, Any]] = {}
    for key_node, value_node in node.value:
        key = _construct(key_node) if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(key, str) or not key:
            raise loc.fail(key_node, where, f"has a key that is not a name ({key!r})")
        if key in out:
            raise loc.fail(key_node, f"{where}.{key}" if where else key, "is given twice")
        out[key] = (key_node, value_node)
    return out


def _string_list(loc: _Located, node: Any, where: str) -> Tuple[str, ...]:
    import yaml  # noqa: PLC0415

    if not isinstance(node, yaml.SequenceNode):
        raise loc.fail(node, where, "must be a list")
    items = []
    for i, item in enumerate(node.value):
        value = _construct(item) if isinstance(item, yaml.ScalarNode) else None
        if not isinstance(value, str) or not value.strip():
            raise loc.fail(item, f"{where}[{i}]", f"must be a non-empty string (got {value!r})")
        items.append(value.strip())
    return tuple(items)


def _parse_dtypes(loc: _Located, node: Any, where: str) -> Mapping[str, Tuple[str, ...]]:
    out: Dict[str, Tuple[str, ...]] = {}
    for name, (_, value_node) in _mapping(loc, node, where).items():
        names = _string_list(loc, value_node, f"{where}.{name}")
        if not names:
            raise loc.fail(value_node, f"{where}.{name}", "must list at least one dtype")
        unknown = [n for n in names if n not in DTYPE_NAMES]
        if unknown:
            raise loc.fail(value_node, f"{where}.{name}", f"names unknown dtype(s) {unknown} (known: {sorted(DTYPE_NAMES)})")
        out[name] = names
    return out


def _parse_expressions(loc: _Located, node: Any, where: str) -> Tuple[str, ...]:
    import ast  # noqa: PLC0415

    texts = _string_list(loc, node, where)
    for i, text in enumerate(texts):
        try:
            ast.parse(text, mode="eval")
        except SyntaxError as exc:
            raise loc.fail(node.value[i], f"{where}[{i}]", f"is not an expression ({text!r}: {exc.msg})") from None
    return texts


def _parse_verify(loc: _Located, node: Any, where: str) -> int:
    value = _construct(node)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise loc.fail(node, where, f"must be a whole number of calls to compare, 0 or more (got {value!r})")
    return value


def _parse_on_error(loc: _Located, node: Any, where: str) -> str:
    value = _construct(node)
    if value not in ("raise", "fallback"):
        raise loc.fail(node, where, f"must be 'raise' or 'fallback' (got {value!r})")
    return value


def _parse_breaker(loc: _Located, node: Any, where: str) -> str:
    from .policy_settings import parse_breaker  # noqa: PLC0415

    value = str(_construct(node))
    try:
        parse_breaker(value, where)
    except ConfigError as exc:
        raise loc.fail(node, where, f"must be 'ERRORS,WINDOW_S,COOLDOWN_S' ({exc})") from None
    return value


def _parse_bool(loc: _Located, node: Any, where: str) -> bool:
    value = _construct(node)
    if not isinstance(value, bool):
        raise loc.fail(node, where, f"must be true or false (got {value!r})")
    return value


# Per-definition keys and their parsers.
DEFINITION_KEYS: Dict[str, Callable[[_Located, Any, str], Any]] = {
    "dtypes": _parse_dtypes,
    "applies_when": _parse_expressions,
    "verify": _parse_verify,
    "on_error": _parse_on_error,
    "breaker": _parse_breaker,
    "prebuild": _parse_bool,
}
TOP_KEYS = ("version", "allow", "deny", "definitions")


def parse_policy(text: str, origin: str | os.PathLike[str] = POLICY_FILE) -> FolderPolicy:
    """Parse and validate the policy file's text."""
    import yaml  # noqa: PLC0415

    origin = os.fspath(origin)
    loc = _Located(origin)
    try:
        # libyaml's loader when PyYAML has it: the same nodes and marks, about
        # ten times faster on the bundled folder's file (read at every enable).
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{origin}:{mark.line + 1}" if mark is not None else origin
        raise PolicyError(f"{at}: is not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if root is None:
        return FolderPolicy(path=Path(origin))
    top = _mapping(loc, root, "the file")
    for key, (key_node, _) in top.items():
        if key not in TOP_KEYS:
            raise loc.fail(key_node, key, f"is not a known key (known: {', '.join(TOP_KEYS)})")
    if "version" in top:
        version = _construct(top["version"][1])
        if version != VERSION:
            raise loc.fail(top["version"][1], "version", f"must be {VERSION} (got {version!r})")
    definitions: Dict[str, DefinitionPolicy] = {}
    if "definitions" in top:
        for name, (_, body) in _mapping(loc, top["definitions"][1], "definitions").items():
            values: Dict[str, Any] = {}
            lines: Dict[str, int] = {}
            for key, (key_node, value_node) in _mapping(loc, body, f"definitions.{name}").items():
                parser = DEFINITION_KEYS.get(key)
                if parser is None:
                    raise loc.fail(key_node, f"definitions.{name}.{key}", f"is not a known key (known: {', '.join(DEFINITION_KEYS)})")
                values[key] = parser(loc, value_node, f"definitions.{name}.{key}")
                lines[key] = key_node.start_mark.line + 1
            definitions[name] = DefinitionPolicy(lines=lines, **values)
    patterns = {key: _string_list(loc, top[key][1], key) for key in ("allow", "deny") if key in top}
    return FolderPolicy(definitions=definitions, path=Path(origin), **patterns)


def load_policy(folder: str | os.PathLike[str]) -> FolderPolicy:
    """The folder's ``trace_apply.yaml``, or an empty policy if it has none."""
    path = Path(folder).expanduser() / POLICY_FILE
    if not path.is_file():
        return FolderPolicy()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot be read: {type(exc).__name__}: {exc}") from exc
    return parse_policy(text, path)


HEADER = (
    "# flashinfer-trace-apply's rules for this folder (FlashInfer-Bench and FlashInfer\n"
    "# do not read or rewrite this file). Per definition: dtypes (input -> the dtypes\n"
    "# it may have), applies_when (constraints over the definition's axes where\n"
    "# its solution is routed; elsewhere FlashInfer's kernel runs), verify, on_error,\n"
    "# breaker, prebuild; top-level allow/deny patterns over definition names.\n"
)


def dump_policy(policy: FolderPolicy | Mapping[str, Any]) -> str:
    """The file's text (stable order, so regenerated folders diff cleanly)."""
    import yaml  # noqa: PLC0415

    data = policy.to_dict() if isinstance(policy, FolderPolicy) else dict(policy)
    return HEADER + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
