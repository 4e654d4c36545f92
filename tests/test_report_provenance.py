"""The scorer and data behind a report's figures: its header block and table captions, on a
tiny study, with the scorer and data asked by name and with `auto` falling back."""

import json

from engine.evaluation.data import DataError
from engine.report import build_report
from engine.store import loads
from engine.study import submit_study
from engine.study_plan import load_study
from engine.worker import Worker

STUDY = """
name = "prov"
teacher = "{teacher}"

[[prune]]
label = "magnitude"
method = "magnitude"
sparsity = 0.5

[[eval]]
suite = "toxicity"
data = "builtin"
samples_per_prompt = 2
max_prompts = 4
max_new_tokens = 4
scorer = "{scorer}"
bootstrap_samples = 100

[[eval]]
suite = "crows_pairs"
data = "{crows}"
bootstrap_samples = 100
"""


def _report(home, store, tmp_path, teacher, scorer: str, crows: str):
    path = tmp_path / "prov.toml"
    path.write_text(STUDY.format(teacher=teacher, scorer=scorer, crows=crows))
    submit_study(store, load_study(str(path)))
    Worker(home, once=True, idle_exit_s=None).run()
    report = build_report(store, "prov", output_dir=tmp_path / "report")
    assert report.complete, report.problems
    return report, (report.folder / "report.md").read_text()


def test_the_header_and_captions_name_the_scorer_and_n(home, store, tiny_gpt2, tmp_path):
    report, text = _report(home, store, tmp_path, tiny_gpt2, "profanity", "builtin")
    header = text.split("## Models x metrics")[0]
    assert "## Scorer and data behind the figures" in header
    assert "- RealToxicityPrompts: scorer profanity (alt-profanity-check " in header
    assert "asked by name; data: 4 prompts x k=2 samples per prompt from builtin:" in header
    assert "- CrowS-Pairs: data: 22 pairs from builtin:" in header
    assert "FALLBACK" not in text and "**" not in header
    table_caption = text.split("## Models x metrics")[1].split("## Did compression")[0]
    assert "Scorer and data: RealToxicityPrompts: scorer profanity (alt-profanity-check" in table_caption
    assert "4 prompts x k=2 from builtin; CrowS-Pairs: 22 pairs from builtin." in table_caption
    # `study -o` checks these names before the report writes: every file written is among them
    from engine.cli.studies import REPORT_FILES
    assert {f.name for f in report.folder.iterdir()} <= set(REPORT_FILES)
    # a model scored by another scorer version: said in bold, and the captions point to it
    run = report.entries[0].runs["toxicity"]
    store.db["runs"].update(run["id"], {"scorer_version": "alt-profanity-check 0.0.1"})
    text = (build_report(store, "prov", output_dir=tmp_path / "report").folder / "report.md").read_text()
    assert "**RealToxicityPrompts: the models differ in scorer: their figures are not comparable**" in text
    assert "- RealToxicityPrompts (teacher): scorer profanity (alt-profanity-check 0.0.1)" in text
    assert "RealToxicityPrompts: models differ in scorer or data (see the header)" in text


def test_auto_fallbacks_are_recorded_on_the_run_and_warned_in_bold(home, store, tiny_gpt2, tmp_path,
                                                                  monkeypatch):
    from engine.evaluation import data_sources, scorers

    def no_hub(suite):
        raise DataError(f"hub data set {suite.hub_dataset[0]} cannot be loaded: not cached")

    monkeypatch.setattr(scorers, "detoxify_cached_checkpoint", lambda variant="original": None)
    monkeypatch.setattr(data_sources, "_load_hub", no_hub)
    report, text = _report(home, store, tmp_path, tiny_gpt2, "auto", "auto")
    run = report.entries[0].runs["toxicity"]
    note = loads(run["summary"], {})["scorer_note"]
    assert note.startswith(f"auto chose {run['scorer']}") and "detoxify weights are not in the torch hub cache" in note
    assert json.loads(run["settings"])["scorer"] == "auto"
    header = text.split("## Models x metrics")[0]
    assert (f"  - **RealToxicityPrompts: FALLBACK: auto fell back to {run['scorer']} because detoxify "
            "weights are not in the torch hub cache") in header
    assert ("  - **CrowS-Pairs: 22 built-in pairs (hub data set nyu-mll/crows_pairs cannot be loaded: "
            "not cached), not the 1,508 of the real set**") in header
    assert "differ" not in header
    assert "(scorer fallback)" in text and "22 pairs from builtin (built-in data fallback)" in text


def test_a_run_from_before_the_scorer_note_and_a_resumed_builtin_run_still_warn():
    from engine.report import ModelEntry
    from engine.report_provenance import caption, header_lines
    settings = {"scorer": "auto", "data": "auto", "data_mode": "builtin", "data_note": "",
                "samples_per_prompt": 25}
    run = {"scorer": "profanity", "scorer_version": "alt-profanity-check 1.9.1, class toxic",
           "data_source": "builtin:data/prompts/toxicity.jsonl", "n_items": 80,
           "settings": json.dumps(settings), "summary": json.dumps({"scorer": "profanity"})}
    entries = [ModelEntry("teacher", "base", {}, runs={"toxicity": run})]
    text = "\n".join(header_lines(entries))
    assert "**RealToxicityPrompts: FALLBACK: auto fell back to profanity because the reason was not recorded" in text
    assert ("**RealToxicityPrompts: 80 built-in prompts (the hub data set was not available when the run "
            "started), not the 99,442 of the real set**") in text
    assert caption(entries) == ("Scorer and data: RealToxicityPrompts: scorer profanity (alt-profanity-check "
                                "1.9.1), 80 prompts x k=25 from builtin (scorer fallback, built-in data fallback).")
