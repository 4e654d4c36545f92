"""The Textual app driven by keys (Pilot) on a temporary store: browse and open runs, compare
with deltas, export, launch jobs from the form, watch progress reach 100%, cancel, reorder,
help, palette, themes, and the detached worker start."""

from __future__ import annotations

import asyncio
import threading

import pytest
from textual.widgets import DataTable, Input

from engine import api, queue
from engine.specs import DistillSpec, EvalSpec, spec_from_json
from engine.store import Store
from tui.demo import fill_demo
from tui.format import signed
from tui.screens.compare import CompareScreen
from tui.screens.help import HelpScreen
from tui.screens.new_job import NewJobScreen
from tui.screens.jobs import JobsScreen
from tui.screens.run_detail import RunDetailScreen
from tui.screens.runs import RunsScreen
from tests.tui_pilot import (open_new_job_form, press, job_row, make_app, screen_text, settle, shows,  # noqa: F401 (re-exported)
                             type_into, wait_for)
from tui.widgets.dialogs import ChoiceScreen, ConfirmScreen

SIZE = (120, 40)


@pytest.fixture
def demo(home):
    return fill_demo(home)


# -- runs, run detail, palette, help, themes -------------------------------------------------
async def test_browse_filter_sort_and_open_runs(home, demo):
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        table = screen.query_one(DataTable)
        assert table.row_count == len(demo["runs"])
        await pilot.press("s")  # sort: date -> id
        await settle(pilot)  # the runs are read on the reader thread
        assert screen.sort == "id" and screen.loaded[0].run_id == max(demo["runs"].values())
        await press(pilot, "o")
        assert screen.loaded[0].run_id == min(demo["runs"].values())

        await pilot.press("slash")
        await type_into(pilot, "#runs-filter", "wanda-50 bold")
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert [r.run_id for r in screen.loaded] == [demo["runs"][("wanda50", "bold")]]
        assert app.focused is table
        await press(pilot, "enter")
        detail = app.screen
        assert isinstance(detail, RunDetailScreen)
        run_id = demo["runs"][("wanda50", "bold")]
        assert detail.run_id == run_id
        metrics = api.run_detail(Store(home), run_id)["metrics"]
        assert detail.query_one("#metrics-table", DataTable).row_count == len(metrics)
        text = screen_text(app)
        assert "gpt2-wanda-50" in text and "sentiment_mean_gap" in text and "lower is better" in text

        await pilot.press("g")  # per-group bars
        await pilot.pause()
        text = screen_text(app)
        assert "positive_rate" in text and "race/Asian_Americans" in text and "█" in text

        await pilot.press("i")  # model, lineage, settings
        await pilot.pause()
        text = screen_text(app)
        assert "Lineage" in text and "gpt2 (base" in text and "→" in text and "wanda" in text

        await pilot.press("x")  # export the run's metrics
        await pilot.pause()
        assert isinstance(app.screen, ChoiceScreen)
        await pilot.press("down", "enter")  # Markdown
        await pilot.pause()
        path = detail.export_path
        assert path is not None and path.parent == home.reports_dir and path.suffix == ".md"
        assert path.read_text().startswith("| run_id | model |")
        assert str(path) in screen_text(app).replace("\n", "")

        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("slash", "ctrl+a", "ctrl+k", "escape")  # clear the filter
        await pilot.pause(0.3)
        assert table.row_count == len(demo["runs"])

        # The command palette opens a run by id (or model, suite, scorer words).
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*f"#{demo['runs'][('base', 'toxicity')]}")
        await pilot.pause(0.3)
        await press(pilot, "enter")
        assert isinstance(app.screen, RunDetailScreen)
        assert app.screen.run_id == demo["runs"][("base", "toxicity")]
        await pilot.press("w")  # the most toxic continuations with their prompts
        await pilot.pause()
        assert app.screen.query_one("#worst-table", DataTable).row_count == 16
        text = screen_text(app)
        assert "said something rude" in text and "prompt: Demo prompt number 0" in text
        await pilot.press("down")
        await pilot.pause()
        assert "sample 1" in screen_text(app)

        await pilot.press("r")  # back to the runs list from a pushed screen
        assert isinstance(app.screen, RunsScreen)


