"""The messages of the app, in three kinds:

- facts (past tense) the app's thread workers post to the UI thread: workers never touch widgets;
  the handler on the UI thread updates state. High-rate status messages define `can_replace` so a
  newer one supersedes a queued one;
- requests (`...Requested`) a screen posts; they bubble up to the app, which does the work;
- results the app posts to a screen (`bubble = False`: they stop there, never come back to the app).

Screens never call the app's methods, and the app never probes a screen for methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.message import Message

from tui.core.connection import LinkState
from tui.core.logs.routing import RoutedBatch

if TYPE_CHECKING:
    from tui.core.records import RunRecord
    from tui.core.run_form import CheckedForm, RunForm


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

    runs: list[RunRecord]
    complete: bool = True

    def can_replace(self, message: Message) -> bool:
        # A partial update replaces nothing: the runs of the one it would drop could be missing.
        return isinstance(message, RunsRefreshed) and self.complete


@dataclass
class ConnectionChanged(Message):
    """A cluster's connection state changed: connected, connecting, reconnecting, failed, local."""

    cluster: str
    state: LinkState
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

    run: RunRecord


@dataclass
class ActionFailed(Message, bubble=False):
    """A user action (submit, cancel, preview, ...) failed; `what` names it. The app tells the
    screen that asked too (the new-run form shows a failed submit or preview in place)."""

    what: str
    error: str
    run_id: int | None = None


@dataclass
class RunCancelled(Message):
    """A cancel request finished; `run` is the record after it."""

    run: RunRecord


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
class ResultsLoaded(Message, bubble=False):
    """A finished run's measurements and correctness summary, read from the database (the app
    passes it on to the run's screen)."""


    run_id: int
    measurements: list[Any]
    correctness: Any = None


@dataclass
class LogsUpdated(Message, bubble=False):
    """To a run's screen: the app applied a new batch to the run's `RunLogs`; redraw from it."""

    run_id: int


@dataclass
class PreviewRendered(Message, bubble=False):
    """To the new-run form: the run's settings (the spec the worker reads) and the batch script they
    would submit (nothing was recorded)."""

    script: str
    spec_json: str = ""


# --- requests: posted by screens, handled by the app -------------------------------------------


@dataclass
class RunOpenRequested(Message):
    run_id: int


@dataclass
class RunCancelRequested(Message):
    """Cancel a run (the app asks the user first)."""

    run_id: int


@dataclass
class ResultsRequested(Message):
    run_id: int


@dataclass
class PreviewRequested(Message):
    """Render the batch script for these form values, recording nothing."""

    form: RunForm
    checked: CheckedForm


@dataclass
class SubmitRequested(Message):
    form: RunForm
    checked: CheckedForm


@dataclass
class DraftRequested(Message):
    """Record these form values as a DRAFT run, submitting nothing."""

    form: RunForm
    checked: CheckedForm


@dataclass
class DraftSubmitRequested(Message):
    """Submit a run recorded as a draft."""

    run_id: int


@dataclass
class DraftSaved(Message):
    """A draft run was recorded (nothing submitted)."""

    run: RunRecord


@dataclass
class CompareMarksChanged(Message):
    """The compare screen's marked runs and baseline: the app keeps them for its next opening."""

    marked: list[int]
    baseline_id: int | None
