"""RMSNorm family in Triton: rmsnorm, fused_add_rmsnorm and their Gemma
variants (weight + 1), one kernel for all four; rmsnorm_quant and
fused_add_rmsnorm_quant (FP8 output, static per-tensor scale) in a second.

Source of the bundled ``rmsnorm_h*``, ``fused_add_rmsnorm_h*``,
``gemma_rmsnorm_h*``, ``gemma_fused_add_rmsnorm_h*``, ``rmsnorm_quant_h*``
and ``fused_add_rmsnorm_quant_h*`` solutions
(scripts/build_solutions.py embeds this file in one Solution JSON per
definition; the entry point picks the op).

One program normalizes one row held in registers; all arithmetic is fp32 and
only the stores round to the tensor's dtype. A power-of-two row length needs
no mask (a compile-time flag); hidden sizes with the same power-of-two tile
share one compiled kernel. Rows are addressed through strides: a 2-D tensor by its row stride, a
3-D one (tokens x heads x head_dim, as in QK-norm) by both leading strides, so
row slices of a wider buffer are read and written where they are, without a
copy. The fused variants write the sum back into ``residual`` and the
normalized rows into ``hidden_states`` in place (FlashInfer's convention) and
return those same tensors, so the plugin has nothing left to copy.

Launches go through a ``_fast_launch.LaunchSite`` per set of constexprs (a
sibling source of every bundled Solution): after a specialization has been
launched and checked the standard way, it is launched directly, skipping
Triton's per-call overhead. Under ``torch.compile`` the entry points launch
the standard way (``_rmsnorm_rows[grid](...)``), which Dynamo puts in the
graph.
"""

import os
import sys

import torch
import triton

# Every entry point takes FlashInfer's enable_pdl= and ignores it: Programmatic
# Dependent Launch is a launch-overlap hint, and these kernels launch without it.
import triton.language as tl
# Siblings: relative when imported as a package (this plugin's loader and
# FlashInfer-Bench's builder do so), by plain name from the folder itself.
try:
    from ._rows import row_layout
    from ._fast_launch import FastLauncher
except ImportError:
    from _rows import row_layout
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
def _rmsnorm_rows(
    a_ptr, b_ptr, w_ptr,
    a_outer, a_inner, b_outer, b_inner, inner,
    n_cols, eps,
    BLOCK: tl.constexpr, EVEN: tl.constexpr, W_OFFSET: tl.constexpr, ADD: tl.constexpr,
):
    # Plain (ADD false): a is the input, b the output. Fused (ADD true): a is
    # hidden_states, b the residual; b gets the sum, a the normalized rows.
    row = tl.program_id(0).to(tl.int64)
    o = row // inner
    i = row % inner
    cols = tl.arange(0, BLOCK)
    a_row = a_ptr + o * a_outer + i * a_inner
    b_row = b_ptr + o * b_outer + i * b_inner
    if EVEN:
        x = tl.load(a_row + cols).to(tl.float32)
        if ADD:
            x += tl.load(b_row + cols).to(tl.float32)
            tl.store(b_row + cols, x.to(b_ptr.dtype.element_ty))
        w = tl.load(w_ptr + cols).to(tl.float32) + W_OFFSET
    else:
        mask = cols < n_cols
        x = tl.load(a_row + cols, mask=mask, other=0.0).to(tl.float32)
        if ADD:
            x += tl.load(b_row + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(b_row + cols, x.to(b_ptr.dtype.element_ty), mask=mask)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32) + W_OFFSET
    inv_rms = tl.math.rsqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    y = x * inv_rms * w
    if ADD:
        out_row = a_row
        y = y.to(a_ptr.dtype.element_ty)
    else:
        out_row = b_row
        y = y.to(b_ptr.dtype.element_ty)
    if EVEN:
        tl.store(out_row + cols, y)
    else:
        tl.store(out_row + cols, y, mask=mask)


_RMSNORM_ROWS = FastLauncher(_rmsnorm_rows)
_empty_like = torch.empty_like
_MANY_ROWS = 256  # above this many rows the GPU is full and the kernel is bandwidth-bound


