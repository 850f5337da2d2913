"""Run-time helpers of a hit entry for the rare paths: a result that is not
a plain tensor fitting its destination, a solution that raised.

Every check runs before the first write (see ``hit_entry``), so a solution
returning one good and one wrong result leaves the caller's tensors as they
were. Errors name the API, the definition and the solution.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict

from .codegen import PREFIX
from .errors import SolutionCallError


class EntryContext:
    """Names used in error messages and the error counter of one entry."""

    def __init__(self, fi_api: str, definition: str, label: str, tick_error: Callable[[], int]) -> None:
        self.fi_api, self.definition, self.label = fi_api, definition, label
        self.tick_error = tick_error

    def where(self) -> str:
        return f"{self.fi_api} -> definition '{self.definition}' -> solution '{self.label}'"

    def fail(self, message: str) -> SolutionCallError:
        self.tick_error()
        return SolutionCallError(f"Trace Apply: {self.where()}: {message}")

    def annotate(self, exc: BaseException) -> None:
        """A solution raised: count it and say where, keeping the exception
        type (engines catch e.g. torch.OutOfMemoryError by type)."""
        self.tick_error()
        note = f"raised by Trace Apply solution for {self.where()}"
        if hasattr(exc, "add_note"):
            exc.add_note(note)
        else:  # Python 3.10
            print(f"[flashinfer_trace_apply] {note}", file=sys.stderr)


def describe(value: Any) -> str:
    import torch  # noqa: PLC0415

    if isinstance(value, torch.Tensor):
        return f"Tensor(shape={tuple(value.shape)}, dtype={value.dtype}, device={value.device})"
    return type(value).__name__


def helpers(ctx: EntryContext) -> Dict[str, Callable]:
    """The functions generated entries call by name (``_fita_results`` ...)."""
    import torch  # noqa: PLC0415

    def results(value: Any, low: int, high: int, one_sequence: bool = False) -> tuple:
        """The solution's results as a tuple, checked for count and type.
        ``one_sequence``: the API writes one output that is itself a pair
        (a paged cache given as ``(k, v)``), so a returned pair is that output."""
        if one_sequence and isinstance(value, (tuple, list)) and len(value) != 1:
            items = (tuple(value),)
        elif isinstance(value, (tuple, list)):
            items = tuple(value)
        else:
            items = (value,)
        if not low <= len(items) <= high:
            want = str(low) if low == high else f"{low} to {high}"
            raise ctx.fail(f"returned {len(items)} result(s), the API needs {want}")
        for i, item in enumerate(items):
            if item is None and i >= low:
                continue  # an optional output the call did not ask for
            if not isinstance(item, (torch.Tensor, tuple, list)):
                raise ctx.fail(f"result {i} is {describe(item)}, expected a Tensor")
        return items

    def fits(result: Any, buffer: Any, what: str) -> None:
        """Raise unless ``result`` can be written into the caller's
        ``buffer`` exactly: same shape, dtype and device (no broadcasting,
        no conversion). Writes nothing."""
        if result is buffer:
            return
        if isinstance(buffer, (tuple, list)):  # e.g. a paged cache given as (k, v)
            if not isinstance(result, (tuple, list)) or len(result) != len(buffer):
                raise ctx.fail(
                    f"{what}: expected {len(buffer)} tensors to write into the caller's "
                    f"{type(buffer).__name__}, got {describe(result)}"
                )
            for i, (part, target) in enumerate(zip(result, buffer)):
                fits(part, target, f"{what}[{i}]")
            return
        if not isinstance(result, torch.Tensor):
            raise ctx.fail(f"{what}: result is {describe(result)}, expected a Tensor")
        if result.shape != buffer.shape or result.dtype != buffer.dtype or result.device != buffer.device:
            raise ctx.fail(f"{what}: result {describe(result)} does not match the destination {describe(buffer)}")

    def put(result: Any, buffer: Any) -> Any:
        """Write a result already checked by ``fits`` into ``buffer``."""
        if result is buffer:
            return buffer
        if isinstance(buffer, (tuple, list)):
            for part, target in zip(result, buffer):
                put(part, target)
            return buffer
        buffer.copy_(result)
        return buffer

    def wrong(result: Any, dtype: Any, shape: Any, device_like: Any, what: str) -> None:
        """Raise for a returned result that differs from what the API
        returns (called only once the inline test found a difference)."""
        if not isinstance(result, torch.Tensor):
            raise ctx.fail(f"{what}: result is {describe(result)}, expected a Tensor")
        if isinstance(dtype, torch.dtype) and result.dtype != dtype:
            raise ctx.fail(f"{what}: result dtype {result.dtype} differs from the API's {dtype}")
        if shape is not None and tuple(result.shape) != tuple(shape):
            raise ctx.fail(f"{what}: result {describe(result)} does not have the shape the API returns, {tuple(shape)}")
        if isinstance(device_like, torch.Tensor) and result.device != device_like.device:
            raise ctx.fail(f"{what}: result {describe(result)} is not on the device the API returns on, {device_like.device}")

    return {
        f"{PREFIX}results": results,
        f"{PREFIX}fits": fits,
        f"{PREFIX}put": put,
        f"{PREFIX}wrong": wrong,
        f"{PREFIX}annotate": ctx.annotate,
        f"{PREFIX}fail": ctx.fail,
    }
