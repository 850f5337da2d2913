"""On a CUDA GPU: routed calls give what FlashInfer's own kernels give, misses
run the original kernels, and CUDA-graph capture applies only warmed shapes.
Skipped without CUDA (see conftest.py); run on the device machine."""

from __future__ import annotations

import pytest
import torch

import flashinfer
import flashinfer_trace_apply as fita

pytestmark = pytest.mark.gpu


def torch_rmsnorm(hidden_states, weight, eps=1e-6):
    x = hidden_states.float()
    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(hidden_states.dtype)


def torch_fused_add_rmsnorm(hidden_states, residual, weight, eps=1e-6):
    added = hidden_states.float() + residual.float()
    return torch_rmsnorm(added.to(hidden_states.dtype), weight, eps), added.to(hidden_states.dtype)


def torch_silu_and_mul(input):
    d = input.shape[-1] // 2
    return (torch.nn.functional.silu(input[..., :d].float()) * input[..., d:].float()).to(input.dtype)


def close(a, b, dtype=torch.bfloat16):
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-3
    return torch.allclose(a.float(), b.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("batch", [1, 7, 512])
def test_rmsnorm_and_fused_add_match_the_original_kernels(batch):
    x = torch.randn(batch, 4096, dtype=torch.bfloat16, device="cuda")
    w = torch.randn(4096, dtype=torch.bfloat16, device="cuda")
    residual = torch.randn_like(x)
    expected = flashinfer.rmsnorm(x, w, eps=1e-5)
    x_ref, r_ref = x.clone(), residual.clone()
    flashinfer.fused_add_rmsnorm(x_ref, r_ref, w)

    fita.enable_apply({"rmsnorm_h4096": torch_rmsnorm, "fused_add_rmsnorm_h4096": torch_fused_add_rmsnorm})
    assert close(flashinfer.rmsnorm(x, w, eps=1e-5), expected)
    out = torch.empty_like(x)
    assert flashinfer.rmsnorm(x, w, eps=1e-5, out=out) is out and close(out, expected)
    x_in, r_in = x.clone(), residual.clone()
    flashinfer.fused_add_rmsnorm(x_in, r_in, w)
    assert close(x_in, x_ref) and close(r_in, r_ref)
    # A miss runs FlashInfer's own kernel, bit for bit.
    x2, w2 = x[:, :2048].contiguous(), w[:2048].contiguous()
    missed = flashinfer.rmsnorm(x2, w2)
    fita.disable_apply()
    assert torch.equal(missed, flashinfer.rmsnorm(x2, w2))


def test_silu_and_mul_matches_the_original_kernel():
    x = torch.randn(33, 2 * 14336, dtype=torch.bfloat16, device="cuda")
    expected = flashinfer.silu_and_mul(x)
    name = flashinfer.silu_and_mul.fi_trace(input=x)["name"]
    fita.enable_apply({name: torch_silu_and_mul})
    assert close(flashinfer.silu_and_mul(x), expected)
    out = torch.empty_like(expected)
    assert flashinfer.silu_and_mul(x, out=out) is out and close(out, expected)
    assert fita.stats()["flashinfer.activation.silu_and_mul"]["hit"] == 2


def _decode_setup():
    from flashinfer.trace.templates.attention import gqa_paged_decode_trace as template

    inputs = template.init(batch_size=5, device="cuda")
    workspace = torch.empty(128 * 1024 * 1024, dtype=torch.uint8, device="cuda")
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
    wrapper.plan(**inputs["plan"])
    return template, wrapper, inputs["run"]


def test_batch_decode_run_matches_the_original_kernel():
    template, wrapper, run = _decode_setup()
    expected, expected_lse = wrapper.run(**run, return_lse=True)
    name = flashinfer.BatchDecodeWithPagedKVCacheWrapper.run.fi_trace(**run)["name"]
    calls = []

    def solution(q, k_cache, v_cache, kv_indptr, kv_indices, sm_scale):
        calls.append(sm_scale)
        return template.reference(q, k_cache, v_cache, kv_indptr, kv_indices, sm_scale)

    fita.enable_apply({name: solution})
    out = wrapper.run(**run)
    assert out.shape == expected.shape and close(out, expected)
    out2, lse = wrapper.run(**run, return_lse=True)
    assert close(out2, expected) and torch.allclose(lse, expected_lse, atol=2e-2, rtol=2e-2)
    assert fita.stats()[next(k for k in fita.stats() if k.endswith("BatchDecodeWithPagedKVCacheWrapper.run"))]["hit"] == 2
    assert calls[0] == pytest.approx(1 / 128 ** 0.5)


def test_cuda_graph_capture_applies_only_warmed_shapes():
    fita.enable_apply({"rmsnorm_h4096": torch_rmsnorm})
    w = torch.randn(4096, dtype=torch.bfloat16, device="cuda")
    warm = torch.randn(8, 4096, dtype=torch.bfloat16, device="cuda")
    flashinfer.rmsnorm(warm, w)  # resolves h4096 eagerly
    cold_w = torch.randn(2048, dtype=torch.bfloat16, device="cuda")
    cold = torch.randn(8, 2048, dtype=torch.bfloat16, device="cuda")
    flashinfer.rmsnorm(cold, cold_w)  # compile FlashInfer's kernel outside capture
    fita.enable_apply({"rmsnorm_h4096": torch_rmsnorm, "rmsnorm_h1024": torch_rmsnorm})
    flashinfer.rmsnorm(warm, w)
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph, stream=stream):
            y_warm = flashinfer.rmsnorm(warm, w)
            y_cold = flashinfer.rmsnorm(cold, cold_w)
    graph.replay()
    torch.cuda.synchronize()
    counts = fita.stats()["flashinfer.norm.rmsnorm"]
    assert counts["hit"] == 2 and counts["fallback_unwarmed_in_capture"] == 1
    assert close(y_warm, torch_rmsnorm(warm, w)) and close(y_cold, torch_rmsnorm(cold, cold_w))


