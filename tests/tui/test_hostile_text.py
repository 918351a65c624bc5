"""Text from outside dinf is data: hostile markup in every field the app shows is shown as written.

A property test drives the real app (Pilot) over the real service and database: a run whose
name, job id, cluster, state reasons, error, log lines, host and paths are hostile strings (Rich
and Textual markup, unbalanced brackets, ANSI escapes, control characters, globs) is listed,
opened, found in the palette, cancelled from a dialog, compared, picked in the new-run form, and
met in host-key, login and failure dialogs and notifications. Each string must appear on screen literally, with control
characters shown as U+FFFD (tab as spaces, a newline in one-line text as ⏎) and the app must
stay up. A cheaper property test checks `tui.display.runs.plain` itself on many more strings.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pilot_wait import wait_for
from rich.console import Console
from scripted_cluster import BUNDLE, HostKeyUnknown, ScriptedCluster
from textual.widgets import Select
from textual.widgets._toast import Toast

from remote.cluster import FailureSummary
from remote.errors import AuthenticationFailed
from storage import repo
from storage.db import write_session
from tui.display.runs import CONTROL_SHOWN, plain, printable
from tui.ui.app import DinfApp
from tui.ui.messages import ActionFailed, SshTroubleMet
from tui.ui.screens.compare import CompareScreen
from tui.ui.screens.dialogs import ConfirmDialog, HostKeyDialog, ProblemDialog
from tui.ui.screens.new_run import NewRunScreen
from tui.ui.screens.run import RunScreen
from worker import contract
from worker.contract import RunSpec, make_event

SIZE = (220, 60)  # wide enough that no field of ~30 characters is wrapped or cropped

KNOWN_CRASHERS = [
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537]",
    "[/x] zz [bold]mk",
    "*glob?[x]",
    "[x]",
]
FRAGMENTS = [
    "[", "]", "[/", "[/]", "[/x]", "[x]", "[bold]", "[b red on red]", "[link=file:///etc]", "[/link]",
    "[@click=app.quit]", "$(touch M)", "\\", "\\[", "*", "?", "=", ":", " ", "x", "run",
    "\x1b[31m", "\x1b]8;;file:///etc\x1b\\", "\x00", "\x07", "\x08", "\t", "\r", "\n", "\x7f", "\x9b",
    "\u202e", CONTROL_SHOWN,
]
ALPHABET = "[]/\\=:*?@ abcxyz019.-_'\"$()\x1b\x00\x07\t\r\n\x7f\x9b\u202e"

hostile = st.one_of(
    st.sampled_from(KNOWN_CRASHERS),
    st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=4).map("".join),
    st.text(alphabet=ALPHABET, min_size=1, max_size=14),
)
short_hostile = hostile.filter(lambda s: len(printable(s)) <= 30 or s in KNOWN_CRASHERS)
"""Short enough that no field wraps on the screens below (SIZE), so it can be found whole."""


def one_line(text: str) -> str:
    """What a one-line field shows for `text`."""
    return printable(text)


def log_line(text: str) -> str:
    """`text` without the characters that end a line (a log line can't hold them)."""
    return "".join(ch for ch in text if len(f"a{ch}b".splitlines()) == 1)


# --- plain() on its own: cheap, so many strings ---------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(hostile, st.text(max_size=40)))
def test_plain_text_is_never_markup_and_never_a_control_sequence(text):
    shown = plain(text, "bold")
    assert shown.plain == printable(text)
    assert {span.style for span in shown.spans} <= {"bold"}  # no style but the one asked for
    assert text == printable(text) or not text.isprintable()
    assert not any(ch in printable(text) for ch in "\x1b\x00\x07\r\n\x9b\u202e")
    console = Console(width=200, color_system=None, force_terminal=False)
    with console.capture() as captured:
        console.print(shown, end="")
    assert captured.get() == printable(text)  # rendered as written, not interpreted


# --- the real app --------------------------------------------------------------------------------


def toml_string(text: str) -> str:
    """A TOML basic string holding `text` exactly (every non-printable-ASCII character escaped)."""
    return '"' + "".join(ch if " " <= ch <= "~" and ch not in '"\\' else f"\\u{ord(ch):04x}" for ch in text) + '"'


def screen_text(app) -> str:
    """Every character on the current screen, modal layers and toasts included, row by row."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def assert_shown(app, *expected: str) -> None:
    text = screen_text(app)
    for wanted in expected:
        assert wanted in text, f"{wanted!r} is not on {type(app.screen).__name__}:\n{text}"
    assert "\x1b" not in text and "\x00" not in text


def shown_by(widget) -> str:
    """A widget's text before it is wrapped to its width (for dialogs and toasts, which wrap)."""
    text = str(widget.render())
    assert "\x1b" not in text and "\x00" not in text
    return text


def failure_of(fields: dict[str, str]) -> FailureSummary:
    """A failure summary naming the hostile host as the node (node names come from srun's log)."""
    return FailureSummary(rank=1, node=fields["host"], signal=9, exit_code=None,
                          cause=f"rank 1 on {fields['host']} died first: killed by signal 9 (SIGKILL)")


def seed(service, scripted: ScriptedCluster, fields: dict[str, str]) -> dict[str, int]:
    """A failed run on the hostile cluster whose every text field is hostile, its logs and error
    event, a draft of the same name (it can still be cancelled) and a completed one with results."""
    base = time.time() - 3600
    run_dir = f"/scratch/{fields['path']}/run"
    ids = {}
    with write_session(service.engine) as session:
        cluster = repo.get_or_create_cluster(session=session, name=fields["cluster"], backend="slurm",
                                             host="gpu-login")
        for key, state in (("failed", "FAILED"), ("draft", None), ("completed", "COMPLETED")):
            run = repo.create_run(session=session, uid=f"{key}-uid", name=fields["name"], mode="pp",
                                  spec=RunSpec(run_name="hostile", mode="pp").to_dict(), num_ranks=2,
                                  cluster_id=cluster.id, at=base + len(ids))
            ids[key] = run.id
            if state is None:
                continue
            repo.add_job_id(session=session, run=run, job_id=fields["job"] if key == "failed" else "1001")
            repo.update_run(session=session, run=run, run_dir=run_dir, output_dir=f"{run_dir}/out",
                            logs_dir=f"{run_dir}/logs", submitted_at=base + 1, started_at=base + 2,
                            finished_at=base + 30)
            repo.record_state(session=session, run=run, state="PENDING", reason=fields["reason"], at=base + 1)
            repo.record_state(session=session, run=run, state=state, reason=fields["reason"], at=base + 30)
            if key == "failed":
                repo.update_run(session=session, run=run, error=f"{fields['error']} in {fields['path']}",
                                failure_json=json.dumps(failure_of(fields).to_dict()))
        session.commit()
    service.ingest_dir(BUNDLE, run_id=ids["completed"])
    launcher = f"{run_dir}/logs/{contract.launcher_log_file(fields['job'], 0)}"
    lines = [log_line(fields["log"]), log_line(f"wrote {fields['path']}")]
    scripted.files[launcher] = bytearray("".join(line + "\n" for line in lines).encode())
    error_event = make_event("error", 1, message=fields["error"])
    scripted.files[f"{run_dir}/out/{contract.events_file(1)}"] = bytearray((json.dumps(error_event) + "\n").encode())
    return ids


async def drive(app: DinfApp, scripted: ScriptedCluster, fields: dict[str, str]) -> None:
    name, job, cluster, host = (one_line(fields[k]) for k in ("name", "job", "cluster", "host"))
    reason, error, path = (one_line(fields[k]) for k in ("reason", "error", "path"))
    log, wrote = one_line(log_line(fields["log"])), one_line(log_line(f"wrote {fields['path']}"))
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_for(pilot, lambda: len(app.runs) == 3, timeout=20, what="the seeded runs")
        ids = {key: rid for rid, key in zip(sorted(app.runs), ("failed", "draft", "completed"))}
        await pilot.pause(0.2)
        assert_shown(app, name, job, cluster)  # the runs table and the connection bar

        await pilot.press("ctrl+p")
        await pilot.press(*"open run")
        await pilot.pause(0.5)
        assert_shown(app, f"#{ids['failed']} {name} (FAILED)")  # the palette's hit
        await pilot.press("escape")
        await pilot.pause(0.2)

        app.open_run(ids["failed"])
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), what="the run screen")
        logs = app.run_logs[ids["failed"]]
        await wait_for(pilot, lambda: logs.merged.received >= 3, what="the log lines and the error event")
        await wait_for(pilot, lambda: app.screen.results_shown, what="the results tab")
        app.screen.action_show_tab("merged")  # a finished run opens on its results
        await pilot.pause(0.3)
        # Header (name, cluster, job id, reason, error, path), timeline, rank 1's error, the log.
        assert_shown(app, name, cluster, job, f"({reason})", error, f"error: {error}", f"[r0] {log}", f"[r0] {wrote}")
        header = shown_by(app.screen.query_one("#run-summary"))  # long lines wrap on screen
        assert f"✖ {one_line(failure_of(fields).cause)}\n{error} in {path}" in header
        await pilot.press("escape")

        app.confirm_cancel(ids["draft"])
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="the cancel question")
        question = shown_by(app.screen.query_one(".dialog-question"))
        assert question.startswith(f"Cancel run #{ids['draft']} {name} (job not submitted)?")
        await pilot.press("n")

        app.post_message(SshTroubleMet(fields["cluster"], HostKeyUnknown(fields["host"], "SHA256:abc", lambda: None)))
        await wait_for(pilot, lambda: isinstance(app.screen, HostKeyDialog), what="the host key dialog")
        assert shown_by(app.screen.query_one(".dialog-question")) == f"Unknown host key for {host} (cluster {cluster})"
        await pilot.press("escape")  # refuse
        await wait_for(pilot, lambda: app.connections[fields["cluster"]].state == "refused")
        assert_shown(app, f"{cluster} ✖ host key refused")

        app.post_message(SshTroubleMet(fields["cluster"], AuthenticationFailed(fields["error"])))
        await wait_for(pilot, lambda: isinstance(app.screen, ProblemDialog), what="the login dialog")
        assert shown_by(app.screen.query_one(".dialog-question")) == f"Login to cluster {cluster} failed"
        assert shown_by(app.screen.query_one("#problem-detail")).startswith(printable(fields["error"], multiline=True))
        await pilot.press("escape")

        app.post_message(ActionFailed("submit", fields["error"]))
        await wait_for(pilot, lambda: app.screen.query(Toast), what="the notification")
        toasts = [shown_by(toast) for toast in app.screen.query(Toast)]
        assert f"submit failed: {printable(fields['error'], multiline=True)}" in toasts

        app.push_screen(CompareScreen([ids["completed"]]))
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.run_records,
                       what="the compare screen's runs")
        await pilot.pause(0.2)
        runs_table = app.screen.query_one("#compare-runs")
        assert runs_table.get_row(str(ids["completed"]))[2].plain == name
        # The picker's Name column can be as narrow as 4 cells (it shares a fixed pane): a long name is
        # cropped, not reinterpreted; the cell above holds it whole.
        assert_shown(app, name[:3])

        await pilot.press("escape")
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen), what="the new-run form")
        app.screen.query_one("#cluster", Select).value = fields["cluster"]
        await pilot.pause(0.2)
        assert_shown(app, cluster[:20])  # the form's cluster picker (a narrow field: long names are cropped)
        assert app.is_running


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(fields=st.fixed_dictionaries({
    key: short_hostile for key in ("name", "job", "cluster", "host", "reason", "error", "path", "log")
}).filter(lambda f: f["cluster"] != "local"))
@example(fields={"name": "[/x] zz [bold]mk", "job": "[x]", "cluster": "[x]", "host": "[/x]",
                 "reason": "*glob?[x]", "error": KNOWN_CRASHERS[0], "path": "[link=file:///etc]x[/link]",
                 "log": "\x1b[31mred[bold] [/x]\x07"})
def test_hostile_text_in_every_displayed_field_is_shown_as_written(fields, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    config = tmp / "config.toml"
    # The configuration refuses a host that isn't a host name; the hostile host reaches the app the
    # way the remote layer reports it, in a host-key error.
    config.write_text(f"[clusters.{toml_string(fields['cluster'])}]\nhost = \"gpu-login\"\n")
    scripted = ScriptedCluster(fields["cluster"])

    def open_service():
        from tui.core.service import Dinf

        service = Dinf(data_dir=tmp / "data", config_path=config, cluster_factory=lambda _: scripted)
        seed(service, scripted, fields)
        return service

    app = DinfApp(service_factory=open_service, live_poll_s=0.1, idle_poll_s=0.2, max_backoff_s=0.5)
    try:
        asyncio.run(drive(app, scripted, fields))
    finally:
        scripted.close()
