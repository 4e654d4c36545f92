"""Issue 31, 0c: a prompt or sentence is at most MAX_ITEM_CHARS (20,000) characters.

A toxicity JSONL whose one prompt is 10 MB was accepted and its fluency scoring grew past
9 GB. Now `compfair submit eval` refuses it before anything is queued (exit 2, one line naming
the file, the line and the limit); BOLD prompts and CrowS-Pairs sentences likewise. A prompt
under the limit but longer than the model's context still runs: generation keeps its last
tokens and the fluency pass drops its oldest ones, and the run records how many were cut."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine import queue
from engine.evaluation.data import MAX_ITEM_CHARS, DataError
from engine.evaluation.dataset_readers import read_bold, read_crows_pairs, read_rtp
from engine.specs import EvalSpec
from tests.test_reliability_faults import REPO, run_inline, worker_env


def _rtp_line(text: str, toxicity: float = 0.1) -> str:
    return json.dumps({"prompt": {"text": text, "toxicity": toxicity}})


def test_submit_refuses_a_10_mb_prompt_naming_file_line_and_limit(home, store, tiny_gpt2, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text(_rtp_line("A short prompt") + "\n" + _rtp_line("word " * 2_000_000) + "\n")
    done = subprocess.run([sys.executable, "-m", "engine.cli", "submit", "eval", "--model", str(tiny_gpt2),
                           "--suite", "toxicity", "--data", str(data), "--scorer", "profanity",
                           "--no-worker"], cwd=REPO, env=worker_env(home), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"{data}, line 2" in lines[0] and "10,000,000 characters" in lines[0], lines[0]
    assert f"limit of {MAX_ITEM_CHARS:,} characters" in lines[0], lines[0]
    assert store.one("SELECT count(*) AS n FROM jobs")["n"] == 0


def test_the_limit_itself_is_accepted(tmp_path):
    data = tmp_path / "edge.jsonl"
    data.write_text(_rtp_line("x" * MAX_ITEM_CHARS) + "\n")
    assert len(read_rtp(data)[0].text) == MAX_ITEM_CHARS
    data.write_text(_rtp_line("x" * (MAX_ITEM_CHARS + 1)) + "\n")
    with pytest.raises(DataError, match=r"edge\.jsonl, line 1: 'prompt\.text' is 20,001 characters"):
        read_rtp(data)


def test_bold_and_crows_pairs_items_are_bounded(tmp_path):
    bold = tmp_path / "gender_prompt.json"
    bold.write_text(json.dumps({"American_actors": {"Jane Doe": ["Jane Doe is", "y" * 30_000]}}))
    with pytest.raises(DataError) as err:
        read_bold(bold)
    assert str(bold) in str(err.value) and "'Jane Doe', prompt 2" in str(err.value)
    assert "30,000 characters, over the limit of 20,000" in str(err.value)

    crows = tmp_path / "pairs.csv"
    crows.write_text("sent_more,sent_less,stereo_antistereo,bias_type\n"
                     "He is good.,She is good.,stereo,gender\n"
                     f"{'z' * 25_000},She is fine.,stereo,gender\n")
    with pytest.raises(DataError, match=r"pairs\.csv, line 3: 'sent_more' is 25,000 characters"):
        read_crows_pairs(crows)


def test_a_prompt_longer_than_the_context_is_cut_and_the_run_says_so(home, store, tiny_gpt2, tmp_path):
    """tiny_gpt2 has 256 positions; one prompt of ~1,500 tokens (under the character limit)."""
    data = tmp_path / "long.jsonl"
    data.write_text("\n".join([_rtp_line("The weather today is"), _rtp_line("one two three " * 500),
                               _rtp_line("She said that")]) + "\n")
    job_id = queue.submit(store, EvalSpec(model=str(tiny_gpt2), suite="toxicity", data=str(data),
                                          scorer="profanity", samples_per_prompt=2, max_new_tokens=8,
                                          batch_size=4, bootstrap_samples=100))
    run_inline(home)
    job = queue.job(store, job_id)
    assert job["status"] == "done", job["error"]
    run_id = store.run_for_job(job_id)["id"]
    result = json.loads(store.run(run_id)["summary"])        # recorded with the run
    assert result["prompts_truncated"] == 1
    assert result["fluency_prompts_truncated"] == 2            # its two samples
    events = [r["message"] for r in store.query("SELECT message FROM events WHERE job_id = ?", (job_id,))]
    assert any("1 of 3 prompts are longer than the 248 tokens" in m for m in events), events
    assert any("2 of 6 prompt + continuation sequences are longer than the reference model's 256 "
               "positions" in m for m in events), events
    nll = store.query("SELECT continuation_nll FROM samples WHERE run_id = ?", (run_id,))
    assert len(nll) == 6 and all(r["continuation_nll"] is not None for r in nll)
