"""The bundled Triton solutions (solutions/ and definitions/ at the repository
root), run from their Solution JSONs: against torch references in fp32, in
bf16 and fp16, at batch 1, 3 and 127, with the call's eps / is_neox, on
row slices of wider buffers, directly and routed through FlashInfer's APIs.

Without a GPU the kernels run under the Triton interpreter (conftest.py sets
TRITON_INTERPRET=1), which truncates to bf16/fp16 where a GPU rounds: results
may be one ulp off the correctly rounded reference. On a GPU the same tests
run on CUDA tensors.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import flashinfer
import flashinfer_trace_apply as fita
from solution_files import catalog_folder
from flashinfer_trace_apply import loaders
from flashinfer_trace_apply.catalog import load_definitions
from flashinfer.trace.templates.norm import fused_add_rmsnorm_quant_trace, rmsnorm_quant_trace

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.bfloat16, torch.float16]
# The sampling family has its own tests (tests/test_bundled_sampling.py):
# whole vocabularies under the interpreter are too slow for these loops.
BUNDLED = sorted(p.stem for p in (ROOT / "solutions").rglob("*.json") if p.parent.name != "sampling")
# ...and with the catalog entries the routing file leaves out (candidates/):
# written, CPU-tested like the rest, not shipped until a GPU run bundles them.
GENERATED = sorted(BUNDLED + [p.stem for p in (ROOT / "candidates" / "solutions").rglob("*.json")
                              if p.parent.name != "sampling"])
OPS = [
    "rmsnorm", "fused_add_rmsnorm", "gemma_rmsnorm", "gemma_fused_add_rmsnorm",
    "rmsnorm_quant", "fused_add_rmsnorm_quant",
    "silu_and_mul", "gelu_and_mul", "gelu_tanh_and_mul", "rope_cos_sin_cache_inplace",
    "fused_topk_deepseek",
]


def op_of(definition: str) -> str:
    return next(op for op in sorted(OPS, key=len, reverse=True) if definition.startswith(op + "_"))


def size_of(definition: str) -> int:
    """The first const axis in the name (fused_topk_deepseek_e256_k8: 256)."""
    return int(re.match(r"_[a-z]+(\d+)", definition[len(op_of(definition)):]).group(1))


def solution(definition: str):
    solutions = fita.load_solutions(catalog_folder(definition))
    return loaders.load(solutions[definition], definition).fn


def smallest(op: str) -> str:
    return min((d for d in GENERATED if op_of(d) == op), key=size_of)


# ---------------------------------------------------------------------------
# References (fp32 arithmetic, one rounding) and the comparison.
# ---------------------------------------------------------------------------


def ref_rmsnorm(x, w, eps=1e-6, offset=0.0):
    xf = x.float()
    return (xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps) * (w.float() + offset)).to(x.dtype)


def ref_fused_add(x, r, w, eps=1e-6, offset=0.0):
    total = x.float() + r.float()
    y = total * torch.rsqrt(total.square().mean(-1, keepdim=True) + eps) * (w.float() + offset)
    return y.to(x.dtype), total.to(r.dtype)


ACTS = {
    "silu_and_mul": F.silu,
    "gelu_and_mul": F.gelu,
    "gelu_tanh_and_mul": lambda a: F.gelu(a, approximate="tanh"),
}


def ref_act(op, x):
    d = x.shape[-1] // 2
    return (ACTS[op](x[..., :d].float()) * x[..., d:].float()).to(x.dtype)


def ref_rope(positions, q, k, head_size, cache, is_neox=True):
    half = cache.shape[-1] // 2
    cos = cache[positions.long(), :half].float()[:, None, :]
    sin = cache[positions.long(), half:].float()[:, None, :]

    def rotate(t):
        h = t.float().reshape(t.shape[0], -1, head_size).clone()
        if is_neox:
            i1, i2 = slice(0, half), slice(half, 2 * half)
        else:
            i1, i2 = slice(0, 2 * half, 2), slice(1, 2 * half, 2)
        a, b = h[..., i1].clone(), h[..., i2].clone()
        h[..., i1], h[..., i2] = a * cos - b * sin, b * cos + a * sin
        return h.reshape(t.shape).to(t.dtype)

    return rotate(q), rotate(k)


def assert_close(actual, expected, what=""):
    """Within one ulp (of the larger magnitude) plus a hair for fp32 noise."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    bits = {torch.bfloat16: 7, torch.float16: 10}[actual.dtype]
    a, e = actual.float(), expected.float()
    magnitude = torch.maximum(a.abs(), e.abs()).clamp_min(torch.finfo(actual.dtype).tiny)
    ulp = torch.exp2(torch.floor(torch.log2(magnitude)) - bits)
    excess = (a - e).abs() - ulp - 1e-5
    assert bool((excess <= 0).all()), f"{what}: max err {float((a - e).abs().max()):.3g}, worst excess {float(excess.max()):.3g}"


def ref_quant(x, w, scale, eps=1e-6, residual=None, fp8=torch.float8_e4m3fn):
    """FlashInfer's quantizing kernels (norm.cuh): times the fp32 reciprocal
    of the scale, clamped to the fp8 range, rounded to nearest even."""
    xf = x.float() + (residual.float() if residual is not None else 0)
    fp8_max = torch.finfo(fp8).max
    y = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps) * w.float() * (1.0 / scale.float().reshape(()))
    return y.clamp(-fp8_max, fp8_max).to(fp8), xf


