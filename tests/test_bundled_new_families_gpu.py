"""On a CUDA GPU: the bundled solutions of the families added for issue 14
(rmsnorm_quant, fused_add_rmsnorm_quant), routed through FlashInfer's APIs
with the bundled folder's rules, against FlashInfer's own kernels on the
same inputs, at the batch sizes engines send. Skipped without CUDA; run on
the device machine:

    python -m pytest -q -m gpu tests/test_bundled_new_families_gpu.py
"""

from __future__ import annotations

import warnings

import pytest
import torch

import flashinfer
import flashinfer_trace_apply as fita

pytestmark = pytest.mark.gpu

DTYPES = [torch.bfloat16, torch.float16]
BATCHES = [1, 3, 127, 1024]


def bundled(prefix):
    names = sorted(fita.load_solutions(fita.bundled_solutions_path()))
    return [n for n in names if n.startswith(prefix) and n[len(prefix):].isdigit()]


def enable(*names):
    folder = fita.bundled_solutions_path()
    solutions = fita.load_solutions(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fita.enable_apply({n: solutions[n] for n in names}, definitions=folder)


def hits(api):
    return fita.stats().get(api, {}).get("hit", 0)


def assert_fp8_close(actual, expected, what):
    """Bit-equal but for values an fp32 rounding apart landing on the
    neighbouring fp8 value (the row reduction's order differs)."""
    a, e = actual.float(), expected.float()
    mant = 3 if actual.dtype == torch.float8_e4m3fn else 2
    magnitude = torch.maximum(a.abs(), e.abs()).clamp_min(2.0 ** -6)
    ulp = torch.exp2(torch.floor(torch.log2(magnitude)) - mant)
    assert not bool(((a - e).abs() > ulp).any()), f"{what}: more than one fp8 ulp off"
    assert float((a != e).float().mean()) < 1e-3, f"{what}: {int((a != e).sum())} of {a.numel()} values differ"


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("fp8", [torch.float8_e4m3fn, torch.float8_e5m2], ids=["e4m3", "e5m2"])
def test_quant_norms_match_flashinfers_kernels(dtype, fp8):
    torch.manual_seed(0)
    scale = torch.tensor([0.02], device="cuda")
    for definition in bundled("rmsnorm_quant_h"):
        n = int(definition.rsplit("_h", 1)[1])
        fused = f"fused_add_rmsnorm_quant_h{n}"
        # widths where the fused kernel lost on the H200 are left to FlashInfer's
        fused_bundled = fused in bundled("fused_add_rmsnorm_quant_h")
        for batch in BATCHES:
            what = f"{definition} {dtype} {fp8} batch={batch}"
            x = torch.randn(batch, n, dtype=dtype, device="cuda")
            r = torch.randn(batch, n, dtype=dtype, device="cuda")
            w = torch.randn(n, dtype=dtype, device="cuda")
            want = torch.empty(batch, n, dtype=fp8, device="cuda")
            flashinfer.norm.rmsnorm_quant(want, x, w, scale, 1e-6)
            want_f, want_r = torch.empty_like(want), r.clone()
            flashinfer.norm.fused_add_rmsnorm_quant(want_f, x, want_r, w, scale, 1e-6)

            enable(definition, *([fused] if fused_bundled else []))
            try:
                got = torch.empty_like(want)
                flashinfer.norm.rmsnorm_quant(got, x, w, scale, 1e-6)
                got_f, got_r = torch.empty_like(want), r.clone()
                flashinfer.norm.fused_add_rmsnorm_quant(got_f, x, got_r, w, scale, 1e-6)
                assert hits("flashinfer.norm.rmsnorm_quant") == 1
                assert hits("flashinfer.norm.fused_add_rmsnorm_quant") == int(fused_bundled)
            finally:
                fita.disable_apply()
            assert_fp8_close(got, want, what)
            assert_fp8_close(got_f, want_f, "fused " + what)
            assert torch.equal(got_r, want_r), "fused " + what + ": residual"


def test_routed_quant_norm_replays_in_a_cuda_graph():
    """Decode runs as CUDA-graph replays: warmed eagerly, captured, replayed
    on new inputs, the routed kernel writes the caller's buffers."""
    n, batch = 4096, 8
    x = torch.randn(batch, n, dtype=torch.bfloat16, device="cuda")
    r = torch.randn_like(x)
    w = torch.randn(n, dtype=torch.bfloat16, device="cuda")
    scale = torch.tensor([0.05], device="cuda")
    out = torch.empty(batch, n, dtype=torch.float8_e4m3fn, device="cuda")
    enable(f"fused_add_rmsnorm_quant_h{n}")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(2):
            flashinfer.norm.fused_add_rmsnorm_quant(out, x, r, w, scale, 1e-6)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        flashinfer.norm.fused_add_rmsnorm_quant(out, x, r, w, scale, 1e-6)
    x.copy_(torch.randn_like(x))
    r0 = torch.randn_like(r)
    r.copy_(r0)
    graph.replay()
    torch.cuda.synchronize()
    fita.disable_apply()
    want, want_r = torch.empty_like(out), r0.clone()
    flashinfer.norm.fused_add_rmsnorm_quant(want, x, want_r, w, scale, 1e-6)
    assert torch.equal(r, want_r)
    assert_fp8_close(out, want, "graph replay")