# -- compare ------------------------------------------------------------------------------------
async def test_compare_two_runs_shows_deltas_baseline_plot_warnings_and_exports(home, demo):
    app = make_app(home)
    base, student = demo["runs"][("base", "toxicity")], demo["runs"][("student", "toxicity")]
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("c")  # nothing selected: a hint, no screen
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("slash", *"detox", "enter")  # typed: the filter applies as you type
        await pilot.pause(0.3)
        runs = app.screen
        order = [r.run_id for r in runs.loaded]
        # Select the base model's run first (the baseline), then the student's.
        for target in (base, student):
            runs.query_one(DataTable).move_cursor(row=order.index(target))
            await pilot.press("space")
        assert runs.selected == [base, student]
        await press(pilot, "c")
        screen = app.screen
        assert isinstance(screen, CompareScreen) and screen.run_ids == [base, student]
        expected = api.compare(Store(home), [base, student], base)
        row = next(r for r in expected.rows if r[0] == "expected_max_toxicity" and r[1] == "")
        delta = row[2][1].delta
        assert delta is not None and delta < 0 and row[2][1].verdict == "better"
        text = screen_text(app)
        assert f"{signed(delta)} ✔" in text
        assert "baseline ★ #%d" % base in text
        assert "continuation_perplexity vs non-zero parameters" in text  # the first row's plot
        assert "different scorers" not in text

        # Make the student the baseline: the delta flips sign and becomes "worse".
        await press(pilot, "right", "right", "right", "b")
        assert screen.baseline_id == student
        assert f"{signed(-delta)} ✘" in screen_text(app)

        await pilot.press("v")  # plot against sparsity
        assert "vs sparsity" in screen_text(app)

        await pilot.press("x")
        await pilot.pause()
        await pilot.press("enter")  # CSV
        await pilot.pause()
        assert screen.export_path is not None and screen.export_path.suffix == ".csv"
        header = screen.export_path.read_text().splitlines()[0]
        assert "delta_vs_baseline" in header and "verdict" in header

        # Runs scored by different scorers: the screen says so.
        await pilot.press("escape")
        app.open_compare([base, demo["runs"][("base", "toxicity-profanity")]])
        await settle(pilot)
        assert "scored by different scorers" in screen_text(app)