def ref_routing(scores, bias, n_group=8, topk_group=4, topk=8, scale=2.5):
    """DeepSeek-V3 routing as FlashInfer's kernel does it: groups scored by
    their two largest biased scores, every ranking with ties to the lower
    index (stable sorts), weights in double."""
    tokens, n = scores.shape
    sig = torch.sigmoid(scores.float())
    biased = sig + bias.float()
    top2 = biased.view(tokens, n_group, -1).sort(dim=-1, descending=True, stable=True).values[..., :2]
    kept = (top2[..., 0] + top2[..., 1]).sort(dim=-1, descending=True, stable=True).indices[:, :topk_group]
    mask = torch.zeros(tokens, n_group, dtype=torch.bool, device=scores.device).scatter_(1, kept, True)
    masked = biased.masked_fill(~mask.repeat_interleave(n // n_group, dim=1), float("-inf"))
    chosen = masked.sort(dim=-1, descending=True, stable=True).indices[:, :topk]
    picked = sig.gather(1, chosen)
    weights = picked.double() * scale / (picked.sum(dim=-1, keepdim=True).double() + 1e-20)
    return weights.float().to(scores.dtype), chosen.to(torch.int32)


def assert_routing(values, indices, scores, bias, what="", **config):
    """The same experts in the same order as ref_routing (the same arithmetic
    up to the sigmoid's last bit cannot reorder them), weights within one ulp
    (fp32: a few fp32 roundings)."""
    want_v, want_i = ref_routing(scores, bias, **config)
    assert indices.dtype == torch.int32 and torch.equal(indices, want_i), f"{what}: experts differ"
    if values.dtype == torch.float32:
        torch.testing.assert_close(values, want_v, rtol=4e-6, atol=1e-7, msg=what)
    else:
        assert_close(values, want_v, what + " weights")


def assert_fp8_close(actual, expected, what=""):
    """Equal, or the neighbouring value of the fp8 grid (one ulp): an fp32
    result within a rounding of a boundary can land on either side."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    mant, emin = {torch.float8_e4m3fn: (3, -6), torch.float8_e5m2: (2, -14)}[actual.dtype]
    a, e = actual.float(), expected.float()
    magnitude = torch.maximum(a.abs(), e.abs()).clamp_min(2.0 ** emin)
    ulp = torch.exp2(torch.floor(torch.log2(magnitude)) - mant)
    off = (a - e).abs() > ulp
    assert not bool(off.any()), f"{what}: {int(off.sum())} value(s) more than one fp8 ulp off, e.g. {a[off][:4].tolist()} vs {e[off][:4].tolist()}"
    # and not a systematic shift: nearly all exactly equal
    assert float((a != e).float().mean()) < 1e-3, f"{what}: {int((a != e).sum())} of {a.numel()} values differ"


# ---------------------------------------------------------------------------
# Inputs and one call per op, direct.
# ---------------------------------------------------------------------------


def rand(*shape, dtype=torch.bfloat16, scale=1.0):
    return (torch.randn(*shape, device=DEVICE) * scale).to(dtype)


def rope_case(nnz, head_size, dtype, rotary_dim=None, q_heads=4, k_heads=2, positions_dtype=torch.int64):
    rotary_dim = rotary_dim or head_size
    cache = torch.randn(64, rotary_dim, device=DEVICE)  # float32, as FlashInfer requires
    positions = torch.randint(0, 64, (nnz,), device=DEVICE, dtype=positions_dtype)
    return positions, rand(nnz, q_heads * head_size, dtype=dtype), rand(nnz, k_heads * head_size, dtype=dtype), cache


def run_and_check(definition: str, batch: int, dtype) -> None:
    fn, op, n = solution(definition), op_of(definition), size_of(definition)
    what = f"{definition} {dtype} batch={batch}"
    if op in ("rmsnorm", "gemma_rmsnorm"):
        x, w = rand(batch, n, dtype=dtype), rand(n, dtype=dtype)
        assert_close(fn(hidden_states=x, weight=w, eps=1e-6), ref_rmsnorm(x, w, 1e-6, 1.0 if "gemma" in op else 0.0), what)
    elif op in ("fused_add_rmsnorm", "gemma_fused_add_rmsnorm"):
        x, r, w = rand(batch, n, dtype=dtype), rand(batch, n, dtype=dtype), rand(n, dtype=dtype)
        want_y, want_r = ref_fused_add(x, r, w, 1e-6, 1.0 if "gemma" in op else 0.0)
        xi, ri = x.clone(), r.clone()
        got_y, got_r = fn(hidden_states=xi, residual=ri, weight=w, eps=1e-6)
        assert got_y is xi and got_r is ri, "writes in place and returns the caller's tensors"
        assert_close(xi, want_y, what + " output")
        assert_close(ri, want_r, what + " residual")
    elif op == "rmsnorm_quant":
        x, w, scale = rand(batch, n, dtype=dtype), rand(n, dtype=dtype), torch.tensor([0.0625], device=DEVICE)
        out = torch.empty(batch, n, dtype=torch.float8_e4m3fn, device=DEVICE)
        assert fn(hidden_states=x, weight=w, scale=scale, out=out) is out
        assert_fp8_close(out, rmsnorm_quant_trace.reference(x, w, scale), what + " (FlashInfer's reference)")
        assert_fp8_close(out, ref_quant(x, w, scale)[0], what)
    elif op == "fused_add_rmsnorm_quant":
        x, r, w = rand(batch, n, dtype=dtype), rand(batch, n, dtype=dtype), rand(n, dtype=dtype)
        scale = torch.tensor([0.0625], device=DEVICE)
        want_out, want_r = fused_add_rmsnorm_quant_trace.reference(x, r, w, scale)
        xi, ri = x.clone(), r.clone()
        out = torch.empty(batch, n, dtype=torch.float8_e4m3fn, device=DEVICE)
        got_out, got_r = fn(hidden_states=xi, residual=ri, weight=w, scale=scale, out=out)
        assert got_out is out and got_r is ri, "writes the caller's out and residual and returns them"
        assert torch.equal(xi, x), "hidden_states is only read"
        assert_fp8_close(out, want_out, what + " (FlashInfer's reference)")
        assert_fp8_close(out, ref_quant(x, w, scale, residual=r)[0], what)
        assert_close(ri, want_r, what + " residual")
    elif op in ACTS:
        x = rand(batch, n, dtype=dtype)
        assert_close(fn(input=x), ref_act(op, x), what)
    elif op == "fused_topk_deepseek":
        scores, bias = rand(batch, n, dtype=dtype), rand(n, dtype=dtype, scale=0.1)
        values = torch.empty(batch, 8, dtype=dtype, device=DEVICE)
        indices = torch.empty(batch, 8, dtype=torch.int32, device=DEVICE)
        got = fn(scores=scores, bias=bias, n_group=8, topk_group=4, topk=8, routed_scaling_factor=2.5,
                 topk_values=values, topk_indices=indices)
        assert got[0] is values and got[1] is indices, "writes the caller's buffers and returns them"
        assert_routing(values, indices, scores, bias, what)
    else:
        positions, q, k, cache = rope_case(batch, n, dtype)
        want_q, want_k = ref_rope(positions, q, k, n, cache)
        got_q, got_k = fn(positions=positions, query=q, key=k, head_size=n, cos_sin_cache=cache)
        assert got_q is q and got_k is k
        assert_close(q, want_q, what + " query")
        assert_close(k, want_k, what + " key")


@pytest.mark.parametrize("definition", GENERATED)
def test_every_bundled_solution_matches_the_reference(definition):
    torch.manual_seed(0)
    for dtype in DTYPES:
        for batch in (1, 3):
            run_and_check(definition, batch, dtype)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_batch_127(op, dtype):
    torch.manual_seed(1)
    run_and_check(smallest(op), 127, dtype)


@pytest.mark.parametrize("definition", ["rmsnorm_h5120", "fused_add_rmsnorm_h7168", "gemma_rmsnorm_h2304", "silu_and_mul_h22016"])
def test_widths_that_need_a_mask(definition):
    """Hidden sizes that are not a power of two (or not a tile multiple)."""
    torch.manual_seed(2)
    for dtype in DTYPES:
        run_and_check(definition, 5, dtype)


def test_empty_batch():
    x, w = rand(0, 2048), rand(2048)
    assert solution("rmsnorm_h2048")(hidden_states=x, weight=w).shape == (0, 2048)
    assert solution("silu_and_mul_h12288")(input=rand(0, 12288)).shape == (0, 6144)


# ---------------------------------------------------------------------------
# The call's arguments.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["rmsnorm", "gemma_rmsnorm", "fused_add_rmsnorm", "gemma_fused_add_rmsnorm"])
def test_eps_is_honoured(op):
    torch.manual_seed(3)
    definition = smallest(op)
    fn, n = solution(definition), size_of(definition)
    offset = 1.0 if "gemma" in op else 0.0
    x, w = rand(3, n, scale=0.05), rand(n)  # mean square ~2.5e-3: eps matters
    r = rand(3, n, scale=0.05)
    for eps in (1e-6, 1e-2):
        if "fused" in op:
            xi, ri = x.clone(), r.clone()
            fn(hidden_states=xi, residual=ri, weight=w, eps=eps)
            assert_close(xi, ref_fused_add(x, r, w, eps, offset)[0], f"eps={eps}")
        else:
            assert_close(fn(hidden_states=x, weight=w, eps=eps), ref_rmsnorm(x, w, eps, offset), f"eps={eps}")
    small = fn(hidden_states=x.clone(), weight=w, eps=1e-6) if "fused" not in op else None
    if small is not None:
        assert not torch.equal(small, fn(hidden_states=x, weight=w, eps=1e-2))


@pytest.mark.parametrize("is_neox", [True, False])
@pytest.mark.parametrize("head_size,rotary_dim", [(64, 64), (128, 128), (128, 64), (128, 96), (256, 128)])
def test_rope_is_neox_and_partial_rotary(is_neox, head_size, rotary_dim):
    torch.manual_seed(4)
    fn = solution(f"rope_cos_sin_cache_inplace_d{head_size}")
    positions, q, k, cache = rope_case(5, head_size, torch.bfloat16, rotary_dim=rotary_dim, positions_dtype=torch.int32)
    want_q, want_k = ref_rope(positions, q, k, head_size, cache, is_neox)
    q0 = q.clone()
    fn(positions=positions, query=q, key=k, head_size=head_size, cos_sin_cache=cache, is_neox=is_neox)
    assert_close(q, want_q, "query")
    assert_close(k, want_k, "key")
    tail = q.view(5, -1, head_size)[..., rotary_dim:]
    assert torch.equal(tail, q0.view(5, -1, head_size)[..., rotary_dim:]), "channels past rotary_dim are untouched"


def test_rope_layouts_3d_and_single_kv_head():
    torch.manual_seed(5)
    fn = solution("rope_cos_sin_cache_inplace_d128")
    positions, q, k, cache = rope_case(3, 128, torch.float16, q_heads=7, k_heads=1)
    want_q, want_k = ref_rope(positions, q, k, 128, cache)
    q3, k3 = q.view(3, 7, 128), k.view(3, 1, 128)
    fn(positions=positions, query=q3, key=k3, head_size=128, cos_sin_cache=cache)
    assert_close(q, want_q, "3-D query")
    assert_close(k, want_k, "3-D key, one head")


# ---------------------------------------------------------------------------
# Non-contiguous rows: slices of a wider buffer are read and written in place.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_norms_on_row_slices(dtype):
    torch.manual_seed(6)
    n = 2048
    buffer = rand(4, n + 256, dtype=dtype)
    x, w = buffer[:, 128:128 + n], rand(n, dtype=dtype)
    assert not x.is_contiguous()
    assert_close(solution("rmsnorm_h2048")(hidden_states=x, weight=w), ref_rmsnorm(x, w))
    rbuf = rand(4, 2 * n, dtype=dtype)
    r = rbuf[:, n:]
    want_y, want_r = ref_fused_add(x, r, w)
    before, rbefore = buffer.clone(), rbuf.clone()
    solution("fused_add_rmsnorm_h2048")(hidden_states=x, residual=r, weight=w)
    assert_close(x, want_y, "output in the slice")
    assert_close(r, want_r, "residual in the slice")
    assert torch.equal(buffer[:, :128], before[:, :128]) and torch.equal(buffer[:, 128 + n:], before[:, 128 + n:])
    assert torch.equal(rbuf[:, :n], rbefore[:, :n])


def test_qk_norm_on_a_3d_slice_of_qkv():
    """(tokens, heads, head_dim) with strides from a fused QKV buffer."""
    torch.manual_seed(7)
    qkv = rand(5, 12, 128)
    q = qkv[:, :8]  # 8 query heads of 12
    w = rand(128)
    assert_close(solution("gemma_rmsnorm_h2048")(hidden_states=q, weight=w), ref_rmsnorm(q, w, offset=1.0))


def test_fallback_layouts_are_written_back():
    """Rows the kernel cannot address by strides (a transposed view) go
    through a contiguous copy and come back into the caller's tensors."""
    torch.manual_seed(8)
    x, r = rand(2048, 3).t(), rand(2048, 3).t()
    w = rand(2048)
    assert x.stride(-1) != 1
    want_y, want_r = ref_fused_add(x, r, w)
    solution("fused_add_rmsnorm_h2048")(hidden_states=x, residual=r, weight=w)
    assert_close(x, want_y)
    assert_close(r, want_r)
    xa = rand(12288, 2).t()
    assert_close(solution("silu_and_mul_h12288")(input=xa), ref_act("silu_and_mul", xa))


@pytest.mark.parametrize("op", ["silu_and_mul", "gelu_and_mul", "gelu_tanh_and_mul"])
def test_activations_on_row_slices_and_3d(op):
    torch.manual_seed(9)
    definition = smallest(op)
    n = size_of(definition)
    buffer = rand(3, n + 64)
    x = buffer[:, 64:]
    assert_close(solution(definition)(input=x), ref_act(op, x))
    x3 = rand(2, 3, n)
    out = solution(definition)(input=x3)
    assert out.shape == (2, 3, n // 2)
    assert_close(out, ref_act(op, x3))


def test_rope_on_slices_of_a_qkv_buffer():
    torch.manual_seed(10)
    head, hq, hk = 128, 4, 2
    qkv = rand(6, (hq + 2 * hk) * head)
    q, k = qkv[:, : hq * head], qkv[:, hq * head:(hq + hk) * head]
    v_before = qkv[:, (hq + hk) * head:].clone()
    positions = torch.arange(6, device=DEVICE) * 3
    cache = torch.randn(32, head, device=DEVICE)
    want_q, want_k = ref_rope(positions, q, k, head, cache, is_neox=False)
    solution("rope_cos_sin_cache_inplace_d128")(positions=positions, query=q, key=k, head_size=head, cos_sin_cache=cache, is_neox=False)
    assert_close(q, want_q)
    assert_close(k, want_k)
    assert torch.equal(qkv[:, (hq + hk) * head:], v_before)


# ---------------------------------------------------------------------------
# Routed through FlashInfer's APIs by the plugin, with the folder's definitions.
# ---------------------------------------------------------------------------


def enable(*names):
    folder = catalog_folder(names[0])
    assert all(catalog_folder(n) == folder for n in names)
    solutions = fita.load_solutions(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fita.enable_apply({n: solutions[n] for n in names}, definitions=folder)
    said = [str(w.message) for w in caught if issubclass(w.category, fita.TraceApplyWarning)]
    assert not said, said  # every bundled definition is routable


def hits(api):
    return fita.stats().get(api, {}).get("hit", 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_routed_norms_keep_the_callers_conventions(dtype):
    torch.manual_seed(11)
    x, r, w = rand(3, 4096, dtype=dtype), rand(3, 4096, dtype=dtype), rand(4096, dtype=dtype)
    enable("rmsnorm_h4096", "fused_add_rmsnorm_h4096", "gemma_rmsnorm_h2304", "gemma_fused_add_rmsnorm_h2304")
    assert_close(flashinfer.rmsnorm(x, w, eps=1e-3), ref_rmsnorm(x, w, 1e-3))
    out = torch.empty_like(x)
    assert flashinfer.rmsnorm(x, w, 1e-5, out=out) is out
    assert_close(out, ref_rmsnorm(x, w, 1e-5))
    xi, ri = x.clone(), r.clone()
    assert flashinfer.fused_add_rmsnorm(xi, ri, w, eps=1e-4) is None
    want_y, want_r = ref_fused_add(x, r, w, 1e-4)
    assert_close(xi, want_y)
    assert_close(ri, want_r)
    g, gr, gw = rand(2, 2304, dtype=dtype), rand(2, 2304, dtype=dtype), rand(2304, dtype=dtype)
    assert_close(flashinfer.gemma_rmsnorm(g, gw), ref_rmsnorm(g, gw, offset=1.0))
    gi, gri = g.clone(), gr.clone()
    flashinfer.gemma_fused_add_rmsnorm(gi, gri, gw)
    want_y, want_r = ref_fused_add(g, gr, gw, offset=1.0)
    assert_close(gi, want_y)
    assert_close(gri, want_r)
    assert hits("flashinfer.norm.rmsnorm") == 2 and hits("flashinfer.norm.fused_add_rmsnorm") == 1
    assert hits("flashinfer.norm.gemma_rmsnorm") == 1 and hits("flashinfer.norm.gemma_fused_add_rmsnorm") == 1


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_routed_mla_norms_read_kv_a_in_place_from_latent_cache(dtype):
    """DeepSeek MLA, as SGLang calls it (out and enable_pdl passed
    positionally): q_a (1536 wide) and kv_a, a row-strided view of
    latent_cache (512 latent + 64 rope channels a row). kv_a is read where it
    is (its copy stays as it was, the rope channels untouched); both results
    are within one ulp of the reference at batch 1, 3 and 127."""
    torch.manual_seed(14)
    enable("rmsnorm_h512", "rmsnorm_h1536")
    w_kv, w_q = rand(512, dtype=dtype), rand(1536, dtype=dtype)
    for batch in (1, 3, 127):
        latent_cache = rand(batch, 576, dtype=dtype)
        kv_a = latent_cache[..., :512]
        assert kv_a.stride() == (576, 1) and (batch == 1 or not kv_a.is_contiguous())
        before = latent_cache.clone()
        got = flashinfer.norm.rmsnorm(kv_a, w_kv, 1e-6, None, None)
        assert got.shape == (batch, 512) and got.dtype == dtype
        assert_close(got, ref_rmsnorm(kv_a, w_kv), f"kv_a batch={batch}")
        assert torch.equal(latent_cache, before)
        q_a = rand(batch, 1536, dtype=dtype)
        assert_close(flashinfer.norm.rmsnorm(q_a, w_q, 1e-6, None, None), ref_rmsnorm(q_a, w_q), f"q_a batch={batch}")
    assert hits("flashinfer.norm.rmsnorm") == 6


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_routed_quant_norms_write_the_callers_out_in_place(dtype):
    """SGLang's static FP8 calls, positional: rmsnorm_quant(out, input,
    weight, scale, eps) and fused_add_rmsnorm_quant(out, input, residual,
    weight, scale, eps). The kernel writes the caller's out itself (the same
    storage, nothing copied), the residual in place, input untouched; eps is
    the call's; a float scale and an e5m2 out are honoured as FlashInfer does."""
    torch.manual_seed(15)
    n = 4096
    enable(f"rmsnorm_quant_h{n}", f"fused_add_rmsnorm_quant_h{n}")
    for batch in (1, 3, 127):
        x, r, w = rand(batch, n, dtype=dtype), rand(batch, n, dtype=dtype), rand(n, dtype=dtype)
        scale = torch.tensor([0.5], device=DEVICE)
        out = torch.empty(batch, n, dtype=torch.float8_e4m3fn, device=DEVICE)
        storage = out.data_ptr()
        x_before = x.clone()
        assert flashinfer.norm.rmsnorm_quant(out, x, w, scale, 1e-5) is None
        assert out.data_ptr() == storage and torch.equal(x, x_before)
        assert_fp8_close(out, ref_quant(x, w, scale, eps=1e-5)[0], f"rmsnorm_quant batch={batch}")
        ri = r.clone()
        assert flashinfer.norm.fused_add_rmsnorm_quant(out, x, ri, w, scale, 1e-6) is None
        want_out, total = ref_quant(x, w, scale, residual=r)
        assert_fp8_close(out, want_out, f"fused_add_rmsnorm_quant batch={batch}")
        assert_close(ri, total.to(dtype), "residual")
        assert torch.equal(x, x_before), "input is only read"
    assert hits("flashinfer.norm.rmsnorm_quant") == 3 and hits("flashinfer.norm.fused_add_rmsnorm_quant") == 3
    x, w = rand(3, n, dtype=dtype), rand(n, dtype=dtype)
    e5 = torch.empty(3, n, dtype=torch.float8_e5m2, device=DEVICE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        flashinfer.norm.rmsnorm_quant(e5, x, w, 0.01)  # a float scale (deprecated in FlashInfer, still served)
    assert_fp8_close(e5, ref_quant(x, w, torch.tensor(0.01), fp8=torch.float8_e5m2)[0], "e5m2 out, float scale")
    wide = rand(3, n + 512, dtype=dtype)
    rows = wide[:, 256:256 + n]  # row-strided input, read in place
    flashinfer.norm.rmsnorm_quant(out[:3], rows, w, torch.tensor([2.0], device=DEVICE))
    assert_fp8_close(out[:3], ref_quant(rows, w, torch.tensor([2.0]))[0], "row-strided input")
    assert hits("flashinfer.norm.rmsnorm_quant") == 5


def test_quant_norm_refuses_an_out_that_is_not_fp8():
    fn = solution("rmsnorm_quant_h2048")
    with pytest.raises(ValueError, match="float8_e4m3fn or float8_e5m2"):
        fn(hidden_states=rand(2, 2048), weight=rand(2048), scale=torch.ones(1), out=rand(2, 2048))
    with pytest.raises(ValueError, match="scale must be"):
        fn(hidden_states=rand(2, 2048), weight=rand(2048), scale=torch.ones(2))


def test_routed_activation_with_out():
    torch.manual_seed(12)
    x = rand(3, 28672)
    enable("silu_and_mul_h28672", "gelu_tanh_and_mul_h28672")
    out = torch.empty(3, 14336, dtype=x.dtype, device=DEVICE)
    assert flashinfer.silu_and_mul(x, out=out) is out
    assert_close(out, ref_act("silu_and_mul", x))
    assert_close(flashinfer.gelu_tanh_and_mul(x), ref_act("gelu_tanh_and_mul", x))
    assert hits("flashinfer.activation.silu_and_mul") == 1 and hits("flashinfer.activation.gelu_tanh_and_mul") == 1


@pytest.mark.parametrize("is_neox", [True, False])
def test_routed_rope_in_place(is_neox):
    torch.manual_seed(13)
    positions, q, k, cache = rope_case(4, 128, torch.bfloat16, q_heads=32, k_heads=8)
    want_q, want_k = ref_rope(positions, q, k, 128, cache, is_neox)
    enable("rope_cos_sin_cache_inplace_d128")
    assert flashinfer.apply_rope_with_cos_sin_cache_inplace(positions, q, k, 128, cache, is_neox=is_neox) is None
    assert_close(q, want_q)
    assert_close(k, want_k)
    assert hits("flashinfer.rope.apply_rope_with_cos_sin_cache_inplace") == 1


MOE_DTYPES = [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32),
              (torch.float16, torch.float16)]


@pytest.mark.parametrize("dtype,bias_dtype", MOE_DTYPES, ids=["fp32", "bf16", "bf16-fp32-bias", "fp16"])
def test_routed_moe_routing_writes_the_callers_buffers(dtype, bias_dtype):
    """DeepSeek-V3 routing as SGLang calls it (positional, fp32 logits and
    bias, launch_with_pdl=True; bf16 and fp16 as FlashInfer also takes them),
    through both public names: the kernel writes the caller's topk_values
    and topk_indices (the same storage), returns None, and the experts and
    weights are FlashInfer's at 1, 3 and 127 tokens."""
    import flashinfer.dsv3_ops  # noqa: F401 - loaded lazily; SGLang-style imports name it

    torch.manual_seed(16)
    enable("fused_topk_deepseek_e256_k8")
    apis = [flashinfer.fused_moe.fused_topk_deepseek, flashinfer.dsv3_ops.fused_topk_deepseek]
    for tokens in (1, 3, 127):
        scores, bias = rand(tokens, 256, dtype=dtype), rand(256, dtype=bias_dtype, scale=0.1)
        for api in apis:
            values = torch.empty(tokens, 8, dtype=dtype, device=DEVICE)
            indices = torch.empty(tokens, 8, dtype=torch.int32, device=DEVICE)
            storage = (values.data_ptr(), indices.data_ptr())
            before = scores.clone()
            assert api(scores, bias, 8, 4, 8, 2.5, values, indices, True) is None
            assert (values.data_ptr(), indices.data_ptr()) == storage and torch.equal(scores, before)
            assert_routing(values, indices, scores, bias, f"{dtype} tokens={tokens}")
        values2, indices2 = torch.empty_like(values), torch.empty_like(indices)
        apis[0](scores=scores, bias=bias, n_group=8, topk_group=4, topk=8, routed_scaling_factor=1.0,
                topk_values=values2, topk_indices=indices2)
        assert torch.equal(indices2, indices)
        assert_routing(values2, indices2, scores, bias, "keywords, scale 1.0", scale=1.0)
    assert hits("flashinfer.fused_moe.fused_routing_dsv3.fused_topk_deepseek") == 9


def test_routed_moe_routing_matches_the_templates_reference():
    """FlashInfer's template reference (torch.topk, whose order among equal
    scores is unspecified) on the template's own inputs (bf16 logits, ties
    frequent): the same experts up to ties, as `check` judges it."""
    from flashinfer.trace.templates.sampling import fused_topk_deepseek_trace as trace

    from flashinfer_trace_apply.check import _routing_check

    enable("fused_topk_deepseek_e256_k8")
    for tokens in (1, 3, 127):
        inputs = trace.init(num_tokens=tokens, device=DEVICE)
        inputs["bias"] = rand(256, scale=0.05)
        want = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        trace.reference(**want)
        flashinfer.fused_moe.fused_topk_deepseek(**inputs)
        check = _routing_check(trace, inputs)
        reference = [want["topk_values"], want["topk_indices"]]
        assert check(reference, [inputs["topk_values"], inputs["topk_indices"]]), f"tokens={tokens}"
        # and the check is not blind: another expert in the last slot fails it
        wrong = inputs["topk_indices"].clone()
        wrong[:, -1] = (wrong[:, 0] + 128) % 256
        assert not check(reference, [inputs["topk_values"], wrong])


@pytest.mark.parametrize("n_group,topk_group", [(8, 1), (16, 4), (16, 8), (32, 4)])
def test_moe_routing_other_groupings(n_group, topk_group):
    """n_group and topk_group are call arguments, not in the name: any
    grouping FlashInfer accepts at 256 experts routes correctly."""
    torch.manual_seed(17)
    fn = solution("fused_topk_deepseek_e256_k8")
    scores, bias = rand(5, 256, dtype=torch.float32), rand(256, dtype=torch.float32, scale=0.1)
    values, indices = fn(scores=scores, bias=bias, n_group=n_group, topk_group=topk_group, topk=8, routed_scaling_factor=2.5)
    assert_routing(values, indices, scores, bias, f"n_group={n_group}", n_group=n_group, topk_group=topk_group)


def test_moe_routing_ties_go_to_the_lower_index_and_replay_is_written():
    """Equal scores rank by expert index, as FlashInfer's kernel packs them;
    routing_replay_out (int16, sized for the largest batch) gets the experts
    of the first num_tokens rows and nothing else."""
    fn = solution("fused_topk_deepseek_e256_k8")
    scores = torch.zeros(2, 256, device=DEVICE)
    scores[1, 200:] = 1.0  # groups 6 and 7 lead; within them the lowest indices
    bias = torch.zeros(256, device=DEVICE)
    replay = torch.full((4, 8), -7, dtype=torch.int16, device=DEVICE)
    values, indices = fn(scores=scores, bias=bias, n_group=8, topk_group=4, topk=8, routed_scaling_factor=2.5,
                         routing_replay_out=replay)
    assert indices[0].tolist() == list(range(8))
    assert indices[1].tolist() == list(range(200, 208))
    assert torch.equal(values, torch.full_like(values, 2.5 / 8))
    assert torch.equal(replay[:2], indices.to(torch.int16)) and bool((replay[2:] == -7).all())


def test_moe_routing_refuses_what_flashinfer_refuses():
    fn = solution("fused_topk_deepseek_e256_k8")
    scores, bias = rand(2, 256, dtype=torch.float32), rand(256, dtype=torch.float32)
    with pytest.raises(ValueError, match="same dtype as scores"):
        fn(scores=scores, bias=bias, n_group=8, topk_group=4, topk=8, routed_scaling_factor=1.0,
           topk_values=torch.empty(2, 8, dtype=torch.bfloat16), topk_indices=torch.empty(2, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="must be <= 32"):
        fn(scores=scores, bias=bias, n_group=4, topk_group=2, topk=8, routed_scaling_factor=1.0)
    with pytest.raises(ValueError, match="contiguous"):
        fn(scores=rand(256, 2, dtype=torch.float32).t(), bias=bias, n_group=8, topk_group=4, topk=8,
           routed_scaling_factor=1.0)
    values, indices = fn(scores=rand(0, 256, dtype=torch.float32), bias=bias, n_group=8, topk_group=4, topk=8,
                         routed_scaling_factor=1.0)
    assert values.shape == (0, 8) and indices.shape == (0, 8)


def test_moe_routing_bench_case_builds_and_routes(monkeypatch):
    """scripts/bench_solutions.py --family fused_topk_deepseek: the family's
    name and batch sizes resolve, and its case (SGLang's positional call)
    is routed and writes the buffers it reports, here on the CPU."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_solutions", ROOT / "scripts" / "bench_solutions.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench._op_and_size("fused_topk_deepseek_e256_k8") == ("fused_topk_deepseek", 256)
    assert bench.FAMILY_BATCHES["fused_topk_deepseek"] == [1, 3, 16, 127, 256, 1024, 4096, 8192]
    monkeypatch.setattr(bench, "DEVICE", DEVICE)
    enable("fused_topk_deepseek_e256_k8")
    for dtype in (torch.float32, torch.bfloat16):
        call, outputs, moved = bench.make_case("fused_topk_deepseek_e256_k8", 3, dtype)
        values, indices = outputs(call())
        assert moved > 3 * 256 * values.element_size()
        assert_routing(values, indices, *bench_inputs(call), "bench case")
    assert hits("flashinfer.fused_moe.fused_routing_dsv3.fused_topk_deepseek") == 2


def bench_inputs(call):
    """The scores and bias a bench case's call closes over."""
    cells = dict(zip(call.__code__.co_freevars, (c.cell_contents for c in call.__closure__)))
    return cells["scores"], cells["bias"]


def test_routing_respects_the_definition_dtypes():
    """fp32 is outside the definitions' dtypes: FlashInfer's own call runs."""
    enable("rmsnorm_h2048")
    x, w = torch.randn(2, 2048, device=DEVICE), torch.randn(2048, device=DEVICE)
    try:
        flashinfer.rmsnorm(x, w)
    except Exception:  # noqa: BLE001 - FlashInfer's kernel is not there on CPU
        pass
    assert hits("flashinfer.norm.rmsnorm") == 0


# ---------------------------------------------------------------------------
# Names and Definition files.
# ---------------------------------------------------------------------------


def fi_trace_name(definition: str) -> str:
    op, n = op_of(definition), size_of(definition)
    x = torch.empty(2, n, dtype=torch.bfloat16)
    if op in ("rmsnorm", "gemma_rmsnorm"):
        return getattr(flashinfer, op).fi_trace(input=x, weight=torch.empty(n, dtype=torch.bfloat16))["name"]
    if op in ("rmsnorm_quant", "fused_add_rmsnorm_quant"):
        extra = {"residual": x} if "fused" in op else {}
        return getattr(flashinfer.norm, op).fi_trace(
            out=torch.empty(2, n, dtype=torch.float8_e4m3fn), input=x, weight=torch.empty(n, dtype=torch.bfloat16),
            scale=torch.ones(1), **extra)["name"]
    if "fused_add" in op:
        return getattr(flashinfer, op).fi_trace(input=x, residual=x, weight=torch.empty(n, dtype=torch.bfloat16))["name"]
    if op in ACTS:
        return getattr(flashinfer, op).fi_trace(input=x)["name"]
    if op == "fused_topk_deepseek":
        return flashinfer.fused_moe.fused_topk_deepseek.fi_trace(
            scores=torch.empty(2, n), bias=torch.empty(n), n_group=8, topk_group=4, topk=8, routed_scaling_factor=2.5,
            topk_values=torch.empty(2, 8), topk_indices=torch.empty(2, 8, dtype=torch.int32))["name"]
    q, k = torch.empty(2, 8 * n, dtype=torch.bfloat16), torch.empty(2, 2 * n, dtype=torch.bfloat16)
    return flashinfer.apply_rope_with_cos_sin_cache_inplace.fi_trace(
        positions=torch.zeros(2, dtype=torch.int64), query=q, key=k, head_size=n,
        cos_sin_cache=torch.empty(16, n), is_neox=True,
    )["name"]


@pytest.mark.parametrize("definition", GENERATED)
def test_names_are_the_ones_flashinfer_computes(definition):
    assert fi_trace_name(definition) == definition


def test_one_definition_file_per_solution_in_the_schema():
    definitions = load_definitions(ROOT)
    assert sorted(d for d in definitions if definitions[d]["op_type"] != "sampling") == BUNDLED
    for name, d in definitions.items():
        for key in ("name", "op_type", "axes", "inputs", "outputs", "reference"):
            assert key in d, (name, key)
        assert not set(d["inputs"]) & set(d["outputs"]), f"{name}: input and output names overlap"
        for spec in list(d["inputs"].values()) + list(d["outputs"].values()):
            assert spec["shape"] is None or all(axis in d["axes"] for axis in spec["shape"]), name
            allowed = spec["dtype"] if isinstance(spec["dtype"], list) else [spec["dtype"]]
            assert allowed and all(isinstance(t, str) for t in allowed), name
        tensors = [s for s in d["inputs"].values() if s["shape"] is not None and s["dtype"] not in (["float32"], "float32")]
        assert all({"bfloat16", "float16"} <= set(s["dtype"]) for s in tensors if "int64" not in s["dtype"]), name
        for axis in d["axes"].values():
            assert axis["type"] in ("const", "var") and (axis["type"] == "var" or isinstance(axis["value"], int))
        for text in d.get("constraints", []):
            ast.parse(text, mode="eval")
        tree = ast.parse(d["reference"])
        assert any(isinstance(node, ast.FunctionDef) and node.name == "run" for node in tree.body), name


@pytest.mark.parametrize("op", OPS)
def test_definition_reference_agrees_with_the_solution(op):
    """The reference each Definition file states computes what the kernel does."""
    torch.manual_seed(14)
    definition = smallest(op)
    namespace: dict = {}
    exec(json.loads((next(catalog_folder(definition).glob(f"definitions/*/{definition}.json"))).read_text())["reference"], namespace)  # noqa: S102
    reference, fn, n = namespace["run"], solution(definition), size_of(definition)
    if op in ("rmsnorm", "gemma_rmsnorm"):
        x, w = rand(3, n), rand(n)
        assert_close(fn(hidden_states=x, weight=w), reference(x, w))
    elif op == "rmsnorm_quant":
        x, w, scale = rand(3, n), rand(n), torch.tensor([0.25], device=DEVICE)
        assert_fp8_close(fn(hidden_states=x, weight=w, scale=scale), reference(x, w, scale))
    elif op == "fused_add_rmsnorm_quant":
        x, r, w, scale = rand(3, n), rand(3, n), rand(n), torch.tensor([0.25], device=DEVICE)
        want = reference(x, r, w, scale)
        got = fn(hidden_states=x, residual=r.clone(), weight=w, scale=scale)
        assert_fp8_close(got[0], want[0])
        assert_close(got[1], want[1])
    elif "fused_add" in op:
        x, r, w = rand(3, n), rand(3, n), rand(n)
        want = reference(x, r, w)
        got = fn(hidden_states=x.clone(), residual=r.clone(), weight=w)
        assert_close(got[0], want[0])
        assert_close(got[1], want[1])
    elif op in ACTS:
        x = rand(3, n)
        assert_close(fn(input=x), reference(x))
    elif op == "fused_topk_deepseek":
        for dtype in (torch.float32, torch.bfloat16):
            scores, bias = rand(5, n, dtype=dtype), rand(n, dtype=dtype, scale=0.1)
            want_v, want_i = reference(scores, bias, 8, 4, 8, 2.5)
            got_v, got_i = fn(scores=scores, bias=bias, n_group=8, topk_group=4, topk=8, routed_scaling_factor=2.5)
            assert torch.equal(got_i, want_i) and got_v.dtype == dtype
            torch.testing.assert_close(got_v.float(), want_v.float(), rtol=1e-2 if dtype != torch.float32 else 4e-6, atol=1e-6)
    else:
        positions, q, k, cache = rope_case(3, n, torch.bfloat16)
        want = reference(positions, q, k, n, cache, False)
        got = fn(positions=positions, query=q.clone(), key=k.clone(), head_size=n, cos_sin_cache=cache, is_neox=False)
        assert_close(got[0], want[0])
        assert_close(got[1], want[1])


@pytest.mark.parametrize("op", ["rmsnorm", "silu_and_mul"])
def test_out_buffer_through_the_plugin_is_written_directly_or_via_a_checked_copy(op):
    """The kernels take the caller's out= when they can address it, so the
    plugin has nothing to copy; a buffer they cannot use (non-contiguous for
    the activations) still ends up with the right values."""
    definition = smallest(op)
    fn = solution(definition)
    size = size_of(definition)
    x = rand(3, size)  # both name the call by the input's width
    expected = ref_act(op, x) if op == "silu_and_mul" else ref_rmsnorm(x, rand(size) * 0 + 1)
    args = (x,) if op == "silu_and_mul" else (x, torch.ones(size, dtype=x.dtype, device=x.device))
    fita.enable_apply({definition: fn})
    api = getattr(flashinfer, op)  # looked up after enabling: the routed one
    direct = torch.empty_like(expected)
    assert api(*args, out=direct) is direct
    assert_close(direct, expected, "contiguous out=")
    wide = torch.zeros(3, expected.shape[-1] * 2, dtype=x.dtype, device=x.device)
    strided = wide[:, ::2]
    assert api(*args, out=strided) is strided
    assert_close(strided, expected, "strided out=")
    assert fita.stats()[api.__fita_route__.spec.fi_api]["hit"] == 2


_TRACE_SCRIPT = r"""
import json, sys
import torch
import torch.utils._triton as triton_support
# No GPU here: tell Dynamo Triton can run, so it treats kernel[grid](...) as it
# would on a GPU (a Triton kernel node in the graph); the graph is only
# captured, never run.
triton_support.has_triton = lambda: True
triton_support.has_triton_package = lambda: True
import flashinfer
import flashinfer_trace_apply as fita

solutions = fita.load_solutions(fita.bundled_solutions_path())
names = ["rmsnorm_h4096", "fused_add_rmsnorm_h4096", "silu_and_mul_h28672", "rope_cos_sin_cache_inplace_d128"]
fita.enable_apply({n: solutions[n] for n in names})
b = 3
x, r, w = torch.randn(b, 4096).bfloat16(), torch.randn(b, 4096).bfloat16(), torch.randn(4096).bfloat16()
gate_up = torch.randn(b, 28672).bfloat16()
q, k = torch.randn(b, 32 * 128).bfloat16(), torch.randn(b, 8 * 128).bfloat16()
positions, cache = torch.randint(0, 64, (b,)), torch.randn(64, 128)
calls = {
    "rmsnorm": lambda: flashinfer.rmsnorm(x, w, eps=1e-6),
    "fused_add_rmsnorm": lambda: flashinfer.fused_add_rmsnorm(x, r, w, eps=1e-6),
    "silu_and_mul": lambda: flashinfer.silu_and_mul(gate_up),
    "rope": lambda: flashinfer.apply_rope_with_cos_sin_cache_inplace(positions, q, k, 128, cache, is_neox=True),
}


class Captured(Exception):
    pass


found = {}
for name, call in calls.items():
    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        raise Captured

    torch._dynamo.reset()
    try:
        torch.compile(lambda: call(), fullgraph=True, dynamic=False, backend=backend)()
        found[name] = "ran"
    except Exception as exc:
        if graphs:
            found[name] = [type(n.target).__name__ for n in graphs[0].graph.nodes if n.op == "call_function"]
        else:
            found[name] = f"{type(exc).__name__}: {str(exc)[:400]}"
print(json.dumps(found))
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU, tests/test_gpu.py compiles and runs the real thing")
def test_routed_bundled_kernels_trace_into_one_graph_under_torch_compile():
    """torch.compile(fullgraph=True) of a call routed to a bundled Triton
    solution: Dynamo traces the plugin's dispatch and the solution's entry
    point down to the standard kernel[grid](...) launch, one graph with the
    Triton kernel in it, no graph break (a break raises under fullgraph).
    In a subprocess: the interpreter (TRITON_INTERPRET) must be off."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _TRACE_SCRIPT], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    for name, nodes in found.items():
        assert isinstance(nodes, list) and "TritonKernelWrapperMutation" in nodes, (name, nodes)
