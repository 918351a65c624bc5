"""One run: state timeline, job id, elapsed time, a progress bar per rank, live logs, results.

Logs: a merged tab (every rank, ordered by timestamp) and one tab per rank whose view is mounted
only when the tab is first opened (the lines are already buffered in `app.run_logs`). Follow
mode, a regex filter (only matching lines) and a regex search (highlight, Enter / n / N jump).
When the run has finished, the measurements table and the correctness summary appear.

All data comes from the app (records, buffers, results messages); this screen does no I/O.
"""

from __future__ import annotations

import re
import time
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane

from tui.core.logs.buffers import RunLogs
from tui.display.runs import (
    clock,
    describe_engine,
    duration,
    elapsed_s,
    history_of,
    is_finished,
    is_live,
    plain,
    ranks_of,
    state_of,
    state_text,
)
from tui.ui.messages import (
    DraftSubmitRequested,
    LogsUpdated,
    ResultsLoaded,
    ResultsRequested,
    RunCancelRequested,
)
from tui.ui.screens import FocusesRun
from tui.ui.widgets.connection_bar import ConnectionBar
from tui.ui.widgets.field_error import FieldError
from tui.ui.widgets.fixed_text import FixedText
from tui.ui.widgets.rank_log import RankLog
from tui.ui.widgets.rank_progress import RankProgressRow
from tui.ui.widgets.results import ResultsPanel

PROGRESS_REDRAW_S = 0.25
HEADER_MIN_LINES, HEADER_MAX_LINES = 6, 16


