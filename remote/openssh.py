"""The OpenSSH transport: what `remote.ssh.SshConnection` offers the Slurm backend, through the `ssh` binary.

For logins paramiko can't or shouldn't make itself: GSSAPI/Kerberos, hardware keys, site ssh
wrappers, and above all a 2FA login the user already made with their own ControlMaster, which dinf
then reuses without asking for another code. Every operation is one `ssh [options] HOST COMMAND`
whose COMMAND comes from `remote.quoting`; files move through small POSIX shell commands run the
same way (cat, stat, tail, find, mkdir; GNU coreutils, as on any Linux login node), not SFTP.

Multiplexing: if the user's ssh configuration (as `ssh -G` reports it) names a ControlPath, that is
used untouched: their master, their settings. Otherwise dinf asks ssh for a master of its own
(ControlMaster=auto, a private ControlPath, ControlPersist), so one login serves every command.
`control_path` names the socket explicitly (and is then opened if it is not there yet).

Host keys are OpenSSH's business: known_hosts and StrictHostKeyChecking as the user configured them,
never weakened. Prompts: where nobody can answer (no terminal, or the Textual app owns it) ssh runs
with BatchMode=yes and fails at once instead of asking; in a terminal it asks there itself.

What it doesn't: quote (`remote.quoting`), know Slurm (`remote.slurm_cluster`), or repeat a command
that may have run when the connection dropped under it.
"""

from __future__ import annotations

import errno
import os
import re
import stat as stat_module
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from remote.errors import AuthenticationFailed, ConnectionLost, HostKeyNotVerified, HostUnreachable, SshError
from remote.hostnames import split_host_spec
from remote.quoting import join_argv
from remote.ssh import CommandFailed, CommandResult

MISSING = 44
"""Exit status the file commands below use for 'no such file' (no coreutils program exits 44)."""

# Each takes its arguments as "$1", "$2", ... (argv after `sh -c SCRIPT sh`): nothing is spliced in.
_HOME = 'cd && pwd -P'
_STAT = '[ -e "$1" ] || exit 44; exec stat -L -c "%s %f" -- "$1"'
_CAT = '[ -e "$1" ] || exit 44; exec cat -- "$1"'
_READ_FROM = '[ -e "$1" ] || exit 44; exec dd if="$1" iflag=skip_bytes,count_bytes skip="$2" count="$3" bs=64K status=none'
_MAKEDIRS = 'umask "$2" && mkdir -p -- "$1"'
_PUT = 'umask 077 && cat > "$1" && chmod "$2" -- "$1"'
_LIST = '[ -e "$1" ] || exit 44; exec find "$1" -mindepth 1 -maxdepth 1 -printf "%f\\0"'
_LIST_FILES = '[ -e "$1" ] || exit 44; exec find "$1" -mindepth 1 -maxdepth 1 -type f -printf "%f\\0"'

# ssh's own failures (it exits 255 for them, as a remote command may too): what its stderr says.
_HOST_KEY = re.compile(r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|"
                       r"host key for .* has changed|No \S+ host key is known")
_AUTH = re.compile(r"Permission denied \(|Too many authentication failures")
_UNREACHABLE = re.compile(r"Could not resolve hostname|Connection refused|Connection timed out|No route to host|"
                          r"Network is unreachable|Name or service not known|kex_exchange_identification|"
                          r"banner exchange|Could not resolve proxy|ssh: connect to host")
_DROPPED = re.compile(r"Connection closed by|Connection reset|Broken pipe|closed by remote host|client_loop:|"
                      r"mux_client|Control socket connect|ControlSocket .* already exists|"
                      r"packet_write_wait|Timeout, server .* not responding")


@dataclass(frozen=True)
class RemoteStat:
    """What `stat` tells of a remote file (the fields the Slurm backend reads)."""

    st_size: int
    st_mode: int


@dataclass
class OpenSshOptions:
    """How `ssh` is run. Everything else comes from the user's ssh configuration."""

    ssh: str = "ssh"
    ssh_config: str | None = None
    """`ssh -F FILE`; None: ssh's own (~/.ssh/config, then /etc/ssh/ssh_config)."""
    control_path: str | None = None
    """A ControlMaster socket to use (opened if absent); None: the user's, else dinf's own."""
    control_persist: str = "10m"
    """How long a master dinf opened outlives its last command."""
    batch_mode: bool = True
    """BatchMode=yes: never prompt (no terminal, or the app owns it); False lets ssh ask on the terminal."""
    connect_timeout_s: float = 10.0
    keepalive_s: int = 15
    reconnect_attempts: int = 4
    backoff_s: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    run_process: Callable[..., subprocess.CompletedProcess] = field(default=subprocess.run, repr=False)


