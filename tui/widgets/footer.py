"""The footer of every screen but the new-job form: the screen's keys from the left, and help
and quit held at the right edge, so that a narrow terminal (80 columns and less) cuts the
screen's secondary keys, never the two a user needs to find the rest or to leave. The command
palette item is not shown (ctrl+p still opens it; help lists it): at 70-80 columns it was
drawn over the keys ("palettee")."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import HorizontalGroup
from textual.widget import Widget
from textual.widgets import Footer

ESSENTIAL = ("help", "quit")     # app actions kept on screen at any width, in this order


class KeyFooter(Footer):
    DEFAULT_CSS = """
    KeyFooter HorizontalGroup.-essential {
        dock: right;
        width: auto;
        background: $footer-background;
        padding-left: 1;
    }
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("compact", True)
        kwargs.setdefault("show_command_palette", False)
        super().__init__(**kwargs)

    def compose(self) -> ComposeResult:
        kept: dict[str, Widget] = {}
        for widget in super().compose():
            action = getattr(widget, "action", None)    # a key of the footer (not Textual's API)
            if action in ESSENTIAL and action not in kept:
                kept[action] = widget
            else:
                yield widget
        if kept:
            yield HorizontalGroup(*(kept[a] for a in ESSENTIAL if a in kept), classes="-essential")
