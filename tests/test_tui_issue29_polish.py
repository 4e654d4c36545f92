"""Issue 29, items 8-13 in the app: small terminals keep quit and help in the footer (8), the
worker the app starts is reaped when it exits (9), the runs filter matches what a row shows
(10), a copied home shows its own model paths (11), plots with a floor at zero and the teacher
on top (12), and the polish of item 13."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine import launcher, queue
from engine.specs import EvalSpec
from engine.store import Store
from tests.tui_pilot import make_app, press, screen_text, settle, type_into, wait_for
from tui.demo import fill_demo


def _state(pid: int) -> str | None:
    """The process state letter of `pid` (Z: a zombie), None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return text.rsplit(")", 1)[1].split()[0]


# -- item 9: the worker the app starts is reaped -------------------------------------------------
async def test_the_worker_the_app_starts_leaves_no_zombie(home, monkeypatch):
    monkeypatch.setattr(launcher, "WORKER_ARGS", ("-c", "pass"))   # starts and exits at once
    store = Store(home)
    queue.submit(store, EvalSpec(model="gpt2", suite="toxicity"))
    store.close()
    app = make_app(home, start_worker=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        pid = next(w["pid"] for w in app.backend.store.query("SELECT pid FROM workers"))
        deadline = time.monotonic() + 10
        while _state(pid) not in (None,) and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert _state(pid) is None, f"worker pid {pid} left in state {_state(pid)!r}"


# -- item 10: the filter matches what a row shows ------------------------------------------------
async def test_filter_matches_the_settings_the_row_shows_and_the_label_is_listed(home):
    from tests.test_tui_issue29 import long_names, rows_of
    data = long_names(home)
    seed_3004, seed_3100 = data["long_runs"]
    app = make_app(home)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        await wait_for(pilot, lambda: "(seed=3100)" in rows_of(app, {seed_3100}).get(seed_3100, ""))
        for words in ("seed=3100", "3100", "toxicity seed=3100"):
            await type_into(pilot, "#runs-filter", words)
            await press(pilot, "enter")
            await wait_for(pilot, lambda: screen.filter_text == words and not screen._paging)
            await settle(pilot)
            assert [r.run_id for r in screen.loaded] == [seed_3100], (words, screen_text(app))
            assert screen.total == 1
        # a study's label of a model (shown in place of its name) finds its runs too
        await type_into(pilot, "#runs-filter", "distilled-6L")
        await press(pilot, "enter")
        assert screen.total == 4 and all(r.job_id in screen.studies for r in screen.loaded)
        # the job's label is in the list: the long runs were submitted with the label "demo"
        await type_into(pilot, "#runs-filter", "seed=3004")
        await press(pilot, "enter")
        assert "demo · " in rows_of(app, {seed_3004})[seed_3004]


# -- item 8: small terminals -----------------------------------------------------------------------
def _footer(app) -> str:
    return screen_text(app).splitlines()[-1]


async def test_small_terminals_keep_help_quit_and_the_jobs_rows(home):
    demo = fill_demo(home)
    app = make_app(home)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for width in (80, 76, 72, 70):
            await pilot.resize_terminal(width, 24)
            await settle(pilot)
            footer = _footer(app)
            assert footer.rstrip().endswith("? Help q Quit"), (width, footer)
            assert "palette" not in footer and "space Select" in footer, (width, footer)
        # the run detail's footer whole at 120 columns; help and quit kept at 80
        await pilot.resize_terminal(120, 40)
        app.open_run(demo["runs"][("wanda50", "toxicity")])
        await settle(pilot)
        footer = _footer(app)
        for key in ("esc Back", "l Layers", "e Eval like", "x Export", "? Help", "q Quit"):
            assert key in footer, (key, footer)
        await pilot.resize_terminal(80, 24)
        await settle(pilot)
        assert _footer(app).rstrip().endswith("? Help q Quit")
        # the jobs list at 50x12 keeps a few rows (the log below gives way)
        await press(pilot, "j")
        await pilot.resize_terminal(50, 12)
        await settle(pilot)
        rows = [line for line in screen_text(app).splitlines()
                if line.split()[:1] and line.split()[0].isdigit()]
        assert len(rows) >= 3, screen_text(app)
        assert _footer(app).rstrip().endswith("? Help q Quit")


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_run_detail_footer_snapshot(snap_compare, home, utc, size):
    demo = fill_demo(home)

    async def run_before(pilot):
        await settle(pilot)
        pilot.app.open_run(demo["runs"][("wanda50", "toxicity")])
        await settle(pilot)
    assert snap_compare(make_app(home), terminal_size=size, run_before=run_before)


def test_jobs_list_at_50x12_snapshot(snap_compare, home, utc):
    fill_demo(home)

    async def run_before(pilot):
        await settle(pilot)
        await press(pilot, "j")
    assert snap_compare(make_app(home), terminal_size=(50, 12), run_before=run_before)


# -- item 12: plots --------------------------------------------------------------------------------
class RecordingPlt:
    """A stand-in for plotext's module: records what is drawn, in order."""

    def __init__(self):
        self.calls: list[tuple] = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))

    def of(self, name: str) -> list[tuple]:
        return [(args, kwargs) for call, args, kwargs in self.calls if call == name]


