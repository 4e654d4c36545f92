"""Weight quantization: the math (`rtn`), the packed on-disk format (`packed`) and GGUF export
(`gguf_export`). The `quantize` job kind's methods call these."""
