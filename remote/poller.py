"""`JobPoller`: when to ask the scheduler, for which jobs, and what to remember.

One batched `status()` call covers every tracked job that is not finished. While jobs are active
it polls every `active_s` (5 s); each poll that changes nothing doubles the wait up to `idle_max_s`
(30 s); any change (or a newly tracked job) resets it. A change is a change of what the user acts
on: state, reason, exit code, signal or node list (`status_key`). The elapsed time is not one: it
grows on every poll, and comparing whole records once kept a poller at full speed for good.

Someone watching closely (an open run screen, `dinf submit --wait`) may `watch` for a shorter
cap on the wait, never below `WATCH_FLOOR_S`; the cap lasts until `unwatch`. Terminal states are
cached and never asked for again (a terminal state reported without an exit code — squeue's,
before sacct catches up — is asked once more). A failed poll keeps the previous states and backs
off too; `wake()` makes the next poll due now (after the user fixed what failed). The clock is
injected so tests can fast-forward without sleeping.

What it doesn't: run threads. The caller (`tui.core.service.Dinf.refresh`, which the app's refresh
loop and the CLI call) calls `poll_if_due()` or `wait_s()`; the poller only decides.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from remote.cluster import JobState, JobStatus

StatusFn = Callable[[list[str]], dict[str, JobStatus]]

ACTIVE_S = 5.0
"""The wait between polls after a change, and while someone watches."""
IDLE_MAX_S = 30.0
"""The longest wait while nothing changes."""
WATCH_FLOOR_S = 1.0
"""The shortest wait anyone may ask for."""


def status_key(status: JobStatus | None) -> tuple | None:
    """What makes a poll news: everything but the elapsed time."""
    if status is None:
        return None
    return (status.state, status.reason, status.exit_code, status.signal, status.nodelist)


class JobPoller:
    def __init__(
        self,
        status: StatusFn,
        *,
        active_s: float = ACTIVE_S,
        idle_max_s: float = IDLE_MAX_S,
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
        self._watchers: dict[object, float] = {}

    # --- what is tracked -------------------------------------------------------------------------

    def track(self, job_id: str) -> None:
        if job_id not in self._tracked and job_id not in self._finished:
            self._tracked[job_id] = None
            self._reset()

    def untrack(self, job_id: str) -> None:
        self._tracked.pop(job_id, None)
        self._finished.pop(job_id, None)

    def retain(self, job_ids: list[str]) -> None:
        """Track exactly these jobs: new ones are added (and make a poll due), others forgotten."""
        wanted = set(job_ids)
        for job_id in [*self._tracked, *self._finished]:
            if job_id not in wanted:
                self.untrack(job_id)
        for job_id in sorted(wanted):
            self.track(job_id)

    @property
    def active_ids(self) -> list[str]:
        return sorted(self._tracked)

    def statuses(self) -> dict[str, JobStatus]:
        """The latest known status of every tracked job (finished ones from the cache)."""
        known = {job_id: s for job_id, s in self._tracked.items() if s is not None}
        return {**known, **self._finished}

    # --- cadence ---------------------------------------------------------------------------------

    def watch(self, who: object, every_s: float = ACTIVE_S) -> None:
        """Poll at least every `every_s` (no less than WATCH_FLOOR_S) until `unwatch(who)`."""
        self._watchers[who] = max(WATCH_FLOOR_S, float(every_s))
        cap = self._cap()
        if cap is not None and self._next_at - self._clock() > cap:
            self._next_at = self._clock() + cap

    def unwatch(self, who: object) -> None:
        self._watchers.pop(who, None)

    def _cap(self) -> float | None:
        return min(self._watchers.values()) if self._watchers else None

    def wake(self) -> None:
        """The next poll is due now (the caller knows something changed, or was fixed)."""
        self._next_at = min(self._next_at, self._clock())

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
            if status_key(status) != status_key(previous):
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
        self._next_at = self._clock() + self._wait()
        return changed

    def _wait(self) -> float:
        cap = self._cap()
        return self._interval if cap is None else min(self._interval, cap)

    def _back_off(self, schedule: bool = True) -> None:
        self._interval = min(self.idle_max_s, self._interval * 2)
        if schedule:
            self._next_at = self._clock() + self._wait()
