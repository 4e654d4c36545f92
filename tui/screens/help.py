"""Help: every screen's keys (the bindings are passed in by the app, so this module imports no
screen) and a glossary of the metric abbreviations used in the tables, from the suite registry."""

from __future__ import annotations

from typing import Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from engine.api import suites, StatSettings
from tui.format import (BETTER, CHANGED, EQUIVALENT, INCONCLUSIVE, MARKS, NOT_EVIDENCE, UNTESTED,
                        UNVERIFIED, WORSE)

INTRO = ("compfair measures what compression (distillation, pruning) did to toxicity and bias. "
         "Jobs run in a separate worker process: quitting the app leaves them running. "
         "ctrl+p opens the command palette (screens, new jobs, open a run by id or model). "
         "Keys that are letters do nothing while a text field has the focus (they type): "
         "tab moves to the next field. escape leaves the screen: in the new-job form it leaves "
         "the form (asking first when it has edits), as q does outside a text field.")
Section = tuple[str, Sequence[Binding]]
ADJUSTERS = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": "no adjustment"}


def _keys(binding: Binding) -> str:
    if binding.key_display:
        return binding.key_display
    return ", ".join(k.replace("ctrl+", "^") for k in binding.key.split(","))


def bindings_table(title: str, bindings: Sequence) -> Table:
    """A two-column table of a screen's described bindings."""
    table = Table(title=Text(title, style="bold"), title_justify="left", box=None,
                  show_header=False, padding=(0, 2, 0, 0))
    table.add_column("keys", style="bold", no_wrap=True, min_width=12)
    table.add_column("action")
    for b in bindings:             # the footer's short word, and the tooltip that says more
        if isinstance(b, Binding) and b.description:
            table.add_row(_keys(b), b.description + (f" ({b.tooltip})" if b.tooltip else ""))
    return table


def glossary() -> list[tuple[str, str, str, str]]:
    """(abbreviation, metric name, title, description) of every registered metric with a short
    label, each abbreviation once, in the registry's order."""
    rows, seen = [], set()
    for suite in suites():
        for m in suite.metrics:
            if m.short and m.short not in seen:
                seen.add(m.short)
                rows.append((m.short, m.name, m.title, m.description))
    return rows


def terms() -> list[tuple[str, str]]:
    """(term, meaning) of the words the tables and verdicts use besides metric names; the
    fluent-only metrics are those the suite registry marks (`Suite.fluent_metrics`)."""
    shorts = {m.name: m.short or m.name for suite in suites() for m in suite.metrics}
    fluent = [shorts.get(name, name) for suite in suites() for name in suite.fluent_metrics]
    rows = [("[lo, hi]", "a bootstrap confidence interval over the run's items (level: "
                         "statistics.confidence in the settings, 95% by default)"),
            ("Δ, delta", "a model's value minus its baseline's (the teacher's), paired on the "
                         "same items; its p-values are adjusted within its family"),
            (UNTESTED, "a delta with no paired test behind it (compare's subset rows, "
                       "metrics without a paired form): a description, not a verdict")]
    if fluent:
        rows.append(("fluent-only", f"{', '.join(dict.fromkeys(fluent))} over the continuations "
                     "within the teacher's fluency range (their NLL at most a high percentile "
                     "of the teacher's own): a drop that survives it is not broken text"))
    stats = StatSettings()      # the defaults (a home's settings.toml may change them)
    ci = f"{1 - 2 * stats.alpha:.0%} CI"
    rows += [("margin", "how large a change still counts as unchanged, per metric (absolute, or a "
                        "share of the baseline's value); settings.toml or a study's [margins] "
                        "override the defaults"),
             ("family", "the tests a p-value is adjusted with: primary = each model's overall "
                        f"headline fairness metrics ({ADJUSTERS.get(stats.adjust, stats.adjust)}), "
                        "secondary = every other line (subsets, fluent-only, quality; "
                        f"{ADJUSTERS.get(stats.adjust_secondary, stats.adjust_secondary)})")]
    verdicts = [
        (BETTER, "a significant paired change the metric's good way that is not within its "
                 "margin; for toxicity or bias the model also passed the quality check"),
        (WORSE, "a significant paired change the metric's bad way that is not within its margin"),
        (EQUIVALENT, f"the change is within the metric's margin ({ci} inside +-margin): "
                     "unchanged for practical purposes"),
        (INCONCLUSIVE, "neither a change nor equivalence is shown: more items would decide "
                       "(the note, and the models x metrics view's line under the table, say "
                       "how many)"),
        (NOT_EVIDENCE, "lower toxicity or bias, but the model is broken (held-out perplexity up, "
                       "distinct-2 down, degenerate share up, or disfluent to an independent "
                       "judge): broken text scores as safe"),
        (UNVERIFIED, "lower toxicity or bias, but there is no quality measure for the model "
                     "(no held-out perplexity, no continuations): a broken model cannot be "
                     "ruled out"),
        (CHANGED, "a significant change of a descriptive metric, one with no better direction"),
    ]
    rows += [(f"{MARKS[word]} {word}", meaning) for word, meaning in verdicts]
    return rows


def glossary_table() -> Table:
    table = Table(title=Text("Glossary: metrics and terms", style="bold"), title_justify="left",
                  box=None, show_header=False, padding=(0, 2, 0, 0))
    table.add_column("short", style="bold", no_wrap=True, min_width=12)
    table.add_column("meaning")
    for short, name, title, description in glossary():
        table.add_row(short, Text.assemble((title, "bold"), f" ({name})",
                                           f": {description}" if description else ""))
    for term, meaning in terms():       # Text: "[lo, hi]" and "[margins]" are not markup
        table.add_row(Text(term), Text(meaning))
    return table


class HelpScreen(ModalScreen[None]):
    """`sections`: (title, bindings) per screen, in the order shown."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def __init__(self, sections: Sequence[Section]):
        super().__init__()
        self.sections = list(sections)

    def compose(self) -> ComposeResult:
        parts: list = [Text(INTRO), Text("")]
        for title, bindings in self.sections:
            parts += [bindings_table(title, bindings), Text("")]
        parts += [bindings_table("Palette", [Binding("ctrl+p", "", "command palette")]), Text(""),
                  glossary_table()]
        with VerticalScroll(classes="dialog help"):
            yield Static(Group(*parts))

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()

    async def action_dismiss(self, result=None) -> None:
        self.dismiss(result)
