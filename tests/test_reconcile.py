"""Results reach the caller in the API's own convention, through the real
FlashInfer APIs on CPU tensors (a routed call never touches a CUDA kernel)."""

from __future__ import annotations

import pytest
import torch

import flashinfer
import flashinfer_trace_apply as fita
from flashinfer_trace_apply.errors import SolutionCallError

from solution_files import RMSNORM_DPS_SOURCE, RMSNORM_SOURCE, solution_dict, write_solution

H = 64


def torch_rmsnorm(hidden_states, weight, eps=1e-6):
    x = hidden_states.float()
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return (y * weight.float()).to(hidden_states.dtype)


def inputs(batch=4, dtype=torch.bfloat16):
    torch.manual_seed(0)
    return torch.randn(batch, H, dtype=dtype), torch.randn(H, dtype=dtype)


def test_rmsnorm_value_returning():
    fita.enable_apply({f"rmsnorm_h{H}": torch_rmsnorm})
    x, w = inputs()
    y = flashinfer.rmsnorm(x, w)
    assert torch.equal(y, torch_rmsnorm(x, w))
    assert fita.stats()["flashinfer.norm.rmsnorm"]["hit"] == 1


def test_rmsnorm_out_buffer_is_filled_and_returned():
    fita.enable_apply({f"rmsnorm_h{H}": torch_rmsnorm})
    x, w = inputs()
    buf = torch.zeros_like(x)
    result = flashinfer.norm.rmsnorm(x, w, eps=1e-5, out=buf)
    assert result is buf
    assert torch.equal(buf, torch_rmsnorm(x, w, eps=1e-5))


def test_call_arguments_reach_the_solution():
    seen = {}

    def solution(hidden_states, weight, eps=1e-6, enable_pdl=None):
        seen.update(eps=eps, enable_pdl=enable_pdl)
        return torch_rmsnorm(hidden_states, weight, eps)

    fita.enable_apply({f"rmsnorm_h{H}": solution})
    x, w = inputs()
    flashinfer.rmsnorm(x, w, eps=1.0, enable_pdl=True)
    assert seen == {"eps": 1.0, "enable_pdl": True}


def test_fused_add_rmsnorm_writes_back_in_place():
    def solution(hidden_states, residual, weight, eps=1e-6):
        added = (hidden_states.float() + residual.float()).to(hidden_states.dtype)
        return torch_rmsnorm(added, weight, eps), added

    fita.enable_apply({f"fused_add_rmsnorm_h{H}": solution})
    x, w = inputs()
    residual = torch.randn_like(x)
    x_in, r_in = x.clone(), residual.clone()
    expected_residual = (x.float() + residual.float()).to(x.dtype)
    assert flashinfer.fused_add_rmsnorm(x_in, r_in, w) is None
    assert torch.equal(r_in, expected_residual)
    assert torch.equal(x_in, torch_rmsnorm(expected_residual, w))


def test_in_place_solution_returning_too_few_results_is_an_error_not_a_half_update():
    fita.enable_apply({f"fused_add_rmsnorm_h{H}": lambda hidden_states, residual, weight: torch_rmsnorm(hidden_states, weight)})
    x, w = inputs()
    residual = torch.randn_like(x)
    x_in, r_in = x.clone(), residual.clone()
    with pytest.raises(SolutionCallError, match=r"fused_add_rmsnorm_h64.*returned 1 result"):
        flashinfer.fused_add_rmsnorm(x_in, r_in, w)
    assert torch.equal(x_in, x) and torch.equal(r_in, residual)
    assert fita.stats()["flashinfer.norm.fused_add_rmsnorm"]["error"] == 1


def test_wrong_shape_for_out_buffer_is_not_broadcast():
    fita.enable_apply({f"rmsnorm_h{H}": lambda hidden_states, weight: torch_rmsnorm(hidden_states[:1], weight)})
    x, w = inputs()
    buf = torch.zeros_like(x)
    with pytest.raises(SolutionCallError, match=r"rmsnorm.*rmsnorm_h64.*does not match the destination"):
        flashinfer.rmsnorm(x, w, out=buf)
    assert torch.count_nonzero(buf) == 0


