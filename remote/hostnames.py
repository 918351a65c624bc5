"""Host names as text: whether a string can name a machine to connect to (no I/O, no paramiko).

The configuration checks `host` with this at load time, so `host = "../../etc/passwd"` is a
configuration error naming the key, and `remote.ssh` checks the name an alias resolves to before
connecting (where Python's idna codec would otherwise fail with "label empty or too long").
"""

from __future__ import annotations

import re

_HOST_NAME = re.compile(r"^[A-Za-z0-9_.\-:\[\]%]+$")


def host_name_problem(hostname: str) -> str | None:
    """Why `hostname` can't be a host to connect to (a path, an empty label), or None."""
    if not _HOST_NAME.match(hostname):
        return "is not a host name (letters, digits, '.', '-', '_'; or an IP address)"
    if ":" not in hostname:  # IPv6 literals have no labels to check
        try:
            hostname.encode("idna")
        except UnicodeError:
            return "is not a host name (it has an empty or over-long part between dots)"
    return None


def split_host_spec(spec: str) -> tuple[str | None, str, str | None]:
    """'user@host:port' → (user, host, port text); the parts that are absent are None."""
    user, host = spec.split("@", 1) if "@" in spec else (None, spec)
    port = None
    if host.count(":") == 1:
        host, port = host.split(":")
    return user, host, port
