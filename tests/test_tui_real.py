"""The app on real runs: two evaluation jobs of a tiny GPT-2 are launched from the form (a seed
sweep), run by a real Worker while the Jobs screen watches them reach 100%, then opened and
compared. The eval runner, the registry and the scorer are the engine's own."""

from __future__ import annotations

import asyncio
import threading

import pytest
from textual.widgets import DataTable

from engine import api, queue
from engine.specs import EvalSpec, spec_from_json
from engine.store import Store
from tests.tui_pilot import press, job_row, make_app, screen_text, settle, type_into, wait_for
from tui.format import signed
from tui.screens.compare import CompareScreen
from tui.screens.jobs import JobsScreen
from tui.screens.run_detail import RunDetailScreen
from tui.screens.runs import RunsScreen

pytest.importorskip("engine.evaluation.runner")


async def test_launch_watch_open_and_compare_real_tiny_model_runs(home, tiny_gpt2):
    from engine.worker import Worker
    app = make_app(home, poll_s=0.25)
    store = Store(home)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert "0 runs" in screen_text(app)
        await press(pilot, "n")
        await type_into(pilot, "#eval-model", str(tiny_gpt2))
        await type_into(pilot, "#eval-data", "builtin")
        await type_into(pilot, "#eval-samples_per_prompt", "2")
        await type_into(pilot, "#eval-max_prompts", "6")
        await type_into(pilot, "#eval-max_new_tokens", "6")
        await type_into(pilot, "#eval-bootstrap_samples", "100")
        await type_into(pilot, "#eval-scorer", "profanity")
        await type_into(pilot, "#sweep", "seed=0,1")
        assert "will queue 2 jobs" in screen_text(app)
        await press(pilot, "ctrl+s")
        job_ids = list(app.submitted)
        assert len(job_ids) == 2
        expected = EvalSpec(model=str(tiny_gpt2), data="builtin", samples_per_prompt=2,
                            max_prompts=6, max_new_tokens=6, bootstrap_samples=100,
                            scorer="profanity")
        assert [spec_from_json(queue.job(store, j)["spec"]) for j in job_ids] == \
            [expected.replace(seed=0), expected.replace(seed=1)]
        assert isinstance(app.screen, JobsScreen)

        # A real worker runs both jobs while the Jobs screen polls the store.
        worker = threading.Thread(target=Worker(home, once=True, idle_exit_s=None).run)
        worker.start()
        try:
            await wait_for(pilot, lambda: all(queue.job(store, j)["status"] in ("done", "failed")
                                              for j in job_ids), timeout=240)
            for j in job_ids:
                assert queue.job(store, j)["status"] == "done", queue.job(store, j)["error"]
            await wait_for(pilot, lambda: all("100%" in job_row(app, j) and "done" in job_row(app, j)
                                              for j in job_ids))
        finally:
            await asyncio.to_thread(worker.join, 60)

        # Both runs appear in the runs table; open one, then compare the two.
        await press(pilot, "r")
        runs = app.screen
        assert isinstance(runs, RunsScreen)  # it reloaded itself: runs were added meanwhile
        run_ids = [store.run_for_job(j)["id"] for j in job_ids]
        assert sorted(r.run_id for r in runs.loaded) == sorted(run_ids)
        table = runs.query_one(DataTable)
        table.move_cursor(row=[r.run_id for r in runs.loaded].index(run_ids[0]))
        await press(pilot, "enter")
        detail = app.screen
        assert isinstance(detail, RunDetailScreen) and detail.run_id == run_ids[0]
        metrics = api.run_detail(store, run_ids[0])["metrics"]
        names = {m["name"] for m in metrics}
        assert {"expected_max_toxicity", "toxicity_probability"} <= names
        assert detail.query_one("#metrics-table", DataTable).row_count == len(metrics)
        text = screen_text(app)
        assert "tiny-gpt2" in text and "profanity" in text
        await pilot.press("w")
        await pilot.pause()
        assert detail.query_one("#worst-table", DataTable).row_count == 12  # 6 prompts x 2

        await pilot.press("escape")
        for run_id in run_ids:  # seed 0 first: the baseline
            table.move_cursor(row=[r.run_id for r in runs.loaded].index(run_id))
            await pilot.press("space")
        await press(pilot, "c")
        screen = app.screen
        assert isinstance(screen, CompareScreen) and screen.baseline_id == run_ids[0]
        comparison = api.compare(store, run_ids, run_ids[0])
        # The table's cells (not the screen: how many rows fit depends on which quality
        # metrics the two generations produced) carry the engine's deltas.
        compare_table = screen.query_one(DataTable)
        shown = 0
        for index, (name, subset, cells) in enumerate(comparison.rows):
            if cells[1].delta is not None and not subset:
                cell = compare_table.get_cell(str(index), f"run-{run_ids[1]}")
                assert signed(cells[1].delta) in cell.plain, name
                shown += 1
        assert shown >= 2
        assert signed(comparison.rows[0][2][1].delta) in screen_text(app) or comparison.rows[0][2][1].delta is None
        assert "runs differ in" not in screen_text(app)  # same settings apart from the seed
