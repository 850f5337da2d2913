"""The bundled top_k_renorm_probs / top_p_renorm_probs solutions: the kernel
against the Definition's reference (FlashInfer's rules: ties at the pivot
kept, top-p against p times the row sum) with a scalar and a per-row k / p,
and a call through FlashInfer's public API routed to it.

Without a GPU the kernels run under the Triton interpreter, which is slow on
whole vocabularies: the kernel (vocabulary-agnostic) is tested on short rows,
the routed calls use one row of the smallest bundled vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import flashinfer
import flashinfer_trace_apply as fita
from solution_files import catalog_folder
from flashinfer_trace_apply import loaders

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SAMPLING = sorted(p.stem for root in (ROOT, ROOT / "candidates") for p in (root / "solutions" / "sampling").glob("*.json"))


def solution(definition):
    return loaders.load(fita.load_solutions(catalog_folder(definition))[definition], definition).fn


def reference(definition):
    namespace: dict = {}
    exec(json.loads((catalog_folder(definition) / "definitions" / "sampling" / f"{definition}.json").read_text())["reference"], namespace)
    return namespace["run"]


def probs(rows, vocab, dtype=torch.float32, sharpness=3.0):
    return torch.softmax(torch.randn(rows, vocab, device=DEVICE) * sharpness, dim=-1).to(dtype)


def test_the_five_vocabularies_are_generated_for_both_ops():
    sizes = [128256, 129280, 151936, 152064, 262144]
    assert SAMPLING == sorted(f"{op}_v{v}" for op in ("top_k_renorm_probs", "top_p_renorm_probs") for v in sizes)


@pytest.mark.parametrize("definition", ["top_k_renorm_probs_v128256", "top_p_renorm_probs_v128256"])
def test_names_are_the_ones_flashinfer_computes(definition):
    op = definition.rsplit("_v", 1)[0]
    x = torch.empty(2, 128256)
    param = 5 if op.startswith("top_k") else 0.5
    name = "top_k" if op.startswith("top_k") else "top_p"
    assert getattr(flashinfer.sampling, op).fi_trace(probs=x, **{name: param})["name"] == definition


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_top_k_matches_the_reference_scalar_and_per_row(dtype):
    torch.manual_seed(0)
    fn, ref = solution("top_k_renorm_probs_v128256"), reference("top_k_renorm_probs_v128256")
    x = probs(3, 3001, dtype)  # not a multiple of the kernel's tile
    for k in (50, torch.tensor([1, 7, 3001], device=DEVICE), torch.tensor([0, 2, 40000], dtype=torch.int32, device=DEVICE)):
        got = fn(x, k)
        assert got.dtype == dtype and got.shape == x.shape
        want = ref(x, k)
        assert torch.equal(got != 0, want != 0), f"kept set differs for k={k}"
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-2 if dtype != torch.float32 else 1e-5, atol=1e-6)


def test_top_k_keeps_ties_at_the_pivot():
    x = torch.tensor([[0.3, 0.2, 0.2, 0.2, 0.1]], device=DEVICE)
    got = solution("top_k_renorm_probs_v128256")(x, 2)
    torch.testing.assert_close(got, torch.tensor([[0.3, 0.2, 0.2, 0.2, 0.0]], device=DEVICE) / 0.9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_top_p_matches_the_reference_scalar_and_per_row(dtype):
    torch.manual_seed(1)
    fn, ref = solution("top_p_renorm_probs_v128256"), reference("top_p_renorm_probs_v128256")
    x = probs(3, 3001, dtype)
    for p in (0.9, torch.tensor([0.0, 0.5, 0.95], device=DEVICE), torch.tensor([0.3, 0.7, 0.99], dtype=torch.float64, device=DEVICE)):
        got = fn(x, p)
        assert got.dtype == torch.float32, "FlashInfer's top-p returns float32"
        want = ref(x, p)
        assert torch.equal(got != 0, want != 0), f"kept set differs for p={p}"
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_top_p_uses_the_row_sum_and_keeps_the_max_at_p_zero():
    x = torch.tensor([[2.0, 1.0, 1.0, 0.5], [0.1, 0.4, 0.3, 0.2]], device=DEVICE)
    got = solution("top_p_renorm_probs_v128256")(x, torch.tensor([0.5, 0.0], device=DEVICE))
    # row 0 sums to 4.5: 2.0 alone is short of 2.25, so 2.0 and both 1.0s stay
    torch.testing.assert_close(got, torch.tensor([[0.5, 0.25, 0.25, 0.0], [0.0, 1.0, 0.0, 0.0]], device=DEVICE))


def test_top_p_of_one_keeps_values_too_small_to_move_the_row_sum():
    # 1e-10 next to 0.5 vanishes in a float32 sum, so a pivot above it still
    # "reaches" p * row sum; FlashInfer keeps the whole row at p >= 1 (seen on
    # the H200: its kernel kept such values, ours dropped them).
    x = torch.tensor([[0.5, 1e-10, 0.25, 1e-10, 0.25, 3e-10]], device=DEVICE)
    fn = solution("top_p_renorm_probs_v128256")
    for p in (1.0, torch.tensor([1.0], device=DEVICE)):
        got = fn(x, p)
        assert torch.equal(got != 0, x != 0), f"p={p} dropped values: {got.tolist()}"
        torch.testing.assert_close(got, x / x.sum(), rtol=1e-6, atol=0)


def _enable(definition):
    folder = catalog_folder(definition)
    fita.enable_apply({definition: fita.load_solutions(folder)[definition]},
                      definitions={definition: fita.load_definitions(folder)[definition]})


def test_routed_top_k_through_flashinfer_keeps_the_callers_dtype():
    torch.manual_seed(2)
    definition = "top_k_renorm_probs_v128256"
    x = probs(1, 128256, torch.bfloat16, sharpness=6.0)
    k = torch.tensor([40], dtype=torch.int64, device=DEVICE)  # SGLang passes a per-row tensor
    _enable(definition)
    got = flashinfer.sampling.top_k_renorm_probs(x, k)
    assert fita.stats()["flashinfer.sampling.top_k_renorm_probs"]["hit"] == 1
    assert got.dtype == torch.bfloat16
    want = reference(definition)(x, k)
    assert torch.equal(got != 0, want != 0)
    torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-6)


def test_routed_top_p_through_flashinfer_in_float32_only():
    torch.manual_seed(3)
    definition = "top_p_renorm_probs_v128256"
    x = probs(1, 128256, sharpness=6.0)
    _enable(definition)
    got = flashinfer.sampling.top_p_renorm_probs(x, 0.9, is_deterministic=True)
    assert fita.stats()["flashinfer.sampling.top_p_renorm_probs"]["hit"] == 1
    want = reference(definition)(x, 0.9)
    assert torch.equal(got != 0, want != 0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
