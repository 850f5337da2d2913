"""The routing contract, through the real FlashInfer 0.7.2.post1 APIs on CPU:
no caller argument dropped, every result checked (full shape, dtype, device)
before anything is written, a solution calling the API it replaces reaches
the original, nothing of a session stays alive or routing after disable,
enabling does not import Dynamo, and selector APIs do not bind per call.

FlashInfer's own kernels need CUDA: on these CPU tensors "the original ran"
shows as the original's CUDA error, together with the fallback counter.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
import threading
import weakref

import pytest
import torch

import flashinfer
import flashinfer_trace_apply as fita
from flashinfer_trace_apply.dispatch import ApiRoute
from flashinfer_trace_apply.errors import SolutionCallError
from flashinfer_trace_apply.warn import TraceApplyWarning

from solution_files import solution_dict, write_solution

H = 64
RMSNORM = "flashinfer.norm.rmsnorm"
# What FlashInfer's CUDA kernels raise on a CPU-only torch build.
ORIGINAL_RAN = (RuntimeError, AssertionError, NotImplementedError)


def torch_rmsnorm(hidden_states, weight, eps=1e-6):
    x = hidden_states.float()
    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(hidden_states.dtype)


def rms_inputs(batch=4):
    return torch.randn(batch, H), torch.randn(H)


def counts(api=RMSNORM):
    return fita.stats().get(api, {})


# -- 1. arguments are never dropped ---------------------------------------------------


def test_an_argument_the_solution_cannot_receive_runs_the_original_counted_and_warned_once():
    calls = []

    def no_eps(hidden_states, weight):
        calls.append(1)
        return torch_rmsnorm(hidden_states, weight)

    fita.enable_apply({f"rmsnorm_h{H}": no_eps})
    x, w = rms_inputs()
    with pytest.warns(TraceApplyWarning, match=r"rmsnorm was called with eps=0.001, which solution '.*no_eps' does not accept; such calls run the original") as record:
        for _ in range(2):
            with pytest.raises(ORIGINAL_RAN):
                flashinfer.rmsnorm(x, w, eps=1e-3)
    assert len([r for r in record if "eps" in str(r.message)]) == 1
    assert calls == [] and counts()["fallback_unaccepted_argument"] == 2
    # The default value, even as an equal literal (not the same object), is no argument lost.
    assert torch.equal(flashinfer.rmsnorm(x, w, 1e-6), torch_rmsnorm(x, w))
    assert torch.equal(flashinfer.rmsnorm(x, w, eps=float("1e-6")), torch_rmsnorm(x, w))
    assert calls == [1, 1] and counts()["hit"] == 2


def test_a_solution_taking_kwargs_receives_every_argument():
    seen = []

    def with_kwargs(hidden_states, weight, **kwargs):
        seen.append(kwargs)
        return torch_rmsnorm(hidden_states, weight, kwargs.get("eps", 1e-6))

    fita.enable_apply({f"rmsnorm_h{H}": with_kwargs})
    x, w = rms_inputs()
    assert torch.equal(flashinfer.rmsnorm(x, w, eps=1e-3), torch_rmsnorm(x, w, 1e-3))
    assert seen[-1]["eps"] == 1e-3 and counts()["hit"] == 1


def test_a_solution_declaring_an_ignored_argument_runs_with_it_set(tmp_path):
    source = textwrap.dedent(
        """
        import torch

        def run(hidden_states, weight):
            x = hidden_states.float()
            return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight.float()).to(hidden_states.dtype)
        """
    )
    payload = solution_dict(f"rmsnorm_h{H}", source, name="eps_ignoring")
    payload["spec"]["ignored_arguments"] = ["eps"]
    write_solution(tmp_path, "rmsnorm/eps_ignoring.json", payload)
    fita.enable_apply(fita.load_solutions(tmp_path))
    x, w = rms_inputs()
    assert torch.equal(flashinfer.rmsnorm(x, w, eps=1e-3), torch_rmsnorm(x, w))
    assert counts()["hit"] == 1 and "fallback_unaccepted_argument" not in counts()


def test_a_launch_only_argument_is_ignored_by_default():
    fita.enable_apply({f"rmsnorm_h{H}": lambda hidden_states, weight: torch_rmsnorm(hidden_states, weight)})
    x, w = rms_inputs()
    assert torch.equal(flashinfer.rmsnorm(x, w, enable_pdl=True), torch_rmsnorm(x, w))
    assert counts()["hit"] == 1


# -- 2. every delivered result: full shape, dtype, device -----------------------------------


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(lambda y: y.reshape(-1), id="flattened"),
        pytest.param(lambda y: y.t(), id="transposed"),
        pytest.param(lambda y: torch.empty_like(y, device="meta"), id="meta-device"),
    ],
)
def test_a_returned_result_with_the_right_element_count_but_wrong_shape_or_device_is_an_error(wrong):
    def bad(hidden_states, weight, eps=1e-6):
        return wrong(torch_rmsnorm(hidden_states, weight, eps))

    fita.enable_apply({f"rmsnorm_h{H}": bad})
    with pytest.raises(SolutionCallError, match=rf"flashinfer.norm.rmsnorm -> definition 'rmsnorm_h{H}' -> solution '.*bad'"):
        flashinfer.rmsnorm(*rms_inputs())
    assert counts()["error"] == 1 and counts()["hit"] == 0


def test_a_wrong_device_result_for_an_out_buffer_is_a_counted_error():
    fita.enable_apply({f"rmsnorm_h{H}": lambda hidden_states, weight, eps=1e-6: torch.empty_like(hidden_states, device="meta")})
    x, w = rms_inputs()
    out = torch.zeros_like(x)
    with pytest.raises(SolutionCallError, match=r"rmsnorm_h64.*device=meta.*does not match the destination"):
        flashinfer.rmsnorm(x, w, out=out)
    assert counts()["error"] == 1 and torch.all(out == 0)


def cudnn_prefill_call(solution, **kwargs):
    heads, dim = 4, 64
    fita.enable_apply({f"cudnn_batch_prefill_h{heads}_kv{heads}_d{dim}_ps16": solution})
    q = torch.randn(5, heads, dim)
    cache = torch.randn(2, heads, 16, dim)
    api = flashinfer.cudnn.prefill.cudnn_batch_prefill_with_kv_cache
    return q, lambda **more: api(q, cache, cache, 0.5, None, max_token_per_sequence=5, max_sequence_kv=32, causal=True, **kwargs, **more)


def test_a_returned_lse_of_the_wrong_shape_is_an_error():
    def wrong_lse(q, k_cache, v_cache, scale, return_lse=False, **_):
        return q * scale, torch.ones(q.shape[1], q.shape[0])  # (heads, tokens): transposed

    q, call = cudnn_prefill_call(wrong_lse)
    with pytest.raises(SolutionCallError, match=r"lse.*shape"):
        call(return_lse=True)


# -- a call is an instance of a definition only at the definition's ranks ---------------------


def test_a_call_whose_input_has_another_rank_than_the_definition_runs_the_original(binds):
    """FlashInfer's rmsnorm takes (batch, hidden) or (batch, heads, head_dim).
    A 3-D call with 64 heads of 128 has 64 where the 2-D rmsnorm_h64 keeps its
    hidden size, but is no instance of it: it runs the original (FlashInfer's
    built-in hands it to the h64 solution), from a cached key, not by binding
    the signature on every call."""
    seen = []

    def solution(hidden_states, weight, eps=1e-6):
        seen.append(tuple(hidden_states.shape))
        return torch_rmsnorm(hidden_states, weight, eps)

    fita.enable_apply({f"rmsnorm_h{H}": solution})
    per_head, head_weight = torch.randn(2, H, 128), torch.randn(128)
    for _ in range(3):
        with pytest.raises(ORIGINAL_RAN):
            flashinfer.rmsnorm(per_head, head_weight)
    assert seen == [] and counts()["hit"] == 0 and counts()["fallback_no_candidate"] == 3
    assert binds == []
    x, w = rms_inputs()
    assert torch.equal(flashinfer.rmsnorm(x, w), torch_rmsnorm(x, w)) and seen == [(4, H)]
    # The exact reading (signature bound) gives the keys the inline reading cached.
    route = flashinfer.rmsnorm.__fita_route__
    exact = {route.slow_key(per_head, head_weight), route.slow_key(x, w)}
    assert set(route.cache) == exact and len(exact) == 2
    assert route.name_for(route.slow_key(per_head, head_weight))[1] != f"rmsnorm_h{H}"


# -- 3. nothing written until every result is checked -----------------------------------------


def test_an_in_place_solution_with_one_wrong_result_leaves_every_input_untouched():
    def half_right(hidden_states, residual, weight, eps=1e-6):
        added = hidden_states + residual
        return torch_rmsnorm(added, weight, eps), added[:1]  # residual of the wrong shape

    fita.enable_apply({f"fused_add_rmsnorm_h{H}": half_right})
    x, w = rms_inputs()
    residual = torch.randn_like(x)
    x_in, r_in = x.clone(), residual.clone()
    with pytest.raises(SolutionCallError, match=r"fused_add_rmsnorm_h64.*residual.*does not match"):
        flashinfer.fused_add_rmsnorm(x_in, r_in, w)
    assert torch.equal(x_in, x) and torch.equal(r_in, residual)


def test_out_and_lse_buffers_stay_untouched_when_the_second_result_is_wrong():
    def wrong_lse(q, k_cache, v_cache, scale, return_lse=False, **_):
        return q * scale, torch.ones(q.shape[0], q.shape[1] + 1)

    q, call = cudnn_prefill_call(wrong_lse)
    out_buf, lse_buf = torch.zeros_like(q), torch.zeros(5, 4)
    with pytest.raises(SolutionCallError, match=r"lse.*does not match the destination"):
        call(return_lse=True, out=out_buf, lse=lse_buf)
    assert torch.all(out_buf == 0) and torch.all(lse_buf == 0)


# -- 7. a solution calling the API it replaces -------------------------------------------------


def test_a_solution_calling_its_own_api_when_called_reaches_the_original():
    def falls_back(hidden_states, weight, eps=1e-6):
        return flashinfer.rmsnorm(hidden_states, weight, eps)  # "shapes I do not handle"

    fita.enable_apply({f"rmsnorm_h{H}": falls_back})
    with pytest.raises(ORIGINAL_RAN):
        flashinfer.rmsnorm(*rms_inputs())
    stats = counts()
    assert stats["fallback_inside_solution"] == 1 and stats["error"] == 1  # not 498 nested errors


def test_a_solution_calling_its_own_api_while_imported_does_not_hang(tmp_path):
    source = textwrap.dedent(
        """
        import torch
        import flashinfer

        try:  # at import: must reach FlashInfer's own kernel, not this module
            flashinfer.rmsnorm(torch.randn(2, 64), torch.randn(64))
            REACHED = "returned"
        except Exception as exc:
            REACHED = type(exc).__name__

        def run(hidden_states, weight, eps=1e-6):
            x = hidden_states.float()
            return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(hidden_states.dtype)
        """
    )
    write_solution(tmp_path, "rmsnorm/at_import.json", solution_dict(f"rmsnorm_h{H}", source, name="at_import"))
    fita.enable_apply(fita.load_solutions(tmp_path))
    x, w = rms_inputs()
    result = {}
    worker = threading.Thread(target=lambda: result.update(y=flashinfer.rmsnorm(x, w)), daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the first call deadlocked on its own solution's import"
    assert torch.equal(result["y"], torch_rmsnorm(x, w))
    assert counts()["fallback_inside_solution"] == 1 and counts()["hit"] == 1


# -- 8. nothing alive, nothing routing after disable -----------------------------------------


def test_after_disable_the_solutions_are_collectable_and_a_kept_wrapper_acts_as_the_original():
    class Solution:
        def __init__(self):
            self.ballast = torch.empty(1 << 20, dtype=torch.uint8)
            self.calls = 0

        def __call__(self, hidden_states, weight, eps=1e-6):
            self.calls += 1
            return torch_rmsnorm(hidden_states, weight, eps)

    solution = Solution()
    alive = weakref.ref(solution)
    fita.enable_apply({f"rmsnorm_h{H}": solution})
    kept = flashinfer.rmsnorm
    x, w = rms_inputs()
    kept(x, w)
    assert solution.calls == 1 and counts()["hit"] == 1
    fita.disable_apply()
    del solution
    gc.collect()
    assert alive() is None, "a callable passed to enable_apply outlived the session"
    with pytest.raises(ORIGINAL_RAN):
        kept(x, w)  # FlashInfer's kernel, as the original would
    assert counts()["hit"] == 1 and counts()["fallback_no_candidate"] == 0


# -- 9. no Dynamo unless torch.compile is in use ---------------------------------------------


def test_enabling_and_routing_do_not_import_dynamo():
    script = textwrap.dedent(
        """
        import json, sys, warnings
        warnings.simplefilter("ignore")
        import torch, flashinfer
        import flashinfer_trace_apply as fita
        fita.enable_apply({"rmsnorm_h64": lambda hidden_states, weight, eps=1e-6: hidden_states * 1})
        x = torch.randn(2, 64)
        flashinfer.rmsnorm(x, torch.randn(64))
        print(json.dumps({"dynamo": "torch._dynamo" in sys.modules, "stats": fita.stats()}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["stats"][RMSNORM]["hit"] == 1
    assert report["dynamo"] is False


# -- 10. APIs choosing their template per call bind no signature per call ------------------------


@pytest.fixture
def binds(monkeypatch):
    """The APIs whose calls took the exact slow key (signature binding), in order."""
    calls = []
    original_bind = ApiRoute._bind

    def counting_bind(self, args, kwargs):
        calls.append(self.spec.fi_api)
        return original_bind(self, args, kwargs)

    monkeypatch.setattr(ApiRoute, "_bind", counting_bind)
    return calls


def test_a_selector_api_binds_only_on_the_first_call_per_selector_key(binds):
    seen = []

    def tensor_alpha(branch, residual, next_weight, alpha, beta, **_):
        seen.append("tensor")
        return residual + branch, branch * 2

    def scalar_alpha(branch, residual, next_weight, alpha, beta, **_):
        seen.append("scalar")
        return residual + branch, branch * 3

    fita.enable_apply({"gated_residual_next_rmsnorm_h64": tensor_alpha, "gated_residual_next_rmsnorm_scalar_alpha_h64": scalar_alpha})
    branch, residual, weight, beta = torch.randn(3, H), torch.randn(3, H), torch.randn(H), torch.randn(H)
    api = flashinfer.norm.gated_residual_next_rmsnorm
    for _ in range(3):
        _, ffn = api(branch, residual, weight, 0.5, beta)
        assert torch.equal(ffn, branch * 3)
        _, ffn = api(branch, residual, weight, torch.randn(H), beta)
        assert torch.equal(ffn, branch * 2)
    _, ffn = api(torch.randn(7, H), torch.randn(7, H), weight, 0.5, beta)  # another batch: same selector key
    assert seen == ["scalar", "tensor"] * 3 + ["scalar"]
    assert binds == ["flashinfer.norm.gated_residual_next_rmsnorm"] * 2  # once per selector key
    assert counts("flashinfer.norm.gated_residual_next_rmsnorm")["hit"] == 7


@pytest.mark.parametrize("type_only", [(), ("x",), ("mode",)], ids=["by-value", "x-by-type", "mode-by-type"])
def test_a_learned_selector_choice_answers_only_the_facts_it_was_learned_for(type_only):
    """Learned choices are tested inline (identity tests, no summary tuple);
    each answer must be the one the summary dictionary gives, and anything
    else must still reach the dictionary (KeyError: the slow key asks the
    selector). 1, 1.0 and True compare equal in Python but may be chosen
    differently, as may a tensor of another dtype or rank."""
    import enum
    import inspect

    from flashinfer_trace_apply.codegen import CallShape, compile_function
    from flashinfer_trace_apply.keys import ATOMS, KeyCode, summary

    class Mode(enum.Enum):
        A = 1
        B = 2

    def api(x, flag=False, mode=None):
        return None

    keys = KeyCode(CallShape(inspect.signature(api)), None, None, type_only)
    args = keys.selector_args(["x", "flag", "mode", "not_a_parameter"])
    assert args == ["x", "flag", "mode"]

    def facts(call):  # what the slow path learns for a call
        return keys.selector_key_slow(args, dict(zip(args, call)))
    values = [1, 1.0, True, None, "s", 0.5, float("nan"), Mode.A, Mode.B, (1, 2), [1], torch.zeros(3),
              torch.zeros(3, dtype=torch.bfloat16), torch.zeros(2, 3)]
    calls = [(x, flag, mode) for x in values for flag in (False, True, 1) for mode in (None, Mode.A)]
    learned = {}
    for i, call in enumerate(calls[::3]):
        learned.setdefault(facts(call), i)
    ns = {"_fita_choices": learned, "_fita_atoms": ATOMS, "_fita_T": torch.Tensor, "_fita_summary": summary}
    source = keys.choose_source(args, list(learned.items()), ns)
    assert source.count(": return ") >= 3  # some choices really are inline
    choose = compile_function("_fita_choose", source, ns, "<test choose>")
    for call in calls:
        want = learned.get(facts(call), KeyError)
        try:
            got = choose(*call)
        except KeyError:
            got = KeyError
        assert got == want, (call, got, want)


@pytest.mark.parametrize(
    "second",
    [
        pytest.param(lambda s: s.double(), id="wrong-dtype"),
        pytest.param(lambda s: s.t(), id="transposed"),
        pytest.param(lambda s: s.tolist(), id="not-a-tensor"),
    ],
)
def test_every_result_of_a_multi_output_api_is_checked(second):
    def pair(v_a, s_a, v_b, s_b):
        return v_a + v_b, second(s_a + s_b)

    fita.enable_apply({"merge_state_h8_d64": pair})
    v, s = torch.randn(3, 8, 64), torch.randn(3, 8)
    with pytest.raises(SolutionCallError, match=r"merge_state.*merge_state_h8_d64.*pair"):
        flashinfer.merge_state(v, s, v, s)


def test_a_kept_method_wrapper_passes_keyword_only_arguments_on_after_disable():
    """run(self, q, paged_kv_cache, *args, q_scale=..., ...): after disable the
    kept wrapper hands the arguments to what it wrapped exactly as the caller
    gave them. (FlashInfer's run needs a planned CUDA wrapper, so what is
    wrapped here records its arguments, keeping run's signature.)"""
    import functools

    cls = flashinfer.BatchDecodeWithPagedKVCacheWrapper
    real_run = vars(cls)["run"]
    received = []

    @functools.wraps(real_run)
    def recording_run(self, *args, **kwargs):
        received.append((args, kwargs))

    cls.run = recording_run
    try:
        fita.enable_apply({"gqa_paged_decode_h32_kv8_d128_ps16": lambda q, k_cache, v_cache, kv_indptr, kv_indices, sm_scale: q})
        kept = cls.run
        fita.disable_apply()
        assert cls.run is recording_run and kept is not recording_run
        q, cache = torch.randn(2, 32, 128), (torch.randn(2, 16, 8, 128),) * 2
        kept(cls.__new__(cls), q, cache, return_lse=True, window_left=3)
    finally:
        cls.run = real_run
    args, kwargs = received[-1]
    assert args[0] is q and args[1] is cache and len(args) == 2
    assert kwargs["return_lse"] is True and kwargs["window_left"] == 3


def test_a_selector_result_with_the_wrong_batch_is_refused_whether_the_key_was_read_inline_or_bound():
    """The entry compares results with the shapes the wrapper read for the
    key, or reads them itself when the key was bound (the first call for a
    selector key): both refuse a result of another batch, and a later
    batch's right result passes."""
    def stale_batch(branch, residual, next_weight, alpha, beta, **_):
        return residual[:2] + branch[:2], branch[:2] * 2  # always two rows

    fita.enable_apply({"gated_residual_next_rmsnorm_h64": stale_batch})
    api = flashinfer.norm.gated_residual_next_rmsnorm
    weight, beta = torch.randn(H), torch.randn(H)
    for _ in range(2):  # first call: bound key; second: inline key
        branch, residual = torch.randn(3, H), torch.randn(3, H)
        with pytest.raises(SolutionCallError, match=r"residual_out: result .* does not have the shape the API returns, \(3, 64\)"):
            api(branch, residual, weight, torch.randn(H), beta)
    residual_out, ffn = api(torch.randn(2, H), torch.randn(2, H), weight, torch.randn(H), beta)
    assert residual_out.shape == ffn.shape == (2, H)
    assert counts("flashinfer.norm.gated_residual_next_rmsnorm")["error"] == 2
    assert counts("flashinfer.norm.gated_residual_next_rmsnorm")["hit"] == 1


def test_an_api_of_more_than_thirty_parameters_keeps_its_trailing_arguments():
    """Entries of trtllm_batch_decode_with_kv_cache (36 parameters) take the
    trailing ones as one tuple (a call of 31+ arguments is slow in CPython):
    a trailing argument the solution takes still reaches it, and one it
    cannot take still sends the call to the original."""
    received = []

    def decode(query, kv_cache, block_tables, seq_lens, max_seq_len, bmm1_scale=1.0, bmm2_scale=1.0, request_order=None):
        received.append(request_order)
        return query * 2

    api_name = "flashinfer.decode.trtllm_batch_decode_with_kv_cache"
    fita.enable_apply({"trtllm_batch_decode_h32_kv8_d128_ps16": decode})
    api = flashinfer.decode.trtllm_batch_decode_with_kv_cache
    query, paged = torch.randn(4, 32, 128), torch.randn(10, 2, 8, 16, 128)
    tables, lens, workspace = torch.zeros(4, 3, dtype=torch.int32), torch.ones(4, dtype=torch.int32), torch.empty(8)
    order = torch.arange(4, dtype=torch.int32)
    for _ in range(2):  # bound key, then inline key
        assert torch.equal(api(query, paged, workspace, tables, lens, 48, request_order=order), query * 2)
        assert received[-1] is order
    assert counts(api_name)["hit"] == 2
    with pytest.warns(TraceApplyWarning, match="request_order_plan"), pytest.raises((ValueError, *ORIGINAL_RAN)):
        api(query, paged, workspace, tables, lens, 48, request_order_plan=order)
    assert counts(api_name)["fallback_unaccepted_argument"] == 1
    assert received[-1] is order and len(received) == 2


def test_a_miss_on_an_api_of_more_than_thirty_parameters_passes_every_argument_to_the_original(monkeypatch):
    """The original gets every argument of a call the route does not serve,
    after the session too: the trailing parameters past the thirtieth are
    left out of the forwarded call only while they hold their defaults."""
    import functools
    import inspect

    real = flashinfer.decode.trtllm_batch_decode_with_kv_cache
    signature = inspect.signature(real)
    received = []

    @functools.wraps(real)
    def recording(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        received.append(dict(bound.arguments))

    for module in (flashinfer.decode, flashinfer):
        if getattr(module, "trtllm_batch_decode_with_kv_cache", None) is real:
            monkeypatch.setattr(module, "trtllm_batch_decode_with_kv_cache", recording)
    fita.enable_apply({"trtllm_batch_decode_h32_kv8_d128_ps16": lambda query, kv_cache, **_: query})
    api = flashinfer.decode.trtllm_batch_decode_with_kv_cache
    query, paged = torch.randn(4, 16, 128), torch.randn(10, 2, 8, 16, 128)  # 16 heads: no candidate
    tables, lens, workspace = torch.zeros(4, 3, dtype=torch.int32), torch.ones(4, dtype=torch.int32), torch.empty(8)
    plan, order = object(), torch.arange(4, dtype=torch.int32)
    calls = [
        ((query, paged, workspace, tables, lens, 48), {}),
        ((query, paged, workspace, tables, lens, 48), {"request_order_plan": plan, "window_left": 7}),
        ((query, paged, workspace, tables, lens, 48), {"request_order": order, "cp_world": 2}),
    ]
    for phase in ("routed", "kept after disable"):
        for args, kwargs in calls:
            api(*args, **kwargs)
            expected = signature.bind(*args, **kwargs)
            expected.apply_defaults()
            got = received.pop()
            assert got.keys() == expected.arguments.keys()
            assert all(got[k] is v for k, v in expected.arguments.items()), phase
        if phase == "routed":
            assert counts("flashinfer.decode.trtllm_batch_decode_with_kv_cache")["fallback_no_candidate"] == 3
            fita.disable_apply()


def test_a_selector_argument_read_only_by_its_type_is_keyed_by_its_type(binds):
    """gated_residual_next_rmsnorm's selector reads ``alpha`` only through
    ``isinstance``: a float alpha that changes on every call must not send
    every new value to the exact slow path (it used to, about 20 µs a call),
    and a tensor alpha must still pick the other template."""

    def tensor_alpha(branch, residual, next_weight, alpha, beta, **_):
        return residual + branch, branch * 2

    def scalar_alpha(branch, residual, next_weight, alpha, beta, **_):
        return residual + branch, branch * alpha

    fita.enable_apply({"gated_residual_next_rmsnorm_h64": tensor_alpha, "gated_residual_next_rmsnorm_scalar_alpha_h64": scalar_alpha})
    branch, residual, weight, beta = torch.randn(3, H), torch.randn(3, H), torch.randn(H), torch.randn(H)
    api = flashinfer.norm.gated_residual_next_rmsnorm
    for step in range(1, 12):
        alpha = step / 8
        _, ffn = api(branch, residual, weight, alpha, beta)
        assert torch.equal(ffn, branch * alpha)
    _, ffn = api(branch, residual, weight, torch.randn(H), beta)
    assert torch.equal(ffn, branch * 2)
    assert binds == ["flashinfer.norm.gated_residual_next_rmsnorm"] * 2  # once per type of alpha
    assert counts("flashinfer.norm.gated_residual_next_rmsnorm")["hit"] == 12


def test_selector_reads_tells_type_only_reads_from_value_reads():
    from flashinfer_trace_apply.keys import selector_reads, selector_type_only

    def selector(**kwargs):
        if kwargs.get("cache") is not None and isinstance(kwargs.get("alpha"), float):
            return "a"
        if isinstance(kwargs.get("both"), int) and kwargs.get("both") > 3:
            return "b"
        return "c" if kwargs["flag"] is None else "d"

    assert selector_reads(selector) == ["cache", "alpha", "both", "flag"]
    assert selector_type_only(selector) == {"cache", "alpha", "flag"}

    def shadowing(**kwargs):
        isinstance = lambda value, kinds: value > 1  # noqa: E731 - not the builtin
        return isinstance(kwargs.get("alpha"), float)

    assert selector_type_only(shadowing) == set()

    def instance_dependent(**kwargs):
        # Parameter's isinstance looks at the instance (_is_param), not only its class
        return "p" if isinstance(kwargs.get("weight"), torch.nn.Parameter) else "t"

    assert selector_type_only(instance_dependent) == set()
