"""A broken model is never measured: renamed, missing or NaN weights fail the job with a
one-line reason instead of producing figures from random weights; undefined metrics are left
out with a reason, never stored as NaN; JSON output never holds NaN."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from engine import queue
from engine.evaluation.aggregate import drop_undefined
from engine.output import json_safe
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
