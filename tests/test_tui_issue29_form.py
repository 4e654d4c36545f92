"""Issue 29, items 4-7: the New-job form. 4: absurd values are refused by their ranges, the
form shows the estimated generations and time (measured on the store's finished runs) and a
large submission asks first. 5: the names the app shows are accepted in a model field, the
picker filters as you type and puts a name in, and the jobs list shows names, not model:5.
6: a submit-time error marks and focuses its field and names it; a suite switch clears the
previous suite's own data file. 7: q on an edited form asks like escape; retry asks too; the
help says what escape does in the form."""

from __future__ import annotations

import pytest

from engine import api, queue
from engine.errors import SpecError
from engine.planning_cost import (CONFIRM_JOBS, JobLoad, Throughput, estimate_submission,
                                  estimate_specs)
from engine.specs import spec_from_json
from engine.store import Store
from tests.tui_pilot import job_row, make_app, open_new_job_form, press, screen_text, settle, type_into
from tui.demo import fill_demo
from tui.forms import build_specs
from tui.widgets.dialogs import ConfirmScreen, FilterChoiceScreen

SIZE = (120, 40)
CROWS_CSV = "data/prompts/crows_pairs.csv"


@pytest.fixture
def demo(home):
    return fill_demo(home)


# -- item 4: ranges, the estimate, the confirmation ---------------------------------------------
@pytest.mark.parametrize("field,value", [("seed", str(10**23)), ("batch_size", "100000"),
                                         ("bootstrap_samples", "100000000"),
                                         ("samples_per_prompt", "1000000")])
def test_absurd_values_are_refused_naming_the_field(field, value):
    with pytest.raises(SpecError) as caught:
        build_specs("eval", {"model": "gpt2", field: value})
    assert caught.value.field == field and "must be in" in str(caught.value)


def test_the_estimate_is_a_pure_function_of_the_loads_and_the_measured_throughput():
    measured = {"toxicity": Throughput(0.5, 100, 4), "prune": Throughput(60.0, None, 2)}
    loads = [JobLoad("eval", "toxicity", 10, 25) for _ in range(3)] + [JobLoad("prune", None, None)]
    est = estimate_submission(loads, measured)
    assert est.jobs == 4 and est.generations == 3 * 10 * 25
    assert est.seconds == pytest.approx(750 * 0.5 + 60) and est.measured_on == 6
    assert not est.needs_confirmation and "750 generations" in est.text() and "~7m" in est.text()
    # all prompts: the suite's measured full run; nothing measured: time unknown, said so
    assert estimate_submission([JobLoad("eval", "toxicity", None, 2)], measured).generations == 200
    unknown = estimate_submission([JobLoad("eval", "bold", 50, 2)], measured)
    assert unknown.seconds is None and "nothing measured yet for bold" in unknown.text()
    # thresholds: many jobs, a long time, too many generations
    many = estimate_submission([JobLoad("eval", "bold", 1, 1)] * (CONFIRM_JOBS + 1), {})
    assert many.needs_confirmation and "21 jobs" in many.reasons()[0]
    long = estimate_submission([JobLoad("eval", "toxicity", 10_000, 1)], measured)
    assert long.needs_confirmation and "about 1h23m" in long.reasons()[0]
    huge = estimate_submission([JobLoad("eval", "bold", 10_000, 200)], {})
    assert huge.needs_confirmation and "2,000,000 generations" in huge.reasons()[0]


def test_the_estimate_measures_the_stores_finished_runs(home, demo):
    store = Store(home)
    specs = build_specs("eval", {"model": "gpt2", "max_prompts": "40", "samples_per_prompt": "5"},
                        "seed=1,2")
    est = estimate_specs(store, specs)
    assert est.jobs == 2 and est.generations == 400 and est.seconds is not None
    assert est.measured_on > 0 and "measured on" in est.text()


async def test_the_form_shows_the_cost_and_a_large_sweep_asks_first(home, demo):
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_new_job_form(pilot)
        await type_into(pilot, "#eval-model", "gpt2")
        await type_into(pilot, "#eval-max_prompts", "40")
        await type_into(pilot, "#sweep", "seed=" + ",".join(str(i) for i in range(25)))
        await settle(pilot)
        line = str(form.query_one("#estimate").render())
        assert "est. 25 jobs · 25,000 generations · ~" in line and "ctrl+s asks first" in line
        before = len(api.list_jobs(app.backend.store, limit=1000))
        await press(pilot, "ctrl+s")
        assert isinstance(app.screen, ConfirmScreen)
        assert "25 jobs (more than 20)" in screen_text(app)
        await press(pilot, "n")                       # back to the form, nothing queued
        assert app.screen is form and len(api.list_jobs(app.backend.store, limit=1000)) == before
        await press(pilot, "ctrl+s")
        await press(pilot, "y")
        assert len(app.submitted) == 25 and app.screen is not form


# -- item 5: names shown are names accepted -----------------------------------------------------
async def test_a_model_name_and_a_study_label_are_accepted_and_the_jobs_list_shows_names(home, demo):
    student = demo["models"]["student"]
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_new_job_form(pilot)
        assert "a model's name" in form.query_one("#eval-model").placeholder
        assert "study:label" in form.query_one("#eval-model").placeholder
        assert "ctrl+o" in form.query_one("#eval-model").placeholder
        for name in ("gpt2-distil-6L", "demo-study:distilled-6L", "distilled-6L"):
            await type_into(pilot, "#eval-model", name)
            await type_into(pilot, "#eval-max_prompts", "35")
            await settle(pilot)
            assert form.error is None, (name, form.error)
        await press(pilot, "ctrl+s")
        assert app.submitted, screen_text(app)
        spec = spec_from_json(queue.job(app.backend.store, app.submitted[0])["spec"])
        assert spec.model == f"model:{student}"               # the canonical reference is stored
        await settle(pilot)
        row = job_row(app, app.submitted[0])
        assert "gpt2-distil-6L" in row and "model:" not in row, row


