"""Unit tests of the compression building blocks that need no job: layer choice, text parsing
and packing, exact pruning masks, the learning-rate schedule, and the OOM fallback."""

from __future__ import annotations

import json

import pytest
import torch

from engine.compression import prune, textdata
from engine.compression.distill import Distiller, warmup_cosine
from engine.compression.students import choose_layers, keep_layers
from engine.errors import DataError, JobFailed
from engine.specs import DistillSpec




def test_default_layers_match_distilgpt2_and_span_the_teacher():
    assert choose_layers(12, 0.5) == (0, 2, 4, 7, 9, 11)        # DistilGPT2's choice
    layers = choose_layers(30, 0.5)
    assert len(layers) == 15 and layers[0] == 0 and layers[-1] == 29
    assert choose_layers(4, 0.1) == (0,) and choose_layers(4, 0.99) == (0, 2, 3)
    assert choose_layers(6, 0.5, (5, 1)) == (1, 5)
    with pytest.raises(JobFailed, match="has only 6 layers"):
        choose_layers(6, 0.5, (0, 6))


def test_keep_layers_renumbers_layer_idx_and_still_generates(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    keep_layers(model, (1, 3))
    assert model.config.num_hidden_layers == 2
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1]
    out = model.generate(**tokenizer("the", return_tensors="pt"), max_new_tokens=4,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] >= 2


def test_parse_source_and_local_files(tmp_path):
    assert textdata.parse_source("builtin").kind == "builtin"
    assert textdata.parse_source("teacher").kind == "teacher"
    assert textdata.parse_source("Salesforce/wikitext:wikitext-2-raw-v1").kind == "hub"
    with pytest.raises(DataError, match="does not exist"):
        textdata.parse_source("./missing.txt")
    plain = tmp_path / "a.txt"
    plain.write_text("First paragraph\nstill first.\n\nSecond one.\n")
    assert textdata.read_file_texts(plain) == ["First paragraph\nstill first.", "Second one."]
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(json.dumps({"text": "one"}) + "\n\n" + json.dumps({"other": 1}) + "\n")
    with pytest.raises(DataError, match="line 3 has no string 'text' field"):
        textdata.read_file_texts(jsonl)
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match="is not UTF-8 text"):
        textdata.read_file_texts(binary)


def test_hub_data_set_offline_fails_with_a_clear_reason(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(JobFailed, match="hub data set 'no-such-owner/no-such-set' could not be loaded"):
        textdata.read_hub_texts("no-such-owner/no-such-set", 1000)


def test_pack_joins_with_eos_and_repeats_short_text():
    blocks, repeated = textdata.pack([[1, 2, 3], [4, 5]], seq_len=3, eos_id=0)
    assert blocks.tolist() == [[1, 2, 3], [0, 4, 5]] and not repeated
    blocks, repeated = textdata.pack([[1, 2]], seq_len=4, eos_id=0, min_blocks=2)
    assert repeated and blocks.shape == (2, 4)


def test_masks_are_exact_even_with_ties():
    scores = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.5, 2.0, 0.1, 3.0]])
    assert int(prune.lowest_in_tensor(scores, 0.5).sum()) == 4
    assert prune.lowest_per_row(scores, 0.5).sum(1).tolist() == [2, 2]
    n_m = prune.lowest_n_m(torch.arange(8.0).view(1, 8), 2, 4)
    assert n_m.tolist() == [[True, True, False, False, True, True, False, False]]
    masks = prune.lowest_global({"a": torch.ones(3, 3), "b": torch.ones(2, 2)}, 0.5)
    assert sum(int(m.sum()) for m in masks.values()) == int(0.5 * 13)


def test_warmup_then_cosine_to_zero():
    factor = warmup_cosine(warmup=4, total=20)
    assert [factor(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(12) == pytest.approx(0.5) and factor(20) == pytest.approx(0.0)


class _Recorder:
    """Collects what the training loop reports (stands in for a JobContext)."""

    def __init__(self):
        self.messages: list[str] = []

    def progress(self, done, total, message="", *, force=False, **data):
        self.messages.append(message)

    def check_cancelled(self):
        pass

    def ensure_lease(self):
        pass

    def log(self, message, level="info", **data):
        self.messages.append(message)


class _TightMemory(torch.nn.Module):
    """A real tiny model that runs out of memory above two sequences per forward pass, as a
    GPU would (a CPU cannot be made to run out of memory on cue)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, input_ids, **kwargs):
        if self.training and input_ids.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.model(input_ids=input_ids, **kwargs)


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_effective_batch(tiny_gpt2, tmp_path):
    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()
    student = _TightMemory(AutoModelForCausalLM.from_pretrained(tiny_gpt2))
    spec = DistillSpec(teacher=str(tiny_gpt2), steps=3, batch_size=8, seq_len=16, warmup_steps=0)
    blocks = torch.randint(0, 300, (20, 16))
    reporter = _Recorder()
    outcome = Distiller(student, teacher, blocks[:16], blocks[16:], spec, torch.device("cpu"),
                        tmp_path, reporter, {"test": 1}).run()
    assert outcome.steps == 3 and outcome.micro_batch == 2 and outcome.grad_accum == 4
    assert sum("micro-batch halved" in m for m in reporter.messages) == 2