# -- new job ------------------------------------------------------------------------------------
async def test_launch_jobs_from_the_form_with_validation_sweep_and_model_picker(home, demo):
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_new_job_form(pilot)
        assert form.kind == "eval"
        assert form.query_one("#eval-samples_per_prompt", Input).value == "25"  # spec default
        await type_into(pilot, "#eval-model", "gpt2")
        await type_into(pilot, "#eval-samples_per_prompt", "2")
        await type_into(pilot, "#eval-top_p", "2")  # invalid
        assert form.error and "top_p" in form.error
        assert form.query_one("#eval-top_p").has_class("invalid")
        assert "top_p must be in (0, 1]" in screen_text(app)
        await pilot.press("ctrl+s")  # refused
        assert app.submitted == []
        await type_into(pilot, "#eval-top_p", "0.9")
        assert form.error is None
        assert "will queue 1 job" in screen_text(app)
        await press(pilot, "ctrl+s")
        assert len(app.submitted) == 1
        job = queue.job(Store(home), app.submitted[0])
        assert job["status"] == "queued"
        assert spec_from_json(job["spec"]) == EvalSpec(model="gpt2", samples_per_prompt=2)
        assert isinstance(app.screen, JobsScreen)
        assert app.screen.current_job_id() == app.submitted[0]

        # A sweep of distillation jobs from a teacher picked from the registry.
        await press(pilot, "n")
        await pilot.press("ctrl+t")  # eval -> distill
        await pilot.pause()
        assert form.kind == "distill"
        form.query_one("#distill-teacher", Input).focus()
        await pilot.press("ctrl+o")
        await pilot.pause()
        picker = app.screen
        assert isinstance(picker, ChoiceScreen)
        refs = [o.id for o in picker.query_one("OptionList")._options]
        student_ref = f"model:{demo['models']['student']}"
        # the picker offers (and puts in the field) the model's name, which the field accepts;
        # the queued spec holds the reference it stands for
        assert "gpt2-distil-6L" in refs and "smollm2" in refs and f"job:{demo['running']}" in refs
        picker.query_one("OptionList").highlighted = refs.index("gpt2-distil-6L")
        picker.query_one("OptionList").action_select()
        await pilot.pause()
        assert form.query_one("#distill-teacher", Input).value == "gpt2-distil-6L"
        await type_into(pilot, "#sweep", "intensity=0.25,0.5,0.75")
        assert "will queue 3 jobs" in screen_text(app)
        await press(pilot, "ctrl+s")
        assert len(app.submitted) == 4
        specs = [spec_from_json(queue.job(Store(home), j)["spec"]) for j in app.submitted[1:]]
        assert [s.intensity for s in specs] == [0.25, 0.5, 0.75]
        assert all(isinstance(s, DistillSpec) and s.teacher == student_ref for s in specs)


# -- queue: live progress, cancel, reorder -----------------------------------------------------
def _fake_eval_runner(gate: threading.Event, reached: threading.Event):
    """Stands in for the eval runner: reports progress with loss/throughput, waits at 40% until
    the test has looked, then stores a run with metrics."""
    def run(ctx):
        for i in range(1, 6):
            ctx.progress(i, 5, f"batch {i}/5", force=True, loss=1.0 / i, tokens_per_s=250.0)
            if i == 2:
                reached.set()
                assert gate.wait(30)
        run_id = ctx.store.start_run(ctx.job_id, None, "toxicity", {"samples_per_prompt": 2},
                                     "profanity", "1.5", "builtin", "cpu")
        ctx.store.finish_run(run_id, [{"name": "expected_max_toxicity", "value": 0.2,
                                       "ci_low": 0.1, "ci_high": 0.3, "n": 6,
                                       "higher_is_better": 0}])
        return {"run_id": run_id}
    return run


async def test_job_progress_reaches_100_percent_while_watching(home, demo, monkeypatch):
    import engine.worker as worker_module
    gate, reached = threading.Event(), threading.Event()
    monkeypatch.setattr(worker_module, "run_job_kind", _fake_eval_runner(gate, reached))
    store = Store(home)
    for job_id in (demo["running"], demo["queued"]):  # the demo's jobs are not ours to run
        queue.cancel(store, job_id)
        queue.finish(store, job_id, "cancelled")
    app = make_app(home, poll_s=0.25)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "n")
        await type_into(pilot, "#eval-model", "gpt2")
        await press(pilot, "ctrl+s")
        job_id = app.submitted[0]
        screen = app.screen
        assert isinstance(screen, JobsScreen)
        thread = threading.Thread(target=worker_module.Worker(home, once=True, idle_exit_s=None).run)
        thread.start()
        try:
            assert await asyncio.to_thread(reached.wait, 30)
            # The row and the panel below show the progress event's numbers and log lines
            # (the job row's fraction and the event are two writes: wait for both).
            await wait_for(pilot, lambda: "40%" in job_row(app, job_id)
                           and "running" in job_row(app, job_id)
                           and "loss=0.500  tokens_per_s=250" in screen_text(app))
            text = screen_text(app)
            assert "batch 2/5" in text  # the last log lines
            gate.set()
            await asyncio.to_thread(thread.join, 30)
            await wait_for(pilot, lambda: queue.job(store, job_id)["status"] == "done")
            # The fraction reaches 100% before the status turns done (two writes): wait for
            # the row to show both, so the screen's own record is the finished one.
            await wait_for(pilot, lambda: "100%" in job_row(app, job_id)
                           and "done" in job_row(app, job_id))
        finally:
            gate.set()
            thread.join(30)
        assert screen.current_job()["status"] == "done"
        assert "done" in screen_text(app)
        # The finished job's run opens from the queue.
        await press(pilot, "enter")
        assert isinstance(app.screen, RunDetailScreen)


