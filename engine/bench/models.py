"""Bench-only model sources: `config:gpt2` / `config:gpt2-medium` build a GPT-2 of that size
from its config with random weights and a byte-level BPE tokenizer trained on the builtin corpus
(no hub needed); the output layer is untied and scaled up (`LOGIT_SCALE`) so next-token
distributions are about as peaked as a trained model's (see the package docstring)."""

from __future__ import annotations

from pathlib import Path
from engine.compression.builtin_corpus import builtin_texts

CONFIG_MODELS = {
    "gpt2": dict(n_layer=12, n_embd=768, n_head=12),
    "gpt2-medium": dict(n_layer=24, n_embd=1024, n_head=16),
}
LOGIT_SCALE = 8.0           # random GPT-2: makes next-token distributions peaked (see docstring)


def _train_tokenizer(folder: Path):
    """A byte-level BPE tokenizer trained on the builtin corpus (no hub)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast


    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(builtin_texts(), vocab_size=4096, min_frequency=1,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                        pad_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_config_model(name: str, folder: Path, seed: int = 0) -> Path:
    """`config:gpt2` / `config:gpt2-medium`: a GPT-2 of that size with random weights, saved as
    a Hugging Face folder (loaded through the normal model path)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    if name not in CONFIG_MODELS:
        raise ValueError(f"config model {name!r} is unknown; choose from "
                         + ", ".join(f"config:{n}" for n in CONFIG_MODELS))
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(folder)
    torch.manual_seed(seed)
    config = GPT2Config(**CONFIG_MODELS[name], bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(LOGIT_SCALE)
    model.save_pretrained(folder)
    return folder

