"""Schema tests for flashinfer_trace_apply.solution: parsing, validation, hashing."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from flashinfer_trace_apply.errors import ConfigError, SolutionFormatError
from flashinfer_trace_apply.solution import BuildSpec, Solution, SourceFile


def solution_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "rmsnorm_torch",
        "definition": "rmsnorm_h4096",
        "author": "tests",
        "description": "reference rmsnorm",
        "spec": {
            "language": "python",
            "target_hardware": ["sm90", "NVIDIA_H100"],
            "entry_point": "kernel.py::run",
            "dependencies": ["torch"],
            "destination_passing_style": False,
            "binding": None,
        },
        "sources": [
            {"path": "kernel.py", "content": "def run(x):\n    return x\n"},
            {"path": "util/helpers.py", "content": "X = 1\n"},
        ],
    }
    data.update(overrides)
    return data


def with_spec(**spec_overrides: Any) -> dict[str, Any]:
    data = solution_dict()
    data["spec"] = {**data["spec"], **spec_overrides}
    return data


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


# -- round trip ------------------------------------------------------------


def test_round_trip_to_dict_from_dict() -> None:
    data = solution_dict()
    sol = Solution.from_dict(data)
    assert sol.to_dict() == data
    assert Solution.from_dict(sol.to_dict()) == sol
    # Through real JSON text, too.
    assert Solution.from_dict(json.loads(json.dumps(sol.to_dict()))) == sol


def test_round_trip_without_description() -> None:
    data = solution_dict()
    del data["description"]
    sol = Solution.from_dict(data)
    assert sol.description is None
    assert "description" not in sol.to_dict()
    assert Solution.from_dict(sol.to_dict()) == sol


def test_fields_and_accessors() -> None:
    sol = Solution.from_dict(solution_dict())
    assert sol.entry_file == "kernel.py"
    assert sol.entry_symbol == "run"
    assert sol.spec.language == "python"
    assert type(sol.spec.language) is str
    assert sol.spec.target_hardware == ("sm90", "NVIDIA_H100")
    assert sol.spec.dependencies == ("torch",)
    assert isinstance(sol.sources, tuple)
    assert all(isinstance(s, SourceFile) for s in sol.sources)
    hash(sol)  # frozen and hashable: usable as a dict key


def test_language_is_normalized_to_lowercase() -> None:
    sol = Solution.from_dict(with_spec(language="Triton"))
    assert sol.spec.language == "triton"


def test_empty_target_hardware_and_missing_optionals() -> None:
    data = solution_dict()
    data["spec"] = {"language": "cuda", "entry_point": "kernel.cu::run", "target_hardware": []}
    data["sources"] = [{"path": "kernel.cu", "content": "// cuda\n"}]
    sol = Solution.from_dict(data)
    assert sol.spec.target_hardware == ()
    assert sol.spec.dependencies == ()
    assert sol.spec.binding is None
    # Not stated: decided later from the entry point (calling_style.py),
    # since FlashInfer-Bench reads it as True and FlashInfer as False.
    assert sol.spec.destination_passing_style is None
    assert "destination_passing_style" not in sol.to_dict()["spec"]


@pytest.mark.parametrize(
    ("language", "python_family"),
    [
        ("python", True),
        ("triton", True),
        ("cutedsl", True),
        ("cutile", True),
        ("tilelang", True),
        ("cpp", False),
        ("cuda", False),
        ("cutlass", False),
    ],
)
def test_language_families(language: str, python_family: bool) -> None:
    spec = BuildSpec(language=language, target_hardware=(), entry_point="k.py::run")
    assert spec.is_python_family is python_family


def test_binding_values() -> None:
    assert Solution.from_dict(with_spec(binding="tvm-ffi")).spec.binding == "tvm-ffi"
    assert Solution.from_dict(with_spec(binding="torch")).spec.binding == "torch"


# -- content hash ----------------------------------------------------------


def test_content_hash_is_stable_and_cached() -> None:
    a = Solution.from_dict(solution_dict())
    b = Solution.from_dict(solution_dict())
    h = a.content_hash()
    assert len(h) == 64 and int(h, 16) >= 0
    assert h == b.content_hash()
    assert a.content_hash() is h  # computed once


def test_content_hash_ignores_metadata_and_source_order() -> None:
    base = Solution.from_dict(solution_dict()).content_hash()
    renamed = solution_dict(name="other", author="x", description="y", definition="z")
    assert Solution.from_dict(renamed).content_hash() == base
    reordered = solution_dict()
    reordered["sources"] = list(reversed(reordered["sources"]))
    assert Solution.from_dict(reordered).content_hash() == base
    assert Solution.from_dict(with_spec(target_hardware=["sm100"])).content_hash() == base


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["sources"][0].update(content="def run(x):\n    return -x\n"),
        lambda d: d["sources"][1].update(path="util/other.py"),
        lambda d: d["spec"].update(language="triton"),
        lambda d: d["spec"].update(binding="torch"),
        lambda d: (
            d["spec"].update(entry_point="kernel.py::main"),
            d["sources"][0].update(content="def main(x):\n    return x\n"),
        ),
    ],
)
def test_content_hash_changes_with_build_inputs(change) -> None:
    base = Solution.from_dict(solution_dict()).content_hash()
    data = copy.deepcopy(solution_dict())
    change(data)
    assert Solution.from_dict(data).content_hash() != base


# -- validation: every error names the file and the field -----------------


def _bad_spec(**kw: Any) -> dict[str, Any]:
    return with_spec(**kw)


def _without(key: str) -> dict[str, Any]:
    data = solution_dict()
    del data[key]
    return data


def _sources(*sources: Any) -> dict[str, Any]:
    return solution_dict(sources=list(sources))


BAD_CASES = [
    # (id, data, field named in the message)
    ("unknown-language", _bad_spec(language="fortran"), "spec.language"),
    ("language-not-str", _bad_spec(language=3), "spec.language"),
    ("entry-no-sep", _bad_spec(entry_point="kernel.py"), "spec.entry_point"),
    ("entry-two-seps", _bad_spec(entry_point="kernel.py::a::b"), "spec.entry_point"),
    ("entry-empty-symbol", _bad_spec(entry_point="kernel.py::"), "spec.entry_point"),
    ("entry-not-in-sources", _bad_spec(entry_point="main.py::run"), "spec.entry_point"),
    ("entry-not-str", _bad_spec(entry_point=None), "spec.entry_point"),
    ("hardware-is-str", _bad_spec(target_hardware="sm90"), "spec.target_hardware"),
    ("hardware-item", _bad_spec(target_hardware=["sm90", 90]), "spec.target_hardware[1]"),
    ("deps-item", _bad_spec(dependencies=[1]), "spec.dependencies[0]"),
    ("dps-not-bool", _bad_spec(destination_passing_style="yes"), "spec.destination_passing_style"),
    ("bad-binding", _bad_spec(binding="pybind"), "spec.binding"),
    ("spec-not-object", solution_dict(spec=[]), "spec"),
    ("no-sources", _sources(), "sources"),
    ("sources-not-list", solution_dict(sources="kernel.py"), "sources"),
    (
        "duplicate-path",
        _sources({"path": "kernel.py", "content": "a"}, {"path": "./kernel.py", "content": "b"}),
        "sources[1].path",
    ),
    (
        "absolute-path",
        _sources({"path": "kernel.py", "content": ""}, {"path": "/etc/x.py", "content": ""}),
        "sources[1].path",
    ),
    (
        "parent-path",
        _sources({"path": "kernel.py", "content": ""}, {"path": "../x.py", "content": ""}),
        "sources[1].path",
    ),
    (
        "nested-parent-path",
        _sources({"path": "kernel.py", "content": ""}, {"path": "a/../../x.py", "content": ""}),
        "sources[1].path",
    ),
    ("path-not-str", _sources({"path": 1, "content": ""}), "sources[0].path"),
    ("content-not-str", _sources({"path": "kernel.py", "content": None}), "sources[0].content"),
    ("source-missing-content", _sources({"path": "kernel.py"}), "sources[0].content"),
    ("source-not-object", _sources("kernel.py"), "sources[0]"),
    ("name-not-str", solution_dict(name=5), "name"),
    ("name-empty", solution_dict(name=""), "name"),
    ("definition-not-str", solution_dict(definition=None), "definition"),
    ("author-not-str", solution_dict(author=["a"]), "author"),
    ("description-not-str", solution_dict(description=1), "description"),
    ("missing-name", _without("name"), "name"),
    ("missing-spec", _without("spec"), "spec"),
    ("missing-sources", _without("sources"), "sources"),
]


@pytest.mark.parametrize(("data", "field"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_validation_error_names_file_and_field(tmp_path: Path, data: Any, field: str) -> None:
    path = write_json(tmp_path / "solutions" / "bad.json", data)
    with pytest.raises(SolutionFormatError) as info:
        Solution.from_json_file(path)
    err = info.value
    assert isinstance(err, ConfigError)
    assert err.origin == str(path)
    assert err.field == field
    assert str(err).startswith(f"{path}: {field} ")

    # The same data as a dict: the field is named, and the origin if given.
    with pytest.raises(SolutionFormatError) as info:
        Solution.from_dict(data)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field} ")
    with pytest.raises(SolutionFormatError, match=r"^solutions/x\.json: "):
        Solution.from_dict(data, origin="solutions/x.json")


def test_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "name": "x",\n  "definition": oops\n}\n')
    with pytest.raises(SolutionFormatError) as info:
        Solution.from_json_file(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "line 3" in msg


def test_json_top_level_not_object(tmp_path: Path) -> None:
    path = write_json(tmp_path / "list.json", [solution_dict()])
    with pytest.raises(SolutionFormatError, match="must be a JSON object") as info:
        Solution.from_json_file(path)
    assert str(path) in str(info.value)


def test_unreadable_file_names_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.json"
    with pytest.raises(SolutionFormatError) as info:
        Solution.from_json_file(path)
    assert str(path) in str(info.value)


def test_direct_construction_validates() -> None:
    spec = BuildSpec(language="python", target_hardware=["sm90"], entry_point="k.py::run")
    with pytest.raises(SolutionFormatError, match="^sources "):
        Solution(name="n", definition="d", author="a", spec=spec, sources=())
    with pytest.raises(SolutionFormatError, match="^path "):
        SourceFile(path="../k.py", content="")
    with pytest.raises(SolutionFormatError, match="^spec "):
        Solution(name="n", definition="d", author="a", spec={"language": "python"}, sources=())  # type: ignore[arg-type]
    sol = Solution(
        name="n",
        definition="d",
        author="a",
        spec=spec,
        sources=[SourceFile(path="k.py", content="")],  # type: ignore[arg-type]
    )
    assert sol.sources == (SourceFile(path="k.py", content=""),)


def test_format_error_pickles() -> None:
    try:
        Solution.from_dict(with_spec(language="fortran"), origin="a.json")
    except SolutionFormatError as exc:
        again = pickle.loads(pickle.dumps(exc))
        assert str(again) == str(exc)
        assert again.field == "spec.language" and again.origin == "a.json"
    else:  # pragma: no cover
        pytest.fail("expected SolutionFormatError")


# -- coerce ------------------------------------------------------------------


def test_coerce_passes_our_solution_through() -> None:
    sol = Solution.from_dict(solution_dict())
    assert Solution.coerce(sol) is sol


def test_coerce_from_dict() -> None:
    data = solution_dict()
    assert Solution.coerce(data) == Solution.from_dict(data)


def test_coerce_from_flashinfer_trace_solution() -> None:
    ft = pytest.importorskip("flashinfer.trace")
    theirs = ft.Solution(
        name="rmsnorm_torch",
        definition="rmsnorm_h4096",
        author="tests",
        spec=ft.BuildSpec(
            language="triton",
            target_hardware=["sm90"],
            entry_point="kernel.py::run",
            destination_passing_style=True,
        ),
        sources=[
            ft.SourceFile(path="kernel.py", content="def run(x, out):\n    out.copy_(x)\n")
        ],
        description="from flashinfer",
    )
    ours = Solution.coerce(theirs)
    assert isinstance(ours, Solution)
    assert ours.name == "rmsnorm_torch"
    assert ours.definition == "rmsnorm_h4096"
    assert ours.spec.language == "triton" and type(ours.spec.language) is str
    assert ours.spec.target_hardware == ("sm90",)
    assert ours.spec.destination_passing_style is True
    assert ours.entry_symbol == "run"
    assert ours.sources == (SourceFile("kernel.py", "def run(x, out):\n    out.copy_(x)\n"),)
    assert ours.description == "from flashinfer"


def test_coerce_from_a_flashinfer_bench_solution_keeps_unstated_apart_from_stated() -> None:
    fib = pytest.importorskip("flashinfer_bench")
    spec = {"language": "python", "target_hardware": ["cpu"], "entry_point": "kernel.py::run"}
    sources = [fib.SourceFile(path="kernel.py", content="def run(x):\n    return x\n")]
    unstated = fib.Solution(name="a", definition="d", author="t", spec=fib.BuildSpec(**spec), sources=sources)
    stated = fib.Solution(name="b", definition="d", author="t",
                          spec=fib.BuildSpec(**spec, destination_passing_style=True), sources=sources)
    # FlashInfer-Bench reads both as destination-passing (its default); only
    # the second says so, and only that one must be taken at its word.
    assert unstated.spec.destination_passing_style is True
    assert Solution.coerce(unstated).spec.destination_passing_style is None
    assert Solution.coerce(stated).spec.destination_passing_style is True
    assert Solution.coerce(unstated).sources == (SourceFile("kernel.py", "def run(x):\n    return x\n"),)


def test_coerce_reports_bad_object() -> None:
    class BadDump:
        def to_dict(self) -> dict[str, Any]:
            return with_spec(language="fortran")

    with pytest.raises(SolutionFormatError, match=r"<BadDump object>: spec\.language"):
        Solution.coerce(BadDump())
    with pytest.raises(TypeError):
        Solution.coerce(42)