class RunScreen(FocusesRun, Screen):
    """Watch one run live; Esc goes back to the list (the run keeps going)."""

    # The footer shows what fits in 80 columns, most used first; the rest stay active and are
    # listed in the keys panel (ctrl+p, "Keys").
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("slash", "focus_search", "Search"),
        Binding("f", "toggle_follow", "Follow"),
        Binding("R", "show_tab('results')", "Results"),
        Binding("0", "show_rank(0)", "Rank", key_display="0-9"),
        Binding("c", "cancel_run", "Cancel run"),
        Binding("s", "submit_draft", "Submit draft"),
        Binding("q", "app.quit", "Quit"),
        Binding("m", "show_tab('merged')", "Merged log", show=False),
        Binding("ctrl+f", "focus_search", "Search", show=False),
        Binding("ctrl+l", "focus_filter", "Filter", show=False),
        Binding("n", "next_match", "Next match", show=False),
        Binding("N", "previous_match", "Prev match", show=False),
        Binding("v", "app.compare_runs", "Compare", show=False),
        *(Binding(str(rank), f"show_rank({rank})", f"Rank {rank}", show=False) for rank in range(1, 10)),
    ]

    def __init__(self, run_id: int, logs: RunLogs) -> None:
        super().__init__()
        self.run_id = run_id
        self.logs = logs
        self.follow = True
        self.search_pattern: re.Pattern[str] | None = None
        self.results_shown = False
        self._progress_drawn_at = 0.0
        self._tabs: TabbedContent | None = None
        self._views: dict[str, RankLog] = {}
        """pane id -> its mounted log view."""
        self._progress_pending = False
        self._actions_offered: tuple[bool, bool] | None = None

    @property
    def record(self) -> Any:
        return getattr(self.app, "runs", {}).get(self.run_id)

    def compose(self) -> ComposeResult:
        record = self.record
        ranks = ranks_of(record) if record is not None else 1
        yield ConnectionBar(f"run {self.run_id}")
        with Horizontal(id="run-header"):
            yield FixedText(id="run-summary")
            yield FixedText(id="run-timeline")
        with VerticalScroll(id="rank-progress"):
            for rank in range(ranks):
                yield RankProgressRow(rank)
        with Horizontal(id="log-tools"):
            yield Input(placeholder="filter: regex, only matching lines (ctrl+l)", id="log-filter", compact=True)
            yield Input(placeholder="search: regex, Enter / n = next (/)", id="log-search", compact=True)
            yield FixedText(id="search-count")
            yield FixedText(id="follow-state")
        yield FieldError(id="log-tools-error")
        with TabbedContent(id="log-tabs", initial="merged"):
            with TabPane("merged", id="merged"):
                yield RankLog(self.logs.merged, id="log-merged")
            for rank in range(ranks):
                with TabPane(f"rank {rank}", id=f"rank-{rank}"):
                    yield Static("", classes="lazy-placeholder")
            with TabPane("results", id="results"):
                yield ResultsPanel(id="results-panel")
        yield Footer(compact=True)  # about a third more bindings fit in 80 columns

    def on_mount(self) -> None:
        self._views["merged"] = self.query_one("#log-merged", RankLog)
        self.watch(self.app, "runs_version", self._record_changed, init=True)
        self.set_interval(1.0, self._tick)
        self._show_follow()

    # --- record, header, progress ---------------------------------------------------------------

    def _record_changed(self, _version: int = 0) -> None:
        record = self.record
        if record is None:
            return
        offered = (is_finished(record), state_of(record) == "DRAFT")  # "Cancel run" and "Submit draft"
        if offered != self._actions_offered:  # only while there is something to cancel or submit
            self._actions_offered = offered
            self.refresh_bindings()  # (only on a change: it redraws the footer)
        self._draw_header(record)
        self._draw_progress()
        if is_finished(record) and not self.results_shown:
            self.post_message(ResultsRequested(self.run_id))

    def _draw_header(self, record: Any) -> None:
        # Every field but the numbers comes from outside dinf (the user, Slurm, the ranks): each is
        # a plain Text, so a `[/x]` in a name or error shows as written instead of crashing.
        state = state_of(record)
        reason = getattr(record, "state_reason", None)
        lines = [
            Text.assemble(plain(getattr(record, "name", ""), "bold"), f"  #{self.run_id}"),
            Text.assemble("cluster ", plain(getattr(record, "cluster", ""), "bold"),
                          " · mode ", plain(getattr(record, "mode", ""), "bold"), f" · {ranks_of(record)} ranks"),
            Text.assemble("state ", state_text(state), plain(f" ({reason})") if reason else ""),
            Text.assemble("job id ", plain(getattr(record, "job_id", None) or "-", "bold"),
                          " · elapsed ", (duration(elapsed_s(record)), "bold")),
        ]
        if getattr(record, "engine_impl", None):
            lines.append(Text.assemble("engine ", (describe_engine(record), "bold")))
        lines.extend(_failure_lines(record))
        summary = Text("\n").join(lines)
        self.query_one("#run-summary", FixedText).update(summary)
        self._fit_header(summary)
        rows = [Text("timeline", style="bold")] + [
            Text.assemble(f"{clock(at)}  ", state_text(entry_state), " " if reason else "",
                          plain(reason, "dim") if reason else "")
            for entry_state, at, reason in history_of(record)[-5:]
        ]
        self.query_one("#run-timeline", FixedText).update(Text("\n").join(rows))

    def _fit_header(self, summary: Text) -> None:
        """Grow the header to the lines the summary wraps to (6 to HEADER_MAX_LINES), so an error is
        shown whole instead of cut mid-sentence. It changes size only when that count changes."""
        width = self.query_one("#run-summary", FixedText).size.width or max(20, self.size.width // 2 - 1)
        height = min(max(HEADER_MIN_LINES, len(summary.wrap(self.app.console, width))), HEADER_MAX_LINES)
        header = self.query_one("#run-header")
        if header.styles.height is None or header.styles.height.value != height:
            for widget in (header, self.query_one("#run-summary"), self.query_one("#run-timeline")):
                widget.styles.height = height

    def on_resize(self) -> None:
        record = self.record
        if record is not None:
            self.call_after_refresh(self._draw_header, record)  # the summary wraps to its new width

    def _draw_progress(self) -> None:
        record = self.record
        live = record is not None and is_live(record)
        running_since = getattr(record, "started_at", None) if record is not None else None
        now = time.time()
        ended = state_of(record) if record is not None and is_finished(record) else None
        for row in self.query(RankProgressRow):
            row.show(self.logs.rank_state(row.rank), live=live, now=now, running_since=running_since, ended=ended)

    def _tick(self) -> None:
        record = self.record
        if record is not None and is_live(record):
            self._draw_header(record)
            self._draw_progress()

    # --- logs ----------------------------------------------------------------------------------

    def on_logs_updated(self, message: LogsUpdated) -> None:
        """The app applied a new batch to `self.logs`: redraw the visible log (every batch) and the
        progress rows (at most a few times a second: their labels cost a layout pass)."""
        active = self._active_log()
        if active is not None:
            active.lines_changed()
        now = time.monotonic()
        if now - self._progress_drawn_at >= PROGRESS_REDRAW_S:
            self._progress_drawn_at = now
            self._draw_progress()
        elif not self._progress_pending:
            self._progress_pending = True
            self.set_timer(PROGRESS_REDRAW_S, self._draw_pending_progress)

    def _draw_pending_progress(self) -> None:
        self._progress_pending = False
        self._progress_drawn_at = time.monotonic()
        self._draw_progress()

    def _active_log(self) -> RankLog | None:
        """The log view of the active tab (a dict lookup: this runs for every batch of lines)."""
        if self._tabs is None:
            self._tabs = self.query_one(TabbedContent)
        return self._views.get(self._tabs.active)

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        pane = event.pane
        if pane.id and pane.id.startswith("rank-") and not pane.query(RankLog):
            rank = int(pane.id.removeprefix("rank-"))
            view = RankLog(self.logs.rank_buffer(rank), id=f"log-{pane.id}")
            view.follow = self.follow
            view.search = self.search_pattern
            pane.query(".lazy-placeholder").remove()
            pane.mount(view)
            self._views[pane.id] = view
            self._count_matches()
            return
        log = self._active_log()
        if log is not None:
            log.follow = self.follow
            log.search = self.search_pattern
            log.lines_changed()
        self._count_matches()

    def action_toggle_follow(self) -> None:
        log = self._active_log()
        self.follow = not (log.follow if log is not None else self.follow)
        for view in self.query(RankLog):
            view.follow = self.follow
            if self.follow:
                view.lines_changed()
        self._show_follow()

    def _show_follow(self) -> None:
        if self.follow:
            text = Text.assemble(("following", "bold green"))
        else:
            text = Text.assemble(("paused", "bold yellow"), " (f to follow)")
        self.query_one("#follow-state", FixedText).update(text)

    def on_rank_log_follow_changed(self, message: RankLog.FollowChanged) -> None:
        self.follow = message.follow  # scrolling back in a log pauses following, as `f` does
        self._show_follow()

    def action_focus_search(self) -> None:
        self.query_one("#log-search", Input).focus()

    def action_focus_filter(self) -> None:
        self.query_one("#log-filter", Input).focus()

    def _compile(self, text: str) -> re.Pattern[str] | None:
        error = self.query_one("#log-tools-error", FieldError)
        try:
            pattern = re.compile(text, re.IGNORECASE) if text else None
        except re.error as exc:
            error.show(f"not a valid regular expression: {exc}")
            raise
        error.show("")
        return pattern

    @on(Input.Changed, "#log-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        try:
            pattern = self._compile(event.value)
        except re.error:
            return
        self.logs.merged.set_filter(pattern)
        for buffer in self.logs.ranks.values():
            buffer.set_filter(pattern)
        for view in self.query(RankLog):
            view.lines_changed()

    @on(Input.Changed, "#log-search")
    def _search_changed(self, event: Input.Changed) -> None:
        try:
            self.search_pattern = self._compile(event.value)
        except re.error:
            return
        for view in self.query(RankLog):
            view.search = self.search_pattern
        self._count_matches()

    def _count_matches(self) -> None:
        """How many lines of the active tab match the search (counted when it changes, when a tab
        opens and at each jump; lines arriving in between are counted at the next)."""
        count = self.query_one("#search-count", FixedText)
        log = self._active_log()
        if self.search_pattern is None or log is None:
            count.update("")
            return
        search = self.search_pattern.search
        matches = sum(1 for line in log.buffer.visible if search(line))
        count.update(Text(f"{matches:,} matching line{'s' if matches != 1 else ''}", style="bold" if matches else "dim"))

    @on(Input.Submitted, "#log-search")
    def _search_submitted(self) -> None:
        self.action_next_match()

    def action_next_match(self) -> None:
        log = self._active_log()
        if log is not None and not log.find_next():
            self.notify("no further match", timeout=2)
        self._sync_follow(log)
        self._count_matches()

    def action_previous_match(self) -> None:
        log = self._active_log()
        if log is not None and not log.find_next(backwards=True):
            self.notify("no earlier match", timeout=2)
        self._sync_follow(log)
        self._count_matches()

    def _sync_follow(self, log: RankLog | None) -> None:
        if log is not None and log.follow != self.follow:
            self.follow = log.follow
            self._show_follow()

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_show_rank(self, rank: int) -> None:
        """Digit keys: the tab of rank 0-9 (labelled as the digit), where the run has that rank."""
        if self.query(f"#rank-{rank}"):
            self.action_show_tab(f"rank-{rank}")

    # --- results and actions ---------------------------------------------------------------------

    def on_results_loaded(self, message: ResultsLoaded) -> None:
        if message.run_id != self.run_id:
            return
        self.results_shown = True
        self.query_one(ResultsPanel).show(message.measurements, message.correctness)
        if self.follow:
            self.query_one(TabbedContent).active = "results"

    def focused_run_id(self) -> int | None:
        return self.run_id

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_run":  # a finished run has nothing to cancel: no key, no footer entry
            record = self.record
            return record is not None and not is_finished(record)
        if action == "submit_draft":  # only a draft has something to submit
            record = self.record
            return record is not None and state_of(record) == "DRAFT"
        return True

    def action_submit_draft(self) -> None:
        self.post_message(DraftSubmitRequested(self.run_id))

    def action_cancel_run(self) -> None:
        self.post_message(RunCancelRequested(self.run_id))

    def action_back(self) -> None:
        # Escape in the filter or search box leaves the box, not the screen: the next letters would
        # otherwise land on the runs list (its 'd' started a demo run).
        if isinstance(self.focused, Input):
            log = self._active_log()
            self.set_focus(log)  # None (the screen itself) on a tab without a log
            return
        self.app.pop_screen()


def _failure_lines(record: Any) -> list[Text]:
    """How the run failed: the first rank to die, its node and signal on a line of its own (the
    remote layer's failure summary), then the rest of the error; or the error alone."""
    error = str(getattr(record, "error", None) or "")
    failure = getattr(record, "failure", None)
    cause = str(getattr(failure, "cause", "") or "")
    if not cause:
        return [plain(error, "red")] if error else []
    rest = error[len(cause):].lstrip("; ") if error.startswith(cause) else error  # error repeats the cause first
    return [plain(f"✖ {cause}", "bold red")] + ([plain(rest, "red")] if rest else [])
