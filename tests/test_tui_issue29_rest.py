"""Issue 29, the last items: End in the runs list goes to the true last run (1), compare marks a
delta no paired test judged as "descriptive" (2), column heads shared by two suites read
`CPPL (tox)` (3), an empty form field says what empty means, never a type name (4), a
quantize or prune form shows only its method's fields (5), and `compfair submit --model NAME`
queues the job the name stands for, so "already ran" sees an earlier `model:ID` job (6)."""

from __future__ import annotations

from textual.widgets import DataTable, Input, Select

from engine import api
from engine.cli import main
from engine.store import Store
from tests.tui_pilot import (make_app, open_form, open_study_matrix, press, screen_text, settle,
                             wait_for)
from tui import format as fmt
from tui.demo import add_eval_run, fill_demo, fill_many
from tui.forms import form_fields
from tui.screens.runs import FIRST_PAGE, PAGE
from engine.verdicts import SECONDARY

N_RUNS = FIRST_PAGE + 2 * PAGE + 50       # more than End would reach page by page


# -- item 1: End goes to the last run, not to the last one read ---------------------------------
async def test_end_in_the_runs_list_reaches_the_last_run(home):
    fill_many(home, N_RUNS)
    store = Store(home)
    oldest = api.list_runs(store, sort="date", descending=False, limit=1)[0].run_id
    store.close()
    app = make_app(home)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen, table = app.screen, app.screen.query_one(DataTable)
        assert len(screen.loaded) == FIRST_PAGE and screen.total == N_RUNS
        await press(pilot, "end")
        await wait_for(pilot, lambda: len(screen.loaded) == N_RUNS and not screen._paging)
        await settle(pilot)
        assert table.row_count == N_RUNS
        assert table.cursor_row == N_RUNS - 1
        assert screen.current_run_id() == oldest            # newest first: the oldest is last
        assert f"{N_RUNS} runs" in screen_text(app)
        await press(pilot, "home")
        assert table.cursor_row == 0


# -- item 2: no delta without what it means -----------------------------------------------------
async def test_compare_judges_the_suites_groups_and_marks_the_rest_descriptive(home):
    demo = fill_demo(home)
    ids = [demo["runs"][(key, "toxicity")] for key in ("base", "student", "wanda50")]
    app = make_app(home)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        app.open_compare(ids)
        await settle(pilot)
        comparison = app.screen.comparison
        table = app.screen.query_one(DataTable)
        subsets = 0
        for index, (name, subset, cells) in enumerate(comparison.rows):
            for column, cell in enumerate(cells[1:], start=3):     # the baseline's says so
                if cell.delta is None:
                    continue
                second = table.get_cell_at((index, column)).plain.split("\n")[1]
                if cell.verdict:
                    assert fmt.MARKS[cell.verdict] in second, (name, subset, second)
                else:
                    assert second.endswith(" descriptive"), (name, subset, second)
            if subset:
                subsets += 1
        assert subsets and any(c.verdict for _, subset, cells in comparison.rows if not subset
                               for c in cells)
        # the suite's groups (RTP's toxic / non-toxic prompts) are judged, paired within each
        # group and adjusted with the secondary family; other rows stay descriptive
        judged_groups = {(n, s) for n, s, cells in comparison.rows if s and any(c.verdict for c in cells)}
        assert judged_groups and {s for _, s in judged_groups} <= {"toxic", "nontoxic"}
        assert {(v["metric"], v["subset"]) for v in comparison.group_verdicts} >= judged_groups
        assert all(v["family"] == SECONDARY for v in comparison.group_verdicts)
        untested = any(c.delta is not None and not c.verdict for _, _, cells in comparison.rows
                       for c in cells[1:])
        assert ("descriptive: no paired test" in " ".join(screen_text(app).split())) == untested
        # runs without stored samples (the demo's BOLD runs) cannot be paired: every delta says so
        bold = [demo["runs"][(key, "bold")] for key in ("base", "student")]
        app.open_compare(bold)
        await settle(pilot)
        table = app.screen.query_one(DataTable)
        seconds = [table.get_cell_at((index, 3)).plain.split("\n")[1]
                   for index, (_, _, cells) in enumerate(app.screen.comparison.rows)
                   if cells[1].delta is not None]
        assert seconds and all(second.endswith(" descriptive") for second in seconds)
        assert "descriptive: no paired test" in " ".join(screen_text(app).split())


# -- item 3: readable column heads --------------------------------------------------------------
async def test_a_head_two_suites_share_names_each_suite(home):
    demo = fill_demo(home)
    store = Store(home)      # BOLD's continuations measured too: two suites' CPPL columns
    bold = [run for (_, suite), run in demo["runs"].items() if suite == "bold"]
    store.db["metrics"].insert_all({"run_id": run, "name": "continuation_perplexity", "subset": "",
                                    "value": 20.0, "ci_low": 19.0, "ci_high": 21.0, "n": 200,
                                    "higher_is_better": 0} for run in bold)
    store.close()
    app = make_app(home)
    async with app.run_test(size=(240, 50)) as pilot:
        screen = await open_study_matrix(pilot, demo["study"])
        labels = [c.label for c in screen.matrix.columns]
        assert "CPPL (tox)" in labels and "CPPL (BOLD)" in labels, labels
        assert not any(label.endswith((" toxi", " bold")) for label in labels), labels
        text = screen_text(app)
        assert "CPPL (tox)" in text and "CPPL (BOLD)" in text


