"""Export a Llama-family model to a GGUF file at Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 (or F16 /
F32), with the `gguf` package, so that llama.cpp users evaluate the exact file they ship.

Tensors take llama.cpp's names (`gguf.get_tensor_name_map`); Q and K projections are permuted
the way llama.cpp's converter does (transformers undoes it on load); every 2-D weight whose rows
are a multiple of the type's block size is quantized (`gguf.quants.quantize`, numpy), other
tensors (norms, odd shapes) stay F32. The tokenizer is written as a GPT-2-style BPE vocabulary
(tokens, token types, merges) from the Hugging Face tokenizer; the pre-tokenizer name and chat
template come from `template` (the GGUF the model descends from) when there is one. The file is
read back through the registry's GGUF path (transformers dequantises it), which the tests check."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from engine.errors import GGUFExportError

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("llama",)


def gguf_types() -> dict[str, object]:
    import gguf
    t = gguf.GGMLQuantizationType
    return {"q8_0": t.Q8_0, "q4_0": t.Q4_0, "q4_1": t.Q4_1, "q5_0": t.Q5_0, "q5_1": t.Q5_1,
            "f16": t.F16, "f32": t.F32}


from engine.compression.quant import GGUF_FORMATS  # noqa: E402 - shared with spec validation
FILE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9}


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K row permutation (inverse of transformers' `_reverse_permute_weights`)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _template_strings(template: Path | None) -> dict[str, str]:
    """tokenizer.ggml.pre and tokenizer.chat_template of the GGUF the model came from."""
    if template is None or not Path(template).is_file():
        return {}
    import gguf
    reader = gguf.GGUFReader(str(template))
    out = {}
    for key in ("tokenizer.ggml.pre", "tokenizer.chat_template"):
        field = reader.fields.get(key)
        if field is not None and field.data:
            out[key] = bytes(field.parts[field.data[0]]).decode("utf-8")
    return out


def _merges(tokenizer) -> list[str]:
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model.get("type") != "BPE":
        raise GGUFExportError(f"tokenizer model {model.get('type')!r} is not BPE: GGUF export "
                              "supports GPT-2-style BPE tokenizers")
    return [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]


def _add_tokenizer(writer, tokenizer, vocab_size: int, template: dict[str, str]) -> None:
    import gguf
    tokens = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    special = set(tokenizer.all_special_ids)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(template.get("tokenizer.ggml.pre", "gpt2"))
    writer.add_token_list([t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)])
    writer.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
                            for i in range(vocab_size)])
    writer.add_token_merges(_merges(tokenizer))
    for setter, value in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                          (writer.add_eos_token_id, tokenizer.eos_token_id),
                          (writer.add_pad_token_id, tokenizer.pad_token_id),
                          (writer.add_unk_token_id, tokenizer.unk_token_id)):
        if value is not None:
            setter(int(value))
    if "tokenizer.chat_template" in template:
        writer.add_chat_template(template["tokenizer.chat_template"])


def _add_config(writer, config, fmt: str) -> None:
    heads = config.num_attention_heads
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(heads))
    writer.add_head_count_kv(int(getattr(config, "num_key_value_heads", None) or heads))
    writer.add_rope_dimension_count(int(getattr(config, "head_dim", None) or config.hidden_size // heads))
    rope = getattr(config, "rope_theta", None) or (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
    writer.add_rope_freq_base(float(rope or 10000.0))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(config.vocab_size))
    writer.add_file_type(FILE_TYPES[fmt])


def export_gguf(model, tokenizer, path: Path, fmt: str, template: Path | None = None) -> dict:
    """Write `model` to the GGUF file `path` at `fmt`; returns {tensors, quantized, bytes}."""
    import gguf
    from gguf.quants import quantize

    config = model.config
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise GGUFExportError(f"GGUF export supports {', '.join(SUPPORTED_MODEL_TYPES)} models, not "
                              f"{config.model_type!r}")
    if fmt not in GGUF_FORMATS:
        raise GGUFExportError(f"GGUF format {fmt!r} is unknown; choose from {', '.join(GGUF_FORMATS)}")
    qtype = gguf_types()[fmt]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(Path(path).stem)
    _add_config(writer, config, fmt)
    _add_tokenizer(writer, tokenizer, config.vocab_size, _template_strings(template))
    heads, kv_heads = config.num_attention_heads, getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    tied = bool(getattr(config, "tie_word_embeddings", False))
    quantized = 0
    state = model.state_dict()
    for hf_name, tensor in state.items():
        if tied and hf_name == "lm_head.weight":
            continue                       # llama.cpp uses token_embd as the output head
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise GGUFExportError(f"no GGUF name for tensor {hf_name!r}")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if name.endswith("attn_q.weight"):
            data = _permute(data, heads)
        elif name.endswith("attn_k.weight"):
            data = _permute(data, kv_heads)
        if data.ndim == 2 and qtype not in (gguf.GGMLQuantizationType.F32,) and data.shape[1] % block == 0:
            if qtype == gguf.GGMLQuantizationType.F16:
                writer.add_tensor(name, data.astype(np.float16))
            else:
                writer.add_tensor(name, quantize(data, qtype), raw_dtype=qtype)
            quantized += 1
        else:
            writer.add_tensor(name, data.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"tensors": len(state) - (1 if tied and "lm_head.weight" in state else 0),
            "quantized": quantized, "bytes": Path(path).stat().st_size, "format": fmt}
