"""What the app's pilot tests share: an app on a test home with no worker and no poll, waits
that let the reader thread and the refresh after it finish, the screen as plain text, and
typing into a field by keys (or a paste, as a long path usually arrives)."""

from __future__ import annotations

import asyncio

from textual import events
from textual.widgets import DataTable, Input

from tui.app import CompfairApp


def make_app(home, **kwargs) -> CompfairApp:
    kwargs.setdefault("start_worker", False)
    kwargs.setdefault("poll_s", None)
    return CompfairApp(home, **kwargs)


async def settle(pilot) -> None:
    """Let pending messages, workers (store reads) and the refresh after them finish, and the
    tables measure the rows just added (a DataTable sizes its columns on its next idle; on a
    loaded machine a screenshot could come first and show every column squeezed to its
    header's width)."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    for _ in range(100):
        if not any(t._require_update_dimensions or t._updated_cells
                   for t in pilot.app.screen.query(DataTable)):
            break
        await pilot.pause(0.02)
    await pilot.pause()


async def press(pilot, *keys: str) -> None:
    """Press `keys` and settle: the step almost every pilot test repeats."""
    await pilot.press(*keys)
    await settle(pilot)


async def open_new_job_form(pilot):
    """Open the new-job form from the started app (its `n` key); returns the form screen."""
    from tui.screens.new_job import NewJobScreen
    await settle(pilot)
    await press(pilot, "n")
    assert isinstance(pilot.app.screen, NewJobScreen)
    return pilot.app.screen


async def open_study_matrix(pilot, study: str):
    """Open the models x metrics view of `study` from the started app; returns the screen."""
    from tui.screens.matrix import MatrixScreen
    await settle(pilot)
    pilot.app.open_matrix(study=study)
    await settle(pilot)
    assert isinstance(pilot.app.screen, MatrixScreen)
    return pilot.app.screen


async def shows(pilot, text: str, timeout: float = 10.0) -> bool:
    """Wait (settling repeatedly) until the screen shows `text`; False at the deadline. For
    views refreshed by a background poll, whose timing depends on the machine's load."""
    import time as clock
    deadline = clock.monotonic() + timeout
    while clock.monotonic() < deadline:
        await settle(pilot)
        if text in screen_text(pilot.app):
            return True
        await pilot.pause(0.1)
    return False


def screen_text(app) -> str:
    """What the current screen shows, as plain text (one line per terminal row)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def type_into(pilot, selector: str, text: str) -> None:
    """Focus an input, clear it by keys and type `text` (longer texts arrive as a terminal
    paste, which is also how a path or a sweep usually gets there)."""
    widget = pilot.app.screen.query_one(selector, Input)
    widget.focus()
    await pilot.press("home", "ctrl+k")
    if len(text) <= 3:
        await pilot.press(*text)
    else:
        widget.post_message(events.Paste(text))
    await pilot.pause()


def job_row(app, job_id: int) -> str:
    """The Jobs table's line for `job_id` as shown."""
    return next((line for line in screen_text(app).splitlines()
                 if line.split()[:1] == [str(job_id)]), "")


async def wait_for(pilot, condition, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting; screen:\n{screen_text(pilot.app)}")
        await pilot.pause(0.05)


async def open_form(pilot, kind_key: str | None = None) -> None:
    """`n` from wherever the app is, settled: the new-job form (ctrl+t to the next kind when
    `kind_key` asks for it)."""
    await pilot.press("n")
    await settle(pilot)
    if kind_key:
        await pilot.press(kind_key)
        await pilot.pause()
