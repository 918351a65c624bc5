"""`dinf-tui`: the Textual control panel — runs list, new-run form, live run view.

The app owns the state every screen shows (run records, per-run log buffers, connection states)
and every call into the service layer (`tui.core.service.Dinf`), each in a `@work(thread=True)`
worker that only posts messages (`tui.ui.messages`); widgets are touched on the UI thread alone.

Background work: one refresh loop (reconcile on start, then one batched status poll per cluster
every few seconds while runs are live, slower when idle, backing off on errors) and one log tail
per watched run. Quitting stops only these loops: jobs on clusters are never touched, and the
next start reconciles them and resumes tails and result ingestion.

Start-up is kept light (first frame < 0.5 s): the service layer (SQLModel, paramiko) is imported
in the first worker, never at module import, and torch is never imported on this path.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.command import Hit, Hits, Provider
from textual.content import Content
from textual.reactive import var
from textual.screen import Screen
from textual.worker import get_current_worker

from tui.core.connection import (
    Connections,
    HostKeyError,
    LinkState,
    PollVerdict,
    Trouble,
    classify,
    first_line,
    needs_the_user,
    problem_text,
)
from tui.core.logs.buffers import DEFAULT_MAX_LINES, RunLogs
from tui.core.logs.follow import follow_then_drain
from tui.core.logs.routing import route_chunks
from tui.display.runs import is_finished, is_live, printable, state_of
from tui.ui.messages import (
    ActionFailed,
    AnnotationRequested,
    CompareMarksChanged,
    ConnectionChanged,
    DraftRequested,
    DraftSaved,
    DraftSubmitRequested,
    HostKeyTrusted,
    LogBatchReceived,
    LogsUpdated,
    LogTailEnded,
    PreviewRendered,
    PreviewRequested,
    ResultsLoaded,
    ResultsRequested,
    RunAnnotated,
    RunCancelled,
    RunCancelRequested,
    RunOpenRequested,
    RunsRefreshed,
    RunSubmitted,
    ServiceFailed,
    ServiceOpened,
    SshTroubleMet,
    SubmitRequested,
)
from tui.ui.screens import focused_run_id
from tui.ui.screens.dialogs import ConfirmDialog, HostKeyDialog, ProblemDialog

if TYPE_CHECKING:
    from tui.core.config import ClusterConfig
    from tui.core.records import RunRecord
    from tui.core.run_form import CheckedForm, RunForm
    from tui.core.service import Dinf
from tui.ui.screens.runs import RunsScreen

LIVE_POLL_S = 2.0
"""Status poll while any run is live: one batched squeue/sacct per cluster."""
IDLE_POLL_S = 15.0
MAX_BACKOFF_S = 30.0
TAIL_DRAIN_S = 3.0
"""After a run finished, keep tailing until this long passes without a new line (its last lines)."""
TAIL_QUEUE_LIMIT = 8
"""Back-pressure: a tail waits while this many messages are queued for the UI."""


TAIL_KINDS = ("launcher", "events")
LOG_TAIL_BYTES = 4 << 20
"""Opening a run reads at most this much of each log's end (~40k lines of 100 bytes, about what a
view keeps): a log of millions of lines was read from byte 0 (188-270 MB of RSS, bench_tui.py)."""

ServiceFactory = Callable[[], Any]


def default_service_factory(db_path: Path | None = None, config_path: Path | None = None) -> ServiceFactory:
    def open_service() -> Any:
        from tui.core.service import Dinf  # heavy (sqlmodel, paramiko): imported off the UI thread

        return Dinf(db_path=db_path, config_path=config_path)

    return open_service


class RunCommands(Provider):
    """Command palette: 'open run <name>' for every run in the list."""

    async def search(self, query: str) -> Hits:
        app = self.app
        matcher = self.matcher(query)
        if not isinstance(app, DinfApp):
            return
        for record in list(app.runs.values()):
            title = printable(f"Open run #{record.id} {record.name} ({state_of(record)})")
            score, offsets = matcher.fuzzy_search.match(matcher.query, title)
            if score > 0:
                # Not matcher.highlight(): it parses the title as markup, and run names are data.
                shown = Content(title)
                for offset in offsets:
                    shown = shown.stylize(matcher.match_style, offset, offset + 1)
                yield Hit(score, shown, lambda rid=record.id: app.open_run(rid), text=title)


class DinfApp(App):
    """The dinf control panel."""

    CSS_PATH = "app.tcss"
    TITLE = "dinf"
    COMMANDS = App.COMMANDS | {RunCommands}
    BINDINGS = [Binding("v", "compare_runs", "Compare")]  # tui/ui/screens/compare.py

    runs_version: var[int] = var(0)
    connections_version: var[int] = var(0)

    def __init__(
        self,
        *,
        service_factory: ServiceFactory | None = None,
        start_demo: bool = False,
        live_poll_s: float = LIVE_POLL_S,
        idle_poll_s: float = IDLE_POLL_S,
        log_max_lines: int = DEFAULT_MAX_LINES,
        log_tail_bytes: int | None = LOG_TAIL_BYTES,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        super().__init__()
        self.service_factory = service_factory or default_service_factory()
        self.start_demo = start_demo
        self.live_poll_s = live_poll_s
        self.idle_poll_s = idle_poll_s
        self.log_max_lines = log_max_lines
        self.log_tail_bytes = log_tail_bytes
        self.max_backoff_s = max_backoff_s
        self.service: Dinf = None  # type: ignore[assignment]  (set once opened: every use waits for it)
        self.runs: dict[int, RunRecord] = {}
        self.connections = Connections()
        """The link to each cluster (`tui.core.connection`); changed on the UI thread only."""
        self.run_logs: dict[int, RunLogs] = {}
        self._tailing: set[int] = set()
        self._finished_runs: set[int] = set()
        """Runs seen terminal; read by tail threads (set membership is atomic under the GIL)."""
        self._wake_refresh = threading.Event()
        self._stopping = threading.Event()
        self._open_dialog_for: set[str] = set()
        self.compare_marks: tuple[list[int], int | None] = ([], None)
        """The compare screen's marks and baseline when it was last open (kept for its next opening)."""
        self._waiting_for_trust: dict[str, list[tuple[Callable[[], None] | None, Callable[[str], None] | None]]] = {}
        """cluster -> actions a host-key dialog interrupted: (resume, give_up), resumed once trusted."""

    def get_default_screen(self) -> Screen:
        return RunsScreen()

    def on_mount(self) -> None:
        # Long-lived loops (refresh, one tail per watched run) must not starve short calls
        # (submit, cancel): asyncio's default pool has only cpu+4 threads.
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="dinf"))
        # After the first frame: importing the service layer (SQLModel) holds the GIL for a
        # second and would otherwise delay the first paint.
        self.call_after_refresh(self._open_service)

    def exit(self, *args: Any, **kwargs: Any) -> None:
        # Stop our loops (never the jobs): threads see this within one poll.
        self._stopping.set()
        self._wake_refresh.set()
        super().exit(*args, **kwargs)

    # --- opening the service --------------------------------------------------------------------

    @work(thread=True, exit_on_error=False, group="service", description="opening the database")
    def _open_service(self) -> None:
        try:
            service = self.service_factory()
        except Exception as exc:  # a bad config or a newer database: say so, don't crash
            self.post_message(ServiceFailed(f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(ServiceOpened(service))

    def on_service_opened(self, message: ServiceOpened) -> None:
        from tui.ui.login_prompts import ask_in_dialog

        self.service = message.service
        self.service.login_questions = ask_in_dialog(self)  # a 2FA login asks in a dialog, not on the terminal
        # What is loaded by now (Textual, SQLModel, the first screens) lives all session. Freezing it
        # keeps full garbage collections, which stop every thread, from walking it again and again:
        # streaming 100k lines/s they paused the UI for 100-165 ms each (bench_tui.py).
        gc.freeze()
        self.connections = Connections(
            {name: cluster.backend == "local" for name, cluster in self.cluster_configs().items()}
        )
        self.connections_version += 1
        self._refresh_loop()
        if self.start_demo:
            self.action_demo_run()

    def on_service_failed(self, message: ServiceFailed) -> None:
        self.push_screen(ProblemDialog("dinf could not open its database or configuration", message.error))

    def cluster_configs(self) -> dict[str, ClusterConfig]:
        return dict(self.service.config.clusters) if self.service is not None else {}

    # --- refreshing runs --------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="refresh", description="refreshing runs")
    def _refresh_loop(self) -> None:
        worker = get_current_worker()
        service = self.service
        delay = self.live_poll_s
        first = True
        full_wanted, last_full, last_shape = True, 0.0, None
        while not (worker.is_cancelled or self._stopping.is_set()):
            try:
                if first:
                    polled = service.reconcile()  # reattach: every unfinished run checked, finished ones ingested
                else:
                    polled = service.refresh()
                # Every run is listed (a thousand snapshots: 90 ms, bench_tui.py) only when something
                # outside the poll may have changed: the first time, when asked ('r', a submit),
                # when a run was added, deleted or finished, and every idle_poll_s for other
                # processes' edits. Otherwise only the polled runs are sent.
                shape = service.runs_shape()
                if full_wanted or shape != last_shape or time.monotonic() - last_full >= self.idle_poll_s:
                    runs, complete = service.runs(), True
                    last_full, last_shape = time.monotonic(), shape
                else:
                    runs, complete = polled, False
                first = False
                self.post_message(RunsRefreshed(runs, complete))
                errors = dict(getattr(service, "cluster_errors", {}) or {})
                self._report_clusters(runs, errors)
                if errors:  # back off while a cluster can't be reached
                    delay = min(max(delay, 1.0) * 2, self.max_backoff_s)
                else:
                    delay = self.live_poll_s if any(is_live(r) for r in runs) else self.idle_poll_s
            except Exception as exc:
                self._report_trouble(getattr(exc, "cluster", None), exc)
                delay = min(max(delay, 1.0) * 2, self.max_backoff_s)
                last_shape = None  # list every run once it works again
            full_wanted = self._wake_refresh.wait(delay)  # woken: someone asked for a fresh list
            self._wake_refresh.clear()

    def _report_clusters(self, runs: Iterable[Any], errors: dict[str, str]) -> None:
        """From the refresh worker: what the poll means for each cluster's link (`Connections.polled`)."""
        live = {str(r.cluster) for r in runs if is_live(r)}
        for name, verdict in self.connections.polled(live, errors).items():
            if verdict is PollVerdict.HEALTHY:
                self.post_message(ConnectionChanged(name, self.connections.healthy(name)))
            elif verdict is PollVerdict.PROBE and self._probe_cluster(name):
                continue  # it needs the user: a dialog is on its way
            else:
                self.post_message(ConnectionChanged(name, LinkState.RECONNECTING, errors[name]))

    def _probe_cluster(self, name: str) -> bool:
        """From a worker: retry one status call to get the error itself; True if it needs the user
        (host key, login), in which case a dialog is on its way."""
        try:
            self.service.cluster(name).status([])
        except Exception as exc:
            if needs_the_user(exc):
                self._report_trouble(name, exc)
                return True
        return False

    def _report_trouble(self, cluster: str | None, exc: BaseException) -> None:
        """From a worker: host-key and login problems become dialogs, the rest 'reconnecting'."""
        names = [cluster] if cluster else self.connections.remote_names()
        if needs_the_user(exc):
            for name in names or ["?"]:
                self.post_message(SshTroubleMet(name, exc))
            return
        detail = first_line(str(exc)) or type(exc).__name__
        if not names:
            self.post_message(ActionFailed("refresh", detail))
        for name in names:
            self.post_message(ConnectionChanged(name, LinkState.RECONNECTING, detail))

    def on_runs_refreshed(self, message: RunsRefreshed) -> None:
        fresh = {record.id: record for record in message.runs}
        self.runs = fresh if message.complete else {**self.runs, **fresh}
        for record in message.runs:
            if is_finished(record):
                self._finished_runs.add(record.id)
        self.runs_version += 1

    def on_connection_changed(self, message: ConnectionChanged) -> None:
        self._set_link(message.cluster, message.state, message.detail)

    def _set_link(self, cluster: str, state: LinkState, detail: str = "") -> None:
        if self.connections.set(cluster, state, detail):
            self.connections_version += 1  # the connection bar redraws

    def action_refresh_runs(self) -> None:
        self._wake_refresh.set()

    # --- SSH trouble --------------------------------------------------------------------------------

    def on_ssh_trouble_met(self, message: SshTroubleMet) -> None:
        exc = message.error
        cluster = message.cluster
        trouble = classify(exc)
        if message.resume is not None or message.give_up is not None:
            if trouble is Trouble.HOST_KEY:  # the action resumes once the user trusts the key
                self._waiting_for_trust.setdefault(cluster, []).append((message.resume, message.give_up))
            elif message.give_up is not None:  # a failed login: nothing to resume, the dialog says why
                message.give_up(f"login to cluster {cluster} failed (see the dialog)")
        if cluster in self._open_dialog_for:
            return
        self._open_dialog_for.add(cluster)

        def closed(_: Any = None) -> None:
            self._open_dialog_for.discard(cluster)

        if isinstance(exc, HostKeyError):
            host = exc.host or cluster
            self._set_link(cluster, LinkState.FAILED, Connections.host_key_detail(exc))
            known = exc.expected_fingerprint

            def answered(trust: bool | None) -> None:
                closed()
                if trust:
                    self._set_link(cluster, LinkState.CONNECTING)
                    self._trust_host_key(cluster, exc)
                else:
                    self._set_link(cluster, LinkState.REFUSED)
                    self._give_up_waiting(cluster, f"the host key of cluster {cluster} was refused; nothing was sent")

            self.push_screen(
                HostKeyDialog(cluster, host, exc.fingerprint, changed=exc.changed,
                              known_fingerprint=str(known) if known else None),
                answered,
            )
            return
        self._set_link(cluster, LinkState.FAILED, "login failed")
        self.push_screen(
            ProblemDialog(
                f"Login to cluster {cluster} failed",
                f"{exc}\n\nCheck the user, key (IdentityFile) and ssh-agent for this host in ~/.ssh/config,\n"
                "then press r on the runs list to retry.",
            ),
            closed,
        )

    def _give_up_waiting(self, cluster: str, why: str) -> None:
        for _, give_up in self._waiting_for_trust.pop(cluster, []):
            if give_up is not None:
                give_up(why)

    @work(thread=True, exit_on_error=False, group="ssh", description="trusting a host key")
    def _trust_host_key(self, cluster: str, exc: HostKeyError) -> None:
        try:
            exc.trust()  # the transport that raised it records the key (known_hosts)
        except Exception as error:
            self.post_message(HostKeyTrusted(cluster, problem_text(error)))
            return
        self.post_message(HostKeyTrusted(cluster))

    def on_host_key_trusted(self, message: HostKeyTrusted) -> None:
        cluster = message.cluster
        if message.error is not None:
            self._set_link(cluster, LinkState.FAILED, message.error)
            self.notify(printable(f"trusting the host key of {cluster} failed: {message.error}", multiline=True),
                        severity="error", timeout=8, markup=False)
            self._give_up_waiting(cluster, f"the host key of cluster {cluster} could not be trusted")
            return
        waiting = self._waiting_for_trust.pop(cluster, [])
        for resume, _ in waiting:
            if resume is not None:
                resume()  # the interrupted submit or preview: it connects again and says how it went
        if not waiting:
            self._check_connection(cluster)  # else the header would wait for the next poll
        self._wake_refresh.set()

    @work(thread=True, exit_on_error=False, group="ssh", description="connecting")
    def _check_connection(self, cluster: str) -> None:
        try:
            self.service.cluster(cluster).status([])
        except Exception as exc:
            self._report_trouble(cluster, exc)
            return
        self.post_message(ConnectionChanged(cluster, self.connections.healthy(cluster)))

    def on_action_failed(self, message: ActionFailed) -> None:
        if message.what in ("submit", "preview"):
            # The form may be under a dialog (an SSH problem answered first): tell the whole stack.
            for screen in self.screen_stack:
                screen.post_message(ActionFailed(message.what, message.error, message.run_id))
        self.notify(printable(f"{message.what} failed: {message.error}", multiline=True), severity="error",
                    timeout=8, markup=False)

    # --- opening and watching a run -------------------------------------------------------------

    def logs_for(self, run_id: int) -> RunLogs:
        if run_id not in self.run_logs:
            self.run_logs[run_id] = RunLogs(max_lines=self.log_max_lines)
        return self.run_logs[run_id]

    def open_run(self, run_id: int) -> None:
        from tui.ui.screens.run import RunScreen

        if isinstance(self.screen, RunScreen) and self.screen.run_id == run_id:
            return
        self.push_screen(RunScreen(run_id, self.logs_for(run_id)))
        record = self.runs.get(run_id)
        if record is None or state_of(record) != "DRAFT":
            self.start_tail(run_id)

    def start_tail(self, run_id: int) -> None:
        if run_id in self._tailing or self.service is None:
            return
        self._tailing.add(run_id)
        logs = self.logs_for(run_id)
        self._tail(run_id, dict(logs.offsets), dict(logs.last_time))

    @work(thread=True, exit_on_error=False, group="tails", description="tailing run logs")
    def _tail(self, run_id: int, offsets: dict[str, int], last_time: dict[str, float]) -> None:
        worker = get_current_worker()
        try:
            # The launcher's capture holds the worker's log plus anything on stderr (tracebacks),
            # so it and the events are enough; the worker's own log file would repeat every line.
            stream = self.service.stream_logs(
                run_id, offsets or None, kinds=TAIL_KINDS, tail_bytes=self.log_tail_bytes
            )
            batches = follow_then_drain(
                stream, quiet_s=TAIL_DRAIN_S, finished=lambda: run_id in self._finished_runs,
                stopped=lambda: worker.is_cancelled or self._stopping.is_set(),
            )
            for chunks in batches:
                # One message per batch, parsed here so the UI thread only appends.
                self.post_message(LogBatchReceived(run_id, route_chunks(chunks, last_time)))
                while self.message_queue_size > TAIL_QUEUE_LIMIT and not self._stopping.is_set():
                    time.sleep(0.005)
        except Exception as exc:
            self.post_message(LogTailEnded(run_id, f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(LogTailEnded(run_id))

    def on_log_batch_received(self, message: LogBatchReceived) -> None:
        logs = self.logs_for(message.run_id)
        logs.apply(message.batch)
        self.screen.post_message(LogsUpdated(message.run_id))  # the run's screen redraws; others ignore it

    def on_log_tail_ended(self, message: LogTailEnded) -> None:
        self._tailing.discard(message.run_id)
        if message.error and not self._stopping.is_set():
            self.notify(printable(f"log stream of run {message.run_id} stopped: {message.error}", multiline=True),
                        severity="warning", markup=False)
            record = self.runs.get(message.run_id)
            if record is not None and not is_finished(record):
                cluster = str(record.cluster)
                state = self.connections.stream_interrupted(cluster)
                if state is not None:
                    self._set_link(cluster, state, "log stream interrupted")
                # Resume from the last delivered offsets (the backend already retried): no line
                # lost or repeated; the next successful poll marks the cluster connected again.
                self.set_timer(2.0, lambda: self.start_tail(message.run_id))

    @work(thread=True, exit_on_error=False, group="results", description="loading results")
    def load_results(self, run_id: int) -> None:
        try:
            measurements = list(self.service.measurements(run_id))
            correctness = self.service.correctness(run_id)
        except Exception as exc:
            self.post_message(ActionFailed("loading results", str(exc), run_id))
            return
        self.post_message(ResultsLoaded(run_id, measurements, correctness))

    def on_results_loaded(self, message: ResultsLoaded) -> None:
        for screen in self.screen_stack:  # the run's screen may be under a dialog
            screen.post_message(ResultsLoaded(message.run_id, message.measurements, message.correctness))

    def on_results_requested(self, message: ResultsRequested) -> None:
        self.load_results(message.run_id)

    def on_run_open_requested(self, message: RunOpenRequested) -> None:
        self.open_run(message.run_id)

    def on_run_cancel_requested(self, message: RunCancelRequested) -> None:
        self.confirm_cancel(message.run_id)

    def on_preview_requested(self, message: PreviewRequested) -> None:
        self.preview_run(message.form, message.checked)

    def on_submit_requested(self, message: SubmitRequested) -> None:
        self.submit_run(message.form, message.checked)

    def on_draft_requested(self, message: DraftRequested) -> None:
        self._save_draft(message.form, message.checked)

    def on_draft_submit_requested(self, message: DraftSubmitRequested) -> None:
        self._submit_draft(message.run_id)

    # --- new runs ------------------------------------------------------------------------------

    def action_new_run(self) -> None:
        from tui.ui.screens.new_run import NewRunScreen

        if self.service is None:
            self.notify("Still opening the database…")
            return
        configs = self.cluster_configs()
        default = self.service.config.default_cluster
        names = sorted(configs, key=lambda n: (n != default, n)) or ["local"]
        defaults = {name: _form_defaults(cfg) for name, cfg in configs.items()}
        resources = {name: cfg.defaults for name, cfg in configs.items()}  # what the form has no field for
        self.push_screen(NewRunScreen(names, defaults, resources))

    @work(thread=True, exit_on_error=False, group="preview", exclusive=True, description="rendering the script")
    def preview_run(self, form: RunForm, checked: CheckedForm) -> None:
        """Render the batch script without recording a run (no drafts pile up from previews), with
        the renderer `dinf submit --dry-run` and a submit use (`Dinf.render_script`)."""
        resume = lambda: self.preview_run(form, checked)  # noqa: E731
        give_up = lambda why: self.post_message(ActionFailed("preview", why))  # noqa: E731
        if self._is_remote(form.cluster):
            # Meet a host key to trust (or a failed login) as a submit would, in the same dialog.
            # Any other connection failure still previews: the script is worth seeing offline.
            try:
                self.service.cluster(form.cluster).status([])
            except Exception as exc:
                if needs_the_user(exc):
                    self.post_message(SshTroubleMet(form.cluster, exc, resume=resume, give_up=give_up))
                    return
            else:
                self.post_message(ConnectionChanged(form.cluster, LinkState.CONNECTED))
        try:
            script = self.service.render_script(cluster=form.cluster, spec=checked.spec, resources=checked.resources,
                                                name=form.name.strip() or None)
        except Exception as exc:
            if needs_the_user(exc):  # the same dialog as a submit; the preview resumes once trusted
                self.post_message(SshTroubleMet(form.cluster, exc, resume=resume, give_up=give_up))
            else:
                self.post_message(ActionFailed("preview", problem_text(exc)))
            return
        self.post_message(PreviewRendered(script, checked.spec.to_json()))

    def on_preview_rendered(self, message: PreviewRendered) -> None:
        for screen in self.screen_stack:  # the form, possibly under a dialog
            screen.post_message(PreviewRendered(message.script, message.spec_json))

    def _draft(self, form: RunForm, checked: CheckedForm) -> RunRecord:
        return self.service.new_run(
            cluster=form.cluster, spec=checked.spec, resources=checked.resources, name=form.name.strip() or None
        )

    @work(thread=True, exit_on_error=False, group="submit", description="submitting a run")
    def submit_run(self, form: RunForm, checked: CheckedForm) -> None:
        if not self._connect_before_submit(form.cluster, resume=lambda: self.submit_run(form, checked)):
            return
        try:
            record = self._draft(form, checked)
            record = self.service.submit(record.id)
        except Exception as exc:
            self.post_message(ActionFailed("submit", problem_text(exc)))
            return
        if state_of(record) == "SUBMIT_FAILED":  # recorded, nothing left running: say why
            self.post_message(ActionFailed("submit", record.error or "submission failed", record.id))
            return
        self.post_message(RunSubmitted(record))

    @work(thread=True, exit_on_error=False, group="submit", description="saving a draft")
    def _save_draft(self, form: RunForm, checked: CheckedForm) -> None:
        try:
            record = self._draft(form, checked)
        except Exception as exc:
            self.post_message(ActionFailed("draft", problem_text(exc)))
            return
        self.post_message(DraftSaved(record))

    def on_draft_saved(self, message: DraftSaved) -> None:
        record = message.run
        self._show_new_run(record)
        self.notify(printable(f"Saved run #{record.id} as a draft: press s on its screen to submit it."),
                    markup=False)

    @work(thread=True, exit_on_error=False, group="submit", description="submitting a draft")
    def _submit_draft(self, run_id: int) -> None:
        record = self.runs.get(run_id)
        if record is None:
            return
        if not self._connect_before_submit(record.cluster or "", resume=lambda: self._submit_draft(run_id)):
            return
        try:
            record = self.service.submit(run_id)
        except Exception as exc:
            self.post_message(ActionFailed("submit", problem_text(exc), run_id))
            return
        if state_of(record) == "SUBMIT_FAILED":
            self.post_message(ActionFailed("submit", record.error or "submission failed", record.id))
        self.post_message(RunSubmitted(record))

    def _connect_before_submit(self, cluster: str, *, resume: Callable[[], None]) -> bool:
        """From a worker: reach a remote cluster first, so an unknown host key or a failed login
        becomes a dialog (and no run is recorded) instead of a SUBMIT_FAILED run. After the user
        trusts the key, `resume` submits again; a refusal or a failed login ends the submit."""
        if not self._is_remote(cluster):
            return True
        self.post_message(ConnectionChanged(cluster, LinkState.CONNECTING))
        try:
            self.service.cluster(cluster).status([])
        except Exception as exc:
            if needs_the_user(exc):
                self.post_message(SshTroubleMet(cluster, exc, resume=resume,
                                                give_up=lambda why: self.post_message(ActionFailed("submit", why))))
            else:
                self.post_message(ConnectionChanged(cluster, LinkState.FAILED, str(exc)))
                self.post_message(ActionFailed("submit", f"cannot reach cluster {cluster}: {exc}"))
            return False
        self.post_message(ConnectionChanged(cluster, LinkState.CONNECTED))
        return True

    def _is_remote(self, cluster: str) -> bool:
        return self.connections.is_remote(cluster)

    def action_demo_run(self) -> None:
        if self.service is None:
            self.start_demo = True  # start as soon as the database is open
            return
        self.notify("Starting a demo run on this machine (tiny model, pp over 2 ranks)…")
        self._submit_demo()

    @work(thread=True, exit_on_error=False, group="submit", description="submitting the demo run")
    def _submit_demo(self) -> None:
        try:
            record = self.service.demo_run()
            if state_of(record) == "DRAFT":
                record = self.service.submit(record.id)
        except Exception as exc:
            self.post_message(ActionFailed("demo run", problem_text(exc)))
            return
        if state_of(record) == "SUBMIT_FAILED":
            self.post_message(ActionFailed("demo run", record.error or "submission failed", record.id))
        self.post_message(RunSubmitted(record))

    def _show_new_run(self, record: RunRecord) -> None:
        """A run just recorded (a draft or a submit): into the list, the form closed, its screen open."""
        from tui.ui.screens.new_run import NewRunScreen

        self.runs[record.id] = record
        self.runs_version += 1
        if isinstance(self.screen, NewRunScreen):
            self.pop_screen()
        self.open_run(record.id)

    def on_run_submitted(self, message: RunSubmitted) -> None:
        record = message.run
        self._show_new_run(record)
        self.start_tail(record.id)  # a draft submitted from its own screen: that screen is already open
        self._wake_refresh.set()

    # --- cancelling ----------------------------------------------------------------------------

    def confirm_cancel(self, run_id: int) -> None:
        record = self.runs.get(run_id)
        if record is None or is_finished(record):
            self.notify("That run has already finished.", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.notify(f"Cancelling run {run_id}…")
                self._cancel(run_id)

        name = record.name
        job = record.job_id or "not submitted"
        question = f"Cancel run #{run_id} {printable(name)} (job {printable(job)})?\nIts ranks will be stopped."
        self.push_screen(ConfirmDialog(question, yes_label="Cancel run", no_label="Keep running"), answered)

    @work(thread=True, exit_on_error=False, group="cancel", description="cancelling a run")
    def _cancel(self, run_id: int) -> None:
        try:
            record = self.service.cancel(run_id)
        except Exception as exc:
            self.post_message(ActionFailed("cancel", problem_text(exc), run_id))
            return
        self.post_message(RunCancelled(record))

    def on_run_cancelled(self, message: RunCancelled) -> None:
        record = message.run
        self.runs[record.id] = record
        if is_finished(record):
            self._finished_runs.add(record.id)
        self.runs_version += 1
        self.notify(printable(f"Run {record.id} is {state_of(record)}."), markup=False)
        self._wake_refresh.set()

    # --- tags and notes ------------------------------------------------------------------------

    def on_annotation_requested(self, message: AnnotationRequested) -> None:
        self._annotate(message.run_id, message.tags, message.notes)

    @work(thread=True, exit_on_error=False, group="annotate", description="saving tags and note")
    def _annotate(self, run_id: int, tags: list[str], notes: str) -> None:
        try:
            record = self.service.annotate(run_id, tags=tags, notes=notes)
        except Exception as exc:
            self.post_message(ActionFailed("saving tags and note", problem_text(exc), run_id))
            return
        self.post_message(RunAnnotated(record))

    def on_run_annotated(self, message: RunAnnotated) -> None:
        """Every screen shows the run's new tags and note."""
        self.runs[message.run.id] = message.run
        self.runs_version += 1

    # --- command palette -----------------------------------------------------------------------

    def action_compare_runs(self) -> None:
        """Open the compare screen with the marks it had when last closed, plus the run in focus
        (the baseline when none was kept)."""
        from tui.ui.screens.compare import CompareScreen

        run_id = focused_run_id(self.screen)
        marked, baseline = self.compare_marks
        if run_id is not None and run_id not in marked:
            marked = [*marked, run_id]
            baseline = baseline if baseline is not None else run_id
        self.push_screen(CompareScreen(marked, baseline))

    def on_compare_marks_changed(self, message: CompareMarksChanged) -> None:
        self.compare_marks = (list(message.marked), message.baseline_id)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Compare runs", "Fields that differ, metrics vs a baseline, charts, experiment grids",
                            self.action_compare_runs)
        yield SystemCommand("New run", "Fill in and submit a new run", self.action_new_run)
        yield SystemCommand("Demo run", "A tiny pipeline-parallel run on this machine", self.action_demo_run)
        yield SystemCommand("Refresh runs", "Poll every cluster now", self.action_refresh_runs)
        run_id = focused_run_id(screen)
        if run_id is not None:
            yield SystemCommand(f"Cancel run {run_id}", "Stop its job (asks first)", lambda: self.confirm_cancel(run_id))
            yield SystemCommand(f"Open run {run_id}", "Logs, progress and results", lambda: self.open_run(run_id))


def _form_defaults(cluster_config: ClusterConfig) -> dict[str, Any]:
    """New-run form values from a cluster's configured Slurm defaults."""
    resources = cluster_config.defaults
    defaults = {
        "nodes": resources.nodes,
        "ranks_per_node": resources.tasks_per_node,
        "gpus_per_node": resources.gpus_per_node,
        "partition": resources.partition,
        "account": resources.account,
        "qos": resources.qos,
        "time_limit": resources.time_limit,
        "constraint": resources.constraint,
        "reservation": resources.reservation,
        "gpu_type": resources.gpu_type,
        "exclusive": "yes" if resources.exclusive else "no",
        "extra_sbatch": shlex.join(resources.extra_sbatch) if resources.extra_sbatch else None,
        "container_image": resources.container_image,
    }
    if cluster_config.backend == "local":
        defaults["ranks_per_node"] = max(2, resources.tasks_per_node)  # the demo's shape: pp over 2
    return defaults


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dinf-tui", description="Run, watch and compare distributed inference runs.")
    parser.add_argument("--demo", action="store_true", help="start a demo run on this machine right away")
    parser.add_argument("--db", type=Path, help="SQLite database file (default: $DINF_DB or the data directory)")
    parser.add_argument("--config", type=Path, help="cluster configuration TOML (default: $DINF_CONFIG)")
    args = parser.parse_args(argv)
    app = DinfApp(service_factory=default_service_factory(args.db, args.config), start_demo=args.demo)
    app.run()
    if app.return_code:  # a crash (Textual prints the traceback) is a failed exit, not status 0
        sys.exit(app.return_code)


if __name__ == "__main__":
    main()
