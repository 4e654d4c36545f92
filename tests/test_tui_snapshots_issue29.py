"""Snapshots of issue 29's layouts (items 2 and 3) at 80x24 and 120x40: the jobs list with
look-alike jobs on a long model path keeps id, kind, status, progress and ETA on screen (the
description cut with an ellipsis, empty settings never listed), and the runs list with a
183-character model name keeps study, suite and metrics. Update after an intended change with
`pytest tests/test_tui_snapshots_issue29.py --snapshot-update` and look at the SVGs."""

from __future__ import annotations

import pytest

from tests.test_tui_issue29 import long_names
from tests.tui_pilot import make_app, settle


@pytest.fixture
def data(home, utc):
    return long_names(home)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_jobs_list_with_long_descriptions(snap_compare, home, data, size):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("j")
        await settle(pilot)
    assert snap_compare(make_app(home), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_runs_list_with_a_183_character_model_name(snap_compare, home, data, size):
    assert snap_compare(make_app(home), terminal_size=size, run_before=settle)


# -- items 4-7: the New-job form with its cost line, and the confirmation of a large sweep -----
async def _large_sweep(pilot) -> None:
    from tests.tui_pilot import type_into
    await settle(pilot)
    await pilot.press("n")
    await settle(pilot)
    await type_into(pilot, "#eval-model", "gpt2-distil-6L")
    await type_into(pilot, "#eval-max_prompts", "40")
    await type_into(pilot, "#sweep", "seed=" + ",".join(str(i) for i in range(500)))
    await settle(pilot)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_form_with_the_cost_line(snap_compare, home, demo_home, size):
    assert snap_compare(make_app(home), terminal_size=size, run_before=_large_sweep)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_form_asks_before_queueing_a_large_sweep(snap_compare, home, demo_home, size):
    async def run_before(pilot):
        await _large_sweep(pilot)
        await pilot.press("ctrl+s")
        await settle(pilot)
        pilot.app.clear_notifications()
    assert snap_compare(make_app(home), terminal_size=size, run_before=run_before)


@pytest.fixture
def demo_home(home, utc):
    from tui.demo import fill_demo
    return fill_demo(home)
