"""FlashInfer called exactly as SGLang 0.5.23 and vLLM 0.33 call it
(``/work/shared/ENGINES.md``): argument forms, tensor layouts, late imports,
class-body aliases, and names bound before the plugin. Each case asserts the
call reached the registered Python solution (or, where it cannot, that the
enable warning and ``doctor`` say so). Real FlashInfer 0.7.2.post1 on CPU;
the GPU variant with FlashInfer's kernels as originals is
``test_engine_call_patterns_gpu.py``.
"""

from __future__ import annotations

import functools
import importlib
import json
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
import hook_helpers as hh  # noqa: E402

H = ep.HIDDEN


def _rmsnorm(x, w, eps=1e-6):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(x.dtype)


def _hits(api: str) -> int:
    return fita.stats().get(api, {}).get("hit", 0)


# -- sgl_kernel forwarding: out=None, enable_pdl=None passed positionally ------------


def test_sgl_kernel_forwarding_passes_out_and_enable_pdl_positionally():
    seen = []

    def rmsnorm(hidden_states, weight, eps=1e-6):
        seen.append(eps)
        return _rmsnorm(hidden_states, weight, eps)

    def fused_add(hidden_states, residual, weight, eps=1e-6):
        r = hidden_states.float() + residual.float()
        return _rmsnorm(r.to(hidden_states.dtype), weight, eps), r.to(residual.dtype)

    fita.enable_apply({f"rmsnorm_h{H}": rmsnorm, f"fused_add_rmsnorm_h{H}": fused_add,
                       f"gemma_rmsnorm_h{H}": rmsnorm, f"gemma_fused_add_rmsnorm_h{H}": fused_add})
    x = torch.randn(3, H, dtype=torch.bfloat16)
    w = torch.randn(H, dtype=torch.bfloat16)
    # sgl_kernel.elementwise.rmsnorm: flashinfer.norm.rmsnorm(input, weight, eps, out, enable_pdl)
    y = flashinfer.norm.rmsnorm(x, w, 1e-5, None, None)
    assert torch.equal(y, _rmsnorm(x, w, 1e-5)) and seen == [1e-5]
    out = torch.empty_like(x)
    assert flashinfer.norm.rmsnorm(x, w, 1e-5, out, None) is out and torch.equal(out, y)
    # sgl_kernel.elementwise.fused_add_rmsnorm(input, residual, weight, eps, enable_pdl): in place
    x2, res = x.clone(), torch.randn_like(x)
    expected_res = (x.float() + res.float()).to(x.dtype)
    assert flashinfer.norm.fused_add_rmsnorm(x2, res, w, 1e-6, None) is None
    assert torch.equal(res, expected_res) and torch.equal(x2, _rmsnorm(expected_res, w))
    flashinfer.norm.gemma_rmsnorm(x, w, 1e-6, None, None)
    flashinfer.norm.gemma_fused_add_rmsnorm(x.clone(), res.clone(), w, 1e-6, None)
    for api in ("rmsnorm", "fused_add_rmsnorm", "gemma_rmsnorm", "gemma_fused_add_rmsnorm"):
        assert _hits(f"flashinfer.norm.{api}") >= 1, api


def test_deepseek_kv_a_row_strided_view_at_h512():
    """SGLang normalises kv_a = latent_cache[..., :512], a view whose rows
    are 576 elements apart; the solution gets the view, the cache is untouched."""
    got = []

    def rmsnorm(hidden_states, weight, eps=1e-6):
        got.append((hidden_states.shape, hidden_states.stride()))
        return _rmsnorm(hidden_states, weight, eps)

    fita.enable_apply({"rmsnorm_h512": rmsnorm})
    latent_cache = torch.randn(5, 576, dtype=torch.bfloat16)
    before = latent_cache.clone()
    kv_a = latent_cache[..., :512]
    w = torch.randn(512, dtype=torch.bfloat16)
    y = flashinfer.norm.rmsnorm(kv_a, w, 1e-6, None, None)
    assert got == [((5, 512), (576, 1))]
    assert y.shape == (5, 512) and torch.equal(y, _rmsnorm(kv_a.contiguous(), w))
    assert torch.equal(latent_cache, before)
    assert _hits("flashinfer.norm.rmsnorm") == 1


