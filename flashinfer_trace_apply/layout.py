"""Paged KV caches named and fed in their true layout.

FlashInfer's paged-attention templates read the cache as NHD
(``[num_pages, page_size, num_kv_heads, head_dim]``) whatever the wrapper's
``kv_layout``; with an HND cache its collector swaps page size and KV heads
in the name, and a solution written for the definition would be handed
transposed data. We read the layout from the wrapper and present K and V as
NHD views (no copy), for both the ``(k, v)`` tuple and the single combined
``[num_pages, 2, ...]`` tensor.
"""

from __future__ import annotations

from typing import Any, Optional

CACHE_PARAM = "paged_kv_cache"


def nhd_view(layout: Any, cache: Any, index: int) -> Optional[Any]:
    """K (``index`` 0) or V (1) of a paged cache as an NHD view, or None."""
    import torch  # noqa: PLC0415

    if isinstance(cache, (tuple, list)):
        if len(cache) <= index or not isinstance(cache[index], torch.Tensor):
            return None
        part = cache[index]
    elif isinstance(cache, torch.Tensor) and cache.ndim == 5:
        part = cache[:, index]  # combined cache: [num_pages, 2, ...]
    else:
        return None
    if part.ndim == 4 and layout == "HND":
        part = part.transpose(1, 2)
    return part


def layout_of(instance: Any) -> str:
    return getattr(instance, "_kv_layout", "NHD")


def uses_cache_views(template: Any, is_method: bool, has_plan_table: bool) -> bool:
    """Wrapper ``run()`` methods whose template reads K/V out of ``paged_kv_cache``."""
    if not (is_method and has_plan_table):
        return False
    return any(
        getattr(d, "param", None) == CACHE_PARAM and getattr(d, "tuple_idx", None) is not None
        for d in template.inputs.values()
    )
