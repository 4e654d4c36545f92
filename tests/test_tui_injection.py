"""Terminal injection (issue 31, 0b): a job label or study name holding an escape sequence
(an OSC that retitles the terminal, a CSI that erases the screen) or markup is shown as text by
the terminal app, never acted on: the app reads its store through `Store(home, display=True)`
(`engine.display_text`), and its tables take string cells as plain text."""

from __future__ import annotations

import json

import pytest

from engine import queue
from engine.display_text import printable, text_factory
from engine.specs import EvalSpec
from engine.store import Store
from tests.tui_pilot import make_app, press, screen_text, settle

TITLE = "T\x1b]0;PWNED\x07U"
ERASE = "\x1b[2Jgone"
MARKUP = "[b]bold[/b]"


@pytest.mark.parametrize("raw", [TITLE, ERASE, "a\x9b31mb", "x\x00y\x7fz"])
def test_printable_leaves_no_control_character(raw):
    shown = printable(raw)
    assert not any(ord(c) < 32 and c not in "\t\n" or 0x7f <= ord(c) <= 0x9f for c in shown)
    # also when the text comes back from JSON (json.dumps writes ESC as \\u001b)
    decoded = json.loads(text_factory(json.dumps({"label": raw}).encode()))["label"]
    assert "\x1b" not in decoded and "\x07" not in decoded and "\x9b" not in decoded


def test_tabs_newlines_and_plain_text_are_kept():
    assert printable("a\tb\nc [x] é") == "a\tb\nc [x] é"


async def test_the_jobs_screen_shows_escape_sequences_and_markup_as_text(home, tiny_gpt2):
    store = Store(home)
    for label in (TITLE, ERASE, MARKUP):
        queue.submit(store, EvalSpec(model=str(tiny_gpt2), suite="perplexity", data="builtin",
                                     label=label), study=f"study{label}")
    app = make_app(home)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "j")
        await settle(pilot)
        text = screen_text(app)
        assert "\x1b" not in text and "\x07" not in text
        assert "PWNED" in text or "T\ufffd" in text          # shown, as text
        table = app.screen.query_one("#jobs-table")
        cells = [str(table.get_cell_at((row, col))) for row in range(table.row_count)
                 for col in range(len(table.columns))]
        assert not any("\x1b" in c for c in cells)
    store.close()
