"""Tests for flashinfer_trace_apply.catalog on real folders in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flashinfer_trace_apply.catalog import load_definitions, load_solutions
from flashinfer_trace_apply.errors import (
    ConfigError,
    DuplicateSolutionError,
    SolutionFormatError,
)
from flashinfer_trace_apply.solution import Solution


def solution_dict(definition: str, name: str | None = None) -> dict[str, Any]:
    return {
        "name": name or f"{definition}_impl",
        "definition": definition,
        "author": "tests",
        "spec": {
            "language": "python",
            "target_hardware": [],
            "entry_point": "kernel.py::run",
            "dependencies": [],
            "destination_passing_style": False,
            "binding": None,
        },
        "sources": [{"path": "kernel.py", "content": "def run(x):\n    return x\n"}],
    }


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_loads_nested_solutions(tmp_path: Path) -> None:
    write_json(tmp_path / "solutions" / "a.json", solution_dict("rmsnorm_h4096"))
    write_json(tmp_path / "solutions" / "norm" / "b.json", solution_dict("rmsnorm_h8192"))
    write_json(
        tmp_path / "solutions" / "gemm" / "deep" / "c.json", solution_dict("gemm_n128")
    )
    (tmp_path / "solutions" / "README.md").write_text("not json, ignored")

    found = load_solutions(tmp_path)
    assert sorted(found) == ["gemm_n128", "rmsnorm_h4096", "rmsnorm_h8192"]
    assert all(isinstance(s, Solution) for s in found.values())
    assert found["rmsnorm_h8192"].name == "rmsnorm_h8192_impl"
    # str paths work as well as Path objects
    assert load_solutions(str(tmp_path)) == found


def test_duplicate_definition_names_both_files(tmp_path: Path) -> None:
    first = write_json(tmp_path / "solutions" / "a" / "x.json", solution_dict("d1", "one"))
    second = write_json(tmp_path / "solutions" / "b" / "y.json", solution_dict("d1", "two"))
    with pytest.raises(DuplicateSolutionError) as info:
        load_solutions(tmp_path)
    err = info.value
    assert isinstance(err, ConfigError)
    msg = str(err)
    assert str(first) in msg and str(second) in msg and "'d1'" in msg
    assert (err.definition, err.first, err.second) == ("d1", str(first), str(second))


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_solutions(missing)
    assert str(missing) in str(info.value)


def test_folder_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        load_solutions(file)


def test_missing_solutions_subdirectory(tmp_path: Path) -> None:
    (tmp_path / "definitions").mkdir()
    with pytest.raises(ConfigError) as info:
        load_solutions(tmp_path)
    assert str(tmp_path / "solutions") in str(info.value)


def test_empty_solutions_directory(tmp_path: Path) -> None:
    (tmp_path / "solutions" / "empty_subdir").mkdir(parents=True)
    assert load_solutions(tmp_path) == {}


def test_malformed_solution_file_names_file(tmp_path: Path) -> None:
    write_json(tmp_path / "solutions" / "good.json", solution_dict("d1"))
    bad = solution_dict("d2")
    bad["spec"]["entry_point"] = "kernel.py"
    bad_path = write_json(tmp_path / "solutions" / "sub" / "bad.json", bad)
    with pytest.raises(SolutionFormatError) as info:
        load_solutions(tmp_path)
    assert str(info.value).startswith(f"{bad_path}: spec.entry_point")


def test_invalid_json_solution_file(tmp_path: Path) -> None:
    path = tmp_path / "solutions" / "broken.json"
    path.parent.mkdir()
    path.write_text("{")
    with pytest.raises(SolutionFormatError, match="line 1") as info:
        load_solutions(tmp_path)
    assert str(path) in str(info.value)


# -- definitions ---------------------------------------------------------------


def definition_dict(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "op_type": "rmsnorm",
        "axes": {"batch_size": {"type": "var"}, "hidden_size": {"type": "const", "value": 4096}},
        "inputs": {"hidden_states": {"shape": ["batch_size", "hidden_size"], "dtype": "bfloat16"}},
        "outputs": {"output": {"shape": ["batch_size", "hidden_size"], "dtype": "bfloat16"}},
        "reference": "def run(hidden_states):\n    return hidden_states\n",
    }


def test_load_definitions_nested(tmp_path: Path) -> None:
    write_json(tmp_path / "definitions" / "rmsnorm_h4096.json", definition_dict("rmsnorm_h4096"))
    write_json(tmp_path / "definitions" / "gemm" / "g.json", definition_dict("gemm_n128"))
    found = load_definitions(tmp_path)
    assert sorted(found) == ["gemm_n128", "rmsnorm_h4096"]
    assert found["rmsnorm_h4096"] == definition_dict("rmsnorm_h4096")


def test_load_definitions_missing_directory(tmp_path: Path) -> None:
    (tmp_path / "solutions").mkdir()
    assert load_definitions(tmp_path) == {}


def test_load_definitions_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_definitions(tmp_path / "nope")


def test_load_definitions_duplicate_names_both_files(tmp_path: Path) -> None:
    a = write_json(tmp_path / "definitions" / "a.json", definition_dict("d"))
    b = write_json(tmp_path / "definitions" / "b" / "b.json", definition_dict("d"))
    with pytest.raises(ConfigError) as info:
        load_definitions(tmp_path)
    assert str(a) in str(info.value) and str(b) in str(info.value)


def test_load_definitions_malformed_json_names_file(tmp_path: Path) -> None:
    path = tmp_path / "definitions" / "bad.json"
    path.parent.mkdir()
    path.write_text('{"name": ')
    with pytest.raises(ConfigError) as info:
        load_definitions(tmp_path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("data", [[1, 2], {"op_type": "x"}, {"name": 3}])
def test_load_definitions_needs_object_with_name(tmp_path: Path, data: Any) -> None:
    path = write_json(tmp_path / "definitions" / "x.json", data)
    with pytest.raises(ConfigError) as info:
        load_definitions(tmp_path)
    assert str(path) in str(info.value)
