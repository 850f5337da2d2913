"""Read a Solution's ``target_hardware`` and decide whether it runs here.

Solutions in the wild name hardware two ways: as SM targets (``sm90``,
``sm_90a``, ``SM100``) and as products (``H100``, ``NVIDIA_H100``,
``B200``, ``NVIDIA_A100_80GB``). Both are mapped to an SM number. An entry
we cannot read is reported and ignored; a list with no readable entry, or an
empty one, does not restrict routing. Without a GPU nothing is filtered:
CPU tensors only ever reach Python or interpreter-run solutions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import FrozenSet, Iterable, List, Optional, Tuple

# Product family -> SM (compute capability major*10 + minor).
_PRODUCTS: Tuple[Tuple[str, int], ...] = (
    ("GB300", 103), ("B300", 103), ("GB200", 100), ("B200", 100), ("B100", 100),
    ("RTX5090", 120), ("RTX5080", 120), ("RTXPRO6000", 120),
    ("GH200", 90), ("H200", 90), ("H100", 90), ("H800", 90), ("H20", 90),
    ("L40S", 89), ("L40", 89), ("L4", 89), ("RTX4090", 89), ("RTX6000ADA", 89),
    ("A100", 80), ("A800", 80), ("A30", 80),
    ("A10G", 86), ("A10", 86), ("A40", 86), ("RTX3090", 86), ("A6000", 86),
    ("T4", 75), ("V100", 70),
)
_ANY = {"ANY", "ALL", "CUDA", "GPU", "NVIDIA"}
_SM = re.compile(r"^(?:SM|COMPUTE)_?(\d{2,3})[A-Z]?$")


def parse_entry(entry: str) -> Optional[FrozenSet[int]]:
    """SM numbers an entry stands for; ``frozenset()`` means any GPU;
    ``None`` means unreadable."""
    text = re.sub(r"[\s\-]", "", str(entry)).upper()
    if text in _ANY:
        return frozenset()
    if text == "CPU":
        return frozenset({0})
    match = _SM.match(text)
    if match:
        return frozenset({int(match.group(1))})
    text = text.removeprefix("NVIDIA_").removeprefix("NVIDIA").replace("_", "").replace("GEFORCE", "")
    for product, sm in _PRODUCTS:
        if text.startswith(product):
            return frozenset({sm})
    return None


@dataclass(frozen=True)
class HardwareSupport:
    sms: FrozenSet[int]  # empty: no restriction
    unreadable: Tuple[str, ...]

    def allows(self, sm: Optional[int]) -> bool:
        return sm is None or not self.sms or sm in self.sms


def read_targets(entries: Iterable[str]) -> HardwareSupport:
    sms: set = set()
    unreadable: List[str] = []
    unrestricted = False
    for entry in entries:
        parsed = parse_entry(entry)
        if parsed is None:
            unreadable.append(str(entry))
        elif not parsed:
            unrestricted = True
        else:
            sms |= parsed
    return HardwareSupport(frozenset() if unrestricted else frozenset(sms), tuple(unreadable))


def current_sm() -> Optional[int]:
    """This process's GPU as an SM number, or None without CUDA."""
    try:
        import torch  # noqa: PLC0415

        if not torch.cuda.is_available():
            return None
        major, minor = torch.cuda.get_device_capability()
        return major * 10 + minor
    except Exception:  # noqa: BLE001 - no usable GPU: no filtering
        return None
