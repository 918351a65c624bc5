"""The one place where an argument list becomes a POSIX shell command line.

Every remote command dinf runs is built as an argv list and turned into a string here, with
`shlex.quote` on every element, so a run name or path holding quotes, `;`, `$()`, backticks,
newlines or spaces reaches the remote program as one literal argument and is never executed.
It assumes a POSIX shell on the far end (sshd runs commands with the user's login shell; bash,
dash, zsh and ksh all honour single quotes). It does not build sbatch scripts (`remote.slurm`), but
it quotes their `#SBATCH` lines (`sbatch_directive`), which sbatch reads with its own parser.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence


def join_argv(argv: Sequence[str]) -> str:
    """`argv` as one shell command line; each element stays exactly one word."""
    if not argv:
        raise ValueError("an empty command has nothing to run")
    for position, arg in enumerate(argv):
        if not isinstance(arg, str):
            raise TypeError(f"argument {position} of {list(argv)!r} is {type(arg).__name__}, not str")
        if "\x00" in arg:
            raise ValueError(f"argument {position} contains a NUL byte, which no shell can pass")
    return shlex.join(argv)


def quote(word: str) -> str:
    """One word, quoted for a POSIX shell (for script lines assembled by `remote.slurm`)."""
    if "\x00" in word:
        raise ValueError("a NUL byte cannot be passed through a shell")
    return shlex.quote(word)


def export_lines(env: Mapping[str, str]) -> list[str]:
    """`export NAME=value` lines, values quoted; names must be valid shell identifiers."""
    lines = []
    for name in sorted(env):
        if not name.isidentifier() or not name.isascii():
            raise ValueError(f"environment variable name {name!r} is not a valid shell identifier")
        lines.append(f"export {name}={quote(str(env[name]))}")
    return lines


SECTION_MARKER = "@@dinf-section@@"


def join_sections(commands: Sequence[Sequence[str]]) -> str:
    """Several argv lists as one command line that runs them all, in one round trip.

    Each command's output is followed by a marker line carrying its exit code, so
    `split_sections` can hand every command its own stdout and status. stderr is shared.
    """
    parts = [f"{join_argv(argv)}; printf '\\n{SECTION_MARKER} %s\\n' \"$?\"" for argv in commands]
    return "; ".join(parts)


def split_sections(stdout: str, count: int) -> list[tuple[int, str]]:
    """Undo `join_sections`: [(exit_code, stdout)] per command, in order (trailing newlines dropped)."""
    sections: list[tuple[int, str]] = []
    current: list[str] = []
    for line in stdout.split("\n"):
        if line.startswith(SECTION_MARKER + " "):
            # join_sections printed a newline before the marker (the output may lack its own).
            sections.append((int(line.split()[1]), "\n".join(current).rstrip("\n")))
            current = []
        else:
            current.append(line)
    if len(sections) != count:
        raise ValueError(f"expected {count} command sections in the output, found {len(sections)}")
    return sections


# Written bare in a #SBATCH line: nothing sbatch's directive parser treats specially.
_DIRECTIVE_BARE = re.compile(r"^[A-Za-z0-9_.,:=+\-/@%\[\]&|!()*]+$")


def sbatch_directive(option: str) -> str:
    """`#SBATCH option`, with `option` arriving at sbatch as exactly one argument.

    sbatch reads directives with its own small parser, not a shell (src/sbatch/opt.c,
    `_get_argument`): words split at whitespace, an unquoted '#' starts a comment, single or double
    quotes group, and a backslash escapes the next character, inside quotes too. So a value that is
    not plainly safe is double-quoted with '\\' and '"' escaped: `--comment="it's \\"x\\" # y"`.
    A newline or other control character would end or garble the line and is refused.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in option):
        raise ValueError(f"{option!r} holds a control character (newline, tab, ...), which a #SBATCH line cannot carry")
    name, equals, value = option.partition("=")
    return "#SBATCH " + _directive_word(name) + (equals + _directive_word(value) if equals else "")


def _directive_word(text: str) -> str:
    if _DIRECTIVE_BARE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
