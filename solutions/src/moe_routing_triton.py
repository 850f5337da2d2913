"""DeepSeek-V3 MoE routing in Triton: FlashInfer's ``fused_topk_deepseek``
(grouped top-k over sigmoid scores with a correction bias, no auxiliary loss).

Source of the bundled ``fused_topk_deepseek_e*_k*`` solutions
(scripts/build_solutions.py embeds this file in one Solution JSON per
definition).

What FlashInfer's kernel computes (noAuxTcKernels.cu,
``deepseek_v3_topk_kernel``), per token, all in fp32, and what this one
repeats step for step:

1. ``s = sigmoid(scores)`` as ``0.5 * tanhf(0.5 * x) + 0.5``; ``b = s + bias``.
2. Each of the ``n_group`` groups of consecutive experts scores the sum of
   its two largest ``b`` (largest first).
3. The ``topk_group`` best groups are kept; the ``topk`` largest ``b`` among
   their experts are chosen, largest first. Every ranking breaks ties
   towards the lower index (FlashInfer packs ``65535 - index`` under the
   value).
4. ``topk_values = s / (sum of the chosen s + 1e-20) * routed_scaling_factor``
   with the last two steps in double precision (the factor is a C++
   double), then ``topk_values``' dtype (here through fp32: a bf16 or fp16
   weight may differ by one ulp in a rare double-rounding case);
   ``topk_indices`` the chosen experts (int32), and ``routing_replay_out``
   (int16) when given.

One difference, outside DeepSeek-V3's configuration: FlashInfer's kernel
keeps at most 4 groups whatever ``topk_group`` is (it accepts up to 8 when
groups hold 16 experts); this one keeps ``topk_group``, as FlashInfer's
documentation and reference say.

One program routes one token: its scores are loaded as an (n_group x
experts per group) tile, group and expert rankings are repeated
arg-max reductions with the lower index winning ties, and the chosen
experts' scores are re-read from memory for the weights. ``n_group = 1``
(no grouping) is the same code with one group. The outputs are written into
the caller's ``topk_values`` / ``topk_indices`` in place, FlashInfer's
convention; the entry point returns those same tensors, so the plugin has
nothing to copy.

The routed scaling factor travels as two fp32 halves (Triton passes Python
floats as fp32) and is rebuilt in fp64 in the kernel. On an NVIDIA GPU the
sigmoid uses libdevice's ``tanhf`` as FlashInfer's does; under Triton's CPU
interpreter (no libdevice there) and on other backends ``tl.sigmoid``,
which may differ in the last bit.

Launches go through a ``_fast_launch.LaunchSite`` per set of constexprs (a
sibling source of every bundled Solution); under ``torch.compile`` the
standard launch, which Dynamo traces.
"""

import math
import os
import struct
import sys

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

# Siblings: relative when imported as a package (this plugin's loader and
# FlashInfer-Bench's builder do so), by plain name from the folder itself.
try:
    from ._fast_launch import FastLauncher
except ImportError:
    from _fast_launch import FastLauncher


# torch.compile: Dynamo must import the module of every function it inlines;
# a sibling file is importable only where the loader keeps it in sys.modules
# (this plugin's does, as a module of the solution's package; a plain-name
# import elsewhere may not), so the check lives here, the same lines in each kernel file.
_modules = sys.modules
_is_compiling = torch.compiler.is_compiling


def compiling() -> bool:
    """True while torch.compile (Dynamo) traces the caller. Without
    ``torch._dynamo`` imported nothing is being compiled, so an eager call
    pays one dict lookup; Dynamo folds ``is_compiling()`` to True."""
    return "torch._dynamo" in _modules and _is_compiling()


# The sigmoid's form, decided when the solution loads (see the docstring).
_INTERPRETING = os.environ.get("TRITON_INTERPRET", "").strip().lower() not in ("", "0", "false", "off", "no")
_TANH = not _INTERPRETING and torch.version.hip is None


@triton.jit
def _argmax_first(x, idx, big: tl.constexpr):
    """Index of the largest value of ``x`` (1-D), the lowest index of equal
    ones; ``idx`` holds each element's index, ``big`` exceeds them all."""
    best = tl.max(x, axis=0)
    return tl.min(tl.where(x == best, idx, big), axis=0)


