"""Where a causal LM keeps its transformer blocks and their linear layers.

Compression code asks this module instead of hard-coding paths: GPT-2 keeps its blocks at
`transformer.h` and uses `Conv1D` (weight `[in, out]`), Llama-style models (SmolLM2, Qwen2,
Mistral) keep them at `model.layers` and use `nn.Linear` (weight `[out, in]`). Only linear
layers *inside* the blocks are compression targets; embeddings and the (tied) `lm_head` live
outside the blocks and are never touched."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn
from engine.errors import UnsupportedArchitecture

# Known block-list paths, tried before the generic search.
BLOCK_PATHS = ("transformer.h", "model.layers", "gpt_neox.layers", "model.decoder.layers",
               "transformer.blocks", "transformer.layers")


def architecture_name(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "architectures", None):
        return config.architectures[0]
    return type(model).__name__


def num_layers(model: nn.Module) -> int:
    """The number of transformer blocks the config declares (GPT-2 maps it to `n_layer`)."""
    value = getattr(model.config, "num_hidden_layers", None)
    if value is None:
        raise UnsupportedArchitecture(f"{architecture_name(model)}: its config declares no "
                                      "num_hidden_layers / n_layer")
    return int(value)


def _get(model: nn.Module, dotted: str) -> nn.Module | None:
    module: nn.Module | None = model
    for part in dotted.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(dotted path, ModuleList) of the model's transformer blocks.

    Tries the known paths first, then the shortest-named ModuleList whose length equals the
    config's layer count."""
    expected = num_layers(model)
    for path in BLOCK_PATHS:
        module = _get(model, path)
        if isinstance(module, nn.ModuleList) and len(module) == expected:
            return path, module
    candidates = [(name, m) for name, m in model.named_modules()
                  if isinstance(m, nn.ModuleList) and len(m) == expected and name]
    if not candidates:
        raise UnsupportedArchitecture(
            f"{architecture_name(model)}: cannot find its list of {expected} transformer blocks "
            "(supported: GPT-2 style transformer.h, Llama style model.layers)")
    return min(candidates, key=lambda item: item[0].count("."))


def set_block_list(model: nn.Module, path: str, blocks: nn.ModuleList) -> None:
    """Replace the ModuleList at `path` (as returned by `block_list`)."""
    parent_path, _, attr = path.rpartition(".")
    parent = _get(model, parent_path) if parent_path else model
    setattr(parent, attr, blocks)


def is_conv1d(module: nn.Module) -> bool:
    """HF's GPT-2 `Conv1D`: a linear layer whose weight is stored `[in, out]`."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "weight")


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module)


def weight_out_in(module: nn.Module) -> torch.Tensor:
    """The weight as an `[out, in]` view (a view: in-place edits reach the parameter)."""
    weight = module.weight.data
    return weight.t() if is_conv1d(module) else weight


def in_features(module: nn.Module) -> int:
    return weight_out_in(module).shape[1]


def block_linears(model: nn.Module) -> dict[str, nn.Module]:
    """Every linear layer inside the transformer blocks, by its full module name, in order.

    Embeddings, the final norm and `lm_head` are outside the blocks and so never included."""
    path, blocks = block_list(model)
    found: dict[str, nn.Module] = {}
    for index, block in enumerate(blocks):
        for name, module in block.named_modules():
            if is_linear(module):
                found[f"{path}.{index}.{name}"] = module
    if not found:
        raise UnsupportedArchitecture(f"{architecture_name(model)}: its blocks hold no "
                                      "nn.Linear or Conv1D layers to prune")
    return found


def linears_of_block(block: nn.Module) -> dict[str, nn.Module]:
    """The linear layers of one block, by their name inside the block."""
    return {name: m for name, m in block.named_modules() if is_linear(m)}


def iter_block_linears(model: nn.Module) -> Iterator[tuple[int, str, nn.Module]]:
    """(block index, name inside the block, module) for every linear layer in the blocks."""
    _, blocks = block_list(model)
    for index, block in enumerate(blocks):
        for name, module in linears_of_block(block).items():
            yield index, name, module


def max_positions(model: nn.Module) -> int | None:
    """The longest sequence the model accepts, when its config says."""
    return getattr(model.config, "max_position_embeddings", None)
