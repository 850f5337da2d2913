"""Top-k and top-p renormalization in Triton: FlashInfer's
``top_k_renorm_probs`` and ``top_p_renorm_probs``.

Source of the bundled ``top_k_renorm_probs_v*`` and ``top_p_renorm_probs_v*``
solutions (scripts/build_solutions.py embeds this file in one Solution JSON
per definition; the entry point picks the op).

What FlashInfer computes (0.7.2, topk.cuh and air_top_p.cuh), and so do we:

- top-k: the pivot is the k-th largest value of the row; every value
  ``>= pivot`` is kept (ties at the pivot included), the rest zeroed, and the
  kept values are multiplied by ``1 / max(sum kept, 1e-8)``. A ``k`` outside
  ``[1, vocab)`` keeps the whole row. The output has the input's dtype.
- top-p: the threshold is the largest value ``t`` such that the values
  ``>= t`` sum to at least ``p * (row sum)``; those are kept and multiplied by
  ``1 / sum kept`` (by 1 when that sum is at most 1e-8); ``p >= 1`` keeps the
  whole row. FlashInfer computes
  top-p in float32 (it casts the input), so the output is float32 whatever
  the input dtype.

``top_k`` / ``top_p`` may be a Python number or a per-row tensor (any integer
or floating dtype; read as int32 / float32 as FlashInfer does).

How. The threshold is found by a search over the float32 bit patterns of the
row (for non-negative floats the bit pattern, read as an integer, orders like
the value). Each round a grid of (row, chunk) programs counts, and sums, the
values at or above 32 pivots spread over the remaining range and writes one
partial per program; the next round's programs reduce the partials of all
chunks of their row in a fixed order, narrow the range to one of the 32
slices, and place the next pivots. Round 0 places its pivots at the powers of
two 2^1 ... 2^-30 (one float exponent per slice); each later round removes 5
bits, so 7 rounds always end on a single bit pattern (a round whose row has
already converged exits at once). A last launch turns the final partials into
the threshold and the kept sum and writes the renormalized row. Splitting a
row into chunks keeps the whole GPU busy at small batch; the row is read once
a round, from L2 at small batch.

Sums over different pivots are reduced in the same order, and float addition
rounds monotonically, so the kept mass never grows as the pivot rises: the
search cannot contradict itself.
"""

import sys

import torch
import triton
import triton.language as tl

try:
    from ._fast_launch import FastLauncher
except ImportError:
    from _fast_launch import FastLauncher


# torch.compile: Dynamo must import the module of every function it inlines;
# a sibling file is importable only where the loader keeps it in sys.modules,
# so the check lives here, the same lines in each kernel file.
_modules = sys.modules
_is_compiling = torch.compiler.is_compiling


def compiling() -> bool:
    """True while torch.compile (Dynamo) traces the caller."""
    return "torch._dynamo" in _modules and _is_compiling()


_PIVOTS = 32  # slices a round splits the range into (5 bits a round)
_ROUNDS = 7  # round 0 (exponents) + 6 rounds of 5 bits cover 2^30 patterns
_INF_BITS = tl.constexpr(0x7F800000)  # float32 +inf: no finite probability reaches it
_BLOCK = 256


