"""On a CUDA GPU: verify mode on the bundled folder with FlashInfer's real
kernels as originals, through an engine's warm-up and CUDA-graph capture;
and a solution that disagrees is caught and turned off. Skipped without CUDA."""

from __future__ import annotations

import warnings

import pytest
import torch

import flashinfer
import flashinfer_trace_apply as fita
from flashinfer_trace_apply.env import VERIFY_VAR

pytestmark = pytest.mark.gpu

API = "flashinfer.norm.rmsnorm"


def test_bundled_folder_verified_in_warm_up_then_captured_and_replayed(monkeypatch) -> None:
    monkeypatch.setenv(VERIFY_VAR, "2")
    fita.enable_apply(fita.load_solutions(fita.bundled_solutions_path()),
                      definitions=str(fita.bundled_solutions_path()))
    x = torch.randn(8, 4096, dtype=torch.bfloat16, device="cuda")
    w = torch.randn(4096, dtype=torch.bfloat16, device="cuda")
    out = torch.empty_like(x)
    # An engine warms each captured shape up eagerly (twice in SGLang): verification happens here.
    for _ in range(2):
        flashinfer.rmsnorm(x, w, eps=1e-5, out=out)
    torch.cuda.synchronize()
    assert fita.health()["rmsnorm_h4096"]["verified_shapes"] == 1
    assert fita.health()["rmsnorm_h4096"]["off"] is None

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        flashinfer.rmsnorm(x, w, eps=1e-5, out=out)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    fita.disable_apply()
    expected = flashinfer.rmsnorm(x, w, eps=1e-5)
    assert torch.allclose(out.float(), expected.float(), atol=2e-2, rtol=2e-2)
    counts = fita.stats()[API]
    assert counts["verify_pending"] == 2 and counts["hit"] == 1 and counts.get("verify_mismatch", 0) == 0


def test_a_wrong_solution_is_caught_against_the_real_kernel(monkeypatch) -> None:
    monkeypatch.setenv(VERIFY_VAR, "3")

    def off_by_a_bit(hidden_states, weight, eps=1e-6):
        x = hidden_states.float()
        return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float() * 1.05).to(hidden_states.dtype)

    fita.enable_apply({"rmsnorm_h4096": off_by_a_bit})
    x = torch.randn(4, 4096, dtype=torch.bfloat16, device="cuda")
    w = torch.randn(4096, dtype=torch.bfloat16, device="cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = flashinfer.rmsnorm(x, w)
    assert any("disagrees" in str(m.message) for m in caught)
    fita.disable_apply()
    assert torch.equal(got, flashinfer.rmsnorm(x, w))  # the caller got the kernel's result