# -- samplers ----------------------------------------------------------------------------


def _argmax_sampler(record, name):
    def solution(**kwargs):
        record.append((name, {k: v for k, v in kwargs.items() if not torch.is_tensor(v)}))
        source = kwargs.get("probs", kwargs.get("logits"))
        return source.argmax(-1).to(torch.int32)

    return solution


def _renorm(record, name):
    def solution(**kwargs):
        record.append((name, {k: v for k, v in kwargs.items() if not torch.is_tensor(v)}))
        return kwargs["probs"].clone()

    return solution


def test_samplers_as_sglang_and_vllm_call_them():
    vocab = 128
    record = []

    def accepts(fn, params):
        # A solution that names the engine's extra arguments receives them.
        sig_params = ", ".join(f"{p}=None" for p in params)
        ns = {"inner": fn}
        exec(f"def solution({sig_params}):\n    return inner(**{{k: v for k, v in locals().items()}})", ns)  # noqa: S102
        return ns["solution"]

    sampler_params = ["probs", "top_k", "top_p", "min_p", "indices", "filter_apply_order", "deterministic", "check_nan"]
    mapping = {
        f"top_k_top_p_sampling_v{vocab}": accepts(_argmax_sampler(record, "k_p_probs"), sampler_params),
        f"min_p_sampling_v{vocab}": accepts(_argmax_sampler(record, "min_p"), sampler_params),
        f"top_p_sampling_v{vocab}": accepts(_argmax_sampler(record, "p"), sampler_params),
        f"top_k_sampling_v{vocab}": accepts(_argmax_sampler(record, "k"), sampler_params),
        f"top_k_top_p_sampling_from_logits_v{vocab}": accepts(
            _argmax_sampler(record, "k_p_logits"), ["logits", "top_k", "top_p", "indices", "filter_apply_order", "deterministic"]),
        f"top_k_renorm_probs_v{vocab}": accepts(_renorm(record, "k_renorm"), ["probs", "top_k"]),
        f"top_p_renorm_probs_v{vocab}": accepts(_renorm(record, "p_renorm"), ["probs", "top_p"]),
    }
    fita.enable_apply(mapping)
    probs = torch.softmax(torch.randn(4, vocab), -1)
    logits = torch.randn(4, vocab)
    top_k, top_p, min_p = torch.full((4,), 8, dtype=torch.int32), torch.full((4,), 0.9), torch.full((4,), 0.05)
    s = flashinfer.sampling
    # SGLang's sampler (filter_apply_order="joint", check_nan from its flag)
    assert torch.equal(s.top_k_top_p_sampling_from_probs(probs, top_k, top_p, filter_apply_order="joint", check_nan=True),
                       probs.argmax(-1).to(torch.int32))
    s.min_p_sampling_from_probs(probs, min_p)
    s.top_k_renorm_probs(probs, top_k)
    s.top_p_renorm_probs(probs, top_p)
    # vLLM's FlashInfer sampler: deterministic=True always passed
    s.top_k_top_p_sampling_from_logits(logits, top_k, top_p, deterministic=True)
    s.top_p_sampling_from_probs(probs, top_p, deterministic=True)
    s.top_k_sampling_from_probs(probs, top_k, deterministic=True)
    by_name = dict(record)
    assert by_name["k_p_probs"]["filter_apply_order"] == "joint" and by_name["k_p_probs"]["check_nan"] is True
    assert by_name["k_p_logits"]["deterministic"] is True
    assert by_name["p"]["deterministic"] is True and by_name["k"]["deterministic"] is True
    assert set(by_name) == {"k_p_probs", "min_p", "k_renorm", "p_renorm", "k_p_logits", "p", "k"}
    assert all(counts["hit"] == 1 for counts in fita.stats().values())


