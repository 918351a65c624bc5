"""`dinf completion`: the script, sourced in a real bash and asked to complete as a TAB would ask.

Bash calls the registered function with COMP_WORDS / COMP_CWORD set and reads COMPREPLY back;
`complete_line` does exactly that in a `bash -c`, with the script from `dinf completion bash`.
"""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from tests.cli.conftest import DINF, FIXTURE_BUNDLE, DinfCommand
from tests.cli.test_cli_startup import SERVICE, among, traced
from tui.cli.main import EXIT_OK


def bash(dinf: DinfCommand, script: str) -> str:
    env = {**dinf.env, "PATH": f"{DINF.parent}{os.pathsep}{dinf.env.get('PATH', '')}"}  # `dinf` as a user types it
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def complete_line(dinf: DinfCommand, *words: str) -> list[str]:
    """What bash offers after `dinf WORDS` (the last word is the one being typed, "" for a new one)."""
    words = ("dinf", *words)
    return bash(dinf, f"""
        source <(dinf completion bash)
        complete_dinf=$(complete -p dinf | awk '{{print $(NF - 1)}}')  # the function after -F
        COMP_WORDS=({shlex.join(words)})
        COMP_CWORD={len(words) - 1}
        COMP_LINE={shlex.quote(" ".join(words))}
        COMP_POINT=${{#COMP_LINE}}
        "$complete_dinf" dinf "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD - 1]}}"
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """).split()


def test_bash_script_registers_dinf(dinf):
    registered = bash(dinf, "source <(dinf completion bash); complete -p dinf").strip()
    assert registered.startswith("complete ") and " -F " in registered and registered.endswith(" dinf")


def test_commands_flags_and_choices_complete_in_bash(dinf):
    assert complete_line(dinf, "sub") == ["submit"]
    assert complete_line(dinf, "experiment", "cr") == ["create"]
    assert complete_line(dinf, "runs", "--so") == ["--sort"]
    assert complete_line(dinf, "runs", "--sort", "st") == ["state"]
    assert complete_line(dinf, "logs", "3", "--kind", "") == ["worker", "events", "launcher"]
    assert complete_line(dinf, "completion", "") == ["bash", "zsh", "tcsh"]


def test_run_ids_and_cluster_names_are_asked_from_dinf(dinf):
    assert complete_line(dinf, "show", "") == []  # no database yet: nothing offered, nothing printed
    dinf.home.mkdir(parents=True)
    (dinf.home / "config.toml").write_text('[clusters.gpu]\nhost = "login"\n')
    run_id = str(dinf("ingest", str(FIXTURE_BUNDLE), "--json").json()["run_id"])
    assert complete_line(dinf, "show", "") == [run_id]
    assert complete_line(dinf, "compare", run_id, "--baseline", "") == [run_id]
    assert sorted(complete_line(dinf, "trust", "")) == ["gpu", "local"]
    assert complete_line(dinf, "submit", "--cluster", "g") == ["gpu"]


@pytest.mark.parametrize(("shell", "marker"), [("bash", "complete -o bashdefault -F"), ("zsh", "#compdef dinf"),
                                               ("tcsh", "complete dinf")])
def test_each_shell_gets_a_script_without_the_service(dinf, shell, marker):
    result, modules = traced(dinf, "completion", shell)
    assert result.code == EXIT_OK and marker in result.out, result.err
    assert among(modules, SERVICE) == set() and "shtab" in modules
