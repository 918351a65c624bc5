"""One SSH connection to a cluster's login node (paramiko): commands, SFTP, host-key trust.

What it does: resolves a host alias through `~/.ssh/config` (HostName, User, Port, IdentityFile,
ProxyJump, ProxyCommand); authenticates with the agent and key files; verifies the server's host key
against known_hosts and refuses an unknown one (`HostKeyUnknown`) or a changed one (`HostKeyChanged`),
both carrying the SHA256 fingerprint, until `trust_host_key()` records it explicitly; turns on
keepalive and TCP_NODELAY; connects lazily on first use; reconnects with backoff when the connection
drops; runs argv lists (quoted by `remote.quoting`) returning a `CommandResult`, raising
`CommandFailed` (command, exit code, stderr tail) on failure.

What it doesn't: know anything about Slurm (`remote.slurm`), or stream logs (`remote.slurm_cluster`).
Thread safety: connect/reconnect hold a lock; each command opens its own channel and closes it in a
`finally`; the one SFTP client is shared under a lock.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import os
import socket
import stat as stat_module
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from remote.cluster import ClusterError
from remote.errors import (  # re-exported: callers that hold a connection catch them here
    AuthenticationFailed,
    ConnectionLost,
    HostKeyChanged,
    HostKeyError,
    HostKeyUnknown,
    HostUnreachable,
    SshError,
)
from remote.hostnames import host_name_problem
from remote.quoting import join_argv

DEFAULT_SSH_CONFIG = "~/.ssh/config"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"

# Transport-level failures after which a reconnect may help (auth and host-key errors are not among them).
CONNECTION_ERRORS = (paramiko.SSHException, EOFError, OSError, socket.timeout)

# paramiko logs a failed handshake with its traceback at ERROR ("Exception (client): Error reading SSH
# protocol banner", then the stack); with no handler configured Python prints that to stderr before
# dinf's own message. What went wrong reaches the user as our exception; paramiko's records stay
# available to anyone who configures logging.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class CommandResult:
    """What a remote command did."""

    argv: tuple[str, ...]
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def tail(self, stream: str = "stderr", lines: int = 10) -> str:
        text = self.stderr if stream == "stderr" else self.stdout
        return "\n".join(text.rstrip("\n").splitlines()[-lines:])


class CommandFailed(ClusterError):
    """A remote command exited non-zero; carries the command, exit code and the tail of stderr."""

    def __init__(self, result: CommandResult, host: str):
        self.result = result
        self.host = host
        tail = result.tail("stderr") or result.tail("stdout") or "(no output)"
        super().__init__(
            f"remote command failed on {host} with exit code {result.exit_code}:\n"
            f"  $ {result.command}\n" + "\n".join(f"  | {line}" for line in tail.splitlines())
        )

    @property
    def exit_code(self) -> int:
        return self.result.exit_code

    @property
    def stderr(self) -> str:
        return self.result.stderr


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style `SHA256:...` fingerprint (what `ssh` prints and `ssh-keygen -lf` shows)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(hostname: str, port: int) -> str:
    """The name known_hosts files use: bare for port 22, `[host]:port` otherwise."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


@dataclass(frozen=True)
class SshTarget:
    """Where and how to connect, after ~/.ssh/config has been applied."""

    alias: str
    hostname: str
    port: int = 22
    user: str | None = None
    key_files: tuple[str, ...] = ()
    proxy_command: str | None = None
    proxy_jump: str | None = None
    known_hosts: str = DEFAULT_KNOWN_HOSTS
    identities_only: bool = False
    """IdentitiesOnly yes: offer only the configured key files (no agent, no default keys)."""
    ssh_config: str | None = DEFAULT_SSH_CONFIG
    """The config file it came from (ProxyJump hops are resolved through the same file)."""

    @property
    def display(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.hostname}:{self.port}" + (f" ({self.alias})" if self.alias != self.hostname else "")