# -- prefill wrappers: forward_return_lse, run_return_lse, begin_forward --------------------


def _prefill_inputs(kind):
    from flashinfer.trace.templates import attention as A

    if kind == "paged":
        template = A.gqa_paged_prefill_trace
        inputs = template.init(total_q=6, batch_size=2, num_qo_heads=4, num_kv_heads=2, head_dim=64,
                               page_size=4, num_pages_per_seq=2, device="cpu")
        name = "gqa_paged_prefill_h4_kv2_d64_ps4"
        cls = flashinfer.BatchPrefillWithPagedKVCacheWrapper
    else:
        template = A.gqa_ragged_prefill_trace
        inputs = template.init(total_q=6, total_kv=10, batch_size=2, num_qo_heads=4, num_kv_heads=2, head_dim=64,
                               device="cpu")
        name = "gqa_ragged_h4_kv2_d64"
        cls = flashinfer.BatchPrefillWithRaggedKVCacheWrapper
    return template, inputs, name, cls


def _as_planned(cls, plan):
    """A wrapper as plan() leaves it (plan() itself needs CUDA), the way
    SGLang's own fast plan functions leave it: instance buffers set directly."""
    wrapper = cls.__new__(cls)
    wrapper._kv_layout = "NHD"
    wrapper._qo_indptr_buf = plan["qo_indptr"]
    if "paged_kv_indptr" in plan:
        wrapper._paged_kv_indptr_buf = plan["paged_kv_indptr"]
        wrapper._paged_kv_indices_buf = plan["paged_kv_indices"]
    else:
        wrapper._kv_indptr_buf = plan["kv_indptr"]
    wrapper._sm_scale = None
    return wrapper


def _reference_solution(template, calls):
    import inspect

    params = list(inspect.signature(template.reference).parameters)

    def solution(**kwargs):
        calls.append(sorted(kwargs))
        return template.reference(**{k: kwargs[k] for k in params})

    return solution


@pytest.mark.parametrize("kind", ["paged", "ragged"])
def test_forward_return_lse_and_run_return_lse_are_routed(kind):
    """SGLang's FlashInfer backend calls forward_return_lse for every prefill
    that hits the prefix cache; it calls run_return_lse, a partialmethod of
    run bound in the class body."""
    template, inputs, name, cls = _prefill_inputs(kind)
    calls = []
    fita.enable_apply({name: _reference_solution(template, calls)})
    wrapper = _as_planned(cls, inputs["plan"])
    run = inputs["run"]
    expected_out, expected_lse = template.reference(
        **{k: v for k, v in _reference_args(template, inputs).items()})
    args = (run["q"], run["paged_kv_cache"]) if kind == "paged" else (run["q"], run["k"], run["v"])
    out, lse = wrapper.forward_return_lse(*args, causal=True)
    assert torch.equal(out, expected_out) and torch.equal(lse, expected_lse)
    out2, lse2 = wrapper.run_return_lse(*args)
    assert torch.equal(out2, expected_out) and torch.equal(lse2, expected_lse)
    assert torch.equal(wrapper.run(*args), expected_out)
    api = f"flashinfer.prefill.{cls.__qualname__}.run"
    assert _hits(api) == 3 and len(calls) == 3


