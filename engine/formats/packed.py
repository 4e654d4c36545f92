"""Packing b-bit integer codes into bytes, and the on-disk format of an RTN-quantized model.

Packing: the codes (each < 2^b) are written as a little-endian bit stream, b bits per code, 8
codes of 3 bits in 3 bytes and so on: ceil(n * b / 8) bytes for n codes, for any b in 1..8.

A quantized model folder is a normal model folder (config.json, tokenizer) whose weights are in
`quantized.safetensors`: for each quantized linear layer `<name>.qweight` (packed uint8),
`<name>.scales` (float16), `<name>.zeros` (uint8, asymmetric only) beside every other tensor in
the parent's dtype, and `compfair_quant.json` recording the method, bits, group size, symmetry,
each layer's shape and the measured bytes. `load_quantized` rebuilds the architecture from its
config and loads the dequantized weights: the model evaluated is exactly the one on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from engine.formats.rtn import QuantConfig, QuantizedTensor, dequantize
from engine.errors import ModelError

QUANT_FILE = "compfair_quant.json"
WEIGHTS_FILE = "quantized.safetensors"


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes (any shape, values < 2^bits) -> packed uint8 bytes (1-D)."""
    values = codes.reshape(-1).to(torch.uint8).cpu().numpy()
    planes = ((values[:, None] >> np.arange(bits, dtype=np.uint8)) & 1).astype(np.uint8)
    return torch.from_numpy(np.packbits(planes.reshape(-1), bitorder="little").copy())


def unpack(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The inverse of `pack`: the first `count` codes, 1-D uint8."""
    stream = np.unpackbits(packed.cpu().numpy().astype(np.uint8), bitorder="little")[:count * bits]
    planes = stream.reshape(count, bits).astype(np.uint8)
    values = (planes << np.arange(bits, dtype=np.uint8)).sum(axis=1).astype(np.uint8)
    return torch.from_numpy(values)


def is_quantized_folder(path: str | Path) -> bool:
    return (Path(path) / QUANT_FILE).is_file()


def save_quantized(model, tokenizer, target: Path, layers: dict[str, QuantizedTensor], method: dict,
                   transposed: set[str] = frozenset(), rest_dtype: torch.dtype | None = None) -> dict:
    """Write `model` with `layers` (module name -> quantized [out, in] weight) in the packed
    format; `transposed` names layers whose parameter is stored [in, out] (GPT-2's Conv1D);
    `rest_dtype`: the precision of the tensors that are not quantized (embeddings, norms;
    None: as they are held). Returns the record written to compfair_quant.json."""
    from safetensors.torch import save_file
    target.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(target)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(target)
    tokenizer.save_pretrained(target)
    tensors: dict[str, torch.Tensor] = {}
    skip = {f"{name}.weight" for name in layers}
    seen: set[int] = set()
    for key, tensor in model.state_dict().items():
        if key in skip or tensor.data_ptr() in seen:      # quantized, or a tied copy
            continue
        seen.add(tensor.data_ptr())
        tensor = tensor.detach().cpu()
        if rest_dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(rest_dtype)
        tensors[key] = tensor.contiguous()
    record_layers = {}
    for name, qt in layers.items():
        tensors[f"{name}.qweight"] = pack(qt.codes, qt.config.bits)
        tensors[f"{name}.scales"] = qt.scales.to(torch.float16).cpu().contiguous()
        if qt.zeros is not None:
            tensors[f"{name}.zeros"] = qt.zeros.to(torch.uint8).cpu().contiguous()
        record_layers[name] = {"shape": list(qt.shape), "transposed": name in transposed}
    save_file(tensors, str(target / WEIGHTS_FILE), metadata={"format": "pt"})
    first = next(iter(layers.values())).config if layers else QuantConfig()
    record = {**method, "bits": first.bits, "group_size": first.group_size, "symmetric": first.symmetric,
              "layers": record_layers, "weights_bytes": (target / WEIGHTS_FILE).stat().st_size}
    (target / QUANT_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
    return record


def load_quantized(path: str | Path, dtype: torch.dtype = torch.float32):
    """Rebuild a model saved by `save_quantized`, weights dequantized into `dtype`. Every
    parameter must come from the file (tied weights excepted): nothing is left random."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(path)
    record = json.loads((folder / QUANT_FILE).read_text())
    config = QuantConfig(record["bits"], record["group_size"], record["symmetric"])
    tensors = load_file(str(folder / WEIGHTS_FILE))
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=dtype)
    state = {}
    for name, layer in record["layers"].items():
        out_features, in_features = layer["shape"]
        codes = unpack(tensors.pop(f"{name}.qweight"), config.bits, out_features * in_features)
        qt = QuantizedTensor(codes.view(out_features, in_features), tensors.pop(f"{name}.scales").float(),
                             tensors.pop(f"{name}.zeros").float() if f"{name}.zeros" in tensors else None,
                             config)
        weight = dequantize(qt, dtype)
        state[f"{name}.weight"] = weight.t().contiguous() if layer["transposed"] else weight
    state.update({k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()})
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if _is_tied(model, k)}
    if set(missing) - tied or unexpected:
        raise ModelError(f"quantized model {str(folder)!r} does not match its config: missing "
                         f"{sorted(set(missing) - tied)[:2]}, unexpected {sorted(unexpected)[:2]}")
    model.tie_weights()
    return model.eval()


def _is_tied(model, key: str) -> bool:
    """Whether `key` is the output head tied to the input embeddings."""
    if not getattr(model.config, "tie_word_embeddings", False):
        return False
    output = model.get_output_embeddings()
    return output is not None and key.endswith("weight") and key.startswith(
        next((n for n, m in model.named_modules() if m is output), "\0"))
