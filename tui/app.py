"""The compfair terminal app: modes (Runs, Jobs, New job), global keys, command palette, the
status line and the detached worker. Screens live in tui/screens; the app only reads the store
and submits or cancels jobs through `engine.api`."""

from __future__ import annotations

import logging
import time
from typing import Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.command import Hit, Hits, Provider
from textual.screen import Screen
from textual.signal import Signal

from engine import api
from engine.api import Home, Store
from tui.keys import only_typed, typing
from tui.matrix_data import study_names
from tui.screens.compare import CompareScreen
from tui.screens.help import HelpScreen, Section
from tui.screens.matrix import MatrixScreen
from tui.screens.new_job import NewJobScreen
from tui.screens.jobs import JobsScreen
from tui.screens.run_detail import RunDetailScreen
from tui.screens.runs import RunsScreen
from tui.state import Backend

log = logging.getLogger(__name__)
DARK, LIGHT = "textual-dark", "textual-light"
WORKER_RETRY_S = 30.0


class RunsProvider(Provider):
    """Command palette: open a run by id, model, suite or scorer."""

    async def search(self, query: str) -> Hits:
        app = self.app
        assert isinstance(app, CompfairApp)
        query = query.strip()
        if not query:
            return
        store = app.backend.store
        matcher = self.matcher(query)
        exact = query.lstrip("#")
        if exact.isdigit():  # "#12" or "12": that run first
            for row in api.list_runs(store, exact, limit=50):
                if row.run_id == int(exact):
                    yield self._hit(row, 1.0, matcher)
        words = " ".join(w for w in query.split() if w.lower() not in ("run", "open"))
        for row in api.list_runs(store, words, limit=20):
            if str(row.run_id) != exact:
                yield self._hit(row, max(matcher.match(self._text(row)), 0.1) * 0.9, matcher)

    @staticmethod
    def _text(row: api.RunRow) -> str:
        return f"Open run #{row.run_id}: {row.model} {row.method} {row.suite} {row.scorer}"

    def _hit(self, row: api.RunRow, score: float, matcher) -> Hit:
        app = self.app
        return Hit(score, matcher.highlight(self._text(row)),
                   lambda run_id=row.run_id: app.open_run(run_id), help=row.settings)


