"""Places where FlashInfer 0.7.2's built-in trace_apply silently gives wrong
results or does nothing, reproduced through the real APIs on CPU tensors;
each test shows what this plugin does instead."""

from __future__ import annotations

import inspect
import re
import warnings

import pytest
import torch

import flashinfer
import flashinfer_trace_apply as fita
from flashinfer_trace_apply.errors import SolutionCallError
from flashinfer_trace_apply.registry import discover_apis
from flashinfer_trace_apply.warn import TraceApplyWarning


def torch_rmsnorm(hidden_states, weight, eps=1e-6):
    x = hidden_states.float()
    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(hidden_states.dtype)


def original_refuses_cpu(call):
    """A miss runs FlashInfer's own CUDA kernel, which refuses CPU tensors:
    that error is the proof the original ran."""
    with pytest.raises(Exception) as info:
        call()
    assert not isinstance(info.value, (SolutionCallError, AssertionError)) or "CUDA" in str(info.value)


# -- 1. no dropped arguments ------------------------------------------------------


def test_eps_reaches_the_solution_where_the_builtin_passes_the_default():
    seen = []

    def solution(hidden_states, weight, eps=1e-6):
        seen.append(eps)
        return torch_rmsnorm(hidden_states, weight, eps)

    fita.enable_apply({"rmsnorm_h64": solution})
    x, w = torch.randn(2, 64, dtype=torch.bfloat16), torch.randn(64, dtype=torch.bfloat16)
    assert torch.equal(flashinfer.rmsnorm(x, w, eps=1.0), torch_rmsnorm(x, w, 1.0))
    assert seen == [1.0]


def test_rope_arguments_reach_the_solution_by_api_name():
    seen = {}

    def solution(positions, query, key, cos_sin_cache, is_neox=True, head_size=None):
        seen.update(is_neox=is_neox, head_size=head_size)
        return query, key

    q, k, pos, cache = torch.randn(3, 4 * 64), torch.randn(3, 2 * 64), torch.arange(3), torch.randn(16, 64)
    fita.enable_apply({"rope_cos_sin_cache_inplace_d64": solution})
    flashinfer.apply_rope_with_cos_sin_cache_inplace(pos, q, k, 64, cache, is_neox=False)
    assert seen == {"is_neox": False, "head_size": 64}


# -- 2. checked results ----------------------------------------------------------------


def test_a_wrongly_shaped_returned_result_is_an_error():
    fita.enable_apply({"rmsnorm_h64": lambda hidden_states, weight: torch_rmsnorm(hidden_states, weight)[:1]})
    with pytest.raises(SolutionCallError, match=r"rmsnorm_h64.*output.*shape"):
        flashinfer.rmsnorm(torch.randn(4, 64), torch.randn(64))


def test_a_float64_result_for_bf16_inputs_is_an_error():
    fita.enable_apply({"rmsnorm_h64": lambda hidden_states, weight: torch_rmsnorm(hidden_states, weight).double()})
    with pytest.raises(SolutionCallError, match=r"dtype torch.float64 differs from the API's torch.bfloat16"):
        flashinfer.rmsnorm(torch.randn(4, 64, dtype=torch.bfloat16), torch.randn(64, dtype=torch.bfloat16))


# -- 3. in-place APIs the built-in cannot route ------------------------------------------


def _template_inputs(api_name):
    spec = next(s for s in discover_apis() if s.attr == api_name and not s.is_method)
    template = spec.templates[0]
    kwargs = {p.name: 3 for p in inspect.signature(template.init).parameters.values() if p.kind is p.KEYWORD_ONLY and p.default is p.empty}
    return spec, template.init(**kwargs, device="cpu")


