"""Depth pruning by Block Influence (ShortGPT) on tiny GPT-2 and Llama models.

In a constructed model whose block 2 is identity-like (its attention and MLP output projections
zeroed, so the residual stream passes through unchanged), BI picks exactly that block: the
`layers` prune method removes it (and the logits do not move), and a distillation job with no
`student_layers` leaves it out of the student and records why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine import queue
from engine.formats.architecture import block_list
from engine.compression.depth import block_influence, blocks_to_remove, least_influential
from engine.compression.students import choose_layers
from engine.model_loader import ModelCache
from engine.specs import DistillSpec, PruneSpec, SpecError
from engine.worker import Worker

IDENTITY_BLOCK = 2
CALIBRATION = dict(calibration_samples=8, calibration_seq_len=32)


def load(path: Path):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@torch.no_grad()
def make_identity_like(model, index: int) -> None:
    """Zero block `index`'s output projections: it then adds nothing to the residual stream."""
    _, blocks = block_list(model)
    block = blocks[index]
    outputs = ((block.attn.c_proj, block.mlp.c_proj) if hasattr(block, "attn")
               else (block.self_attn.o_proj, block.mlp.down_proj))
    for layer in outputs:
        layer.weight.zero_()
        if getattr(layer, "bias", None) is not None:
            layer.bias.zero_()


@pytest.fixture(params=["gpt2", "llama"])
def redundant(request, tiny_gpt2, tiny_llama, tmp_path_factory) -> Path:
    """A tiny 4-block model saved with block 2 made identity-like."""
    from transformers import AutoTokenizer
    source = {"gpt2": tiny_gpt2, "llama": tiny_llama}[request.param]
    target = tmp_path_factory.mktemp("redundant") / f"{request.param}-identity-block"
    model = load(source)
    make_identity_like(model, IDENTITY_BLOCK)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


def logits(model) -> torch.Tensor:
    ids = torch.arange(1, 25)[None, :] % model.config.vocab_size
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def run(home, store, spec) -> tuple[dict, dict]:
    job_id = queue.submit(store, spec)
    Worker(home, once=True, idle_exit_s=None).run()
    row = queue.job(store, job_id)
    return row, json.loads(row["result"] or "{}")


def test_block_influence_picks_the_identity_like_block(redundant):
    calibration = torch.randint(0, 300, (6, 32), generator=torch.Generator().manual_seed(0))
    influence = block_influence(load(redundant), calibration, torch.device("cpu"), batch_size=4)
    assert len(influence) == 4
    assert abs(influence[IDENTITY_BLOCK]) < 1e-5                 # cos(h, h) = 1
    assert min(b for i, b in enumerate(influence) if i != IDENTITY_BLOCK) > 1e-3
    assert least_influential(influence, 1) == (IDENTITY_BLOCK,)


def test_layers_method_removes_the_least_influential_block(redundant, home, store):
    row, result = run(home, store, PruneSpec(model=str(redundant), method="layers", sparsity=0.25,
                                             **CALIBRATION))
    assert row["status"] == "done", row["error"]
    model_row = store.model(result["model_id"])
    record = json.loads(model_row["sparsity"])
    assert record["removed"] == [IDENTITY_BLOCK] and record["kept"] == [0, 1, 3]
    assert record["unit"] == "transformer blocks" and record["overall"] == 0.25
    assert len(record["block_influence"]) == 4 and record["layers"][str(IDENTITY_BLOCK)] == 1.0
    assert record["params_after"] < record["params_before"] == result["params_before"]
    pruned = ModelCache(home).load(model_row["path"], store).model
    assert pruned.config.num_hidden_layers == 3 and len(block_list(pruned)[1]) == 3
    # the removed block added nothing: the shallower model computes the same logits
    assert torch.allclose(logits(pruned), logits(load(redundant)), atol=1e-4)


def test_share_of_blocks_is_rounded_at_least_one_never_all():
    assert [blocks_to_remove(4, s) for s in (0.0, 0.1, 0.25, 0.5, 0.9)] == [1, 1, 1, 2, 3]
    assert blocks_to_remove(30, 0.25) == 8
    with pytest.raises(ValueError, match="leaves none"):
        blocks_to_remove(1, 0.5)
    with pytest.raises(SpecError):
        PruneSpec(method="layers", n_m="2:4")


def test_layers_refuses_global_scope(tiny_gpt2, home, store):
    row, _ = run(home, store, PruneSpec(model=str(tiny_gpt2), method="layers", scope="global", **CALIBRATION))
    assert row["status"] == "failed" and "layers ranks whole blocks" in row["error"]


def test_student_layers_follow_block_influence_unless_given():
    influence = [0.3, 0.2, 0.0, 0.1]
    assert choose_layers(4, 0.75, influence=influence) == (0, 1, 3)
    assert choose_layers(4, 0.5, influence=influence) == (0, 1)
    assert choose_layers(4, 0.5, (2, 3), influence=influence) == (2, 3)      # explicit wins
    assert choose_layers(12, 0.5) == (0, 2, 4, 7, 9, 11)                     # even, without BI


def test_distillation_student_drops_the_identity_like_block(redundant, home, store):
    spec = DistillSpec(teacher=str(redundant), intensity=0.75, data="builtin", steps=2, batch_size=2,
                       seq_len=32, warmup_steps=0, checkpoint_every=10)
    row, result = run(home, store, spec)
    assert row["status"] == "done", row["error"]
    assert result["layer_choice"] == "block_influence" and result["kept_layers"] == [0, 1, 3]
    assert min(range(4), key=result["block_influence"].__getitem__) == IDENTITY_BLOCK
    extra = json.loads(store.model(result["model_id"])["extra"])
    assert extra["kept_layers"] == [0, 1, 3] and extra["layer_choice"] == "block_influence"
    assert len(extra["block_influence"]) == 4
