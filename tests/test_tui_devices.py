"""Issue 16 in the app: the jobs screen shows each live worker's device and what it runs, and
a running job's row names the device of the worker that holds it."""

from __future__ import annotations

import os

from textual.widgets import DataTable

from engine import api, queue, worker_lock, worker_rows
from engine.specs import EvalSpec
from engine.store import Store
from tests.tui_pilot import make_app, press, screen_text, settle
from tui.screens.jobs import JobsScreen, workers_line


async def test_jobs_screen_shows_each_workers_device_and_job(home):
    store = Store(home)
    first = api.submit(store, EvalSpec(model="gpt2", seed=1), start_worker=False)
    second = api.submit(store, EvalSpec(model="gpt2", seed=2), start_worker=False)
    # two live workers (this process's pid and its locks of the home keep them alive), one
    # pinned to each device
    locks = [worker_lock.hold(home, "w-cpu"), worker_lock.hold(home, "w-gpu")]
    worker_rows.register_worker(store, "w-cpu", os.getpid(), status="idle", log_path="", device="cpu")
    worker_rows.register_worker(store, "w-gpu", os.getpid(), status="idle", log_path="", device="cuda:1")
    claimed = queue.claim(store, "w-cpu")
    assert claimed["id"] == first
    app = make_app(home, start_worker=False)
    async with app.run_test(size=(140, 30)) as pilot:
        await settle(pilot)
        await press(pilot, "j")
        assert isinstance(app.screen, JobsScreen)
        text = screen_text(app)
        assert f"2 workers (cpu: job {first} · cuda:1: idle)" in text
        table = app.screen.query_one(DataTable)
        assert str(table.get_cell(str(first), "device")) == "cpu"
        assert str(table.get_cell(str(second), "device")) == ""       # queued: on no device yet
    for lock in locks:
        lock.release()
    store.close()


def test_workers_line_without_recorded_devices():
    assert workers_line([], True) == "a worker is running"
    assert workers_line([], False) == "no worker alive"