def _paged_append_inputs(mla):
    pages, page_size, nnz = 4, 16, 3
    common = dict(
        batch_indices=torch.zeros(nnz, dtype=torch.int32),
        positions=torch.arange(nnz, dtype=torch.int32),
        kv_indices=torch.arange(pages, dtype=torch.int32),
        kv_indptr=torch.tensor([0, pages], dtype=torch.int32),
        kv_last_page_len=torch.tensor([nnz], dtype=torch.int32),
    )
    if mla:
        return dict(
            append_ckv=torch.randn(nnz, 512), append_kpe=torch.randn(nnz, 64),
            ckv_cache=torch.zeros(pages, page_size, 512), kpe_cache=torch.zeros(pages, page_size, 64), **common,
        )
    cache = (torch.zeros(pages, page_size, 8, 128), torch.zeros(pages, page_size, 8, 128))
    return dict(append_key=torch.randn(nnz, 8, 128), append_value=torch.randn(nnz, 8, 128), paged_kv_cache=cache, **common)


IN_PLACE = {
    # API -> the arguments it writes
    "apply_rope_inplace": ("q", "k"),
    "apply_rope_pos_ids_inplace": ("q", "k"),
    "apply_llama31_rope_inplace": ("q", "k"),
    "apply_llama31_rope_pos_ids_inplace": ("q", "k"),
    "apply_rope_with_cos_sin_cache_inplace": ("query", "key"),
    "append_paged_kv_cache": ("paged_kv_cache",),
    "append_paged_mla_kv_cache": ("ckv_cache", "kpe_cache"),
    "merge_state_in_place": ("v", "s"),
    "gemma_fused_add_rmsnorm": ("input", "residual"),
}


def _bumped(value):
    if isinstance(value, tuple):
        return tuple(v + 1 for v in value)
    return value + 1


@pytest.mark.parametrize("api_name", sorted(IN_PLACE))
def test_in_place_api_is_routed_and_written_back(api_name):
    if api_name.startswith("append_paged"):
        spec = next(s for s in discover_apis() if s.attr == api_name and not s.is_method)
        inputs = _paged_append_inputs(mla="mla" in api_name)
    else:
        spec, inputs = _template_inputs(api_name)
    name = spec.current.fi_trace(**inputs)["name"]
    written = IN_PLACE[api_name]
    before = {p: _bumped(inputs[p]) for p in written}  # what the solution will write

    def solution(**definition_inputs):
        # The plugin passes the definition's inputs by name; each written
        # argument comes back incremented, in the template's output order.
        route = getattr(spec.owner, spec.attr).__fita_route__
        outputs = route.templates[0].convention.outputs
        by_param = {**inputs}
        return tuple(_bumped(by_param[o.dest]) for o in outputs)

    fita.enable_apply({name: solution})
    assert getattr(spec.owner, spec.attr)(**inputs) is None
    assert fita.stats()[spec.fi_api]["hit"] == 1
    for param in written:
        got, want = inputs[param], before[param]
        if isinstance(got, tuple):
            assert all(torch.equal(g, w) for g, w in zip(got, want)), param
        else:
            assert torch.equal(got, want), param


def test_the_write_back_table_is_needed_only_where_the_template_is_ambiguous():
    from flashinfer_trace_apply.inplace import WRITE_BACK_TABLE
    from flashinfer_trace_apply.registry import discover_apis

    # fused_add_rmsnorm's template names its target from FlashInfer 0.6.14 on;
    # the table covers the supported releases before that.
    assert set(WRITE_BACK_TABLE) == {
        ("flashinfer.norm.gemma_fused_add_rmsnorm", "output"),
        ("flashinfer.norm.fused_add_rmsnorm", "output"),
    }
    # Where the installed template names a target, the table agrees with it.
    for spec in discover_apis():
        for template in spec.templates:
            for key, out in template.outputs.items():
                declared = getattr(out, "param", None)
                if (spec.fi_api, key) in WRITE_BACK_TABLE and declared is not None:
                    assert WRITE_BACK_TABLE[(spec.fi_api, key)] == declared


# -- 4. dtype-aware routing --------------------------------------------------------------


