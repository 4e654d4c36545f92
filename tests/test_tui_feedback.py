"""Issue 19's feedback in the app, driven by keys: a new empty store says how to start (and the
letter keys work there), cancelling a running job says "cancelling" at once in its row and the
header, the active-only jobs view says how many jobs are stored when none is active, the
form's leave dialog names its answers, and the help glossary defines every metric short name
and the verdict terms (fluent-only included)."""

from __future__ import annotations

from rich.console import Console
from textual.widgets import DataTable, Input, Label

from engine import api, queue
from engine.specs import EvalSpec
from engine.store import Store
from tests.tui_pilot import press, make_app, screen_text, settle, type_into
from tui.demo import fill_demo
from tui.screens.help import HelpScreen, glossary_table
from tui.screens.new_job import NewJobScreen
from tui.screens.jobs import JobsScreen
from tui.screens.runs import RunsScreen
from tui.widgets.dialogs import ConfirmScreen

SIZE = (120, 40)


async def test_an_empty_store_says_how_to_start_and_its_keys_work(home):
    Store(home).close()     # as `compfair` does before the app opens (creates the store)
    app = make_app(home)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        text = screen_text(app)
        assert "No runs yet" in text and "compfair study quick" in text and "new-job form" in text
        assert not screen.query_one(DataTable).display
        assert not isinstance(app.focused, Input)    # no text field takes the letters
        footer = text.splitlines()[-1]                # only the keys that work on no runs
        assert "n New job" in footer and "c Compare" not in footer and "Sort" not in footer
        await press(pilot, "n")
        assert isinstance(app.screen, NewJobScreen)
        await press(pilot, "escape")
        assert isinstance(app.screen, RunsScreen) and "No runs yet" in screen_text(app)
        # A job queued and cancelled: the active-only jobs view says one is stored.
        store = Store(home)
        job = api.submit(store, EvalSpec(model="gpt2", seed=3), start_worker=False)
        assert api.cancel(store, job) == "cancelled"
        await press(pilot, "j")
        await press(pilot, "a")
        assert "none queued or running (a: all 1 jobs)" in screen_text(app)
        # Runs arrive: the table comes back, with the focus.
        fill_demo(home)
        await pilot.press("r")
        screen.reload()
        await settle(pilot)
        assert screen.total > 0 and screen.query_one(DataTable).display
        assert app.focused is screen.query_one(DataTable) and "No runs yet" not in screen_text(app)
        assert "c Compare" in screen_text(app).splitlines()[-1]


async def test_cancelling_shows_at_once_in_the_row_and_header(home):
    demo = fill_demo(home)
    store = Store(home)
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "1 running" in app.sub_title
        await press(pilot, "j")
        screen = app.screen
        assert isinstance(screen, JobsScreen)
        screen.select_job(demo["running"])
        await settle(pilot)
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")      # no settle: the row must not wait for the next poll
        table = screen.query_one(DataTable)
        assert table.get_cell(str(demo["running"]), "status").plain == "cancelling"
        assert "1 cancelling" in app.sub_title and "running ·" not in app.sub_title.split("cancelling")[0]
        assert queue.job(store, demo["running"])["cancel_requested"] == 1
        await settle(pilot)
        assert "cancelling" in screen_text(app)


async def test_leaving_an_edited_form_names_leave_and_stay(home):
    Store(home).close()     # as `compfair` does before the app opens (creates the store)
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "n")
        await type_into(pilot, "#eval-model", "gpt2")
        await pilot.press("escape")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        words = " ".join(str(label.render()) for label in dialog.query(Label))
        assert "leave" in words and "stay" in words
        await pilot.press("escape")      # escape in the dialog: stay
        await pilot.pause()
        assert isinstance(app.screen, NewJobScreen)


async def test_the_help_glossary_defines_metrics_and_verdict_terms(home):
    Store(home).close()     # as `compfair` does before the app opens (creates the store)
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
    console = Console(width=160, record=True, file=open("/dev/null", "w"))
    console.print(glossary_table())
    text = console.export_text()
    for term in ("EMT", "expected_max_toxicity", "TP", "toxicity_probability", "SMG", "TM", "SS",
                 "stereotype_score", "PPL", "perplexity", "distinct-2", "degenerate share",
                 "fluent-only", "margin", "family"):
        assert term in text, term
    # one line per verdict word, with the mark the tables show
    marks = {"better": "✔", "worse": "✘", "equivalent": "=", "inconclusive": "?",
             "not evidence": "⚠", "unverified": "⚠?", "changed": "~"}
    for word, mark in marks.items():
        assert any(line.startswith(f"{mark} {word} ") for line in text.splitlines()), word
    # the old "same" (no significant change) is gone
    assert not any(line.startswith(("same ", "≈")) for line in text.splitlines())
    assert "[lo, hi]" in text and "[margins]" in text     # terms print as written, not as markup
    assert "inside +-margin" in text and "more items would decide" in text
    fluent = next(line for line in text.splitlines() if line.startswith("fluent-only"))
    assert "EMT" in fluent and "TP" in fluent   # from the registry's fluent metrics
