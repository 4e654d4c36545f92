"""The New-job form's leaving and queueing (a mixin of `NewJobScreen`): escape and q ask before
dropping edits; ctrl+s validates through the engine, marks and focuses the field an error is
about (the error stays in the preview, no toast over it), refuses a job that already ran once,
and asks before queueing a submission above the cost thresholds (`engine.planning_cost`:
more than 20 jobs, more than a million generations, or more than an hour measured)."""

from __future__ import annotations

from engine import api
from engine.api import UserError
from tui.form_checks import form_notes
from tui.widgets.dialogs import ConfirmScreen


class FormActions:
    """Leave, quit and submit for the form; the screen provides `has_edits`, `show_error`,
    `update_preview`, `_show_preview` and the form's state (`specs`, `error`, `notes`, ...)."""

    def _ask_to_drop(self, question: str, yes: str, then) -> None:
        """Run `then` at once when the form has no edits, else after a confirmation."""
        def answer(ok: bool | None) -> None:
            if ok:
                then()
        if self.has_edits():
            self.app.push_screen(ConfirmScreen(question, yes, "stay on the form"), answer)
        else:
            then()

    def action_leave(self) -> None:
        """Escape: leave the form (asking first when it has edits, which are then dropped)."""
        def leave() -> None:
            self.action_reset()
            self.app.action_leave()
        self._ask_to_drop("Leave the form and drop its edits?", "leave", leave)

    def action_quit_form(self) -> None:
        """q (outside a text field): quit the app, asking first when the form has edits."""
        self._ask_to_drop("Quit compfair and drop the form's edits? (jobs keep running)", "quit",
                          lambda: self.app.run_action("quit"))

    def _refuse(self, kind: str, exc: Exception) -> None:
        """Show why nothing was queued at the field it is about (marked and focused)."""
        self.show_error(kind, exc)
        self._focus_invalid()

    async def action_submit(self) -> None:
        """Validate through the engine (model references, scorers, data files), then queue,
        asking first when the submission is large (`SubmitEstimate.reasons`)."""
        self.update_preview()
        if self.error:                        # marked by the preview: go to the field
            self._focus_invalid()
            return
        if not self.specs:
            self.notify("nothing to queue", severity="error", title="not queued")
            return
        kind, specs = self.kind, list(self.specs)
        try:
            await self.app.backend.read(api.validate, specs)
            specs = await self.app.backend.read(lambda s: [api.canonical_spec(s, x) for x in specs])
        except UserError as exc:  # often a SpecError naming its field
            self._refuse(kind, exc)
            return
        self.notes = await self.app.backend.read(form_notes, list(self.specs))
        again = [s.spec_hash() for s in self.specs if s.spec_hash() in self.notes.duplicates]
        if again and not set(again) <= self.rerun_ok:
            self.rerun_ok.update(again)       # a second ctrl+s re-runs on purpose
            self._show_preview()
            dup = self.notes.duplicates[again[0]]
            self.notify(f"identical to {dup.describe()}: ctrl+s again re-runs it, ctrl+g opens "
                        "it", severity="warning", title="already ran")
            return
        estimate = self.notes.estimate or await self.app.backend.read(api.estimate_specs, specs)
        reasons = estimate.reasons()
        if not reasons:
            await self._queue(specs)
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._queue(specs), group="queue-jobs")
        question = "\n".join([f"Queue {estimate.jobs:,} job{'s' if estimate.jobs != 1 else ''}? "
                              "That is", *(f"  · {r}" for r in reasons), estimate.text()])
        self.app.push_screen(ConfirmScreen(question, "queue them", "back to the form"), answer)

    def _focus_invalid(self) -> None:
        if self._invalid is not None and self._invalid.display:
            self._invalid.focus()

    async def _queue(self, specs: list) -> None:
        """Queue through the one submit path, off the UI thread (it checks the data files again).
        The form has shown duplicates already (a second ctrl+s re-runs); the app starts the worker."""
        try:
            job_ids = await self.app.backend.read(api.submit_jobs, specs, rerun=True, start_worker=False)
        except (UserError, ValueError) as exc:  # e.g. a job:ID dependency that does not exist
            self.notify(str(exc), severity="error", title="not queued")
            return
        self.app.submitted.extend(job_ids)
        self.app.ensure_worker()
        ids = ", ".join(map(str, job_ids))
        self.notify(f"queued job{'s' if len(job_ids) > 1 else ''} {ids}", title="queued")
        self.app.pending_job_focus = job_ids[0]
        self.app.action_go("queue")
