"""New job: forms for evaluation, distillation and pruning built from the spec dataclasses
(fields, defaults and closed choices come from engine.specs), live validation by the spec
classes themselves, a sweep field, and a preview of exactly what will be queued. An eval form
shows only the fields its suite uses, a prune or quantize form those its method reads; the preview warns when the settings differ from the
finished runs of the suite (not comparable), when n is tiny, and when the job already ran
(ctrl+s again re-runs it on purpose, ctrl+g opens that run). `prefill` fills the form from a
run's spec ("evaluate like run N")."""

from __future__ import annotations

from functools import partial

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.widget import Widget
from textual.widgets import Checkbox, Footer, Header, Input, Label, Select, TabbedContent, TabPane

from engine import api
from engine.api import JobSpec, SpecError
from tui import format as fmt
from tui.form_checks import CHOSEN, FormNotes, data_after_suite_switch, form_notes, hidden_fields
from tui.forms import FormField, build_specs, form_fields, path_warnings, preview_lines, to_text
from tui.keys import TypingAware
from tui.screens.new_job_actions import FormActions
from tui.widgets.dialogs import model_dialog
from tui.widgets.panel import Panel

KINDS = (("eval", "Evaluate"), ("distill", "Distil"), ("prune", "Prune"), ("quantize", "Quantize"))
ALIASES = ("smollm2",)


