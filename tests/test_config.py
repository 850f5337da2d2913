"""Enable-time configuration: what the variables mean, what is said at
enable (not at a disable a server never calls), what start-up is spared,
and what a definition's constraint may ask of the evaluator."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, List

import pytest
import torch

import flashinfer
import flashinfer_trace_apply as fita
from flashinfer_trace_apply import api, hardware
from flashinfer_trace_apply.definitions import parse_constraint
from flashinfer_trace_apply.env import ENABLE_VAR, PATH_VAR, read_env

import hook_helpers as h


def rmsnorm(hidden_states, weight, eps=1e-6):
    return hidden_states * weight


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv(ENABLE_VAR, raising=False)
    monkeypatch.delenv(PATH_VAR, raising=False)
    monkeypatch.setenv("FLASHINFER_TRACE_APPLY_CACHE_DIR", str(tmp_path / "cache"))
    yield
    fita.disable_apply()


def _messages(caught: List[Any]) -> str:
    return "\n".join(str(w.message) for w in caught if "flashinfer_trace_apply" in str(w.message))


# -- point 11: the variables ----------------------------------------------------


@pytest.mark.parametrize("value", [" 1", "1 ", "true", "on", "01"])
def test_only_exactly_1_turns_it_on(value: str) -> None:
    setting = read_env({ENABLE_VAR: value})
    assert not setting.requested and value.__repr__() in setting.problem


def test_a_home_relative_path_works_for_the_hook_and_enable_apply_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    h.write_curated_folder(tmp_path / "kernels")
    monkeypatch.setenv(PATH_VAR, "~/kernels")
    monkeypatch.setenv(ENABLE_VAR, "1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert api.enable_from_environment() == 2
    assert fita.is_enabled(), _messages(caught)
    fita.disable_apply()
    assert fita.enable_apply() == 2


# -- point 6: names that can never match are said at enable -----------------------------


def test_names_that_can_never_match_are_reported_at_enable() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fita.enable_apply({"rmsnorm_h64": rmsnorm, "not_a_definition": rmsnorm, "a/b": rmsnorm})
    text = _messages(caught)
    assert "can never match" in text and "not_a_definition" in text and "a/b" in text
    assert "rmsnorm_h64" not in text.split("can never match")[1]


def test_an_empty_mapping_says_that_it_ended_the_session() -> None:
    fita.enable_apply({"rmsnorm_h64": rmsnorm})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fita.enable_apply({}) == 0
    assert not fita.is_enabled()
    assert "no solutions" in _messages(caught) and "previous session has ended" in _messages(caught)


# -- point 9: what enabling is spared ------------------------------------------------------


def test_the_gpu_is_queried_only_when_a_solution_names_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: List[int] = []
    monkeypatch.setattr(hardware, "current_sm", lambda: asked.append(1) or None)
    fita.enable_apply({"rmsnorm_h64": rmsnorm})
    assert asked == []
    solution = h.solution_dict()  # names target_hardware ["cpu"]
    fita.enable_apply({"rmsnorm_h64": solution})
    assert asked == [1]


def test_routes_are_built_only_for_apis_a_registered_name_can_match(monkeypatch: pytest.MonkeyPatch) -> None:
    from flashinfer_trace_apply import dispatch

    built: List[str] = []
    original_init = dispatch.ApiRoute.__init__

    def counting_init(self, spec, context):
        built.append(spec.fi_api)
        original_init(self, spec, context)

    monkeypatch.setattr(dispatch.ApiRoute, "__init__", counting_init)
    fita.enable_apply({"rmsnorm_h64": rmsnorm})
    assert "flashinfer.norm.rmsnorm" in built
    assert len(built) <= 3, built  # not one per API in FlashInfer's registry (well over 100)
    x, w = torch.randn(2, 64), torch.ones(64)
    assert torch.equal(flashinfer.rmsnorm(x, w), x)


# -- point 11: constraints the evaluator will not run ----------------------------------------------

AXES = {"num_tokens": "var", "hidden_size": "const"}


@pytest.mark.parametrize("text", ["9**9**7", "num_tokens ** num_tokens < 5", "len([0] * num_tokens) > 1",
                                  "[0] * 10 == num_tokens", "num_tokens < 10**100", "x" * 600])
def test_constraints_that_could_burn_time_or_memory_are_not_evaluated(text: str) -> None:
    assert parse_constraint(text, AXES) is None


@pytest.mark.parametrize("text", ["num_tokens <= 128", "hidden_size % 64 == 0", "num_tokens ** 2 < 2 ** 20",
                                  "hidden_size in [4096, 8192]", "max(num_tokens, 1) < 2**31"])
def test_ordinary_constraints_still_parse(text: str) -> None:
    assert parse_constraint(text, AXES) is not None


def test_a_bounded_away_constraint_is_reported_at_enable() -> None:
    definition = {
        "name": "rmsnorm_h64",
        "axes": {"batch_size": {"type": "var"}, "hidden_size": {"type": "const", "value": 64}},
        "inputs": {}, "outputs": {},
        "constraints": ["9**9**7 > batch_size"],
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fita.enable_apply({"rmsnorm_h64": rmsnorm}, definitions={"rmsnorm_h64": definition})
    assert "9**9**7" in _messages(caught)


def test_the_fast_launch_variable_is_named_alike_in_env_and_the_kernel_sources() -> None:
    # The bundled kernel sources run without this package, so they restate the name.
    from flashinfer_trace_apply.env import TRITON_FAST_LAUNCH_VAR

    source = (Path(__file__).resolve().parent.parent / "solutions" / "src" / "_fast_launch.py").read_text()
    assert f'"{TRITON_FAST_LAUNCH_VAR}"' in source
