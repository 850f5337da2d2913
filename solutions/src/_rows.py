"""Row addressing shared by the bundled norm and activation kernels
(scripts/build_solutions.py ships this file with every bundled Solution)."""


def row_layout(t):
    """(outer stride, inner count, inner stride) addressing the rows of ``t``
    in place, or None when its rows cannot be addressed that way."""
    if t.stride(-1) != 1 and t.shape[-1] != 1:
        return None
    nd = t.dim()
    if nd == 2:
        return t.stride(0), 1, 0
    if nd == 3:
        return t.stride(0), t.shape[1], t.stride(1)
    if nd == 1:
        return 0, 1, 0
    try:
        flat = t.view(-1, t.shape[-2], t.shape[-1])
    except RuntimeError:
        return None
    return flat.stride(0), flat.shape[1], flat.stride(1)
