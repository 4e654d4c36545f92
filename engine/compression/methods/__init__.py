"""Layer 5 (compression): the compression method implementations, one module per method, each
subclassing its declaration in `engine.catalog` (`prune_info`, `quantize_info`) and registering
a `CompressionMethod` (see `base`) in the catalog's registry under the same name. `prune`
methods: magnitude, wanda, sparsegpt, heads, layers (depth pruning by Block Influence);
`quantize` methods: rtn, gguf (`quantize`), gptq, torchao and bnb (`library_quant`).

Importing this package does not import torch; `engine.specs` validates with the declarations
alone (`engine.catalog`)."""

from engine.compression.methods.base import (CompressionMethod, MethodOutcome, MethodRun,
                                             ParamCounts, PruneMethod, Reporter, get_method,
                                             method_names, methods, register)
from engine.compression.methods import magnitude, wanda, heads, quantize  # noqa: F401,E402 - register
from engine.compression.methods import sparsegpt, layers, gptq, library_quant  # noqa: F401,E402 - register

__all__ = ["CompressionMethod", "MethodOutcome", "MethodRun", "ParamCounts", "PruneMethod",
           "Reporter", "get_method", "method_names", "methods", "register"]
