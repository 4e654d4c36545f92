"""The jobs list's text, free of Textual: a job's description (`model:ID` / `job:ID` written
as names), the settings that tell look-alike jobs apart, the column widths, the live numbers
of a progress event and the workers line (for `tui.screens.jobs`)."""

from __future__ import annotations

import json
import re
from functools import lru_cache

from engine.api import with_names, spec_from_json
from tui import format as fmt
from tui.forms import spec_title, to_text

PROGRESS_KEYS = ("done", "total", "fraction", "eta_s")
COLUMNS = (("id", "id"), ("kind", "kind"), ("what", "what"), ("status", "status"),
           ("progress", "progress"), ("eta", "ETA"), ("device", "device"), ("live", "loss / speed"),
           ("prio", "prio"), ("message", "message"))
# Fixed widths (None: fit the content): a long description never pushes the key columns
# (status, progress, ETA) off the screen; "what" gets the room they leave (`what_width`).
PROGRESS_BAR = 10          # the progress bar's cells (5 on a screen narrower than WIDE)
WIDE = 100
WIDTHS = {"id": 4, "kind": 8, "status": 10, "progress": PROGRESS_BAR + 5, "eta": 7,
          "device": 10, "live": None, "prio": 4, "message": None}
KEY_COLUMNS = ("id", "kind", "what", "status", "progress", "eta")
CELL_PADDING = 2            # a DataTable cell's padding, both sides together
SCROLLBAR = 2
WHAT_MIN = 16


@lru_cache(maxsize=4096)
def _spec_title(spec_json: str, kind: str) -> str:
    try:
        return spec_title(spec_from_json(spec_json))
    except Exception:  # noqa: BLE001 - an unreadable spec still gets a row
        return kind


WHAT_WIDTH = 56   # a job title's most characters: status and progress stay on screen


def layout(screen_width: int) -> tuple[int, int]:
    """(the description's width, the progress bar's) on a screen `screen_width` cells wide:
    the description takes what the key columns leave, between WHAT_MIN and WHAT_WIDTH."""
    bar = PROGRESS_BAR if screen_width >= WIDE else PROGRESS_BAR // 2
    widths = {**WIDTHS, "progress": bar + 5}
    others = sum(widths[k] + CELL_PADDING for k in KEY_COLUMNS if k != "what")
    return max(WHAT_MIN, min(WHAT_WIDTH, screen_width - others - CELL_PADDING - SCROLLBAR)), bar


ellipsize = fmt.ellipsize


def what_cell(title: str, alike: str, width: int = WHAT_WIDTH) -> str:
    """A job's description in `width` cells: the title (paths cut to their folder name) and
    the settings that tell it from look-alike jobs (`fmt.fit_with`: the title is shortened
    first so that those settings stay readable), with an ellipsis where cut."""
    return fmt.fit_with(short_what(title, width), alike, width)
_PATH = re.compile(r"(?<![\w.])(?:~|\.{1,2})?(?:/[^\s/]+)+/([^\s/]+)")


def short_what(text: str, width: int = WHAT_WIDTH) -> str:
    """A job's title for the table: local model paths cut to their folder name (`…/tiny-gpt2`;
    the panel below keeps the full path) and the whole cut to `width` with an ellipsis (the
    settings that tell look-alike jobs apart follow it uncut)."""
    text = _PATH.sub(lambda m: "…/" + m.group(1), text)
    return ellipsize(text, width)


def _spec_dict(job: dict) -> dict:
    spec = job["spec"]
    return spec if isinstance(spec, dict) else json.loads(spec or "{}")


def _title(job: dict) -> str:
    """The job's description, `model:ID` / `job:ID` written as the model's name where known
    (`job["ref_names"]`, read with the jobs)."""
    spec = job["spec"]
    title = _spec_title(json.dumps(spec, sort_keys=True) if isinstance(spec, dict) else spec, job["kind"])
    return with_names(title, job.get("ref_names") or {})


def _empty(value) -> bool:
    return value is None or value == "" or value == [] or value == {}


def look_alike_settings(jobs: list[dict]) -> dict[int, str]:
    """For jobs whose titles are the same, the settings that tell them apart (`seed=1`); jobs
    with a title of their own get nothing (the column stays narrow). A setting a job leaves
    empty is not listed for it (`batch_size= label=` says nothing)."""
    groups: dict[str, list[dict]] = {}
    for job in jobs:
        groups.setdefault(_title(job), []).append(job)
    out: dict[int, str] = {}
    for same in groups.values():
        if len(same) < 2:
            continue
        specs = [_spec_dict(j) for j in same]
        keys = sorted({k for s in specs for k in s if k != "kind"})
        values = {k: len({json.dumps(s.get(k), sort_keys=True) for s in specs}) for k in keys}
        # the settings with the most values first (a sweep's seed before a data source that
        # two of them share): what a cut description keeps tells them apart best
        differ = sorted((k for k in keys if values[k] > 1), key=lambda k: (-values[k], k))
        for job, spec in zip(same, specs):
            text = " ".join(f"{k}={to_text(spec.get(k))}" for k in differ if not _empty(spec.get(k)))
            if text:
                out[job["id"]] = text
    return out


def live_fields(data: dict, limit: int = 3) -> str:
    """The extra numbers of a progress event (loss terms, tokens/s, ...) as k=v."""
    items = [(k, v) for k, v in data.items() if k not in PROGRESS_KEYS and v is not None]
    return "  ".join(f"{k}={fmt.num(v) if isinstance(v, float) else v}" for k, v in items[:limit])


def workers_line(workers: list, any_alive: bool) -> str:
    """The status line's account of the workers: each live one's device and what it runs
    ("cpu: job 4 · cuda:1: idle"), or whether one is alive when none recorded a device."""
    if not workers:
        return "a worker is running" if any_alive else "no worker alive"
    parts = [f"{w.device or 'default device'}: " + (f"job {w.job_id}" if w.job_id else (w.status or "idle"))
             for w in workers]
    return f"{len(workers)} worker{'s' if len(workers) != 1 else ''} (" + " · ".join(parts) + ")"
