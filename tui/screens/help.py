"""Help: every screen's keys, generated from the screens' own bindings."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

INTRO = ("compfair measures what compression (distillation, pruning) did to toxicity and bias. "
         "Jobs run in a separate worker process: quitting the app leaves them running. "
         "ctrl+p opens the command palette (screens, new jobs, open a run by id or model).")


def _keys(binding: Binding) -> str:
    if binding.key_display:
        return binding.key_display
    return ", ".join(k.replace("ctrl+", "^") for k in binding.key.split(","))


def bindings_table(title: str, bindings) -> Table:
    table = Table(title=Text(title, style="bold"), title_justify="left", box=None,
                  show_header=False, padding=(0, 2, 0, 0))
    table.add_column("keys", style="bold", no_wrap=True, min_width=12)
    table.add_column("action")
    for b in bindings:
        if isinstance(b, Binding) and b.description:
            table.add_row(_keys(b), b.description)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        from tui.app import CompfairApp
        from tui.screens.compare import CompareScreen
        from tui.screens.new_job import NewJobScreen
        from tui.screens.queue import QueueScreen
        from tui.screens.run_detail import RunDetailScreen
        from tui.screens.runs import RunsScreen
        sections = [Text(INTRO), Text("")]
        extra = {NewJobScreen: [Binding("tab,enter", "", "next field"),
                                Binding("right", "", "accept the suggested model")]}
        for title, cls in (("Everywhere", CompfairApp), ("Runs", RunsScreen),
                           ("Run detail", RunDetailScreen), ("Compare", CompareScreen),
                           ("Jobs", QueueScreen), ("New job", NewJobScreen)):
            sections.append(bindings_table(title, [*extra.get(cls, []), *cls.BINDINGS]))
            sections.append(Text(""))
        sections.append(bindings_table("Palette", [Binding("ctrl+p", "", "command palette")]))
        with VerticalScroll(classes="dialog help"):
            yield Static(Group(*sections))

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()

    async def action_dismiss(self, result=None) -> None:
        self.dismiss(result)