@triton.jit
def _route_rows(
    scores_ptr, bias_ptr, values_ptr, indices_ptr, replay_ptr, scale_hi, scale_lo,
    E: tl.constexpr, NG: tl.constexpr, TOPK_GROUP: tl.constexpr, K: tl.constexpr, K_BLOCK: tl.constexpr,
    REPLAY: tl.constexpr, TANH: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    GS: tl.constexpr = E // NG
    groups = tl.arange(0, NG)
    experts = groups[:, None] * GS + tl.arange(0, GS)[None, :]  # (NG, GS): expert index
    x = tl.load(scores_ptr + row * E + experts).to(tl.float32)
    if TANH:
        s = 0.5 * libdevice.tanh(0.5 * x) + 0.5
    else:
        s = tl.sigmoid(x)
    b = s + tl.load(bias_ptr + experts).to(tl.float32)

    # Group scores: the largest biased score plus the next (one of equal
    # largest ones counts as the next).
    if NG > 1:
        first = tl.max(b, axis=1)
        at = tl.min(tl.where(b == first[:, None], experts, E), axis=1)
        second = tl.max(tl.where(experts == at[:, None], float("-inf"), b), axis=1)
        group_score = first + second
        keep = groups < 0
        for _ in tl.static_range(TOPK_GROUP):
            g = _argmax_first(tl.where(keep, float("-inf"), group_score), groups, NG)
            keep = keep | (groups == g)
        b = tl.where(keep[:, None], b, float("-inf"))

    # The topk largest biased scores among the kept groups, largest first.
    flat_b = tl.reshape(b, (E,))
    flat_idx = tl.reshape(experts, (E,))
    slots = tl.arange(0, K_BLOCK)
    chosen = tl.zeros((K_BLOCK,), dtype=tl.int32)
    for k in tl.static_range(K):
        j = _argmax_first(flat_b, flat_idx, E)
        chosen = tl.where(slots == k, j, chosen)
        flat_b = tl.where(flat_idx == j, float("-inf"), flat_b)

    # Weights from the chosen experts' unbiased sigmoid scores.
    live = slots < K
    xs = tl.load(scores_ptr + row * E + chosen, mask=live, other=0.0).to(tl.float32)
    if TANH:
        sk = 0.5 * libdevice.tanh(0.5 * xs) + 0.5
    else:
        sk = tl.sigmoid(xs)
    sk = tl.where(live, sk, 0.0)
    total = tl.sum(sk, axis=0)
    scale = (tl.zeros((K_BLOCK,), dtype=tl.float64) + scale_hi) + scale_lo
    w = sk.to(tl.float64) * scale / (total.to(tl.float64) + 1e-20)
    out = row * K + slots
    tl.store(values_ptr + out, w.to(tl.float32).to(values_ptr.dtype.element_ty), mask=live)
    tl.store(indices_ptr + out, chosen, mask=live)
    if REPLAY:
        tl.store(replay_ptr + out, chosen.to(tl.int16), mask=live)


_ROUTE_ROWS = FastLauncher(_route_rows)
_SITES = {}
_FLOATS = (torch.float32, torch.bfloat16, torch.float16)
_f32 = struct.Struct("f")


def _fixed(n_experts, n_group, topk_group, topk, replay):
    # 256 scores a token: 2 warps (4 values a thread) keep the reductions short.
    return dict(E=n_experts, NG=n_group, TOPK_GROUP=topk_group, K=topk, K_BLOCK=triton.next_power_of_2(topk),
                REPLAY=replay, TANH=_TANH, num_warps=2 if n_experts <= 256 else 4)


def _check(scores, bias, n_group, topk_group, topk, topk_values, topk_indices, routing_replay_out):
    """FlashInfer's argument checks (fused_routing_dsv3.py, NoAuxTc), raised
    as it raises them: ValueError for the configuration, the rest as its
    kernel refuses them."""
    if scores.dim() != 2:
        raise ValueError("scores must be a 2D Tensor")
    tokens, n = scores.shape
    if topk_group * n_group < topk or topk_group > n_group:
        raise ValueError(
            f"Invalid configuration: topk_group * n_group ({topk_group * n_group}) must be >= topk ({topk}) "
            f"and topk_group ({topk_group}) must be <= n_group ({n_group})")
    if n_group <= 0 or n % n_group:
        raise ValueError("num_experts should be divisible by n_group")
    if topk > 8:
        raise ValueError(f"Invalid configuration: topk ({topk}) must be <= 8")
    if n_group > 1:
        per_group = n // n_group
        if per_group > 32:
            raise ValueError(f"Invalid configuration for n_group > 1: num_experts / n_group ({per_group}) must be <= 32")
        if per_group * topk_group > 128:
            raise ValueError("Invalid configuration for n_group > 1: num_experts / n_group * topk_group "
                             f"({per_group * topk_group}) must be <= 128")
    elif n > 384:
        raise ValueError(f"Invalid configuration for n_group = 1: num_experts ({n}) must be <= 384")
    if n & (n - 1) or n_group & (n_group - 1):
        raise ValueError(f"this kernel takes a power-of-two num_experts and n_group, got {n} and {n_group}")
    for name, t in (("scores", scores), ("bias", bias), ("topk_values", topk_values), ("topk_indices", topk_indices),
                    ("routing_replay_out", routing_replay_out)):
        if t is not None and not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous, got strides {t.stride()}")
    if scores.dtype not in _FLOATS or bias.dtype not in _FLOATS:
        raise ValueError("Invalid dtype, only supports float16, float32, and bfloat16")
    if bias.dim() != 1 or bias.numel() != n:
        raise ValueError(f"bias must be 1D with length == number of experts ({n})")
    if tuple(topk_values.shape) != (tokens, topk) or tuple(topk_indices.shape) != (tokens, topk):
        raise ValueError(f"topk_values and topk_indices must have shape ({tokens}, {topk})")
    if topk_values.dtype != scores.dtype:
        raise ValueError("topk_values must have the same dtype as scores")
    if topk_indices.dtype != torch.int32:
        raise ValueError("topk_indices must be int32 dtype")
    if routing_replay_out is not None:
        if routing_replay_out.dtype != torch.int16:
            raise ValueError(f"routing_replay_out must be int16, got {routing_replay_out.dtype}")
        if routing_replay_out.dim() != 2 or routing_replay_out.shape[0] < tokens or routing_replay_out.shape[1] != topk:
            raise ValueError(f"routing_replay_out shape[0] must be >= {tokens} and shape[1] must be {topk}, "
                             f"got {tuple(routing_replay_out.shape)}")


_SCALES = {}


def _split(value):
    """``value`` (a C++ double in FlashInfer's kernel) as two fp32 halves
    whose fp64 sum is ``value`` to about 48 bits; remembered per value."""
    scale = float(value)
    try:
        hi = _f32.unpack(_f32.pack(scale))[0]
    except OverflowError:
        hi = scale
    lo = scale - hi if math.isfinite(scale) and math.isfinite(hi) else 0.0
    lo = _f32.unpack(_f32.pack(lo))[0]
    if len(_SCALES) < 64:
        _SCALES[value] = (hi, lo)
    return hi, lo


def fused_topk_deepseek(scores, bias, n_group, topk_group, topk, routed_scaling_factor,
                        topk_values=None, topk_indices=None, launch_with_pdl=True, routing_replay_out=None):
    """DeepSeek-V3 routing into the caller's ``topk_values`` (scores' dtype)
    and ``topk_indices`` (int32), in place, and ``routing_replay_out``
    (int16) when given; returns ``(topk_values, topk_indices)``. Without
    buffers (a value-returning caller) they are allocated.
    ``launch_with_pdl`` is a launch-overlap hint; this kernel launches
    without Programmatic Dependent Launch."""
    tokens = scores.shape[0]
    n_group, topk_group, topk = int(n_group), int(topk_group), int(topk)
    if topk_values is None:
        topk_values = scores.new_empty((tokens, topk))
    if topk_indices is None:
        topk_indices = torch.empty((tokens, topk), dtype=torch.int32, device=scores.device)
    _check(scores, bias, n_group, topk_group, topk, topk_values, topk_indices, routing_replay_out)
    if tokens == 0:
        return topk_values, topk_indices
    n = scores.shape[1]
    hi, lo = _SCALES.get(routed_scaling_factor) or _split(routed_scaling_factor)
    replay = routing_replay_out is not None
    args = (scores, bias, topk_values, topk_indices, routing_replay_out if replay else topk_indices, hi, lo)
    if compiling():
        _route_rows[(tokens, 1, 1)](*args, **_fixed(n, n_group, topk_group, topk, replay))
        return topk_values, topk_indices
    key = (n, n_group, topk_group, topk, replay)
    site = _SITES.get(key)
    if site is None:
        site = _SITES[key] = _ROUTE_ROWS.site("pppppff", **_fixed(*key))
    site.launch(tokens, 1, *args)
    return topk_values, topk_indices
