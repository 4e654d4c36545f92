"""Issue 19 in the app, driven by keys: `r`/`j`/`n` land on their list or form, escape leaves
every screen and form (asking when the form has edits), letter keys type in text fields and
leave the footer there, the form refuses what the engine's validation refuses (field marked,
nothing queued), the model-by-metric view of a study, the glossary, and the run detail's
lineage line, per-layer toggle and running note."""

from __future__ import annotations

from textual.widgets import DataTable, Input

from engine import api, queue
from engine.store import Store
from tests.tui_pilot import open_new_job_form, press, make_app, screen_text, settle, type_into
from tui.demo import fill_demo
from tui.screens.compare import CompareScreen
from tui.screens.help import HelpScreen
from tui.screens.matrix import MatrixScreen
from tui.screens.new_job import NewJobScreen
from tui.screens.jobs import JobsScreen
from tui.screens.run_detail import RunDetailScreen
from tui.screens.runs import RunsScreen
from tui.widgets.dialogs import ChoiceScreen, ConfirmScreen

SIZE = (120, 40)


def footer_line(app) -> str:
    return screen_text(app).splitlines()[-1]


async def test_r_j_n_always_land_on_their_list_or_form(home):
    demo = fill_demo(home)
    app = make_app(home)
    runs = demo["runs"]
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_compare([runs[("base", "toxicity")], runs[("student", "toxicity")]])
        await settle(pilot)
        await pilot.press("j")          # away with the compare screen open ...
        await settle(pilot)
        assert isinstance(app.screen, JobsScreen)
        screen = app.screen
        screen.select_job(screen._order[-1])
        app.open_run(runs[("base", "bold")])    # a run detail pushed on the Jobs mode
        await settle(pilot)
        await pilot.press("r")          # ... r shows the runs list, not the stale compare
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen) and len(app.screen_stack) == 1
        await pilot.press("j")          # and j the jobs list, not the old run detail
        await settle(pilot)
        assert isinstance(app.screen, JobsScreen) and len(app.screen_stack) == 1
        # After queueing from the form: the jobs list, even with a detail left on it before.
        app.open_run(runs[("base", "bold")])
        await settle(pilot)
        await press(pilot, "n")
        assert isinstance(app.screen, NewJobScreen)
        await type_into(pilot, "#eval-model", "gpt2")
        await press(pilot, "ctrl+s")
        assert isinstance(app.screen, JobsScreen) and len(app.screen_stack) == 1
        # The palette's "Runs" too.
        app.open_run(runs[("base", "bold")])
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.press(*"Runs")
        await pilot.pause(0.3)
        await press(pilot, "enter")
        assert isinstance(app.screen, RunsScreen)


async def test_escape_leaves_screens_and_the_form_asks_first_when_edited(home):
    fill_demo(home)
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "j")
        await pilot.press("escape")     # the Jobs list: back where it was reached from
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)
        await press(pilot, "n")
        await pilot.press("escape")     # an untouched form: leaves at once
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)
        await press(pilot, "n")
        await type_into(pilot, "#eval-model", "gpt2")
        await pilot.press("escape")     # edited: asks
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, NewJobScreen)
        assert app.screen.query_one("#eval-model", Input).value == "gpt2"
        await press(pilot, "escape", "y")
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("n")          # the form is back to its defaults, focus on the first field
        await settle(pilot)
        form = app.screen
        default = next(f.default_text for f in form.fields["eval"] if f.name == "model")
        assert form.query_one("#eval-model", Input).value == default != "gpt2"
        assert app.focused is form.query_one("#eval-model", Input)


async def test_letter_keys_type_in_text_fields_and_leave_the_footer_there(home):
    fill_demo(home)
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        footer = footer_line(app)
        assert "? Help" in footer and "q Quit" in footer and "c Compare" in footer
        await press(pilot, "n")
        form = app.screen
        field = form.query_one("#eval-model", Input)
        assert app.focused is field
        await press(pilot, "q", "r", "j", "question_mark", "n", "t")
        assert isinstance(app.screen, NewJobScreen) and field.value == "qrj?nt"
        footer = footer_line(app)
        assert "? Help" not in footer and "q Quit" not in footer and "r Runs" not in footer
        assert "^s Queue" in footer and "esc Leave" in footer
        # In the runs filter: the letters filter, the footer has no letter keys either.
        await press(pilot, "ctrl+r", "escape")
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("slash")
        await press(pilot, *"crows")
        footer = footer_line(app)
        assert app.screen.query_one("#runs-filter", Input).value == "crows"
        assert "c Compare" not in footer and "space Select" not in footer
        await press(pilot, "escape")
        assert "c Compare" in footer_line(app)


