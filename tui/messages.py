"""Messages the app's thread workers post to the UI thread (facts, in the past tense).

Workers never touch widgets; they post one of these and the handler on the UI thread updates
state. High-rate status messages define `can_replace` so a newer one supersedes a queued one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from textual.message import Message

from tui.rank_streams import RoutedBatch


@dataclass
class ServiceOpened(Message):
    """The service layer (database, configuration) is ready to use."""

    service: Any


@dataclass
class ServiceFailed(Message):
    """The service layer could not be opened (bad configuration, newer database, ...)."""

    error: str


@dataclass
class RunsRefreshed(Message):
    """Fresh snapshots: of every run (`complete`), or only of the runs a poll may have changed."""

    runs: list[Any]
    complete: bool = True

    def can_replace(self, message: Message) -> bool:
        # A partial update replaces nothing: the runs of the one it would drop could be missing.
        return isinstance(message, RunsRefreshed) and self.complete


@dataclass
class ConnectionChanged(Message):
    """A cluster's connection state changed: connected, connecting, reconnecting, failed, local."""

    cluster: str
    state: str
    detail: str = ""


@dataclass
class SshTroubleMet(Message):
    """An SSH problem that needs the user: unknown/changed host key or a failed login.

    `resume` is the action it interrupted (a submit, a preview): run again once the user trusts the
    host key; `give_up(why)` is told instead when the key is refused or the login failed.
    """

    cluster: str
    error: BaseException
    resume: Callable[[], None] | None = None
    give_up: Callable[[str], None] | None = None


@dataclass
class HostKeyTrusted(Message):
    """The user's trust of a cluster's host key was recorded (or, with `error`, could not be)."""

    cluster: str
    error: str | None = None


@dataclass
class RunSubmitted(Message):
    """A run was submitted; `run` is its record with the job id."""

    run: Any


@dataclass
class ActionFailed(Message):
    """A user action (submit, cancel, preview, ...) failed; `what` names it."""

    what: str
    error: str
    run_id: int | None = None


@dataclass
class RunAnnotated(Message):
    """A run's tags and note were saved; `run` is its record after that."""

    run: Any


@dataclass
class RunCancelled(Message):
    """A cancel request finished; `run` is the record after it."""

    run: Any


@dataclass
class LogBatchReceived(Message):
    """One batch of a run's log and event lines, already sorted by rank."""

    run_id: int
    batch: RoutedBatch


@dataclass
class LogTailEnded(Message):
    """A run's log tail stopped (run finished and drained, or an error)."""

    run_id: int
    error: str | None = None


@dataclass
class ResultsLoaded(Message):
    """A finished run's measurements and correctness summary, read from the database."""

    run_id: int
    measurements: list[Any]
    correctness: Any = None