class NewJobScreen(FormActions, TypingAware, Screen):
    BINDINGS = [
        Binding("ctrl+s", "submit", "Queue", priority=True),
        Binding("ctrl+o", "pick_model", "Pick model"),
        Binding("ctrl+t", "next_kind", "Job kind"),
        Binding("ctrl+r", "reset", "Defaults"),
        Binding("ctrl+g", "open_duplicate", "Open the earlier run", show=False),
        Binding("escape", "leave", "Leave", tooltip="the form; asks first when it has edits"),
        Binding("q", "quit_form", "Quit", show=False,
                tooltip="outside a text field; asks first when the form has edits"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.fields = {kind: form_fields(kind) for kind, _ in KINDS}
        self.specs: list[JobSpec] = []
        self.error: str | None = None
        self.refs: list[dict] = []
        self._invalid: Widget | None = None
        self._built: set[str] = set()
        self._suggester: SuggestFromList | None = None
        self._preview_pending = False
        self.notes = FormNotes([], {})
        self.rerun_ok: set[str] = set()      # spec hashes the user chose to run again
        self._hidden: dict[str, set[str]] = {}   # kind -> fields its suite / method does not use
        self._mounting: dict = {}            # kind -> the AwaitMount of its fields
        self._suite: str | None = None       # the suite shown (its data default is cleared)

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="kind-tabs", initial="eval"):
            for kind, title in KINDS:
                with TabPane(title, id=kind):
                    with VerticalScroll(classes="form"):
                        yield Grid(id=f"form-{kind}", classes="form-grid")
        with Horizontal(classes="form-row", id="sweep-row"):
            yield Label("sweep", classes="form-label")
            yield Input(placeholder="e.g. sparsity=0.3,0.5,0.7 seed=0,1  (one job per combination)",
                        id="sweep", compact=True)
        yield Label("", id="estimate")
        yield Panel("", id="preview")
        yield Footer(compact=True)

    def _widget(self, kind: str, f: FormField) -> Widget:
        wid = f"{kind}-{f.name}"
        if f.is_bool:
            return Checkbox(value=bool(f.default), id=wid, compact=True, classes="form-input")
        if f.choices:
            return Select([(c, c) for c in f.choices], value=f.default_text, allow_blank=False,
                          id=wid, compact=True, classes="form-input")
        suggester = SuggestFromList(f.suggestions, case_sensitive=False) if f.suggestions else None
        return Input(f.default_text, placeholder=f.placeholder, id=wid, compact=True,
                     suggester=suggester, classes="form-input")

    def _build(self, kind: str) -> None:
        """Mount a kind's fields the first time it is shown (keeps opening the screen fast)."""
        if kind in self._built:
            return
        self._built.add(kind)
        widgets: list[Widget] = []
        for f in self.fields[kind]:
            widgets += [Label(f.name, classes="form-label", id=f"{kind}-{f.name}-label"),
                        self._widget(kind, f)]
        self._mounting[kind] = self.query_one(f"#form-{kind}", Grid).mount_all(widgets)
        self._apply_suggester(kind)
        self.call_after_refresh(self._show_fields, kind)

    def _show_fields(self, kind: str) -> None:
        """Show the fields the chosen suite (eval) or method (prune, quantize) uses; hide the
        others (they keep their defaults)."""
        if kind not in self._built:
            return
        chosen = {f.name: str(self.query_one(f"#{kind}-{f.name}", Select).value)
                  for f in self.fields[kind] if f.name in CHOSEN}
        self._hidden[kind] = hidden_fields(kind, chosen)
        for f in self.fields[kind]:
            shown = f.name not in self._hidden[kind]
            for widget in self.query(f"#{kind}-{f.name}, #{kind}-{f.name}-label"):
                widget.display = shown

    def on_mount(self) -> None:
        self._build("eval")
        self._load_refs()
        self.update_preview()
        self.call_after_refresh(self._focus_first)
        self.app.theme_changed_signal.subscribe(self, lambda _: self.update_preview())

    def on_screen_resume(self) -> None:
        self._load_refs()
        self.call_after_refresh(self._focus_first)  # a reopened form starts at its first field

    def _focus_first(self) -> None:
        first = self.fields[self.kind][0]
        self.query_one(f"#{self.kind}-{first.name}").focus()

    def _load_refs(self) -> None:
        self.refs = api.model_refs(self.app.backend.store)
        known = {r["ref"] for r in self.refs}
        self.refs += [{"ref": a, "label": "offline default (SmolLM2-135M-Instruct)", "kind": "alias",
                       "n_params": None, "n_nonzero": None} for a in ALIASES if a not in known]
        labels = [r["label"] for r in self.refs if r["ref"].startswith("model:")]
        for r in self.refs:          # the field takes a unique model name: the picker puts that
            if r["ref"].startswith("model:") and labels.count(r["label"]) == 1 and " " not in r["label"]:
                r["insert"] = r["label"]
        self._suggester = SuggestFromList([r.get("insert") or r["ref"] for r in self.refs],
                                          case_sensitive=False)
        for kind in self._built:
            self._apply_suggester(kind)

    def _apply_suggester(self, kind: str) -> None:
        if self._suggester is None:
            return
        for f in self.fields[kind]:
            if f.is_model:
                self.query_one(f"#{kind}-{f.name}", Input).suggester = self._suggester

    # -- state ---------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.query_one(TabbedContent).active or "eval"

    def set_kind(self, kind: str) -> None:
        self._build(kind)
        self.query_one(TabbedContent).active = kind
        self.update_preview()
        self.call_after_refresh(self._focus_first)

    def values(self, kind: str | None = None) -> dict[str, str]:
        kind = kind or self.kind
        if kind not in self._built:
            return {f.name: f.default_text for f in self.fields[kind]}
        out = {}
        for f in self.fields[kind]:
            if f.name in self._hidden.get(kind, ()):   # a field the suite / method does not use
                out[f.name] = f.default_text
                continue
            widget = self.query_one(f"#{kind}-{f.name}")
            if isinstance(widget, Checkbox):
                out[f.name] = "true" if widget.value else "false"
            elif isinstance(widget, Select):
                out[f.name] = "" if widget.value is Select.BLANK else str(widget.value)
            else:
                out[f.name] = widget.value
        return out

    def set_value(self, name: str, text: str, kind: str | None = None) -> None:
        kind = kind or self.kind
        self._build(kind)
        widget = self.query_one(f"#{kind}-{name}")
        if isinstance(widget, Checkbox):
            widget.value = text.lower() in ("1", "true", "yes", "on")
        elif isinstance(widget, Select):
            widget.value = text
        else:
            widget.value = text

    def update_preview(self) -> None:
        kind = self.kind
        self._preview_pending = False
        sweep = self.query_one("#sweep", Input).value
        if self._invalid is not None:
            self._invalid.remove_class("invalid")
            self._invalid = None
        colors = fmt.theme_colors(self.app.theme_variables)
        try:
            self.specs = build_specs(kind, self.values(kind), sweep)
            self.error = None
        except SpecError as exc:
            self.specs = []
            self.show_error(kind, exc)
            return
        self.notes = FormNotes([], {})
        self._show_preview()
        specs = list(self.specs)
        self.run_worker(partial(self._read_notes, specs), exclusive=True, group="form-notes")

    async def _read_notes(self, specs: list[JobSpec]) -> None:
        notes = await self.app.backend.read(form_notes, specs)
        if specs == self.specs and not self.error:
            self.notes = notes
            self._show_preview()

    def _show_preview(self) -> None:
        """What will be queued, then the warnings: missing paths, settings not comparable with
        the suite's finished runs, a tiny n, and jobs that already ran."""
        colors = fmt.theme_colors(self.app.theme_variables)
        warnings = [w for spec in self.specs[:1] for w in path_warnings(spec)] + self.notes.warnings
        again = [(spec, self.notes.duplicates[spec.spec_hash()]) for spec in self.specs
                 if spec.spec_hash() in self.notes.duplicates]
        lines = preview_lines(self.specs)
        room = max(1, 4 - len(warnings) - bool(again))
        shown = lines[:room] + ([f"… and {len(lines) - room} more"] if len(lines) > room else [])
        text = Text.assemble((f"will queue {len(self.specs)} job{'s' if len(self.specs) != 1 else ''}"
                              " (ctrl+s):\n", "bold"), "\n".join(shown))
        if again:
            spec, dup = again[0]
            rerun = spec.spec_hash() in self.rerun_ok
            what = f"{len(again)} of these already ran" if len(again) > 1 else "this already ran"
            text.append(f"\n⟳ {what}: {dup.describe()}; "
                        + ("ctrl+s queues it again (re-run)" if rerun
                           else "ctrl+s twice re-runs it on purpose") + ", ctrl+g opens it",
                        style=colors["accent"])
        for w in warnings:
            text.append(f"\n⚠ {w}", style=colors["warning"])
        estimate = self.notes.estimate
        line = Text(estimate.text() if estimate else "est. …", style=colors["muted"])
        if estimate and estimate.needs_confirmation:
            line = Text(f"{estimate.text()} · ctrl+s asks first", style=colors["warning"])
        self.query_one("#estimate", Label).update(line)
        panel = self.query_one("#preview", Panel)
        height = min(2 + len(shown) + bool(again) + len(warnings), 9)
        if panel.styles.height is None or panel.styles.height.value != max(height, 6):
            panel.styles.height = max(height, 6)     # room for the warnings (relayout only then)
        panel.set(text)

    def show_error(self, kind: str, exc: Exception) -> None:
        """Say why the form cannot be queued and mark the field it is about (`SpecError.field`)."""
        colors = fmt.theme_colors(self.app.theme_variables)
        if self._invalid is not None:
            self._invalid.remove_class("invalid")
            self._invalid = None
        bad = self._field_of(kind, exc)
        message = str(exc)
        if bad and bad not in message:      # the message names its field
            message = f"{bad}: {message}"
        self.error = message
        if bad:
            self._invalid = self.query_one(f"#{kind}-{bad}" if bad != "sweep" else "#sweep")
            self._invalid.add_class("invalid")
        self.query_one("#estimate", Label).update("")
        hint = (f"fix the highlighted field ({bad})" if bad else "fix the form") + \
            "; ctrl+s queues once the form is valid"
        self.query_one("#preview", Panel).set(Text.assemble(
            ("✘ not queued: ", colors["worse"]), (self.error, colors["worse"]), "\n",
            (hint, colors["muted"])))

    def _field_of(self, kind: str, exc: Exception) -> str | None:
        """The form field an error is about: the error's own `field` when the form has it."""
        name = getattr(exc, "field", None)
        if name == "sweep" or any(f.name == name for f in self.fields[kind]):
            return name
        return None

    def has_edits(self) -> bool:
        """Whether any field differs from its default (leaving would lose it)."""
        if self.query_one("#sweep", Input).value.strip():
            return True
        defaults = {f.name: f.default_text for f in self.fields[self.kind]}
        return any(defaults.get(k, "") != v for k, v in self.values().items())

    # -- events --------------------------------------------------------------------------
    def _schedule_preview(self) -> None:
        """Validate once after a burst of changes (mounting fires one per field)."""
        if not self._preview_pending:
            self._preview_pending = True
            self.call_after_refresh(self._deferred_preview)

    def _deferred_preview(self) -> None:
        if self._preview_pending:
            self.update_preview()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._schedule_preview()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "eval-suite":
            self._switch_suite(str(event.value))
        kind, _, name = (event.select.id or "").partition("-")
        if name in CHOSEN:
            self._show_fields(kind)
        self._schedule_preview()

    def _switch_suite(self, suite: str) -> None:
        """The data of the suite left (its own built-in file) goes back to the default."""
        default = next(f.default_text for f in self.fields["eval"] if f.name == "suite")
        old, self._suite = self._suite or default, suite
        if old is None or "eval" not in self._built:
            return
        data = self.query_one("#eval-data", Input)
        reset = data_after_suite_switch(old, suite, data.value)
        if reset is not None:
            data.value = reset

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self._schedule_preview()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._build(self.kind)
        self._schedule_preview()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.focus_next()

    def on_descendant_focus(self, event) -> None:
        """The focused field's label is marked too (the focus reads at a glance)."""
        for label in self.query("Label.-focused"):
            label.remove_class("-focused")
        wid = getattr(event.widget, "id", None)
        if wid:
            for label in self.query(f"#{wid}-label"):
                label.add_class("-focused")

    # -- actions -------------------------------------------------------------------------
    def action_next_kind(self) -> None:
        kinds = [k for k, _ in KINDS]
        self.set_kind(kinds[(kinds.index(self.kind) + 1) % len(kinds)])

    def action_reset(self) -> None:
        for f in self.fields[self.kind]:
            self.set_value(f.name, f.default_text)
        self.query_one("#sweep", Input).value = ""
        self.update_preview()

    def action_pick_model(self) -> None:
        focused = self.focused
        kind = self.kind
        target = None
        if isinstance(focused, Input) and focused.id and focused.id.startswith(f"{kind}-"):
            name = focused.id[len(kind) + 1:]
            if any(f.name == name and f.is_model for f in self.fields[kind]):
                target = name
        if target is None:
            target = next(f.name for f in self.fields[kind] if f.is_model)

        def chosen(ref: str | None) -> None:
            if ref:
                self.set_value(target, ref, kind)
                self.query_one(f"#{kind}-{target}").focus()
        self._load_refs()
        self.app.push_screen(model_dialog(self.refs), chosen)

    def action_open_duplicate(self) -> None:
        """Open the finished run of the job this form would repeat."""
        dup = next(iter(self.notes.duplicates.values()), None)
        if dup is None or dup.run_id is None:
            self.notify("no earlier run of this job", severity="information", timeout=3)
            return
        self.app.open_run(dup.run_id)

    async def prefill(self, spec: dict) -> None:
        """Fill the form from a job's spec (its kind's fields; the rest keep defaults)."""
        kind = spec.get("kind", "eval")
        self.set_kind(kind)
        await self._mounting[kind]          # a first-time form: its fields exist only then
        for f in self.fields[kind]:
            self.set_value(f.name, to_text(spec[f.name]) if f.name in spec else f.default_text, kind)
        self.query_one("#sweep", Input).value = ""
        self._show_fields(kind)
        self.update_preview()
