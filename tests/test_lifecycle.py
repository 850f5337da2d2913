"""Enable, disable and re-enable leave FlashInfer exactly as it was; the
wrappers look like the APIs they stand for; misses run the original."""

from __future__ import annotations

import inspect
import sys
import threading
import warnings

import pytest
import torch

import flashinfer
import flashinfer_trace_apply as fita
from flashinfer_trace_apply.patcher import read_attribute
from flashinfer_trace_apply.registry import discover_apis
from flashinfer_trace_apply.warn import TraceApplyWarning

WRAPPER_CLASSES = (
    flashinfer.BatchDecodeWithPagedKVCacheWrapper,
    flashinfer.BatchPrefillWithPagedKVCacheWrapper,
    flashinfer.BatchPrefillWithRaggedKVCacheWrapper,
    flashinfer.mla.BatchMLAPagedAttentionWrapper,
)


def _snapshot():
    """Every attribute of every flashinfer module and wrapper class, by identity."""
    state = {}
    for name, module in list(sys.modules.items()):
        if module is not None and (name == "flashinfer" or name.startswith("flashinfer.")):
            for attr, value in list(vars(module).items()):
                state[(name, attr)] = value
    for cls in WRAPPER_CLASSES:
        for attr, value in vars(cls).items():
            state[(cls.__qualname__, attr)] = value
    return state


def _every_definition_name():
    """One registered name per template of every API, so every API is wrapped."""
    names = {}
    for spec in discover_apis():
        for template in spec.templates:
            prefix = template.name_prefix or template.op_type
            names[prefix + "_h1"] = lambda **_: None
    return names


def test_enable_disable_cycles_restore_every_attribute_identically():
    before = _snapshot()
    for _ in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TraceApplyWarning)
            wrapped = fita.enable_apply(_every_definition_name())
            assert wrapped > 150
            assert flashinfer.rmsnorm is not before[("flashinfer", "rmsnorm")]
            assert flashinfer.rmsnorm is flashinfer.norm.rmsnorm
            patched = vars(flashinfer.BatchDecodeWithPagedKVCacheWrapper)["run"]
            assert patched is not before[("BatchDecodeWithPagedKVCacheWrapper", "run")]
            fita.disable_apply()
        after = _snapshot()
        changed = [k for k in before if after.get(k, object()) is not before[k]]
        assert changed == []


def test_re_enable_replaces_the_mapping():
    x, w = torch.randn(2, 64), torch.randn(2, 64)[0]
    fita.enable_apply({"rmsnorm_h64": lambda hidden_states, weight: hidden_states + 1})
    fita.enable_apply({"rmsnorm_h64": lambda hidden_states, weight: hidden_states + 2})
    assert torch.equal(flashinfer.rmsnorm(x, w), x + 2)
    assert flashinfer.rmsnorm.__wrapped__ is flashinfer.rmsnorm.__fita_route__.spec.current


def test_nothing_configured_is_a_no_op(monkeypatch):
    monkeypatch.delenv("FLASHINFER_TRACE_APPLY_PATH", raising=False)
    original = flashinfer.rmsnorm
    assert fita.enable_apply() == 0
    assert fita.enable_apply({}) == 0
    assert not fita.is_enabled() and flashinfer.rmsnorm is original


def test_only_apis_a_definition_can_name_are_wrapped():
    before = _snapshot()
    fita.enable_apply({"rmsnorm_h4096": lambda **_: None})
    after = _snapshot()
    changed = sorted({attr for (mod, attr) in before if after[(mod, attr)] is not before[(mod, attr)]})
    # rmsnorm under its aliases; the built-in's enable_apply is made to refuse.
    assert set(changed) <= {"rmsnorm", "enable_apply"}
    assert "rmsnorm" in changed
    assert flashinfer.fused_add_rmsnorm is before[("flashinfer", "fused_add_rmsnorm")]


