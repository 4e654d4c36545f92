"""Pruning jobs on tiny real GPT-2 (Conv1D) and Llama (nn.Linear, grouped-query attention)
models: each method reaches the requested sparsity exactly on the pruned layers, embeddings
and the tied lm_head are untouched, head pruning makes the model smaller, and the results
round-trip through the registry with their sparsity stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine import queue
from engine.formats import head_pruned as head_pruning
from engine.formats.architecture import block_linears, weight_out_in
from engine.compression.model_writer import load_saved
from engine.model_loader import ModelCache
from engine.specs import PruneSpec, SpecError
from engine.worker import Worker

CALIBRATION = dict(calibration_samples=8, calibration_seq_len=32)




def run(home, store, spec) -> tuple[dict, dict]:
    job_id = queue.submit(store, spec)
    Worker(home, once=True, idle_exit_s=None).run()
    row = queue.job(store, job_id)
    return row, json.loads(row["result"] or "{}")


def embeddings(model) -> torch.Tensor:
    return model.get_input_embeddings().weight.detach().clone()


@pytest.fixture(params=["gpt2", "llama"])
def tiny(request, tiny_gpt2, tiny_llama) -> Path:
    return {"gpt2": tiny_gpt2, "llama": tiny_llama}[request.param]


@pytest.mark.parametrize("method,scope,n_m", [
    ("magnitude", "layer", None), ("magnitude", "global", None), ("wanda", "layer", None),
    ("magnitude", "layer", "2:4"), ("wanda", "layer", "2:4"),
])
def test_unstructured_pruning_is_exact_and_round_trips(method, scope, n_m, tiny, home, store):
    spec = PruneSpec(model=str(tiny), method=method, sparsity=0.5, scope=scope, n_m=n_m,
                     calibration_data="builtin", **CALIBRATION)
    row, result = run(home, store, spec)
    assert row["status"] == "done", row["error"]
    model_row = store.model(result["model_id"])
    sparsity = json.loads(model_row["sparsity"])
    assert sparsity["overall"] == 0.5                       # exactly: int(0.5 * n) of n
    if scope == "layer":
        assert set(sparsity["layers"].values()) == {0.5}
    assert model_row["method"] == method and model_row["parent_id"] == result["parent_model_id"]
    assert json.loads(model_row["method_params"])["n_m"] == n_m
    assert model_row["n_nonzero"] == result["nonzero_after"] < result["nonzero_before"]

    # Reload through the registry: zeros survive saving; embeddings and lm_head untouched.
    original = ModelCache(home).load(str(tiny), store)
    pruned = ModelCache(home).load(model_row["path"], store)
    assert pruned.model_id == model_row["id"]
    assert torch.equal(embeddings(pruned.model), embeddings(original.model))
    assert pruned.model.get_output_embeddings().weight.data_ptr() == \
        pruned.model.get_input_embeddings().weight.data_ptr()
    for name, module in block_linears(pruned.model).items():
        weight = weight_out_in(module)                       # [out, in] for Conv1D too
        assert int((weight == 0).sum()) / weight.numel() == sparsity["layers"][name]
        if n_m:
            groups = weight.reshape(weight.shape[0], -1, 4)
            assert int((groups != 0).sum(-1).max()) <= 2
        if method == "wanda" and not n_m:                     # compared within each row
            assert set((weight == 0).sum(1).tolist()) == {weight.shape[1] // 2}


def test_head_pruning_makes_the_model_smaller(tiny, home, store):
    spec = PruneSpec(model=str(tiny), method="heads", sparsity=0.5, scope="global", **CALIBRATION)
    row, result = run(home, store, spec)
    assert row["status"] == "done", row["error"]
    model_row = store.model(result["model_id"])
    sparsity = json.loads(model_row["sparsity"])
    assert sparsity["overall"] == 0.5 and sparsity["heads_after"] == sparsity["heads_before"] // 2
    assert all(share < 1 for share in sparsity["layers"].values())   # every layer keeps a head
    assert result["params_after"] < result["params_before"]
    assert model_row["n_params"] == result["params_after"]

    reloaded = load_saved(Path(model_row["path"]))
    assert sum(p.numel() for p in reloaded.parameters()) == result["params_after"]
    assert [a.n_heads for a in head_pruning.attention_layers(reloaded)] == \
        [n for n, _ in sparsity["layout"]]


def test_head_pruned_gpt2_loads_through_the_registry(tiny_gpt2, home, store):
    row, result = run(home, store, PruneSpec(model=str(tiny_gpt2), method="heads", sparsity=0.25,
                                             scope="global", **CALIBRATION))
    assert row["status"] == "done", row["error"]
    loaded = ModelCache(home).load(result["path"], store)
    assert loaded.model_id == result["model_id"]
    assert sum(p.numel() for p in loaded.model.parameters()) == result["params_after"]


def test_head_pruned_llama_is_a_standard_model(tiny_llama, home, store):
    """Same head count in every layer: the config describes it, no compfair loader needed."""
    row, result = run(home, store, PruneSpec(model=str(tiny_llama), method="heads", sparsity=0.5,
                                             **CALIBRATION))
    assert row["status"] == "done", row["error"]
    config = json.loads((Path(result["path"]) / "config.json").read_text())
    assert config["num_attention_heads"] == 2 and config["head_dim"] == 16
    assert head_pruning.LAYOUT_KEY not in config
    loaded = ModelCache(home).load(result["path"], store)
    assert sum(p.numel() for p in loaded.model.parameters()) == result["params_after"]


def test_grouped_query_attention_keeps_a_valid_layout(tiny_llama, tmp_path):
    """4 query heads sharing 2 K/V heads: removing 2 heads drops a whole group or one query
    head per group, and the cut model still runs and matches its reloaded copy."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    layers = head_pruning.attention_layers(model)
    assert head_pruning.removable_counts(4, 2)[2] == [(0, 1), (1, 0)]
    importance = [torch.tensor([0.9, 0.1, 0.8, 0.2]), torch.tensor([0.1, 0.2, 0.9, 0.8])]
    plan = head_pruning.plan_layerwise(layers, importance, 0.5)
    # One layout for both layers. One query head per group: layer 0 loses 0.1 + 0.2, layer 1
    # loses 0.1 + 0.8 (1.2 in all). A whole group: layer 0 loses 1.0, layer 1 loses 0.3 (1.3).
    assert plan[0].removed == [1, 3] and plan[1].removed == [0, 3]
    head_pruning.apply_plan(model, plan)
    assert model.config.num_attention_heads == 2 and model.config.num_key_value_heads == 2
    ids = torch.arange(1, 12)[None, :]
    folder = tmp_path / "gqa"
    model.save_pretrained(folder)
    reloaded = load_saved(folder)
    assert torch.allclose(model(input_ids=ids).logits, reloaded(input_ids=ids).logits, atol=1e-5)
    with pytest.raises(ValueError, match="global head pruning needs one K/V head"):
        head_pruning.validate_plan_inputs(layers, 0.5, "global")


