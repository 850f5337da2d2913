"""RoPE with a precomputed cos/sin cache, in place, in Triton.

Source of the bundled ``rope_cos_sin_cache_inplace_d*`` solutions (the
definitions behind ``flashinfer.apply_rope_with_cos_sin_cache_inplace``;
scripts/build_solutions.py embeds this file in one Solution JSON per head
size).

``cos_sin_cache[pos]`` holds ``rotary_dim // 2`` cosines then as many sines.
The first ``rotary_dim`` channels of every query and key head are rotated:
pairs ``(i, i + rotary_dim/2)`` when ``is_neox`` (half split), pairs
``(2i, 2i+1)`` otherwise (interleaved); the remaining channels are left
untouched. One launch covers query and key: the grid is tokens x head tiles,
the first tiles are query heads and the rest key heads; every program loads
its token's cos/sin once and rotates a tile of heads (interleaved pairs are
loaded contiguously and split in registers). Arithmetic is fp32.
``query``/``key`` are ``(nnz, heads * head_size)`` or ``(nnz, heads,
head_size)``; rows may be slices of a wider buffer (a fused QKV projection),
addressed by their stride and written where they are. Returns ``(query,
key)``, the same tensors, updated.

Launches go through a ``_fast_launch.LaunchSite`` per set of constexprs (a
sibling source of every bundled Solution): after a specialization has been
launched and checked the standard way, it is launched directly, skipping
Triton's per-call overhead; under ``torch.compile`` the standard launch,
which Dynamo traces.
"""

import sys

import torch
import triton
import triton.language as tl
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


@triton.jit
def _rotate_heads(
    base, head_stride, first_head, num_heads, cos, sin,
    HALF: tl.constexpr, HALF_P2: tl.constexpr, HB: tl.constexpr, NEOX: tl.constexpr,
):
    heads = first_head + tl.arange(0, HB)
    rows = base + heads.to(tl.int64)[:, None] * head_stride
    if NEOX:
        # pairs (i, i + HALF): two contiguous halves
        i = tl.arange(0, HALF_P2)
        mask = (heads < num_heads)[:, None] & (i < HALF)[None, :]
        p1 = rows + i[None, :]
        p2 = p1 + HALF
        x1 = tl.load(p1, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(p2, mask=mask, other=0.0).to(tl.float32)
        o1 = x1 * cos[None, :] - x2 * sin[None, :]
        o2 = x2 * cos[None, :] + x1 * sin[None, :]
        tl.store(p1, o1.to(base.dtype.element_ty), mask=mask)
        tl.store(p2, o2.to(base.dtype.element_ty), mask=mask)
    else:
        # pairs (2i, 2i + 1): one contiguous load, split into even and odd
        c = tl.arange(0, 2 * HALF_P2)
        mask = (heads < num_heads)[:, None] & (c < 2 * HALF)[None, :]
        p = rows + c[None, :]
        x = tl.load(p, mask=mask, other=0.0).to(tl.float32)
        x1, x2 = tl.split(tl.reshape(x, [HB, HALF_P2, 2]))
        o1 = x1 * cos[None, :] - x2 * sin[None, :]
        o2 = x2 * cos[None, :] + x1 * sin[None, :]
        o = tl.reshape(tl.join(o1, o2), [HB, 2 * HALF_P2])
        tl.store(p, o.to(base.dtype.element_ty), mask=mask)


@triton.jit
def _rope_inplace(
    q_ptr, k_ptr, cache_ptr, pos_ptr,
    q_token, q_head, k_token, k_head, cache_row,
    num_q_heads, num_k_heads, q_tiles,
    HALF: tl.constexpr, HALF_P2: tl.constexpr, HB: tl.constexpr, NEOX: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    pos = tl.load(pos_ptr + token).to(tl.int64)
    i = tl.arange(0, HALF_P2)
    cache = cache_ptr + pos * cache_row
    cos = tl.load(cache + i, mask=i < HALF, other=0.0).to(tl.float32)
    sin = tl.load(cache + HALF + i, mask=i < HALF, other=0.0).to(tl.float32)
    if tile < q_tiles:
        _rotate_heads(q_ptr + token * q_token, q_head, tile * HB, num_q_heads, cos, sin, HALF, HALF_P2, HB, NEOX)
    else:
        _rotate_heads(k_ptr + token * k_token, k_head, (tile - q_tiles) * HB, num_k_heads, cos, sin, HALF, HALF_P2, HB, NEOX)


_ROPE_INPLACE = FastLauncher(_rope_inplace)
_SITES = {}  # (half, neox) -> (LaunchSite, heads per tile)


def _fixed(half, neox):
    """Constexprs and launch options for ``half`` rotated pairs a head."""
    half_p2 = triton.next_power_of_2(half)
    hb = max(1, 512 // half_p2)  # 2 warps, 8 channels a thread in each half: 16-byte accesses
    return dict(HALF=half, HALF_P2=half_p2, HB=hb, NEOX=neox, num_warps=2)


def _site(half, neox):
    found = _SITES.get((half, neox))
    if found is None:
        fixed = _fixed(half, neox)
        found = _SITES[half, neox] = (_ROPE_INPLACE.site("ppppiiiiiiii", **fixed), fixed["HB"])
    return found


def _standard_launch(half, neox):
    """(launch, heads per tile) for the standard launch, which Dynamo traces
    under torch.compile."""
    fixed = _fixed(half, neox)
    return (lambda grid_x, grid_y, *args: _rope_inplace[(grid_x, grid_y, 1)](*args, **fixed)), fixed["HB"]


def _heads(t, head_size):
    """(token stride, head stride, heads) of ``t`` addressed in place, or None."""
    if t.stride(-1) != 1:
        return None
    if t.dim() == 2 and t.shape[1] % head_size == 0:
        return t.stride(0), head_size, t.shape[1] // head_size
    if t.dim() == 3 and t.shape[2] == head_size:
        return t.stride(0), t.stride(1), t.shape[1]
    return None


def rope_cos_sin_cache_inplace(positions, query, key, head_size, cos_sin_cache, is_neox=True):
    """Rotate ``query`` and ``key`` in place; returns ``(query, key)``."""
    nnz = positions.shape[0]
    rotary_dim = cos_sin_cache.shape[-1]
    if nnz == 0 or rotary_dim == 0:
        return query, key
    q, k = query, key
    ql, kl = _heads(q, head_size), _heads(k, head_size)
    if ql is None:
        q = query.contiguous().view(nnz, -1)
        ql = _heads(q, head_size)
    if kl is None:
        k = key.contiguous().view(nnz, -1)
        kl = _heads(k, head_size)
    cache = cos_sin_cache if cos_sin_cache.stride(-1) == 1 else cos_sin_cache.contiguous()
    pos = positions if positions.is_contiguous() else positions.contiguous()
    if compiling():
        launch, hb = _standard_launch(rotary_dim // 2, bool(is_neox))
    else:
        site, hb = _site(rotary_dim // 2, bool(is_neox))
        launch = site.launch
    q_tiles = -(-ql[2] // hb)
    launch(
        nnz, q_tiles - (-kl[2] // hb),
        q, k, cache, pos,
        ql[0], ql[1], kl[0], kl[1], cache.stride(0),
        ql[2], kl[2], q_tiles,
    )
    if q is not query:
        query.copy_(q.view(query.shape))
    if k is not key:
        key.copy_(k.view(key.shape))
    return query, key
