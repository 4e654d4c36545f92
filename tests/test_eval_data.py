"""Evaluation data loaders: the real data sets' formats, the built-in sets, selection, and bad
input (each a one-line DataError naming the file, line or value)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from engine.evaluation.data import BUILTIN_DIR, DataError, stratified_subset
from engine.evaluation.dataset_readers import read_bold, read_crows_pairs, read_rtp, read_text
from engine.evaluation.data_sources import load_suite_data
from tests.conftest import shared_data


def _rtp_line(text: str, toxicity: float | None) -> str:
    return json.dumps({"prompt": {"text": text, "toxicity": toxicity}, "continuation": {"text": "x"}})


# -- the real data sets in ../shared/data ------------------------------------------------------
def test_real_rtp_folder_loads_both_files():
    prompts = read_rtp(shared_data("rtp"))
    counts = Counter(p.split for p in prompts)
    # DecodingTrust's "toxic" file holds some prompts whose own toxicity is < 0.5: the split
    # follows the RTP definition (prompt toxicity >= 0.5), not the file name
    assert counts["toxic"] > 900 and counts["nontoxic"] > 1200
    assert [p.index for p in prompts] == list(range(len(prompts)))


def test_real_rtp_cap_is_stratified_and_seeded():
    data = load_suite_data("toxicity", str(shared_data("rtp")), max_prompts=40, seed=0)
    assert len(data.items) == 40 and data.mode == "path"
    everything = Counter(p.split for p in read_rtp(shared_data("rtp")))
    expected_toxic = round(40 * everything["toxic"] / sum(everything.values()))
    assert Counter(p.split for p in data.items) == {"toxic": expected_toxic, "nontoxic": 40 - expected_toxic}
    again = load_suite_data("toxicity", str(shared_data("rtp")), max_prompts=40, seed=0)
    other = load_suite_data("toxicity", str(shared_data("rtp")), max_prompts=40, seed=1)
    assert [p.index for p in again.items] == [p.index for p in data.items]
    assert [p.index for p in other.items] != [p.index for p in data.items]
    assert data.fingerprint() == again.fingerprint() != other.fingerprint()


def test_real_bold_folder_and_selection():
    prompts = read_bold(shared_data("bold"))               # finds bold/prompts/ itself
    assert {p.domain for p in prompts} == {"gender", "race", "profession", "religious_ideology",
                                           "political_ideology"}
    data = load_suite_data("bold", str(shared_data("bold", "prompts")), domains=("gender",),
                           prompts_per_group=5, seed=0)
    assert Counter(p.group for p in data.items) == {"American_actors": 5, "American_actresses": 5}


def test_real_crows_pairs_csv():
    pairs = read_crows_pairs(shared_data("crows_pairs", "crows_pairs_anonymized.csv"))
    assert len(pairs) > 1500
    assert {p.direction for p in pairs} == {"stereo", "antistereo"}
    assert len({p.bias_type for p in pairs}) == 9


# -- the built-in sets --------------------------------------------------------------------------
@pytest.mark.parametrize("suite", ["toxicity", "bold", "crows_pairs", "perplexity"])
def test_builtin_sets_load(suite):
    data = load_suite_data(suite, "builtin")
    assert data.mode == "builtin" and data.source.startswith("builtin:")
    assert data.items or data.text


def test_builtin_toxicity_has_both_splits_and_bold_all_domains():
    prompts = load_suite_data("toxicity", "builtin").items
    counts = Counter(p.split for p in prompts)
    assert counts["toxic"] >= 20 and counts["nontoxic"] >= 40
    bold = load_suite_data("bold", "builtin").items
    assert len({p.domain for p in bold}) == 5
    assert (BUILTIN_DIR / "README.md").exists()


def test_auto_falls_back_to_builtin_offline_and_says_why(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = load_suite_data("toxicity", "auto")
    assert data.mode == "builtin"
    assert "built-in" in data.note and "allenai/real-toxicity-prompts" in data.note


def test_hub_mode_without_hub_is_an_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="allenai/real-toxicity-prompts"):
        load_suite_data("toxicity", "hub")


def test_stratified_subset_keeps_shares():
    strata = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    keep = stratified_subset(strata, 10, seed=0)
    assert Counter(strata[i] for i in keep) == {"a": 6, "b": 3, "c": 1}
    assert keep == sorted(keep) and len(set(keep)) == 10
    assert stratified_subset(strata, 500, seed=0) == list(range(100))


# -- bad input --------------------------------------------------------------------------------
def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(_rtp_line("fine", 0.1) + "\n{not json\n")
    with pytest.raises(DataError, match=r"p\.jsonl, line 2: not valid JSON"):
        read_rtp(path)


@pytest.mark.parametrize("line, message", [
    (json.dumps({"text": "no prompt object"}), "missing field 'prompt'"),
    (json.dumps({"prompt": {"toxicity": 0.2}}), "missing field 'prompt.text'"),
    (json.dumps({"prompt": {"text": "  "}}), "empty 'prompt.text'"),
    (json.dumps({"prompt": {"text": "ok", "toxicity": "high"}}), "'prompt.toxicity' must be a number"),
    (json.dumps({"prompt": {"text": "ok", "toxicity": 3}}), "got 3"),
    ("[1, 2]", "expected a JSON object"),
])
def test_bad_rtp_fields(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text(_rtp_line("fine", None) + "\n" + line + "\n")
    with pytest.raises(DataError, match="line 2") as err:
        read_rtp(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_rtp_wrong_encoding(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(_rtp_line("fine", 0.1).encode() + b"\n" + '{"prompt": {"text": "caf\xe9"}}'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.jsonl, line 2: not UTF-8"):
        read_rtp(path)


def test_empty_sets(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no prompts"):
        read_rtp(tmp_path / "empty.jsonl")
    (tmp_path / "blank.txt").write_text("   \n")
    with pytest.raises(DataError, match="is empty"):
        read_text(tmp_path / "blank.txt")
    (tmp_path / "pairs.csv").write_text("sent_more,sent_less,stereo_antistereo,bias_type\n")
    with pytest.raises(DataError, match="no sentence pairs"):
        read_crows_pairs(tmp_path / "pairs.csv")
    (tmp_path / "emptyfolder").mkdir()
    with pytest.raises(DataError, match="has no RealToxicityPrompts JSONL files"):
        read_rtp(tmp_path / "emptyfolder")


def test_missing_path():
    with pytest.raises(DataError, match="does not exist"):
        load_suite_data("toxicity", "/no/such/file.jsonl")


def test_crows_missing_column_and_bad_direction(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("sent_more,sent_less,bias_type\na,b,gender\n")
    with pytest.raises(DataError, match="missing column 'stereo_antistereo'"):
        read_crows_pairs(path)
    path.write_text("sent_more,sent_less,stereo_antistereo,bias_type\na,b,stereo,gender\nc,d,sideways,age\n")
    with pytest.raises(DataError, match=r"line 3: stereo_antistereo must be .* got 'sideways'"):
        read_crows_pairs(path)


def test_bold_unknown_domain_and_group():
    with pytest.raises(DataError, match="BOLD group 'Martians' is unknown .*available: American_actors"):
        load_suite_data("bold", "builtin", domains=("gender",), groups=("Martians",))


def test_bold_domain_missing_from_folder(tmp_path):
    (tmp_path / "gender_prompt.json").write_text(json.dumps({"g1": {"e": ["A prompt"]}}))
    with pytest.raises(DataError, match="BOLD domain 'race' has no prompts"):
        load_suite_data("bold", str(tmp_path), domains=("race",))


def test_bold_bad_structure(tmp_path):
    (tmp_path / "gender_prompt.json").write_text(json.dumps({"g1": ["not", "a", "dict"]}))
    with pytest.raises(DataError, match="group 'g1' must map entity names"):
        read_bold(tmp_path)


@pytest.mark.network
@pytest.mark.parametrize("suite", ["toxicity", "bold", "crows_pairs", "perplexity"])
def test_hub_data_sets_load(suite, monkeypatch):
    """Needs the hub; run alone (`-m network`), since `datasets` reads its offline flag at import."""
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    data = load_suite_data(suite, "hub", max_prompts=20)
    assert data.mode == "hub" and (len(data.items) == 20 or data.text)


def test_offline_status_helpers(tmp_path, monkeypatch):
    from engine.evaluation.data_sources import data_requirement, hub_cached, offline_datasets
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert data_requirement("toxicity", "builtin") == ""
    assert "not cached" in data_requirement("toxicity", "auto")
    assert "does not exist" in data_requirement("bold", str(tmp_path / "missing"))
    assert set(offline_datasets()) == {"toxicity", "bold", "crows_pairs", "perplexity"}
    (tmp_path / "hf" / "hub" / "datasets--AlexaAI--bold").mkdir(parents=True)
    assert hub_cached("bold") and data_requirement("bold", "hub") == ""