def test_trade_off_plot_stops_at_zero_and_draws_the_teacher_over_an_int8_copy(home):
    from dataclasses import replace
    from tui.matrix_data import Cell, ModelRow, study_matrix
    from tui.widgets import tradeoff
    demo = fill_demo(home)
    store = Store(home)
    matrix = study_matrix(store, demo["study"])
    store.close()
    x = next(c for c in tradeoff.quality_columns(matrix) if "perplexity" in c.metric.name)
    y = tradeoff.fairness_columns(matrix)[0]
    teacher = next(r for r in matrix.rows if r.baseline)
    # an int8 copy lands on the teacher's spot; a wide perplexity interval reaches below zero
    int8 = ModelRow("int8", "gpt2-int8", False, dict(teacher.runs), dict(teacher.cells))
    wide = replace(matrix.rows[-1], cells={**matrix.rows[-1].cells,
                                           x.key: Cell(400.0, 1.0, 900.0)})
    rows = [teacher, *matrix.rows[1:-1], wide, int8]
    plt = RecordingPlt()
    legend = tradeoff.draw(plt, rows, x, y)
    (x_low, _), _ = plt.of("xlim")[0]
    (y_low, _), _ = plt.of("ylim")[0]
    assert x_low == 0.0 and y_low >= 0.0
    markers = [kwargs["marker"] for _, kwargs in plt.of("scatter")]
    assert markers[-1] == "★" and markers.count("★") == 1          # the teacher drawn last
    labels = [args[0].strip() for args, _ in plt.of("text")]
    assert f"1,{len(rows)}" in labels                               # one label for both
    assert all(kind == "text" for kind, *_ in plt.calls[-len(labels) - 2:-2])   # after the markers
    assert "★ 1 " in legend.plain and "int8" in legend.plain


def test_plot_layout_helpers():
    from tui.plot_layout import baseline_last, limits, shared_labels, spread_models
    assert limits([1.0, 100.0], 0.1, 1.0) == (0.0, 109.9)
    assert limits([-1.0, 1.0], 0.1, 1.0) == (-1.2, 1.2)
    assert limits([5.0, 5.0], 0.1, 1.0) == (4.0, 6.0)
    # runs of model "a" keep one x; model "b" at a's x moves aside
    assert spread_models([10.0, 10.0, 10.0, 20.0], ["a", "a", "b", "c"]) == [10.0, 10.0, 10.2, 20.0]
    assert shared_labels([(1.0, 1.0), (5.0, 5.0), (1.0, 1.01)], [1, 2, 3], (0.1, 0.1)) == \
        {0: "1,3", 1: "2"}
    assert baseline_last([True, False, False]) == [1, 2, 0]


def test_report_plots_draw_the_teacher_last_and_stop_at_zero():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from types import SimpleNamespace
    from engine import report_plots
    teacher = SimpleNamespace(label="teacher", kind="base")
    int8 = SimpleNamespace(label="int8", kind="quantize")
    assert report_plots._teacher_last([teacher, int8], teacher) == [int8, teacher]
    fig, ax = plt.subplots()
    for entry in report_plots._teacher_last([teacher, int8], teacher):
        report_plots._point(ax, entry, teacher, 0.0, 0.02, yerr=[[0.02], [0.3]])
    report_plots._floor_at_zero(ax, [0.0, 0.02, 0.32])
    assert ax.get_ylim()[0] == 0.0
    lines = [line for line in ax.get_lines() if line.get_marker() in ("*", "o")]
    assert [line.get_marker() for line in lines] == ["o", "*"]
    assert lines[-1].get_zorder() > lines[0].get_zorder()
    plt.close(fig)


async def test_compare_puts_two_runs_of_one_model_at_one_x(home):
    from tests.test_tui_issue29 import long_names
    from tui.screens.compare import X_AXES, CompareScreen
    data = long_names(home)
    ids = [data["runs"][("base", "toxicity")], *data["long_runs"]]
    app = make_app(home)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.open_compare(ids)
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        for axis in X_AXES:
            screen.axis = axis
            plt = RecordingPlt()
            screen._draw(plt, *screen.plot_input())
            xs = [args[0][0] for args, _ in plt.of("scatter")]
            assert len(xs) == 3 and xs[0] == xs[1] != xs[2], (axis, xs)   # the baseline last
            assert plt.of("ylim")[0][0][0] >= 0


