"""Add up the stats files of many processes (``flashinfer-trace-apply stats DIR``):
a table per API and per process, JSON, or Prometheus text exposition for a
node exporter's textfile collector."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

from .errors import ConfigError


def read_dir(directory: str) -> List[Dict[str, Any]]:
    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigError(f"stats directory {folder} does not exist")
    records = []
    for file in sorted(folder.glob("*.json")):
        try:
            record = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{file}: not a stats file: {exc}") from None
        if not isinstance(record, dict):
            raise ConfigError(f"{file}: not a stats file: the top level is not an object")
        record["file"] = file.name
        records.append(record)
    return records


def totals(records: List[Dict[str, Any]]) -> Dict[str, Dict[str, int]]:
    out: Dict[str, Dict[str, int]] = {}
    for record in records:
        for api, counts in (record.get("apis") or {}).items():
            per_api = out.setdefault(api, {})
            for status, n in counts.items():
                per_api[status] = per_api.get(status, 0) + int(n)
    return out


def _process_label(record: Dict[str, Any]) -> str:
    rank = record.get("rank")
    return f"{record.get('host', '?')}:{record.get('pid', '?')}" + (f" rank {rank}" if rank is not None else "")


def format_table(records: List[Dict[str, Any]]) -> str:
    summed = totals(records)
    statuses = sorted({s for counts in summed.values() for s in counts}, key=lambda s: (s != "hit", s))
    lines: List[Tuple[str, ...]] = [("api", *statuses)]
    lines += [(api, *(str(counts.get(s, 0)) for s in statuses)) for api, counts in sorted(summed.items())]
    lines.append(("", *[""] * len(statuses)))
    lines.append(("process", "api", "hit", "fallbacks", "error"))
    for record in records:
        for api, counts in sorted((record.get("apis") or {}).items()):
            fallbacks = sum(n for s, n in counts.items() if s.startswith("fallback"))
            lines.append((_process_label(record), api, str(counts.get("hit", 0)), str(fallbacks), str(counts.get("error", 0))))
    width = max(len(line) for line in lines)
    padded = [line + ("",) * (width - len(line)) for line in lines]
    widths = [max(len(line[i]) for line in padded) for i in range(width)]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in padded]
    text.append(f"{len(records)} process(es)")
    return "\n".join(text)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_prometheus(records: List[Dict[str, Any]]) -> str:
    """One counter family, labelled by api, status, process and rank."""
    lines = [
        "# HELP flashinfer_trace_apply_calls_total FlashInfer API calls seen by flashinfer_trace_apply, by outcome.",
        "# TYPE flashinfer_trace_apply_calls_total counter",
    ]
    for record in records:
        rank = record.get("rank")
        for api, counts in sorted((record.get("apis") or {}).items()):
            for status, n in sorted(counts.items()):
                labels = (f'api="{_escape(api)}",status="{_escape(status)}",host="{_escape(str(record.get("host", "")))}",'
                          f'pid="{record.get("pid", "")}",rank="{"" if rank is None else rank}"')
                lines.append(f"flashinfer_trace_apply_calls_total{{{labels}}} {int(n)}")
    return "\n".join(lines) + "\n"
