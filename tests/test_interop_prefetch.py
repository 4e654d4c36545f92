"""`compfair prefetch STUDY --dry-run`: what the shipped studies need from the network, listed
from their plans offline (the download itself needs network and is not tested here)."""

from __future__ import annotations

import json

from engine.cli import main


def dry_run(capsys, *argv: str) -> list[dict]:
    assert main(["prefetch", *argv, "--dry-run", "--json"]) == 0
    return json.loads(capsys.readouterr().out)["needs"]


def test_quick_needs_nothing_from_the_hub(capsys):
    needs = dry_run(capsys, "quick")
    assert [n for n in needs if not n["optional"]] == []
    # CrowS-Pairs with data "auto" takes the hub set when it can, else the built-in one
    assert [(n["kind"], n["ref"]) for n in needs] == [("dataset", "nyu-mll/crows_pairs")]
    assert dry_run(capsys, "quick", "--required-only") == []
    assert main(["prefetch", "quick", "--dry-run", "--required-only"]) == 0
    assert "needs nothing from the network" in capsys.readouterr().out


def test_paper_lists_models_data_and_scorer(capsys):
    needs = {(n["kind"], n["ref"], n["config"]): n for n in dry_run(capsys, "paper")}
    assert set(needs) == {
        ("model", "gpt2", None), ("model", "distilgpt2", None),
        ("dataset", "allenai/real-toxicity-prompts", None), ("dataset", "AlexaAI/bold", None),
        ("dataset", "nyu-mll/crows_pairs", None),
        ("dataset", "Salesforce/wikitext", "wikitext-2-raw-v1"),      # perplexity
        ("dataset", "wikitext", "wikitext-2-raw-v1"),                 # calibration
        ("dataset", "wikitext", "wikitext-103-raw-v1"),               # distillation
        ("scorer", "detoxify:original", None)}
    assert "teacher" in needs[("model", "gpt2", None)]["needed_by"]
    assert needs[("scorer", "detoxify:original", None)]["optional"]      # scorer auto
    assert not needs[("dataset", "allenai/real-toxicity-prompts", None)]["optional"]
    assert all(not n["cached"] for n in needs.values() if n["kind"] == "model")


def test_explicit_scorer_and_student(tmp_path, capsys):
    study = tmp_path / "s.toml"
    study.write_text('name = "s"\nteacher = "smollm2"\n[[distill]]\nlabel = "d"\n'
                     'student = "org/student"\ndata = "builtin"\nsteps = 10\nwarmup_steps = 1\n'
                     '[[eval]]\nsuite = "toxicity"\ndata = "builtin"\nscorer = "detoxify:unbiased"\n')
    needs = {(n["kind"], n["ref"]) for n in dry_run(capsys, str(study))}
    assert needs == {("model", "org/student"), ("scorer", "detoxify:unbiased"), ("model", "roberta-base")}


def test_unknown_study_is_one_line(capsys):
    assert main(["prefetch", "no-such-study", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "no-such-study" in err and len(err.strip().splitlines()) == 1