def test_bundled_folder_checks_on_gpu():
    from flashinfer_trace_apply.check import run_check

    folder = str(fita.bundled_solutions_path())
    from flashinfer_trace_apply.definitions import evaluate, parse_constraint

    batches = [1, 3, 127, 4096]
    rows = run_check(folder, batches=batches)

    def declines(solution, batch):  # the folder's own rule, read independently of check
        for text in solution.spec.applies_when:
            axis = text.split()[0]
            if not evaluate(parse_constraint(text, {axis: "var"}), {axis: batch}):
                return True
        return False

    solutions = fita.load_solutions(folder)
    expected = {(n, b) for n, s in solutions.items() for b in batches if declines(s, b)}
    # Calls a solution's applies_when declines run FlashInfer's kernel: skipped, not failed.
    outside = [r for r in rows if r.result == "skip" and "applies_when" in r.detail]
    assert expected and {(r.definition, r.batch) for r in outside} == expected
    assert rows and all(r.result == "pass" for r in rows if r not in outside), [r for r in rows if r.result != "pass"]


def test_target_hardware_is_matched_against_this_gpu():
    """On this GPU, a Solution targeting it (named as a product) routes; one
    targeting another architecture runs the original and is counted."""
    import warnings

    from flashinfer_trace_apply.hardware import current_sm
    from flashinfer_trace_apply.solution import Solution

    source = (
        "import torch\n"
        "def run(hidden_states, weight, eps=1e-6):\n"
        "    x = hidden_states.float()\n"
        "    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(hidden_states.dtype)\n"
    )

    def solution_for(targets):
        return Solution.from_dict({
            "name": "hw_test", "definition": "rmsnorm_h4096", "author": "tests",
            "spec": {"language": "python", "target_hardware": targets, "entry_point": "k.py::run"},
            "sources": [{"path": "k.py", "content": source}],
        })

    here = f"sm{current_sm()}"
    other = "sm_80" if current_sm() != 80 else "sm_90a"
    x = torch.randn(4, 4096, dtype=torch.bfloat16, device="cuda")
    w = torch.randn(4096, dtype=torch.bfloat16, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fita.enable_apply({"rmsnorm_h4096": solution_for([other])})
        flashinfer.rmsnorm(x, w)
        assert fita.stats()["flashinfer.norm.rmsnorm"]["fallback_unsupported_arch"] == 1
        fita.enable_apply({"rmsnorm_h4096": solution_for([here, "NVIDIA_B200"])})
        flashinfer.rmsnorm(x, w)
        assert fita.stats()["flashinfer.norm.rmsnorm"]["hit"] == 1
        if current_sm() == 90:
            fita.enable_apply({"rmsnorm_h4096": solution_for(["NVIDIA_H100"])})
            flashinfer.rmsnorm(x, w)
            assert fita.stats()["flashinfer.norm.rmsnorm"]["hit"] == 1


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warmed"])
def test_function_routed_to_bundled_triton_solutions_compiles_fullgraph(backend, warm):
    """torch.compile(fullgraph=True) of a layer's worth of FlashInfer calls
    routed to the bundled Triton solutions (norms, SwiGLU, RoPE in place):
    Dynamo traces the kernels' standard launch (no graph break), the results
    equal the eagerly routed calls', and nothing is counted as an error. Cold:
    the first call of each shape happens while tracing."""
    names = ["rmsnorm_h4096", "fused_add_rmsnorm_h4096", "silu_and_mul_h28672", "rope_cos_sin_cache_inplace_d128"]
    solutions = fita.load_solutions(fita.bundled_solutions_path())
    fita.enable_apply({n: solutions[n] for n in names})
    torch.manual_seed(0)
    batch = 3
    x, r = torch.randn(batch, 4096, device="cuda").bfloat16(), torch.randn(batch, 4096, device="cuda").bfloat16()
    w = torch.randn(4096, device="cuda").bfloat16()
    gate_up = torch.randn(batch, 28672, device="cuda").bfloat16()
    q, k = torch.randn(batch, 32 * 128, device="cuda").bfloat16(), torch.randn(batch, 8 * 128, device="cuda").bfloat16()
    positions = torch.randint(0, 64, (batch,), device="cuda")
    cache = torch.randn(64, 128, device="cuda")

    def layer(x, r, w, gate_up, positions, q, k, cache):
        h = flashinfer.rmsnorm(x, w, eps=1e-6)
        flashinfer.fused_add_rmsnorm(h, r, w, eps=1e-6)
        a = flashinfer.silu_and_mul(gate_up)
        flashinfer.apply_rope_with_cos_sin_cache_inplace(positions, q, k, 128, cache, is_neox=True)
        return h, r, a, q, k

    def fresh():
        return x, r.clone(), w, gate_up, positions, q.clone(), k.clone(), cache

    if warm:
        layer(*fresh())
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend=backend)
    got = compiled(*fresh())
    got_again = compiled(*fresh())
    want = layer(*fresh())  # routed eagerly: the same kernels
    for g, g2, e in zip(got, got_again, want):
        assert torch.equal(g, e) and torch.equal(g2, e)
    stats = fita.stats()
    for api in ("flashinfer.norm.rmsnorm", "flashinfer.norm.fused_add_rmsnorm", "flashinfer.activation.silu_and_mul",
                "flashinfer.rope.apply_rope_with_cos_sin_cache_inplace"):
        assert stats[api]["error"] == 0 and stats[api]["hit"] >= 1, (api, stats[api])
