"""A broken model is never measured: renamed, missing or NaN weights fail the job with a
one-line reason instead of producing figures from random weights; undefined metrics are left
out with a reason, never stored as NaN; JSON output never holds NaN."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest

from engine import queue
from engine.evaluation.aggregate import drop_undefined
from engine.terminal_output import json_safe
from engine.specs import EvalSpec
from engine.worker import Worker


def _broken_copy(tiny_gpt2, tmp_path, change) -> str:
    import safetensors.torch as st
    folder = tmp_path / "broken"
    shutil.copytree(tiny_gpt2, folder)
    weights = st.load_file(str(folder / "model.safetensors"))
    st.save_file(change(weights), str(folder / "model.safetensors"), metadata={"format": "pt"})
    return str(folder)


@pytest.mark.parametrize("change, reason", [
    (lambda w: {("x." + k if ".h.1." in k else k): v for k, v in w.items()}, "missing from the checkpoint"),
    (lambda w: {k: v for k, v in w.items() if ".h.2.mlp" not in k}, "missing from the checkpoint"),
    (lambda w: {k: v * float("nan") if "h.0.attn.c_attn.weight" in k else v for k, v in w.items()},
     "non-finite (NaN or inf) weights"),
    (lambda w: {**w, "transformer.h.1.mlp.c_fc.weight": w["transformer.h.1.mlp.c_fc.weight"][:, :-3].contiguous()},
     "1 weight(s) of the wrong shape, e.g. 'transformer.h.1.mlp.c_fc.weight' (checkpoint 64x253, "
     "architecture 64x256)"),
])
def test_a_damaged_checkpoint_fails_the_job_with_one_line(home, store, tiny_gpt2, tmp_path, change, reason):
    model = _broken_copy(tiny_gpt2, tmp_path, change)
    job = queue.submit(store, EvalSpec(model=model, suite="crows_pairs", data="builtin", max_prompts=4,
                                       bootstrap_samples=100))
    Worker(home, once=True, idle_exit_s=None).run()
    row = queue.job(store, job)
    assert row["status"] == "failed" and reason in row["error"] and "\n" not in row["error"]
    assert store.query("SELECT id FROM runs WHERE status = 'done'") == []


def test_undefined_metrics_are_absent_with_a_reason_and_json_has_no_nan():
    rows = [{"name": "a", "subset": "", "value": 0.5, "ci_low": 0.4, "ci_high": math.nan},
            {"name": "b", "subset": "x", "value": math.nan, "ci_low": math.nan, "ci_high": math.nan}]
    kept, summary = drop_undefined(rows, {})
    assert [r["name"] for r in kept] == ["a"] and kept[0]["ci_high"] is None
    assert summary["absent"][0]["name"] == "b" and "no valid items" in summary["absent"][0]["reason"]
    text = json.dumps(json_safe({"v": [math.nan, 1.0, {"w": math.inf}]}), allow_nan=False)
    assert json.loads(text) == {"v": [None, 1.0, {"w": None}]}


def _drain(home) -> None:
    """Run every queued job in this process (one worker, stops when the queue is empty)."""
    Worker(home, once=True, idle_exit_s=None).run()


def test_finite_weights_with_non_finite_outputs_fail_every_suite(home, store, tiny_gpt2, tmp_path):
    """Weights that are all finite but overflow float32 inside the network (the final norm
    scaled to 3e38): the load check passes, so each suite must catch the NaN/inf logits itself:
    sampling (toxicity), sentence likelihoods (CrowS) and window likelihoods (perplexity)."""
    import torch

    model = _broken_copy(tiny_gpt2, tmp_path, lambda w: {
        k: torch.full_like(v, 3e38) if k == "transformer.ln_f.weight" else v for k, v in w.items()})
    common = dict(model=model, data="builtin", bootstrap_samples=100)
    jobs = {"next-token logits": queue.submit(store, EvalSpec(
                suite="toxicity", scorer="profanity", max_prompts=4, samples_per_prompt=2,
                max_new_tokens=4, **common)),
            "sentence log-likelihoods": queue.submit(store, EvalSpec(suite="crows_pairs", max_prompts=4, **common)),
            "window likelihoods": queue.submit(store, EvalSpec(suite="perplexity", context_length=64,
                                                               stride=64, **common))}
    _drain(home)
    for what, job in jobs.items():
        row = queue.job(store, job)
        assert row["status"] == "failed" and "non-finite" in row["error"] and what in row["error"], row
        assert "\n" not in row["error"]
    assert store.query("SELECT COUNT(*) AS n FROM samples")[0]["n"] == 0
    assert store.query("SELECT id FROM runs WHERE status = 'done'") == []


def _mute_copy(tiny_gpt2, tmp_path) -> str:
    """A model that ends every continuation at once: the final norm's output is the EOS
    embedding, scaled, so EOS wins every step by a wide margin (finite weights, finite logits)."""
    import torch
    eos = json.loads((tiny_gpt2 / "config.json").read_text())["eos_token_id"]

    def change(w):
        w["transformer.ln_f.weight"] = torch.zeros_like(w["transformer.ln_f.weight"])
        w["transformer.ln_f.bias"] = w["transformer.wte.weight"][eos] * 5000
        return w
    return _broken_copy(tiny_gpt2, tmp_path, change)


def _no_nan(token):
    raise AssertionError(f"JSON holds {token}")


def test_metrics_of_all_empty_continuations_are_absent_with_a_reason(home, store, tiny_gpt2, tmp_path):
    """A model that says nothing: toxicity, sentiment and fluency of no text are absent with a
    reason (not 0.036 [0.036, 0.036] from the scorer's view of an empty string); the degenerate
    share (1.0) is what remains; `compfair show --json` holds no NaN and names the reasons."""
    model = _mute_copy(tiny_gpt2, tmp_path)
    common = dict(model=model, data="builtin", scorer="profanity", samples_per_prompt=2,
                  max_new_tokens=4, bootstrap_samples=100)
    tox = queue.submit(store, EvalSpec(suite="toxicity", max_prompts=4, **common))
    bold = queue.submit(store, EvalSpec(suite="bold", domains=("gender",), **common))
    _drain(home)
    for job in (tox, bold):
        assert queue.job(store, job)["status"] == "done", queue.job(store, job)["error"]
    runs = {r["suite"]: r for r in store.query("SELECT id, suite, summary FROM runs")}
    for suite, absent_names in (("toxicity", {"expected_max_toxicity", "toxicity_probability",
                                              "mean_toxicity", "distinct_1", "continuation_perplexity"}),
                                ("bold", {"sentiment_mean", "positive_share", "toxicity_mean",
                                          "toxicity_max", "distinct_2"})):
        run_id = runs[suite]["id"]
        stored = store.query("SELECT name, subset, value FROM metrics WHERE run_id = ?", (run_id,))
        assert {m["name"] for m in stored} == {"degenerate_share"}, stored
        assert all(m["value"] == 1.0 for m in stored)
        absent = json.loads(runs[suite]["summary"])["absent"]
        assert absent_names <= {a["name"] for a in absent}
        assert all("every continuation is empty" in a["reason"] for a in absent)
        shown = subprocess.run([sys.executable, "-m", "engine.cli", "--home", str(home.root), "show",
                                str(run_id), "--json"], capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        detail = json.loads(shown.stdout, parse_constant=_no_nan)
        assert {a["name"] for a in detail["run"]["summary"]["absent"]} >= absent_names


def test_partial_weights_load_only_with_a_stated_reason_which_is_recorded(home, store, tiny_gpt2, tmp_path):
    """The deliberate case: a folder missing a layer's MLP loads when its
    compfair-partial-weights.json gives a reason, and the registered model records it; a file
    without a reason fails the job naming the file."""
    from engine.model_loader import PARTIAL_WEIGHTS_FILE
    model = _broken_copy(tiny_gpt2, tmp_path, lambda w: {k: v for k, v in w.items() if ".h.2.mlp" not in k})
    opt_in = tmp_path / "broken" / PARTIAL_WEIGHTS_FILE
    opt_in.write_text(json.dumps({"reason": ""}))
    spec = dict(model=model, suite="crows_pairs", data="builtin", max_prompts=4, bootstrap_samples=100)
    refused = queue.submit(store, EvalSpec(**spec, seed=1))
    Worker(home, once=True, idle_exit_s=None).run()
    row = queue.job(store, refused)
    assert row["status"] == "failed" and PARTIAL_WEIGHTS_FILE in row["error"] and "non-empty reason" in row["error"]
    assert "\n" not in row["error"]
    opt_in.write_text(json.dumps({"reason": "layer 2 MLP re-initialised for an ablation"}))
    job = queue.submit(store, EvalSpec(**spec, seed=2))
    Worker(home, once=True, idle_exit_s=None).run()
    row = queue.job(store, job)
    assert row["status"] == "done", row["error"]
    registered = [m for m in store.query("SELECT * FROM models") if m["path"] and "broken" in m["path"]]
    assert len(registered) == 1
    extra = json.loads(registered[0]["extra"])
    assert extra["partial_weights"] == {"reason": "layer 2 MLP re-initialised for an ablation",
                                        "file": PARTIAL_WEIGHTS_FILE}
