"""The new-run form: validated as you type, the sbatch script previewed, submitted in the background.

Field checks are `tui.core.run_form.check_form` (the worker's own RunSpec rules plus Slurm resources);
each problem shows under its field. Preview and submit go through the app, which calls the
service in thread workers, so the form never freezes.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, Select, Static

from tui.core.run_form import CheckedForm, RunForm, check_form, follow_change
from tui.display.runs import plain
from tui.ui.messages import ActionFailed, DraftRequested, PreviewRendered, PreviewRequested, SubmitRequested
from tui.ui.widgets.connection_bar import ConnectionBar
from tui.ui.widgets.field_error import FieldError
from worker.contract import DTYPES, MODEL_CONFIGS, MODEL_SOURCES, MODES

SELECTS: dict[str, tuple[str, ...]] = {
    "source": MODEL_SOURCES,
    "model_config": tuple(MODEL_CONFIGS),
    "mode": MODES,
    "dtype": DTYPES,
}

LABELS = {
    "cluster": "Cluster",
    "name": "Run name",
    "source": "Model source",
    "model_config": "Synthetic config",
    "seed": "Weight seed",
    "checkpoint": "Checkpoint dir",
    "mode": "Parallel mode",
    "nodes": "Nodes",
    "ranks_per_node": "Ranks per node",
    "gpus_per_node": "GPUs/node (0 = CPU)",
    "batch_sizes": "Batch sizes",
    "max_new_tokens": "Max new tokens",
    "micro_batches": "Micro-batches",
    "dtype": "dtype",
    "partition": "Partition",
    "account": "Account",
    "qos": "QoS",
    "time_limit": "Time limit",
    "constraint": "Constraint",
    "container_image": "Apptainer image",
}

SECTIONS: list[tuple[str, list[str]]] = [
    ("Where", ["cluster", "name"]),
    ("Model", ["source", "model_config", "seed", "checkpoint", "dtype"]),
    ("Parallelism", ["mode", "nodes", "ranks_per_node", "gpus_per_node", "micro_batches"]),
    ("Workload", ["batch_sizes", "max_new_tokens"]),
    ("Slurm", ["partition", "account", "qos", "time_limit", "constraint", "container_image"]),
]


class NewRunScreen(Screen):
    """Fill in, preview (ctrl+p is the palette, so p), submit (ctrl+s)."""

    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]  # the preview goes below the form when narrow (app.tcss)
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("ctrl+r", "preview", "Preview script"),
        Binding("ctrl+s", "submit", "Submit"),
        Binding("ctrl+d", "save_draft", "Save draft"),
    ]

    def __init__(self, clusters: list[str], defaults: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.clusters = clusters or ["local"]
        self.cluster_defaults = defaults or {}
        self.checked = CheckedForm()
        self.busy = False
        self.preview_script: str | None = None
        self.preview_spec: str | None = None

    def compose(self) -> ComposeResult:
        initial = RunForm(cluster=self.clusters[0])
        yield ConnectionBar("new run")
        with Horizontal(id="new-run"):
            with VerticalScroll(id="run-form"):
                for title, names in SECTIONS:
                    yield Label(f"[b]{title}[/]", classes="form-section")
                    for name in names:
                        with Vertical(classes="form-field", id=f"field-{name}"):
                            with Horizontal(classes="form-row"):
                                yield Label(LABELS[name], classes="form-label")
                                value = getattr(initial, name)
                                if name == "cluster":
                                    options = [(plain(c), c) for c in self.clusters]  # names are data
                                    yield Select(options, value=value, allow_blank=False, id=name, compact=True)
                                elif name in SELECTS:
                                    options = [(o, o) for o in SELECTS[name]]
                                    yield Select(options, value=value, allow_blank=False, id=name, compact=True)
                                else:
                                    yield Input(value=value, id=name, compact=True)
                            yield FieldError(id=f"error-{name}")
                yield FieldError(id="error-general")
                with Horizontal(id="form-buttons"):
                    yield Button("Preview script", id="preview")
                    yield Button("Submit", variant="success", id="submit")
                    yield Button("Save draft", id="save-draft")
            with VerticalScroll(id="preview-pane"):
                yield Static("[dim]The run's settings and its sbatch script appear here (ctrl+r).[/]",
                             id="preview-text", markup=True)
        yield Footer(compact=True)  # about a third more bindings fit in 80 columns

    def on_mount(self) -> None:
        self._apply_cluster_defaults(self.clusters[0])
        self._validate()

    # --- values and validation ---------------------------------------------------------------

    def form_values(self) -> RunForm:
        values = {}
        for f in fields(RunForm):
            widget = self.query_one(f"#{f.name}")
            value = widget.value  # type: ignore[attr-defined]
            values[f.name] = "" if value is Select.BLANK or value is None else str(value)
        return RunForm(**values)

    def _validate(self) -> CheckedForm:
        form = self.form_values()
        self.checked = check_form(form)
        for f in fields(RunForm):
            message = self.checked.problems.get(f.name, "")
            self.query_one(f"#error-{f.name}", FieldError).show(message)
            self.query_one(f"#field-{f.name}").set_class(bool(message), "-invalid")
        self.query_one("#error-general", FieldError).show(self.checked.problems.get("general", ""))
        synthetic = form.source == "synthetic"
        self.query_one("#field-model_config").display = synthetic
        self.query_one("#field-seed").display = synthetic
        self.query_one("#field-checkpoint").display = not synthetic
        self.query_one("#field-micro_batches").display = form.mode == "pp"
        self.query_one("#submit", Button).disabled = not self.checked.ok or self.busy
        return self.checked

    def _apply_cluster_defaults(self, cluster: str) -> None:
        for name, value in self.cluster_defaults.get(cluster, {}).items():
            if value is not None and self.query(f"#{name}"):
                widget = self.query_one(f"#{name}")
                if isinstance(widget, Input):
                    widget.value = str(value)

    @on(Input.Changed)
    @on(Select.Changed)
    def _field_changed(self, event: Input.Changed | Select.Changed) -> None:
        widget = getattr(event, "select", None) or getattr(event, "input", None)
        changed = getattr(widget, "id", None) or ""
        if changed == "cluster":
            self._apply_cluster_defaults(str(event.value))
        # Fields that follow this one (ranks follow GPUs, single is one rank, CPU is float32); each
        # update posts its own Changed event, and follow_change returns nothing once they agree.
        for name, value in follow_change(self.form_values(), changed).items():
            self.query_one(f"#{name}").value = value  # type: ignore[attr-defined]
        self._validate()

    # --- preview and submit ------------------------------------------------------------------

    def _request(self) -> tuple[RunForm, CheckedForm] | None:
        checked = self._validate()
        if not checked.ok:
            self.notify("Fix the fields marked in red first.", severity="warning")
            return None
        return self.form_values(), checked

    @on(Button.Pressed, "#preview")
    def action_preview(self) -> None:
        request = self._request()
        if request is not None:
            form, checked = request
            self.query_one("#preview-text", Static).update("[dim]rendering the script…[/]")
            self.post_message(PreviewRequested(form, checked))

    @on(Button.Pressed, "#submit")
    def action_submit(self) -> None:
        request = self._request()
        if request is not None and not self.busy:
            form, checked = request
            self.busy = True
            self.query_one("#submit", Button).disabled = True
            self.query_one("#submit", Button).label = "Submitting…"
            self.post_message(SubmitRequested(form, checked))

    @on(Button.Pressed, "#save-draft")
    def action_save_draft(self) -> None:
        request = self._request()
        if request is not None and not self.busy:
            self.post_message(DraftRequested(*request))

    def on_preview_rendered(self, message: PreviewRendered) -> None:
        from rich.console import Group
        from rich.syntax import Syntax
        from rich.text import Text

        self.preview_script, self.preview_spec = message.script, message.spec_json
        # How the run is launched, then what the worker will read (spec.json: one setting a line).
        parts = [Text("Batch script", style="bold"), Syntax(message.script, "bash", theme="ansi_dark", word_wrap=True)]
        if message.spec_json:
            parts += [Text(""), Text("Run settings (spec.json)", style="bold"),
                      Syntax(_one_setting_a_line(message.spec_json), "json", theme="ansi_dark", word_wrap=True)]
        self.query_one("#preview-text", Static).update(Group(*parts))

    def on_action_failed(self, message: ActionFailed) -> None:
        if message.what == "preview":
            # No script this time: say why where it would have been (not 'rendering…' forever).
            self.query_one("#preview-text", Static).update(plain(f"No preview: {message.error}", "red", multiline=True))
        elif message.what in ("submit", "draft"):
            self._submit_failed(message.error)

    def _submit_failed(self, error: str) -> None:
        self.busy = False
        self.query_one("#submit", Button).label = "Submit"
        self._validate()
        self.query_one("#error-general", FieldError).show(error)


def _one_setting_a_line(spec_json: str) -> str:
    """The spec as JSON with each top-level setting on one line (lists and the model inline)."""
    import json

    spec = json.loads(spec_json)
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in sorted(spec.items())]
    return "{\n" + ",\n".join(lines) + "\n}"
