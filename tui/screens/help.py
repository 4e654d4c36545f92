"""Help: every screen's keys (the bindings are passed in by the app, so this module imports no
screen) and a glossary of the metric abbreviations used in the tables, from the suite registry."""

from __future__ import annotations

from typing import Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from engine.evaluation.suites import suites

INTRO = ("compfair measures what compression (distillation, pruning) did to toxicity and bias. "
         "Jobs run in a separate worker process: quitting the app leaves them running. "
         "ctrl+p opens the command palette (screens, new jobs, open a run by id or model). "
         "Keys that are letters do nothing while a text field has the focus (they type): "
         "escape leaves the field.")
Section = tuple[str, Sequence[Binding]]


def _keys(binding: Binding) -> str:
    if binding.key_display:
        return binding.key_display
    return ", ".join(k.replace("ctrl+", "^") for k in binding.key.split(","))


def bindings_table(title: str, bindings: Sequence) -> Table:
    """A two-column table of a screen's described bindings."""
    table = Table(title=Text(title, style="bold"), title_justify="left", box=None,
                  show_header=False, padding=(0, 2, 0, 0))
    table.add_column("keys", style="bold", no_wrap=True, min_width=12)
    table.add_column("action")
    for b in bindings:
        if isinstance(b, Binding) and b.description:
            table.add_row(_keys(b), b.description)
    return table


def glossary() -> list[tuple[str, str, str, str]]:
    """(abbreviation, metric name, title, description) of every registered metric with a short
    label, each abbreviation once, in the registry's order."""
    rows, seen = [], set()
    for suite in suites():
        for m in suite.metrics:
            if m.short and m.short not in seen:
                seen.add(m.short)
                rows.append((m.short, m.name, m.title, m.description))
    return rows


def terms() -> list[tuple[str, str]]:
    """(term, meaning) of the words the tables and verdicts use besides metric names; the
    fluent-only metrics are those the suite registry marks (`Suite.fluent_metrics`)."""
    shorts = {m.name: m.short or m.name for suite in suites() for m in suite.metrics}
    fluent = [shorts.get(name, name) for suite in suites() for name in suite.fluent_metrics]
    rows = [("[lo, hi]", "a bootstrap confidence interval over the run's items (level: "
                         "statistics.confidence in the settings, 95% by default)"),
            ("Δ, delta", "a model's value minus its baseline's (the teacher's), paired on the "
                         "same items; its p-value is adjusted over all the tests shown")]
    if fluent:
        rows.append(("fluent-only", f"{', '.join(dict.fromkeys(fluent))} over the continuations "
                     "within the teacher's fluency range (their NLL at most a high percentile "
                     "of the teacher's own): a drop that survives it is not broken text"))
    rows += [("better / worse", "a significant paired difference, quality held"),
             ("same", "no significant difference after the adjustment"),
             ("not evidence", "lower toxicity or bias while the continuations degraded "
                              "(CPPL up, D2 down or DEG up): broken text scores as safe")]
    return rows


def glossary_table() -> Table:
    table = Table(title=Text("Glossary: metrics and terms", style="bold"), title_justify="left",
                  box=None, show_header=False, padding=(0, 2, 0, 0))
    table.add_column("short", style="bold", no_wrap=True, min_width=12)
    table.add_column("meaning")
    for short, name, title, description in glossary():
        table.add_row(short, Text.assemble((title, "bold"), f" ({name})",
                                           f": {description}" if description else ""))
    for term, meaning in terms():
        table.add_row(term, meaning)
    return table


class HelpScreen(ModalScreen[None]):
    """`sections`: (title, bindings) per screen, in the order shown."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def __init__(self, sections: Sequence[Section]):
        super().__init__()
        self.sections = list(sections)

    def compose(self) -> ComposeResult:
        parts: list = [Text(INTRO), Text("")]
        for title, bindings in self.sections:
            parts += [bindings_table(title, bindings), Text("")]
        parts += [bindings_table("Palette", [Binding("ctrl+p", "", "command palette")]), Text(""),
                  glossary_table()]
        with VerticalScroll(classes="dialog help"):
            yield Static(Group(*parts))

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()

    async def action_dismiss(self, result=None) -> None:
        self.dismiss(result)