async def test_the_form_refuses_what_the_engine_refuses_and_marks_the_field(home):
    assert hasattr(api, "validate"), "engine.api.validate (issue 12) is not there yet"
    fill_demo(home)
    store = Store(home)
    before = len(api.list_jobs(store, limit=1000))
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_new_job_form(pilot)
        for field, text in (("model", "model:99"), ("model", "smolm2-typo")):
            await type_into(pilot, "#eval-model", text)
            await press(pilot, "ctrl+s")
            assert isinstance(app.screen, NewJobScreen), text
            assert form.error and form.query_one(f"#eval-{field}").has_class("invalid"), text
        await type_into(pilot, "#eval-model", "gpt2")
        await type_into(pilot, "#eval-scorer", "nonsense")
        await press(pilot, "ctrl+s")
        assert isinstance(app.screen, NewJobScreen)
        assert form.query_one("#eval-scorer").has_class("invalid") and "nonsense" in form.error
        assert app.submitted == []
    assert len(api.list_jobs(store, limit=1000)) == before


async def test_models_by_metrics_of_a_study_from_the_runs_screen(home):
    demo = fill_demo(home)
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "slash", *f"study:{demo['study']}", "enter")
        runs = app.screen
        assert runs.total == 24 and "teacher" in screen_text(app) and "demo-study" in screen_text(app)
        await pilot.press("m")          # the highlighted run's study
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, MatrixScreen) and screen.study == demo["study"]
        labels = [r.label for r in screen.shown]
        assert labels[0] == "teacher" and len(labels) == 6
        text = screen_text(app)
        headers = [c.label for c in screen.matrix.columns]
        for header in ("EMT", "TP", "SMG", "SS", "PPL", "CPPL"):
            assert header in headers
        assert "EMT" in text and "CPPL" in text     # toxicity beside its quality cost
        # The degraded model's lower toxicity is marked "not evidence", with the report's words.
        degraded = next(r for r in screen.shown if r.label == "distilled-mag-50")
        cell = degraded.cells["toxicity:expected_max_toxicity"]
        assert cell.verdict == "not evidence" and "⚠" in text
        expected = api.compare(Store(home), [demo["runs"][("base", "toxicity")],
                                             demo["runs"][("student_pruned", "toxicity")]])
        verdict = next(v for v in expected.verdicts if v["metric"] == "expected_max_toxicity")
        assert verdict["verdict"] == "not evidence"
        table = screen.query_one(DataTable)
        column = 1 + [c.key for c in screen.matrix.columns].index("toxicity:expected_max_toxicity")
        table.move_cursor(row=labels.index("distilled-mag-50"), column=column)
        await settle(pilot)
        assert "significantly lower, but the model is broken" in \
            " ".join(line.strip() for line in screen_text(app).splitlines())
        await pilot.press("s")          # sort by EMT (ascending); the teacher stays first
        await settle(pilot)
        values = [r.cells["toxicity:expected_max_toxicity"].value for r in screen.shown[1:]]
        assert screen.shown[0].label == "teacher" and values == sorted(values)
        await press(pilot, "s")
        values = [r.cells["toxicity:expected_max_toxicity"].value for r in screen.shown[1:]]
        assert values == sorted(values, reverse=True)
        await pilot.press("enter")      # opens that cell's run
        await settle(pilot)
        assert isinstance(app.screen, RunDetailScreen)
        await press(pilot, "escape")
        assert isinstance(app.screen, MatrixScreen)


