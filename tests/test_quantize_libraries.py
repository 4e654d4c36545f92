"""Quantize jobs through maintained libraries (torchao, bitsandbytes) on tiny models: the
product is the library's own checkpoint (its config names the quantization), it is smaller on
disk by what its bits say, int8 stays close to its parent, it counts its weights as the parent
does, and it goes through an eval suite like any model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from engine import queue
from engine.specs import EvalSpec, QuantizeSpec, SpecError
from engine.worker import Worker

pytest.importorskip("torchao")
pytest.importorskip("bitsandbytes")


def _logits_and_ce(path: str) -> tuple[torch.Tensor, float]:
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = torch.arange(1, 25)[None, :] % model.config.vocab_size
    with torch.no_grad():
        logits = model(ids).logits
    return logits, torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:]).item()


def test_bits_outside_what_a_library_offers_are_refused_naming_the_field():
    for method, bits in (("torchao", 3), ("bnb", 2)):
        with pytest.raises(SpecError) as err:
            QuantizeSpec(method=method, bits=bits)
        assert err.value.field == "bits" and "8, 4" in str(err.value)


def test_torchao_and_bnb_products_are_library_checkpoints_at_their_real_size(home, store, tiny_llama, tiny_gpt2):
    from engine.model_loader import count_parameters
    jobs = {"tao-int8": QuantizeSpec(model=str(tiny_llama), method="torchao", bits=8),
            "tao-int4": QuantizeSpec(model=str(tiny_llama), method="torchao", bits=4, group_size=32),
            "bnb-int8": QuantizeSpec(model=str(tiny_llama), method="bnb", bits=8),
            "bnb-nf4": QuantizeSpec(model=str(tiny_llama), method="bnb", bits=4),
            "gpt2-bnb8": QuantizeSpec(model=str(tiny_gpt2), method="bnb", bits=8),
            "gpt2-tao": QuantizeSpec(model=str(tiny_gpt2), method="torchao", bits=8)}
    ids = {key: queue.submit(store, spec) for key, spec in jobs.items()}
    Worker(home, once=True, idle_exit_s=None).run()
    rows = {key: queue.job(store, job) for key, job in ids.items()}
    # GPT-2's Conv1D layers are not torchao's: refused with the reason and what to use instead
    assert rows["gpt2-tao"]["status"] == "failed" and "Conv1D" in rows["gpt2-tao"]["error"]
    parent_logits, parent_ce = _logits_and_ce(str(tiny_llama))
    from transformers import AutoModelForCausalLM
    parent_params = count_parameters(AutoModelForCausalLM.from_pretrained(str(tiny_llama)))[0]
    expected_quant = {"tao-int8": "torchao", "tao-int4": "torchao", "bnb-int8": "bitsandbytes",
                      "bnb-nf4": "bitsandbytes", "gpt2-bnb8": "bitsandbytes"}
    for key, library in expected_quant.items():
        assert rows[key]["status"] == "done", (key, rows[key]["error"])
        result = json.loads(rows[key]["result"])
        model = store.model(result["model_id"])
        config = json.loads((Path(result["path"]) / "config.json").read_text())
        assert library.startswith(config["quantization_config"]["quant_method"][:3]), config
        assert json.loads(model["extra"])["quantization"]["library"] == library
        # codes + scales: int8 at 8 bits and a bit more, NF4 at 4 and a bit more (absmax per 64)
        # (torchao's int4 keeps its codes in int8, with a float32 scale and an int8 zero point
        # per group of 32: 8 + 32/32 + 8/32 bits)
        if key == "tao-int4":
            assert result["bits_per_weight"] == pytest.approx(8 + 40 / 32)
        else:
            # (per-row scales and float32 biases weigh more on these 64-wide layers)
            low, high = (8.0, 9.0) if key.endswith("8") else (4.0, 4.9)
            assert low <= result["bits_per_weight"] <= high, (key, result["bits_per_weight"])
        assert result["weights_bytes"] < result["dense_bytes"]
    for key in ("tao-int8", "tao-int4", "bnb-int8", "bnb-nf4"):
        result = json.loads(rows[key]["result"])
        assert store.model(result["model_id"])["n_params"] == parent_params      # weights, not packed bytes
        logits, ce = _logits_and_ce(result["path"])
        difference = float((logits - parent_logits).abs().max())
        if key.endswith("8"):       # int8: logits within 0.05 and the CE-perplexity within 1%
            assert difference < 0.05 and math.exp(ce - parent_ce) == pytest.approx(1.0, abs=0.01), key
        else:                       # 4-bit moves further, but stays a working model
            assert 0 < difference < 2.0 and math.exp(ce - parent_ce) < 1.2, key
    # a library checkpoint goes through a generation suite like any model
    nf4 = json.loads(rows["bnb-nf4"]["result"])["model_id"]
    eval_job = queue.submit(store, EvalSpec(model=f"model:{nf4}", suite="toxicity", data="builtin",
                                            scorer="profanity", max_prompts=3, samples_per_prompt=2,
                                            max_new_tokens=4, bootstrap_samples=100))
    Worker(home, once=True, idle_exit_s=None).run()
    assert queue.job(store, eval_job)["status"] == "done", queue.job(store, eval_job)["error"]