def test_recovery_fine_tune_keeps_the_masks(tiny_gpt2, home, store):
    spec = PruneSpec(model=str(tiny_gpt2), method="wanda", sparsity=0.5, recovery_steps=5,
                     recovery_learning_rate=1e-3, **CALIBRATION)
    row, result = run(home, store, spec)
    assert row["status"] == "done", row["error"]
    assert result["recovery_final_loss"] is not None
    assert result["overall_sparsity"] == 0.5


@pytest.mark.parametrize("changes,reason", [
    (dict(method="heads", sparsity=0.9), "would remove all 4 attention heads"),
    (dict(method="heads", sparsity=0.1), "removes no head"),
    (dict(method="wanda", scope="global"), "scope=global applies to magnitude and heads only"),
    (dict(method="magnitude", n_m="3:7"), "N:M 3:7 needs input widths divisible by 7"),
    (dict(method="wanda", calibration_data="/no/such/calibration.txt"),
     "data file '/no/such/calibration.txt' does not exist"),
    (dict(method="wanda", calibration_seq_len=1024), "calibration_seq_len 1024 is longer than"),
])
def test_bad_input_fails_with_one_line_reason(changes, reason, tiny_gpt2, home, store):
    row, _ = run(home, store, PruneSpec(model=str(tiny_gpt2), **{**CALIBRATION, **changes}))
    assert row["status"] == "failed"
    assert reason in row["error"] and "\n" not in row["error"]
    assert not list(home.models_dir.iterdir())


def test_sparsity_outside_range_is_rejected_by_the_spec():
    with pytest.raises(SpecError, match=r"sparsity must be in \[0, 1\)"):
        PruneSpec(sparsity=1.0)
