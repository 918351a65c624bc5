"""`JobPoller`: when to ask the scheduler, for which jobs, and what to remember.

One batched `status()` call covers every tracked job that is not finished. While jobs are active
it polls every `active_s`; each poll that changes nothing doubles the wait up to `idle_max_s`; any
change (or a newly tracked job) resets it. Terminal states are cached and never asked for again
(a terminal state reported without an exit code — squeue's, before sacct catches up — is asked
once more). A failed poll keeps the previous states and backs off too. The clock is injected so
tests can fast-forward without sleeping.

What it doesn't: run threads. The caller (a TUI worker, a CLI loop) calls `poll_if_due()` or
`wait_s()`; the poller only decides.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from remote.cluster import JobState, JobStatus

StatusFn = Callable[[list[str]], dict[str, JobStatus]]


class JobPoller:
    def __init__(
        self,
        status: StatusFn,
        *,
        active_s: float = 2.0,
        idle_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._status = status
        self.active_s = active_s
        self.idle_max_s = idle_max_s
        self._clock = clock
        self._tracked: dict[str, JobStatus | None] = {}
        self._finished: dict[str, JobStatus] = {}
        self._interval = active_s
        self._next_at = clock()
        self.calls = 0
        self.last_error: Exception | None = None

    # --- what is tracked -------------------------------------------------------------------------

    def track(self, job_id: str) -> None:
        if job_id not in self._tracked and job_id not in self._finished:
            self._tracked[job_id] = None
            self._reset()

    def untrack(self, job_id: str) -> None:
        self._tracked.pop(job_id, None)
        self._finished.pop(job_id, None)

    @property
    def active_ids(self) -> list[str]:
        return sorted(self._tracked)

    def statuses(self) -> dict[str, JobStatus]:
        """The latest known status of every tracked job (finished ones from the cache)."""
        known = {job_id: s for job_id, s in self._tracked.items() if s is not None}
        return {**known, **self._finished}

    # --- cadence ---------------------------------------------------------------------------------

    def _reset(self) -> None:
        self._interval = self.active_s
        self._next_at = min(self._next_at, self._clock())

    def wait_s(self) -> float | None:
        """Seconds until the next poll is due; None when nothing needs polling."""
        if not self._tracked:
            return None
        return max(0.0, self._next_at - self._clock())

    def poll_if_due(self) -> dict[str, JobStatus] | None:
        """Poll if due; the statuses that changed (None when no poll was due)."""
        wait = self.wait_s()
        if wait is None or wait > 0:
            return None
        return self.poll()

    def poll(self) -> dict[str, JobStatus]:
        """One batched call now for every unfinished job; returns the statuses that changed."""
        ids = self.active_ids
        if not ids:
            return {}
        self.calls += 1
        try:
            fresh = self._status(ids)
            self.last_error = None
        except Exception as exc:  # noqa: BLE001 - keep the last states; the caller reads last_error
            self.last_error = exc
            self._back_off()
            return {}
        changed = {}
        for job_id in ids:
            status = fresh.get(job_id)
            if status is None:
                continue
            previous = self._tracked.get(job_id)
            if previous is not None and previous.state.is_terminal and status.state == JobState.UNKNOWN:
                status = previous  # it aged out of squeue; keep what we saw last
            if status != previous:
                changed[job_id] = status
            if status.state.is_terminal and (status.exit_code is not None or status.state == JobState.CANCELLED):
                self._finished[job_id] = status
                del self._tracked[job_id]
            else:
                self._tracked[job_id] = status
        if changed:
            self._interval = self.active_s
        else:
            self._back_off(schedule=False)
        self._next_at = self._clock() + self._interval
        return changed

    def _back_off(self, schedule: bool = True) -> None:
        self._interval = min(self.idle_max_s, self._interval * 2)
        if schedule:
            self._next_at = self._clock() + self._interval
