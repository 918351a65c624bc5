"""What can go wrong talking to a cluster, as exception types callers tell apart with `isinstance`.

Standard library only: the app and the CLI classify a failure (a host key to confirm, a login to
fix, a connection to retry) without importing paramiko, and the local backend, which never opens
SSH, raises the same base class. The transports (`remote.ssh` for paramiko) raise these.
"""

from __future__ import annotations

from typing import Protocol


class ClusterError(RuntimeError):
    """A cluster operation failed; the message says what, where, and what to do (backend-neutral)."""


class SshError(ClusterError):
    """Connecting to or talking with the SSH server failed."""


class HostUnreachable(SshError):
    """The host name does not resolve or the TCP connection is refused / times out."""


class AuthenticationFailed(SshError):
    """The server refused every key (or answer) offered: the user must fix their login."""


class ConnectionLost(SshError):
    """The connection dropped and could not be re-established."""


class KeyTruster(Protocol):
    def trust_host_key(self, expected_fingerprint: str | None = None, *, replace: bool = False) -> str: ...


class HostKeyError(SshError):
    """The server's host key is not the one known_hosts vouches for: the user must confirm it.

    `trust()` records the key that was shown (after the user confirmed `fingerprint`).
    """

    changed = False
    expected_fingerprint: str | None = None

    def __init__(self, message: str, *, host: str, key_type: str, fingerprint: str):
        super().__init__(message)
        self.host = host
        self.key_type = key_type
        self.fingerprint = fingerprint
        self.connection: KeyTruster | None = None
        """Set by the connection that raised it, so `trust()` knows where to record the key."""

    def trust(self) -> str:
        """Record exactly this fingerprint in known_hosts (refused if the server now shows another)."""
        if self.connection is None:
            raise SshError("this host-key error is not tied to a connection; use SshConnection.trust_host_key")
        return self.connection.trust_host_key(self.fingerprint, replace=self.changed)


class HostKeyUnknown(HostKeyError):
    """known_hosts has no key for this host: refused until the user trusts it explicitly."""


class HostKeyChanged(HostKeyError):
    """known_hosts has a DIFFERENT key for this host: possibly a man-in-the-middle."""

    changed = True

    def __init__(self, message: str, *, host: str, key_type: str, fingerprint: str, expected: str):
        super().__init__(message, host=host, key_type=key_type, fingerprint=fingerprint)
        self.expected_fingerprint = expected

