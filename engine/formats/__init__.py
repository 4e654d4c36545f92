"""The model formats compfair writes and reads back (layer 4, below the model loader that
reads them and the compression jobs that write them): `architecture` (where a causal LM keeps
its blocks, attention and linear layers), `head_pruned` (attention heads physically removed,
with per-layer head counts a config cannot express), `rtn` and `packed` (round-to-nearest
integer weights and their packed folder), `hf_quantized` (layers quantized by a library:
torchao, bitsandbytes)."""
