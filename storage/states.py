"""The run-state vocabulary, in one place: the states dinf adds to the scheduler's, and which states
are finished, finished with results, or finished without them.

Standard library only, so anything that shows or filters runs can import it without sqlmodel.
Scheduler states are `remote.cluster.JobState` names, used as they are; storage does not import
`remote`, so the finished ones are spelled out here and a test keeps them equal to
`remote.cluster.TERMINAL_STATES`. Colours, labels and anything else about display live in the UI.
"""

from __future__ import annotations

DRAFT = "DRAFT"
"""Recorded and validated, not submitted yet."""
SUBMIT_FAILED = "SUBMIT_FAILED"
"""Preparing or submitting failed; nothing is left running on the cluster."""
IMPORTED = "IMPORTED"
"""A result bundle ingested from disk without a submission behind it."""

SCHEDULER_FINISHED_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
     "DEADLINE"}
)
"""remote.cluster.TERMINAL_STATES by name."""

LIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"})
"""Submitted and not finished: what is polled and watched (DRAFT is neither live nor finished)."""

FINISHED_STATES = SCHEDULER_FINISHED_STATES | {SUBMIT_FAILED, IMPORTED}
"""States a run never leaves; every other state (DRAFT included) is unfinished."""

DONE_STATES = frozenset({"COMPLETED", IMPORTED})
"""Finished with results to read."""

FAILED_STATES = FINISHED_STATES - DONE_STATES
"""Finished without results (failed, cancelled, timed out, never submitted): worth resubmitting."""
