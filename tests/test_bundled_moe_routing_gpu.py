"""On a CUDA GPU: the bundled fused_topk_deepseek_e256_k8 (DeepSeek-V3 MoE
routing), routed through FlashInfer's API with the bundled folder's rules,
against FlashInfer's own CUDA kernel on the same inputs, at the token counts
engines send. Skipped without CUDA; run on the device machine:

    python -m pytest -q -m gpu tests/test_bundled_moe_routing_gpu.py

Both kernels rank ties by the lower expert index, so the experts are
compared exactly (bf16 and fp16 logits tie often and must agree too); the
only leeway is a token whose biased scores are within an fp32 rounding of
each other, where the two sigmoids' last bit may decide.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import flashinfer
import flashinfer_trace_apply as fita
from solution_files import catalog_folder

pytestmark = pytest.mark.gpu

DEFINITION = "fused_topk_deepseek_e256_k8"
API = "flashinfer.fused_moe.fused_routing_dsv3.fused_topk_deepseek"
TOKENS = [1, 3, 127, 1024, 8192]
# (scores dtype, bias dtype): SGLang's fp32 pair first.
DTYPES = [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32),
          (torch.float16, torch.float16)]


def enable():
    folder = catalog_folder(DEFINITION)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fita.enable_apply({DEFINITION: fita.load_solutions(folder)[DEFINITION]}, definitions=folder)


def route(scores, bias, n_group=8, topk_group=4, scale=2.5):
    values = torch.empty(scores.shape[0], 8, dtype=scores.dtype, device="cuda")
    indices = torch.empty(scores.shape[0], 8, dtype=torch.int32, device="cuda")
    assert flashinfer.fused_moe.fused_topk_deepseek(scores, bias, n_group, topk_group, 8, scale, values, indices, True) is None
    return values, indices


def assert_same_routing(got, want, what, scores=None, bias=None):
    """The same experts in the same order and close weights. With the inputs
    given, a token may be routed otherwise only where its biased scores tie
    within a few fp32 roundings (the two sigmoids' last bit), at most one
    token in 2000."""
    (gv, gi), (wv, wi) = got, want
    differ = (gi != wi).any(dim=-1)
    if bool(differ.any()):
        assert scores is not None, f"{what}: {int(differ.sum())} token(s) routed differently"
        assert int(differ.sum()) <= max(1, gi.shape[0] // 2000), f"{what}: {int(differ.sum())} token(s) routed differently"
        biased = torch.sigmoid(scores[differ].float()) + bias.float()
        mine = biased.gather(1, gi[differ].long()).sort(dim=-1).values
        theirs = biased.gather(1, wi[differ].long()).sort(dim=-1).values
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7, msg=f"{what}: not a near-tie")
    tol = {torch.float32: (2e-6, 1e-7), torch.bfloat16: (8e-3, 1e-5), torch.float16: (1e-3, 1e-6)}[gv.dtype]
    torch.testing.assert_close(gv[~differ], wv[~differ], rtol=tol[0], atol=tol[1], msg=what)


# Why fused_topk_deepseek_e256_k8 is a candidate, not bundled (candidates/README.md):
# on the H200 (2026-12-02) these cases disagreed with FlashInfer's kernel. Kept
# as the bar the kernel must pass before scripts/bundle_routing.json bundles it.
DISAGREES_ON_H200 = pytest.mark.xfail(
    reason="candidate: fp32 weights beyond 2e-6, routing differs at n_group 8/1, 16/4, 32/4 and in graph replay "
           "(H200, 2026-12-02)", strict=False)


@pytest.mark.parametrize("dtype,bias_dtype", [pytest.param(*DTYPES[0], marks=DISAGREES_ON_H200), *DTYPES[1:]],
                         ids=["fp32", "bf16", "bf16-fp32-bias", "fp16"])
def test_routing_matches_flashinfers_kernel(dtype, bias_dtype):
    torch.manual_seed(0)
    bias = (torch.randn(256, device="cuda") * 0.1).to(bias_dtype)
    for tokens in TOKENS:
        scores = (torch.randn(tokens, 256, device="cuda") * 2).to(dtype)
        want = route(scores, bias)
        enable()
        try:
            got = route(scores, bias)
            assert fita.stats().get(API, {}).get("hit", 0) == 1
        finally:
            fita.disable_apply()
        assert_same_routing(got, want, f"{dtype} bias {bias_dtype} tokens={tokens}", scores, bias)


@DISAGREES_ON_H200
@pytest.mark.parametrize("n_group,topk_group", [(8, 1), (16, 4), (32, 4)])
def test_other_groupings_match(n_group, topk_group):
    torch.manual_seed(1)
    bias = torch.randn(256, device="cuda") * 0.1
    scores = torch.randn(1024, 256, device="cuda")
    want = route(scores, bias, n_group, topk_group)
    enable()
    try:
        got = route(scores, bias, n_group, topk_group)
    finally:
        fita.disable_apply()
    assert_same_routing(got, want, f"n_group={n_group} topk_group={topk_group}", scores, bias)


@DISAGREES_ON_H200
def test_routed_routing_replays_in_a_cuda_graph():
    """Decode runs as CUDA-graph replays: warmed, captured, replayed on new
    logits, the routed kernel writes the caller's buffers."""
    tokens = 64
    scores = torch.randn(tokens, 256, device="cuda")
    bias = torch.randn(256, device="cuda") * 0.1
    values = torch.empty(tokens, 8, device="cuda")
    indices = torch.empty(tokens, 8, dtype=torch.int32, device="cuda")
    enable()
    try:
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            for _ in range(2):
                flashinfer.fused_moe.fused_topk_deepseek(scores, bias, 8, 4, 8, 2.5, values, indices, True)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            flashinfer.fused_moe.fused_topk_deepseek(scores, bias, 8, 4, 8, 2.5, values, indices, True)
        scores.copy_(torch.randn_like(scores))
        graph.replay()
        torch.cuda.synchronize()
    finally:
        fita.disable_apply()
    assert_same_routing((values, indices), route(scores, bias), "graph replay")
