"""Why a job failed when its worker died in every attempt (issue 31.4): the reason says so,
says what is kept, that `compfair retry ID` resumes from it, and, for generation and
distillation, that a smaller `--batch-size` may keep memory in bounds.

Whether a death counts as an attempt: it does. A worker killed without a word (the kernel's
out-of-memory killer, a crash in native code) cannot tell a death caused by its job from one
caused by something else, and a job that kills every worker that takes it must end instead of
looping; `max_attempts` (3) deaths in a row end it failed. Nothing stored is lost by that: the
samples written, the training checkpoint, stay, and `compfair retry` resumes from them.
SIGTERM/SIGINT are not deaths (engine.queue.requeue_interrupted gives the attempt back).

Read-only and torch-free: called by engine.job_sweeps.recover_orphans (worker, `doctor --repair`)."""

from __future__ import annotations

import json
import re

GENERATION_SUITES = ("toxicity", "bold")      # suites whose job samples continuations in batches
_PROGRESS = re.compile(r"^\s*[\d,]+/([\d,]+) (\w+)")


def _spec(row: dict) -> dict:
    try:
        spec = json.loads(row.get("spec") or "{}")
    except ValueError:
        return {}
    return spec if isinstance(spec, dict) else {}


def _field(spec: dict, name: str):
    """A spec field: at the top of the stored spec or under its "params" (either layout)."""
    if name in spec:
        return spec[name]
    params = spec.get("params")
    return params.get(name) if isinstance(params, dict) else None


def _stored_samples(store, row: dict) -> str | None:
    """'N of M samples stored' (M from the job's last progress line, when it has one)."""
    n = store.one("SELECT count(*) AS n FROM samples s JOIN runs r ON r.id = s.run_id "
                  "WHERE r.job_id = ?", (row["id"],))["n"]
    if not n:
        return None
    match = _PROGRESS.match(row.get("progress_message") or "")
    if match and match.group(2) in ("samples", "generations"):   # a generation's unit
        return f"{n:,} of {match.group(1)} samples stored"
    return f"{n:,} samples stored"


def _checkpoint(store, row: dict, spec: dict) -> str | None:
    """'the checkpoint at step S of T' when the job saved one and its folder is still there."""
    if not (store.home.checkpoints_dir / f"job-{row['id']}").is_dir():
        return None
    event = store.one("SELECT message FROM events WHERE job_id = ? AND message LIKE "
                      "'checkpoint saved at step %' ORDER BY id DESC LIMIT 1", (row["id"],))
    if event is None:
        return None
    step = event["message"].rsplit(" ", 1)[-1]
    steps = _field(spec, "steps")
    return f"the checkpoint at step {step}" + (f" of {steps}" if steps else "")


def _memory_hint(kind: str, spec: dict) -> str:
    batch = _field(spec, "batch_size")
    if kind == "distill":
        return (" If memory ran out (an out-of-memory kill leaves no message), a retry dies the "
                f"same way: submit it with a smaller --batch-size than {batch} and a larger "
                "--grad-accum (the same effective batch); that is a new job, starting over.")
    if kind in ("eval", "eval_shard") and _field(spec, "suite") in GENERATION_SUITES:
        now = f"than {batch}" if batch else "(it chose one itself)"
        return (" If memory ran out (an out-of-memory kill leaves no message), a retry dies the "
                f"same way: submit it with a smaller --batch-size {now}; the samples do not "
                "depend on the batch size, but that is a new job, starting over.")
    return ""


def died_every_attempt(store, row: dict) -> str:
    """The reason stored for job `row` (a jobs row, still showing its last worker and
    attempts) whose worker died in each of its attempts."""
    spec = _spec(row)
    kind = row.get("kind") or ""
    attempts = row["attempts"]
    head = (f"worker {row['worker_id']} died while running the job; gave up after {attempts} "
            "attempts, each ending with its worker killed or "
            "unresponsive (a kill without a message, such as the out-of-memory killer's)")
    try:
        kept = _stored_samples(store, row) if kind in ("eval", "eval_shard") else None
        kept = kept or (_checkpoint(store, row, spec) if kind == "distill" else None)
    except Exception:                 # noqa: BLE001 - the reason must be stored whatever happens
        kept = None
    if kept:
        them = "it" if kept.startswith("the checkpoint") else "them"
        tail = f". Kept: {kept}; `compfair retry {row['id']}` resumes from {them}."
    else:
        tail = f". Nothing was stored yet; `compfair retry {row['id']}` runs it again."
    return head + tail + _memory_hint(kind, spec)
