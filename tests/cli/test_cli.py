"""The `dinf` command as a script sees it: output, --json, exit codes (no cluster needed here)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3

import pytest

from tests.cli.conftest import FIXTURE_BUNDLE
from tui.cli.main import EXIT_BAD_INPUT, EXIT_DATABASE, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK


def test_empty_database(dinf):
    result = dinf("runs", "--json")
    assert (result.code, result.json()) == (EXIT_OK, [])
    table = dinf("runs")
    assert table.code == EXIT_OK and table.out.split() == ["ID", "NAME", "CLUSTER", "MODE", "RANKS", "STATE",
                                                           "JOB", "CREATED", "ELAPSED", "TAGS"]


def test_ingest_show_export(dinf, tmp_path):
    first = dinf("ingest", str(FIXTURE_BUNDLE), "--json")
    assert first.code == EXIT_OK, first.err
    report = first.json()
    assert report["created_run"] and report["measurements"] == 2
    again = dinf("ingest", str(FIXTURE_BUNDLE), "--json")
    assert again.json() == {**report, "created_run": False}
    runs = dinf("runs", "--json").json()
    assert [(r["id"], r["state"], r["mode"], r["num_ranks"]) for r in runs] == [(report["run_id"], "IMPORTED", "pp", 2)]

    shown = dinf("show", str(report["run_id"]), "--json").json()
    assert [m["batch_size"] for m in shown["measurements"]] == [1, 2]
    assert shown["measurements"][0]["ttft_median_s"] == 0.055
    assert [c["exact_match_rate"] for c in shown["correctness"]] == [0.5, 0.5, 0.5]
    text = dinf("show", runs[0]["uid"])
    assert text.code == EXIT_OK and "IMPORTED" in text.out and "TTFT ms" in text.out

    exported = dinf("export", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(exported.out)))
    assert exported.code == EXIT_OK and [r["batch_size"] for r in rows] == ["1", "2"]
    assert float(rows[1]["output_throughput_tok_s"]) == shown["measurements"][1]["output_throughput_tok_s"]
    assert {"ttft_p90_s", "itl_ci95_s", "per_gpu_output_tok_s", "load_time_s", "run_uid"} <= set(rows[0])
    out_file = tmp_path / "m.json"
    assert dinf("export", "--format", "json", "--run", str(report["run_id"]), "-o", str(out_file)).code == EXIT_OK
    assert [r["batch_size"] for r in json.loads(out_file.read_text())] == [1, 2]
    as_json = dinf("export", "--json")  # --json means JSON here too, as in every other command
    assert as_json.code == EXIT_OK and [r["batch_size"] for r in as_json.json()] == [1, 2]


def test_version(dinf):
    result = dinf("--version")
    assert result.code == EXIT_OK and result.out.startswith("dinf ") and result.out.split()[1][0].isdigit()


def test_unknown_run_is_exit_3(dinf):
    for args in (("show", "999"), ("logs", "999"), ("cancel", "nope"), ("export", "--run", "42")):
        result = dinf(*args)
        assert result.code == EXIT_NOT_FOUND, (args, result.err)
        assert "no run" in result.err and "dinf runs" in result.err


def test_bad_spec_fields_are_named_and_nothing_recorded(dinf, tmp_path):
    result = dinf("submit", "--set", "bogus=1", "--set", "max_new_tokens=0", "--mode", "diagonal")
    assert result.code == EXIT_BAD_INPUT
    assert "bogus: unknown field" in result.err
    assert "max_new_tokens: must be >= 1" in result.err
    assert "mode: must be one of single, pp, tp, dp" in result.err
    spec = tmp_path / "spec.json"
    spec.write_text('{"mode": "pp", "model": {"config": "huge"}}')
    result = dinf("submit", str(spec))
    assert result.code == EXIT_BAD_INPUT and "model.config: unknown config 'huge'" in result.err
    spec.write_text("{not json")
    result = dinf("submit", str(spec))
    assert result.code == EXIT_BAD_INPUT and "not valid JSON" in result.err
    result = dinf("submit", "--nodes", "0")
    assert result.code == EXIT_BAD_INPUT and "resources.nodes: must be an integer >= 1" in result.err
    result = dinf("submit", "--cluster", "gpu")
    assert result.code == EXIT_BAD_INPUT and "no cluster named 'gpu'" in result.err
    assert dinf("runs", "--json").json() == []


def test_bad_bundle_is_bad_input(dinf, tmp_path):
    result = dinf("ingest", str(tmp_path))
    assert result.code == EXIT_BAD_INPUT and "no result.json" in result.err


def test_config_error_names_key(dinf):
    dinf.home.mkdir(parents=True)
    (dinf.home / "config.toml").write_text("[clusters.gpu]\nhost = 'login'\n[clusters.gpu.slurm]\nnodes = 0\n")
    result = dinf("runs")
    assert result.code == EXIT_BAD_INPUT
    assert "clusters.gpu.slurm.nodes: must be an integer >= 1, got 0" in result.err


def test_trust_on_an_openssh_cluster_points_to_ssh_itself(dinf):
    """OpenSSH owns the host keys of a transport = "openssh" cluster: dinf trust records nothing."""
    dinf.home.mkdir(parents=True)
    (dinf.home / "config.toml").write_text("[clusters.gpu]\nhost = 'login'\ntransport = 'openssh'\n")
    result = dinf("trust", "gpu")
    assert result.code == EXIT_BAD_INPUT
    assert 'uses transport = "openssh"' in result.err and "run `ssh login` in a terminal" in result.err
    listed = dinf("clusters", "--json").json()
    assert [c["transport"] for c in listed if c["name"] == "gpu"] == ["openssh"]


def test_usage_errors(dinf):
    assert dinf().code == EXIT_BAD_INPUT
    assert dinf("export", "--format", "xml").code == EXIT_BAD_INPUT
    assert dinf("logs", "1", "--kind", "stdout").code == EXIT_BAD_INPUT


def test_newer_database_is_exit_4_and_untouched(dinf):
    assert dinf("export").code == EXIT_OK  # opens the service, which creates the database (`runs` reads only)
    db = dinf.home / "dinf.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE schema_version SET version = version + 1")
    conn.close()
    before = db.read_bytes()
    result = dinf("runs", "--json")
    assert result.code == EXIT_DATABASE and "newer dinf" in result.err and result.out == ""
    assert db.read_bytes() == before


def test_clusters_lists_builtin_local(dinf):
    result = dinf("clusters", "--json")
    assert result.code == EXIT_OK
    assert [(c["name"], c["backend"], c["default"]) for c in result.json()] == [("local", "local", True)]


def test_runs_match_and_sort(dinf, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    result = json.loads((FIXTURE_BUNDLE / "result.json").read_text())
    result["run_name"] = "another-pp2"
    (other / "result.json").write_text(json.dumps(result))
    assert dinf("ingest", str(FIXTURE_BUNDLE)).code == EXIT_OK
    assert dinf("ingest", str(other)).code == EXIT_OK
    names = lambda *args: [r["name"] for r in dinf("runs", "--json", *args).json()]  # noqa: E731
    assert names() == ["fixture-pp2", "another-pp2"]
    assert names("--sort", "name") == ["another-pp2", "fixture-pp2"]
    assert names("--match", "^ANOTHER") == ["another-pp2"]
    assert names("--match", "imported") == ["fixture-pp2", "another-pp2"]  # the state matches too
    bad = dinf("runs", "--match", "(")
    assert bad.code == EXIT_BAD_INPUT and "--match '(' is not a regular expression" in bad.err


def cli(tmp_path, capsys, *argv: str) -> tuple[int, str]:
    """`dinf` in this process (fast), on the test's own database: (exit code, stderr)."""
    from tui.cli.main import main

    code = main(["--db", str(tmp_path / "dinf.db"), *argv])
    cli.out = capsys.readouterr()
    return code, cli.out.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--time=-5"], "resources.time_limit: '-5' is not a Slurm time"),
        (["--cpus-per-task", "-1"], "resources.cpus_per_task: must be a positive integer, got -1"),
        (["--cpus-per-task", "0"], "resources.cpus_per_task: must be a positive integer, got 0"),
        (["--partition", "a b;c"], "resources.partition: 'a b;c' has characters"),
        (["--mode", "tp", "--ranks-per-node", "3", "--set", "model.config=tiny"],
         "3 ranks do not divide them"),
    ],
)
def test_bad_resources_exit_2_and_record_nothing_dry_run_or_not(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.setenv("DINF_HOME", str(tmp_path / "home"))
    for dry_run in (["--dry-run"], []):
        code, err = cli(tmp_path, capsys, "submit", *args, *dry_run)
        assert (code, message in err) == (EXIT_BAD_INPUT, True), err
    code, _ = cli(tmp_path, capsys, "runs", "--json")
    assert code == EXIT_OK and json.loads(cli.out.out) == []


def test_a_missing_or_binary_config_file_is_named(tmp_path, capsys):
    missing = tmp_path / "nope.toml"
    code, err = cli(tmp_path, capsys, "--config", str(missing), "clusters")
    assert code == EXIT_BAD_INPUT and f"{missing}: no such configuration file" in err
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\x00\xff\xfe\x89PNG")
    code, err = cli(tmp_path, capsys, "--config", str(binary), "clusters")
    assert code == EXIT_BAD_INPUT and f"{binary}: not a text file" in err


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('host = "../../../../etc/passwd"', "clusters.gpu.host: '../../../../etc/passwd' is not a host name"),
        ('host = "a..b"', "clusters.gpu.host: 'a..b' is not a host name (it has an empty or over-long part"),
        ('host = "h"\nworkdir = "/scratch/%j_%t_%x"', "clusters.gpu.workdir: '/scratch/%j_%t_%x' holds a %"),
        ('host = "h"\nworkdir = "/scratch/it\'s"', "clusters.gpu.workdir: \"/scratch/it's\" holds a quote"),
        ('host = "h"\nworkdir = "/scratch/a\\\\b"', "clusters.gpu.workdir: '/scratch/a\\\\b' holds a backslash"),
    ],
)
def test_hosts_and_workdirs_slurm_cannot_use_are_named(tmp_path, capsys, section, message):
    config = tmp_path / "config.toml"
    config.write_text(f"[clusters.gpu]\n{section}\n")
    code, err = cli(tmp_path, capsys, "--config", str(config), "clusters")
    assert code == EXIT_BAD_INPUT and message in err, err