def test_a_solution_taking_only_the_definitions_inputs_serves_every_return_lse_arity():
    """return_lse is the API's return convention, which the plugin keeps from
    the solution's outputs (out, lse); a solution need not take it, and a
    call asking for lse is routed, not sent to the original as an unaccepted
    argument."""
    import inspect

    template, inputs, name, cls = _prefill_inputs("paged")
    params = list(inspect.signature(template.reference).parameters)
    namespace = {"reference": template.reference}
    exec(f"def solution({', '.join(params)}):\n    return reference({', '.join(params)})", namespace)  # noqa: S102
    fita.enable_apply({name: namespace["solution"]})
    wrapper = _as_planned(cls, inputs["plan"])
    run = inputs["run"]
    expected_out, expected_lse = template.reference(**_reference_args(template, inputs))
    out, lse = wrapper.run(run["q"], run["paged_kv_cache"], return_lse=True)
    assert torch.equal(out, expected_out) and torch.equal(lse, expected_lse)
    assert torch.equal(wrapper.run(run["q"], run["paged_kv_cache"]), expected_out)
    out2, lse2 = wrapper.run_return_lse(run["q"], run["paged_kv_cache"])
    assert torch.equal(lse2, expected_lse)
    counts = fita.stats()["flashinfer.prefill.BatchPrefillWithPagedKVCacheWrapper.run"]
    assert counts["hit"] == 3 and not counts.get("fallback_unaccepted_argument")


def _reference_args(template, inputs):
    run, plan = inputs["run"], inputs["plan"]
    q = run["q"]
    scale = q.shape[-1] ** -0.5
    if "paged_kv_cache" in run:
        k, v = run["paged_kv_cache"]
        return dict(q=q, k_cache=k, v_cache=v, qo_indptr=plan["qo_indptr"], kv_indptr=plan["paged_kv_indptr"],
                    kv_indices=plan["paged_kv_indices"], sm_scale=scale)
    return dict(q=q, k=run["k"], v=run["v"], qo_indptr=plan["qo_indptr"], kv_indptr=plan["kv_indptr"], sm_scale=scale)


def test_begin_forward_then_run_uses_the_recorded_plan():
    """begin_forward is plan (the same function, bound in the class body):
    a plan made through it is recorded, and run() gets its indptr/indices."""
    template, inputs, name, cls = _prefill_inputs("paged")
    calls = []
    fita.enable_apply({name: _reference_solution(template, calls)})
    assert vars(cls)["begin_forward"] is vars(cls)["plan"]
    wrapper = cls.__new__(cls)  # no instance buffers: only the recorded plan() arguments
    wrapper._kv_layout = "NHD"
    try:
        wrapper.begin_forward(**inputs["plan"])
    except Exception:  # noqa: BLE001 - plan() itself needs CUDA; its arguments were recorded first
        pass
    out, lse = wrapper.run(inputs["run"]["q"], inputs["run"]["paged_kv_cache"], return_lse=True)
    expected_out, expected_lse = template.reference(**_reference_args(template, inputs))
    assert torch.equal(out, expected_out) and torch.equal(lse, expected_lse)
    assert _hits("flashinfer.prefill.BatchPrefillWithPagedKVCacheWrapper.run") == 1


def test_an_engines_own_fast_plan_function_is_read_from_the_instance():
    """SGLang swaps begin_forward for its own fast plan function on the
    instance (``wrapper.begin_forward = partial(fast_plan, wrapper)``), which
    fills the wrapper's buffers without calling plan()."""
    template, inputs, name, cls = _prefill_inputs("paged")
    fita.enable_apply({name: _reference_solution(template, [])})
    wrapper = cls.__new__(cls)
    wrapper._kv_layout = "NHD"

    def fast_plan(self, qo_indptr, paged_kv_indptr, paged_kv_indices, **_):
        self._qo_indptr_buf, self._paged_kv_indptr_buf, self._paged_kv_indices_buf = (
            qo_indptr, paged_kv_indptr, paged_kv_indices)
        self._sm_scale = None

    wrapper.begin_forward = functools.partial(fast_plan, wrapper)
    wrapper.begin_forward(**inputs["plan"])
    out, lse = wrapper.forward_return_lse(inputs["run"]["q"], inputs["run"]["paged_kv_cache"], causal=True)
    expected_out, expected_lse = template.reference(**_reference_args(template, inputs))
    assert torch.equal(out, expected_out) and torch.equal(lse, expected_lse)


# -- names bound before a programmatic enable ---------------------------------------------