def resolve_target(
    alias: str,
    *,
    ssh_config: str | None = DEFAULT_SSH_CONFIG,
    user: str | None = None,
    port: int | None = None,
    key_file: str | None = None,
    known_hosts: str | None = None,
) -> SshTarget:
    """Apply `~/.ssh/config` to `alias` (`user@host:port` is accepted too); explicit arguments win."""
    if not alias or any(c.isspace() for c in alias):
        raise SshError(f"SSH host {alias!r} is not a host name or alias; give e.g. 'cluster' or 'me@login.example.org'")
    spec_user, host = (alias.split("@", 1) + [""])[:2] if "@" in alias else (None, alias)
    spec_port = None
    if host.count(":") == 1:
        host, port_text = host.split(":")
        if not port_text.isdigit():
            raise SshError(f"SSH port in {alias!r} is not a number")
        spec_port = int(port_text)
    options: dict = {}
    config_path = Path(ssh_config).expanduser() if ssh_config else None
    if config_path and config_path.is_file():
        options = paramiko.SSHConfig.from_path(str(config_path)).lookup(host)
    hostname = options.get("hostname", host)
    problem = host_name_problem(hostname)
    if problem:
        source = f" (HostName of {host!r} in {config_path})" if hostname != host else ""
        raise SshError(f"SSH host {hostname!r}{source} {problem}; give a host name or a Host alias from ~/.ssh/config")
    identity = tuple(os.path.expanduser(p) for p in options.get("identityfile", []))
    return SshTarget(
        alias=host,
        hostname=hostname,
        port=int(port or spec_port or options.get("port", 22)),
        user=user or spec_user or options.get("user"),
        key_files=((os.path.expanduser(key_file),) if key_file else ()) + identity,
        proxy_command=options.get("proxycommand"),
        proxy_jump=options.get("proxyjump"),
        known_hosts=known_hosts or options.get("userknownhostsfile", DEFAULT_KNOWN_HOSTS).split()[0],
        identities_only=str(options.get("identitiesonly", "no")).lower() == "yes",
        ssh_config=ssh_config,
    )


class _RefuseUnknownHostKey(paramiko.MissingHostKeyPolicy):
    """paramiko's RejectPolicy, but the error says which key and how to trust it."""

    def __init__(self, target: SshTarget):
        self.target = target

    def missing_host_key(self, client, hostname, key):
        fp = fingerprint(key)
        raise HostKeyUnknown(
            f"the host key of {hostname} is not in {self.target.known_hosts}: {key.get_name()} {fp}. "
            f"If that fingerprint is right (ask the cluster's admins, or compare with `ssh-keyscan`), "
            f"trust it explicitly (dinf asks; in code: SshConnection.trust_host_key(expected_fingerprint=...)).",
            host=hostname,
            key_type=key.get_name(),
            fingerprint=fp,
        )


@dataclass
class SshOptions:
    """Knobs of a connection; defaults suit an interactive laptop session."""

    connect_timeout_s: float = 10.0
    keepalive_s: int = 15
    allow_agent: bool = True
    look_for_keys: bool = True
    reconnect_attempts: int = 4
    backoff_s: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)


