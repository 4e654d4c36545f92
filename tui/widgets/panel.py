"""A text panel of fixed size whose updates repaint it without a relayout of the screen
(Static.update relayouts everything, which costs on a busy form at every keystroke)."""

from __future__ import annotations

from rich.console import RenderableType
from textual.widget import Widget


class Panel(Widget):
    DEFAULT_CSS = "Panel { height: 1; }"

    def __init__(self, content: RenderableType = "", *, id: str | None = None,
                 classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self._content = content

    @property
    def content(self) -> RenderableType:
        return self._content

    def set(self, content: RenderableType) -> None:
        self._content = content
        self.refresh()

    def render(self) -> RenderableType:
        return self._content
