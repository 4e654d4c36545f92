"""Snapshots (pytest-textual-snapshot) of the main screens at 80x24 and 120x40 on the demo
store (fixed timestamps, UTC, no clock). Update after an intended change with
`pytest tests/test_tui_snapshots.py --snapshot-update` and look at the SVGs."""

from __future__ import annotations

import pytest

from tests.tui_pilot import make_app, settle
from tui.demo import fill_demo


@pytest.fixture
def demo(home, utc):
    return fill_demo(home)


app_for = make_app
_settle = settle


def _no_blink(app) -> None:
    from textual.widgets import Input
    for widget in app.screen.query(Input):
        widget.cursor_blink = False


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_runs_screen(snap_compare, home, demo, size):
    assert snap_compare(app_for(home), terminal_size=size, run_before=_settle)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_compare_screen(snap_compare, home, demo, size):
    ids = [demo["runs"][(key, "toxicity")] for key in ("base", "student", "wanda50")]

    async def run_before(pilot):
        await _settle(pilot)
        pilot.app.open_compare(ids)
        await _settle(pilot)
    assert snap_compare(app_for(home), terminal_size=size, run_before=run_before)


def test_run_detail_groups(snap_compare, home, demo):
    async def run_before(pilot):
        await _settle(pilot)
        pilot.app.open_run(demo["runs"][("student", "bold")])
        await _settle(pilot)
        await pilot.press("g")
        await _settle(pilot)
    assert snap_compare(app_for(home), terminal_size=(80, 24), run_before=run_before)


def test_jobs_screen(snap_compare, home, demo):
    async def run_before(pilot):
        await _settle(pilot)
        await pilot.press("j")
        await _settle(pilot)
    assert snap_compare(app_for(home), terminal_size=(80, 24), run_before=run_before)


def test_new_job_screen(snap_compare, home, demo):
    async def run_before(pilot):
        await _settle(pilot)
        await pilot.press("n")
        await _settle(pilot)
        _no_blink(pilot.app)
        await _settle(pilot)
    assert snap_compare(app_for(home), terminal_size=(80, 24), run_before=run_before)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_models_by_metrics_screen(snap_compare, home, demo, size):
    async def run_before(pilot):
        await _settle(pilot)
        pilot.app.open_matrix(study=demo["study"])
        await _settle(pilot)
    assert snap_compare(app_for(home), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_empty_store_runs_screen(snap_compare, home, size):
    """A new store's first screen: how to start, not an empty table."""
    assert snap_compare(app_for(home), terminal_size=size, run_before=_settle)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_models_by_metrics_trade_off_plot(snap_compare, home, demo, size):
    """Issue 19, finding 3: each model's toxicity against its quality cost, every model named."""
    async def run_before(pilot):
        await _settle(pilot)
        pilot.app.open_matrix(study=demo["study"])
        await _settle(pilot)
        await pilot.press("p")
        await _settle(pilot)
    assert snap_compare(app_for(home), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_evaluate_like_a_run_that_already_ran(snap_compare, home, demo, size):
    """Issue 19, finding 9 and duplicates: the form filled from a BOLD run (from a fresh app,
    the form never opened before) shows BOLD's fields only and says the job already ran."""
    async def run_before(pilot):
        await _settle(pilot)
        pilot.app.evaluate_like(demo["runs"][("wanda50", "bold")])
        await _settle(pilot)
        _no_blink(pilot.app)
        pilot.app.clear_notifications()     # a toast on a timer: there or gone by load
        await _settle(pilot)
    assert snap_compare(app_for(home), terminal_size=size, run_before=run_before)
