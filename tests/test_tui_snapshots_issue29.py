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
