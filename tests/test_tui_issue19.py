"""Issue 19, the rest of it, driven by keys on the demo store: the models x metrics view's
verdicts are the study report's (finding 4) and its trade-off plot (3); runs of several suites
go to that view instead of a compare of dashes (3); the form shows only its suite's fields,
warns when its settings differ from the suite's finished runs or n is tiny (9), shows a job
that already ran and re-runs it only on purpose, and fills itself from a run ("evaluate like
run N"); jobs alike but for a setting read apart (10); End goes to the last run (6); the
highlighted run's abbreviations are spelled out (7); a run on a tiny n says so (9)."""

from __future__ import annotations

import json

from textual.widgets import DataTable, Input, Select

from engine import api, queue
from engine.report import judge_study
from engine.settings import load_settings
from engine.specs import EvalSpec
from engine.store import Store
from engine.study import study_record
from tests.tui_pilot import open_new_job_form, open_study_matrix, press, make_app, screen_text, settle, type_into
from tui.demo import fill_demo
from tui.matrix_data import study_matrix
from tui.screens.compare import spread
from tui.screens.matrix import MatrixScreen
from tui.screens.new_job import NewJobScreen
from tui.screens.jobs import JobsScreen
from tui.screens.run_detail import RunDetailScreen
from tui.screens.runs import RunsScreen

SIZE = (120, 40)


def flat(app) -> str:
    return " ".join(line.strip() for line in screen_text(app).splitlines())


def test_study_verdicts_are_the_reports_own(home):
    """Every judged cell of a study's models x metrics view carries the report's verdict,
    p-values and sentence (one family, one implementation)."""
    demo = fill_demo(home)
    store = Store(home)
    matrix = study_matrix(store, demo["study"])
    report = judge_study(store, study_record(store, demo["study"]), load_settings(home.root))
    judged = {(v["model"], v["suite"], v["metric"]): v for v in report.significance if not v["subset"]}
    seen = 0
    for row in matrix.rows:
        for col in matrix.columns:
            cell = row.cells.get(col.key)
            v = judged.get((row.label, col.suite, col.metric.name))
            if cell is None or v is None:
                continue
            seen += 1
            assert (cell.verdict, cell.p_value, cell.p_adjusted, cell.sentence) == \
                (v["verdict"], v["p_value"], v["p_adjusted"], v["sentence"])
    assert seen >= 25
    verdicts = {r.label: r.cells["toxicity:expected_max_toxicity"].verdict for r in matrix.rows}
    assert verdicts["distilled-mag-50"] == "not evidence" and verdicts["wanda-70"] == "worse"


async def test_trade_off_plot_and_mixed_suites_open_models_x_metrics(home):
    demo = fill_demo(home)
    runs = demo["runs"]
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_study_matrix(pilot, demo["study"])
        await press(pilot, "p")
        x, y = screen.plot_axes()
        assert x.metric.role == "quality" and y.metric.role == "fairness"
        legend = str(screen.query_one("#matrix-legend").render())
        for label in ("teacher", "distilled-6L", "wanda-30", "wanda-50", "wanda-70", "distilled-mag-50"):
            assert label in legend          # every model named, none cut off
        assert "trade-off" in screen_text(app)
        await pilot.press("v")              # the next quality metric on the x-axis
        await settle(pilot)
        assert screen.plot_axes()[0].key != x.key
        await press(pilot, "escape")
        # Runs of several suites selected: c opens models x metrics, not a compare of dashes.
        runs_screen = app.screen
        order = [r.run_id for r in runs_screen.loaded]
        for key in (("base", "toxicity"), ("base", "perplexity"), ("wanda50", "toxicity"),
                    ("wanda50", "perplexity")):
            runs_screen.query_one(DataTable).move_cursor(row=order.index(runs[key]))
            await pilot.press("space")
        await press(pilot, "c")
        matrix = app.screen
        assert isinstance(matrix, MatrixScreen)
        row = matrix.shown[1]
        assert row.cells["toxicity:expected_max_toxicity"].verdict and \
            row.cells["perplexity:perplexity"].value is not None
    assert spread([1.0, 1.0, 2.0]) != [1.0, 1.0, 2.0] and len(set(spread([5.0, 5.0, 5.0]))) == 3