def _rmsnorm_definition(dtype="bfloat16", constraints=()):
    return {
        "name": "rmsnorm_h64",
        "axes": {"batch_size": {"type": "var"}, "hidden_size": {"type": "const", "value": 64}},
        "inputs": {
            "hidden_states": {"shape": ["batch_size", "hidden_size"], "dtype": dtype},
            "weight": {"shape": ["hidden_size"], "dtype": dtype},
        },
        "outputs": {"output": {"shape": ["batch_size", "hidden_size"], "dtype": "bfloat16"}},
        "constraints": list(constraints),
    }


def test_calls_with_other_dtypes_than_the_definition_states_run_the_original():
    calls = []

    def solution(hidden_states, weight):
        calls.append(hidden_states.dtype)
        return torch_rmsnorm(hidden_states, weight)

    fita.enable_apply({"rmsnorm_h64": solution}, definitions={"rmsnorm_h64": _rmsnorm_definition(["bfloat16", "float16"])})
    for dtype in (torch.bfloat16, torch.float16):
        flashinfer.rmsnorm(torch.randn(2, 64, dtype=dtype), torch.randn(64, dtype=dtype))
    original_refuses_cpu(lambda: flashinfer.rmsnorm(torch.randn(2, 64), torch.randn(64)))
    assert calls == [torch.bfloat16, torch.float16]
    counts = fita.stats()["flashinfer.norm.rmsnorm"]
    assert counts["hit"] == 2 and counts["fallback_dtype_mismatch"] == 1


def test_definitions_in_the_curated_folder_take_part(tmp_path):
    import json

    from solution_files import RMSNORM_SOURCE, solution_dict, write_solution

    write_solution(tmp_path, "rmsnorm.json", solution_dict("rmsnorm_h64", RMSNORM_SOURCE))
    (tmp_path / "definitions").mkdir()
    (tmp_path / "definitions" / "rmsnorm_h64.json").write_text(json.dumps(_rmsnorm_definition("float16")))
    fita.enable_apply(fita.load_solutions(tmp_path), definitions=tmp_path)
    original_refuses_cpu(lambda: flashinfer.rmsnorm(torch.randn(2, 64, dtype=torch.bfloat16), torch.randn(64, dtype=torch.bfloat16)))
    assert fita.stats()["flashinfer.norm.rmsnorm"]["fallback_dtype_mismatch"] == 1


# -- 5. GPU-aware routing ------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry,sms",
    [
        ("sm90", {90}), ("sm_90a", {90}), ("SM100", {100}), ("sm120", {120}),
        ("H100", {90}), ("NVIDIA_H100", {90}), ("NVIDIA_H100_80GB_HBM3", {90}), ("B200", {100}),
        ("NVIDIA_A100", {80}), ("A100-SXM4-80GB", {80}), ("L40S", {89}), ("GB200", {100}),
    ],
)
def test_hardware_entries_are_read_as_sm_targets_and_products(entry, sms):
    from flashinfer_trace_apply.hardware import read_targets

    support = read_targets([entry])
    assert set(support.sms) == sms and not support.unreadable


def test_a_solution_for_another_gpu_is_not_routed_and_said_at_enable(monkeypatch):
    from flashinfer_trace_apply import hardware
    from flashinfer_trace_apply.solution import Solution

    from solution_files import RMSNORM_SOURCE, solution_dict

    monkeypatch.setattr(hardware, "current_sm", lambda: 90)  # as on an H100
    payload = solution_dict("rmsnorm_h64", RMSNORM_SOURCE)
    payload["spec"]["target_hardware"] = ["B200", "sm_100a", "TPUv5"]
    with pytest.warns(TraceApplyWarning) as record:
        fita.enable_apply({"rmsnorm_h64": Solution.from_dict(payload)})
    messages = " ".join(str(r.message) for r in record)
    assert "not routed on this GPU (sm90): rmsnorm_h64" in messages
    assert "'TPUv5'" in messages  # not understood: reported, not blocking
    original_refuses_cpu(lambda: flashinfer.rmsnorm(torch.randn(2, 64), torch.randn(64)))
    assert fita.stats()["flashinfer.norm.rmsnorm"]["fallback_unsupported_arch"] == 1

    payload["spec"]["target_hardware"] = ["NVIDIA_H100", "TPUv5"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceApplyWarning)
        fita.enable_apply({"rmsnorm_h64": Solution.from_dict(payload)})
    x, w = torch.randn(2, 64), torch.randn(64)
    assert torch.allclose(flashinfer.rmsnorm(x, w), torch_rmsnorm(x, w))


