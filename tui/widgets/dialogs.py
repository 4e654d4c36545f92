"""Small modal dialogs: confirm, choose an export format, pick a model reference."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from tui import format as fmt
from tui.state import EXPORT_FORMATS


class ConfirmScreen(ModalScreen[bool]):
    """y / enter: yes; n / escape: no. `yes` and `no` name the two answers (e.g. leave, stay)."""

    BINDINGS = [Binding("y,enter", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str, yes: str = "yes", no: str = "no"):
        super().__init__()
        self.question, self.yes, self.no = question, yes, no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question)
            yield Label(f"[b]y[/b]/enter {self.yes}   [b]n[/b]/esc {self.no}", classes="dialog-help")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class ChoiceScreen(ModalScreen[str | None]):
    """A list of (value, text) options; enter picks, escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, options: list[tuple[str, str]], help_text: str = ""):
        super().__init__()
        self.title_text = title
        self.options = options
        self.help_text = help_text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield OptionList(*[Option(Text(text), id=value) for value, text in self.options],
                             id="choices")
            yield Label(self.help_text or "enter: choose · escape: cancel", classes="dialog-help")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


def export_dialog() -> ChoiceScreen:
    return ChoiceScreen("Export as", [(value, f"{text} (.{value})") for value, text in EXPORT_FORMATS],
                        "written under the compfair home's reports/ folder")


def model_dialog(refs: list[dict]) -> ChoiceScreen:
    options = []
    for r in refs:
        size = f" · {fmt.count(r['n_nonzero'] or r['n_params'])} params" if r.get("n_params") else ""
        options.append((r["ref"], f"{r['ref']}  —  {r['label']} ({r['kind']}){size}"))
    return ChoiceScreen("Pick a model (or type a hub id or path in the field)", options)
