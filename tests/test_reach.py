"""Reach (issue 11): FlashInfer submodules imported after enable, class-body
aliases of wrapped methods, names bound outside FlashInfer before a
programmatic enable, and ``doctor``. Restore stays exact for all of them.
Real FlashInfer 0.7.2.post1 on CPU."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import types
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

PREFILL_CLASSES = (flashinfer.BatchPrefillWithPagedKVCacheWrapper, flashinfer.BatchPrefillWithRaggedKVCacheWrapper)
ALL_NAMES = {"gqa_paged_prefill_h4_kv2_d64_ps4": lambda **_: None, "gqa_ragged_h4_kv2_d64": lambda **_: None,
             "gqa_paged_decode_h4_kv2_d64_ps4": lambda **_: None}


def _quiet_enable(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceApplyWarning)
        return fita.enable_apply(*args, **kwargs)


def _quiet_disable():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceApplyWarning)
        fita.disable_apply()


# -- class-body aliases ---------------------------------------------------------------


def test_class_body_aliases_follow_the_wrapped_method_and_come_back_identical():
    classes = PREFILL_CLASSES + (flashinfer.BatchDecodeWithPagedKVCacheWrapper,)
    before = {cls: dict(vars(cls)) for cls in classes}
    _quiet_enable(ALL_NAMES)
    for cls in classes:
        now = vars(cls)
        run = now["run"]
        assert getattr(run, "__fita_route__", None) is not None
        alias = now["run_return_lse"]
        assert isinstance(alias, functools.partialmethod) and alias.func is run
        assert alias.keywords == before[cls]["run_return_lse"].keywords == {"return_lse": True}
        # plan and its class-body alias begin_forward: one recorder, same object
        assert now["begin_forward"] is now["plan"] and getattr(now["plan"], "__fita_plan_recorder__", False)
    _quiet_disable()
    for cls in classes:
        changed = [k for k, v in before[cls].items() if vars(cls).get(k) is not v]
        assert changed == [], (cls, changed)


def test_an_alias_in_a_subclass_body_is_routed_too():
    base = flashinfer.BatchPrefillWithRaggedKVCacheWrapper
    original_run = vars(base)["run"]

    class EngineWrapper(base):
        forward_ragged = original_run  # an engine's own alias, bound in its class body
        forward_ragged_lse = functools.partialmethod(original_run, return_lse=True)

    _quiet_enable(ALL_NAMES)
    assert vars(EngineWrapper)["forward_ragged"] is vars(base)["run"]
    assert vars(EngineWrapper)["forward_ragged_lse"].func is vars(base)["run"]
    _quiet_disable()
    assert vars(EngineWrapper)["forward_ragged"] is original_run
    assert vars(EngineWrapper)["forward_ragged_lse"].func is original_run


# -- names outside FlashInfer ------------------------------------------------------------


@pytest.fixture
def fake_engine():
    module = types.ModuleType("fake_engine_reach")
    module.rmsnorm = flashinfer.norm.rmsnorm  # bound before enable
    sys.modules[module.__name__] = module
    yield module
    sys.modules.pop(module.__name__, None)


def test_stale_names_are_warned_about_once_each_and_left_alone(fake_engine):
    original = fake_engine.rmsnorm
    with pytest.warns(TraceApplyWarning, match=r"1 name\(s\) outside FlashInfer.*fake_engine_reach\.rmsnorm "
                                                 r"\(flashinfer\.norm\.rmsnorm\).*FLASHINFER_TRACE_APPLY=1.*rebind=True"):
        fita.enable_apply({"rmsnorm_h64": lambda hidden_states, weight: hidden_states})
    assert fake_engine.rmsnorm is original


def test_a_bad_rebind_value_is_reported_and_stays_off(fake_engine, monkeypatch):
    monkeypatch.setenv("FLASHINFER_TRACE_APPLY_REBIND", "yes")
    with pytest.warns(TraceApplyWarning) as caught:
        fita.enable_apply({"rmsnorm_h64": lambda hidden_states, weight: hidden_states})
    messages = [str(w.message) for w in caught]
    assert any("FLASHINFER_TRACE_APPLY_REBIND must be '0', '1' or empty, got 'yes'" in m for m in messages)
    assert not hasattr(fake_engine.rmsnorm, "__fita_route__")


def test_a_wrapper_bound_outside_flashinfer_during_the_session_is_restored(fake_engine):
    original = flashinfer.norm.rmsnorm
    _quiet_enable({"rmsnorm_h64": lambda hidden_states, weight: hidden_states + 1})
    fake_engine.late = flashinfer.norm.rmsnorm  # `from flashinfer.norm import rmsnorm` after enable
    x = torch.randn(2, 64)
    assert torch.equal(fake_engine.late(x, torch.ones(64)), x + 1)
    _quiet_disable()
    assert fake_engine.late is original  # no caller keeps routing after disable_apply()


# -- FlashInfer submodules imported after enable (fresh interpreter) --------------------

LATE_BODY = r'''
import torch
import flashinfer_trace_apply as fita
from flashinfer import api_logging

def registered(fi_api):
    return any(api_logging._trace_fi_api_for(o) == fi_api for o, _t, _l in api_logging._TRACE_REGISTRY)

report["registered_before"] = [registered("flashinfer.comm.allreduce.allreduce_fusion"), registered("flashinfer.concat_ops.concat_mla_k")]
report["late_in_sys_modules_before"] = [m for m in ("flashinfer.comm", "flashinfer.concat_ops") if m in sys.modules]
report["wrapped_at_enable"] = fita.enable_apply({"allreduce_fusion_h64": lambda input, **_: input * 2,
                                                "concat_mla_k_h4_nope8_rope4_d12": lambda k, k_nope, k_rope: torch.cat([k_nope, k_rope.expand(-1, k_nope.shape[1], -1)], -1),
                                                "rmsnorm_h64": lambda hidden_states, weight: hidden_states})
report["wrapped_at_enable"] = fita.enable_apply({"allreduce_fusion_h64": lambda input, **_: input * 2,
                                                "concat_mla_k_h4_nope8_rope4_d12": lambda k, k_nope, k_rope: torch.cat([k_nope, k_rope.expand(-1, k_nope.shape[1], -1)], -1),
                                                "rmsnorm_h64": lambda hidden_states, weight: hidden_states})  # again: replaces the session
report["finders_while_enabled"] = sum("FlashInfer" in type(f).__name__ for f in sys.meta_path)
report["late_in_sys_modules_after_enable"] = [m for m in ("flashinfer.comm", "flashinfer.concat_ops") if m in sys.modules]
import flashinfer.comm
import flashinfer.comm.allreduce as ar_module
from flashinfer.concat_ops import concat_mla_k
report["registered_after"] = [registered("flashinfer.comm.allreduce.allreduce_fusion"), registered("flashinfer.concat_ops.concat_mla_k")]
report["routed"] = {
    "flashinfer.comm.allreduce_fusion": hasattr(flashinfer.comm.allreduce_fusion, "__fita_route__"),
    "flashinfer.comm.allreduce.allreduce_fusion": hasattr(ar_module.allreduce_fusion, "__fita_route__"),
    "flashinfer.concat_ops.concat_mla_k": hasattr(concat_mla_k, "__fita_route__"),
}
x = torch.randn(2, 64)
report["allreduce_routed_result"] = bool(torch.equal(flashinfer.comm.allreduce_fusion(input=x, workspace=None, pattern=0), x * 2))
k = torch.zeros(2, 4, 12); k_nope = torch.randn(2, 4, 8); k_rope = torch.randn(2, 1, 4)
concat_mla_k(k, k_nope, k_rope)
report["concat_written"] = bool(torch.equal(k[..., :8], k_nope))
originals = {"comm": flashinfer.comm.allreduce_fusion.__wrapped__, "concat": concat_mla_k.__wrapped__}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    fita.disable_apply()
report["restored"] = {
    "flashinfer.comm.allreduce_fusion": flashinfer.comm.allreduce_fusion is originals["comm"],
    "flashinfer.comm.allreduce.allreduce_fusion": ar_module.allreduce_fusion is originals["comm"],
    "flashinfer.concat_ops.concat_mla_k": sys.modules["flashinfer.concat_ops"].concat_mla_k is originals["concat"],
}
report["finder_left"] = [type(f).__name__ for f in sys.meta_path if "FlashInfer" in type(f).__name__]
import flashinfer.gdn_decode  # after disable: nothing wraps it
report["after_disable_routed"] = hasattr(flashinfer.gdn_decode.gated_delta_rule_decode, "__fita_route__")
report["stats"] = fita.stats()
'''


def test_submodules_imported_after_a_programmatic_enable_are_wrapped_and_restored(tmp_path):
    report, _proc = hh.run_child(hh.script(LATE_BODY), hh.child_env(tmp_path / "cache"), tmp_path)
    assert report["import_error"] is None
    # FlashInfer registers these APIs only when the submodules are imported,
    # and neither `import flashinfer` nor the enable imports them.
    assert report["registered_before"] == [False, False]
    assert report["late_in_sys_modules_before"] == [] and report["late_in_sys_modules_after_enable"] == []
    assert report["registered_after"] == [True, True]
    assert all(report["routed"].values()), report["routed"]
    assert report["allreduce_routed_result"] and report["concat_written"]
    assert report["stats"]["flashinfer.comm.allreduce.allreduce_fusion"]["hit"] == 1
    assert report["stats"]["flashinfer.concat_ops.concat_mla_k"]["hit"] == 1
    assert all(report["restored"].values()), report["restored"]
    assert report["finders_while_enabled"] == 1  # a re-enable replaced the watcher, did not stack one
    assert report["finder_left"] == [] and report["after_disable_routed"] is False


# -- doctor ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def doctor_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("doctor")
    for definition, source in [
        ("rmsnorm_d4096", "def run(hidden_states, weight):\n    return hidden_states\n"),  # typo for rmsnorm_h4096
        (f"fused_add_rmsnorm_quant_h{ep.HIDDEN}", ep.FUSED_ADD_RMSNORM_QUANT),
        (f"allreduce_fusion_h{ep.HIDDEN}", ep.ALLREDUCE_FUSION),
    ]:
        hh.write_json(root / "solutions" / f"{definition}.json", ep.python_solution(definition, f"py_{definition}", source))
    ep.write_engine_module(root, "doctor_engine_module")
    return root


def _cli(args, cwd):
    env = hh.child_env(cwd / "cache")
    env["PYTHONPATH"] = str(cwd) + ":" + env["PYTHONPATH"]
    return subprocess.run([sys.executable, "-m", "flashinfer_trace_apply", "doctor", *args], env=env, cwd=str(cwd),
                          capture_output=True, text=True, timeout=hh.CHILD_TIMEOUT_S)


def test_doctor_cli_json_reports_apis_wrapped_stale_and_typos(doctor_folder):
    proc = _cli([str(doctor_folder), "--import", "doctor_engine_module", "--json"], doctor_folder)
    assert proc.returncode == 1, proc.stderr  # a definition can never match
    report = json.loads(proc.stdout)
    by_name = {d["name"]: d for d in report["definitions"]}
    typo = by_name["rmsnorm_d4096"]
    assert typo["status"] == "never matches" and typo["apis"] == [] and typo["closest"][0] == "rmsnorm_h4096"
    quant = by_name[f"fused_add_rmsnorm_quant_h{ep.HIDDEN}"]
    assert quant["status"] == "partly reachable" and quant["apis"] == ["flashinfer.norm.fused_add_rmsnorm_quant"]
    assert quant["stale"] == ["doctor_engine_module.fused_add_rmsnorm_quant"]
    assert "flashinfer.norm.fused_add_rmsnorm_quant" in quant["wrapped"]
    # allreduce_fusion lives in flashinfer.comm, which `import flashinfer` does not import
    comm = by_name[f"allreduce_fusion_h{ep.HIDDEN}"]
    assert comm["status"] == "ok" and set(comm["wrapped"]) >= {"flashinfer.comm.allreduce.allreduce_fusion",
                                                               "flashinfer.comm.allreduce_fusion"}
    assert report["imported"] == ["doctor_engine_module"] and report["ok"] is False


def test_doctor_cli_table(doctor_folder):
    proc = _cli([str(doctor_folder), "--import", "doctor_engine_module"], doctor_folder)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:2] == ["definition", "status"]
    typo = next(line for line in lines if line.startswith("rmsnorm_d4096"))
    assert "never matches" in typo and "closest: rmsnorm_h4096" in typo
    quant = next(line for line in lines if line.startswith("fused_add_rmsnorm_quant_h64"))
    assert "partly reachable" in quant and quant.rstrip().endswith("doctor_engine_module.fused_add_rmsnorm_quant")
    assert any("import hook" in line and "rebind=True" in line for line in lines)


def test_doctor_inside_a_running_process_inspects_the_session():
    _quiet_enable({"rmsnorm_h64": lambda hidden_states, weight: hidden_states, "rmsnorm_d64": lambda **_: None})
    report = fita.doctor()
    by_name = {d.name: d for d in report.definitions}
    assert report.source == "running session"
    assert by_name["rmsnorm_h64"].status == "ok"
    assert set(by_name["rmsnorm_h64"].wrapped) >= {"flashinfer.norm.rmsnorm", "flashinfer.rmsnorm"}
    assert by_name["rmsnorm_d64"].status == "never matches" and by_name["rmsnorm_d64"].closest[0] == "rmsnorm_h64"
    assert fita.is_enabled()  # inspecting does not end the session
    with pytest.raises(RuntimeError, match="would replace the enabled session"):
        fita.doctor(solutions={"rmsnorm_h64": lambda **_: None})


def test_a_wrapper_held_where_no_scan_looks_runs_the_original_after_disable():
    """vLLM keeps lazily imported FlashInfer functions in a functools.cache:
    a wrapper cached there during the session must not keep routing."""
    from test_correctness import original_refuses_cpu

    calls = []

    def solution(hidden_states, weight):
        calls.append(1)
        return hidden_states + 1

    _quiet_enable({"rmsnorm_h64": solution})

    @functools.cache
    def lazy_impl():
        return flashinfer.norm.rmsnorm

    x, w = torch.randn(2, 64), torch.ones(64)
    assert torch.equal(lazy_impl()(x, w), x + 1) and calls == [1]
    wrapper = lazy_impl()
    _quiet_disable()
    assert lazy_impl() is wrapper and wrapper.__wrapped__ is flashinfer.norm.rmsnorm  # identity kept
    original_refuses_cpu(lambda: lazy_impl()(x, w))  # FlashInfer's own kernel ran: it needs CUDA
    assert calls == [1]
    _quiet_enable({"rmsnorm_h64": solution})  # a new session does not revive the old wrapper
    original_refuses_cpu(lambda: wrapper(x, w))
    assert torch.equal(flashinfer.norm.rmsnorm(x, w), x + 1) and calls == [1, 1]


def test_what_is_registered_during_the_enable_itself_is_caught_up_when_watching_starts():
    """An import inside enable_apply (after it read the registry, before the
    watcher was armed) must not be lost: the watcher starts from the mark
    the enable read and wraps the tail at once, aliases looked for anywhere."""
    from flashinfer import api_logging

    from flashinfer_trace_apply.late_imports import LateImportWatcher
    from flashinfer_trace_apply.patcher import PatchSet

    registry = api_logging._TRACE_REGISTRY
    tail = {api_logging._trace_fi_api_for(o) for o, _t, _l in registry[-3:]}
    given = []
    watcher = LateImportWatcher(PatchSet(), lambda spec, scope: given.append((spec.fi_api, scope)) or [],
                                lambda message: None, start=len(registry) - 3)
    watcher.arm()
    try:
        watcher.catch_up_now()
    finally:
        watcher.disarm()
    assert {api for api, _scope in given} == tail and all(scope is None for _api, scope in given)
    assert not any(type(f).__name__ == "_FlashInferImportFinder" for f in sys.meta_path)  # disarm removed it


def test_only_routing_wrappers_count_as_stale(fake_engine):
    """Our take-over of FlashInfer's built-in enable_apply is a patch too, but
    a module holding the built-in's function is not a missed route."""
    import flashinfer.trace_apply as builtin

    fake_engine.builtin_enable = builtin.enable_apply
    del fake_engine.rmsnorm
    with warnings.catch_warnings():
        warnings.simplefilter("error", TraceApplyWarning)
        fita.enable_apply({"rmsnorm_h64": lambda hidden_states, weight: hidden_states})
    assert fita.doctor().definitions[0].stale == []