# -- 6/8. constraints ------------------------------------------------------------------------


def test_const_axis_constraint_is_decided_once_per_shape():
    calls = []
    definition = _rmsnorm_definition(constraints=["hidden_size % 128 == 0"])
    fita.enable_apply({"rmsnorm_h64": lambda hidden_states, weight: calls.append(1)}, definitions={"rmsnorm_h64": definition})
    original_refuses_cpu(lambda: flashinfer.rmsnorm(torch.randn(2, 64, dtype=torch.bfloat16), torch.randn(64, dtype=torch.bfloat16)))
    assert calls == [] and fita.stats()["flashinfer.norm.rmsnorm"]["fallback_constraint"] == 1


def test_a_solution_runs_only_where_its_applies_when_holds():
    """spec.applies_when (our extension): a solution declares the calls it
    should take, e.g. the batch sizes where it beats the original; other
    calls run the original, counted as fallback_constraint, and a range that
    cannot be read keeps the solution off rather than routing it everywhere."""
    from flashinfer_trace_apply.solution import Solution

    from solution_files import RMSNORM_SOURCE, solution_dict

    payload = solution_dict("rmsnorm_h64", RMSNORM_SOURCE)
    payload["spec"]["applies_when"] = ["batch_size <= 4", "hidden_size % 64 == 0"]
    solution = Solution.from_dict(payload)
    assert Solution.from_dict(solution.to_dict()).spec.applies_when == ("batch_size <= 4", "hidden_size % 64 == 0")
    fita.enable_apply({"rmsnorm_h64": solution}, definitions={"rmsnorm_h64": _rmsnorm_definition()})
    x, w = torch.randn(4, 64, dtype=torch.bfloat16), torch.randn(64, dtype=torch.bfloat16)
    assert torch.allclose(flashinfer.rmsnorm(x, w).float(), torch_rmsnorm(x, w).float(), atol=0.02)
    original_refuses_cpu(lambda: flashinfer.rmsnorm(torch.randn(5, 64, dtype=torch.bfloat16), w))
    counts = fita.stats()["flashinfer.norm.rmsnorm"]
    assert counts["hit"] == 1 and counts["fallback_constraint"] == 1

    for definitions, said in [(None, "no Definition"), ({"rmsnorm_h64": _rmsnorm_definition()}, "not an expression")]:
        payload["spec"]["applies_when"] = ["num_tokens <= 4"] if definitions else ["batch_size <= 4"]
        with pytest.warns(TraceApplyWarning, match=f"not routed, the original runs instead: rmsnorm_h64: applies_when .*{said}"):
            fita.enable_apply({"rmsnorm_h64": Solution.from_dict(payload)}, definitions=definitions)
        original_refuses_cpu(lambda: flashinfer.rmsnorm(x, w))
        assert fita.stats()["flashinfer.norm.rmsnorm"]["fallback_constraint"] == 1


def test_applies_when_must_be_a_list_of_expressions():
    from flashinfer_trace_apply.errors import SolutionFormatError
    from flashinfer_trace_apply.solution import Solution

    from solution_files import RMSNORM_SOURCE, solution_dict

    for bad, field in [("batch_size <= 4", "spec.applies_when"), ([4], "spec.applies_when[0]"), ([" "], "spec.applies_when")]:
        payload = solution_dict("rmsnorm_h64", RMSNORM_SOURCE)
        payload["spec"]["applies_when"] = bad
        with pytest.raises(SolutionFormatError, match=re.escape(field)):
            Solution.from_dict(payload)


