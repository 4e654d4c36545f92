"""Small modal dialogs: confirm, choose an export format, pick a model (filtered as you type)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
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
            yield Label(self.question, classes="dialog-question")
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


class FilterChoiceScreen(ChoiceScreen):
    """A ChoiceScreen with a filter box above the list: typing keeps the options whose text
    contains every typed word; enter picks the highlighted (or first) option, down/up move."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("down", "move(1)", show=False),
                Binding("up", "move(-1)", show=False)]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Input(placeholder="type to filter", id="choice-filter", compact=True)
            yield OptionList(*self._options(""), id="choices")
            yield Label(self.help_text or "type to filter · enter: choose · escape: cancel",
                        classes="dialog-help")

    def _options(self, text: str) -> list[Option]:
        words = text.lower().split()
        return [Option(Text(shown), id=value) for value, shown in self.options
                if all(w in shown.lower() for w in words)]

    def on_mount(self, event) -> None:
        event.prevent_default()             # not ChoiceScreen's: the filter takes the focus
        self.query_one(Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        options.add_options(self._options(event.value))
        options.highlighted = 0 if options.option_count else None

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        options = self.query_one(OptionList)
        if options.option_count:
            self.dismiss(options.get_option_at_index(options.highlighted or 0).id)

    def action_move(self, by: int) -> None:
        options = self.query_one(OptionList)
        if options.option_count:
            options.highlighted = max(0, min(options.option_count - 1, (options.highlighted or 0) + by))

    @property
    def shown(self) -> list[str]:
        """The values of the options the filter keeps, in order."""
        options = self.query_one(OptionList)
        return [options.get_option_at_index(i).id for i in range(options.option_count)]


def model_dialog(refs: list[dict]) -> FilterChoiceScreen:
    """Pick a model; the value put in the field is `r["insert"]` (a name the app shows, which
    the field accepts) or else the reference."""
    options = []
    for r in refs:
        size = f" · {fmt.count(r['n_nonzero'] or r['n_params'])} params" if r.get("n_params") else ""
        value = r.get("insert") or r["ref"]
        extra = f" = {r['ref']}" if value != r["ref"] else ""
        label = f"  —  {r['label']}" if r["label"] != value else ""
        options.append((value, f"{value}{extra}{label} ({r['kind']}){size}"))
    return FilterChoiceScreen("Pick a model (or type a hub id or path in the field)", options)
