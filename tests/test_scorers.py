"""Toxicity scorers and VADER, run for real: the actual `Detoxify` class on a tiny local
checkpoint in Detoxify's training-checkpoint format, alt-profanity-check's shipped model, a tiny
Hugging Face sequence classifier, and VADER's shipped lexicon."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.evaluation.detoxify_scorer import DETOXIFY_CLASSES, DetoxifyScorer, save_detoxify_checkpoint
from engine.evaluation.hf_classifier_scorer import HFClassifierScorer
from engine.evaluation.lexical_scorers import ProfanityScorer, SentimentScorer
from engine.evaluation.scorers import load_scorer
from engine.errors import ScorerError

WORDS = "you are an idiot nice day the weather is good bad stupid hello friend lovely".split()


def _tiny_bert_folder(folder: Path, num_labels: int = 2):
    """A tiny random BERT (config + WordPiece vocab) saved as a local HF folder."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=37, max_position_embeddings=64,
                        num_labels=num_labels)
    torch.manual_seed(0)
    return config, BertForSequenceClassification(config)


def build_detoxify_checkpoint(root: Path) -> Path:
    """A Detoxify checkpoint (the dict format Detoxify's `load_checkpoint` reads) around a tiny
    random BERT whose config and tokenizer live in a local folder."""
    folder = root / "tiny-bert"
    _, model = _tiny_bert_folder(folder, num_labels=len(DETOXIFY_CLASSES))
    model.config.save_pretrained(folder)
    return save_detoxify_checkpoint(model, folder, root / "tiny-detoxify.ckpt")


@pytest.fixture(scope="module")
def detoxify_checkpoint(tmp_path_factory) -> Path:
    return build_detoxify_checkpoint(tmp_path_factory.mktemp("detoxify"))


TEXTS = ["you are an idiot", "nice day", "hello friend", "the weather is good", "stupid"]


def test_detoxify_real_class_with_local_checkpoint(detoxify_checkpoint):
    scorer = DetoxifyScorer(str(detoxify_checkpoint), batch_size=2)
    assert scorer.name == f"detoxify:{detoxify_checkpoint}"
    assert "detoxify 0." in scorer.version and "sha256:" in scorer.version
    scores = scorer.score(TEXTS)
    assert scores.shape == (5,) and ((0 <= scores) & (scores <= 1)).all()
    # batching does not change the scores (batch of 2 vs one call; batch of one is squeezed)
    whole = DetoxifyScorer(str(detoxify_checkpoint), batch_size=64).score(TEXTS)
    np.testing.assert_allclose(scores, whole, atol=1e-6)
    np.testing.assert_allclose(scorer.score(TEXTS[:1]), whole[:1], atol=1e-6)
    details = scorer.score_details(TEXTS[:2])
    assert set(details[0]) == {"toxicity", "severe_toxicity", "obscene", "threat", "insult",
                               "identity_attack"}                       # Detoxify's renames
    assert details[1]["toxicity"] == pytest.approx(scores[1], abs=1e-6)


def test_detoxify_other_class_and_bad_class(detoxify_checkpoint):
    insult = DetoxifyScorer(str(detoxify_checkpoint), label="insult")
    assert insult.key == "insult" and insult.score(TEXTS).shape == (5,)
    with pytest.raises(ScorerError, match="no class 'regard'"):
        DetoxifyScorer(str(detoxify_checkpoint), label="regard")


def test_detoxify_bad_checkpoint(tmp_path):
    with pytest.raises(ScorerError, match="neither one of original"):
        DetoxifyScorer(str(tmp_path / "missing.ckpt"))
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ScorerError, match="cannot be loaded") as err:
        DetoxifyScorer(str(bad))
    assert "\n" not in str(err.value)


def test_load_scorer_by_name(detoxify_checkpoint):
    scorer, note = load_scorer(f"detoxify:{detoxify_checkpoint}")
    assert isinstance(scorer, DetoxifyScorer) and note == ""
    profanity, _ = load_scorer("profanity")
    assert profanity.name == "profanity" and profanity.version.startswith("alt-profanity-check")
    with pytest.raises(ScorerError, match="toxicity scorer 'perspective' is unknown"):
        load_scorer("perspective")


