"""Operating policies on real FlashInfer APIs: verify the first N hits against
the original, and on_error: fallback behind a circuit breaker.

FlashInfer's kernels need CUDA, so on CPU the original at
``flashinfer.norm.rmsnorm`` is FlashInfer's own torch reference for the
template, installed at the attribute in the API's place (``functools.wraps``,
as FlashInfer's decorators are); the GPU run uses the real kernels.
"""

from __future__ import annotations

import functools
import time
import warnings

import pytest
import torch

import flashinfer
import flashinfer_trace_apply as fita
from flashinfer_trace_apply.env import BREAKER_VAR, ON_ERROR_VAR, VERIFY_VAR
from flashinfer_trace_apply.errors import ConfigError

API = "flashinfer.norm.rmsnorm"


@pytest.fixture(autouse=True)
def cpu_original(monkeypatch: pytest.MonkeyPatch):
    public = flashinfer.norm.rmsnorm
    calls = []

    @functools.wraps(public)
    def rmsnorm(input, weight, eps=1e-6, out=None, enable_pdl=None):
        calls.append(tuple(input.shape))
        x = input.float()
        y = (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(input.dtype)
        if out is not None:
            out.copy_(y)
            return out
        return y

    monkeypatch.setattr(flashinfer.norm, "rmsnorm", rmsnorm)
    monkeypatch.setattr(flashinfer, "rmsnorm", rmsnorm)
    for var in (VERIFY_VAR, ON_ERROR_VAR, BREAKER_VAR):
        monkeypatch.delenv(var, raising=False)
    yield calls
    fita.disable_apply()


def reference(x, w, eps=1e-6):
    y = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps) * w.float()
    return y.to(x.dtype)


def wrong_at_h128(hidden_states, weight, eps=1e-6):
    y = reference(hidden_states, weight, eps)
    return y * 2 if hidden_states.shape[-1] == 128 else y


def test_verify_catches_a_solution_wrong_at_one_shape_and_turns_only_it_off(monkeypatch, cpu_original) -> None:
    monkeypatch.setenv(VERIFY_VAR, "2")
    fita.enable_apply({"rmsnorm_h64": wrong_at_h128, "rmsnorm_h128": wrong_at_h128})
    x64, w64 = torch.randn(3, 64, dtype=torch.bfloat16), torch.rand(64, dtype=torch.bfloat16)
    x128, w128 = torch.randn(3, 128, dtype=torch.bfloat16), torch.rand(128, dtype=torch.bfloat16)
    for _ in range(3):
        assert torch.equal(flashinfer.rmsnorm(x64, w64), reference(x64, w64))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            # The caller always gets the original's result: never the wrong one.
            assert torch.equal(flashinfer.rmsnorm(x128, w128), reference(x128, w128))
    said = [str(w.message) for w in caught if "disagrees" in str(w.message)]
    assert len(said) == 1 and "rmsnorm_h128" in said[0] and "(3, 128)" in said[0] and "max error" in said[0]
    counts = fita.stats()[API]
    assert counts["verify_pending"] == 2 + 1  # two at h64, one at h128
    assert counts["verify_mismatch"] == 1 and counts["fallback_turned_off"] == 2
    assert counts["hit"] == 1  # h64's third call, after it was verified
    state = fita.health()
    assert state["rmsnorm_h64"]["off"] is None and state["rmsnorm_h64"]["verified_shapes"] == 1
    assert "max error" in state["rmsnorm_h128"]["off"]