def _warps(n, many_rows):
    """Warps per row. Bandwidth-bound (many rows): about 16 elements a thread
    (n // 512 warps, rounded down to a power of two); latency-bound (few
    rows): 8 warps up to 4096 wide (fewer below 2048, keeping at least 8
    elements, one 16-byte access, a thread), 16 beyond, so each thread's
    share of a row stays small. Measured on an H100 with
    scripts/sweep_kernel_configs.py (docs/benchmarks.md)."""
    if not many_rows:
        return max(1, min(8, triton.next_power_of_2(n) // 256)) if n <= 4096 else 16
    warps = 1
    while warps * 2 <= min(16, n // 512):
        warps *= 2
    return warps


class _Op:
    """One of the four entry points' kernel settings, and its launch sites by
    row width: ``sites[n] = (site for few rows, site for many rows)``."""

    def __init__(self, w_offset, add):
        self.w_offset, self.add, self.sites = w_offset, add, {}

    def fixed(self, n, many):
        """Constexprs and launch options for rows of width ``n``."""
        block = triton.next_power_of_2(n)
        return dict(BLOCK=block, EVEN=block == n, W_OFFSET=self.w_offset, ADD=self.add,
                    num_warps=min(_warps(n, many), max(1, block // 32)))

    def new_sites(self, n):
        pair = self.sites[n] = tuple(_RMSNORM_ROWS.site("pppiiiiiif", **self.fixed(n, many)) for many in (False, True))
        return pair

    def standard(self, rows, n, *args):
        """The standard launch (what Dynamo traces under torch.compile)."""
        _rmsnorm_rows[(rows, 1, 1)](*args, **self.fixed(n, rows > _MANY_ROWS))


_RMSNORM, _GEMMA_RMSNORM = _Op(0.0, False), _Op(1.0, False)
_FUSED_ADD, _GEMMA_FUSED_ADD = _Op(0.0, True), _Op(1.0, True)


def _launch_any(x, residual, weight, y, eps, op):
    """Any layout: rows addressed by (outer, inner) strides, or contiguous copies."""
    n = x.shape[-1]
    rows = x.numel() // n if n else 0
    if rows == 0:
        return
    if op.add and residual.shape != x.shape:
        raise ValueError(f"residual shape {tuple(residual.shape)} differs from hidden_states {tuple(x.shape)}")
    if weight.stride(0) != 1:
        weight = weight.contiguous()
    b = residual if op.add else y
    al, bl = row_layout(x), row_layout(b)
    if al is None or bl is None or al[1] != bl[1]:
        # Rows not addressable by (outer, inner) strides: work on contiguous
        # copies and write the results back into the caller's tensors.
        xc = x.contiguous()
        bc = b.contiguous() if op.add else torch.empty(x.shape, dtype=y.dtype, device=y.device)
        _launch_any(xc.view(-1, n), bc.view(-1, n) if op.add else None, weight,
                    xc.view(-1, n) if op.add else bc.view(-1, n), eps, op)
        if xc is not x and op.add:
            x.copy_(xc)
        if bc is not b:
            b.copy_(bc)
        return
    if compiling():
        op.standard(rows, n, x, b, weight, al[0], al[2], bl[0], bl[2], al[1], n, eps)
        return
    sites = op.sites.get(n) or op.new_sites(n)
    sites[rows > _MANY_ROWS].launch(rows, 1, x, b, weight, al[0], al[2], bl[0], bl[2], al[1], n, eps)


def _output(x, out):
    """The caller's out= buffer when it fits (rows are addressed by stride),
    else a fresh tensor laid out as FlashInfer's (``empty_like``)."""
    if out is None or out.shape != x.shape or out.dtype is not x.dtype or out.get_device() != x.get_device():
        return torch.empty_like(x)
    return out


def _plain(op, name, doc):
    """The entry point of a plain op (rmsnorm, gemma_rmsnorm): the common
    case (2-D, unit column strides) decided and launched in its own frame,
    with as few tensor reads as it takes; any other layout in _launch_any."""
    sites, new_sites = op.sites, op.new_sites

    def entry(hidden_states, weight, eps=1e-6, out=None, enable_pdl=None):
        x = hidden_states
        shape = x.shape
        fresh = out is None
        out = _empty_like(x) if fresh else _output(x, out)
        if len(shape) == 2 and weight.is_contiguous():
            rows, n = shape
            a_outer, a_col = x.stride()
            # empty_like keeps a dense input's strides: nothing to read back.
            b_outer, b_col = (n, a_col) if fresh and a_outer == n else out.stride()
            if a_col == 1 and b_col == 1 and rows and n:
                if compiling():
                    op.standard(rows, n, x, out, weight, a_outer, 0, b_outer, 0, 1, n, float(eps))
                    return out
                pair = sites.get(n) or new_sites(n)
                pair[rows > _MANY_ROWS].launch(rows, 1, x, out, weight, a_outer, 0, b_outer, 0, 1, n, float(eps))
                return out
        _launch_any(x, None, weight, out, float(eps), op)
        return out

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = doc
    return entry


def _fused(op, name, doc):
    """The entry point of a fused op (fused_add_rmsnorm and its Gemma form),
    in place: the common case in its own frame, as in _plain."""
    sites, new_sites = op.sites, op.new_sites

    def entry(hidden_states, residual, weight, eps=1e-6, enable_pdl=None):
        shape = hidden_states.shape
        if len(shape) == 2 and residual.shape == shape and weight.is_contiguous():
            rows, n = shape
            a_outer, a_col = hidden_states.stride()
            b_outer, b_col = residual.stride()
            if a_col == 1 and b_col == 1 and rows and n:
                if compiling():
                    op.standard(rows, n, hidden_states, residual, weight, a_outer, 0, b_outer, 0, 1, n, float(eps))
                    return hidden_states, residual
                pair = sites.get(n) or new_sites(n)
                pair[rows > _MANY_ROWS].launch(rows, 1, hidden_states, residual, weight, a_outer, 0, b_outer, 0, 1, n,
                                               float(eps))
                return hidden_states, residual
        _launch_any(hidden_states, residual, weight, hidden_states, float(eps), op)
        return hidden_states, residual

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = doc
    return entry


rmsnorm = _plain(_RMSNORM, "rmsnorm", """``hidden_states / rms(hidden_states) * weight`` along the last axis.""")
gemma_rmsnorm = _plain(
    _GEMMA_RMSNORM, "gemma_rmsnorm", """Gemma's RMSNorm: ``hidden_states / rms(hidden_states) * (weight + 1)``.""")
fused_add_rmsnorm = _fused(
    _FUSED_ADD, "fused_add_rmsnorm",
    """``residual += hidden_states; hidden_states = rmsnorm(residual) * weight``,
    both in place (the sum is normalized before rounding); returns
    ``(hidden_states, residual)``.""")
gemma_fused_add_rmsnorm = _fused(
    _GEMMA_FUSED_ADD, "gemma_fused_add_rmsnorm", """As ``fused_add_rmsnorm`` with Gemma's ``(weight + 1)`` scale.""")


# ---------------------------------------------------------------------------
# RMSNorm + FP8 quantization (FlashInfer's rmsnorm_quant, fused_add_rmsnorm_quant).
# ---------------------------------------------------------------------------
# FlashInfer's kernels (norm.cuh, RMSNormQuantKernel and
# FusedAddRMSNormQuantKernel): out = clamp(x * rsqrt(mean(x^2) + eps) * w *
# (1 / scale), -max, max) cast to the fp8 dtype of ``out`` (round to nearest
# even), with x the fp32 sum in the fused form (the residual gets x rounded
# to its dtype; hidden_states is left as it was). The same order of fp32
# operations here.


@triton.jit
def _rmsnorm_quant_rows(
    x_ptr, r_ptr, w_ptr, o_ptr, s_ptr,
    x_stride, r_stride, o_stride, n_cols, eps,
    BLOCK: tl.constexpr, EVEN: tl.constexpr, ADD: tl.constexpr, FP8_MAX: tl.constexpr,
    ROUND_MANT: tl.constexpr, ROUND_EMIN: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    x_row = x_ptr + row * x_stride
    r_row = r_ptr + row * r_stride
    o_row = o_ptr + row * o_stride
    # The scale is read before the rows, as FlashInfer's kernel does; the
    # reciprocal waits until after the reduction.
    scale = tl.load(s_ptr)
    if EVEN:
        x = tl.load(x_row + cols).to(tl.float32)
        if ADD:
            x += tl.load(r_row + cols).to(tl.float32)
            tl.store(r_row + cols, x.to(r_ptr.dtype.element_ty))
        w = tl.load(w_ptr + cols).to(tl.float32)
    else:
        mask = cols < n_cols
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        if ADD:
            x += tl.load(r_row + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(r_row + cols, x.to(r_ptr.dtype.element_ty), mask=mask)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    inv_rms = tl.math.rsqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    y = x * inv_rms * w * (1.0 / scale)
    y = tl.minimum(tl.maximum(y, -FP8_MAX), FP8_MAX)
    if ROUND_MANT:
        # Under the interpreter only: its fp32 -> fp8 cast drops the carry
        # when rounding up the mantissa (31.8 becomes 16), so round to the
        # fp8 grid in fp32 first (to nearest even, via the 1.5 * 2^23 sum)
        # and the cast is exact. A GPU casts with cvt.rn.satfinite.
        bits = y.to(tl.int32, bitcast=True)
        exp = tl.maximum(((bits >> 23) & 0xFF) - 127, ROUND_EMIN)
        ulp = ((exp - ROUND_MANT + 127) << 23).to(tl.float32, bitcast=True)
        y = ((y / ulp + 12582912.0) - 12582912.0) * ulp
    y = y.to(o_ptr.dtype.element_ty)
    if EVEN:
        tl.store(o_row + cols, y)
    else:
        tl.store(o_row + cols, y, mask=mask)


_RMSNORM_QUANT_ROWS = FastLauncher(_rmsnorm_quant_rows)
# fp8 dtypes FlashInfer's kernels write: (largest finite value, mantissa bits,
# smallest normal exponent).
_FP8 = {torch.float8_e4m3fn: (448.0, 3, -6), torch.float8_e5m2: (57344.0, 2, -14)}
_QUANT_SITES = {}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() not in ("", "0", "false", "off", "no")


def _quant_fixed(n, add, out_dtype, many):
    block = triton.next_power_of_2(n)
    fp8_max, mant, emin = _FP8[out_dtype]
    exact = _interpreting()
    return dict(BLOCK=block, EVEN=block == n, ADD=add, FP8_MAX=fp8_max, ROUND_MANT=mant if exact else 0,
                ROUND_EMIN=emin if exact else 0, num_warps=min(_warps(n, many), max(1, block // 32)))


def _scale_tensor(scale, like):
    """The scale as FlashInfer's kernel reads it: one float32 on the input's
    device (a Python float is accepted, as FlashInfer still does)."""
    if not isinstance(scale, torch.Tensor):
        return torch.tensor([float(scale)], dtype=torch.float32, device=like.device)
    if scale.numel() != 1 or scale.dim() > 1:
        raise ValueError(f"scale must be a scalar tensor or shape (1,), got shape {tuple(scale.shape)}")
    if scale.device != like.device or scale.dtype is not torch.float32:
        scale = scale.to(device=like.device, dtype=torch.float32)
    return scale


def _quant_launch(x, residual, weight, scale, out, eps, add):
    n = x.shape[-1]
    if out.dtype not in _FP8:
        raise ValueError(f"out must be float8_e4m3fn or float8_e5m2 (FlashInfer's rmsnorm_quant), got {out.dtype}")
    if out.shape != x.shape or (add and residual.shape != x.shape):
        raise ValueError(f"out {tuple(out.shape)} / residual shapes differ from input {tuple(x.shape)}")
    rows = x.numel() // n if n else 0
    if rows == 0:
        return
    s = _scale_tensor(scale, x)
    if weight.stride(0) != 1:
        weight = weight.contiguous()
    b = residual if add else x
    if x.dim() != 2 or x.stride(1) != 1 or b.stride(-1) != 1 or b.dim() != 2 or out.dim() != 2 or out.stride(1) != 1:
        # Rows not addressable by one row stride: contiguous copies, written back.
        xc, oc = x.reshape(-1, n).contiguous(), torch.empty((rows, n), dtype=out.dtype, device=out.device)
        bc = residual.reshape(-1, n).contiguous() if add else xc
        _quant_launch(xc, bc, weight, s, oc, eps, add)
        out.copy_(oc.view(out.shape))
        if add:
            residual.copy_(bc.view(residual.shape))
        return
    args = (x, b, weight, out, s, x.stride(0), b.stride(0), out.stride(0), n, eps)
    many = rows > _MANY_ROWS
    if compiling():
        _rmsnorm_quant_rows[(rows, 1, 1)](*args, **_quant_fixed(n, add, out.dtype, many))
        return
    key = (n, add, out.dtype, many)
    site = _QUANT_SITES.get(key)
    if site is None:
        site = _QUANT_SITES[key] = _RMSNORM_QUANT_ROWS.site("pppppiiiif", **_quant_fixed(n, add, out.dtype, many))
    site.launch(rows, 1, *args)


def rmsnorm_quant(hidden_states, weight, scale, eps=1e-6, out=None, enable_pdl=None):
    """``clamp(rmsnorm(hidden_states) * weight / scale, fp8 range)`` cast to
    ``out``'s fp8 dtype, written into the caller's ``out`` (FlashInfer's
    convention; float8_e4m3fn allocated when there is none); returns it."""
    if out is None:
        out = torch.empty(hidden_states.shape, dtype=torch.float8_e4m3fn, device=hidden_states.device)
    _quant_launch(hidden_states, None, weight, scale, out, float(eps), False)
    return out


def fused_add_rmsnorm_quant(hidden_states, residual, weight, scale, eps=1e-6, out=None, enable_pdl=None):
    """``residual += hidden_states`` in place, then ``rmsnorm_quant`` of the
    fp32 sum into ``out`` (hidden_states is only read); returns
    ``(out, residual)``."""
    if out is None:
        out = torch.empty(hidden_states.shape, dtype=torch.float8_e4m3fn, device=hidden_states.device)
    _quant_launch(hidden_states, residual, weight, scale, out, float(eps), True)
    return out, residual
