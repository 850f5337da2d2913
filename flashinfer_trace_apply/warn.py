"""One warning category for everything the plugin reports to users, so that
deployments can filter or escalate it as a whole."""

from __future__ import annotations

import warnings


class TraceApplyWarning(UserWarning):
    """Raised as a warning by flashinfer_trace_apply (configuration problems,
    solutions that never matched, patches left alone)."""


def warn(message: str, stacklevel: int = 3) -> None:
    warnings.warn(f"[flashinfer_trace_apply] {message}", TraceApplyWarning, stacklevel=stacklevel)