def test_verify_compares_out_buffers_and_never_writes_the_solution_s_values(monkeypatch) -> None:
    monkeypatch.setenv(VERIFY_VAR, "1")
    fita.enable_apply({"rmsnorm_h128": wrong_at_h128})
    x, w = torch.randn(2, 128, dtype=torch.bfloat16), torch.rand(128, dtype=torch.bfloat16)
    out = torch.empty_like(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert flashinfer.rmsnorm(x, w, out=out) is out
    assert torch.equal(out, reference(x, w))
    assert fita.health()["rmsnorm_h128"]["off"] is not None


def test_fallback_runs_the_original_and_the_circuit_opens_then_half_opens(monkeypatch, cpu_original) -> None:
    monkeypatch.setenv(ON_ERROR_VAR, "fallback")
    monkeypatch.setenv(BREAKER_VAR, "2,60,0.3")
    solution_calls = []
    failing = [True]

    def flaky(hidden_states, weight, eps=1e-6):
        solution_calls.append(1)
        if failing[0]:
            raise RuntimeError("kernel launch failed")
        return reference(hidden_states, weight, eps)

    fita.enable_apply({"rmsnorm_h64": flaky})
    x, w = torch.randn(2, 64), torch.rand(64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(4):
            assert torch.equal(flashinfer.rmsnorm(x, w), reference(x, w))
    assert len(solution_calls) == 2  # two errors opened the circuit; the next two never reached it
    said = [str(w.message) for w in caught]
    assert sum("kernel launch failed" in m for m in said) == 1  # warned once
    assert any("circuit open" in m for m in said)
    assert fita.health()["rmsnorm_h64"]["circuit"] == "open"
    counts = fita.stats()[API]
    assert counts["fallback_error"] == 2 and counts["fallback_circuit_open"] == 2

    time.sleep(0.35)
    failing[0] = False
    flashinfer.rmsnorm(x, w)  # the half-open probe succeeds
    assert len(solution_calls) == 3 and fita.health()["rmsnorm_h64"]["circuit"] == "closed"
    flashinfer.rmsnorm(x, w)
    assert len(solution_calls) == 4


def test_a_failed_probe_opens_the_circuit_again(monkeypatch) -> None:
    monkeypatch.setenv(ON_ERROR_VAR, "fallback")
    monkeypatch.setenv(BREAKER_VAR, "1,60,0.2")

    def broken(hidden_states, weight, eps=1e-6):
        raise RuntimeError("still broken")

    fita.enable_apply({"rmsnorm_h64": broken})
    x, w = torch.randn(2, 64), torch.rand(64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flashinfer.rmsnorm(x, w)
        assert fita.health()["rmsnorm_h64"]["circuit"] == "open"
        time.sleep(0.25)
        flashinfer.rmsnorm(x, w)  # the probe fails
    assert fita.health()["rmsnorm_h64"]["circuit"] == "open"
    assert fita.health()["rmsnorm_h64"]["errors"] == 2


def test_strict_stays_the_default() -> None:
    def broken(hidden_states, weight, eps=1e-6):
        raise RuntimeError("strict")

    fita.enable_apply({"rmsnorm_h64": broken})
    with pytest.raises(RuntimeError, match="strict"):
        flashinfer.rmsnorm(torch.randn(2, 64), torch.rand(64))


@pytest.mark.parametrize("var,value", [(VERIFY_VAR, "-1"), (VERIFY_VAR, "some"), (ON_ERROR_VAR, "ignore"),
                                       (BREAKER_VAR, "5,60"), (BREAKER_VAR, "5,0,30")])
def test_bad_policy_values_are_errors_naming_the_variable(monkeypatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=var):
        fita.enable_apply({"rmsnorm_h64": reference})
    assert not fita.is_enabled()


def test_turning_a_definition_off_puts_every_promoted_shape_back_on_the_original() -> None:
    from flashinfer_trace_apply.definition_state import DefinitionHealth
    from flashinfer_trace_apply.policy_settings import Breaker

    state = DefinitionHealth("rmsnorm_h64", Breaker())
    demoted = []
    state.add_demoter(lambda: demoted.append("bf16"))
    assert state.turn_off("max error 1") and demoted == ["bf16"]
    assert not state.turn_off("again")  # said once
    state.add_demoter(lambda: demoted.append("fp16"))  # promoted after the mismatch: demoted at once
    assert demoted == ["bf16", "fp16"]


def test_the_folder_policy_sets_allow_deny_verify_and_on_error_per_definition(tmp_path, monkeypatch, capsys) -> None:
    import hook_helpers as h
    from flashinfer_trace_apply.cli import main

    folder = h.write_curated_folder(tmp_path / "curated", h.solution_dict(definition="rmsnorm_h64", name="norm64",
                                                                         source=h.RMSNORM_SOURCE))
    h.write_json(folder / "solutions" / "fused" / "f.json",
                 h.solution_dict(definition="fused_add_rmsnorm_h64", name="fused64", source=h.RMSNORM_SOURCE))
    (folder / "trace_apply.yaml").write_text(
        "version: 1\ndeny: [fused_*]\ndefinitions:\n  rmsnorm_h64:\n    verify: 1\n    on_error: fallback\n"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fita.enable_apply(str(folder))
    assert any("left out by the folder policy" in str(w.message) and "fused_add_rmsnorm_h64" in str(w.message)
               for w in caught)
    assert not hasattr(flashinfer.fused_add_rmsnorm, "__fita_route__")
    x, w = torch.randn(2, 64), torch.rand(64)
    flashinfer.rmsnorm(x, w)  # verified once against the original, then trusted
    flashinfer.rmsnorm(x, w)
    counts = fita.stats()[API]
    assert counts["verify_pending"] == 1 and counts["hit"] == 1
    assert fita.health()["rmsnorm_h64"]["verified_shapes"] == 1

    assert main(["list", str(folder)]) == 0
    listed = capsys.readouterr().out
    assert "rmsnorm_h64\tnorm64\tpython\tverify: 1\ton_error: fallback" in listed
    assert "fused_add_rmsnorm_h64\tfused64\tpython\toff: left out by the policy's allow/deny" in listed
