"""On a CUDA GPU of compute capability 9 or later: the bundled norm kernels
launched as programmatic dependents (``enable_pdl``, which SGLang leaves at
None, "where supported") give bit-for-bit what the same kernels give
launched plainly, eagerly and replayed in a CUDA graph right behind the
GEMMs that produce their inputs, and are launched that way only when asked.
Skipped without CUDA; run on the device machine:

    python -m pytest -q -m gpu tests/test_bundled_norm_pdl_gpu.py
"""

from __future__ import annotations

import pytest
import torch

import flashinfer_trace_apply as fita
from flashinfer_trace_apply import loaders

pytestmark = pytest.mark.gpu

N = 4096


@pytest.fixture(scope="module")
def kernels():
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("PDL needs compute capability 9 or later")
    folder = fita.bundled_solutions_path()
    solutions = fita.load_solutions(folder)
    return {name: loaders.load(solutions[f"{name}_h{N}"], f"{name}_h{N}").fn
            for name in ("rmsnorm", "fused_add_rmsnorm", "rmsnorm_quant")}


def layer(kernels, x, w, r, scale, out8, mix, enable_pdl):
    """GEMM -> rmsnorm -> GEMM -> fused_add_rmsnorm -> rmsnorm_quant: each norm
    reads what the kernel just before it wrote."""
    h = kernels["rmsnorm"](x @ mix, w, 1e-6, None, enable_pdl)
    y = h @ mix
    kernels["fused_add_rmsnorm"](y, r, w, 1e-6, enable_pdl)
    kernels["rmsnorm_quant"](y, w, scale, 1e-6, out8, enable_pdl)
    return h, y, r, out8


def inputs(rows):
    torch.manual_seed(rows)
    x = torch.randn(rows, N, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(N, device="cuda", dtype=torch.bfloat16)
    r = torch.randn(rows, N, device="cuda", dtype=torch.bfloat16)
    mix = torch.randn(N, N, device="cuda", dtype=torch.bfloat16) / 64
    scale = torch.tensor([0.05], device="cuda")
    out8 = torch.empty(rows, N, device="cuda", dtype=torch.float8_e4m3fn)
    return x, w, r, scale, out8, mix


def run_eager(kernels, rows, enable_pdl):
    x, w, r, scale, out8, mix = inputs(rows)
    return [t.clone() for t in layer(kernels, x, w, r, scale, out8, mix, enable_pdl)]


@pytest.mark.parametrize("rows", [1, 127, 4096])
def test_pdl_launches_match_plain_launches_bit_for_bit(kernels, rows):
    plain = run_eager(kernels, rows, False)
    for enable_pdl in (None, True):
        for got, want in zip(run_eager(kernels, rows, enable_pdl), plain):
            assert torch.equal(got.view(torch.uint8), want.view(torch.uint8)), f"enable_pdl={enable_pdl} rows={rows}"


def replayed(kernels, rows, enable_pdl):
    """The layer captured in a CUDA graph and replayed three times (the
    residual reset before each), the results of every replay."""
    x, w, r, scale, out8, mix = inputs(rows)
    r0 = r.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        layer(kernels, x, w, r, scale, out8, mix, enable_pdl)  # warm-up: sites validated outside capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            got = layer(kernels, x, w, r, scale, out8, mix, enable_pdl)
    torch.cuda.current_stream().wait_stream(stream)
    replays = []
    for _ in range(3):
        r.copy_(r0)
        graph.replay()
        torch.cuda.synchronize()
        replays.append([t.clone() for t in got])
    return replays


@pytest.mark.parametrize("rows", [1, 127, 4096])
def test_pdl_launches_in_a_cuda_graph_match_plain_ones(kernels, rows):
    # Both captured (cuBLAS may pick other GEMM kernels under capture than
    # eagerly): only the norms' launch differs between the two graphs.
    plain = replayed(kernels, rows, False)[0]
    for replay in replayed(kernels, rows, None):
        for got, want in zip(replay, plain):
            assert torch.equal(got.view(torch.uint8), want.view(torch.uint8)), f"graph replay rows={rows}"


def test_pdl_is_used_only_when_asked(kernels):
    module = kernels["rmsnorm"].__globals__
    x = torch.randn(8, N, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(N, device="cuda", dtype=torch.bfloat16)
    assert module["_use_pdl"](None, x) and module["_use_pdl"](True, x)
    assert not module["_use_pdl"](False, x)
    assert not module["_use_pdl"](None, x.cpu())
    op = module["_RMSNORM"]
    op.sites.clear(), op.pdl_sites.clear()
    kernels["rmsnorm"](x, w, 1e-6, None, False)
    assert N in op.sites and N not in op.pdl_sites
    kernels["rmsnorm"](x, w, 1e-6, None, None)
    assert N in op.pdl_sites
