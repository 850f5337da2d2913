"""Each process's stats, written to a shared directory for whole-fleet views.

With ``FLASHINFER_TRACE_APPLY_STATS_DIR`` set, enabling starts one daemon
thread per process that writes the process's counts to
``<dir>/<host>-<pid>.json`` when they changed, at most once a second, and
once more at exit. Each write goes to a temporary file renamed into place, so
a reader never sees half a file. Nothing here runs on a routed call: the
thread reads the same counters ``stats()`` reads.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from .env import STATS_DIR_VAR, stats_dir_setting
from .warn import warn

FORMAT = 1
INTERVAL_S = 1.0

_writer: Optional["StatsWriter"] = None
_writer_lock = threading.Lock()


def _rank() -> Dict[str, Optional[int]]:
    """The torch.distributed rank and world size, when this process has a
    process group (never importing torch.distributed for it)."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return {"rank": int(dist.get_rank()), "world_size": int(dist.get_world_size())}
    except Exception:  # noqa: BLE001 - a half-torn-down group: no rank
        pass
    return {"rank": None, "world_size": None}


class StatsWriter:
    def __init__(self, directory: Path, snapshot: Callable[[], Dict[str, Any]]) -> None:
        self.directory = directory
        self.snapshot = snapshot
        self.path = directory / f"{socket.gethostname()}-{os.getpid()}.json"
        self.started = time.time()
        self._last: Optional[str] = None
        self._rank: Dict[str, Optional[int]] = {"rank": None, "world_size": None}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="flashinfer_trace_apply-stats", daemon=True)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        atexit.register(self.close)

    def _loop(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            self.write()

    def close(self) -> None:
        self._stop.set()
        self.write()

    def write(self) -> None:
        try:
            body = self.snapshot()
            key = json.dumps([body, _rank()], sort_keys=True)
            if key == self._last:
                return
            seen = _rank()
            if seen["rank"] is not None:
                self._rank = seen  # kept: at exit the process group may be gone already
            record = {"format": FORMAT, "pid": os.getpid(), "host": socket.gethostname(), **self._rank,
                      "started": self.started, "updated": time.time(), **body}
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.directory)
            with os.fdopen(fd, "w") as f:
                json.dump(record, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
            self._last = key
        except Exception as exc:  # noqa: BLE001 - stats must never hurt serving
            self._stop.set()
            warn(f"{STATS_DIR_VAR}: cannot write {self.path}: {type(exc).__name__}: {exc}; stats files stopped")


def ensure_started(snapshot: Callable[[], Dict[str, Any]]) -> Optional[StatsWriter]:
    """Start this process's writer if the variable names a directory (once)."""
    global _writer
    directory = stats_dir_setting()
    if not directory:
        return None
    with _writer_lock:
        if _writer is None:
            writer = StatsWriter(Path(directory), snapshot)
            try:
                writer.start()
            except OSError as exc:
                warn(f"{STATS_DIR_VAR}={directory!r}: {type(exc).__name__}: {exc}; stats files are not written")
                return None
            _writer = writer
        return _writer
