"""The compression method registry: one module per method, each registering a
`CompressionMethod` (see `base`). `prune` methods: magnitude, wanda, sparsegpt, heads, layers
(depth pruning by Block Influence); `quantize` methods: rtn, gguf (`quantize`), gptq, torchao and bnb (`library_quant`).

Importing this package does not import torch: `engine.specs` validates with it."""

from engine.compression.methods.base import (CompressionMethod, MethodOutcome, MethodRun,
                                             ParamCounts, PruneMethod, Reporter, get_method,
                                             method_names, methods, register)
from engine.compression.methods import magnitude, wanda, heads, quantize  # noqa: F401,E402 - register
from engine.compression.methods import sparsegpt, layers, gptq, library_quant  # noqa: F401,E402 - register

__all__ = ["CompressionMethod", "MethodOutcome", "MethodRun", "ParamCounts", "PruneMethod",
           "Reporter", "get_method", "method_names", "methods", "register"]
