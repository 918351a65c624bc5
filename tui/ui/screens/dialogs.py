"""Modal dialogs: yes/no confirmation, an unknown SSH host key (trust / refuse), a login's questions
(keyboard-interactive: a one-time code), a problem report, a run's tags and note.

Each returns its answer through `dismiss()`; none of them does I/O. The host-key dialog only
asks: trusting is done by the caller, in a thread worker, through the remote layer's trust call.
The login dialog's answers go to its caller (`tui.ui.login_prompts`) and are kept nowhere; the tags
dialog checks what was typed (`tui.core.tags`) and hands it back for the caller to save.
Questions, titles and details carry run names, hosts and error text: shown as plain text (a
`str` is never parsed as markup; a caller wanting style passes a `rich.text.Text`).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from tui.core.tags import TagError, check_note, parse_tag_list
from tui.display.runs import plain
from tui.ui.widgets.field_error import FieldError


def _shown(text: str | Text) -> Text:
    return text if isinstance(text, Text) else plain(text, multiline=True)


class ConfirmDialog(ModalScreen[bool]):
    """A question with a default of 'no'; y / n / Esc answer it from the keyboard."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str | Text, *, yes_label: str = "Yes", no_label: str = "No") -> None:
        super().__init__()
        self.question = question
        self.yes_label = yes_label
        self.no_label = no_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(_shown(self.question), classes="dialog-question")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes_label, variant="error", id="yes")
                yield Button(self.no_label, variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class HostKeyDialog(ModalScreen[bool]):
    """An unknown (or changed) host key: show the fingerprint and let the user trust or refuse it."""

    BINDINGS = [Binding("escape", "refuse", "Refuse")]

    def __init__(
        self, cluster: str, host: str, fingerprint: str, *, changed: bool = False, known_fingerprint: str | None = None
    ) -> None:
        super().__init__()
        self.cluster = cluster
        self.host = host
        self.fingerprint = fingerprint
        self.changed = changed
        self.known_fingerprint = known_fingerprint
        """A changed key: the one known_hosts holds (the CLI shows both too)."""

    def compose(self) -> ComposeResult:
        if self.changed:
            title = Text.assemble("The host key of ", plain(self.host), " has CHANGED", style="bold red")
            advice = (
                "Someone may be intercepting the connection, or the host was reinstalled.\n"
                "Trust the new key only if its administrator confirms this fingerprint."
            )
        else:
            title = Text.assemble(Text.assemble("Unknown host key for ", plain(self.host), style="bold"),
                                  " (cluster ", plain(self.cluster), ")")
            advice = "Compare it with the fingerprint the cluster's administrators publish."
        with Vertical(classes="dialog"):
            yield Static(title, classes="dialog-question")
            if self.changed:
                yield Label(Text.assemble("known_hosts has   ", plain(self.known_fingerprint or "(not told)")),
                            id="known-fingerprint")
                yield Label(Text.assemble("the host presents ", plain(self.fingerprint)), id="fingerprint")
            else:
                yield Label(plain(self.fingerprint), id="fingerprint")
            yield Static(advice)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Trust and connect", variant="warning", id="trust")
                yield Button("Refuse", variant="primary", id="refuse")

    def on_mount(self) -> None:
        self.query_one("#refuse", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "trust")

    def action_refuse(self) -> None:
        self.dismiss(False)


class ProblemDialog(ModalScreen[None]):
    """Something went wrong that the user must read (failed login, failed submit, bad config)."""

    BINDINGS = [Binding("escape,enter", "close", "Close")]

    def __init__(self, title: str | Text, detail: str) -> None:
        super().__init__()
        self.title_text = title
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            title = self.title_text if isinstance(self.title_text, Text) else plain(self.title_text)  # one line
            yield Static(Text.assemble(title, style="bold"), classes="dialog-question")
            yield Static(plain(self.detail, multiline=True), id="problem-detail")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", variant="primary", id="close")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)


class AnnotateDialog(ModalScreen[tuple[list[str], str] | None]):
    """A run's tags (one line, space- or comma-separated) and its note (free text); answers
    (tags, note) once both are valid, or None. Enter in the tags line or ctrl+s saves."""

    BINDINGS = [
        Binding("escape", "close", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
    ]

    def __init__(self, title: str | Text, tags: list[str] | tuple[str, ...], notes: str) -> None:
        super().__init__()
        self.title_text = title
        self.tags = list(tags)
        self.notes = notes

    def compose(self) -> ComposeResult:
        from textual.widgets import TextArea  # here: importing it with the app costs its start-up 30 ms

        with Vertical(classes="dialog"):
            yield Static(Text.assemble(_shown(self.title_text), style="bold"), classes="dialog-question")
            yield Label("tags, separated by spaces (none: no tags) · Enter or ctrl+s saves")
            yield Input(" ".join(self.tags), id="annotate-tags")
            yield FieldError(id="annotate-tags-error")
            yield Label("note")
            yield TextArea(self.notes, id="annotate-note", soft_wrap=True, show_line_numbers=False)
            yield FieldError(id="annotate-note-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#annotate-tags", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._checked_tags()  # say what is wrong while typing, not only at Save

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_save()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)

    def _checked_tags(self) -> list[str] | None:
        error = self.query_one("#annotate-tags-error", FieldError)
        try:
            tags = parse_tag_list(self.query_one("#annotate-tags", Input).value)
        except TagError as exc:
            error.show(str(exc))
            return None
        error.show("")
        return tags

    def action_save(self) -> None:
        tags = self._checked_tags()
        note_error = self.query_one("#annotate-note-error", FieldError)
        try:
            note = check_note(self.query_one("#annotate-note").text)  # the TextArea
        except TagError as exc:
            note_error.show(str(exc))
            return
        note_error.show("")
        if tags is not None:
            self.dismiss((tags, note))

    def action_close(self) -> None:
        self.dismiss(None)


class LoginPromptDialog(ModalScreen[list[str] | None]):
    """A cluster's login asks questions (keyboard-interactive: a one-time code, a PIN): one input per
    prompt, hidden where the server says not to echo. Enter on the last input (or Log in) answers;
    Escape (or Cancel) answers None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, cluster: str, title: str, instructions: str, prompts: list[tuple[str, bool]]) -> None:
        super().__init__()
        self.cluster = cluster
        self.title_text = title
        self.instructions = instructions
        self.prompts = list(prompts)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text.assemble(Text.assemble("Login to cluster ", plain(self.cluster), style="bold"),
                                       " asks:"), classes="dialog-question")
            for text in (self.title_text, self.instructions):
                if text.strip():
                    yield Static(plain(text.strip(), multiline=True), classes="login-text")
            for index, (prompt, echo) in enumerate(self.prompts):
                yield Label(plain(prompt.strip(), multiline=True), classes="login-prompt")
                yield Input(password=not echo, id=f"answer-{index}", classes="login-answer")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Log in", variant="primary", id="login")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        inputs = self.query(Input)
        if inputs:
            inputs.first().focus()

    def answers(self) -> list[str]:
        return [self.query_one(f"#answer-{index}", Input).value for index in range(len(self.prompts))]

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        index = int(str(event.input.id).removeprefix("answer-"))
        if index + 1 < len(self.prompts):
            self.query_one(f"#answer-{index + 1}", Input).focus()
        else:
            self.dismiss(self.answers())

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.answers() if event.button.id == "login" else None)

    def action_cancel(self) -> None:
        self.dismiss(None)
