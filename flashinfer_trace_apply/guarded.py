"""Entries for definitions under an operating policy (see ``policy_settings``).

A plain hit entry calls the solution and nothing else. A definition that is
verified or falls back on error gets a guarded entry instead, built here
around the same hit entry, so a definition without a policy pays nothing:

* verify: until a shape has passed N comparisons, each call runs FlashInfer's
  kernel on the caller's arguments (the caller gets its results) and the
  solution on copies of them, then compares every result and every tensor
  argument (in-place writes included): 16-bit floats within one ulp, wider
  floats within rtol 1e-4 / atol 1e-5, NaN or Inf never equal to a finite
  value, everything else exactly. A shape that passes N times is promoted;
  a mismatch turns the definition off for the process;
* fallback: a solution that raises runs FlashInfer's kernel for that call,
  behind the definition's circuit breaker (``definition_state``).
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

from .definition_state import DefinitionHealth
from .policy_settings import Policy
from .warn import warn

VERIFYING = "verify_pending"  # a call answered by FlashInfer's kernel while the solution is compared
VERIFY_MISMATCH = "verify_mismatch"
FALLBACK_ERROR = "fallback_error"
FALLBACK_CIRCUIT_OPEN = "fallback_circuit_open"
FALLBACK_TURNED_OFF = "fallback_turned_off"
FALLBACK_UNVERIFIED_IN_CAPTURE = "fallback_unverified_in_capture"


def _copy_tensor(t: Any) -> Any:
    import torch  # noqa: PLC0415

    try:
        copy = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device=t.device)
        copy.copy_(t)  # same strides: a row-strided view stays row-strided
        return copy
    except RuntimeError:  # overlapping strides (expand): a dense copy
        return t.clone()


def copy_arguments(value: Any) -> Any:
    import torch  # noqa: PLC0415

    if isinstance(value, torch.Tensor):
        return _copy_tensor(value)
    if isinstance(value, (tuple, list)):
        return type(value)(copy_arguments(v) for v in value)
    return value


def _tensors(value: Any, path: str, out: List[Tuple[str, Any]]) -> None:
    import torch  # noqa: PLC0415

    if isinstance(value, torch.Tensor):
        out.append((path, value))
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            _tensors(v, f"{path}[{i}]", out)


def difference(expected: Any, actual: Any) -> Optional[str]:
    """None if ``actual`` agrees with ``expected`` (see the module text),
    else what differs, with the largest error."""
    import torch  # noqa: PLC0415

    if expected.shape != actual.shape or expected.dtype != actual.dtype:
        return f"shape/dtype {tuple(actual.shape)} {actual.dtype}, FlashInfer's {tuple(expected.shape)} {expected.dtype}"
    if not expected.is_floating_point():
        return None if torch.equal(expected, actual) else "integer values differ"
    e, a = expected.float(), actual.float()
    same = (e == a) | (torch.isnan(e) & torch.isnan(a))
    if bool(same.all()):
        return None
    if bool((~torch.isfinite(a) & ~same).any()) or bool((~torch.isfinite(e) & ~same).any()):
        return "NaN or Inf where FlashInfer's kernel has another value"
    error = (e - a).abs()
    worst = float(error.max())
    if expected.element_size() <= 2:
        eps = torch.finfo(expected.dtype).eps
        magnitude = torch.maximum(e.abs(), a.abs()).clamp_min(torch.finfo(expected.dtype).tiny)
        ulp = eps * torch.exp2(torch.floor(torch.log2(magnitude)))
        if bool((error <= ulp).all()):
            return None
        return f"max error {worst:g} (more than one ulp of {expected.dtype})"
    if bool(torch.isclose(a, e, rtol=1e-4, atol=1e-5).all()):
        return None
    return f"max error {worst:g}"


def compare(expected_result: Any, actual_result: Any, real_args: Any, copied_args: Any) -> Optional[str]:
    want: List[Tuple[str, Any]] = []
    got: List[Tuple[str, Any]] = []
    _tensors(expected_result, "result", want)
    _tensors(actual_result, "result", got)
    _tensors(real_args, "argument", want)
    _tensors(copied_args, "argument", got)
    if [p for p, _ in want] != [p for p, _ in got]:
        return f"the solution delivered {len(got)} tensors where FlashInfer's kernel delivered {len(want)}"
    for (path, e), (_, a) in zip(want, got):
        problem = difference(e, a)
        if problem:
            return f"{path}: {problem}"
    return None


def _shape_label(args: tuple, kwargs: dict) -> str:
    found: List[Tuple[str, Any]] = []
    _tensors(list(args) + list(kwargs.values()), "", found)
    return ", ".join(str(tuple(t.shape)) for _, t in found[:3])


def guarded_entry(
    *,
    hit: Callable[..., Any],
    trial: Callable[..., Any],
    original: Callable[..., Any],
    policy: Policy,
    health: DefinitionHealth,
    api: str,
    tick: Callable[[str], Any],
    promote: Callable[[Callable[..., Any]], None],
    off_entry: Callable[..., Any],
    is_capturing: Callable[[], bool],
) -> Callable[..., Any]:
    """The entry for one (definition, shape) under ``policy``. ``trial`` is
    the hit entry without its hit counter, for verification runs.

    ``promote(entry)`` replaces this entry in the route's cache once the shape
    is verified; ``off_entry`` runs the original, counted, once verification
    turned the definition off (``health`` demotes every shape to it)."""

    def after_verification() -> Callable[..., Any]:
        return fallback_entry if policy.on_error == "fallback" else hit

    def fallback_entry(*args: Any, **kwargs: Any) -> Any:
        if health.off_reason is not None:
            return off_entry(*args, **kwargs)
        if not health.allows_solution():
            tick(FALLBACK_CIRCUIT_OPEN)
            return original(*args, **kwargs)
        try:
            result = hit(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the policy asked for the original instead
            health.record_error(api, exc)
            tick(FALLBACK_ERROR)
            return original(*args, **kwargs)
        health.record_success()
        return result

    if policy.verify <= 0:
        return fallback_entry

    passed = [0]

    def verifying_entry(*args: Any, **kwargs: Any) -> Any:
        if health.off_reason is not None:
            return off_entry(*args, **kwargs)
        if is_capturing():
            # Comparing needs the results on the host: impossible while a
            # graph is captured. Engines warm every shape up eagerly first.
            tick(FALLBACK_UNVERIFIED_IN_CAPTURE)
            return original(*args, **kwargs)
        copied_args, copied_kwargs = copy_arguments(args), copy_arguments(kwargs)
        expected = original(*args, **kwargs)
        tick(VERIFYING)
        try:
            actual = trial(*copied_args, **copied_kwargs)
            problem = compare(expected, actual, (args, kwargs), (copied_args, copied_kwargs))
        except Exception as exc:  # noqa: BLE001 - a solution that fails verification is off, not fatal
            problem = f"the solution raised {type(exc).__name__}: {exc}"
        if problem:
            tick(VERIFY_MISMATCH)
            if health.turn_off(problem):
                warn(
                    f"{api}: solution for {health.name} disagrees with FlashInfer's kernel at shape "
                    f"{_shape_label(args, kwargs)}: {problem}; it is off for this process, FlashInfer's kernel "
                    "runs from now on",
                    stacklevel=3,
                )
            return expected
        passed[0] += 1
        if passed[0] >= policy.verify:
            health.verified_shapes += 1
            promote(after_verification())
        return expected

    return verifying_entry


__all__ = ["guarded_entry", "compare", "difference", "copy_arguments"]
