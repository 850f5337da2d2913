"""RMSNorm family in Triton: rmsnorm, fused_add_rmsnorm and their Gemma
variants (weight + 1), one kernel for all four.

Source of the bundled ``rmsnorm_h*``, ``fused_add_rmsnorm_h*``,
``gemma_rmsnorm_h*`` and ``gemma_fused_add_rmsnorm_h*`` solutions
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
Triton's per-call overhead.
"""

import torch
import triton

# Every entry point takes FlashInfer's enable_pdl= and ignores it: Programmatic
# Dependent Launch is a launch-overlap hint, and these kernels launch without it.
import triton.language as tl
from _rows import row_layout
from _fast_launch import FastLauncher


@triton.jit
def _rmsnorm_rows(
    x_ptr, r_ptr, w_ptr, y_ptr,
    x_outer, x_inner, r_outer, r_inner, y_outer, y_inner, inner,
    n_cols, eps,
    BLOCK: tl.constexpr, EVEN: tl.constexpr, W_OFFSET: tl.constexpr, ADD: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    o = row // inner
    i = row % inner
    cols = tl.arange(0, BLOCK)
    x_row = x_ptr + o * x_outer + i * x_inner
    r_row = r_ptr + o * r_outer + i * r_inner
    y_row = y_ptr + o * y_outer + i * y_inner
    if EVEN:
        x = tl.load(x_row + cols).to(tl.float32)
        if ADD:
            x += tl.load(r_row + cols).to(tl.float32)
            tl.store(r_row + cols, x.to(r_ptr.dtype.element_ty))
        w = tl.load(w_ptr + cols).to(tl.float32) + W_OFFSET
    else:
        mask = cols < n_cols
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        if ADD:
            x += tl.load(r_row + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(r_row + cols, x.to(r_ptr.dtype.element_ty), mask=mask)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32) + W_OFFSET
    inv_rms = tl.math.rsqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    y = (x * inv_rms * w).to(y_ptr.dtype.element_ty)
    if EVEN:
        tl.store(y_row + cols, y)
    else:
        tl.store(y_row + cols, y, mask=mask)


_RMSNORM_ROWS = FastLauncher(_rmsnorm_rows)
_SITES = {}  # (n_cols, w_offset, add, many_rows) -> LaunchSite: the constexprs follow from these
_MANY_ROWS = 256  # above this many rows the GPU is full and the kernel is bandwidth-bound


def _warps(n, many_rows):
    """Warps per row. Bandwidth-bound (many rows): about 16 elements a thread
    (n // 512 warps, rounded down to a power of two); latency-bound (few
    rows): 8 warps up to 4096 wide, 16 beyond, so each thread's share of a
    row stays small. Measured on an H100 with scripts/sweep_kernel_configs.py
    (docs/benchmarks.md)."""
    if not many_rows:
        return 8 if n <= 4096 else 16
    warps = 1
    while warps * 2 <= min(16, n // 512):
        warps *= 2
    return warps


def _new_site(n, w_offset, add, many_rows):
    block = triton.next_power_of_2(n)
    site = _SITES[n, w_offset, add, many_rows] = _RMSNORM_ROWS.site(
        "ppppiiiiiiiif",
        BLOCK=block, EVEN=block == n, W_OFFSET=w_offset, ADD=add,
        num_warps=min(_warps(n, many_rows), max(1, block // 32)),
    )
    return site


def _launch(x, residual, weight, y, eps, w_offset):
    eps = float(eps)
    add = residual is not None
    if x.dim() == 2 and weight.stride(0) == 1:
        # The common case, decided with few reads: 2-D, unit column stride.
        rows, n = x.shape
        x_outer, x_col = x.stride()
        y_outer, y_col = y.stride()
        r_outer, r_col = residual.stride() if add else (0, 1)
        if x_col == 1 and y_col == 1 and r_col == 1:
            if rows and n:
                many = rows > _MANY_ROWS
                site = _SITES.get((n, w_offset, add, many)) or _new_site(n, w_offset, add, many)
                site.launch(
                    rows, 1, x, residual if add else x, weight, y,
                    x_outer, 0, r_outer, 0, y_outer, 0, 1, n, eps,
                )
            return
    _launch_any(x, residual, weight, y, eps, w_offset)


def _launch_any(x, residual, weight, y, eps, w_offset):
    """Any layout: rows addressed by (outer, inner) strides, or contiguous copies."""
    n = x.shape[-1]
    rows = x.numel() // n if n else 0
    if rows == 0:
        return
    if weight.stride(0) != 1:
        weight = weight.contiguous()
    xl, yl = row_layout(x), row_layout(y)
    rl = row_layout(residual) if residual is not None else (0, 1, 0)
    if xl is None or yl is None or rl is None or xl[1] != yl[1] or xl[1] != rl[1]:
        # Rows not addressable by (outer, inner) strides: work on contiguous
        # copies and write the results back into the caller's tensors.
        xc = x.contiguous()
        rc = residual.contiguous() if residual is not None else None
        yc = xc if y is x else torch.empty(x.shape, dtype=y.dtype, device=y.device)
        _launch_any(xc.view(-1, n), rc.view(-1, n) if rc is not None else None, weight, yc.view(-1, n), eps, w_offset)
        if rc is not None and rc is not residual:
            residual.copy_(rc)
        if yc is not y:
            y.copy_(yc)
        return
    add, many = residual is not None, rows > _MANY_ROWS
    (_SITES.get((n, w_offset, add, many)) or _new_site(n, w_offset, add, many)).launch(
        rows, 1, x, residual if residual is not None else x, weight, y,
        xl[0], xl[2], rl[0], rl[2], yl[0], yl[2], xl[1], n, eps,
    )


def _output(x, out):
    """The caller's out= buffer when it fits (rows are addressed by stride),
    else a fresh tensor laid out as FlashInfer's (``empty_like``)."""
    if out is None or out.shape != x.shape or out.dtype is not x.dtype or out.get_device() != x.get_device():
        return torch.empty_like(x)
    return out


def rmsnorm(hidden_states, weight, eps=1e-6, out=None, enable_pdl=None):
    """``hidden_states / rms(hidden_states) * weight`` along the last axis."""
    out = torch.empty_like(hidden_states) if out is None else _output(hidden_states, out)
    _launch(hidden_states, None, weight, out, eps, 0.0)
    return out


def gemma_rmsnorm(hidden_states, weight, eps=1e-6, out=None, enable_pdl=None):
    """Gemma's RMSNorm: ``hidden_states / rms(hidden_states) * (weight + 1)``."""
    out = torch.empty_like(hidden_states) if out is None else _output(hidden_states, out)
    _launch(hidden_states, None, weight, out, eps, 1.0)
    return out


def fused_add_rmsnorm(hidden_states, residual, weight, eps=1e-6, enable_pdl=None):
    """``residual += hidden_states; hidden_states = rmsnorm(residual) * weight``,
    both in place (the sum is normalized before rounding); returns
    ``(hidden_states, residual)``."""
    _launch(hidden_states, residual, weight, hidden_states, eps, 0.0)
    return hidden_states, residual


def gemma_fused_add_rmsnorm(hidden_states, residual, weight, eps=1e-6, enable_pdl=None):
    """As ``fused_add_rmsnorm`` with Gemma's ``(weight + 1)`` scale."""
    _launch(hidden_states, residual, weight, hidden_states, eps, 1.0)
    return hidden_states, residual

