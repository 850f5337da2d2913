"""The original receives exactly the caller's arguments when a call is not
routed, for every FlashInfer API with more than 30 parameters (their
forwarded call leaves out trailing parameters that hold their defaults)."""

from __future__ import annotations

import inspect
import random

import pytest

import flashinfer  # noqa: F401 - fills FlashInfer's trace registry
from flashinfer_trace_apply.codegen import ENTRY_ARGS, PREFIX, CallShape, compile_function
from flashinfer_trace_apply.registry import discover_apis

WIDE = [spec for spec in discover_apis() if len(inspect.signature(spec.current).parameters) > ENTRY_ARGS]


def test_flashinfer_has_apis_wide_enough_to_take_the_short_forward():
    assert any(spec.fi_api.endswith("trtllm_batch_decode_with_kv_cache") for spec in WIDE), [s.fi_api for s in WIDE]


def _forwarder(signature: inspect.Signature, received: list):
    """A function with ``signature`` whose body is the generated forward to
    a callee that records what it was given, bound to ``signature``."""
    shape = CallShape(signature)

    def callee(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        received.append(bound.arguments)

    lines, names = shape.return_call(f"{PREFIX}callee")
    source = f"def forward({shape.header(with_defaults=True)}):\n" + "".join(f"    {line}\n" for line in lines)
    return compile_function("forward", source, {**names, f"{PREFIX}callee": callee, f"{PREFIX}dflt": shape.defaults}, "<test>")


@pytest.mark.parametrize("spec", WIDE, ids=[s.fi_api for s in WIDE])
def test_the_forward_passes_every_argument_the_caller_set(spec):
    signature = inspect.signature(spec.current)
    received: list = []
    forward = _forwarder(signature, received)
    params = list(signature.parameters.values())
    required = [p for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    optional = [p for p in params if p.default is not p.empty]
    rng = random.Random(spec.fi_api)
    # No optional argument, each single one (the last ones decide the short
    # form), and random subsets, set to objects no default can be.
    subsets = [[]] + [[p] for p in optional] + [rng.sample(optional, k) for k in (2, 5, len(optional))]
    for subset in subsets:
        kwargs = {p.name: object() for p in required}
        kwargs.update({p.name: object() for p in subset})
        forward(**kwargs)
        expected = signature.bind(**kwargs)
        expected.apply_defaults()
        got = received.pop()
        assert list(got) == list(expected.arguments)
        assert all(got[name] is value for name, value in expected.arguments.items()), [p.name for p in subset]
