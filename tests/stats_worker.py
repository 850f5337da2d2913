"""A tensor-parallel-like worker for tests/test_stats_dir.py, started with
``spawn`` as SGLang and vLLM start theirs. Standard library at import time."""

from __future__ import annotations


def rmsnorm(hidden_states, weight, eps=1e-6):
    return hidden_states * weight


def work(calls: int) -> None:
    import torch

    import flashinfer
    import flashinfer_trace_apply as fita

    fita.enable_apply({"rmsnorm_h64": rmsnorm})
    x, w = torch.randn(2, 64), torch.ones(64)
    for _ in range(calls):
        flashinfer.rmsnorm(x, w)
    flashinfer.rmsnorm(torch.randn(5, 64, dtype=torch.bfloat16), w.bfloat16())  # a second call shape
    try:
        flashinfer.rmsnorm(torch.randn(2, 32), torch.ones(32))  # no solution: the original, which needs CUDA
    except Exception:  # noqa: BLE001 - counted as a fallback all the same
        pass
