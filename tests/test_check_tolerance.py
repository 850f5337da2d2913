"""check's bar: the template's own check with one ulp of the output dtype
forgiven per value, never more."""

from __future__ import annotations

import torch

from flashinfer_trace_apply.check import _forgive_one_ulp


def test_one_ulp_is_forgiven_across_a_binade_boundary():
    ref = torch.tensor([0.25, 8.0, 4.0], dtype=torch.bfloat16)
    one_below = torch.tensor([0.25 - 2**-10, 8.0 - 2**-5, 4.0 + 2**-5], dtype=torch.bfloat16)
    assert torch.equal(_forgive_one_ulp([ref], [one_below])[0], ref)


def test_two_ulps_are_not_forgiven():
    ref = torch.tensor([1.0, 3.0], dtype=torch.float16)
    two_off = torch.tensor([1.0 + 2 * 2**-10, 3.0 - 2 * 2**-9], dtype=torch.float16)
    moved = _forgive_one_ulp([ref], [two_off])[0]
    assert not torch.equal(moved, ref)
    assert torch.all((moved.float() - ref.float()).abs() > 0)


def test_ulp_distance_measures_against_the_larger_magnitude():
    from flashinfer_trace_apply.check import _ulp_distance

    ref = torch.tensor([0.25, 1.0], dtype=torch.bfloat16)
    # One step below 0.25 is half an ulp of 0.25's binade.
    assert _ulp_distance([ref], [torch.tensor([0.25 - 2**-10, 1.0], dtype=torch.bfloat16)]) == 0.5
    assert _ulp_distance([ref], [torch.tensor([0.25, 1.0 + 2 * 2**-7], dtype=torch.bfloat16)]) == 2.0


def test_nan_or_inf_is_never_within_one_ulp():
    from flashinfer_trace_apply.check import _ulp_distance, nonfinite_mismatches

    ref = torch.tensor([0.5, 1.0], dtype=torch.bfloat16)
    for bad in (float("nan"), float("inf")):
        act = torch.tensor([0.5, bad], dtype=torch.bfloat16)
        assert _ulp_distance([ref], [act]) == float("inf")
        assert nonfinite_mismatches([ref], [act]) == 1
    # NaN where the reference is NaN too is no mismatch.
    both = torch.tensor([float("nan")], dtype=torch.bfloat16)
    assert nonfinite_mismatches([both], [both.clone()]) == 0


def test_check_fails_an_all_nan_solution_on_a_real_api():
    from flashinfer_trace_apply.check import check_one

    def all_nan(hidden_states, weight, eps=1e-6):
        return torch.full_like(hidden_states, float("nan"))

    row = check_one("rmsnorm_h128", all_nan, batch=3, device="cpu", dtype=torch.bfloat16)
    assert row.result == "fail", row
    assert "NaN or Inf" in row.detail


def test_a_wrapper_class_definition_is_not_checked_with_the_reason():
    import flashinfer  # noqa: F401 - fills the trace registry

    from flashinfer_trace_apply.check import check_one

    row = check_one("gqa_paged_decode_h32_kv8_d128_ps16", lambda **kw: None, 1, "cpu", torch.bfloat16)
    assert row.result == "skip"
    assert row.detail.startswith("not checked: flashinfer.decode.BatchDecodeWithPagedKVCacheWrapper.run is a wrapper-class method")
