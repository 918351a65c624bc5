"""Hostile strings through the one quoting place, the batch script and the log splitter.

Property tests: any text (quotes, ;, $(), backticks, newlines, spaces, unicode) must arrive as one
literal argument, and nothing in it may ever run (a canary file would appear).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remote import slurm
from remote.cluster import PythonEnvironment, Resources
from remote.logstream import complete_lines, follow
from remote.quoting import export_lines, join_argv, join_sections, sbatch_directive, split_sections

GOLDEN = Path(__file__).parent / "golden" / "batch_script.sbatch"

HOSTILE = [
    "a 0", 'a"=0"', "a'; echo foo", r"a\=0", "a\n0", "$(touch CANARY)", "`touch CANARY`", "x; touch CANARY",
    "ünïcödé ☃ 名前", "%j-%t", "--flag", "'", '"', "a\\", "*", "~", "$HOME", "!!", "\t", "-",
]
hostile_text = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40),
    st.lists(st.sampled_from(["'", '"', ";", "$(", ")", "`", "\n", " ", "\\", "$", "touch CANARY", "é", "&", "|"]),
             min_size=1, max_size=12).map("".join),
)


def run_shell(line: str, cwd: Path, shell: str = "bash") -> bytes:
    return subprocess.run([shell, "-c", line], cwd=cwd, capture_output=True, check=True).stdout


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(hostile_text, min_size=1, max_size=4))
def test_argv_round_trips_through_posix_shells_and_never_executes(tmp_path, args):
    line = join_argv(["printf", "%s\\0", *args])
    for shell in ("bash", "sh"):
        out = run_shell(line, tmp_path, shell)
        assert out.split(b"\x00")[:-1] == [a.encode() for a in args]
    assert not (tmp_path / "CANARY").exists()


def test_nul_bytes_and_non_strings_are_refused():
    with pytest.raises(ValueError, match="NUL"):
        join_argv(["echo", "a\x00b"])
    with pytest.raises(TypeError, match="argument 1"):
        join_argv(["echo", 3])
    with pytest.raises(ValueError, match="empty command"):
        join_argv([])


def test_exports_quote_values_and_refuse_bad_names(tmp_path):
    lines = export_lines({"A": "$(touch CANARY) x'y", "B": "1"})
    out = run_shell("; ".join(lines) + '; printf "%s|%s" "$A" "$B"', tmp_path)
    assert out.decode() == "$(touch CANARY) x'y|1" and not (tmp_path / "CANARY").exists()
    with pytest.raises(ValueError, match="not a valid shell identifier"):
        export_lines({"A;rm": "x"})


def test_sections_split_outputs_and_exit_codes(tmp_path):
    line = join_sections([["printf", "a\\nb\\n"], ["sh", "-c", "echo x; exit 3"], ["true"]])
    assert split_sections(run_shell(line, tmp_path).decode(), 3) == [(0, "a\nb"), (3, "x"), (0, "")]


# --- the batch script ------------------------------------------------------------------------------


def golden_script() -> str:
    return slurm.render_batch_script(
        run_id="20261126-abc",
        resources=Resources(nodes=2, tasks_per_node=4, gpus_per_node=4, cpus_per_task=8, partition="gpu",
                            account="proj", qos="normal", time_limit="00:30:00", constraint="h100",
                            container_image="/images/dinf.sif"),
        environment=PythonEnvironment(python="python3", venv="/shared/venvs/dinf", modules=["cuda/12.4"],
                                      setup_lines=["ulimit -n 4096"], env={"NCCL_DEBUG": "WARN", "HF_HOME": "/scratch/hf x"}),
        run_dir="/home/me/dinf-runs/runs/20261126-abc",
        command=slurm.worker_command("python3", "/home/me/dinf-runs/runs/20261126-abc/spec.json"),
    )


def test_batch_script_matches_golden_file():
    """Regenerate on purpose with DINF_UPDATE_GOLDEN=1 and review the diff."""
    script = golden_script()
    if os.environ.get("DINF_UPDATE_GOLDEN") == "1" or not GOLDEN.exists():
        GOLDEN.write_text(script)
    assert script.splitlines() == GOLDEN.read_text().splitlines()


def test_sbatch_flags_are_sorted():
    flags = [line for line in golden_script().splitlines() if line.startswith("#SBATCH")]
    assert flags == sorted(flags) and len(flags) == 9


# Free text that sbatch's directive parser would split, cut at '#', unquote or unescape if written bare.
HOSTILE_COMMENT = "it's \"q\" # not a comment \\ back $(touch CANARY) `x` ünï ☃ 100%j"
SITE_RESOURCES = {
    "nodes": 2, "tasks_per_node": 4, "gpus_per_node": 4, "gpu_type": "h100", "partition": "gpu", "account": "proj",
    "time_limit": "00:30:00", "constraint": "ib & h100", "reservation": "maint_2026", "exclusive": True,
    "dependency": "afterok:123:456", "container_image": "/images/dinf.sif",
    "container_mounts": ["/scratch/data:/data:ro", "/scratch/hf:/hf"],
    "extra_sbatch": [f"--comment={HOSTILE_COMMENT}", "--mail-type=END,FAIL", "--signal=B:USR1@90", "--requeue"],
}
GOLDEN_SITE = {"apptainer": GOLDEN.with_name("batch_script_site_options.sbatch"),
               "pyxis": GOLDEN.with_name("batch_script_pyxis.sbatch")}


def site_script(runtime: str) -> str:
    run_dir = "/home/me/dinf-runs/runs/20261126-abc"
    return slurm.render_batch_script(
        run_id="20261126-abc", resources=Resources(**SITE_RESOURCES, container_runtime=runtime),
        environment=PythonEnvironment(python="python3", venv="/shared/venvs/dinf"), run_dir=run_dir,
        command=slurm.worker_command("python3", f"{run_dir}/spec.json"),
    )


@pytest.mark.parametrize("runtime", ["apptainer", "pyxis"])
def test_batch_script_with_every_site_option_matches_its_golden_file(runtime):
    """Reservation, typed GPUs, exclusive, a dependency, extra #SBATCH lines (one of them hostile) and
    a container with bind mounts. Regenerate on purpose with DINF_UPDATE_GOLDEN=1, review the diff."""
    script, golden = site_script(runtime), GOLDEN_SITE[runtime]
    if os.environ.get("DINF_UPDATE_GOLDEN") == "1" or not golden.exists():
        golden.write_text(script)
    assert script.splitlines() == golden.read_text().splitlines()
    lines = script.splitlines()
    assert "#SBATCH --gpus-per-node=h100:4" in lines and "#SBATCH --exclusive" in lines
    own = [line for line in lines[:lines.index("# extra options, as given")] if line.startswith("#SBATCH")]
    assert own == sorted(own), "dinf's own flags stay sorted; the extra ones follow in the order given"


FAKE_SRUN_ARGV = """#!/bin/bash
# Stand-in for srun: write every argument it was given, NUL-terminated, and run nothing.
printf '%s\\0' "$@" > "$SRUN_ARGV"
"""


@pytest.mark.parametrize("runtime", ["apptainer", "pyxis"])
def test_container_words_reach_srun_as_single_arguments(tmp_path, runtime):
    """The srun line, run by bash: an image name with '#' (an NGC image), a mount path with a space
    (apptainer's; pyxis can't carry one) and `$(...)` each stay one argument."""
    (tmp_path / "srun").write_text(FAKE_SRUN_ARGV)
    (tmp_path / "srun").chmod(0o755)
    run_dir = tmp_path / ("run dir" if runtime == "apptainer" else "run$(touch${IFS}CANARY)")
    run_dir.mkdir()
    image = "nvcr.io#nvidia/pytorch:24.01-py3"
    hf = "/scratch/hf cache" if runtime == "apptainer" else "/scratch/hf`touch${IFS}CANARY`"
    resources = Resources(container_image=image, container_runtime=runtime,
                          container_mounts=[f"{hf}:/hf:ro", "/data:/data"])
    script = slurm.render_batch_script(run_id="r", resources=resources, environment=PythonEnvironment(),
                                       run_dir=str(run_dir), command=["python3", "-m", "worker"])
    argv_file = tmp_path / "argv"
    subprocess.run(["bash", "-c", script], check=True, cwd=tmp_path, env={
        **os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "SRUN_ARGV": str(argv_file)})
    argv = argv_file.read_bytes().decode().split("\0")[:-1]
    srun_own = ["--kill-on-bad-exit=1", "--unbuffered", "--nodes=1", "--ntasks-per-node=1",
                f"--output={run_dir}/logs/%j-rank%t.out"]
    if runtime == "apptainer":
        container = ["apptainer", "exec", "--nv", "--bind", f"{hf}:/hf:ro", "--bind", "/data:/data", image]
    else:  # pyxis mounts the run directory itself, where the worker reads its spec and writes results
        container = [f"--container-image={image}", f"--container-mounts={run_dir}:{run_dir},{hf}:/hf:ro,/data:/data",
                     f"--container-workdir={run_dir}"]
    assert argv == srun_own + container + ["python3", "-m", "worker"]
    assert not list(tmp_path.rglob("CANARY"))


@pytest.mark.parametrize("run_dir", ["/r/a,b", "/r/a:b", "/r/a b"])
def test_pyxis_refuses_a_run_directory_its_mount_list_cannot_carry(run_dir):
    with pytest.raises(ValueError, match=rf"container_runtime: pyxis mounts the run directory '{run_dir}'"):
        slurm.render_batch_script(run_id="r", resources=Resources(container_image="i", container_runtime="pyxis"),
                                  environment=PythonEnvironment(), run_dir=run_dir, command=["true"])
    with pytest.raises(ValueError, match="container_mounts: '/a b:/b' holds a space; pyxis hands mounts to enroot"):
        slurm.resource_flags(Resources(container_runtime="pyxis", container_mounts=["/a b:/b"]))
    assert slurm.resource_problems(Resources(container_mounts=["/a b:/b"])) == {}  # apptainer takes it


@pytest.mark.parametrize(
    ("option", "line"),
    [
        ("--hold", "#SBATCH --hold"),
        ("--mail-type=END,FAIL", "#SBATCH --mail-type=END,FAIL"),
        ("--comment=two words", '#SBATCH --comment="two words"'),
        ("--comment=a#b", '#SBATCH --comment="a#b"'),
        ("--comment=it's", '#SBATCH --comment="it\'s"'),
        ('--comment=say "x" \\ y', '#SBATCH --comment="say \\"x\\" \\\\ y"'),
        ("--comment=", '#SBATCH --comment=""'),
    ],
)
def test_sbatch_directives_are_quoted_for_sbatchs_own_parser(option, line):
    assert sbatch_directive(option) == line


@pytest.mark.parametrize("option", ["--comment=a\nb", "--comment=a\tb", "--comment=a\rb", "--comment=\x7f"])
def test_sbatch_directives_refuse_control_characters(option):
    with pytest.raises(ValueError, match="control character"):
        sbatch_directive(option)


FAKE_SRUN = """#!/bin/bash
# Stand-in for srun: drop srun's own --options, then run the task command once.
while [[ $1 == --* ]]; do shift; done
exec "$@"
"""


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=hostile_text, arg=hostile_text)
def test_script_body_passes_hostile_paths_and_args_literally(tmp_path, name, arg):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "srun").chmod(0o755)
    safe = name.replace("/", "_")
    run_dir = tmp_path / "runs" / (safe if safe not in (".", "..") else "x" + safe)
    run_dir.mkdir(parents=True, exist_ok=True)
    script = slurm.render_batch_script(
        run_id="r", resources=Resources(), environment=PythonEnvironment(env={"V": arg}), run_dir=str(run_dir),
        command=["bash", "-c", 'printf "%s\\0%s\\0%s" "$PWD" "$1" "$V"', "task", arg],
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
                         cwd=tmp_path, check=True).stdout
    assert out.split(b"\x00") == [str(run_dir).encode(), arg.encode(), arg.encode()]
    assert not (tmp_path / "CANARY").exists() and not (run_dir / "CANARY").exists()


def test_job_name_and_paths_never_enter_sbatch_directives():
    argv = slurm.sbatch_argv("/r/a\nb/job.sbatch", job_name="x\n#SBATCH --uid=0", run_dir="/r/a\nb")
    assert argv[2] == "--job-name=x\n#SBATCH --uid=0" and argv[-1] == "/r/a\nb/job.sbatch"
    script = slurm.render_batch_script(run_id="r", resources=Resources(), environment=PythonEnvironment(),
                                       run_dir="/r/a\nb", command=["true"])
    assert all(not line.startswith("#SBATCH") or "\n" not in line and "/r/a" not in line for line in script.splitlines())


# --- log lines -------------------------------------------------------------------------------------


def test_only_complete_lines_are_delivered_with_exact_offsets():
    chunk = complete_lines("f", 10, b"one\ntwo\r\nthr")
    assert chunk.lines == ["one", "two"] and (chunk.offset, chunk.end_offset) == (10, 19)
    assert complete_lines("f", 0, b"partial") is None
    assert complete_lines("f", 0, b"partial", force=True).lines == ["partial"]


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.text(alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=30),
                      min_size=1, max_size=30),
       cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6))
def test_restarting_from_delivered_offsets_loses_and_repeats_nothing(lines, cuts):
    data = "".join(line + "\n" for line in lines).encode()
    visible = {"len": 0}
    files = {"f": data}

    def read_from(path, offset):
        return files[path][offset:visible["len"]]

    received, offsets = [], {}
    for cut in sorted(c % (len(data) + 1) for c in cuts) + [len(data)]:
        visible["len"] = cut  # the file grows to `cut` bytes, then the stream drops
        stream = follow(read_from, ["f"], offsets, sleep=lambda s: None)
        for chunk in next(stream):
            received += chunk.lines
            offsets["f"] = chunk.end_offset
        stream.close()
    assert received == lines


# --- the local backend: the same property --------------------------------------------------------

FAKE_MODULE = """#!/bin/bash
# Stand-in for `module`: print what it was given, one NUL-terminated word each, to a file.
printf '%s\\0' "$@" >> "$MODULE_ARGS"
"""


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(module=hostile_text, arg=hostile_text, venv=hostile_text)
def test_local_rank_command_passes_hostile_config_strings_literally(tmp_path, module, arg, venv):
    """`[clusters.local.python] modules = ["$(touch MARKER)"]` and friends: words, never shell."""
    import json as json_

    from remote.cluster import RunBundle
    from remote.local import LocalCluster

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "module").write_text(FAKE_MODULE)
    (bin_dir / "module").chmod(0o755)
    module_args = tmp_path / "module-args"
    module_args.write_bytes(b"")
    cluster = LocalCluster(
        workdir=tmp_path / "work",
        python=PythonEnvironment(modules=[module], venv=f"/nonexistent/{venv}", env={"V": arg}),
        job_command=["bash", "-c", 'printf "%s\\0%s" "$1" "$V"', "task", arg],
    )
    bundle = RunBundle(run_id=f"r{abs(hash((module, arg, venv)))}", job_name=arg, spec_json=json_.dumps({}),
                       prompts_jsonl=None)
    prepared = cluster.prepare(bundle)
    plan = json_.loads((Path(prepared.run_dir) / "launch.json").read_text())
    env = {**os.environ, **plan["env"], "PATH": f"{bin_dir}:{os.environ['PATH']}", "MODULE_ARGS": str(module_args)}
    out = subprocess.run(plan["command"], cwd=tmp_path, env=env, capture_output=True).stdout
    assert out.split(b"\x00") == [arg.encode(), arg.encode()]
    assert module_args.read_bytes().split(b"\x00")[:-1] == [b"load", module.encode()]
    assert not (tmp_path / "CANARY").exists() and not (Path(prepared.run_dir) / "CANARY").exists()