# -- item 4: placeholders say what an empty box means --------------------------------------------
def test_no_placeholder_is_a_type_name():
    types = {"str", "int", "float", "bool", "list"}
    for kind in ("eval", "distill", "prune", "quantize"):
        for f in form_fields(kind):
            assert f.placeholder and f.placeholder not in types, (kind, f.name, f.placeholder)
    shown = {(kind, f.name): f.placeholder for kind in ("eval", "distill", "quantize")
             for f in form_fields(kind)}
    assert shown[("eval", "device")] == "empty: auto"
    assert shown[("eval", "seed")] == "empty: 0"
    assert shown[("eval", "batch_size")] == "empty: automatic"      # optional there
    assert shown[("distill", "batch_size")] == "empty: 8"          # not there
    assert shown[("eval", "scorer_label")] == "optional"


async def test_a_cleared_field_shows_its_default_as_the_hint(home):
    app = make_app(home)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await open_form(pilot)
        device = app.screen.query_one("#eval-device", Input)
        assert device.placeholder == "empty: auto"


# -- item 5: a method's own fields ---------------------------------------------------------------
def _shown(screen, kind: str) -> set[str]:
    return {f.name for f in screen.fields[kind] if screen.query_one(f"#{kind}-{f.name}").display}


async def test_quantize_and_prune_forms_show_their_methods_fields(home):
    app = make_app(home)
    async with app.run_test(size=(120, 50)) as pilot:
        await settle(pilot)
        await open_form(pilot)
        screen = app.screen
        screen.set_kind("quantize")
        await settle(pilot)
        shown = _shown(screen, "quantize")
        assert {"bits", "group_size", "symmetric"} <= shown and "gguf_type" not in shown
        assert not shown & {"calibration_data", "calibration_samples"}
        assert not screen.query_one("#quantize-gguf_type-label").display
        screen.query_one("#quantize-method", Select).value = "gguf"
        await settle(pilot)
        shown = _shown(screen, "quantize")
        assert "gguf_type" in shown and not shown & {"bits", "group_size", "symmetric"}
        screen.query_one("#quantize-method", Select).value = "gptq"
        await settle(pilot)
        assert {"bits", "calibration_data", "calibration_samples"} <= _shown(screen, "quantize")
        # a hidden field keeps its default in what is queued
        screen.query_one("#quantize-method", Select).value = "bnb"
        screen.query_one("#quantize-group_size", Input).value = "64"
        await settle(pilot)
        assert screen.values("quantize")["group_size"] == "128"
        screen.set_kind("prune")
        await settle(pilot)
        assert {"scope", "n_m"} <= _shown(screen, "prune")              # magnitude
        screen.query_one("#prune-method", Select).value = "wanda"
        await settle(pilot)
        shown = _shown(screen, "prune")
        assert "n_m" in shown and "scope" not in shown
        assert {"calibration_data", "recovery_steps"} <= shown      # recovery reads them too


def test_method_fields_come_from_the_catalog():
    assert api.method_fields("quantize", "rtn") == {"bits", "group_size", "symmetric"}
    assert api.method_fields("quantize", "gguf") == {"gguf_type"}
    assert "gguf_type" in api.method_specific_fields("quantize")
    assert api.method_fields("prune", "heads") == {"scope"}
    assert api.method_fields("quantize", "nope") == api.method_specific_fields("quantize")


# -- item 6: submit by name is the job by id ----------------------------------------------------
def test_submit_by_model_name_stores_the_reference_and_sees_the_earlier_job(tiny_gpt2, store,
                                                                             capsys):
    model_id = store.upsert_model({"name": "tiny-named", "source": str(tiny_gpt2),
                                   "origin": "hub", "path": str(tiny_gpt2)})
    job_id, _ = add_eval_run(store, model_id, f"model:{model_id}", "toxicity", 0.0, 1.0)
    args = ["submit", "eval", "--suite", "toxicity", "--samples-per-prompt", "25",
            "--max-prompts", "400", "--label", "demo", "--data", "builtin", "--no-worker"]
    code = main([*args, "--model", "tiny-named"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "already ran" in err and f"job {job_id}" in err
    # a job that did not run yet: queued as the reference the name stands for
    assert main([*args, "--model", "tiny-named", "--seed", "5", "--scorer", "profanity"]) == 0, \
        capsys.readouterr().err
    newest = store.one("SELECT spec FROM jobs ORDER BY id DESC LIMIT 1")
    assert f'"model": "model:{model_id}"' in newest["spec"]