def _quant_inputs():
    x = torch.randn(3, H, dtype=torch.bfloat16)
    res = torch.randn(3, H, dtype=torch.bfloat16)
    w = torch.randn(H, dtype=torch.bfloat16)
    return x, res, w, torch.zeros(3, H, dtype=torch.float8_e4m3fn)


def _quant_solution(calls):
    def solution(hidden_states, residual, weight, scale, eps=1e-6):
        calls.append(1)
        r = hidden_states.float() + residual.float()
        y = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
        return (y / float(scale)).to(torch.float8_e4m3fn), r.to(residual.dtype)

    return solution


@pytest.fixture
def engine_module(tmp_path, monkeypatch):
    """An engine module that ran ``from flashinfer.norm import
    fused_add_rmsnorm_quant`` at import, before the plugin was enabled."""
    name = ep.write_engine_module(tmp_path, "engine_layernorm_early")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


def test_a_name_bound_before_enable_is_named_in_the_warning_and_by_doctor(engine_module):
    definition = f"fused_add_rmsnorm_quant_h{H}"
    with pytest.warns(TraceApplyWarning, match=r"engine_layernorm_early\.fused_add_rmsnorm_quant \(flashinfer\.norm\."
                                                 r"fused_add_rmsnorm_quant\).*import hook.*rebind=True"):
        fita.enable_apply({definition: _quant_solution([])})
    # FlashInfer's own object, the one the wrapper stands in front of: never routed
    assert engine_module.fused_add_rmsnorm_quant is flashinfer.norm.fused_add_rmsnorm_quant.__wrapped__
    report = fita.doctor()
    entry = next(d for d in report.definitions if d.name == definition)
    assert entry.status == "partly reachable"
    assert entry.stale == ["engine_layernorm_early.fused_add_rmsnorm_quant"]


@pytest.mark.parametrize("how", ["argument", "variable"])
def test_rebind_routes_a_name_bound_before_enable_and_disable_restores_it(engine_module, monkeypatch, how):
    original = engine_module.fused_add_rmsnorm_quant
    calls = []
    definition = f"fused_add_rmsnorm_quant_h{H}"
    with warnings.catch_warnings():
        warnings.simplefilter("error", TraceApplyWarning)  # no stale-name warning once rebound
        if how == "argument":
            fita.enable_apply({definition: _quant_solution(calls)}, rebind=True)
        else:
            monkeypatch.setenv("FLASHINFER_TRACE_APPLY_REBIND", "1")
            fita.enable_apply({definition: _quant_solution(calls)})
    x, res, w, out = _quant_inputs()
    expected_res = (x.float() + res.float()).to(res.dtype)
    assert engine_module.fused_add_rmsnorm_quant(out, x, res, w, 1.0) is None
    assert calls == [1] and torch.equal(res, expected_res) and out.float().abs().sum() > 0
    assert _hits("flashinfer.norm.fused_add_rmsnorm_quant") == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceApplyWarning)
        fita.disable_apply()
    assert engine_module.fused_add_rmsnorm_quant is original


# -- the import hook: one interpreter for every case ------------------------------------------

