"""Records for export and for views beside the report: metric records as csv/json/md, a study's
judgement (fresh or kept under the home), paths as this home reads them."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Sequence

from engine.errors import UserError
from engine.judgement_cache import command, current_key, load
from engine.model_paths import for_display
from engine.paths import Home
from engine.store import Store


def judge_study(store: Store, record: dict, settings):
    """A study's models and the report's judgements of them (`engine.report.judge_study`: one
    family, the report's sentences), for views that show them beside the report (the TUI's
    models x metrics). Imported on use: the report (its rich tables and plots) is not needed to list or submit."""
    from engine.report import judge_study as judge  # on use: rich
    return judge(store, record, settings)


def study_judgement_key(store: Store, name: str) -> str:
    """What a study's judgement depends on now, hashed (`engine.judgement_cache`): a cached
    judgement under another key is stale."""
    return current_key(store, name)


def cached_study_judgement(store: Store, name: str):
    """The last judgement of study `name` kept under the home (`engine.judgement_cache.Cached`:
    `.judged`, `.key`, `.computed_at`), whatever its key; None when there is none."""
    return load(store.home, name)


def study_judgement_command(store: Store, name: str) -> list[str]:
    """The command of a child process that judges study `name` afresh and caches the result
    (its progress as JSON lines on its stdout; kill it to abandon the work)."""
    return command(store.home, name)


def paths_here(text: str | None, home: Home) -> str | None:
    """`text` (a log line, a model's path or source, a spec value) with every path into another
    copy of this home named as this home's own file (`engine.model_paths.for_display`): a copied
    home shows the files it reads."""
    return for_display(text, home.root)


def open_store(home: str | None = None) -> Store:
    return Store(Home.resolve(home))


def export_records(records: list[dict], fmt: str) -> str:
    """Render records as csv, json or md (Markdown table)."""
    if fmt == "json":
        return json.dumps(records, indent=2, default=str)
    if not records:
        return ""
    columns = list(records[0].keys())
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)
        return buffer.getvalue()
    if fmt == "md":
        def cell(v: Any) -> str:
            if isinstance(v, float):
                return f"{v:.4g}"
            return "" if v is None else str(v).replace("|", "\\|")
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in records]
        return "\n".join(lines) + "\n"
    raise UserError(f"export format {fmt!r} is unknown; choose csv, json or md")


def metric_records(store: Store, run_ids: Sequence[int] | None = None) -> list[dict]:
    """Every stored metric (of `run_ids`, or all) with its run's model, suite and scorer."""
    where, params = "", []
    if run_ids:
        where = f"WHERE r.id IN ({','.join('?' * len(run_ids))})"
        params = list(run_ids)
    return store.query(
        "SELECT r.id AS run_id, coalesce(mo.name, mo.source) AS model, mo.method, r.suite, "
        "r.scorer, x.name AS metric, x.subset, x.value, x.ci_low, x.ci_high, x.n "
        f"FROM metrics x JOIN runs r ON r.id = x.run_id LEFT JOIN models mo ON mo.id = r.model_id "
        f"{where} ORDER BY r.id, x.name, x.subset", params)
