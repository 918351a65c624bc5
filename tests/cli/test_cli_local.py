"""`dinf` end to end on the built-in local cluster: real worker ranks (gloo, tiny synthetic model).

submit -> follow logs until the run ends -> runs / show / logs / export; and submit -> cancel.
Every command is the installed `dinf` console script in its own process, as a user's shell runs it;
only the database under the temporary DINF_HOME ties them together.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter

import pytest

from tui.cli.main import EXIT_FAILED, EXIT_OK
from worker.contract import parse_event

pytestmark = pytest.mark.dist

TINY_PP2 = [
    "--mode", "pp", "--ranks-per-node", "2", "--set", "pp_size=2", "--set", "model.config=tiny",
    "--batch-sizes", "1,2", "--max-new-tokens", "4", "--set", "repeats=1", "--set", "warmup=0",
    "--set", "num_requests=2", "--set", "device=cpu",
]


def test_submit_follow_show_export(dinf):
    submitted = dinf("submit", *TINY_PP2, "--name", "cli-e2e", "--json")
    assert submitted.code == EXIT_OK, submitted.err
    record = submitted.json()
    run_id = str(record["id"])
    assert record["state"] in ("PENDING", "RUNNING") and record["job_id"] and record["num_ranks"] == 2

    followed = dinf("logs", run_id, "-f", "--rank", "1", "--kind", "worker", timeout=300)
    assert followed.code == EXIT_OK, followed.err
    lines = followed.out.splitlines()
    assert any("rank 1 phase start" in line for line in lines)
    assert "rank 1 phase done" in lines[-1]  # followed to the very end, then stopped by itself

    runs = dinf("runs", "--json").json()
    assert [(r["name"], r["state"], r["job_id"]) for r in runs] == [("cli-e2e", "COMPLETED", record["job_id"])]
    assert [h["state"] for h in runs[0]["history"]][-1] == "COMPLETED"

    shown = dinf("show", run_id, "--json").json()
    assert shown["ingested_at"] is not None and shown["error"] is None
    assert [m["batch_size"] for m in shown["measurements"]] == [1, 2]
    assert all(m["output_tokens"] == 2 * 4 for m in shown["measurements"])
    assert [s["rank"] for s in shown["measurements"][0]["rank_stats"]] == [0, 1]
    assert shown["accounting"][0]["state"] == "COMPLETED"
    assert "COMPLETED" in dinf("show", run_id).out

    both = dinf("logs", run_id)  # every rank's whole output, each line once (not the worker's copy too)
    assert both.code == EXIT_OK, both.err
    lines = both.out.splitlines()
    assert any("[0 launcher]" in line and "phase done" in line for line in lines)
    assert any("[1 launcher]" in line and "phase done" in line for line in lines)
    assert not any("worker]" in line for line in lines)
    worker = dinf("logs", run_id, "--kind", "worker").out.splitlines()

    def text(line: str) -> str:  # "[1 launcher] 20:00:00 rank 1 ..." -> "20:00:00 rank 1 ..."
        return line.split("] ", 1)[1]

    shown, logged = Counter(map(text, lines)), Counter(map(text, worker))
    assert logged and all(shown[line] == count for line, count in logged.items())  # once each, not twice

    events = dinf("logs", run_id, "--rank", "0", "--kind", "events", "--json")
    parsed = [parse_event(json.loads(line)["line"]) for line in events.out.splitlines()]
    assert parsed and all(e is not None and e["rank"] == 0 for e in parsed)
    assert {"phase", "progress"} <= {e["kind"] for e in parsed}

    exported = dinf("export", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(exported.out)))
    assert [(r["run_name"], r["batch_size"]) for r in rows] == [("cli-e2e", "1"), ("cli-e2e", "2")]
    assert float(rows[0]["output_throughput_tok_s"]) > 0


def test_submit_then_cancel(dinf):
    long_run = [*TINY_PP2, "--max-new-tokens", "512", "--set", "repeats=50"]
    submitted = dinf("submit", *long_run, "--name", "to-cancel", "--json")
    assert submitted.code == EXIT_OK, submitted.err
    run_id = str(submitted.json()["id"])
    deadline = time.monotonic() + 120
    while dinf("show", run_id, "--json").json()["state"] != "RUNNING":
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.5)
    cancelled = dinf("cancel", run_id, "--json")
    assert cancelled.code == EXIT_OK, cancelled.err
    assert cancelled.json()["state"] == "CANCELLED"
    shown = dinf("show", run_id, "--json").json()
    assert shown["state"] == "CANCELLED" and shown["finished_at"] is not None
    assert shown["measurements"] == []
    again = dinf("cancel", run_id)
    assert again.code == EXIT_OK and "already finished" in again.err

    copy = dinf("resubmit", run_id, "--name", "second-try", "--json")
    assert copy.code == EXIT_OK, copy.err
    record = copy.json()
    assert record["id"] != int(run_id) and record["name"] == "second-try" and record["job_id"]
    assert record["spec"] == shown["spec"] and record["resources"] == shown["resources"]
    assert dinf("cancel", str(record["id"]), "--json").json()["state"] == "CANCELLED"


def test_failed_run_exits_1_with_the_error(dinf, tmp_path):
    # A checkpoint directory that does not exist passes spec validation but fails in the worker.
    result = dinf("submit", "--set", "model.source=checkpoint", "--set", f"model.path={tmp_path / 'missing'}",
                  "--set", "device=cpu", "--wait", "--poll", "0.5")
    assert result.code == EXIT_FAILED
    assert "ended FAILED" in result.err
    shown = dinf("show", "1", "--json").json()
    assert shown["state"] == "FAILED" and "no config.json" in shown["error"]


def test_dry_run_prints_the_script_and_records_nothing(dinf):
    result = dinf("submit", *TINY_PP2, "--dry-run")
    assert result.code == EXIT_OK, result.err
    assert result.out.startswith("#!") and "-m worker run --spec" in result.out
    assert dinf("runs", "--json").json() == []


def _state_lines(out: str, run_id: int) -> list[str]:
    """The states of '22:19:11  run 1  PENDING  (reason)' lines, in the order printed."""
    return [line.split()[3] for line in out.splitlines() if line.split()[1:3] == ["run", str(run_id)]]


def test_wait_prints_each_state_then_the_result(dinf):
    """Piped (not a terminal): a plain line per state, as the run's timeline has them, then the result
    line; no carriage-return progress. With --json (the demo, same code): one JSON document only."""
    waited = dinf("submit", *TINY_PP2, "--name", "waited", "--wait", "--poll", "0.5")
    assert waited.code == EXIT_OK, waited.err
    shown = dinf("show", "1", "--json").json()
    timeline = [h["state"] for h in shown["history"] if h["state"] != "DRAFT"]
    assert _state_lines(waited.out, 1) == timeline and timeline[-1] == "COMPLETED" and "RUNNING" in timeline
    assert waited.out.splitlines()[-1].split("\t") == ["1", shown["uid"], "COMPLETED", shown["job_id"]]
    assert "\r" not in waited.out

    demo = dinf("demo", "--wait", "--poll", "0.5", "--json")
    assert demo.code == EXIT_OK, demo.err
    record = json.loads(demo.out)  # the whole of stdout: nothing before or after the document
    assert record["id"] == 2 and record["state"] == "COMPLETED"


def test_wait_on_a_terminal_shows_rank_progress(dinf):
    """stdout a pseudo-terminal (80 columns): the state lines, and between RUNNING and COMPLETED one
    line rewritten with '\\r' naming the ranks' phases, never wider than the terminal."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import termios

    from tests.cli.conftest import DINF, REPO_ROOT

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    longer = [*TINY_PP2, "--max-new-tokens", "64", "--set", "repeats=2"]
    process = subprocess.Popen([str(DINF), "submit", *longer, "--wait", "--poll", "0.5"], cwd=REPO_ROOT,
                               env=dinf.env, stdout=terminal, stderr=subprocess.PIPE)
    os.close(terminal)
    received = b""
    while True:
        try:
            data = os.read(controller, 4096)
        except OSError:  # EIO: the terminal's last writer has gone
            break
        if not data:
            break
        received += data
    os.close(controller)
    assert process.wait(timeout=300) == EXIT_OK, process.stderr.read()
    out = received.decode().replace("\r\n", "\n")  # the terminal's own newline translation

    assert _state_lines(out, 1)[-1] == "COMPLETED" and "RUNNING" in _state_lines(out, 1)
    rest = out.split(" RUNNING\n", 1)[1]
    # Everything drawn while running shares one line: '\r'-separated drawings, a blank wipe, then
    # the COMPLETED state line written over it.
    *pieces, completed = rest.split("\n", 1)[0].split("\r")
    drawn = [piece.strip() for piece in pieces if piece.strip()]
    assert drawn and all(line.startswith("RUNNING ") and len(line) < 80 for line in drawn)
    phases = {"start", "init", "load", "warmup", "measure", "score", "done"}
    assert any(" r0" in line and phases & set(line.split()) for line in drawn)
    assert pieces[-1].strip() == "" and _state_lines(completed, 1) == ["COMPLETED"]
    assert out.splitlines()[-1].split("\t")[2] == "COMPLETED"