def test_wrong_result_dtype_is_an_error():
    fita.enable_apply({f"rmsnorm_h{H}": lambda hidden_states, weight: torch_rmsnorm(hidden_states, weight).double()})
    x, w = inputs()
    with pytest.raises(SolutionCallError, match="dtype"):
        flashinfer.rmsnorm(x, w)


def test_return_lse_arity_and_lse_buffer():
    """cudnn_batch_prefill_with_kv_cache returns (out, lse-or-None)."""
    heads, dim = 4, 64
    calls = []

    def solution(q, k_cache, v_cache, scale, return_lse=False, **_):
        calls.append(return_lse)
        out = q * scale
        lse = torch.ones(q.shape[0], q.shape[1], dtype=torch.float32)
        return (out, lse) if return_lse else out

    fita.enable_apply({f"cudnn_batch_prefill_h{heads}_kv{heads}_d{dim}_ps16": solution})
    q = torch.randn(5, heads, dim, dtype=torch.bfloat16)
    cache = torch.randn(2, heads, 16, dim, dtype=torch.bfloat16)
    api = flashinfer.cudnn.prefill.cudnn_batch_prefill_with_kv_cache
    common = dict(max_token_per_sequence=5, max_sequence_kv=32, causal=True)
    out, lse = api(q, cache, cache, 0.5, None, return_lse=False, **common)
    assert lse is None and torch.equal(out, q * 0.5)
    out_buf, lse_buf = torch.empty_like(q), torch.zeros(5, heads)
    out, lse = api(q, cache, cache, 0.5, None, return_lse=True, out=out_buf, lse=lse_buf, **common)
    assert out is out_buf and lse is lse_buf and torch.all(lse_buf == 1)
    assert calls == [False, True]


def test_merge_state_returns_the_pair():
    def solution(v_a, s_a, v_b, s_b):
        return v_a + v_b, s_a + s_b

    fita.enable_apply({"merge_state_h8_d64": solution})
    v = torch.randn(3, 8, 64, dtype=torch.bfloat16)
    s = torch.randn(3, 8, dtype=torch.float32)
    v_out, s_out = flashinfer.merge_state(v, s, v, s)
    assert torch.equal(v_out, v + v) and torch.equal(s_out, s + s)


def test_python_solution_json_loaded_from_a_folder(tmp_path):
    write_solution(tmp_path, "norm/rmsnorm.json", solution_dict(f"rmsnorm_h{H}", RMSNORM_SOURCE))
    solutions = fita.load_solutions(tmp_path)
    assert list(solutions) == [f"rmsnorm_h{H}"]
    fita.enable_apply(solutions)
    x, w = inputs()
    assert torch.equal(flashinfer.rmsnorm(x, w), torch_rmsnorm(x, w))
    buf = torch.empty_like(x)
    assert flashinfer.rmsnorm(x, w, out=buf) is buf and torch.equal(buf, torch_rmsnorm(x, w))


def test_destination_passing_solution_json(tmp_path):
    write_solution(tmp_path, "rmsnorm_dps.json", solution_dict(f"rmsnorm_h{H}", RMSNORM_DPS_SOURCE, dps=True))
    fita.enable_apply(fita.load_solutions(tmp_path))
    x, w = inputs()
    allocated = flashinfer.rmsnorm(x, w)  # no out=: the plugin allocates
    assert allocated.dtype == x.dtype and torch.equal(allocated, torch_rmsnorm(x, w))
    buf = torch.empty_like(x)
    assert flashinfer.rmsnorm(x, w, out=buf) is buf and torch.equal(buf, torch_rmsnorm(x, w))


