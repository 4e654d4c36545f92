"""What the runs list reads, free of Textual (run on the app's reader thread): a page of runs
filtered by words (in SQL, engine.api) and optionally by study (`study:NAME`), sorted by a
column in SQL or by a headline metric; each run's study and model label from the study plans;
and short model names for narrow terminals."""

from __future__ import annotations

import os
from dataclasses import dataclass

from engine import api
from engine.api import suites, Store
from tui import format as fmt
from tui.matrix_data import study_index

SQL_SORTS = ("date", "id", "model", "method", "suite", "scorer", "status")
ALL_ROWS = 100_000   # a metric sort or a study filter reads every matching run (not paged)


def metric_sorts() -> tuple[str, ...]:
    """The headline metrics of every registered suite, each once (sortable columns)."""
    return tuple(dict.fromkeys(m.name for s in suites() for m in s.headlines()))


def sort_label(sort: str) -> str:
    return sort if sort in SQL_SORTS else fmt.short_name_of(sort)


@dataclass(frozen=True)
class RunsQuery:
    text: str = ""
    sort: str = "date"
    descending: bool = True

    @property
    def study(self) -> str | None:
        """The study named by a `study:NAME` word of the filter."""
        for word in self.text.split():
            if word.lower().startswith("study:"):
                return word.split(":", 1)[1]
        return None

    @property
    def words(self) -> str:
        return " ".join(w for w in self.text.split() if not w.lower().startswith("study:"))

    @property
    def paged(self) -> bool:
        return self.sort in SQL_SORTS and self.study is None


@dataclass(frozen=True)
class Page:
    total: int
    rows: list[api.RunRow]
    studies: dict[int, tuple[str, str]]   # job id -> (study, model label in it)


def fetch(store: Store, query: RunsQuery, offset: int, limit: int) -> Page:
    """A page of runs (every matching run when the query cannot be paged in SQL)."""
    index = study_index(store)
    # a row shows its study and its label there in place of the model name: words match them
    aliases = {job: f"{study} {label}" for job, (study, label) in index.items()}
    if query.paged:
        return Page(api.count_runs(store, query.words, aliases),
                    api.list_runs(store, query.words, query.sort, query.descending,
                                  offset=offset, limit=limit, aliases=aliases), index)
    sort = query.sort if query.sort in SQL_SORTS else "date"
    rows = api.list_runs(store, query.words, sort, True, limit=ALL_ROWS, aliases=aliases)
    if query.study is not None:
        wanted = query.study.lower()
        rows = [r for r in rows if r.job_id in index and index[r.job_id][0].lower() == wanted]
    if query.sort not in SQL_SORTS:
        have = [r for r in rows if r.metric(query.sort) is not None]
        have.sort(key=lambda r: r.metric(query.sort), reverse=query.descending)  # type: ignore[arg-type, return-value]
        rows = have + [r for r in rows if r.metric(query.sort) is None]
    elif not query.descending:
        rows.reverse()
    return Page(len(rows), rows[offset:offset + limit] if offset else rows, index)


def name_caps(screen_width: int) -> tuple[int, int]:
    """The most characters of the model label (with its look-alike settings) and of the study
    name on a screen `screen_width` wide: one long name (a 183-character model path, a
    `(ctx=64 stride=64 seed=3004)`) never pushes study, suite and metrics off the screen; the
    run detail shows it whole."""
    return max(18, min(40, screen_width * 3 // 10)), max(10, min(20, screen_width // 8))


def common_prefix(names: list[str]) -> str:
    """The prefix the model names share, cut after its last separator ("" when it is short
    or the names are all one)."""
    names = sorted({n.rsplit("/", 1)[-1] for n in names if n})
    if len(names) < 2:
        return ""
    prefix = os.path.commonprefix(names)
    cut = max(prefix.rfind(c) for c in "-_.")
    return prefix[:cut + 1] if cut >= 5 else ""


def compact(name: str, prefix: str) -> str:
    """`SmolLM2-135M-Instruct-wanda-50` -> `…wanda-50` when the page shares that prefix."""
    short = name.rsplit("/", 1)[-1]
    if prefix and short.startswith(prefix) and len(short) > len(prefix):
        return "…" + short[len(prefix):]
    return short


def row_name(row: api.RunRow, studies: dict[int, tuple[str, str]], prefix: str) -> str:
    """What the model column shows: the model's label in its study, else the job's own label
    (when its submitter gave one) before the compact model name (`my run · …wanda-50`)."""
    in_study = studies.get(row.job_id or -1, ("", ""))[1]
    if in_study:
        return in_study
    name = compact(row.model, prefix)
    return f"{row.label} · {name}" if row.label else name


def look_alike(rows: list[api.RunRow], studies: dict[int, tuple[str, str]]) -> dict[int, str]:
    """For runs of one model, suite and scorer that differ only in settings: the settings words
    (`seed=1`) that tell each apart; runs that read differently already get nothing."""
    groups: dict[tuple, list[api.RunRow]] = {}
    for row in rows:
        label = studies.get(row.job_id or -1, ("", ""))[1]
        groups.setdefault((row.model_id or row.model, label, row.suite, row.scorer), []).append(row)
    out: dict[int, str] = {}
    for same in groups.values():
        if len(same) < 2:
            continue
        words = [dict(w.split("=", 1) if "=" in w else (w, "") for w in r.settings.split()) for r in same]
        keys = list(dict.fromkeys(k for w in words for k in w))
        differ = [k for k in keys if len({w.get(k) for w in words}) > 1]
        for row, w in zip(same, words):
            if differ:
                out[row.run_id] = " ".join(f"{k}={w[k]}" if k in w else f"no {k}" for k in differ)
    return out