def _planned_mla_wrapper(batch_requests):
    """A BatchMLAPagedAttentionWrapper as plan() leaves it (plan() itself needs CUDA)."""
    cls = flashinfer.mla.BatchMLAPagedAttentionWrapper
    wrapper = cls.__new__(cls)
    wrapper._kv_indptr_buf = torch.arange(batch_requests + 1, dtype=torch.int32)
    wrapper._kv_indices_buf = torch.arange(batch_requests, dtype=torch.int32)
    wrapper._sm_scale = 0.1
    return wrapper


def test_a_decode_only_constraint_keeps_prefill_calls_away_from_an_mla_decode_solution():
    """FlashInfer issue #4503: an MLA decode solution was routed to paged
    prefill calls (several query tokens per request; the names are the same)
    and SGLang crashed with an illegal memory access. A definition constraint
    over the axes, one query token per request, sends those calls to the
    original instead."""
    heads, requests = 16, 4
    name = f"mla_paged_decode_h{heads}_ckv512_kpe64_ps1"
    definition = {
        "name": name,
        "axes": {
            "batch_size": {"type": "var"}, "num_qo_heads": {"type": "const", "value": heads},
            "head_dim_ckv": {"type": "const", "value": 512}, "head_dim_kpe": {"type": "const", "value": 64},
            "page_size": {"type": "const", "value": 1}, "num_pages": {"type": "var"},
            "len_indptr": {"type": "var"}, "num_kv_indices": {"type": "var"},
        },
        "inputs": {
            "q_nope": {"shape": ["batch_size", "num_qo_heads", "head_dim_ckv"], "dtype": "bfloat16"},
            "kv_indptr": {"shape": ["len_indptr"], "dtype": "int32"},
        },
        "constraints": ["batch_size == len_indptr - 1", "num_kv_indices == kv_indptr[-1].item()"],
    }
    decoded = []

    def decode_solution(q_nope, q_pe, ckv_cache, kpe_cache, kv_indptr, kv_indices, sm_scale):
        decoded.append(q_nope.shape[0])
        return torch.zeros_like(q_nope)

    with pytest.warns(TraceApplyWarning, match=r"not checked per call.*kv_indptr\[-1\]\.item\(\)"):
        fita.enable_apply({name: decode_solution}, definitions={name: definition})
    wrapper = _planned_mla_wrapper(requests)
    ckv, kpe = torch.zeros(8, 1, 512, dtype=torch.bfloat16), torch.zeros(8, 1, 64, dtype=torch.bfloat16)

    def call(tokens):
        q_nope = torch.randn(tokens, heads, 512, dtype=torch.bfloat16)
        q_pe = torch.randn(tokens, heads, 64, dtype=torch.bfloat16)
        return wrapper.run(q_nope, q_pe, ckv, kpe)

    assert call(requests).shape == (requests, heads, 512)  # decode: one token per request
    original_refuses_cpu(lambda: call(3 * requests))  # prefill-shaped: the original runs
    assert decoded == [requests]
    counts = fita.stats()["flashinfer.mla._core.BatchMLAPagedAttentionWrapper.run"]
    assert counts["hit"] == 1 and counts["fallback_constraint"] == 1


# -- 7. paged KV layouts -------------------------------------------------------------------


def _decode_wrapper(layout):
    cls = flashinfer.BatchDecodeWithPagedKVCacheWrapper
    wrapper = cls.__new__(cls)
    wrapper._kv_layout = layout
    wrapper._paged_kv_indptr_buf = torch.tensor([0, 2], dtype=torch.int32)
    wrapper._paged_kv_indices_buf = torch.tensor([0, 1], dtype=torch.int32)
    wrapper._sm_scale = None
    return wrapper