def test_wrapper_keeps_the_api_identity():
    original = flashinfer.rmsnorm
    fita.enable_apply({"rmsnorm_h64": lambda **_: None})
    wrapper = flashinfer.rmsnorm
    for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
        assert getattr(wrapper, attr) == getattr(original, attr)
    assert wrapper.__wrapped__ is original
    assert inspect.signature(wrapper) == inspect.signature(original)
    assert wrapper.fi_trace is original.fi_trace  # FlashInfer's collector still reachable


def test_miss_runs_the_original_and_is_counted():
    fita.enable_apply({"rmsnorm_h4096": lambda **_: None})
    x, w = torch.randn(2, 64), torch.randn(64)
    with pytest.raises(Exception) as info:  # the CUDA kernel itself, refusing CPU tensors
        flashinfer.rmsnorm(x, w)
    assert "CUDA" in str(info.value) or "cuda" in str(info.value)
    assert fita.stats()["flashinfer.norm.rmsnorm"]["fallback_no_candidate"] == 1


def test_disable_warns_about_definitions_that_never_matched():
    fita.enable_apply({"rmsnorm_h4096": lambda **_: None, "rmsnorm_h64": lambda hidden_states, weight: hidden_states})
    flashinfer.rmsnorm(torch.randn(2, 64), torch.randn(64))
    with pytest.warns(TraceApplyWarning, match=r"never matched.*rmsnorm_h4096") as record:
        fita.disable_apply()
    assert "rmsnorm_h64" not in str(record[0].message)


def test_attribute_repatched_by_someone_else_is_left_alone():
    original = flashinfer.norm.rmsnorm
    fita.enable_apply({"rmsnorm_h64": lambda **_: None})

    def theirs(*args, **kwargs):
        return "theirs"

    flashinfer.norm.rmsnorm = theirs
    try:
        with pytest.warns(TraceApplyWarning, match="flashinfer.norm.rmsnorm"):
            fita.disable_apply()
        assert flashinfer.norm.rmsnorm is theirs
        assert flashinfer.rmsnorm is original  # the alias we still owned is restored
    finally:
        flashinfer.norm.rmsnorm = original


def test_plan_run_wrapper_methods_are_patched_and_restored():
    cls = flashinfer.BatchDecodeWithPagedKVCacheWrapper
    run, plan = read_attribute(cls, "run"), read_attribute(cls, "plan")
    fita.enable_apply({"gqa_paged_decode_h32_kv8_d128_ps16": lambda **_: None})
    assert read_attribute(cls, "run") is not run and read_attribute(cls, "plan") is not plan
    fita.disable_apply()
    assert read_attribute(cls, "run") is run and read_attribute(cls, "plan") is plan


def test_cuda_graph_check_is_safe_on_a_cpu_only_torch():
    from flashinfer_trace_apply.dispatch import is_capturing

    assert torch.cuda.is_available() or is_capturing() is False


def test_many_threads_first_calls_resolve_once_and_count_exactly():
    loads = []

    class Counting:
        """A callable whose first use we can observe: resolution happens once."""

        def __call__(self, hidden_states, weight):
            return hidden_states

    solution = Counting()
    fita.enable_apply({"rmsnorm_h64": solution})
    route = flashinfer.rmsnorm.__fita_route__
    original_build = route._build_entry

    def counting_build(key):
        loads.append(key)
        return original_build(key)

    route._build_entry = counting_build
    x, w = torch.randn(2, 64), torch.randn(64)
    threads, per_thread = 16, 200
    barrier = threading.Barrier(threads)

    def work():
        barrier.wait()
        for _ in range(per_thread):
            flashinfer.rmsnorm(x, w)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert loads == [64]
    assert fita.stats()["flashinfer.norm.rmsnorm"]["hit"] == threads * per_thread


def test_reading_stats_warns_about_nothing():
    """stats() must not lean on deprecated interpreter features (Python 3.12
    deprecates pickling itertools objects; 3.14 removes it)."""
    fita.enable_apply({"rmsnorm_h64": lambda hidden_states, weight: hidden_states})
    flashinfer.rmsnorm(torch.randn(2, 64), torch.randn(64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fita.stats()["flashinfer.norm.rmsnorm"]["hit"] == 1