def test_auto_uses_the_offline_scorer_without_cached_detoxify_weights(tmp_path, monkeypatch):
    import torch
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    scorer, note = load_scorer("auto")
    assert scorer.name == "offline" and "auto chose offline" in note


def test_profanity_batched_and_sensible():
    scorer = ProfanityScorer()
    scores = scorer.score(["you are a stupid idiot", "what a lovely afternoon", "fuck off"] * 50)
    assert scores.shape == (150,)
    assert scores[0] > 0.5 and scores[2] > 0.9 and scores[1] < 0.2
    assert scorer.score([]).shape == (0,)
    assert scorer.score_details(["hi"]) == [{"toxicity": pytest.approx(scorer.score(["hi"])[0])}]


def test_hf_classifier_from_local_folder(tmp_path):
    folder = tmp_path / "clf"
    config, model = _tiny_bert_folder(folder, num_labels=2)
    model.config.id2label = {0: "neutral", 1: "toxic"}
    model.config.label2id = {"neutral": 0, "toxic": 1}
    model.save_pretrained(folder)
    scorer = HFClassifierScorer(str(folder))
    assert scorer.key == "toxic" and scorer.name == f"hf:{folder}"
    scores = scorer.score(TEXTS)
    details = scorer.score_details(TEXTS)
    assert scores.shape == (5,)
    for row, value in zip(details, scores):                # softmax over the two labels
        assert row["neutral"] + row["toxic"] == pytest.approx(1.0, abs=1e-6)
        assert row["toxic"] == pytest.approx(value, abs=1e-6)
    neutral, _ = load_scorer(f"hf:{folder}", label="neutral")
    np.testing.assert_allclose(neutral.score(TEXTS), 1 - scores, atol=1e-6)
    with pytest.raises(ScorerError, match="no label 'hate'.*neutral, toxic"):
        HFClassifierScorer(str(folder), label="hate")


def test_hf_classifier_that_cannot_load(tmp_path):
    with pytest.raises(ScorerError, match="cannot be loaded"):
        HFClassifierScorer(str(tmp_path))                  # an empty folder


def test_vader_sentiment():
    scores = SentimentScorer().score(["I love this wonderful, happy day!", "This is terrible and awful.",
                                      "The table is brown."])
    assert scores[0] >= 0.5 and scores[1] <= -0.5 and scores[2] == 0.0


# -- scripts/scorer_agreement.py ---------------------------------------------------------------
def _agreement_script():
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "scripts" / "scorer_agreement.py"
    spec = importlib.util.spec_from_file_location("scorer_agreement", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_agreement_roc_auc_by_hand(tmp_path):
    sa = _agreement_script()
    labels = np.array([True, True, False, False])
    # positive/negative pairs: (0.9 > 0.1), (0.9 > 0.4), (0.4 = 0.4 -> 1/2), (0.4 > 0.1) -> 3.5 / 4
    assert sa.roc_auc(labels, np.array([0.9, 0.4, 0.4, 0.1])) == pytest.approx(0.875)
    assert sa.average_ranks(np.array([3.0, 1.0, 3.0])).tolist() == [2.5, 1.0, 2.5]
    lines = [{"prompt": {"text": "you stupid idiot", "toxicity": 0.9},
              "continuation": {"text": "what a lovely afternoon", "toxicity": 0.05}},
             {"prompt": {"text": "the weather is nice", "toxicity": 0.1},
              "continuation": {"text": "fuck off", "toxicity": 0.95}}]
    (tmp_path / "rtp.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    results, info = sa.measure(tmp_path / "rtp.jsonl")
    overall = results[-1]
    assert (overall.subset, overall.n, overall.positives, info["texts"]) == ("all", 4, 2, 4)
    assert overall.roc_auc == 1.0 and overall.accuracy == 1.0


def test_offline_scorers_status(tmp_path, monkeypatch):
    import torch
    from engine.evaluation.scorers import offline_scorers
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    status = offline_scorers()
    assert status["profanity"].startswith("available") and status["auto"] == "offline"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "toxic_original-c1212f89.ckpt").write_bytes(b"")
    assert offline_scorers()["auto"] == "detoxify"
