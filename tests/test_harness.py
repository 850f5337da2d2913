"""CPU smoke tests of scripts/harness_reference_routing.py (the GPU harness).

The original kernels need CUDA, so the end-to-end tests stand in a small
CPU implementation of the API (wrapping the registered function, as the
public object does) and run one case through both engines, the way the
harness does on a GPU.
"""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "harness_reference_routing.py"


@pytest.fixture(scope="module")
def harness():
    spec = importlib.util.spec_from_file_location("harness_reference_routing", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cases(harness):
    found, _, _ = harness.discover()
    return {c.id: c for c in found}


def _cpu_engines(harness, monkeypatch):
    if not torch.cuda.is_available():
        # The built-in asks this on every first call; a CPU-only torch raises.
        monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    return harness.make_engines(["ours", "builtin"])


def _stand_in(monkeypatch, case, impl):
    """Replace the public API by a CPU ``impl`` that looks like it (same
    wrapped function, signature and fi_trace), for both engines to wrap."""
    fake = functools.update_wrapper(impl, case.public)
    monkeypatch.setattr(case.module, case.attr, fake)
    monkeypatch.setattr(case, "public", fake)
    return fake


def test_list_runs_without_a_gpu_and_explains_exclusions():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--list"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for api in (
        "flashinfer.norm.rmsnorm",
        "flashinfer.norm.fused_add_rmsnorm",
        "flashinfer.activation.silu_and_mul",
        "flashinfer.rope.apply_rope_with_cos_sin_cache_inplace",
        "flashinfer.page.append_paged_kv_cache",
        "flashinfer.cascade.merge_state_in_place",
        "flashinfer.sampling.top_k_renorm_probs",
    ):
        assert f"| {api} |" in out
    assert "random draws" in out  # sampling APIs that draw are excluded
    assert "wrapper-class method" in out  # MultiLevelCascadeAttentionWrapper.run


def test_scope_is_the_six_modules_and_deterministic_sampling(cases):
    families = {c.family for c in cases.values()}
    assert families <= set(("norm", "activation", "rope", "page", "cascade", "sampling"))
    sampling = {c.fi_api.rsplit(".", 1)[1] for c in cases.values() if c.family == "sampling"}
    assert {"softmax", "top_k_renorm_probs", "top_p_renorm_probs", "top_k_mask_logits"} <= sampling
    assert not any("sampling_from" in name or name.startswith("chain_") for name in sampling)
    assert all(c.template.reference is not None and c.template.init is not None for c in cases.values())


def test_solution_takes_definition_names_and_feeds_the_reference(harness, cases):
    # gemma_rmsnorm's reference names its first parameter after the API ("input").
    case = cases["flashinfer.norm.gemma_rmsnorm"]
    axes, inputs = harness.build_inputs(case.template, "cpu")
    solution = harness.make_solution(case.template, "gemma_rmsnorm_h4608")
    params = list(__import__("inspect").signature(solution).parameters)
    assert params[:2] == ["hidden_states", "weight"]
    got = solution(**harness.definition_kwargs(case.template, inputs))
    want = case.template.reference(inputs["input"], inputs["weight"])
    assert torch.equal(got, want)
    with pytest.raises(TypeError):
        solution(hidden_states=inputs["input"], weight=inputs["weight"], bogus=1)


def test_solution_rebuilds_a_tuple_input(harness, cases):
    case = cases["flashinfer.rope.rope_quantize_fp8_append_paged_kv_cache"]
    solution = harness.make_solution(case.template, "x")
    params = __import__("inspect").signature(solution).parameters
    assert "k_cache" in params and "v_cache" in params and "paged_kv_cache" not in params
    assert "kv_layout" in params  # a reference parameter no definition input feeds keeps its name


def test_partial_inplace_write_is_exposed(harness, cases, monkeypatch):
    """fused_add_rmsnorm writes input and residual; its reference returns only
    the normalized output. The built-in writes input and leaves residual
    stale; the harness must say so."""
    case = cases["flashinfer.norm.fused_add_rmsnorm"]

    def fused_add_rmsnorm(input, residual, weight, eps=1e-6, enable_pdl=None):
        x = input.float() + residual.float()
        residual.copy_(x.to(residual.dtype))
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
        input.copy_(y.to(input.dtype))

    _stand_in(monkeypatch, case, fused_add_rmsnorm)
    rec = harness.run_case(case, _cpu_engines(harness, monkeypatch), "cpu", False, {})
    assert rec["definition"] == "fused_add_rmsnorm_h5120"
    assert sorted(rec["original"]["written"]) == ["input", "residual"]
    builtin = rec["engines"]["builtin"]
    assert builtin["routed"] and builtin["status"].startswith("mismatch"), builtin["status"]
    assert "residual not written" in builtin["status"]
    assert rec["engines"]["ours"]["status"] != "match"
    assert rec["reference_vs_original"]["verdict"].startswith("differs: returns no residual")


def test_value_returning_api_and_its_out_rerun_match(harness, cases, monkeypatch):
    case = cases["flashinfer.norm.rmsnorm"]

    def rmsnorm(input, weight, eps=1e-6, out=None, enable_pdl=None):
        x = input.float()
        y = (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(input.dtype)
        if out is None:
            return y
        out.copy_(y)
        return out

    _stand_in(monkeypatch, case, rmsnorm)
    engines = _cpu_engines(harness, monkeypatch)
    shared = {}
    rec = harness.run_case(case, engines, "cpu", False, shared)
    assert rec["out_rerun"] == ["out"]
    assert rec["reference_vs_original"]["verdict"] == "agrees"
    for name in ("ours", "builtin"):
        assert rec["engines"][name]["status"] == "match", (name, rec["engines"][name])

    variant = harness.Case(**{**case.__dict__, "out_variant": True})
    rec = harness.run_case(variant, engines, "cpu", False, shared)
    assert rec["original"]["written"] == ["out"] and rec["original"]["return_aliases"] == {"0": "out"}
    for name in ("ours", "builtin"):
        assert rec["engines"][name]["status"] == "match", (name, rec["engines"][name])


def test_compare_names_each_wrong_effect(harness, cases):
    template = cases["flashinfer.norm.fused_add_rmsnorm"].template
    before = {"input": torch.zeros(2, 4, dtype=torch.bfloat16), "residual": torch.zeros(2, 4, dtype=torch.bfloat16),
              "weight": torch.ones(4, dtype=torch.bfloat16)}
    written = {"input": torch.ones(2, 4, dtype=torch.bfloat16), "residual": torch.full((2, 4), 2.0, dtype=torch.bfloat16),
               "weight": before["weight"].clone()}
    orig = harness.observe(None, written)
    # Returns a float32 tensor, writes nothing, and scribbles on weight.
    got_args = {k: v.clone() for k, v in before.items()}
    got_args["weight"].fill_(3)
    got = harness.observe(torch.ones(2, 4), got_args)
    problems, _ = harness.compare(template, orig, got, before)
    text = "; ".join(problems)
    assert "return is tensor" in text
    assert "input not written" in text and "residual not written" in text
    assert "weight modified" in text
    # The same effects, right: no problems.
    problems, checks = harness.compare(template, orig, harness.observe(None, {k: v.clone() for k, v in written.items()}), before)
    assert problems == [] and {c["effect"] for c in checks} == {"input", "residual"}
