"""Our definition name for a call equals FlashInfer's own collector's
(``api.fi_trace(**arguments)["name"]``) for every registered free-function
API whose template ``init`` builds inputs on CPU.

Two levels: the exact (slow) path of every such API, and the generated fast
path end to end: each name is registered to a solution that raises a marker
exception, so a call proves which name it was routed by.
"""

from __future__ import annotations

import inspect
import warnings

import pytest

import flashinfer  # noqa: F401 - fills the trace registry
from flashinfer_trace_apply.dispatch import ApiRoute, RoutingContext
from flashinfer_trace_apply.registry import discover_apis

pytestmark = pytest.mark.release  # the naming rule and axis sources differ across releases


class Routed(Exception):
    def __init__(self, name):
        super().__init__(name)
        self.name = name


def _init_inputs(template):
    init = template.init
    kwargs = {}
    for p in inspect.signature(init).parameters.values():
        if p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            kwargs[p.name] = 3
    kwargs["device"] = "cpu"
    return init(**kwargs)


def _cases():
    cases = []
    for spec in discover_apis():
        if spec.is_method or len(spec.templates) != 1 or spec.selector is not None:
            continue
        template = spec.templates[0]
        if template.init is None:
            continue
        cases.append(spec)
    return cases


CASES = _cases()


def _collect():
    """(spec, inputs, fi_trace name) for every API whose init runs on CPU."""
    out = []
    for spec in CASES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                inputs = _init_inputs(spec.templates[0])
                if not isinstance(inputs, dict) or "plan" in inputs:
                    continue
                # An init that leaves out a required argument is not a call
                # anyone can make; the interpreter rejects it before us.
                inspect.signature(spec.current).bind(**inputs)
                expected = spec.current.fi_trace(**inputs)["name"]
        except Exception:  # noqa: BLE001 - init needs CUDA or other hardware
            continue
        out.append((spec, inputs, expected))
    return out


COVERED = _collect()


def test_parity_covers_the_common_api_families():
    apis = {spec.fi_api for spec, _, _ in COVERED}
    print(f"parity covers {len(COVERED)} of {len(CASES)} single-template free-function APIs with an init")
    for must in (
        "flashinfer.norm.rmsnorm",
        "flashinfer.norm.fused_add_rmsnorm",
        "flashinfer.activation.silu_and_mul",
        "flashinfer.rope.apply_rope_with_cos_sin_cache_inplace",
        "flashinfer.cascade.merge_state",
        "flashinfer.sampling.top_k_top_p_sampling_from_probs",
    ):
        assert must in apis
    assert len(COVERED) >= 40


@pytest.mark.parametrize("spec,inputs,expected", COVERED, ids=[c[0].fi_api for c in COVERED])
def test_exact_path_name_matches_fi_trace(spec, inputs, expected):
    route = ApiRoute(spec, RoutingContext.plain({}))
    key = route.slow_key(**inputs)
    _, name = route.name_for(key)
    assert name == expected


def test_generated_fast_path_routes_by_the_fi_trace_name():
    import flashinfer_trace_apply as fita

    def marker(name):
        def solution(**_kwargs):
            raise Routed(name)

        return solution

    mapping = {expected: marker(expected) for _, _, expected in COVERED}
    fita.enable_apply(mapping)
    checked = 0
    for spec, inputs, expected in COVERED:
        public = getattr(spec.owner, spec.attr)
        if not hasattr(public, "__fita_route__"):
            continue  # not routable (e.g. in-place without write-back target)
        with pytest.raises(Routed) as info:
            public(**inputs)
        assert info.value.name == expected, spec.fi_api
        checked += 1
    print(f"fast path routed {checked} APIs by their fi_trace name")
    assert checked >= 30
