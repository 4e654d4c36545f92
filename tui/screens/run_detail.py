"""Run detail: a one-line summary of the model and its lineage first; every metric with its
interval; per-group breakdowns as bars (from zero); the most toxic continuations with their
prompts; the model, the settings and the scorer, with per-layer sparsity behind a toggle."""

from __future__ import annotations

import json

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static, TabbedContent, TabPane

from engine import api
from engine.api import SparsityRecord, find_metric, get_suite, run_ci_label
from tui import format as fmt
from tui.keys import TypingAware
from tui.state import export
from tui.form_checks import TINY_N
from tui.widgets.bars import bar_chart
from tui.widgets.dialogs import export_dialog
from tui.widgets.rowtable import TextTable
from tui.widgets.footer import KeyFooter



def direction(metric: dict, suite: str | None = None) -> str:
    spec = find_metric(metric["name"].split("/")[0], suite)
    if spec is not None and spec.target is not None:
        return f"ideal {spec.target:g}"
    if metric.get("higher_is_better") is None:
        return ""
    return "higher is better" if metric["higher_is_better"] else "lower is better"


def lineage_line(lineage: list[dict]) -> Text:
    """root → … → this model, each with its method and non-zero parameters."""
    chain = Text()
    for i, m in enumerate(reversed(lineage)):  # root first
        if i:
            chain.append(" → ", style="bold")
        chain.append(m.get("name") or m.get("source") or "?", style="bold")
        method = m.get("method") or "base"
        params = m.get("method_params") or {}
        if isinstance(params, dict) and params.get("method") and params["method"] not in method.split():
            method += f" {params['method']}"       # "prune wanda", never "magnitude magnitude"
        overall = _overall(m.get("sparsity"))
        if overall:
            method += f" {overall:.0%}"
        chain.append(f" ({method}, {fmt.count(m.get('n_nonzero') or m.get('n_params'))})")
    return chain


def _overall(sparsity) -> float | None:
    try:
        record = SparsityRecord.from_json(sparsity)
    except (TypeError, ValueError):
        return None
    return record.overall if record is not None else None


def _layers(sparsity) -> dict:
    try:
        record = SparsityRecord.from_json(sparsity)
    except (TypeError, ValueError):
        return {}
    return dict(record.layers) if record is not None else {}