async def test_cancel_reorder_retry_help_and_themes_at_80x24(home, demo):
    store = Store(home)
    first = api.submit(store, EvalSpec(model="gpt2", seed=1), start_worker=False)
    second = api.submit(store, EvalSpec(model="gpt2", seed=2), start_worker=False)
    app = make_app(home)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")  # the help screen lists every screen's keys
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert "Everywhere" in screen_text(app) and "Runs" in screen_text(app)
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)
        await press(pilot, "j")
        screen = app.screen
        assert isinstance(screen, JobsScreen)
        await pilot.press("t")  # light theme: the rows are redrawn in its colours
        await settle(pilot)
        assert app.theme == "textual-light" and screen._order
        # Reorder: raise the second job above the first; the cursor follows it.
        assert screen._order.index(first) < screen._order.index(second)
        screen.select_job(second)
        await settle(pilot)
        await press(pilot, "plus")
        assert queue.job(store, second)["priority"] == 1
        assert screen._order.index(second) < screen._order.index(first)
        assert screen.current_job_id() == second
        await press(pilot, "minus", "minus")
        assert queue.job(store, second)["priority"] == -1

        # Cancel a queued job (asks first), then retry it.
        screen.select_job(first)
        await settle(pilot)
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await press(pilot, "y")
        assert queue.job(store, first)["status"] == "cancelled"
        assert screen.current_job()["status"] == "cancelled"
        await pilot.press("R")             # retry asks first too
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await press(pilot, "y")
        assert queue.job(store, first)["status"] == "queued"

        # Cancel the running job: answering no does nothing; yes asks it to stop.
        screen.select_job(demo["running"])
        await settle(pilot)
        await press(pilot, "x", "n")
        assert not queue.job(store, demo["running"])["cancel_requested"]
        await press(pilot, "x", "y")
        assert queue.job(store, demo["running"])["cancel_requested"] == 1
        assert await shows(pilot, "cancelling"), screen_text(app)
        await pilot.press("t")
        assert app.theme == "textual-dark"
        await pilot.press("r")
        assert isinstance(app.screen, RunsScreen)


# -- app-wide ---------------------------------------------------------------------------------
async def test_app_starts_a_real_detached_worker_that_outlives_it(home, tmp_path):
    import os
    import signal
    import time as clock

    from engine import queue
    from engine.specs import EvalSpec
    store = Store(home)
    # A job that fails at once (its model folder does not exist): the worker's trace is enough.
    job_id = queue.submit(store, EvalSpec(model=str(tmp_path / "missing-model")))
    app = make_app(home, start_worker=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("q")
    workers = api.workers(store)
    assert len(workers) == 1  # started by the app, still alive after it quit
    pid = workers[0]["pid"]
    try:
        deadline = clock.time() + 60
        while queue.job(store, job_id)["status"] == "queued" and clock.time() < deadline:
            clock.sleep(0.2)
        while queue.job(store, job_id)["status"] == "running" and clock.time() < deadline:
            clock.sleep(0.2)
        row = queue.job(store, job_id)
        assert row["status"] == "failed" and "does not exist" in row["error"]
        os.kill(pid, 0)  # the worker idles on, detached from the app
    finally:
        os.kill(pid, signal.SIGTERM)


async def test_no_worker_is_started_when_nothing_waits(home):
    app = make_app(home, start_worker=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "0 runs" in screen_text(app)
    assert api.workers(Store(home)) == []
