"""Weight quantization: the math (`rtn`), the packed on-disk format (`packed`) and GGUF export
(`gguf_export`). The `quantize` job kind's methods call these."""

# what the specs accept, importable without torch (declared with the methods in the catalog)
from engine.catalog.quantize_info import GGUF_FORMATS, RTN_BITS  # noqa: F401,E402 - re-exported
