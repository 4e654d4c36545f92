"""Compressed models are stored at their real size: a half-precision parent's products stay in
half precision, and sparse models record their bitmask-plus-values size."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from engine import queue
from engine.model_loader import sparse_bytes
from engine.specs import PruneSpec
from engine.worker import Worker


def test_a_bfloat16_parent_is_pruned_into_a_bfloat16_model(home, store, tiny_gpt2, tmp_path):
    from transformers import AutoModelForCausalLM
    parent = tmp_path / "bf16"
    shutil.copytree(tiny_gpt2, parent)
    AutoModelForCausalLM.from_pretrained(tiny_gpt2).to(torch.bfloat16).save_pretrained(parent)
    job = queue.submit(store, PruneSpec(model=str(parent), method="magnitude", sparsity=0.5))
    Worker(home, once=True, idle_exit_s=None).run()
    row = queue.job(store, job)
    assert row["status"] == "done", row["error"]
    model = store.model(json.loads(row["result"])["model_id"])
    config = json.loads((Path(model["path"]) / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    assert json.loads(model["extra"])["saved_dtype"] == "bfloat16"
    parent_row = store.model(model["parent_id"])
    assert model["size_bytes"] < 0.6 * parent_row["size_bytes"] * 2      # not widened to fp32
    # sparse models record the bitmask + values size: about half the values plus 1 bit a weight
    assert json.loads(model["extra"])["sparse_bytes"] < model["size_bytes"]


def test_sparse_bytes_by_hand():
    layer = torch.nn.Linear(16, 4, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[0, :5] = 1.0
    # 64 weights -> an 8-byte mask and 5 float32 values
    assert sparse_bytes(layer) == 8 + 5 * 4
    dense = torch.nn.Linear(16, 4, bias=False)
    with torch.no_grad():
        dense.weight.fill_(1.0)
    assert sparse_bytes(dense) == 64 * 4


def test_a_model_pruned_from_a_gguf_file_is_saved_in_float16(home, store, tiny_llama):
    from engine.specs import QuantizeSpec
    gguf_job = queue.submit(store, QuantizeSpec(model=str(tiny_llama), method="gguf", gguf_type="q8_0"))
    prune_job = queue.submit(store, PruneSpec(model=f"job:{gguf_job}", method="magnitude", sparsity=0.5))
    rtn_job = queue.submit(store, QuantizeSpec(model=f"job:{gguf_job}", bits=8, group_size=32))
    Worker(home, once=True, idle_exit_s=None).run()
    # a packed product of it keeps its unquantized tensors (embeddings, norms) in float16 too
    rtn = queue.job(store, rtn_job)
    assert rtn["status"] == "done", rtn["error"]
    from safetensors import safe_open
    rtn_model = store.model(json.loads(rtn["result"])["model_id"])
    assert json.loads(rtn_model["extra"])["saved_dtype"] == "float16"
    with safe_open(str(Path(rtn_model["path"]) / "quantized.safetensors"), "pt") as packed:
        kinds = {packed.get_slice(key).get_dtype() for key in packed.keys()}
    assert "F32" not in kinds and {"F16", "U8"} <= kinds
    row = queue.job(store, prune_job)
    assert row["status"] == "done", row["error"]
    model = store.model(json.loads(row["result"])["model_id"])
    config = json.loads((Path(model["path"]) / "config.json").read_text())
    assert config["dtype"] == "float16" and json.loads(model["extra"])["saved_dtype"] == "float16"
    from safetensors import safe_open
    with safe_open(str(Path(model["path"]) / "model.safetensors"), "pt") as weights:
        assert {weights.get_slice(key).get_dtype() for key in weights.keys()} == {"F16"}


def test_the_models_listing_says_how_each_model_is_stored():
    from engine.formatting import fmt_storage
    assert fmt_storage('{"quantization": {"format": "gguf-q4_0", "bits_per_weight": 4.6}}') == "gguf-q4_0 4.60 b/w"
    assert fmt_storage({"sparse_bytes": 2 * 1024 ** 2, "saved_dtype": "float16"}) == "sparse 2.0 MB float16"
    assert fmt_storage({"saved_dtype": "bfloat16"}) == "bfloat16"
    assert fmt_storage(None) == ""