# -- item 11: a copied home names its own model paths -------------------------------------------------
def test_paths_into_another_copy_of_the_home_are_shown_as_this_homes(home, tmp_path):
    from engine.model_paths import for_display, here
    from engine.paths import Home
    (home.models_dir / "pruned").mkdir(parents=True)
    Store(home).close()
    copy = Home.resolve(tmp_path / "copy")
    original = str(home.models_dir / "pruned")
    assert here(original, home.root) == original                    # its own home: unchanged
    import shutil
    shutil.rmtree(copy.root)
    shutil.copytree(home.root, copy.root)
    assert here(original, copy.root) == str(copy.models_dir / "pruned")
    assert for_display(f"loading model {original}.", copy.root) == \
        f"loading model {copy.models_dir / 'pruned'}."
    # a model folder outside any home, and a path whose part is missing here: unchanged
    outside = tmp_path / "elsewhere" / "models" / "x"
    outside.mkdir(parents=True)
    assert here(str(outside), copy.root) == str(outside)
    assert here(str(home.models_dir / "gone"), copy.root) == str(home.models_dir / "gone")


async def test_a_copied_home_shows_its_own_paths_in_the_job_log_and_model_tab(home, tmp_path):
    import shutil
    from engine.paths import Home
    from tui.demo import T0, _model, add_eval_run
    from tui.screens.jobs import JobsScreen
    path = home.models_dir / "gpt2-wanda-50"
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    store = Store(home)
    model = _model(store, "gpt2-wanda-50", str(path), 124_439_808, 62_000_000, method="prune")
    with store.conn:
        store.conn.execute("UPDATE models SET path = ? WHERE id = ?", (str(path), model))
    job, run = add_eval_run(store, model, str(path), "toxicity", T0, 1.0)
    store.add_event(job, f"loading model {path}")
    store.close()
    copy = Home.resolve(tmp_path / "copy")
    shutil.rmtree(copy.root)
    shutil.copytree(home.root, copy.root)
    mine = str(copy.models_dir / "gpt2-wanda-50")
    app = make_app(copy)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot)
        app.open_run(run)
        await settle(pilot)
        await press(pilot, "i")
        info = str(app.screen.query_one("#info-body").render())
        shown = screen_text(app)
        assert mine in shown and str(path) not in shown, info
        await press(pilot, "j")
        assert isinstance(app.screen, JobsScreen)
        app.screen.select_job(job)
        await settle(pilot)
        text = screen_text(app)
        assert f"loading model {mine}" in text and str(path) not in text, text


# -- item 13: polish -------------------------------------------------------------------------------
def test_glossary_and_lineage_never_repeat_a_word():
    from tui import format as fmt
    from tui.screens.run_detail import lineage_line
    line = fmt.glossary_line("perplexity", ["perplexity"])
    assert line.startswith("PPL = perplexity") and "PPL = PPL" not in line
    chain = lineage_line([{"name": "pruned", "method": "magnitude", "method_params": {"method": "magnitude"},
                           "n_params": 100},
                          {"name": "gpt2", "method": None, "n_params": 100}]).plain
    assert "magnitude magnitude" not in chain and "(magnitude, " in chain
    chain = lineage_line([{"name": "p", "method": "prune", "method_params": {"method": "wanda"},
                           "n_params": 100}]).plain
    assert "(prune wanda, " in chain


async def test_polish_in_the_app(home):
    from tui.screens.help import HelpScreen
    from tui.screens.jobs import JobsScreen
    demo = fill_demo(home)
    app = make_app(home)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        runs = app.screen
        assert runs.query_one("#runs-table").fixed_columns >= 1     # id (and name) stay put
        # "1 run", not "1 runs"
        await type_into(pilot, "#runs-filter", "gpt2-distil-6L-mag-50 perplexity")
        await press(pilot, "enter")
        assert runs.total == 1
        assert "1 run matching" in screen_text(app) and "1 runs" not in screen_text(app)
        # help opened from the jobs list lists the jobs keys first
        await press(pilot, "j")
        await press(pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        assert text.index("Everywhere") < text.index("This screen: Jobs"), text
        await press(pilot, "escape")
        assert isinstance(app.screen, JobsScreen)
        sections = app.help_sections()
        assert [title for title, _ in sections[:3]] == ["Everywhere", "This screen: Jobs", "Runs"]
        # `l` on a run that was not pruned says why and stays on the tab shown
        app.open_run(demo["runs"][("base", "toxicity")])
        await settle(pilot)
        tabs = app.screen.query_one("TabbedContent")
        before = tabs.active
        await press(pilot, "l")
        assert tabs.active == before
        assert any("not pruned" in n.message for n in app._notifications)


async def test_an_idle_jobs_list_reads_only_the_data_version(home, monkeypatch):
    from engine import api
    from tui.screens.jobs import FULL_EVERY, JobsScreen
    fill_demo(home)
    app = make_app(home)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "j")
        screen = app.screen
        assert isinstance(screen, JobsScreen)
        reads = []
        real = api.list_jobs
        monkeypatch.setattr(api, "list_jobs", lambda *a, **k: reads.append(1) or real(*a, **k))
        screen._ticks = 0
        for _ in range(FULL_EVERY - 1):
            screen._tick()
            await settle(pilot)
        assert reads == []                       # nothing changed: no rows read or rebuilt
        store = Store(home)                      # another process writes: read at the next tick
        queue.submit(store, EvalSpec(model="gpt2", suite="bold"))
        store.close()
        screen._tick()
        await settle(pilot)
        assert reads