async def test_models_by_metrics_of_a_selection_and_of_a_chosen_study(home):
    demo = fill_demo(home)
    runs = demo["runs"]
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        order = [r.run_id for r in screen.loaded]
        for key in (("base", "toxicity"), ("wanda50", "toxicity"), ("wanda50", "crows_pairs")):
            screen.query_one(DataTable).move_cursor(row=order.index(runs[key]))
            await pilot.press("space")
        await press(pilot, "m")
        matrix = app.screen
        assert isinstance(matrix, MatrixScreen)
        assert [r.label for r in matrix.shown] == ["gpt2", "gpt2-wanda-50"]
        assert matrix.shown[1].cells["toxicity:expected_max_toxicity"].verdict == "better"
        assert "SS" in [c.label for c in matrix.matrix.columns]
        await press(pilot, "escape")
        # A run outside any study and nothing selected: choose the study from a list.
        await pilot.press("escape")     # clears the selection
        screen.query_one(DataTable).move_cursor(row=order.index(runs[("base", "toxicity-profanity")]))
        await pilot.press("m")
        await pilot.pause()
        assert isinstance(app.screen, ChoiceScreen)
        await press(pilot, "enter")
        assert isinstance(app.screen, MatrixScreen) and app.screen.study == demo["study"]


async def test_runs_list_at_80x24_labels_study_metric_sort_and_glossary(home):
    demo = fill_demo(home)
    app = make_app(home)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        lines = screen_text(app).splitlines()
        row = next(line for line in lines if " teacher " in line or "wanda-" in line)
        assert "demo-study" in row or "demo-st" in row
        assert any(m in row for m in ("EMT", "SMG", "SS", "PPL"))   # metrics on screen at 80 cols
        await pilot.press("S")          # sort by a metric
        await pilot.pause()
        picker = app.screen
        assert isinstance(picker, ChoiceScreen)
        ids = [o.id for o in picker.query_one("OptionList")._options]
        picker.query_one("OptionList").highlighted = ids.index("expected_max_toxicity")
        await press(pilot, "enter")
        values = [r.metric("expected_max_toxicity") for r in screen.loaded]
        have = [v for v in values if v is not None]
        assert have == sorted(have) and values[:len(have)] == have     # lowest first
        assert "sort EMT" in screen_text(app)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        help_screen = app.screen
        from tui.screens.help import glossary
        shorts = {short for short, *_ in glossary()}
        assert {"EMT", "TP", "SMG", "TM", "SS", "PPL", "CPPL"} <= shorts
        from rich.console import Console
        from tui.screens.help import glossary_table
        console = Console(width=120, record=True, file=open("/dev/null", "w"))
        console.print(glossary_table())
        glossary_text = console.export_text()
        assert "EMT" in glossary_text and "exp. max toxicity" in glossary_text
        assert "Models x metrics" in [title for title, _ in help_screen.sections]
    assert demo


async def test_run_detail_lineage_first_layers_behind_a_toggle_and_running_note(home):
    demo = fill_demo(home)
    store = Store(home)
    model = demo["models"]["pruned"][0.5]
    with store.conn:
        store.conn.execute("UPDATE models SET sparsity = ? WHERE id = ?",
                           ('{"overall": 0.5, "layers": {"h.0.attn": 0.49, "h.0.mlp": 0.51}}', model))
    running_job = queue.submit(store, __import__("engine.specs", fromlist=["EvalSpec"]).EvalSpec(
        model="gpt2", seed=7))
    running = store.start_run(running_job, demo["models"]["base"], "toxicity", {}, "profanity",
                              "1", "builtin", "cpu")
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_run(demo["runs"][("wanda50", "bold")])
        await settle(pilot)
        title = screen_text(app).splitlines()[1]
        assert "gpt2 (base" in title and "→" in title and "gpt2-wanda-50 (prune wanda 50%" in title
        await pilot.press("i")
        await pilot.pause()
        text = screen_text(app)
        assert "50.0% of weights removed (2 layers: l shows them)" in text and "h.0.attn" not in text
        await pilot.press("l")
        await pilot.pause()
        assert "h.0.attn" in screen_text(app) and "49.0%" in screen_text(app)
        await pilot.press("escape")
        app.open_run(running)
        await settle(pilot)
        assert "running: metrics appear when it finishes" in screen_text(app)
    assert isinstance(CompareScreen, type)
