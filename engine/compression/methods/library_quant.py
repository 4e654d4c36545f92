"""Quantize methods that hand the work to a maintained library through transformers'
quantizer integration (`engine.formats.hf_quantized`): `torchao` (weight-only int8,
or int4 in groups, on CPU and GPU) and `bnb` (bitsandbytes LLM.int8() and NF4; bitsandbytes
0.50 also runs them on CPU). The product is the library's own checkpoint, loaded back by
`from_pretrained`, so what is evaluated is what a user of the library deploys."""

from __future__ import annotations

from typing import Any

from engine.catalog.quantize_info import BitsAndBytesInfo, LibraryQuantizerInfo, TorchAOInfo
from engine.compression.methods.base import MethodOutcome, MethodRun, register
from engine.compression.methods.quantize import QuantProduct, QuantizeMethod
from engine.errors import JobFailed, UnsupportedArchitecture


class LibraryQuantizer(LibraryQuantizerInfo, QuantizeMethod):
    """A quantize method backed by a transformers-integrated library (`package`)."""

    def check_model(self, spec, model, model_name: str) -> None:
        import importlib.util

        from engine.formats.architecture import block_linears  # on use: torch
        if importlib.util.find_spec(self.package) is None:
            raise JobFailed(f"{self.name} quantization needs the {self.package} package: "
                            f"pip install 'compfair[quant]'")
        try:
            block_linears(model)
        except UnsupportedArchitecture as exc:
            raise JobFailed(f"{self.name} quantization of {model_name}: {exc}") from None

    def quantization_config(self, spec) -> Any:
        raise NotImplementedError

    def apply(self, run: MethodRun) -> MethodOutcome:
        return MethodOutcome()          # quantized while the checkpoint is written

    def save(self, model, tokenizer, folder, spec, outcome, template) -> QuantProduct:
        from engine.formats.hf_quantized import layer_weight_counts, write_quantized  # on use: torch
        written = write_quantized(model, tokenizer, folder, self.quantization_config(spec),
                                  layer_weight_counts(model))
        return QuantProduct(folder, self.format_name(spec), written.bits_per_weight, written.disk_bytes,
                            details={"quantized_layers": written.quantized_layers,
                                     "library": self.package, "library_version": _version(self.package)})

    def format_name(self, spec) -> str:
        return f"{self.name}-{self.name_suffix(spec)}"


@register
class TorchAOWeightOnly(TorchAOInfo, LibraryQuantizer):
    """torchao weight-only quantization: int8 per output channel, or int4 per group of
    `group_size` inputs (torchao's CPU layout stores the 4-bit values in int8 containers, so
    the file is about the int8 size: recorded as measured, bits per weight included)."""

    def check_model(self, spec, model, model_name: str) -> None:
        from engine.formats.hf_quantized import has_conv1d_layers  # on use: torch
        super().check_model(spec, model, model_name)
        if has_conv1d_layers(model):
            raise JobFailed(f"torchao quantization of {model_name}: its blocks use GPT-2-style Conv1D "
                            "layers, which torchao does not convert; use method rtn, gptq or bnb")

    def quantization_config(self, spec) -> Any:
        from engine.formats.hf_quantized import torchao_config  # on use: torch
        return torchao_config(spec.bits, spec.group_size)


@register
class BitsAndBytes(BitsAndBytesInfo, LibraryQuantizer):
    """bitsandbytes: LLM.int8() (8 bits: int8 codes with per-row scales, outlier features in
    16-bit at run time) or NF4 (4 bits: normal-float codes in blocks of 64 with an absmax
    each)."""

    def quantization_config(self, spec) -> Any:
        from engine.formats.hf_quantized import bnb_config  # on use: torch
        return bnb_config(spec.bits)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
