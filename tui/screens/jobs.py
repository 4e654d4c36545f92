"""Jobs: running and queued jobs with progress, ETA, loss or throughput and the last log lines;
cancel, retry and reorder. Polls the store from the reader thread while the screen is shown,
so input never waits on the database and jobs may finish while you look. Retry asks first, as
cancel does. The rows' text comes from `tui.job_text` (`workers_line` is imported from here)."""

from __future__ import annotations

from functools import partial

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Header, ProgressBar, Static

from engine import api
from engine.api import ACTIVE, UNSUCCESSFUL
from tui import format as fmt
from tui.job_text import (COLUMNS, PROGRESS_BAR, WHAT_WIDTH, WIDTHS, _title, ellipsize, layout,
                          live_fields, look_alike_settings, what_cell, workers_line)
from tui.widgets.dialogs import ConfirmScreen
from tui.widgets.rowtable import TextTable
from tui.widgets.footer import KeyFooter

__all__ = ["JobsScreen", "layout", "what_cell", "workers_line"]


FULL_EVERY = 10   # ticks between full reads of an unchanged store


class JobsScreen(Screen):
    VERTICAL_BREAKPOINTS = [(0, "-tiny"), (18, "-short"), (32, "-tall")]
    BINDINGS = [
        Binding("x,delete", "cancel_job", "Cancel job"),
        Binding("plus,equals_sign,K", "move(1)", "Up", key_display="+"),
        Binding("minus,J", "move(-1)", "Down", key_display="-"),
        Binding("R", "retry", "Retry", tooltip="asks first"),
        Binding("a", "toggle_all", "All/active"),
        Binding("enter", "open_run", "Open the job's run", show=False),
        Binding("escape", "app.leave", "Leave", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[dict] = []
        self.progress: dict[int, dict] = {}
        self.log_lines: list[dict] = []
        self.active_only = False
        self.stored = 0  # jobs in the store, read when the active-only list is empty
        self.live_workers: list = []  # live workers (api.worker_views), for devices and the status line
        self._order: list[int] = []
        self._shown: dict[int, list] = {}  # the cells on screen, per job
        self.what_width = WHAT_WIDTH        # the description column's width (the screen's)
        self.bar = PROGRESS_BAR

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="queue-status", classes="status-line")
        yield TextTable(id="jobs-table", cursor_type="row", zebra_stripes=True, fixed_columns=1)
        yield Static("", id="job-head")
        yield ProgressBar(total=1.0, show_eta=False, id="job-progress")
        yield Static("", id="job-log")
        yield KeyFooter()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        self.what_width, self.bar = layout(self.app.size.width)
        self._add_columns(table)
        table.focus()
        self.refresh_now()
        self.app.theme_changed_signal.subscribe(self, self._on_theme)
        if self.app.poll_s:
            self.set_interval(self.app.poll_s, self._tick)

    def _add_columns(self, table: DataTable) -> None:
        widths = {**WIDTHS, "what": self.what_width, "progress": self.bar + 5}
        for key, label in COLUMNS:
            table.add_column(label, key=key, width=widths[key])

    def on_resize(self, event) -> None:
        """Another terminal width: the description column takes what the key columns leave."""
        widths = layout(event.size.width)
        if widths == (self.what_width, self.bar):
            return
        self.what_width, self.bar = widths
        table = self.query_one(DataTable)
        current = self.current_job_id()
        table.clear(columns=True)
        self._add_columns(table)
        self._order = []
        if self.jobs:
            self._apply(self.jobs, self.progress, self.log_lines)
        if current is not None:
            self.select_job(current)

    def _on_theme(self, _theme) -> None:
        self._order = []  # rebuild every row with the new theme's colours
        self.refresh_now()

    def on_screen_resume(self) -> None:
        self.refresh_now()

    def _tick(self) -> None:
        # Idle, a long list costs one PRAGMA per tick: rows are read and rebuilt only when the
        # store changed (its data_version), the highlighted job or the filter did, and at least
        # every FULL_EVERY ticks (a worker's heartbeat going stale changes nothing stored).
        if self.is_current:
            self._ticks = getattr(self, "_ticks", 0) + 1
            self.run_worker(partial(self._poll, self._ticks % FULL_EVERY == 0), exclusive=True,
                            group="queue-poll")

    def refresh_now(self) -> None:
        self.run_worker(partial(self._poll, True), exclusive=True, group="queue-poll")

    async def _poll(self, force: bool = True) -> None:
        statuses = ACTIVE if self.active_only else ()
        focus = self.current_job_id()
        seen = getattr(self, "_seen", None)

        def read(store):
            version = (store.one("PRAGMA data_version") or {}).get("data_version"), focus, statuses
            if not force and version == seen:
                return None
            jobs = api.list_jobs(store, statuses, limit=300)
            names = api.ref_names(store, " ".join(str(j["spec"]) for j in jobs))
            for job in jobs:              # model:5 / job:6 shown by the names the app uses
                job["ref_names"] = names
            running = [j["id"] for j in jobs if j["status"] in ACTIVE]
            if focus is not None:
                running.append(focus)
            progress = api.latest_progress_many(store, running)
            log_lines = api.last_events(store, focus, 8) if focus is not None else []
            stored = sum(n for s, n in api.job_counts(store).items() if not s.startswith("_")) \
                if self.active_only and not jobs else len(jobs)
            return jobs, progress, log_lines, stored, api.worker_views(store), version
        read_back = await self.app.backend.read(read)
        if read_back is None:             # nothing changed since the last read
            return
        jobs, progress, log_lines, self.stored, self.live_workers, version = read_back
        self._apply(jobs, progress, log_lines)
        self._seen = version          # (set once shown: a read cancelled before is read again)

    # -- rendering -----------------------------------------------------------------------
    def _apply(self, jobs: list[dict], progress: dict[int, dict], log_lines: list[dict]) -> None:
        self.jobs, self.progress, self.log_lines = jobs, progress, log_lines
        table = self.query_one(DataTable)
        colors = fmt.theme_colors(self.app.theme_variables)
        order = [j["id"] for j in jobs]
        current = self.current_job_id()
        self._alike = look_alike_settings(jobs)
        cells = {job["id"]: self._cells(job, colors) for job in jobs}
        if order != self._order:
            table.clear()
            for job in jobs:
                table.add_row(*cells[job["id"]], key=str(job["id"]))
            self._order = order
            if current in order:
                table.move_cursor(row=order.index(current))
        else:  # the same rows: touch only the cells that changed
            for job_id, row in cells.items():
                old = self._shown.get(job_id, [])
                for i, ((key, _), cell) in enumerate(zip(COLUMNS, row)):
                    if i >= len(old) or old[i] != cell:
                        table.update_cell(str(job_id), key, cell, update_width=True)
        self._shown = cells
        pending = getattr(self.app, "pending_job_focus", None)
        if pending in order:
            table.move_cursor(row=order.index(pending))
            self.app.pending_job_focus = None
        counts = {}
        for job in jobs:
            counts[job["status"]] = counts.get(job["status"], 0) + 1
        summary = " · ".join(f"{n} {s}" for s, n in sorted(counts.items())) or self._no_jobs()
        self.query_one("#queue-status", Static).update(Text(
            f"{'active jobs' if self.active_only else 'all jobs'}: {summary} · "
            f"{workers_line(self.live_workers, self.app.worker_alive)}"))
        self._show_panel()

    def _no_jobs(self) -> str:
        """What an empty list says: none active (and how to see the others), or none at all."""
        if not self.active_only:
            return "no jobs yet (n: new job)"
        if self.stored:
            return f"none queued or running (a: all {self.stored} jobs)"
        return "no jobs yet (n: new job)"

    def _cells(self, job: dict, colors: dict) -> list:
        event = self.progress.get(job["id"])
        data = event["data"] if event else {}
        fraction = job["progress"] or 0.0
        status = job["status"]
        if status == "running" and job.get("cancel_requested"):
            status = "cancelling"
        eta = fmt.duration(data.get("eta_s")) if status == "running" else ""
        message = job["error"] if status in UNSUCCESSFUL and job.get("error") else (job.get("progress_message") or "")
        alike = getattr(self, "_alike", {}).get(job["id"])
        device = next((w.device or "" for w in self.live_workers if w.job_id == job["id"]), "") \
            if status in ("running", "cancelling") else ""
        what = what_cell(_title(job), alike or "", self.what_width)
        return [Text(str(job["id"]), justify="right"), Text(ellipsize(job["kind"], WIDTHS["kind"])),
                Text(what), fmt.status_text(status, colors), fmt.progress_cell(fraction, self.bar),
                Text(eta), Text(ellipsize(device, WIDTHS["device"])),
                Text(live_fields(data, 2) if status == "running" else ""),
                Text(str(job["priority"] or 0), justify="right"), Text(message or "")]

    def _show_panel(self) -> None:
        job = self.current_job()
        head = self.query_one("#job-head", Static)
        bar = self.query_one("#job-progress", ProgressBar)
        log = self.query_one("#job-log", Static)
        if job is None:
            head.update(Text("No job selected.", style="dim"))
            bar.update(progress=0)
            log.update("")
            return
        event = self.progress.get(job["id"])
        data = event["data"] if event else {}
        status = "cancelling" if job["status"] == "running" and job.get("cancel_requested") else job["status"]
        alike = getattr(self, "_alike", {}).get(job["id"])
        parts = [f"job {job['id']} · {job['kind']} · {_title(job)}"
                 + (f" ({alike})" if alike else "") + f" · {status}"]
        if data.get("done") is not None and data.get("total"):
            parts.append(f"{fmt.num(data['done'], 0)}/{fmt.num(data['total'], 0)}")
        if job["status"] == "running" and data.get("eta_s") is not None:
            parts.append(f"ETA {fmt.duration(data['eta_s'])}")
        if job.get("depends_on"):
            parts.append("after job " + ", ".join(map(str, job["depends_on"])))
        live = live_fields(data, 8)
        home = self.app.home      # paths as this home reads them (a copied home: its own)
        head.update(Text(api.paths_here("  ·  ".join(parts), home) + (f"\n{live}" if live else "")))
        bar.update(total=1.0, progress=job["progress"] or 0.0)
        lines = Text()
        for e in self.log_lines[-8:]:
            style = {"error": "bold red", "warning": "yellow"}.get(e["level"], "dim" if e["kind"] == "progress" else "")
            lines.append(f"{fmt.date(e['ts'])[11:]} {api.paths_here(e['message'], home)}\n", style=style)
        if job.get("error"):
            lines.append(f"error: {api.paths_here(job['error'], home)}", style="bold")
        log.update(lines)

    # -- selection -----------------------------------------------------------------------
    def current_job_id(self) -> int | None:
        table = self.query_one(DataTable)
        if not self._order or table.cursor_row is None or table.cursor_row >= len(self._order):
            return None
        return self._order[table.cursor_row]

    def current_job(self) -> dict | None:
        job_id = self.current_job_id()
        return next((j for j in self.jobs if j["id"] == job_id), None)

    def select_job(self, job_id: int) -> None:
        if job_id in self._order:
            self.query_one(DataTable).move_cursor(row=self._order.index(job_id))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.refresh_now()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_run()

    # -- actions -------------------------------------------------------------------------
    def action_cancel_job(self) -> None:
        job = self.current_job()
        if job is None or job["status"] not in ACTIVE:
            self.notify("only queued or running jobs can be cancelled", severity="warning")
            return

        def done(yes: bool | None) -> None:
            if yes:
                status = api.cancel(self.app.backend.store, job["id"])
                self.notify(f"job {job['id']}: {status}"
                            + (" (stops after the current batch)" if status == "cancelling" else ""))
                self._show_cancelled(job, status)
                self.refresh_now()
        self.app.push_screen(ConfirmScreen(f"Cancel job {job['id']}: {_title(job)}?"), done)

    def _show_cancelled(self, job: dict, status: str) -> None:
        """The row (and the header) say what cancelling did at once, before the next poll."""
        if status == "cancelling":
            job["cancel_requested"] = 1
            self.app.mark_cancelling()
        elif status == "cancelled":
            job["status"] = "cancelled"
        if job["id"] not in self._shown:
            return
        colors = fmt.theme_colors(self.app.theme_variables)
        cells = self._cells(job, colors)
        table = self.query_one(DataTable)
        for (key, _), cell in zip(COLUMNS, cells):
            table.update_cell(str(job["id"]), key, cell, update_width=True)
        self._shown[job["id"]] = cells
        self._show_panel()

    def action_move(self, by: int) -> None:
        job = self.current_job()
        if job is None or job["status"] != "queued":
            self.notify("only queued jobs can be reordered", severity="warning")
            return
        priority = api.move(self.app.backend.store, job["id"], by)
        self.notify(f"job {job['id']} priority {priority}", timeout=2)
        self.refresh_now()

    def action_retry(self) -> None:
        job = self.current_job()
        if job is None or job["status"] not in UNSUCCESSFUL:
            self.notify("only failed or cancelled jobs can be retried", severity="warning")
            return

        def answer(yes: bool | None) -> None:
            if not yes:
                return
            api.retry(self.app.backend.store, job["id"], start_worker=False)
            self.app.ensure_worker()
            self.notify(f"job {job['id']} queued again")
            self.refresh_now()
        self.app.push_screen(ConfirmScreen(f"Retry job {job['id']} ({job['status']}): queue it "
                                           "again?", "retry", "keep it as it is"), answer)

    def action_toggle_all(self) -> None:
        self.active_only = not self.active_only
        self.refresh_now()

    def action_open_run(self) -> None:
        job = self.current_job()
        if job is None:
            return
        try:
            detail = api.job_detail(self.app.backend.store, job["id"])
        except ValueError:
            return
        if detail.get("run_id"):
            self.app.open_run(detail["run_id"])
        else:
            self.notify(f"job {job['id']} has no evaluation run", severity="information", timeout=3)