def test_resource_flags_have_one_name_and_take_both_spellings(dinf):
    """`submit` and `experiment` spell resource flags alike (--time-limit, --container-image), and
    both accept the short spellings (--time, --container) without listing them in --help."""
    killed = {}
    for flag in ("--time", "--time-limit"):
        result = dinf("submit", "--dry-run", flag, "00:11:00")
        assert result.code == EXIT_OK, result.err
        killed[flag] = [line for line in result.out.splitlines() if "killed after" in line]
    assert killed["--time"] == killed["--time-limit"] and "killed after 660 s" in killed["--time"][0]
    for flag in ("--time", "--time-limit"):
        for image in ("--container", "--container-image"):
            plan = dinf("experiment", "plan", "correctness", "--json", flag, "00:10:00", image, "a.sif")
            assert plan.code == EXIT_OK, plan.err
            resources = plan.json()["cells"][0]["resources"]
            assert (resources["time_limit"], resources["container_image"]) == ("00:10:00", "a.sif")
    for command in (("submit",), ("experiment", "create")):
        shown = dinf(*command, "--help").out
        assert "--time-limit" in shown and "--container-image" in shown
        assert "--time " not in shown and "--container " not in shown


@pytest.mark.parametrize("args", [("runs",), ("runs", "--json"), ("experiment", "presets"), ("submit", "--dry-run")])
def test_a_reader_that_goes_away_is_not_an_error(dinf, args):
    """`dinf runs | head`: stdout closed before dinf writes. Exit 0 and no '[Errno 32] Broken pipe'."""
    import subprocess

    from tests.cli.conftest import DINF, REPO_ROOT

    process = subprocess.Popen([str(DINF), *args], cwd=REPO_ROOT, env=dinf.env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # the reader is gone before the first line is written
    err = process.stderr.read()
    assert process.wait(timeout=120) == EXIT_OK, err
    assert "Broken pipe" not in err and "Traceback" not in err, err


@pytest.mark.parametrize("greeting", [b"HTTP/1.1 400 Bad Request\r\n\r\n", b"SSH-2.0-bogus\r\n" + bytes(range(256)) * 4],
                         ids=["not-ssh", "broken-ssh"])
def test_a_failed_ssh_handshake_is_one_message_not_a_traceback(dinf, tmp_path, greeting):
    """A host that answers but is no SSH server (a wrong Port): dinf's message alone, naming the host
    and what to check; not paramiko's logged traceback before it, nor an empty reason."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:  # closed at the end of the test
                return
            with client:
                client.sendall(greeting)

    threading.Thread(target=answer, daemon=True).start()
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("")  # never the developer's own
    dinf.home.mkdir(parents=True, exist_ok=True)
    (dinf.home / "config.toml").write_text(f'[clusters.gpu]\nhost = "u@127.0.0.1:{port}"\nssh_config = "{ssh_config}"\n')
    try:
        for args in (("trust", "gpu"), ("submit", "--cluster", "gpu", "--dry-run")):
            result = dinf(*args, timeout=120)
            assert result.code == EXIT_FAILED, (args, result.err)
            assert result.err.startswith(f"dinf: SSH handshake with u@127.0.0.1:{port} failed: "), result.err
            assert "Traceback" not in result.err and "Exception (client)" not in result.err, result.err
            assert "failed: ." not in result.err and "check HostName and Port" in result.err
            assert len(result.err.strip().splitlines()) == 1
    finally:
        server.close()


# --- site Slurm options (issue 14): through the entry point, on a Slurm cluster that is never reached ---


def offline_slurm_cluster(dinf, tmp_path, slurm_section: str = "") -> None:
    """[clusters.gpu] with an absolute workdir and no partition: --dry-run renders without connecting."""
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("")  # never the developer's own
    dinf.home.mkdir(parents=True, exist_ok=True)
    (dinf.home / "config.toml").write_text(
        f'[clusters.gpu]\nhost = "gpu-login.invalid"\nssh_config = "{ssh_config}"\nworkdir = "/scratch/dinf"\n'
        f"[clusters.gpu.slurm]\n{slurm_section}\n"
    )


SITE_FLAGS = ["--mode", "pp", "--gpus-per-node", "2", "--ranks-per-node", "2", "--gpu-type", "h100",
              "--reservation", "maint", "--exclusive", "--dependency", "afterok:17:18",
              "--sbatch", "--comment=two words # not a comment", "--sbatch=--hold",
              "--container-image", "nvcr.io#nvidia/pytorch:24.01-py3", "--container-runtime", "pyxis",
              "--container-mount", "/scratch/data:/data:ro"]


def test_submit_dry_run_shows_every_site_option_in_the_script(dinf, tmp_path):
    offline_slurm_cluster(dinf, tmp_path, 'extra_sbatch = ["--mail-type=END"]\ncontainer_mounts = ["/hf:/hf"]')
    result = dinf("submit", "--cluster", "gpu", "--dry-run", *SITE_FLAGS)
    assert result.code == EXIT_OK, result.err
    lines = result.out.splitlines()
    for line in ("#SBATCH --gpus-per-node=h100:2", "#SBATCH --reservation=maint", "#SBATCH --exclusive",
                 "#SBATCH --dependency=afterok:17:18"):
        assert line in lines, result.out
    # The cluster's extra lines first, then the command line's, in the order given, quoted for sbatch.
    extra = lines[lines.index("# extra options, as given") + 1:][:3]
    assert extra == ["#SBATCH --mail-type=END", '#SBATCH --comment="two words # not a comment"', "#SBATCH --hold"]
    srun = next(line for line in lines if line.startswith("srun "))
    assert "'--container-image=nvcr.io#nvidia/pytorch:24.01-py3'" in srun
    assert ",/hf:/hf,/scratch/data:/data:ro --container-workdir=/scratch/dinf/runs/" in srun
    assert dinf("runs", "--json").json() == []  # a dry run records nothing
    # --no-exclusive takes back a cluster's default
    offline_slurm_cluster(dinf, tmp_path, "exclusive = true")
    assert "#SBATCH --exclusive" in dinf("submit", "--cluster", "gpu", "--dry-run").out.splitlines()
    assert "#SBATCH --exclusive" not in dinf("submit", "--cluster", "gpu", "--dry-run", "--no-exclusive").out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sbatch", "--nodes=4"], "resources.extra_sbatch: '--nodes=4' gives --nodes, which dinf sets itself"),
        (["--sbatch", "--comment=a\nb"], "resources.extra_sbatch: '--comment=a\\nb' holds a control character"),
        (["--dependency", "afterok:12;reboot"], "resources.dependency: 'afterok:12;reboot' is not a Slurm dependency"),
        (["--container-image", "i.sif", "--container-mount", "data:/data"],
         "resources.container_mounts: 'data:/data' is not SRC:DST[:ro|rw]"),
        (["--container-runtime", "docker"], "invalid choice: 'docker'"),
    ],
)
def test_bad_site_options_exit_2_naming_the_field_and_record_nothing(dinf, tmp_path, args, message):
    offline_slurm_cluster(dinf, tmp_path)
    for dry_run in (["--dry-run"], []):
        result = dinf("submit", "--cluster", "gpu", *args, *dry_run)
        assert result.code == EXIT_BAD_INPUT and message in result.err, result.err
    assert dinf("runs", "--json").json() == []


def test_experiments_take_the_same_site_options(dinf, tmp_path):
    plan = dinf("experiment", "plan", "correctness", "--json", "--reservation", "maint", "--exclusive",
                "--sbatch", "--comment=study", "--container-mount", "/d:/d", "--dependency", "singleton")
    assert plan.code == EXIT_OK, plan.err
    resources = plan.json()["cells"][0]["resources"]
    assert (resources["reservation"], resources["exclusive"], resources["dependency"]) == ("maint", True, "singleton")
    assert (resources["extra_sbatch"], resources["container_mounts"]) == (["--comment=study"], ["/d:/d"])
    for command in (("submit",), ("experiment", "create")):
        shown = dinf(*command, "--help").out
        assert all(flag in shown for flag in ("--reservation", "--gpu-type", "--exclusive", "--dependency",
                                              "--sbatch", "--container-runtime", "--container-mount")), shown
    # A bad value, or --serial with nothing to submit, is refused before the experiment is recorded.
    bad = dinf("experiment", "create", "correctness", "--name", "bad", "--sbatch=--nodes=2")
    assert bad.code == EXIT_BAD_INPUT and "--nodes, which dinf sets itself" in bad.err and "nothing was recorded" in bad.err
    serial = dinf("experiment", "create", "correctness", "--name", "ser", "--serial", "--no-submit")
    assert serial.code == EXIT_BAD_INPUT and "--serial chains the cells' jobs as they are submitted" in serial.err
    assert dinf("experiment", "list", "--json").json() == []