@pytest.mark.parametrize("form", ["tuple", "combined"])
def test_hnd_cache_is_named_and_fed_by_its_true_layout(form):
    """Llama-3.2-3B: 24 query heads, 8 KV heads, page size 16, HND cache.
    FlashInfer's collector reads the cache as NHD and names the call as if
    there were 16 KV heads and pages of 8; we name it by the real layout and
    hand the solution NHD views of the same memory."""
    heads, kv_heads, page_size, dim, pages = 24, 8, 16, 128, 2
    k = torch.randn(pages, kv_heads, page_size, dim)  # HND
    v = torch.randn(pages, kv_heads, page_size, dim)
    cache = (k, v) if form == "tuple" else torch.stack([k, v], dim=1)
    q = torch.randn(1, heads, dim)
    run = flashinfer.BatchDecodeWithPagedKVCacheWrapper.run
    theirs = run.fi_trace(q=q, paged_kv_cache=cache)["name"]
    ours = f"gqa_paged_decode_h{heads}_kv{kv_heads}_d{dim}_ps{page_size}"
    # Where the names differ from fi_trace's, and why:
    if form == "tuple":
        assert theirs == f"gqa_paged_decode_h{heads}_kv{page_size}_d{dim}_ps{kv_heads}"  # swapped
    else:
        assert theirs == f"gqa_paged_decode_h{heads}_d{dim}"  # K/V not found in one tensor
    fed = {}

    def solution(q, k_cache, v_cache, kv_indptr, kv_indices, sm_scale):
        fed.update(k=k_cache, v=v_cache, sm_scale=sm_scale)
        return torch.zeros_like(q)

    fita.enable_apply({ours: solution})
    wrapper = _decode_wrapper("HND")
    assert wrapper.run(q, cache).shape == q.shape
    assert fed["k"].shape == (pages, page_size, kv_heads, dim)
    assert torch.equal(fed["k"], k.transpose(1, 2)) and torch.equal(fed["v"], v.transpose(1, 2))
    assert fed["k"].data_ptr() == (k.data_ptr() if form == "tuple" else cache.data_ptr())  # a view, no copy
    assert fed["sm_scale"] == pytest.approx(dim ** -0.5)


def test_nhd_cache_names_agree_with_fi_trace():
    q, cache = torch.randn(1, 24, 128), (torch.randn(2, 16, 8, 128), torch.randn(2, 16, 8, 128))
    name = flashinfer.BatchDecodeWithPagedKVCacheWrapper.run.fi_trace(q=q, paged_kv_cache=cache)["name"]
    assert name == "gqa_paged_decode_h24_kv8_d128_ps16"
    fita.enable_apply({name: lambda q, k_cache, v_cache, kv_indptr, kv_indices, sm_scale: torch.zeros_like(q)})
    _decode_wrapper("NHD").run(q, cache)
    assert fita.stats()["flashinfer.decode.BatchDecodeWithPagedKVCacheWrapper.run"]["hit"] == 1


def test_quantizing_in_place_api_writes_its_out_argument_not_its_input():
    """rmsnorm_quant(out, input, ...) writes fp8 into ``out``; the output's
    dims also match ``input``, so a dims-only rule would pick the wrong one."""
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    w = torch.randn(64, dtype=torch.bfloat16)
    out = torch.zeros(3, 64, dtype=torch.float8_e4m3fn)
    name = flashinfer.norm.rmsnorm_quant.fi_trace(out=out, input=x, weight=w, scale=1.0)["name"]

    def solution(hidden_states, weight, scale, eps=1e-6):
        return torch_rmsnorm(hidden_states, weight, eps).float().div(scale).to(torch.float8_e4m3fn)

    fita.enable_apply({name: solution})
    x_before = x.clone()
    assert flashinfer.norm.rmsnorm_quant(out, x, w, 1.0) is None
    assert torch.equal(x, x_before)
    assert torch.equal(out.float(), solution(x, w, 1.0).float())


