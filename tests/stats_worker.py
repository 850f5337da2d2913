"""A tensor-parallel-like worker for tests/test_stats_dir.py, started with
``spawn`` as SGLang and vLLM start theirs. Standard library at import time."""

from __future__ import annotations


def rmsnorm(hidden_states, weight, eps=1e-6):
    return hidden_states * weight


def work(calls: int, folder: str, extra_batch: int = 0) -> None:
    """``calls`` rmsnorm calls in bf16 at batch 2, one in fp16 at batch 5
    (and one in bf16 at ``extra_batch``), all routed to ``folder``'s Python
    solution through the real ``flashinfer.rmsnorm``."""
    import torch

    import flashinfer
    import flashinfer_trace_apply as fita

    fita.enable_apply(folder)
    x, w = torch.randn(2, 64, dtype=torch.bfloat16), torch.ones(64, dtype=torch.bfloat16)
    for _ in range(calls):
        flashinfer.rmsnorm(x, w)
    flashinfer.rmsnorm(torch.randn(5, 64, dtype=torch.float16), w.half())  # a second call shape
    if extra_batch:
        flashinfer.rmsnorm(torch.randn(extra_batch, 64, dtype=torch.bfloat16), w)
    try:
        flashinfer.rmsnorm(torch.randn(2, 32), torch.ones(32))  # no solution: the original, which needs CUDA
    except Exception:  # noqa: BLE001 - counted as a fallback all the same
        pass
