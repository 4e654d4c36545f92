"""Weight quantization: the math (`rtn`), the packed on-disk format (`packed`) and GGUF export
(`gguf_export`). The `quantize` job kind's methods call these."""

# what the specs accept, importable without torch (the CLI validates specs without loading it)
RTN_BITS = (2, 3, 4, 8)
GGUF_FORMATS = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "f16", "f32")
