"""Layer 3 (catalog): the `quantize` job kind's methods, declared (in registration order): rtn
(round-to-nearest, packed), gguf (a llama.cpp file), gptq (calibrated), torchao and bnb
(library-backed), with the values their specs accept (`RTN_BITS`, `GGUF_FORMATS`). Implemented
by `engine.compression.methods.quantize`, `.gptq` and `.library_quant`."""

from __future__ import annotations

from typing import Any, ClassVar

from engine.catalog.method_info import MethodInfo, register
from engine.errors import SpecError

# what the specs accept, importable without torch (the CLI validates specs without loading it)
RTN_BITS = (2, 3, 4, 8)
GGUF_FORMATS = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "f16", "f32")
CALIBRATION_FIELDS = ("calibration_data", "calibration_samples", "calibration_seq_len")


class QuantizeMethodInfo(MethodInfo):
    kind: ClassVar[str] = "quantize"
    # the product must be reloaded to be measured (True when the file is quantized at write
    # time rather than in memory: the in-memory model is then not what is stored)
    evaluate_reloaded: ClassVar[bool] = False

    def spec_fields(self) -> tuple[str, ...]:
        return self.fields + (CALIBRATION_FIELDS if self.needs_calibration_text else ())

    def name_suffix(self, spec: Any) -> str:
        return f"int{spec.bits}-g{spec.group_size}" + ("" if spec.symmetric else "-asym")


@register
class RoundToNearestInfo(QuantizeMethodInfo):
    """Group-wise round-to-nearest, packed on disk."""

    name = "rtn"
    title = "round-to-nearest (weight-only)"
    fields = ("bits", "group_size", "symmetric")

    def validate_spec(self, spec) -> None:
        if spec.bits not in RTN_BITS:
            raise SpecError(f"bits {spec.bits} is not one of {', '.join(map(str, RTN_BITS))} for rtn", "bits")


@register
class GGUFExportInfo(QuantizeMethodInfo):
    """A GGUF file at `gguf_type`, quantized as it is written."""

    name = "gguf"
    title = "GGUF file (llama.cpp)"
    evaluate_reloaded = True
    fields = ("gguf_type",)

    def validate_spec(self, spec) -> None:
        if spec.gguf_type not in GGUF_FORMATS:
            raise SpecError(f"gguf_type {spec.gguf_type!r} is unknown; choose from {', '.join(GGUF_FORMATS)}",
                            "gguf_type")

    def name_suffix(self, spec) -> str:
        return spec.gguf_type


@register
class GPTQInfo(RoundToNearestInfo):
    """GPTQ, saved like RTN."""

    name = "gptq"
    title = "GPTQ (calibrated, weight-only)"
    needs_calibration_text = True

    def validate_spec(self, spec) -> None:
        if spec.bits not in RTN_BITS:
            raise SpecError(f"bits {spec.bits} is not one of {', '.join(map(str, RTN_BITS))} for gptq", "bits")


class LibraryQuantizerInfo(QuantizeMethodInfo):
    """A quantize method backed by a transformers-integrated library (`package`)."""

    evaluate_reloaded = True        # the library's checkpoint, reloaded, is what is measured
    package: ClassVar[str] = ""
    bits_allowed: ClassVar[tuple[int, ...]] = (8, 4)

    def validate_spec(self, spec) -> None:
        if spec.bits not in self.bits_allowed:
            raise SpecError(f"bits {spec.bits} is not one of {', '.join(map(str, self.bits_allowed))} "
                            f"for {self.name}", "bits")


@register
class TorchAOInfo(LibraryQuantizerInfo):
    name = "torchao"
    title = "torchao weight-only int8/int4"
    package = "torchao"
    fields = ("bits", "group_size")

    def name_suffix(self, spec) -> str:
        return "int8" if spec.bits == 8 else f"int4-g{spec.group_size}"


@register
class BitsAndBytesInfo(LibraryQuantizerInfo):
    name = "bnb"
    title = "bitsandbytes int8 / NF4"
    package = "bitsandbytes"
    fields = ("bits",)

    def name_suffix(self, spec) -> str:
        return "int8" if spec.bits == 8 else "nf4"