async def test_the_picker_filters_as_you_type_and_puts_a_name_in(home, demo):
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_new_job_form(pilot)
        await press(pilot, "ctrl+o")
        picker = app.screen
        assert isinstance(picker, FilterChoiceScreen)
        everything = list(picker.shown)
        assert app.focused is picker.query_one("#choice-filter")
        await pilot.press(*"wanda-5")
        await settle(pilot)
        assert picker.query_one("#choice-filter").value == "wanda-5"
        assert picker.shown == ["gpt2-wanda-50"] and len(everything) > 5
        await press(pilot, "enter")
        assert app.screen is form
        assert form.query_one("#eval-model").value == "gpt2-wanda-50"


# -- item 6: submit-time errors -----------------------------------------------------------------
async def test_a_submit_time_error_marks_focuses_and_names_its_field(home, demo):
    from pathlib import Path
    crows = str(Path(__file__).resolve().parents[1] / CROWS_CSV)
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_new_job_form(pilot)
        await type_into(pilot, "#eval-model", "gpt2")
        await type_into(pilot, "#eval-data", crows)             # a crows CSV as toxicity data
        form.query_one("#eval-model").focus()
        await press(pilot, "ctrl+s")
        assert not app.submitted and form.error
        assert form.query_one("#eval-data").has_class("invalid") and app.focused is form.query_one("#eval-data")
        assert "data" in form.error and "fix the highlighted field (data)" in screen_text(app)
        assert not app._notifications                          # no toast over the inline error
        # the reference model's error names its field
        await type_into(pilot, "#eval-data", "auto")
        await type_into(pilot, "#eval-reference_model", "model:999")
        form.query_one("#eval-model").focus()
        await press(pilot, "ctrl+s")
        assert form.error.startswith("reference_model"), form.error
        assert app.focused is form.query_one("#eval-reference_model")


async def test_switching_suite_clears_the_previous_suites_own_data_file(home, demo):
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_new_job_form(pilot)
        form.set_value("suite", "crows_pairs")
        await settle(pilot)
        await type_into(pilot, "#eval-data", CROWS_CSV)
        form.set_value("suite", "toxicity")
        await settle(pilot)
        assert form.query_one("#eval-data").value == "auto"
        await type_into(pilot, "#eval-data", "my/own/prompts.jsonl")  # not a suite's: kept
        form.set_value("suite", "bold")
        await settle(pilot)
        assert form.query_one("#eval-data").value == "my/own/prompts.jsonl"


# -- item 7: q asks on an edited form; retry asks; the help says what escape does --------------
async def test_q_on_an_edited_form_asks_first(home, demo):
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_new_job_form(pilot)
        await type_into(pilot, "#eval-model", "gpt2-wanda-50")
        await type_into(pilot, "#eval-model", "qq")            # q types inside a text field
        assert form.query_one("#eval-model").value == "qq" and app.screen is form
        form.query_one("#eval-suite").focus()
        await press(pilot, "q")
        assert isinstance(app.screen, ConfirmScreen) and "drop the form's edits" in screen_text(app)
        await press(pilot, "n")
        assert app.screen is form and form.query_one("#eval-model").value == "qq"
        assert app.is_running


async def test_retry_asks_first_and_the_help_says_so(home, demo):
    from tui.screens.help import INTRO, HelpScreen, bindings_table
    store = Store(home)
    queue.cancel(store, demo["queued"])
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "j")
        app.screen.select_job(demo["queued"])
        await settle(pilot)
        await press(pilot, "R")
        assert isinstance(app.screen, ConfirmScreen) and "Retry job" in screen_text(app)
        await press(pilot, "n")
        assert queue.job(store, demo["queued"])["status"] == "cancelled"
        await press(pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "in the new-job form it leaves the form" in " ".join(INTRO.split())
        assert "escape leaves the field" not in INTRO
        sections = dict(app.help_sections())
        assert any(b.description == "Retry" and b.tooltip == "asks first" for b in sections["Jobs"])
        assert any(b.key == "q" and "asks first" in b.tooltip for b in sections["New job"])
        table = bindings_table("Jobs", sections["Jobs"])
        assert "Retry (asks first)" in [str(c) for c in table.columns[1]._cells]


def test_the_engine_resolves_names_and_labels_and_refuses_an_ambiguous_one(home, demo):
    from engine.model_names import canonical_ref, ref_names, with_names
    from engine.errors import AmbiguousName
    from engine.model_refs import resolve
    from tui.demo import _model
    store = Store(home)
    student = demo["models"]["student"]
    assert resolve("gpt2-distil-6L", store).model_id == student
    assert resolve("demo-study:distilled-6L", store).model_id == student
    assert canonical_ref(store, "gpt2") == "gpt2"                  # a hub id stays itself
    assert canonical_ref(store, "no-such-name") is None
    _model(store, "twin", "/demo/models/twin-a", 10, 10)
    _model(store, "twin", "/demo/models/twin-b", 10, 10)
    with pytest.raises(AmbiguousName, match="shared by model:"):
        canonical_ref(store, "twin")
    text = f"evaluate model:{student} on toxicity"
    assert with_names(text, ref_names(store, text)) == "evaluate gpt2-distil-6L on toxicity"