@triton.jit
def _pivots(lo, hi, first, P: tl.constexpr):
    """Round 0 (``first``): 0, then 2^1, 2^0, ..., 2^-30 as float32 bit
    patterns; later rounds: lo and 31 pivots evenly spread over [lo, hi)."""
    j = tl.arange(0, P)
    span = (hi - lo).to(tl.int64)
    even = (lo + ((j.to(tl.int64) * span) // P)).to(tl.int32)
    return tl.where(first, tl.where(j == 0, 0, (128 - j) << 23), even)


@triton.jit
def _narrow(part_ptr, state_ptr, maxb_ptr, arr_ptr, value, row, rows, nchunks, vocab, r,
            HAS_ARR: tl.constexpr, TOP_K: tl.constexpr, CPAD: tl.constexpr, P: tl.constexpr):
    """(lo, hi, kept sum at lo, target) once round ``r``'s partials are in;
    r = -1: the range round 0 searches."""
    j = tl.arange(0, P)
    lo = tl.full((), 0, tl.int32)
    hi = tl.full((), _INF_BITS, tl.int32)
    kept = tl.full((), 0.0, tl.float32)
    target = tl.full((), 0.0, tl.float32)
    if r == 0:
        chunks = tl.arange(0, CPAD)
        maxb = tl.max(tl.load(maxb_ptr + row * CPAD + chunks, mask=chunks < nchunks, other=-1), axis=0)
        hi = tl.minimum(maxb + 1, _INF_BITS)
        if TOP_K:
            k = (value + tl.zeros((), tl.float32)).to(tl.int32)
            if HAS_ARR:
                k = tl.load(arr_ptr + row).to(tl.int32)
            k = tl.where((k < 1) | (k >= vocab), vocab, k)
            target = k.to(tl.float32)
    if r > 0:
        st = state_ptr + (r * rows + row) * 4
        lo = tl.load(st)
        hi = tl.load(st + 1)
        kept = tl.load(st + 2).to(tl.float32, bitcast=True)
        target = tl.load(st + 3).to(tl.float32, bitcast=True)
    if (r >= 0) & (hi - lo > 1):
        chunk_col = tl.arange(0, CPAD)[:, None]
        base = part_ptr + ((r * rows + row) * CPAD + chunk_col) * (2 * P) + j[None, :]
        sums = tl.sum(tl.load(base, mask=chunk_col < nchunks, other=0.0), axis=0)
        reached = sums >= target
        if TOP_K:
            counts = tl.sum(tl.load(base + P, mask=chunk_col < nchunks, other=0.0), axis=0)
            reached = counts >= target
        else:
            if r == 0:
                p = value + tl.zeros((), tl.float32)
                if HAS_ARR:
                    p = tl.load(arr_ptr + row).to(tl.float32)
                # the row sum is the partial at pivot 0 (every value is >= 0).
                # p >= 1 keeps the whole row, as FlashInfer does: an unreachable
                # target leaves lo at 0 (values too small to move the float sum
                # would otherwise fall below a pivot that still "reaches" it)
                target = tl.where(p < 1.0, p * tl.sum(tl.where(j == 0, sums, 0.0), axis=0), float("inf"))
                reached = sums >= target
        piv = _pivots(lo, hi, r == 0, P)
        ok = reached & (piv < hi)
        new_lo = tl.max(tl.where(ok, piv, lo), axis=0)
        new_hi = tl.min(tl.where(ok, hi, piv), axis=0)
        # pivot 0 is lo itself, so the kept sum at new_lo is among the partials
        kept = tl.max(tl.where(piv == new_lo, sums, -1.0), axis=0)
        lo = new_lo
        hi = tl.minimum(new_hi, hi)
    return lo, hi, kept, target


@triton.jit
def _renorm_round(x_ptr, x_stride, arr_ptr, value, part_ptr, state_ptr, maxb_ptr,
                  rows, vocab, chunk_len, nchunks, r,
                  HAS_ARR: tl.constexpr, TOP_K: tl.constexpr, CPAD: tl.constexpr,
                  P: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    lo, hi, kept, target = _narrow(part_ptr, state_ptr, maxb_ptr, arr_ptr, value, row, rows, nchunks,
                                   vocab, r - 1, HAS_ARR, TOP_K, CPAD, P)
    if r > 0:
        if chunk == 0:
            st = state_ptr + (r * rows + row) * 4
            tl.store(st, lo)
            tl.store(st + 1, hi)
            tl.store(st + 2, kept.to(tl.int32, bitcast=True))
            tl.store(st + 3, target.to(tl.int32, bitcast=True))
    if hi - lo > 1:
        piv = _pivots(lo, hi, r == 0, P)
        acc_s = tl.zeros((BLOCK, P), dtype=tl.float32)
        acc_c = tl.zeros((BLOCK, P), dtype=tl.float32)
        top = tl.full((BLOCK,), -1, dtype=tl.int32)
        start = chunk * chunk_len
        x_row = x_ptr + row.to(tl.int64) * x_stride
        for off in range(start, start + chunk_len, BLOCK):
            cols = off + tl.arange(0, BLOCK)
            x = tl.load(x_row + cols, mask=cols < vocab, other=-1.0).to(tl.float32)
            bits = x.to(tl.int32, bitcast=True)
            above = bits[:, None] >= piv[None, :]
            acc_s += tl.where(above, x[:, None], 0.0)
            if TOP_K:
                acc_c += above.to(tl.float32)
            if r == 0:
                top = tl.maximum(top, bits)
        out = part_ptr + ((r * rows + row) * CPAD + chunk) * (2 * P) + tl.arange(0, P)
        tl.store(out, tl.sum(acc_s, axis=0))
        if TOP_K:
            tl.store(out + P, tl.sum(acc_c, axis=0))
        if r == 0:
            tl.store(maxb_ptr + row * CPAD + chunk, tl.max(top, axis=0))


@triton.jit
def _renorm_apply(x_ptr, x_stride, y_ptr, y_stride, arr_ptr, value, part_ptr, state_ptr, maxb_ptr,
                  rows, vocab, chunk_len, nchunks, r,
                  HAS_ARR: tl.constexpr, TOP_K: tl.constexpr, CPAD: tl.constexpr,
                  P: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    lo, hi, kept, target = _narrow(part_ptr, state_ptr, maxb_ptr, arr_ptr, value, row, rows, nchunks,
                                   vocab, r, HAS_ARR, TOP_K, CPAD, P)
    if TOP_K:
        scale = 1.0 / tl.maximum(kept, 1e-8)
    else:
        scale = tl.where(kept > 1e-8, 1.0 / kept, 1.0)
    start = chunk * chunk_len
    x_row = x_ptr + row.to(tl.int64) * x_stride
    y_row = y_ptr + row.to(tl.int64) * y_stride
    for off in range(start, start + chunk_len, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        mask = cols < vocab
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        keep = x.to(tl.int32, bitcast=True) >= lo
        tl.store(y_row + cols, tl.where(keep, x * scale, 0.0).to(y_ptr.dtype.element_ty), mask=mask)


_ROUND = FastLauncher(_renorm_round)
_APPLY = FastLauncher(_renorm_apply)
_ROUND_SITES = {}
_APPLY_SITES = {}
_SMS = {}
_MAX_CHUNKS = 64
_MIN_CHUNK = 2048


def _chunks(rows, vocab, device):
    """Programs per row: enough for about two per SM over the batch, each
    reading at least _MIN_CHUNK values."""
    if device.type != "cuda":
        return min(4, triton.cdiv(vocab, _MIN_CHUNK))  # the interpreter: a few, to exercise the split
    sms = _SMS.get(device.index)
    if sms is None:
        sms = _SMS[device.index] = torch.cuda.get_device_properties(device).multi_processor_count
    want = triton.cdiv(2 * sms, rows)
    return max(1, min(want, _MAX_CHUNKS, triton.cdiv(vocab, _MIN_CHUNK)))


def _renorm(probs, param, top_k, out_dtype):
    if probs.dim() != 2:
        raise ValueError(f"probs must be 2-D (batch_size, vocab_size), got shape {tuple(probs.shape)}")
    if probs.stride(1) != 1:
        probs = probs.contiguous()
    rows, vocab = probs.shape
    out = torch.empty((rows, vocab), dtype=out_dtype, device=probs.device)
    if rows == 0 or vocab == 0:
        return out
    if isinstance(param, torch.Tensor):
        if param.numel() != rows:
            raise ValueError(f"a per-row {'top_k' if top_k else 'top_p'} needs {rows} values, got {param.numel()}")
        arr = param.reshape(-1).to(device=probs.device, dtype=torch.int32 if top_k else torch.float32).contiguous()
        value = 0.0
    else:
        arr, value = probs, float(param)  # arr unused (HAS_ARR false)
    has_arr = isinstance(param, torch.Tensor)
    nchunks = _chunks(rows, vocab, probs.device)
    chunk_len = triton.cdiv(triton.cdiv(vocab, nchunks), _BLOCK) * _BLOCK
    nchunks = triton.cdiv(vocab, chunk_len)
    cpad = triton.next_power_of_2(nchunks)
    part = torch.empty(_ROUNDS * rows * cpad * 2 * _PIVOTS, dtype=torch.float32, device=probs.device)
    state = torch.empty(_ROUNDS * rows * 4, dtype=torch.int32, device=probs.device)
    maxb = torch.empty(rows * cpad, dtype=torch.int32, device=probs.device)
    fixed = dict(HAS_ARR=has_arr, TOP_K=top_k, CPAD=cpad, P=_PIVOTS, BLOCK=_BLOCK, num_warps=4)
    tail = (rows, vocab, chunk_len, nchunks)
    if compiling():
        for r in range(_ROUNDS):
            _renorm_round[(rows, nchunks)](probs, probs.stride(0), arr, value, part, state, maxb, *tail, r, **fixed)
        _renorm_apply[(rows, nchunks)](probs, probs.stride(0), out, out.stride(0), arr, value, part, state, maxb,
                                        *tail, _ROUNDS - 1, **fixed)
        return out
    key = (has_arr, top_k, cpad)
    site = _ROUND_SITES.get(key)
    if site is None:
        site = _ROUND_SITES[key] = _ROUND.site("pipfpppiiiii", **fixed)
    for r in range(_ROUNDS):
        site.launch(rows, nchunks, probs, probs.stride(0), arr, value, part, state, maxb, *tail, r)
    apply = _APPLY_SITES.get(key)
    if apply is None:
        apply = _APPLY_SITES[key] = _APPLY.site("pipipfpppiiiii", **fixed)
    apply.launch(rows, nchunks, probs, probs.stride(0), out, out.stride(0), arr, value, part, state, maxb,
                 *tail, _ROUNDS - 1)
    return out


def top_k_renorm_probs(probs, top_k, is_deterministic=False):
    """Keep each row's values ``>=`` its k-th largest, renormalized; the
    output has the input's dtype. The sums are reduced in a fixed order, so
    the result is deterministic with or without ``is_deterministic``."""
    return _renorm(probs, top_k, True, probs.dtype)


def top_p_renorm_probs(probs, top_p, is_deterministic=False):
    """Keep each row's largest values whose sum reaches ``top_p`` times the
    row sum, renormalized, in float32 (as FlashInfer returns it). The sums
    are reduced in a fixed order, so the result is deterministic with or
    without ``is_deterministic``."""
    return _renorm(probs, top_p, False, torch.float32)
