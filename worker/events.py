"""Live records of one rank: JSON-lines events, a human-readable log, and stdout echo.

Every line is flushed as written, so a remote `tail -f` sees phases, progress and errors as they
happen. A daemon thread writes a heartbeat every few seconds (one at once, so even a short run shows
one), which lets the laptop tell a slow rank from a dead one. Record shapes come from
`worker.contract.make_event`; this module only writes them.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from worker import contract


class RankEvents:
    """Writer of rank{r}.events.jsonl and rank{r}.log in the run's output directory."""

    def __init__(self, out_dir: str | Path, rank: int, heartbeat_s: float = 5.0, echo: bool = True):
        self.rank = rank
        self.echo = echo
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self._events = open(out / contract.events_file(rank), "a", buffering=1, encoding="utf-8")
        self._log = open(out / contract.log_file(rank), "a", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True, name="heartbeat")
        self._heartbeat.start()

    def _write(self, kind: str, human: str | None, **payload: Any) -> None:
        record = contract.make_event(kind, self.rank, **payload)
        with self._lock:
            if self._events.closed:
                return
            self._events.write(json.dumps(record) + "\n")
            self._events.flush()
            if human is not None:
                line = f"{time.strftime('%H:%M:%S')} rank {self.rank} {human}"
                self._log.write(line + "\n")
                self._log.flush()
                if self.echo:
                    print(line, flush=True)

    def _beat(self, every_s: float) -> None:
        while True:
            self._write("heartbeat", None)
            if self._stop.wait(every_s):
                return

    def phase(self, phase: str, **detail: Any) -> None:
        if phase not in contract.PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        extra = " ".join(f"{k}={v}" for k, v in detail.items())
        self._write("phase", f"phase {phase} {extra}".rstrip(), phase=phase, **detail)

    def progress(self, batch_size: int, tokens_done: int, tokens_expected: int, **plan: int) -> None:
        """`plan`: repeat, repeats, batch_index, batch_count (see `contract.make_event`)."""
        where = f" repeat {plan['repeat']}/{plan['repeats']}" if "repeat" in plan and "repeats" in plan else ""
        self._write(
            "progress",
            f"progress batch_size={batch_size}{where} {tokens_done}/{tokens_expected} tokens",
            batch_size=batch_size,
            tokens_done=tokens_done,
            tokens_expected=tokens_expected,
            **plan,
        )

    def log(self, message: str, level: str = "info") -> None:
        self._write("log", f"{level}: {message}", level=level, message=message)

    def error(self, message: str, exc: BaseException | None = None) -> None:
        tb = "".join(traceback.format_exception(exc)) if exc is not None else ""
        self._write("error", f"ERROR {message}\n{tb}".rstrip(), message=message, traceback=tb)
        if self.echo and tb:
            print(tb, file=sys.stderr, flush=True)

    def close(self) -> None:
        self._stop.set()
        self._heartbeat.join(timeout=2)
        with self._lock:
            self._events.close()
            self._log.close()