def test_a_solution_that_names_out_writes_the_in_place_apis_out_itself():
    """rmsnorm_quant / fused_add_rmsnorm_quant return None and write ``out``,
    which is no definition input: a solution naming ``out`` receives the
    caller's buffer (so a kernel writes fp8 there, with no copy after it),
    while ``residual`` stays the definition input it is."""
    x, r = torch.randn(3, 64, dtype=torch.bfloat16), torch.randn(3, 64, dtype=torch.bfloat16)
    w = torch.randn(64, dtype=torch.bfloat16)
    out = torch.zeros(3, 64, dtype=torch.float8_e4m3fn)
    got = {}

    def plain(hidden_states, weight, scale, eps=1e-6, out=None):
        got["plain"] = out
        out.copy_(hidden_states.float().div(scale).to(out.dtype))
        return out

    def fused(hidden_states, residual, weight, scale, eps=1e-6, out=None):
        got["fused"] = out
        residual.add_(hidden_states)
        out.copy_(residual.float().to(out.dtype))
        return out, residual

    fita.enable_apply({"rmsnorm_quant_h64": plain, "fused_add_rmsnorm_quant_h64": fused})
    assert flashinfer.norm.rmsnorm_quant(out, x, w, 2.0) is None
    assert got["plain"] is out and torch.equal(out.float(), x.float().div(2.0).to(out.dtype).float())
    expected_r = (x.float() + r.float()).to(r.dtype)
    assert flashinfer.norm.fused_add_rmsnorm_quant(out, x, r, w, 1.0) is None
    assert got["fused"] is out and torch.equal(r, expected_r)
    assert fita.stats()["flashinfer.norm.fused_add_rmsnorm_quant"]["hit"] == 1


def test_optional_output_buffers_named_after_outputs_are_filled_and_returned():
    """gated_residual_next_rmsnorm(..., residual_out=None, ffn_input=None)
    returns (residual_out, ffn_input); given buffers, it must fill them."""
    rows, hidden = 2, 64
    args = dict(
        branch=torch.randn(rows, hidden), residual=torch.randn(rows, hidden), next_weight=torch.randn(hidden),
        alpha=0.5, beta=torch.randn(hidden),
    )
    name = flashinfer.norm.gated_residual_next_rmsnorm.fi_trace(**args)["name"]

    def solution(**inputs):
        return inputs["branch"] + 1, inputs["branch"] + 2

    fita.enable_apply({name: solution})
    residual_out, ffn_input = torch.empty(rows, hidden), torch.empty(rows, hidden)
    got = flashinfer.norm.gated_residual_next_rmsnorm(**args, residual_out=residual_out, ffn_input=ffn_input)
    assert got[0] is residual_out and got[1] is ffn_input
    assert torch.equal(residual_out, args["branch"] + 1) and torch.equal(ffn_input, args["branch"] + 2)


def test_paged_append_solution_may_return_the_k_v_pair():
    inputs = _paged_append_inputs(mla=False)
    name = flashinfer.append_paged_kv_cache.fi_trace(**inputs)["name"]

    def solution(append_key, append_value, paged_kv_cache, **_):
        k, v = paged_kv_cache
        return k + 1, v + 2  # the pair, not a 1-tuple holding it

    fita.enable_apply({name: solution})
    k, v = inputs["paged_kv_cache"]
    k0, v0 = k.clone(), v.clone()
    flashinfer.append_paged_kv_cache(**inputs)
    assert torch.equal(k, k0 + 1) and torch.equal(v, v0 + 2)


def test_an_api_with_writes_its_template_does_not_declare_is_not_routed():
    name = "rope_quantize_fp8_append_paged_kv_cache_h8_kv2_rope64_ps16"
    with pytest.warns(TraceApplyWarning, match=r"writes 'paged_kv_cache'.*not routed"):
        assert fita.enable_apply({name: lambda **_: None}) == 0


def test_a_constraint_over_an_axis_the_template_lacks_is_reported_at_enable():
    definition = _rmsnorm_definition(constraints=["hidden_size == 2 * hidden_div_2"])
    definition["axes"]["hidden_div_2"] = {"type": "const", "value": 32}
    with pytest.warns(TraceApplyWarning, match=r"reads \['hidden_div_2'\].*cannot hold"):
        fita.enable_apply({"rmsnorm_h64": lambda hidden_states, weight: hidden_states}, definitions={"rmsnorm_h64": definition})