class SshConnection:
    """A lazily opened, self-healing SSH connection to one host."""

    def __init__(self, target: SshTarget, options: SshOptions | None = None):
        self.target = target
        self.options = options or SshOptions()
        self._client: paramiko.SSHClient | None = None
        self._jump: SshConnection | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()
        self._sftp_lock = threading.RLock()
        self.connects = 0
        """How many times a connection was (re)established; tests and the benchmark read it."""

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def open(self) -> SshConnection:
        """Connect if not connected (idempotent)."""
        with self._lock:
            if self.is_connected:
                return self
            self._drop()
            self._client = self._connect()
            self.connects += 1
            return self

    def close(self) -> None:
        with self._lock:
            self._drop()
            if self._jump:
                self._jump.close()
                self._jump = None

    def __enter__(self) -> SshConnection:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _drop(self) -> None:
        with self._sftp_lock:
            if self._sftp is not None:
                try:
                    self._sftp.close()
                except Exception:  # noqa: BLE001 - already broken; closing is best effort
                    pass
                self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _open_socket(self):
        t = self.target
        if t.proxy_command:
            return paramiko.ProxyCommand(t.proxy_command)
        if t.proxy_jump and t.proxy_jump.lower() != "none":
            # ProxyJump a,b: reach the target through the last hop, which is reached through the others.
            hops = [h.strip() for h in t.proxy_jump.split(",") if h.strip()]
            jump_target = resolve_target(hops[-1], ssh_config=t.ssh_config)
            if len(hops) > 1:
                jump_target = SshTarget(**{**jump_target.__dict__, "proxy_jump": ",".join(hops[:-1])})
            self._jump = SshConnection(jump_target, self.options).open()
            transport = self._jump._client.get_transport()
            return transport.open_channel("direct-tcpip", (t.hostname, t.port), ("127.0.0.1", 0))
        try:
            sock = socket.create_connection((t.hostname, t.port), timeout=self.options.connect_timeout_s)
        except socket.gaierror as exc:
            raise HostUnreachable(
                f"cannot resolve SSH host {t.hostname!r} (alias {t.alias!r}): {exc.strerror}. "
                "Check the name, or add a Host entry to ~/.ssh/config."
            ) from exc
        except UnicodeError as exc:  # the idna codec: an empty or over-long label ('a..b', '../x')
            raise HostUnreachable(
                f"SSH host {t.hostname!r} (alias {t.alias!r}) is not a valid host name. "
                "Check the name, or add a Host entry to ~/.ssh/config."
            ) from exc
        except OSError as exc:
            raise HostUnreachable(f"cannot reach {t.display}: {exc.strerror or exc}") from exc
        # paramiko leaves Nagle on; every small exec round trip then waits ~45 ms for a delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _connect(self) -> paramiko.SSHClient:
        t = self.target
        client = paramiko.SSHClient()
        known = Path(t.known_hosts).expanduser()
        if known.is_file():
            client.load_host_keys(str(known))
        client.set_missing_host_key_policy(_RefuseUnknownHostKey(t))
        sock = self._open_socket()
        try:
            client.connect(
                t.hostname,
                port=t.port,
                username=t.user,
                key_filename=[k for k in t.key_files if Path(k).is_file()] or None,
                allow_agent=self.options.allow_agent and not t.identities_only,
                look_for_keys=self.options.look_for_keys and not t.identities_only,
                timeout=self.options.connect_timeout_s,
                banner_timeout=self.options.connect_timeout_s,
                auth_timeout=self.options.connect_timeout_s,
                sock=sock,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            error = HostKeyChanged(
                f"WARNING: the host key of {t.display} CHANGED. known_hosts ({t.known_hosts}) has "
                f"{exc.expected_key.get_name()} {fingerprint(exc.expected_key)}, the server sent "
                f"{exc.key.get_name()} {fingerprint(exc.key)}. Someone may be intercepting the connection, "
                "or the host was reinstalled. Refused; confirm with the cluster's admins before trusting the new key.",
                host=known_hosts_name(t.hostname, t.port),
                key_type=exc.key.get_name(),
                fingerprint=fingerprint(exc.key),
                expected=fingerprint(exc.expected_key),
            )
            error.connection = self
            raise error from exc
        except HostKeyError as exc:
            client.close()
            exc.connection = self
            raise
        except paramiko.AuthenticationException as exc:
            client.close()
            tried = ", ".join(t.key_files) or "agent and default keys"
            raise AuthenticationFailed(
                f"{t.display} refused authentication as {t.user or '(default user)'} (tried {tried}): {exc}. "
                "Check User and IdentityFile in ~/.ssh/config, or load the key into ssh-agent."
            ) from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            # Past the handshake but not logged in, the failure is about our keys (an unreadable or
            # unsupported key file raises SSHException, not AuthenticationException): say so.
            handshaken = client.get_transport() is not None and client.get_transport().is_active()
            client.close()
            if handshaken:
                tried = ", ".join(t.key_files) or "agent and default keys"
                raise AuthenticationFailed(
                    f"{t.display} could not be logged into as {t.user or '(default user)'}: {exc} "
                    f"(keys tried: {tried}). Check IdentityFile in ~/.ssh/config; convert an old PEM key with "
                    "`ssh-keygen -p -f KEY` or load it into ssh-agent."
                ) from exc
            reason = str(exc) or ("the server closed the connection" if isinstance(exc, EOFError)
                                  else type(exc).__name__)
            raise HostUnreachable(f"SSH handshake with {t.display} failed: {reason}. Is {t.display} an SSH "
                                  "server (check HostName and Port in ~/.ssh/config)?") from exc
        transport = client.get_transport()
        transport.set_keepalive(self.options.keepalive_s)
        return client

    def _reconnect_with_backoff(self, cause: BaseException) -> None:
        last: BaseException = cause
        for attempt in range(self.options.reconnect_attempts):
            self.options.sleep(self.options.backoff_s[min(attempt, len(self.options.backoff_s) - 1)])
            try:
                with self._lock:
                    self._drop()
                self.open()
                return
            except (HostKeyError, AuthenticationFailed):
                raise
            except (SshError, *CONNECTION_ERRORS) as exc:  # still down; back off and retry
                last = exc
        raise ConnectionLost(
            f"lost the connection to {self.target.display} and {self.options.reconnect_attempts} "
            f"reconnect attempts failed: {last or type(last).__name__}"
        ) from cause

    @contextmanager
    def _healing(self, idempotent: bool) -> Iterator[None]:
        """Run the body; if the connection dropped, reconnect (and let the caller retry if idempotent)."""
        try:
            yield
        except (HostKeyError, AuthenticationFailed, CommandFailed):
            raise
        except CONNECTION_ERRORS as exc:
            if self.is_connected:  # the connection is fine: this is the operation's own error
                raise
            self._reconnect_with_backoff(exc)
            if not idempotent:
                raise ConnectionLost(
                    f"the connection to {self.target.display} dropped while a non-repeatable command ran; "
                    "reconnected, but the command's outcome is unknown"
                ) from exc
            raise _Retry from exc

    def _with_retry(self, fn, idempotent: bool = True):
        for _ in range(self.options.reconnect_attempts + 1):
            try:
                with self._healing(idempotent):
                    self.open()
                    return fn()
            except _Retry:
                continue
        raise ConnectionLost(f"the connection to {self.target.display} keeps dropping")

    # --- host keys ---------------------------------------------------------------------------

    def fetch_host_key(self) -> paramiko.PKey:
        """The key the server presents (no authentication, no trust decision)."""
        sock = self._open_socket()
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=self.options.connect_timeout_s)
            return transport.get_remote_server_key()
        finally:
            transport.close()

    def trust_host_key(self, expected_fingerprint: str | None = None, *, replace: bool = False) -> str:
        """Record the server's current host key in known_hosts; returns its fingerprint.

        `expected_fingerprint` (what the user confirmed) must match the key fetched now, so the key
        that is trusted is the one that was shown. A changed key is only replaced with `replace=True`.
        """
        key = self.fetch_host_key()
        fp = fingerprint(key)
        if expected_fingerprint is not None and expected_fingerprint != fp:
            raise HostKeyChanged(
                f"the server now presents {fp}, not the {expected_fingerprint} that was confirmed; not trusted",
                host=known_hosts_name(self.target.hostname, self.target.port),
                key_type=key.get_name(),
                fingerprint=fp,
                expected=expected_fingerprint,
            )
        path = Path(self.target.known_hosts).expanduser()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = known_hosts_name(self.target.hostname, self.target.port)
        host_keys = paramiko.HostKeys(str(path)) if path.is_file() else paramiko.HostKeys()
        existing = host_keys.lookup(name)
        if existing and key.get_name() in existing and existing[key.get_name()] != key and not replace:
            raise HostKeyChanged(
                f"known_hosts already has a different {key.get_name()} key for {name}; pass replace=True "
                "only after confirming the new key with the cluster's admins",
                host=name,
                key_type=key.get_name(),
                fingerprint=fp,
                expected=fingerprint(existing[key.get_name()]),
            )
        if replace:
            host_keys.add(name, key.get_name(), key)
            host_keys.save(str(path))
        else:
            with open(path, "a", encoding="ascii") as f:
                f.write(f"{name} {key.get_name()} {key.get_base64()}\n")
        os.chmod(path, 0o600)
        return fp

    # --- commands ----------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout_s: float | None = 60.0,
        stdin: bytes | None = None,
        idempotent: bool = True,
        command: str | None = None,
    ) -> CommandResult:
        """Run argv (quoted in `remote.quoting`) in its own channel; retried after a reconnect if idempotent.

        `command` replaces the quoted argv with a prebuilt line (from `remote.quoting` helpers only).
        """
        line = command if command is not None else join_argv(argv)
        result = self._with_retry(lambda: self._exec(tuple(argv), line, timeout_s, stdin), idempotent)
        if check and not result.ok:
            raise CommandFailed(result, self.target.display)
        return result

    def _exec(self, argv: tuple[str, ...], line: str, timeout_s: float | None, stdin: bytes | None) -> CommandResult:
        channel = self._client.get_transport().open_session(timeout=self.options.connect_timeout_s)
        try:
            channel.exec_command(line)
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            out, err = bytearray(), bytearray()
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            while True:
                progressed = False
                if channel.recv_ready():
                    out += channel.recv(1 << 16)
                    progressed = True
                if channel.recv_stderr_ready():
                    err += channel.recv_stderr(1 << 16)
                    progressed = True
                if progressed:
                    continue
                # Done when the server sent EOF (all data is in the buffers) and the exit status.
                # OpenSSH may send exit-status before the last data, so the status alone is not enough.
                if (channel.eof_received or channel.closed) and channel.exit_status_ready():
                    while channel.recv_ready():
                        out += channel.recv(1 << 16)
                    while channel.recv_stderr_ready():
                        err += channel.recv_stderr(1 << 16)
                    break
                if channel.closed or not channel.get_transport().is_active():
                    raise EOFError(f"channel closed before `{line}` reported an exit status")
                if deadline is not None and time.monotonic() > deadline:
                    raise SshError(f"`{line}` on {self.target.display} did not finish within {timeout_s:.0f} s")
                channel.status_event.wait(0.002)
            exit_code = channel.recv_exit_status()
            if exit_code == -1:  # paramiko's "closed without an exit-status message"
                if not channel.get_transport().is_active():
                    raise EOFError(f"the connection dropped while `{line}` ran")
                raise SshError(f"`{line}` on {self.target.display} ended without an exit status (killed?)")
            return CommandResult(
                argv=argv,
                command=line,
                exit_code=exit_code,
                stdout=out.decode("utf-8", "replace"),
                stderr=err.decode("utf-8", "replace"),
            )
        finally:
            channel.close()

    # --- SFTP --------------------------------------------------------------------------------

    def _sftp_call(self, fn, idempotent: bool = True):
        def call():
            with self._sftp_lock:
                if self._sftp is None:
                    self._sftp = self._client.open_sftp()
                return fn(self._sftp)

        return self._with_retry(call, idempotent)

    def home(self) -> str:
        return self._sftp_call(lambda sftp: sftp.normalize("."))

    def stat(self, path: str) -> paramiko.SFTPAttributes | None:
        def stat(sftp):
            try:
                return sftp.stat(path)
            except FileNotFoundError:
                return None

        return self._sftp_call(stat)

    def makedirs(self, path: str, mode: int = 0o700) -> None:
        """mkdir -p with `mode` for every directory created (existing ones are left alone)."""

        def makedirs(sftp):
            parts = path.rstrip("/").split("/")
            for i in range(2, len(parts) + 1):
                prefix = "/".join(parts[:i]) or "/"
                try:
                    attrs = sftp.stat(prefix)
                    if not stat_module.S_ISDIR(attrs.st_mode):
                        raise SshError(f"{prefix} exists on {self.target.display} and is not a directory")
                except FileNotFoundError:
                    sftp.mkdir(prefix, mode)
                    sftp.chmod(prefix, mode)  # mkdir's mode is masked by the server's umask

        self._sftp_call(makedirs)

    def mkdir_exclusive(self, path: str, mode: int = 0o700) -> None:
        """Create exactly this directory; fails if it exists (no two runs share a directory)."""

        def mkdir(sftp):
            try:
                sftp.mkdir(path, mode)
            except OSError as exc:
                if sftp_exists(sftp, path):
                    raise SshError(f"{path} already exists on {self.target.display}; run ids must be unique") from exc
                raise
            sftp.chmod(path, mode)

        self._sftp_call(mkdir, idempotent=False)

    def put_bytes(self, path: str, data: bytes, mode: int = 0o600) -> None:
        def put(sftp):
            with sftp.open(path, "wb") as f:
                f.set_pipelined(True)
                f.write(data)
            sftp.chmod(path, mode)

        self._sftp_call(put)

    def get_bytes(self, path: str) -> bytes:
        def get(sftp):
            with sftp.open(path, "rb") as f:
                f.prefetch()
                return f.read()

        return self._sftp_call(get)

    def read_from(self, path: str, offset: int, limit: int = 1 << 20) -> bytes | None:
        """Bytes of `path` from `offset` (at most `limit`); None if the file doesn't exist yet."""

        def read(sftp):
            try:
                f = sftp.open(path, "rb")
            except FileNotFoundError:
                return None
            with f:
                f.seek(offset)
                return f.read(limit)

        return self._sftp_call(read)

    def listdir(self, path: str) -> list[str]:
        return self._sftp_call(lambda sftp: sorted(sftp.listdir(path)))

    def list_files(self, path: str) -> list[str]:
        """Names of the regular files directly in `path` (no directories, no links)."""
        return self._sftp_call(
            lambda sftp: sorted(a.filename for a in sftp.listdir_attr(path) if stat_module.S_ISREG(a.st_mode or 0))
        )

    def remove_tree(self, path: str) -> None:
        """Delete a directory tree we created (used to undo a half-prepared run)."""

        def remove(sftp, p=path):
            for entry in sftp.listdir_attr(p):
                child = f"{p}/{entry.filename}"
                if stat_module.S_ISDIR(entry.st_mode):
                    remove(sftp, child)
                else:
                    sftp.remove(child)
            sftp.rmdir(p)

        self._sftp_call(remove)


def sftp_exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.stat(path)
        return True
    except OSError as exc:
        if getattr(exc, "errno", None) in (errno.ENOENT, None) or isinstance(exc, FileNotFoundError):
            return False
        raise


def trust_host_key(error: HostKeyError) -> str:
    """Trust the key a HostKeyUnknown/HostKeyChanged error showed (what a confirm dialog calls)."""
    return error.trust()


class _Retry(Exception):
    """Internal: the connection was re-established; repeat the idempotent operation."""