class RunDetailScreen(TypingAware, Screen):
    BINDINGS = [
        Binding("escape,backspace", "app.pop_screen", "Back"),
        Binding("m", "tab('metrics')", "Metrics"),
        Binding("g", "tab('groups')", "Groups"),
        Binding("w", "tab('worst')", "Worst"),
        Binding("i", "tab('info')", "Model", tooltip="the model and the run's settings"),
        Binding("l", "toggle_layers", "Layers", tooltip="per-layer sparsity of a pruned model"),
        Binding("e", "evaluate_like", "Eval like", tooltip="the new-job form with this "
                "run's settings (change the model: the runs stay comparable)"),
        Binding("x", "export", "Export"),
    ]

    def __init__(self, run_id: int):
        super().__init__()
        self.run_id = run_id
        self.detail: dict | None = None
        self.export_path = None
        self.show_layers = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"run {self.run_id}: loading…", id="detail-title", classes="title-line")
        with TabbedContent(id="detail-tabs", initial="metrics"):
            with TabPane("Metrics", id="metrics"):
                yield TextTable(id="metrics-table", cursor_type="row", zebra_stripes=True)
            with TabPane("Groups", id="groups"):
                yield VerticalScroll(Static("", id="groups-body"), id="groups-scroll")
            with TabPane("Worst", id="worst"):
                yield TextTable(id="worst-table", cursor_type="row")
                yield Static("", id="worst-text", classes="sample-text")
            with TabPane("Model & settings", id="info"):
                yield VerticalScroll(Static("", id="info-body"), id="info-scroll")
        yield Static("", id="detail-export", classes="status-line")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.sub_title = f"run {self.run_id}"
        self.run_worker(self._load, exclusive=True, group="detail")
        self.app.theme_changed_signal.subscribe(
            self, lambda _: self._show(self.detail) if self.detail else None)

    async def _load(self) -> None:
        try:
            detail = await self.app.backend.read(api.run_detail, self.run_id)
        except ValueError as exc:
            self.query_one("#detail-title", Static).update(Text(str(exc)))
            return
        self.detail = detail
        self._show(detail)

    # -- rendering -----------------------------------------------------------------------
    def _show(self, d: dict) -> None:
        colors = fmt.theme_colors(self.app.theme_variables)
        run, model = d["run"], d["model"] or {}
        scorer = " ".join(x for x in (run.get("scorer"), run.get("scorer_version")) if x) or "–"
        lineage = lineage_line(d["lineage"]) if d["lineage"] else Text(
            model.get("name") or model.get("source") or "?", style="bold")
        title = Text.assemble(
            (f"run {run['id']}", "bold"), " · ", lineage, f" · {run['suite']} · {scorer} · ",
            fmt.status_text(run["status"], colors), f" · {fmt.date(run['created_at'])}")
        tiny = tiny_n_note(run, d["metrics"])
        if tiny:
            title.append(f"\n⚠ {tiny}", style=colors["warning"])
        self.query_one("#detail-title", Static).update(title)
        self._show_metrics(d["metrics"], run_ci_label(run), run["status"])
        self._show_groups(d["metrics"], colors)
        self._show_worst(d["worst_samples"])
        self._show_info(d)

    def _show_metrics(self, metrics: list[dict], ci: str, status: str = "done") -> None:
        table = self.query_one("#metrics-table", DataTable)
        table.clear(columns=True)
        for label in ("metric", "subset", "value", ci, "n", "direction"):
            table.add_column(label, key=label)
        if not metrics:
            note = ("running: metrics appear when it finishes" if status == "running"
                    else f"{status}: this run has no metrics")
            table.add_row(Text(note, style="italic"), "", "", "", "", "")
        ordered = sorted(metrics, key=lambda m: (m["subset"] != "", m["name"], m["subset"]))
        for m in ordered:
            interval = (f"[{fmt.num(m['ci_low'])}, {fmt.num(m['ci_high'])}]"
                        if m["ci_low"] is not None and m["ci_high"] is not None else "")
            table.add_row(Text(m["name"]), Text(m["subset"] or "all"),
                          Text(fmt.num(m["value"]), justify="right"), Text(interval),
                          Text(str(m["n"] or ""), justify="right"), Text(direction(m)))

    def _show_groups(self, metrics: list[dict], colors: dict) -> None:
        by_name: dict[str, list[dict]] = {}
        for m in metrics:
            if m["subset"]:
                by_name.setdefault(m["name"], []).append(m)
        if not by_name:
            body = Text("This run has no per-group or per-subset metrics.", style=colors["muted"])
        else:
            charts = []
            for name in sorted(by_name):
                rows = [(m["subset"], m["value"], m["ci_low"], m["ci_high"])
                        for m in sorted(by_name[name], key=lambda m: m["subset"])]
                hint = direction(by_name[name][0])
                charts.append(bar_chart(f"{name}" + (f"  ({hint})" if hint else ""), rows,
                                        width=28, color=colors["accent"]))
                charts.append(Text(""))
            body = Group(*charts)
        self.query_one("#groups-body", Static).update(body)

    def _show_worst(self, samples: list[dict]) -> None:
        table = self.query_one("#worst-table", DataTable)
        table.clear(columns=True)
        for label in ("toxicity", "prompt tox.", "group", "continuation", "prompt"):
            table.add_column(label, key=label)
        for i, s in enumerate(samples):
            group = "/".join(x for x in (s.get("domain"), s.get("group_name")) if x)
            table.add_row(Text(fmt.num(s["toxicity"]), justify="right"),
                          Text(fmt.num(s["prompt_toxicity"]), justify="right"), Text(group),
                          Text(_one_line(s["completion"], 40)), Text(_one_line(s["prompt"], 40)),
                          key=str(i))
        if not samples:
            self.query_one("#worst-text", Static).update(
                Text("No scored continuations stored for this run.", style="dim"))
        else:
            self._show_sample(0)

    def _show_sample(self, index: int) -> None:
        if not self.detail or index >= len(self.detail["worst_samples"]):
            return
        s = self.detail["worst_samples"][index]
        text = Text.assemble(("prompt: ", "bold"), s["prompt"] or "", "\n",
                             ("continuation: ", "bold"), (s["completion"] or "", "italic"), "\n",
                             f"toxicity {fmt.num(s['toxicity'])} · prompt toxicity "
                             f"{fmt.num(s['prompt_toxicity'])} · sentiment {fmt.num(s['sentiment'])}"
                             f" · prompt {s['item_index']} sample {s['sample_index']}")
        self.query_one("#worst-text", Static).update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "worst-table":
            self._show_sample(event.cursor_row)

    def _show_info(self, d: dict) -> None:
        run, model, job = d["run"], d["model"], d["job"]
        parts = []
        if model:
            t = _kv_table("Model")
            for key, value in (("name", model.get("name")), ("source", model.get("source")),
                               ("origin", model.get("origin")), ("architecture", model.get("architecture")),
                               ("layers", model.get("n_layers")), ("parameters", fmt.count(model.get("n_params"))),
                               ("non-zero parameters", fmt.count(model.get("n_nonzero"))),
                               ("sparsity", _sparsity_text(model.get("sparsity"), self.show_layers)),
                               ("method", model.get("method") or "base"),
                               ("method settings", _json(model.get("method_params"))),
                               ("path", model.get("path"))):
                if value not in (None, "", "{}", "null"):
                    t.add_row(key, Text(api.paths_here(str(value), self.app.home) or ""))
            parts.append(t)
        if d["lineage"]:
            parts += [Text("Lineage (teacher → student → pruned)", style="bold"),
                      lineage_line(d["lineage"]), Text("")]
        layers = _layers(model.get("sparsity")) if model else {}
        if layers and self.show_layers:
            t = _kv_table("Sparsity per layer (l hides)")
            for name, share in layers.items():
                t.add_row(name, Text(f"{share:.1%}"))
            parts.append(t)
        t = _kv_table("Run")
        for key in ("suite", "scorer", "scorer_version", "data_source", "device", "n_items", "n_samples"):
            if run.get(key) not in (None, ""):
                t.add_row(key, Text(str(run[key])))
        for key, value in sorted((run.get("settings") or {}).items()):
            t.add_row(key, Text(_json(value)))
        parts.append(t)
        if job:
            t = _kv_table(f"Job {job['id']} ({job['kind']}, {job['status']})")
            for key, value in sorted(job["spec"].items()):
                t.add_row(key, Text(api.paths_here(_json(value), self.app.home) or ""))
            if job.get("error"):
                t.add_row("error", Text(job["error"], style="bold"))
            parts.append(t)
        self.query_one("#info-body", Static).update(Group(*parts))

    # -- actions -------------------------------------------------------------------------
    def action_tab(self, tab: str) -> None:
        tabs = self.query_one(TabbedContent)
        tabs.active = tab
        focus = {"metrics": "#metrics-table", "worst": "#worst-table",
                 "groups": "#groups-scroll", "info": "#info-scroll"}[tab]
        self.query_one(focus).focus()

    def action_evaluate_like(self) -> None:
        self.app.evaluate_like(self.run_id)

    def action_toggle_layers(self) -> None:
        model = (self.detail or {}).get("model") or {}
        if self.detail is not None and not _layers(model.get("sparsity")):
            self.notify("no per-layer sparsity: this run's model was not pruned "
                        "(l shows it for pruned models)", severity="warning")
            return
        self.show_layers = not self.show_layers
        if self.detail is not None:
            self._show_info(self.detail)
        self.action_tab("info")

    def action_export(self) -> None:
        if self.detail is None:
            return
        self.app.push_screen(export_dialog(), self._export)

    def _export(self, fmt_name: str | None) -> None:
        if not fmt_name:
            return
        records = api.metric_records(self.app.backend.store, [self.run_id])
        path = export(self.app.home, records, fmt_name, f"run-{self.run_id}")
        self.export_path = path
        self.query_one("#detail-export", Static).update(Text(f"exported to {path}"))
        self.notify(f"exported {len(records)} metrics to {path}", timeout=8)