def private_control_dir() -> str | None:
    """A directory only this user can enter, for dinf's own ControlMaster sockets; None if none is safe.

    $XDG_RUNTIME_DIR when there is one; else /tmp/dinf-ssh-UID, refused if someone else made it
    (a socket in a directory another user controls could be swapped for theirs).
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        base = os.path.join(runtime, "dinf-ssh")
    else:
        base = os.path.join(tempfile.gettempdir(), f"dinf-ssh-{os.getuid()}")
    try:
        os.mkdir(base, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    info = os.lstat(base)
    if not stat_module.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return base


class OpenSshConnection:
    """One cluster reached through the user's `ssh`; the operations `SlurmCluster` uses."""

    def __init__(self, host: str, options: OpenSshOptions | None = None):
        """`host`: a Host alias from the ssh configuration, or user@hostname[:port]."""
        if not host or host.startswith("-") or any(c.isspace() for c in host):
            raise SshError(f"SSH host {host!r} is not a host name or alias; give e.g. 'cluster' or 'me@login.example.org'")
        user, hostname, port = split_host_spec(host)
        if port is not None and not port.isdigit():
            raise SshError(f"SSH port in {host!r} is not a number")
        self.host = host
        self.destination = f"{user}@{hostname}" if user else hostname
        self.port = port
        self.options = options or OpenSshOptions()
        self._control: list[str] | None = None
        self.connects = 0
        """How many times open() reached the host."""

    @property
    def display(self) -> str:
        return f"{self.host} (openssh)"

    # --- the ssh command line ----------------------------------------------------------------

    def _config_args(self) -> list[str]:
        args = ["-F", os.path.expanduser(self.options.ssh_config)] if self.options.ssh_config else []
        return args + (["-p", self.port] if self.port else [])

    def control_options(self) -> list[str]:
        """The ControlMaster options dinf adds (none when the user's configuration has a ControlPath)."""
        if self._control is None:
            path = self.options.control_path
            if path is None:
                if self._configured_control_path():
                    self._control = []
                    return self._control
                directory = private_control_dir()
                if directory is None:  # no safe place for a socket: one login per command, still correct
                    self._control = []
                    return self._control
                path = os.path.join(directory, "%C")
            self._control = ["-o", "ControlMaster=auto", "-o", f"ControlPath={os.path.expanduser(path)}",
                             "-o", f"ControlPersist={self.options.control_persist}"]
        return self._control

    def _configured_control_path(self) -> str | None:
        """The ControlPath the user's ssh configuration gives this host (`ssh -G`: no connection made)."""
        try:
            done = self.options.run_process(
                [self.options.ssh, "-G", *self._config_args(), "--", self.destination],
                capture_output=True, timeout=self.options.connect_timeout_s, stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SshError(f"cannot run {self.options.ssh!r} to read the ssh configuration of {self.host}: {exc}") from exc
        if done.returncode != 0:
            raise SshError(f"ssh cannot use the configuration for {self.host}: "
                           f"{done.stderr.decode('utf-8', 'replace').strip()[-500:]}")
        for line in done.stdout.decode("utf-8", "replace").splitlines():
            key, _, value = line.partition(" ")
            if key == "controlpath" and value.strip().lower() != "none":
                return value.strip()
        return None

    def ssh_argv(self, command_line: str, *extra: str) -> list[str]:
        """The local argv that runs `command_line` (already quoted by `remote.quoting`) on the host."""
        o = self.options
        args = [o.ssh, *self._config_args(), *self.control_options(),
                "-o", f"ConnectTimeout={max(1, round(o.connect_timeout_s))}",
                "-o", f"ServerAliveInterval={o.keepalive_s}", "-T", *extra]
        if o.batch_mode:
            args += ["-o", "BatchMode=yes"]
        return [*args, "--", self.destination, command_line]

    # --- running -----------------------------------------------------------------------------

    def _call(self, line: str, stdin: bytes | None, timeout_s: float | None) -> subprocess.CompletedProcess:
        argv = self.ssh_argv(line)
        try:
            return self.options.run_process(
                argv, input=stdin if stdin is not None else None,
                stdin=subprocess.DEVNULL if stdin is None else None,
                capture_output=True, timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as exc:
            raise SshError(f"`{line}` on {self.display} did not finish within {timeout_s:.0f} s") from exc
        except OSError as exc:
            raise SshError(f"cannot run {self.options.ssh!r} ({exc.strerror or exc}); is OpenSSH's client "
                           "installed? (transport = \"openssh\" needs it)") from exc

    def _ssh_failure(self, done: subprocess.CompletedProcess) -> SshError | None:
        """ssh's own failure to reach or log into the host, told apart from a command that exited 255."""
        if done.returncode != 255:
            return None
        stderr = done.stderr.decode("utf-8", "replace").strip()
        tail = "\n".join(stderr.splitlines()[-6:]) or "(ssh said nothing)"
        if _HOST_KEY.search(stderr):
            return HostKeyNotVerified(
                f"OpenSSH did not accept the host key of {self.host}:\n{tail}\nVerify it: run `ssh {self.host}` in a "
                "terminal and compare the fingerprint it shows with the one the cluster's admins publish (OpenSSH "
                "records it in known_hosts). dinf never relaxes StrictHostKeyChecking."
            )
        if _AUTH.search(stderr):
            hint = ""
            if "keyboard-interactive" in stderr and self.options.batch_mode:
                hint = (" The server wants keyboard-interactive answers (a one-time code?) and nobody can be asked "
                        "here (ssh runs with BatchMode=yes). Log in once in a terminal so dinf reuses that "
                        f"connection: `{self.login_hint()}`.")
            return AuthenticationFailed(f"{self.host} refused the login through ssh:\n{tail}\n{hint}".rstrip())
        if _UNREACHABLE.search(stderr):
            return HostUnreachable(f"cannot reach {self.host} through ssh:\n{tail}")
        if _DROPPED.search(stderr):
            return ConnectionLost(f"the ssh connection to {self.host} dropped:\n{tail}")
        return None

    def login_hint(self) -> str:
        """The command that opens a master this transport will reuse (for a login needing a person)."""
        control = self.control_options()
        path = next((c.split("=", 1)[1] for c in control if c.startswith("ControlPath=")), None)
        args = ["ssh", *self._config_args()]
        if path:
            args += ["-o", "ControlMaster=auto", "-o", f"ControlPath={path}", "-o",
                     f"ControlPersist={self.options.control_persist}"]
        return join_argv([*args, self.destination, "true"])

    def _exec(self, line: str, *, stdin: bytes | None = None, timeout_s: float | None = 60.0,
              idempotent: bool = True) -> subprocess.CompletedProcess:
        last: SshError | None = None
        for attempt in range(self.options.reconnect_attempts + 1):
            if attempt:
                backoff = self.options.backoff_s
                self.options.sleep(backoff[min(attempt - 1, len(backoff) - 1)])
            done = self._call(line, stdin, timeout_s)
            failure = self._ssh_failure(done)
            if failure is None:
                return done
            if not isinstance(failure, ConnectionLost):
                raise failure
            if not idempotent:
                raise ConnectionLost(f"{failure}\nwhile a non-repeatable command ran: `{line}`; its outcome is "
                                     "unknown") from failure
            last = failure
        raise ConnectionLost(f"the ssh connection to {self.host} keeps dropping; last: {last}")

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
        """Run argv (quoted in `remote.quoting`) on the host; `SshConnection.run`'s contract."""
        line = command if command is not None else join_argv(argv)
        done = self._exec(line, stdin=stdin, timeout_s=timeout_s, idempotent=idempotent)
        result = CommandResult(argv=tuple(argv), command=line, exit_code=done.returncode,
                               stdout=done.stdout.decode("utf-8", "replace"),
                               stderr=done.stderr.decode("utf-8", "replace"))
        if check and not result.ok:
            raise CommandFailed(result, self.display)
        return result

    def _script(self, script: str, *args: str, stdin: bytes | None = None,
                idempotent: bool = True) -> subprocess.CompletedProcess:
        """`sh -c SCRIPT sh ARGS...`: fixed shell text, the variable parts passed as arguments."""
        return self._exec(join_argv(["sh", "-c", script, "sh", *args]), stdin=stdin, idempotent=idempotent)

    def _failed(self, done: subprocess.CompletedProcess, what: list[str]) -> CommandFailed:
        return CommandFailed(CommandResult(argv=tuple(what), command=join_argv(what), exit_code=done.returncode,
                                           stdout="", stderr=done.stderr.decode("utf-8", "replace")), self.display)

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """Whether a master connection (the user's or dinf's) is up; False without multiplexing."""
        argv = [self.options.ssh, *self._config_args(), *self.control_options(), "-O", "check", "--",
                self.destination]
        done = self.options.run_process(argv, capture_output=True, stdin=subprocess.DEVNULL,
                                        timeout=self.options.connect_timeout_s)
        return done.returncode == 0

    def open(self) -> OpenSshConnection:
        """Reach the host once (starting the master, or proving the user's is there)."""
        self._exec(join_argv(["true"]))
        self.connects += 1
        return self

    def close(self) -> None:
        """Nothing to release: a master dinf opened ends ControlPersist after its last use, and the
        user's master is theirs."""

    def __enter__(self) -> OpenSshConnection:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- files -------------------------------------------------------------------------------

    def home(self) -> str:
        done = self._script(_HOME)
        if done.returncode != 0:
            raise self._failed(done, ["pwd"])
        return done.stdout.decode("utf-8", "replace").strip()

    def stat(self, path: str) -> RemoteStat | None:
        done = self._script(_STAT, path)
        if done.returncode == MISSING:
            return None
        if done.returncode != 0:
            raise self._failed(done, ["stat", path])
        size, mode = done.stdout.decode().split()
        return RemoteStat(st_size=int(size), st_mode=int(mode, 16))

    def makedirs(self, path: str, mode: int = 0o700) -> None:
        """mkdir -p with `mode` for every directory created (existing ones are left alone)."""
        done = self._script(_MAKEDIRS, path, f"{~mode & 0o777:03o}")
        if done.returncode != 0:
            raise self._failed(done, ["mkdir", "-p", path])

    def mkdir_exclusive(self, path: str, mode: int = 0o700) -> None:
        """Create exactly this directory; fails if it exists (no two runs share a directory)."""
        argv = ["mkdir", "-m", f"{mode:o}", "--", path]
        done = self._exec(join_argv(argv), idempotent=False)
        if done.returncode != 0:
            if self.stat(path) is not None:
                raise SshError(f"{path} already exists on {self.display}; run ids must be unique")
            raise self._failed(done, argv)

    def put_bytes(self, path: str, data: bytes, mode: int = 0o600) -> None:
        done = self._script(_PUT, path, f"{mode:o}", stdin=data)
        if done.returncode != 0:
            raise self._failed(done, ["put", path])

    def get_bytes(self, path: str) -> bytes:
        done = self._script(_CAT, path)
        if done.returncode == MISSING:
            raise FileNotFoundError(errno.ENOENT, f"no such file on {self.display}", path)
        if done.returncode != 0:
            raise self._failed(done, ["cat", path])
        return done.stdout

    def read_from(self, path: str, offset: int, limit: int = 1 << 20) -> bytes | None:
        """Bytes of `path` from `offset` (at most `limit`); None if the file doesn't exist yet."""
        done = self._script(_READ_FROM, path, str(offset), str(limit))
        if done.returncode == MISSING:
            return None
        if done.returncode != 0:
            raise self._failed(done, ["read", path])
        return done.stdout

    def _names(self, script: str, path: str) -> list[str]:
        done = self._script(script, path)
        if done.returncode == MISSING:
            raise FileNotFoundError(errno.ENOENT, f"no such directory on {self.display}", path)
        if done.returncode != 0:
            raise self._failed(done, ["find", path])
        return sorted(name.decode("utf-8", "surrogateescape") for name in done.stdout.split(b"\0") if name)

    def listdir(self, path: str) -> list[str]:
        return self._names(_LIST, path)

    def list_files(self, path: str) -> list[str]:
        """Names of the regular files directly in `path` (no directories, no links)."""
        return self._names(_LIST_FILES, path)

    def remove_tree(self, path: str) -> None:
        """Delete a directory tree we created (used to undo a half-prepared run)."""
        argv = ["rm", "-rf", "--", path]
        done = self._exec(join_argv(argv))
        if done.returncode != 0:
            raise self._failed(done, argv)
