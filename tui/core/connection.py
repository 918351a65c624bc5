"""How the link to each configured cluster stands, and what a failure means for it.

One `Connections` per app: a state per cluster, moved by the events the app sees (a poll that
worked or failed, a host key shown, trusted or refused, a failed login, a log stream cut off). It
is plain data, changed on the UI thread only; worker threads read it to decide and post what they
found. Failures are classified by type (`remote.errors`, no paramiko): a host key to confirm or a
login to fix needs the user (a dialog); anything else is retried (`RECONNECTING`, with backoff).

What it doesn't do: talk to clusters (the service does), or draw anything (the connection bar).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum

from remote.errors import AuthenticationFailed, HostKeyError

__all__ = ["HostKeyError"]  # the UI reads a host-key error's fingerprint through the core


class LinkState(StrEnum):
    LOCAL = "local"
    """This machine: nothing to connect to."""
    IDLE = "idle"
    """Remote, not contacted yet (nothing of it is live)."""
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    """Unreachable for now; the refresh loop retries with backoff."""
    FAILED = "failed"
    """Needs the user (host key, login) or gave up; retried when the user asks."""
    REFUSED = "refused"
    """The user refused its host key: nothing is sent until they trust it."""


class Trouble(Enum):
    HOST_KEY = "host key"
    LOGIN = "login"
    TRANSIENT = "transient"


def classify(exc: BaseException) -> Trouble:
    if isinstance(exc, HostKeyError):
        return Trouble.HOST_KEY
    if isinstance(exc, AuthenticationFailed):
        return Trouble.LOGIN
    return Trouble.TRANSIENT


def needs_the_user(exc: BaseException) -> bool:
    """A host key to confirm or a login to fix: a dialog, not a retry."""
    return classify(exc) is not Trouble.TRANSIENT


def first_line(text: str, limit: int = 120) -> str:
    lines = str(text).splitlines()
    return lines[0][:limit] if lines else ""


def problem_text(exc: BaseException) -> str:
    """An error as one readable message (a spec's problems listed by field)."""
    problems = getattr(exc, "problems", None)
    if isinstance(problems, dict) and problems:
        return "; ".join(f"{name}: {why}" for name, why in sorted(problems.items()))
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class Link:
    state: LinkState
    detail: str = ""


class PollVerdict(Enum):
    UNCHANGED = "unchanged"
    HEALTHY = "healthy"
    """The poll worked: the cluster is (again) local or connected."""
    PROBE = "probe"
    """Newly failing: ask once more to get the error itself (it may need the user)."""
    RECONNECTING = "reconnecting"


class Connections:
    """The link state of every configured cluster (`local` ones never change)."""

    def __init__(self, clusters: Mapping[str, bool] | None = None) -> None:
        """`clusters`: name -> whether it is the local backend."""
        self._local: dict[str, bool] = dict(clusters or {})
        self._links: dict[str, Link] = {
            name: Link(LinkState.LOCAL if local else LinkState.IDLE) for name, local in self._local.items()
        }
        self.version = 0
        """Bumped at every change, so a view redraws only when something moved."""

    def __getitem__(self, name: str) -> Link:
        return self._links.get(name, Link(LinkState.IDLE))

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._links))

    def __len__(self) -> int:
        return len(self._links)

    def items(self) -> list[tuple[str, Link]]:
        return [(name, self._links[name]) for name in self]

    def is_remote(self, name: str) -> bool:
        return name in self._local and not self._local[name]

    def remote_names(self) -> list[str]:
        return [name for name in self if self.is_remote(name)]

    def healthy(self, name: str) -> LinkState:
        return LinkState.LOCAL if self._local.get(name) else LinkState.CONNECTED

    def set(self, name: str, state: LinkState, detail: str = "") -> bool:
        link = Link(LinkState(state), first_line(detail))
        if self._links.get(name) == link:
            return False
        self._links[name] = link
        self.version += 1
        return True

    # --- decisions (read from worker threads; the app applies what they return) ----------------

    def after_poll(self, name: str, error: str | None) -> PollVerdict:
        """What one refresh poll of `name` (failed with `error`, or not) means for its link."""
        state = self[name].state
        if error is None:
            return PollVerdict.UNCHANGED if state is self.healthy(name) else PollVerdict.HEALTHY
        if state in (LinkState.REFUSED, LinkState.FAILED):
            return PollVerdict.UNCHANGED  # waits for the user, not for the next poll
        return PollVerdict.RECONNECTING if state is LinkState.RECONNECTING else PollVerdict.PROBE

    def polled(self, live: Iterable[str], errors: Mapping[str, str]) -> dict[str, PollVerdict]:
        """`after_poll` for every cluster with a live run or an error, leaving out the unchanged."""
        verdicts = {name: self.after_poll(name, errors.get(name)) for name in set(live) | set(errors)}
        return {name: verdict for name, verdict in verdicts.items() if verdict is not PollVerdict.UNCHANGED}

    def stream_interrupted(self, name: str) -> LinkState | None:
        """A log tail was cut off: reconnecting, unless the user refused the cluster."""
        return None if self[name].state is LinkState.REFUSED else LinkState.RECONNECTING

    @staticmethod
    def host_key_detail(exc: HostKeyError) -> str:
        return "host key changed" if exc.changed else "unknown host key"
