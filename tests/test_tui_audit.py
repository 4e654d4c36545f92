"""Issue 19's findings that had no pilot test of their own, driven by keys on real stores: the
models x metrics view shows the study report's verdicts, sentences and export (finding 4, on
screen, not only in the data), look-alike runs read apart (10), a copied home shows and offers
its own models (8), per-group bars start from zero (smaller), and the CLI refuses an identical
submission as the form does (smaller)."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

from textual.widgets import DataTable

from engine import api, queue
from engine.model_refs import resolve
from engine.paths import Home
from engine.report import judge_study
from engine.settings import load_settings
from engine.specs import EvalSpec
from engine.store import Store
from engine.study import study_record
from tests.tui_pilot import open_new_job_form, open_study_matrix, press, make_app, screen_text, settle
from tui.demo import T0, add_eval_run, fill_demo
from tui.screens.run_detail import RunDetailScreen

ROOT = Path(__file__).resolve().parents[1]
SIZE = (120, 40)
MARKS = {"better": "✔", "worse": "✘", "equivalent": "=", "inconclusive": "?",
         "not evidence": "⚠", "unverified": "⚠?", "changed": "~"}


def test_the_apps_verdict_words_and_marks_are_the_engines_and_the_reports():
    """tui.format keeps its own copy (the app imports only the engine's public modules): the
    same seven words as engine.verdicts, each with the report's mark and a colour."""
    from engine.report_verdict_text import MARKS as REPORT_MARKS
    from engine.verdicts import VERDICTS
    from tui import format as fmt
    assert set(fmt.MARKS) == set(VERDICTS) == set(MARKS) == set(fmt.LEGEND)
    assert {v: REPORT_MARKS[v].strip() for v in VERDICTS} == fmt.MARKS == MARKS
    colors = fmt.theme_colors({})
    assert all(v in colors for v in VERDICTS)
    assert colors["unverified"] != colors["inconclusive"] != colors["equivalent"]


def test_the_verdict_detail_names_the_margin_and_the_items_that_would_decide():
    from tui import format as fmt
    assert fmt.verdict_detail("inconclusive", margin=0.05, margin_relative=True, margin_absolute=1.5,
                              items_needed=1234, n=100) == \
        "? inconclusive · margin +-5% (= +-1.5) · ~1,234 items would decide (now 100)"
    # a sizing under the items it had: the observed change keeps it undecided, not the count
    assert fmt.verdict_detail("inconclusive", margin=0.02, items_needed=5, n=8) == \
        "? inconclusive · margin +-0.02"
    assert fmt.verdict_detail("equivalent", margin=0.02) == "= equivalent · margin +-0.02"
    assert fmt.verdict_detail("inconclusive", margin=0.02, items_needed=900, n=8, undecided=True) == \
        "? inconclusive · margin +-0.02 · undecided by resampling"
    assert fmt.verdict_detail("worse") == "✘ worse" and fmt.verdict_detail("") == ""


def flat(app) -> str:
    return " ".join(line.strip() for line in screen_text(app).splitlines())


async def test_the_models_view_shows_the_reports_verdicts_sentences_and_export(home):
    """Finding 4: what the screen shows for each (model, metric) is what `compfair report`
    concludes on the same store: the mark in the cell, the sentence below the table, and the
    verdict column of the view's export."""
    demo = fill_demo(home)
    store = Store(home)
    report = judge_study(store, study_record(store, demo["study"]), load_settings(home.root))
    judged = {(v["model"], v["suite"], v["metric"]): v for v in report.significance
              if not v["subset"]}
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_study_matrix(pilot, demo["study"])
        table = screen.query_one(DataTable)
        checked = 0
        for r, row in enumerate(screen.shown):
            for c, col in enumerate(screen.matrix.columns):
                v = judged.get((row.label, col.suite, col.metric.name))
                if v is None or row.baseline:
                    continue
                shown = table.get_cell(row.label, col.key).plain
                if v["delta"] is None:      # no paired units (the demo stores no perplexity
                    # windows): the report has no test to quote, the cell claims nothing
                    assert not any(m in shown for m in MARKS.values()), (row.label, col.key, shown)
                    continue
                assert shown.endswith(MARKS[v["verdict"]]), (row.label, col.key, shown, v["verdict"])
                checked += 1
                if checked % 7 == 1:    # the sentence under the table: the report's words
                    table.move_cursor(row=r, column=c + 1)
                    await pilot.pause()
                    assert v["sentence"] and " ".join(v["sentence"].split()) in flat(app)
                    # before it, the verdict in short: its mark and the margin in force
                    detail = row.cells[col.key].detail()
                    assert detail.startswith(f"{MARKS[v['verdict']]} {v['verdict']}"), detail
                    assert v["margin"] is None or "margin +-" in detail, detail
                    assert detail in flat(app), detail
        assert checked >= 25
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("enter")       # CSV
        await pilot.pause()
        with open(screen.export_path, newline="") as f:
            exported = {(r["model"], r["suite"], r["metric"]): r["verdict"] for r in csv.DictReader(f)}
    for key, v in judged.items():
        if key in exported:
            assert exported[key] == v["verdict"], key


async def test_runs_that_differ_only_in_settings_read_apart(home):
    """Finding 10 (runs): two runs of one model, suite and scorer differing only in the seed
    show the seed in their label; runs of a label of their own get nothing added."""
    demo = fill_demo(home)
    store = Store(home)
    base_id = store.run(demo["runs"][("base", "toxicity-profanity")])["model_id"]
    _, again = add_eval_run(store, base_id, "gpt2", "toxicity", T0 + 9_000, 1.0,
                            scorer="profanity", seed=1, samples=False)
    app = make_app(home)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(DataTable)
        first = table.get_cell(str(demo["runs"][("base", "toxicity-profanity")]), "model").plain
        second = table.get_cell(str(again), "model").plain
        assert first != second and "seed=0" in first and "seed=1" in second
        assert table.get_cell(str(demo["runs"][("wanda50", "toxicity")]), "model").plain == "wanda-50"
        assert "gpt2 (seed=0)" in screen_text(app)    # in the label column, at 80 columns


async def test_a_copied_home_shows_and_offers_its_own_models(tmp_path, tiny_gpt2):
    """Finding 8: a model saved inside the home is stored relative to it, so the app opened
    on a copy of the home shows (and would load) the copy's model, not the original's."""
    original = Home.resolve(tmp_path / "original")
    inside = original.models_dir / "tiny-student"
    shutil.copytree(tiny_gpt2, inside)
    store = Store(original)
    model_id = store.upsert_model({"name": "tiny-student", "source": str(inside),
                                   "origin": "derived", "path": str(inside)})
    add_eval_run(store, model_id, f"model:{model_id}", "toxicity", T0, 1.0, samples=False)
    run_id = store.query("SELECT id FROM runs")[0]["id"]
    store.close()
    shutil.copytree(original.root, tmp_path / "copy")
    shutil.rmtree(original.root)
    copy = Home.resolve(tmp_path / "copy")
    app = make_app(copy)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        app.open_run(run_id)
        await settle(pilot)
        assert isinstance(app.screen, RunDetailScreen)
        await pilot.press("i")
        await pilot.pause()
        path = next(line for line in screen_text(app).splitlines() if line.strip().startswith("path "))
        assert path.split()[1] == str(copy.models_dir / "tiny-student")
    assert resolve(f"model:{model_id}", Store(copy)).load_path == \
        str(copy.models_dir / "tiny-student")


async def test_group_bars_start_from_zero(home):
    """Smaller finding: a group's bar is as long as its value (one scale from 0), so 0.014
    would not look like a third of 0.566."""
    demo = fill_demo(home)
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_run(demo["runs"][("wanda70", "bold")])
        await settle(pilot)
        await pilot.press("g")
        await pilot.pause()
        partial = {c: (i + 1) / 8 for i, c in enumerate("▏▎▍▌▋▊▉")}
        ratios = []
        for line in screen_text(app).splitlines():
            found = re.search(r"([█▏▎▍▌▋▊▉]+)\s*…?\s+(\d+\.\d+) \[", line)
            if found and "/" in line:      # a group's bar: "race/Asian_Americans ████▌  0.421 [..."
                length = sum(1.0 if c == "█" else partial[c] for c in found.group(1))
                ratios.append(length / float(found.group(2)))
        assert len(ratios) >= 4, screen_text(app)
        assert max(ratios) / min(ratios) < 1.08, ratios   # proportional: the scale starts at 0


def test_the_cli_refuses_an_identical_submission_unless_asked(home, tiny_gpt2):
    """Smaller finding (CLI side; the form's is in test_tui_issue19): an eval that already ran
    is refused at once, exit 2, naming the job and how to see or re-run it; --rerun queues it."""
    store = Store(home)
    done = queue.submit(store, EvalSpec(model=str(tiny_gpt2), seed=5))
    with store.conn:
        store.conn.execute("UPDATE jobs SET status = 'done' WHERE id = ?", (done,))
    args = [sys.executable, "-m", "engine.cli", "submit", "eval", "--model", str(tiny_gpt2), "--seed", "5",
            "--no-worker"]
    env = {"COMPFAIR_HOME": str(home.root), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    refused = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert f"already ran as job {done} (done)" in refused.stderr and "--rerun" in refused.stderr
    assert len(api.list_jobs(store, limit=100)) == 1
    again = subprocess.run(args + ["--rerun"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0, again.stderr
    assert len(api.list_jobs(store, limit=100)) == 2


async def test_the_focused_field_stands_out_in_both_themes(home):
    """Finding 10 (focus): the focused form field differs from the others by more than a shade
    (background and bold text), and its label is marked too, in the dark and the light theme."""
    Store(home).close()
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_new_job_form(pilot)
        for theme in ("textual-dark", "textual-light"):
            app.theme = theme
            await settle(pilot)
            focused, other = form.query_one("#eval-model"), form.query_one("#eval-data")
            assert app.focused is focused
            a, b = focused.styles.background.rgb, other.styles.background.rgb
            assert sum(abs(x - y) for x, y in zip(a, b)) > 60, (theme, a, b)
            assert focused.styles.text_style.bold and not other.styles.text_style.bold
            assert form.query_one("#eval-model-label").has_class("-focused")
            assert not form.query_one("#eval-data-label").has_class("-focused")


async def test_a_job_on_a_long_model_path_keeps_its_status_on_screen(home):
    """The jobs list at 120 columns: a local model's path is cut to its folder name, so the
    status and progress columns stay visible (the full path is in the panel below)."""
    Store(home).close()
    store = Store(home)
    deep = "/tmp/" + "/".join(f"level-{i}-of-a-long-path" for i in range(6)) + "/tiny-model"
    job = queue.submit(store, EvalSpec(model=deep, seed=4))
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "j")
        line = next(line for line in screen_text(app).splitlines() if line.split()[:1] == [str(job)])
        assert "evaluate …/tiny-model on toxicity" in line and "queued" in line
        assert deep in str(app.screen.query_one("#job-head").render())   # the panel: in full