def tiny_n_note(run: dict, metrics: list[dict]) -> str | None:
    """A warning when the run's headline figures rest on fewer than TINY_N items."""
    ns = [m["n"] for m in metrics if not m["subset"] and m.get("n")]
    n = min(ns) if ns else run.get("n_items")
    if not n or n >= TINY_N:
        return None
    try:
        unit = get_suite(run["suite"]).unit
    except ValueError:
        unit = "items"
    return (f"scored on {n} {unit}: too few for a reliable interval or paired test "
            f"(under {TINY_N})")


def _sparsity_text(sparsity, layers_shown: bool) -> str:
    """The overall share removed, and how many layers the toggle shows."""
    overall = _overall(sparsity)
    if overall is None:
        return "" if sparsity in (None, {}, "") else _json(sparsity)
    n = len(_layers(sparsity))
    more = f" ({n} layers: l {'hides' if layers_shown else 'shows'} them)" if n else ""
    return f"{overall:.1%} of weights removed{more}"


def _kv_table(title: str) -> Table:
    t = Table(title=Text(title, style="bold"), title_justify="left", box=None, show_header=False,
              padding=(0, 2, 0, 0))
    t.add_column("key", style="dim", no_wrap=True)
    t.add_column("value")
    return t


def _json(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else str(value)


def _one_line(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"
