"""The engine call patterns of test_engine_call_patterns.py on a GPU, with
FlashInfer's own kernels as the originals: a routed call (the solution is the
template's reference, or a torch equivalent) returns what the kernel returns,
within the dtype's tolerance; a call no definition matches runs the kernel
and is bit-identical to the same call with the plugin off.

``allreduce_fusion`` needs several GPUs and a shared workspace; it is not
here (the late import that reaches it is covered on CPU).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings
from pathlib import Path

import pytest
import torch

import flashinfer
import flashinfer_trace_apply as fita
from flashinfer_trace_apply.warn import TraceApplyWarning

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
import engine_patterns_helpers as ep  # noqa: E402

pytestmark = pytest.mark.gpu


def close(a, b, tol=2e-2):
    return a.shape == b.shape and a.dtype == b.dtype and torch.allclose(a.float(), b.float(), atol=tol, rtol=tol)


def torch_rmsnorm(hidden_states, weight, eps=1e-6):
    x = hidden_states.float()
    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(hidden_states.dtype)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceApplyWarning)
        return fn(*args, **kwargs)


def test_sgl_kernel_rmsnorm_forwarding_and_the_strided_kv_a_view():
    w = torch.randn(4096, dtype=torch.bfloat16, device="cuda")
    x = torch.randn(7, 4096, dtype=torch.bfloat16, device="cuda")
    latent_cache = torch.randn(7, 576, dtype=torch.bfloat16, device="cuda")
    kv_a, w512 = latent_cache[..., :512], torch.randn(512, dtype=torch.bfloat16, device="cuda")
    x_miss, w_miss = torch.randn(7, 2048, dtype=torch.bfloat16, device="cuda"), torch.randn(2048, dtype=torch.bfloat16, device="cuda")
    expected = flashinfer.norm.rmsnorm(x, w, 1e-6, None, None)
    expected_kv_a = flashinfer.norm.rmsnorm(kv_a, w512, 1e-6, None, None)
    expected_miss = flashinfer.norm.rmsnorm(x_miss, w_miss, 1e-6, None, None)
    fita.enable_apply({"rmsnorm_h4096": torch_rmsnorm, "rmsnorm_h512": torch_rmsnorm})
    assert close(flashinfer.norm.rmsnorm(x, w, 1e-6, None, None), expected)
    assert close(flashinfer.norm.rmsnorm(kv_a, w512, 1e-6, None, None), expected_kv_a)
    assert torch.equal(flashinfer.norm.rmsnorm(x_miss, w_miss, 1e-6, None, None), expected_miss)
    counts = fita.stats()["flashinfer.norm.rmsnorm"]
    assert counts["hit"] == 2 and counts["fallback_no_candidate"] == 1


def test_fused_add_rmsnorm_quant_bound_before_enable_with_rebind(tmp_path, monkeypatch):
    name = ep.write_engine_module(tmp_path, "engine_layernorm_gpu")
    monkeypatch.syspath_prepend(str(tmp_path))
    engine = importlib.import_module(name)
    try:
        h = ep.HIDDEN * 64  # 4096
        x = torch.randn(5, h, dtype=torch.bfloat16, device="cuda")
        res = torch.randn(5, h, dtype=torch.bfloat16, device="cuda")
        w = torch.randn(h, dtype=torch.bfloat16, device="cuda")
        out_ref, res_ref = torch.empty(5, h, dtype=torch.float8_e4m3fn, device="cuda"), res.clone()
        engine.fused_add_rmsnorm_quant(out_ref, x, res_ref, w, 1.0)

        def solution(hidden_states, residual, weight, scale, eps=1e-6):
            r = (hidden_states.float() + residual.float()).to(residual.dtype)
            return (torch_rmsnorm(r, weight, eps).float() / float(scale)).to(torch.float8_e4m3fn), r

        _quiet(fita.enable_apply, {f"fused_add_rmsnorm_quant_h{h}": solution}, rebind=True)
        out, res2 = torch.empty_like(out_ref), res.clone()
        engine.fused_add_rmsnorm_quant(out, x, res2, w, 1.0)
        assert fita.stats()["flashinfer.norm.fused_add_rmsnorm_quant"]["hit"] == 1
        assert close(res2, res_ref) and close(out.float(), out_ref.float(), tol=0.13)  # one fp8 step
    finally:
        sys.modules.pop(name, None)


def test_sampler_renorms_match_and_a_sampling_miss_is_bit_identical():
    vocab = 32000
    probs = torch.softmax(torch.randn(4, vocab, device="cuda"), -1)
    top_k = torch.full((4,), 20, dtype=torch.int32, device="cuda")
    top_p = torch.full((4,), 0.9, device="cuda")
    expected_k = flashinfer.sampling.top_k_renorm_probs(probs, top_k)
    seeded = torch.Generator(device="cuda")
    seeded.manual_seed(1)
    expected_sample = flashinfer.sampling.top_k_top_p_sampling_from_probs(
        probs, top_k, top_p, filter_apply_order="joint", generator=seeded)

    def top_k_renorm(probs, top_k):
        kth = probs.topk(int(top_k.max()), -1).values[:, -1:]
        kept = torch.where(probs >= kth, probs, torch.zeros_like(probs))
        return kept / kept.sum(-1, keepdim=True)

    fita.enable_apply({f"top_k_renorm_probs_v{vocab}": top_k_renorm,
                       "top_k_top_p_sampling_v151936": lambda **_: None})  # another vocab: a miss here
    assert close(flashinfer.sampling.top_k_renorm_probs(probs, top_k), expected_k, tol=1e-4)
    seeded.manual_seed(1)
    again = flashinfer.sampling.top_k_top_p_sampling_from_probs(probs, top_k, top_p, filter_apply_order="joint",
                                                               generator=seeded)
    assert torch.equal(again, expected_sample)
    assert fita.stats()["flashinfer.sampling.top_k_top_p_sampling_from_probs"]["fallback_no_candidate"] == 1


def _paged_prefill(heads=32, kv_heads=8):
    from flashinfer.trace.templates.attention import gqa_paged_prefill_trace as template

    inputs = template.init(total_q=40, batch_size=4, num_qo_heads=heads, num_kv_heads=kv_heads, head_dim=128,
                           page_size=16, num_pages_per_seq=4, device="cuda")
    workspace = torch.empty(128 * 1024 * 1024, dtype=torch.uint8, device="cuda")
    wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")
    return template, wrapper, inputs


def _reference_solution(template):
    params = list(inspect.signature(template.reference).parameters)

    def solution(**kwargs):
        return template.reference(**{k: kwargs[k] for k in params})

    return solution


def test_prefill_begin_forward_forward_return_lse_and_run_return_lse():
    template, wrapper, inputs = _paged_prefill()
    q, cache = inputs["run"]["q"], inputs["run"]["paged_kv_cache"]
    wrapper.begin_forward(**inputs["plan"])
    expected_out, expected_lse = wrapper.forward_return_lse(q, cache, causal=True)
    name = "gqa_paged_prefill_h32_kv8_d128_ps16"
    fita.enable_apply({name: _reference_solution(template)})
    wrapper.begin_forward(**inputs["plan"])  # through the class-body alias of plan
    for out, lse in (wrapper.forward_return_lse(q, cache, causal=True), wrapper.run_return_lse(q, cache)):
        assert close(out, expected_out) and torch.allclose(lse, expected_lse, atol=2e-2, rtol=2e-2)
    assert fita.stats()["flashinfer.prefill.BatchPrefillWithPagedKVCacheWrapper.run"]["hit"] == 2


def test_prefill_miss_is_bit_identical():
    template, wrapper, inputs = _paged_prefill()
    q, cache = inputs["run"]["q"], inputs["run"]["paged_kv_cache"]
    wrapper.begin_forward(**inputs["plan"])
    expected_out, expected_lse = wrapper.forward_return_lse(q, cache, causal=True)
    fita.enable_apply({"gqa_paged_prefill_h64_kv8_d128_ps16": _reference_solution(template)})
    wrapper.begin_forward(**inputs["plan"])
    out, lse = wrapper.forward_return_lse(q, cache, causal=True)
    assert torch.equal(out, expected_out) and torch.equal(lse, expected_lse)
    assert fita.stats()["flashinfer.prefill.BatchPrefillWithPagedKVCacheWrapper.run"]["fallback_no_candidate"] == 1


def test_concat_mla_k_imported_inside_the_function_after_enable():
    heads, nope, rope = ep.MLA_HEADS, ep.MLA_NOPE, ep.MLA_ROPE

    def vllm_mla_prefill(k, k_nope, k_rope):
        from flashinfer.concat_ops import concat_mla_k  # noqa: PLC0415

        concat_mla_k(k, k_nope, k_rope)

    fita.enable_apply({f"concat_mla_k_h{heads}_nope{nope}_rope{rope}_d{nope + rope}":
                       lambda k, k_nope, k_rope: torch.cat([k_nope, k_rope.expand(-1, k_nope.shape[1], -1)], -1)})
    k_nope = torch.randn(9, heads, nope, dtype=torch.bfloat16, device="cuda")
    k_rope = torch.randn(9, 1, rope, dtype=torch.bfloat16, device="cuda")
    routed = torch.zeros(9, heads, nope + rope, dtype=torch.bfloat16, device="cuda")
    vllm_mla_prefill(routed, k_nope, k_rope)
    fita.disable_apply()
    original = torch.zeros_like(routed)
    vllm_mla_prefill(original, k_nope, k_rope)
    assert torch.equal(routed, original)  # a copy: exact
    assert fita.stats()["flashinfer.concat_ops.concat_mla_k"]["hit"] == 1
