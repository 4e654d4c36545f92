"""Weight quantization jobs' parts that are not a model format: GGUF export (`gguf_export`)
and applying a quantizer to a model's linear layers (`apply`). The math and the packed folder
format are model formats (`engine.formats.rtn`, `engine.formats.packed`)."""

# what the specs accept, importable without torch (declared with the methods in the catalog)
from engine.catalog.quantize_info import GGUF_FORMATS, RTN_BITS  # noqa: F401,E402 - re-exported
