"""Per-definition operating policy: verify the first N hits, and what a
solution's exception does (``raise``, the default, or ``fallback`` behind a
circuit breaker). Read from the environment here; a folder's policy file
can set the same keys per definition (``for_definition`` takes them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional

from .env import BREAKER_VAR, ON_ERROR_VAR, VERIFY_VAR
from .errors import ConfigError

ON_ERROR_CHOICES = ("raise", "fallback")


@dataclass(frozen=True)
class Breaker:
    errors: int = 5  # this many errors ...
    window_s: float = 60.0  # ... within this many seconds open the circuit ...
    cooldown_s: float = 30.0  # ... for this long, then one probe call decides


@dataclass(frozen=True)
class Policy:
    verify: int = 0  # hits per shape compared with FlashInfer's kernel before the solution is trusted
    on_error: str = "raise"
    breaker: Breaker = Breaker()

    @property
    def active(self) -> bool:
        """Whether calls of this definition need more than the plain hit entry."""
        return self.verify > 0 or self.on_error == "fallback"


def _int(name: str, raw: str, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def parse_breaker(raw: str, where: str = BREAKER_VAR) -> Breaker:
    parts = [p.strip() for p in str(raw).split(",")]
    if len(parts) != 3:
        raise ConfigError(f"{where} must be 'ERRORS,WINDOW_S,COOLDOWN_S' (e.g. '5,60,30'), got {raw!r}")
    try:
        window, cooldown = float(parts[1]), float(parts[2])
    except ValueError:
        raise ConfigError(f"{where}: window and cooldown must be numbers of seconds, got {raw!r}") from None
    if window <= 0 or cooldown <= 0:
        raise ConfigError(f"{where}: window and cooldown must be positive, got {raw!r}")
    return Breaker(_int(where, parts[0], 1), window, cooldown)


def from_environment(environ: Optional[Mapping[str, str]] = None) -> Policy:
    env = os.environ if environ is None else environ
    policy = Policy()
    raw = env.get(VERIFY_VAR, "")
    if raw not in ("", "0"):
        policy = replace(policy, verify=_int(VERIFY_VAR, raw, 0))
    raw = env.get(ON_ERROR_VAR, "")
    if raw:
        if raw not in ON_ERROR_CHOICES:
            raise ConfigError(f"{ON_ERROR_VAR} must be one of {', '.join(ON_ERROR_CHOICES)}, got {raw!r}")
        policy = replace(policy, on_error=raw)
    raw = env.get(BREAKER_VAR, "")
    if raw:
        policy = replace(policy, breaker=parse_breaker(raw))
    return policy


def for_definition(base: Policy, overrides: Optional[Mapping[str, Any]], where: str) -> Policy:
    """``base`` with a policy file's keys for one definition applied."""
    if not overrides:
        return base
    policy = base
    if "verify" in overrides:
        policy = replace(policy, verify=_int(f"{where}: verify", str(overrides["verify"]), 0))
    if "on_error" in overrides:
        value = overrides["on_error"]
        if value not in ON_ERROR_CHOICES:
            raise ConfigError(f"{where}: on_error must be one of {', '.join(ON_ERROR_CHOICES)}, got {value!r}")
        policy = replace(policy, on_error=value)
    if "breaker" in overrides:
        policy = replace(policy, breaker=parse_breaker(overrides["breaker"], f"{where}: breaker"))
    return policy