HOOK_BODY = r'''
import torch
import flashinfer_trace_apply as fita
import engine_patterns_helpers as ep
import engine_layernorm            # binds fused_add_rmsnorm_quant at import, after the hook ran

report["comm_imported_by_flashinfer"] = "flashinfer.comm" in sys.modules
report["concat_ops_imported_by_flashinfer"] = "flashinfer.concat_ops" in sys.modules

x = torch.randn(3, ep.HIDDEN, dtype=torch.bfloat16)
res = torch.randn(3, ep.HIDDEN, dtype=torch.bfloat16)
w = torch.randn(ep.HIDDEN, dtype=torch.bfloat16)
out = torch.zeros(3, ep.HIDDEN, dtype=torch.float8_e4m3fn)
engine_layernorm.fused_add_rmsnorm_quant(out, x, res, w, 1.0)
report["engine_binding_routed"] = hasattr(engine_layernorm.fused_add_rmsnorm_quant, "__fita_route__")

import flashinfer.comm             # late: vLLM / SGLang at tensor parallel > 1
y = flashinfer.comm.allreduce_fusion(
    input=x, workspace=object(), pattern=0, launch_with_pdl=True, trigger_completion_at_end=True,
    output=None, residual_out=None, norm_out=None, quant_out=None, scale_out=None, residual_in=None,
    rms_gamma=None, rms_eps=1e-6, scale_factor=None, layout_code=None, use_oneshot=None, fp32_acc=False)
report["allreduce_equal"] = bool(torch.equal(y, x))

def vllm_mla_prefill(k, k_nope, k_rope):
    from flashinfer.concat_ops import concat_mla_k  # vLLM imports it inside the function
    concat_mla_k(k, k_nope, k_rope)

T = 3
k = torch.zeros(T, ep.MLA_HEADS, ep.MLA_NOPE + ep.MLA_ROPE, dtype=torch.bfloat16)
k_nope = torch.randn(T, ep.MLA_HEADS, ep.MLA_NOPE, dtype=torch.bfloat16)
k_rope = torch.randn(T, 1, ep.MLA_ROPE, dtype=torch.bfloat16)
vllm_mla_prefill(k, k_nope, k_rope)
report["concat_written"] = bool(torch.equal(k[..., :ep.MLA_NOPE], k_nope) and torch.equal(k[..., ep.MLA_NOPE:], k_rope.expand(-1, ep.MLA_HEADS, -1)))
report["concat_name"] = flashinfer.concat_ops.concat_mla_k.fi_trace(k=k, k_nope=k_nope, k_rope=k_rope)["name"]
report["stats"] = fita.stats()
report["calls"] = {m.__name__: getattr(m, "CALLS", 0) for n, m in list(sys.modules.items()) if n.startswith("_fita_solution_")}
'''


def test_engine_call_patterns_under_the_import_hook(tmp_path):
    concat_name = f"concat_mla_k_h{ep.MLA_HEADS}_nope{ep.MLA_NOPE}_rope{ep.MLA_ROPE}_d{ep.MLA_NOPE + ep.MLA_ROPE}"
    folder = tmp_path / "curated"
    for sub, definition, source in [
        ("norm", f"fused_add_rmsnorm_quant_h{H}", ep.FUSED_ADD_RMSNORM_QUANT),
        ("comm", f"allreduce_fusion_h{H}", ep.ALLREDUCE_FUSION),
        ("concat", concat_name, ep.CONCAT_MLA_K),
    ]:
        hh.write_json(folder / "solutions" / sub / "sol.json", ep.python_solution(definition, f"py_{sub}", source))
    ep.write_engine_module(tmp_path)
    env = hh.child_env(tmp_path / "cache", {"FLASHINFER_TRACE_APPLY": "1", "FLASHINFER_TRACE_APPLY_PATH": str(folder)})
    env["PYTHONPATH"] = str(tmp_path) + ":" + env["PYTHONPATH"]
    report, proc = hh.run_child(hh.script(HOOK_BODY), env, tmp_path)
    assert report["import_error"] is None, report["import_error"]
    assert report["concat_name"] == concat_name  # our name is FlashInfer's collector's
    # import flashinfer does not import the late submodules (nothing eager)
    assert report["comm_imported_by_flashinfer"] is False
    assert report["concat_ops_imported_by_flashinfer"] is False
    stats = report["stats"]
    assert report["engine_binding_routed"] is True
    assert stats["flashinfer.norm.fused_add_rmsnorm_quant"]["hit"] == 1
    assert stats["flashinfer.comm.allreduce.allreduce_fusion"]["hit"] == 1 and report["allreduce_equal"]
    assert stats["flashinfer.concat_ops.concat_mla_k"]["hit"] == 1 and report["concat_written"]
    assert sorted(report["calls"].values()) == [1, 1, 1], report["calls"]
    assert [w for w in hh.trace_apply_warnings(report["import_warnings"])] == []
