"""`dinf completion bash|zsh|tcsh`: the shell completion script, generated from dinf's own parser by shtab.

shtab writes a static script: commands, flags and choices complete in the shell itself, with no
Python started per TAB (argcomplete would start dinf at every TAB, a few hundred milliseconds
each). Only what the parser can't know is asked at TAB time, from dinf's light commands, which
read without the service (tui/cli/main.py): run ids from `dinf runs --no-refresh` (no cluster is
polled) and cluster names from `dinf clusters` (the configuration only), in bash and zsh. Files
and directories complete as files and directories. tcsh gets the static part only.

Which argument completes how is decided here, by its destination name, when the script is made:
building the parser for every other command never imports shtab.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

SHELLS = ("bash", "zsh", "tcsh")

RUN_IDS = {"bash": "_dinf_run_ids", "zsh": "_dinf_run_ids"}
CLUSTERS = {"bash": "_dinf_clusters", "zsh": "_dinf_clusters"}

# The command that asks is the one being completed (`dinf`, or `.venv/bin/dinf` as typed), so the
# answer comes from the same installation and the same DINF_* environment. Its errors are dropped:
# a TAB that finds no database offers nothing rather than printing into the command line.
PREAMBLE = {
    "bash": """
_dinf_run_ids() {
  compgen -W "$("${COMP_WORDS[0]}" runs --no-refresh 2>/dev/null | awk 'NR > 1 {print $1}')" -- "$1"
}
_dinf_clusters() {
  compgen -W "$("${COMP_WORDS[0]}" clusters 2>/dev/null | awk 'NR > 1 {print $1}')" -- "$1"
}
""",
    # zsh: the first word of the line ($words is shifted past the sub-command by then).
    "zsh": """
_dinf_run_ids() {
  local -a ids
  ids=(${(f)"$("${${(z)BUFFER}[1]}" runs --no-refresh 2>/dev/null | awk 'NR > 1 {print $1}')"})
  compadd -a ids
}
_dinf_clusters() {
  local -a names
  names=(${(f)"$("${${(z)BUFFER}[1]}" clusters 2>/dev/null | awk 'NR > 1 {print $1}')"})
  compadd -a names
}
""",
}


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell`, for `parser` (dinf's own)."""
    import shtab  # only this command needs it

    by_dest = {
        "run": RUN_IDS, "runs": RUN_IDS, "baseline": RUN_IDS,
        "cluster": CLUSTERS,
        "spec": shtab.FILE, "output": shtab.FILE, "db": shtab.FILE, "config": shtab.FILE,
        "prompts_file": shtab.FILE,
        "path": shtab.DIR, "directories": shtab.DIR, "checkpoint": shtab.DIR, "write_specs": shtab.DIR,
    }
    for action in _actions(parser):
        if action.dest in by_dest:
            action.complete = by_dest[action.dest]  # type: ignore[attr-defined]  # shtab reads it
    return shtab.complete(parser, shell=shell, preamble=PREAMBLE)


def _actions(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """Every argument of the parser and of its sub-commands, however deep."""
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)
