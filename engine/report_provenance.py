"""The scorer and data behind a report's figures: a header block under the report's title and
a one-line caption under each table, read from the runs' stored rows (`ModelEntry.runs`).

What a run records (engine.evaluation.runner): the resolved scorer in the `scorer` and
`scorer_version` columns, the asked one in `settings["scorer"]` and, since `auto` may fall
back, what `auto` chose and why in `summary["scorer_note"]`; the asked data in
`settings["data"]`, the resolved kind in `settings["data_mode"]` ("hub", "builtin", "path"),
the source in the `data_source` column and why `auto` fell back in `settings["data_note"]`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from engine.evaluation.suites import Suite, suites
from engine.report_entries import ModelEntry
from engine.store import loads

AUTO_PREFERRED = "detoxify:original"   # what scorer `auto` picks when it can (scorers.load_scorer)
# items in the full hub data sets (by data set id), for "not the N of the real set"
HUB_ITEMS = {"nyu-mll/crows_pairs": 1508, "allenai/real-toxicity-prompts": 99442, "AlexaAI/bold": 23679}


@dataclass(frozen=True)
class Source:
    """The scorer and data of one run, as its stored row records them."""

    scorer: str | None
    scorer_version: str | None
    scorer_asked: str | None
    scorer_note: str
    data_asked: str | None
    data_mode: str | None
    data_source: str
    data_note: str
    n_items: int | None
    k: int | None                      # samples per prompt (suites that generate text)

    def key(self) -> tuple:
        """What makes two runs' figures comparable (notes aside)."""
        return (self.scorer, self.scorer_version, self.data_source, self.n_items, self.k)

    @property
    def scorer_fell_back(self) -> bool:
        return self.scorer_asked == "auto" and bool(self.scorer) and self.scorer != AUTO_PREFERRED

    @property
    def data_fell_back(self) -> bool:
        return self.data_mode == "builtin" and (bool(self.data_note) or self.data_asked == "auto")


def run_source(suite: Suite, run: dict) -> Source:
    """The `Source` of a run row of `suite`."""
    settings, summary = loads(run.get("settings"), {}) or {}, loads(run.get("summary"), {}) or {}
    return Source(run.get("scorer"), run.get("scorer_version"), settings.get("scorer"),
                  summary.get("scorer_note") or "", settings.get("data"), settings.get("data_mode"),
                  run.get("data_source") or settings.get("data_source") or "?",
                  settings.get("data_note") or summary.get("data_note") or "",
                  run.get("n_items") or settings.get("n_items"),
                  settings.get("samples_per_prompt") if suite.generates_text else None)


def _unit(suite: Suite) -> str:
    return "prompts" if suite.generates_text else suite.unit


def _data_text(suite: Suite, src: Source, short: bool) -> str:
    """"40 prompts x k=4 from builtin" (short) or the full source and samples per prompt."""
    n = f"{src.n_items:,} {_unit(suite)}" if src.n_items else f"? {_unit(suite)}"
    k = f" x k={src.k}" + ("" if short else " samples per prompt") if src.k else ""
    return f"{n}{k} from " + ((src.data_mode or src.data_source) if short else src.data_source)


def _scorer_text(src: Source, short: bool = False) -> str:
    """"scorer NAME (VERSION)"; `short` keeps the package versions only (no weight hashes, classes)."""
    version = src.scorer_version or "version not recorded"
    return f"scorer {src.scorer} ({re.sub(r',[^();]*', '', version) if short else version})"


def _warnings(suite: Suite, src: Source) -> list[str]:
    """Bold lines for a scorer or data fallback of a run."""
    out = []
    if src.scorer_fell_back:
        reason = src.scorer_note.split(": ", 1)[1] if ": " in src.scorer_note else \
            "the reason was not recorded (a run from before compfair recorded it; see its job log)"
        out.append(f"**{suite.title}: FALLBACK: auto fell back to {src.scorer} because {reason}**")
    if src.data_fell_back:
        reason = src.data_note.removeprefix("using the built-in set because ") or \
            "the hub data set was not available when the run started"
        real = HUB_ITEMS.get((suite.hub_dataset or ("",))[0])
        n = f"{src.n_items:,}" if src.n_items else "?"
        out.append(f"**{suite.title}: {n} built-in {_unit(suite)} ({reason})"
                   + (f", not the {real:,} of the real set**" if real else ", not the real set**"))
    return out


def _by_source(entries: Iterable["ModelEntry"], suite: Suite) -> dict[tuple, tuple[Source, list[str]]]:
    """The distinct sources of a suite's runs, each with the labels of its models."""
    groups: dict[tuple, tuple[Source, list[str]]] = {}
    for entry in entries:
        if entry.runs.get(suite.name):
            src = run_source(suite, entry.runs[suite.name])
            groups.setdefault(src.key(), (src, []))[1].append(entry.label)
    return groups


def _shown(entries: list["ModelEntry"], names: Iterable[str] | None = None) -> list[Suite]:
    wanted = None if names is None else set(names)
    return [s for s in sorted(suites(), key=lambda s: s.order)
            if (wanted is None or s.name in wanted) and any(e.runs.get(s.name) for e in entries)]


def header_lines(entries: list["ModelEntry"]) -> list[str]:
    """The report's "Scorer and data" block: per suite, scorer and data of its runs, a bold
    line per fallback and a bold line when its models' scorers or data differ."""
    lines = ["## Scorer and data behind the figures", ""]
    for suite in _shown(entries):
        by_source = _by_source(entries, suite)
        for src, labels in by_source.values():
            models = f" ({', '.join(labels)})" if len(by_source) > 1 else ""
            how = ", asked by name" if src.scorer_asked not in (None, "auto") else \
                ("" if src.scorer_fell_back else ", auto's first choice")
            bits = ([_scorer_text(src) + how] if src.scorer else []) \
                + [f"data: {_data_text(suite, src, short=False)}"]
            lines.append(f"- {suite.title}{models}: " + "; ".join(bits))
            lines += [f"  - {w}" for w in _warnings(suite, src)]
        differ = [what for what, part in (("scorer", slice(0, 2)), ("data", slice(2, 5)))
                  if len({key[part] for key in by_source}) > 1]
        if differ:
            lines.append(f"- **{suite.title}: the models differ in {' and '.join(differ)}: "
                         "their figures are not comparable**")
    return lines + [""] if len(lines) > 2 else []


def caption(entries: list["ModelEntry"], suite_names: Iterable[str] | None = None) -> str:
    """One line naming the scorer and n of each suite a table shows ("" when none)."""
    parts = []
    for suite in _shown(entries, suite_names):
        groups = list(_by_source(entries, suite).values())
        if len(groups) > 1:
            parts.append(f"{suite.title}: models differ in scorer or data (see the header)")
            continue
        src = groups[0][0]
        flags = [w for w, on in (("scorer fallback", src.scorer_fell_back),
                                 ("built-in data fallback", src.data_fell_back)) if on]
        parts.append(f"{suite.title}: " + (f"{_scorer_text(src, short=True)}, " if src.scorer else "")
                     + _data_text(suite, src, short=True) + (f" ({', '.join(flags)})" if flags else ""))
    return ("Scorer and data: " + "; ".join(parts) + ".") if parts else ""