class CompfairApp(App[None]):
    """`home`: the compfair home. `start_worker`: start a detached worker when jobs are queued
    and none is alive (tests turn it off). `poll_s`: seconds between store polls (None: off)."""

    TITLE = "compfair"
    CSS_PATH = "app.tcss"
    MODES = {"runs": RunsScreen, "queue": JobsScreen, "new": NewJobScreen}
    DEFAULT_MODE = "runs"
    COMMANDS = App.COMMANDS | {RunsProvider}
    BINDINGS = [
        Binding("r", "go('runs')", "Runs", tooltip="browse evaluation runs"),
        Binding("j", "go('queue')", "Jobs", tooltip="running and queued jobs"),
        Binding("n", "go('new')", "New job"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("f1", "help", "Help", show=False),
        Binding("t", "toggle_theme", "Light/dark", show=False),
        Binding("q", "quit", "Quit", tooltip="quit; jobs keep running in the worker"),
    ]

    def __init__(self, home: Home, *, start_worker: bool = True, poll_s: float | None = 1.0):
        super().__init__()
        self.home = home
        self.backend = Backend(home)
        self.start_worker = start_worker
        self.poll_s = poll_s
        self.counts: dict[str, int] = {}
        self.worker_alive = False
        self.cancelling = 0  # running jobs asked to stop
        self.store_changed = Signal(self, "store-changed")
        self.submitted: list[int] = []  # job ids queued from this session (newest last)
        self.pending_job_focus: int | None = None  # the Jobs screen highlights it once shown
        self.previous_mode = "runs"  # where escape leaves a mode's main screen for
        self._worker_tried = float("-inf")
        self.theme = DARK

    # -- lifecycle -----------------------------------------------------------------------
    def on_mount(self) -> None:
        # Shows the status and starts a worker if jobs wait and none is alive.
        self._apply_status(*_read_status(self.backend.store))
        if self.poll_s:
            self.set_interval(max(self.poll_s, 0.2) * 2, self._tick)

    def on_unmount(self) -> None:
        self.backend.close()

    def _tick(self) -> None:
        self.run_worker(self._poll_status, exclusive=True, group="status")

    async def _poll_status(self) -> None:
        self._apply_status(*await self.backend.read(_read_status))

    def _apply_status(self, counts: dict[str, int], alive: bool, cancelling: int = 0) -> None:
        changed = bool(self.counts) and counts != self.counts
        self.counts, self.worker_alive, self.cancelling = counts, alive, cancelling
        self._show_status()
        if changed:
            self.store_changed.publish(counts)
        # Jobs wait (or run orphaned) but no worker is alive: start one (it resumes them), at most
        # once every WORKER_RETRY_S so a worker that dies at start does not loop.
        waiting = counts.get("queued") or counts.get("running")
        if waiting and not alive and time.monotonic() - self._worker_tried > WORKER_RETRY_S:
            self.ensure_worker()

    def _show_status(self) -> None:
        """The header's sub-title: running (less those asked to stop), cancelling, queued, and
        whether a worker is alive."""
        counts, cancelling = self.counts, min(self.cancelling, self.counts.get("running", 0))
        shown = {"running": counts.get("running", 0) - cancelling, "cancelling": cancelling,
                 "queued": counts.get("queued", 0)}
        parts = [f"{n} {s}" for s, n in shown.items() if n]
        parts.append("worker running" if self.worker_alive else "no worker")
        self.sub_title = " · ".join(parts)

    def mark_cancelling(self) -> None:
        """A running job was just asked to stop: the header says so now, not at the next poll."""
        self.cancelling += 1
        self._show_status()

    def ensure_worker(self) -> None:
        """Start a detached worker when jobs wait and none is alive (it outlives the app)."""
        if not self.start_worker:
            return
        self._worker_tried = time.monotonic()
        try:
            pid = api.ensure_worker(self.backend.store)
        except OSError as exc:
            self.notify(f"could not start a worker: {exc}", severity="error")
            return
        if pid:
            self.worker_alive = True
            self.notify(f"started a worker (pid {pid}); it keeps running after you quit")

    # -- navigation ----------------------------------------------------------------------
    def open_run(self, run_id: int) -> None:
        self.push_screen(RunDetailScreen(run_id))

    def open_compare(self, run_ids: list[int]) -> None:
        self.push_screen(CompareScreen(run_ids))

    def open_matrix(self, *, study: str | None = None, run_ids: list[int] | None = None) -> None:
        """The model-by-metric view of a study, or of a selection of runs."""
        self.push_screen(MatrixScreen(study=study, run_ids=run_ids))

    def new_job(self, kind: str) -> None:
        self.action_go("new")
        self.call_after_refresh(self._set_kind, kind)

    def evaluate_like(self, run_id: int) -> None:
        """The new-job form filled with the settings of run `run_id`'s job ("evaluate like
        run N": change the model, keep everything comparable)."""
        job = api.run_detail(self.backend.store, run_id, worst=0).get("job")
        if not job or not isinstance(job.get("spec"), dict):
            self.notify(f"run {run_id} has no job spec to copy", severity="warning")
            return
        self.action_go("new")
        self.call_after_refresh(self._prefill, job["spec"], run_id)

    async def _prefill(self, spec: dict, run_id: int) -> None:
        if isinstance(self.screen, NewJobScreen):
            await self.screen.prefill(spec)
            self.notify(f"the form has run {run_id}'s settings: change the model (or anything), "
                        "then ctrl+s", timeout=5)

    def _set_kind(self, kind: str) -> None:
        if isinstance(self.screen, NewJobScreen):
            self.screen.set_kind(kind)

    def action_go(self, mode: str) -> None:
        """Show a mode's main screen (its list or form), never a screen left open on it."""
        if self.current_mode != mode:
            self.previous_mode = self.current_mode
            self.switch_mode(mode)
        while len(self.screen_stack) > 1:
            self.pop_screen()

    def action_leave(self) -> None:
        """Escape on a mode's main screen: back to the mode it was reached from (else Runs)."""
        target = self.previous_mode if self.previous_mode != self.current_mode else "runs"
        self.action_go(target if self.current_mode != target else "runs")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Letter keys type inside a text field: off there, and so absent from the footer.
        if typing(self) and only_typed(self.BINDINGS, action, parameters):
            return False
        # Hide "go to this screen" from the footer while it is the screen shown.
        if action == "go" and parameters and parameters[0] == self.current_mode:
            return len(self.screen_stack) > 1
        return True

    def help_sections(self) -> list[Section]:
        """Every screen's keys, for the help screen: the keys of everywhere (a few lines),
        then the screen help was opened from ("This screen: ..."), then the other screens."""
        extra = [Binding("tab,enter", "", "next field"), Binding("right", "", "accept the suggested model")]
        screens = [("Runs", RunsScreen, RunsScreen.BINDINGS),
                   ("Run detail", RunDetailScreen, RunDetailScreen.BINDINGS),
                   ("Models x metrics", MatrixScreen, MatrixScreen.BINDINGS),
                   ("Compare", CompareScreen, CompareScreen.BINDINGS),
                   ("Jobs", JobsScreen, JobsScreen.BINDINGS),
                   ("New job", NewJobScreen, [*extra, *NewJobScreen.BINDINGS])]
        here = [(f"This screen: {title}", keys) for title, kind, keys in screens
                if isinstance(self.screen, kind)]
        rest = [(title, keys) for title, kind, keys in screens if not isinstance(self.screen, kind)]
        return [("Everywhere", [*self.BINDINGS, Binding("escape", "", "leave the screen (or the filter being typed)")]),
                *here, *rest]

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.help_sections()))

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT if self.theme == DARK else DARK

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield SystemCommand("Runs", "Browse evaluation runs (r)", lambda: self.action_go("runs"))
        yield SystemCommand("Jobs", "Running and queued jobs, live progress (j)",
                            lambda: self.action_go("queue"))
        for kind, text in (("eval", "Evaluate a model on a suite"),
                           ("distill", "Distil a teacher into a smaller student"),
                           ("prune", "Prune a model (magnitude, Wanda, heads)")):
            yield SystemCommand(f"New {kind} job", text, lambda kind=kind: self.new_job(kind))
        for name in study_names(self.backend.store):
            yield SystemCommand(f"Models x metrics: {name}", f"Study {name}: every model on every "
                                "suite's headline metric, with deltas against the teacher",
                                lambda name=name: self.open_matrix(study=name))
        yield SystemCommand("Help", "Keys of every screen and the metric glossary (?)", self.action_help)
        yield SystemCommand("Light/dark theme", "Toggle light and dark (t)", self.action_toggle_theme)
        yield from super().get_system_commands(screen)


def _read_status(store) -> tuple[dict[str, int], bool, int]:
    """Job counts, whether a worker is alive, and how many running jobs were asked to stop."""
    running = api.list_jobs(store, ("running",), limit=100)
    return (api.job_counts(store), bool(api.workers(store)),
            sum(1 for job in running if job.get("cancel_requested")))


def run_app(home: Home) -> int | None:
    """Open the app on `home` (what `compfair` with no arguments does). Jobs keep running in
    the worker after the app closes; it says so on the way out."""
    store = Store(home)  # fails here (StoreError, reported by the CLI) if the store cannot open
    try:
        CompfairApp(home).run()
        counts = api.job_counts(store)
    finally:
        store.close()
    active = {s: counts.get(s, 0) for s in ("running", "queued") if counts.get(s)}
    if active:
        text = " and ".join(f"{n} {s}" for s, n in active.items())
        print(f"compfair: {text} job(s) continue in the background worker; "
              "`compfair jobs` lists them, `compfair` reopens the app.")
    return 0
