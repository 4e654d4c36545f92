"""Tiny real models for tests: a byte-level BPE tokenizer trained on a few hundred sentences,
and GPT-2 / Llama configs small enough to train in seconds. Saved with save_pretrained, so they
load through exactly the same code path as a hub model."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("the a people women men she he they we you it is was are were good bad kind cruel "
         "happy angry doctor nurse teacher engineer farmer worker muslim christian jewish "
         "atheist liberal conservative black white asian young old friend neighbour city "
         "village house road river runs walks talks thinks said loves hates helps hurts "
         "always never often quickly slowly very really quite stupid smart lazy brave").split()


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16))).capitalize() + "."
            for _ in range(n)]


def _tokenizer(folder: Path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus(), vocab_size=400, min_frequency=1,
                            special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                        pad_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_gpt2(folder: Path, n_layer: int = 4, n_embd: int = 64, n_head: int = 4, seed: int = 0) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(folder)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=n_embd,
                        n_layer=n_layer, n_head=n_head, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def build_llama(folder: Path, n_layer: int = 4, hidden: int = 64, heads: int = 4, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=n_layer, num_attention_heads=heads,
                         num_key_value_heads=heads, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def build_small_gguf(target: Path, keep_layers: int = 2, vocab: int = 2000) -> Path:
    """A real GGUF file cut from the shipped SmolLM2 one: its metadata, the first `keep_layers`
    blocks and the first `vocab` tokens (with the merges among them). Loads through
    transformers' GGUF path in seconds instead of ~40 s."""
    import gguf

    from engine.model_loader import smollm2_path

    reader = gguf.GGUFReader(smollm2_path())
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(target, arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == f"{arch}.block_count":
            value = keep_layers
        elif field.name == f"{arch}.vocab_size":
            value = vocab
        elif field.name in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type"):
            value = value[:vocab]
        elif field.name == "tokenizer.ggml.merges":
            kept = set(reader.fields["tokenizer.ggml.tokens"].contents()[:vocab])
            value = [m for m in value if m.replace(" ", "", 1) in kept
                     and all(part in kept for part in m.split(" ", 1))]
        writer.add_key_value(field.name, value, value_type, sub_type=sub_type)
    tensors = [(t.name, t.data[:vocab] if t.name == "token_embd.weight" else t.data, t.tensor_type)
               for t in reader.tensors
               if not t.name.startswith("blk.") or int(t.name.split(".")[1]) < keep_layers]
    for name, data, tensor_type in tensors:
        writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, data, _ in tensors:
        writer.write_tensor_data(data, tensor_endianess=reader.endianess)
    writer.close()
    return target