def test_solution_that_raises_keeps_its_exception_type_and_names_the_route():
    def broken(hidden_states, weight):
        raise MemoryError("boom")

    fita.enable_apply({f"rmsnorm_h{H}": broken})
    x, w = inputs()
    with pytest.raises(MemoryError) as info:
        flashinfer.rmsnorm(x, w)
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "flashinfer.norm.rmsnorm" in notes and f"rmsnorm_h{H}" in notes and "broken" in notes
    assert fita.stats()["flashinfer.norm.rmsnorm"]["error"] == 1


def test_solution_that_fails_to_load_names_api_definition_and_solution(tmp_path):
    write_solution(tmp_path, "bad.json", solution_dict(f"rmsnorm_h{H}", "raise ImportError('nope')", name="bad_sol"))
    fita.enable_apply(fita.load_solutions(tmp_path))
    x, w = inputs()
    with pytest.raises(fita.SolutionLoadError, match=rf"flashinfer.norm.rmsnorm.*bad_sol.*rmsnorm_h{H}|flashinfer.norm.rmsnorm.*rmsnorm_h{H}.*bad_sol"):
        flashinfer.rmsnorm(x, w)


def test_a_solution_naming_out_writes_the_callers_buffer_directly():
    received = []

    def solution(hidden_states, weight, eps=1e-6, out=None):
        received.append(out)
        result = torch_rmsnorm(hidden_states, weight, eps)
        if out is None:
            return result
        out.copy_(result)
        return out

    fita.enable_apply({f"rmsnorm_h{H}": solution})
    x, w = inputs()
    buf = torch.zeros_like(x)
    assert flashinfer.rmsnorm(x, w, out=buf) is buf and received[-1] is buf
    assert torch.equal(buf, torch_rmsnorm(x, w))
    assert torch.equal(flashinfer.rmsnorm(x, w), torch_rmsnorm(x, w)) and received[-1] is None


def test_one_wrapper_dispatches_every_shape_and_keeps_its_identity():
    """Hits of several shapes through one wrapper object: same results and
    counts, checks on every hit, and a launch-only argument (enable_pdl)
    that the solution does not take leaves the call routed."""
    calls = []

    def solution_64(hidden_states, weight, eps=1e-6):
        calls.append(64)
        return torch_rmsnorm(hidden_states, weight, eps)

    def solution_32(hidden_states, weight, eps=1e-6):
        calls.append(32)
        return torch_rmsnorm(hidden_states, weight, eps)

    fita.enable_apply({f"rmsnorm_h{H}": solution_64, "rmsnorm_h32": solution_32})
    wrapper = flashinfer.rmsnorm
    x, w = inputs()
    x32, w32 = torch.randn(3, 32, dtype=torch.bfloat16), torch.randn(32, dtype=torch.bfloat16)
    assert torch.equal(flashinfer.rmsnorm(x, w), torch_rmsnorm(x, w))
    assert flashinfer.rmsnorm is wrapper is flashinfer.norm.rmsnorm
    for _ in range(3):
        assert torch.equal(flashinfer.rmsnorm(x, w, eps=1e-5), torch_rmsnorm(x, w, 1e-5))
        assert torch.equal(flashinfer.rmsnorm(x32, w32), torch_rmsnorm(x32, w32))
    assert calls == [64] + [64, 32] * 3
    assert fita.stats()["flashinfer.norm.rmsnorm"]["hit"] == 7
    with pytest.raises(SolutionCallError, match="rmsnorm_h64"):
        flashinfer.rmsnorm(x, w, out=torch.empty(2, H, dtype=torch.bfloat16))
    assert torch.equal(flashinfer.rmsnorm(x, w, enable_pdl=True), torch_rmsnorm(x, w))
    assert calls[-1] == 64 and fita.stats()["flashinfer.norm.rmsnorm"]["hit"] == 8
    fita.disable_apply()
    assert flashinfer.rmsnorm is not wrapper