async def test_form_suite_fields_warnings_duplicates_and_evaluate_like(home):
    demo = fill_demo(home)
    store = Store(home)
    with store.conn:        # the study's perplexity runs used a short context
        for (key, suite), run_id in demo["runs"].items():
            if suite == "perplexity":
                settings = json.loads(store.run(run_id)["settings"])
                store.conn.execute("UPDATE runs SET settings = ? WHERE id = ?", (json.dumps(
                    {**settings, "context_length": 128, "stride": 64}), run_id))
    before = len(api.list_jobs(store, limit=1000))
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_new_job_form(pilot)
        shown = {w.id for w in form.query(".form-input") if w.display}
        assert "eval-samples_per_prompt" in shown and "eval-scorer" in shown
        assert "eval-domains" not in shown and "eval-context_length" not in shown
        form.query_one("#eval-suite", Select).value = "perplexity"
        await settle(pilot)
        shown = {w.id for w in form.query(".form-input") if w.display}
        assert "eval-context_length" in shown and "eval-stride" in shown
        assert "eval-samples_per_prompt" not in shown and "eval-scorer" not in shown
        await type_into(pilot, "#eval-model", "gpt2")
        await type_into(pilot, "#eval-max_prompts", "5")
        await settle(pilot)
        text = flat(app)
        assert "context_length=512, but the 6 finished perplexity runs here use 128" in text
        assert "max_prompts=5: under 30 items" in text
        await press(pilot, "escape", "y")

        # Evaluate like run N: the run's own settings; queueing it again asks first.
        run_id = demo["runs"][("wanda50", "bold")]
        app.open_run(run_id)
        await settle(pilot)
        await press(pilot, "e")
        form = app.screen
        assert isinstance(form, NewJobScreen) and form.kind == "eval"
        job = api.run_detail(store, run_id)["job"]
        assert form.query_one("#eval-model", Input).value == job["spec"]["model"]
        assert form.query_one("#eval-suite", Select).value == "bold"
        assert form.query_one("#eval-domains").display      # BOLD's fields are back
        assert "this already ran: job" in flat(app) and f"run {run_id}" in flat(app)
        await pilot.press("ctrl+s")         # refused once, with how to open it
        await settle(pilot)
        assert isinstance(app.screen, NewJobScreen) and app.submitted == []
        await press(pilot, "ctrl+g")
        assert isinstance(app.screen, RunDetailScreen) and app.screen.run_id == run_id
        await press(pilot, "escape")
        assert isinstance(app.screen, NewJobScreen)
        await pilot.press("ctrl+s")         # the second time: a re-run on purpose
        await settle(pilot)
        assert isinstance(app.screen, JobsScreen) and len(app.submitted) == 1
        again = queue.job(store, app.submitted[0])
        assert again["spec_hash"] == queue.job(store, job["id"])["spec_hash"]
        # Changing the model (the point of "like run N") is no duplicate.
        await press(pilot, "r")
        runs_screen = app.screen
        runs_screen.query_one(DataTable).move_cursor(
            row=[r.run_id for r in runs_screen.loaded].index(demo["runs"][("base", "toxicity")]))
        await press(pilot, "e")
        form = app.screen
        await type_into(pilot, "#eval-model", f"model:{demo['models']['student']}")
        await type_into(pilot, "#eval-seed", "3")
        await settle(pilot)
        assert "already ran" not in flat(app)
    assert len(api.list_jobs(store, limit=1000)) == before + 1


async def test_look_alike_jobs_end_key_terms_and_tiny_n(home):
    demo = fill_demo(home)
    store = Store(home)
    a = queue.submit(store, EvalSpec(model="gpt2", suite="bold", seed=1))
    b = queue.submit(store, EvalSpec(model="gpt2", suite="bold", max_prompts=50))
    tiny = demo["runs"][("wanda30", "perplexity")]
    with store.conn:
        store.conn.execute("UPDATE metrics SET n = 2 WHERE run_id = ?", (tiny,))
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        lines = screen_text(app).splitlines()
        assert any("EMT = exp. max toxicity (lower is better)" in line or
                   "PPL = " in line or "SMG = " in line for line in lines[-3:])
        runs_screen = app.screen
        await pilot.press("end")            # the last run, not the last column
        await settle(pilot)
        table = runs_screen.query_one(DataTable)
        assert table.cursor_row == len(runs_screen.loaded) - 1 and table.scroll_x == 0
        await pilot.press("home")
        assert table.cursor_row == 0
        await press(pilot, "j")
        jobs = app.screen.query_one(DataTable)
        titles = {jid: str(jobs.get_cell(str(jid), "what")) for jid in (a, b)}
        assert titles[a] != titles[b] and "seed=1" in titles[a] and "max_prompts=50" in titles[b]
        app.open_run(tiny)
        await settle(pilot)
        assert "scored on 2 windows: too few for a reliable interval" in flat(app)
    assert isinstance(RunsScreen, type)
