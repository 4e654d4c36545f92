"""Layer 5 (compression): methods of the `quantize` job kind (declared by
`engine.catalog.quantize_info`): what each does to the loaded model and how it writes
its product at its real size (packed integers, or a GGUF file).

`QuantizeMethod.apply` quantizes in place (the in-memory model afterwards computes what the
saved one will); `save` writes the product into a folder and returns a `QuantProduct`: where
the loadable model is, its format, bits per weight and on-disk bytes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.catalog.quantize_info import GGUFExportInfo, QuantizeMethodInfo, RoundToNearestInfo
from engine.compression.methods.base import CompressionMethod, MethodOutcome, MethodRun, register
from engine.errors import JobFailed, UnsupportedArchitecture


@dataclass(frozen=True)
class QuantProduct:
    """A saved quantized model: `folder` holds it; `gguf_file` names the file inside it when
    the model is a GGUF file; `format` ("rtn-packed", "gguf-q4_0", ...), stored `bits_per_weight`
    over the quantized tensors, and `disk_bytes` of the weights file."""

    folder: Path
    format: str
    bits_per_weight: float
    disk_bytes: int
    gguf_file: str | None = None
    details: dict = field(default_factory=dict)


class QuantizeMethod(QuantizeMethodInfo, CompressionMethod):
    """A method of the `quantize` job kind: it also saves its product."""

    def save(self, model: Any, tokenizer: Any, folder: Path, spec: Any, outcome: MethodOutcome,
             template: Path | None) -> QuantProduct:
        raise NotImplementedError


@register
class RoundToNearest(RoundToNearestInfo, QuantizeMethod):
    """Group-wise round-to-nearest (`engine.formats.rtn`), packed on disk."""

    def check_model(self, spec, model, model_name: str) -> None:
        from engine.formats.architecture import block_linears  # on use: torch
        try:
            block_linears(model)
        except UnsupportedArchitecture as exc:
            raise JobFailed(f"rtn quantization of {model_name}: {exc}") from None

    def apply(self, run: MethodRun) -> MethodOutcome:
        from engine.compression.quant.apply import bits_per_weight, rtn_quantize_model  # on use: torch
        from engine.formats.rtn import QuantConfig  # on use: torch
        spec = run.spec
        run.reporter.progress(0, 1, f"rtn {spec.bits}-bit quantization", phase="quantizing")
        layers, transposed = rtn_quantize_model(run.model, QuantConfig(spec.bits, spec.group_size, spec.symmetric))
        return MethodOutcome(details={"layers": layers, "transposed": transposed,
                                      "bits_per_weight": bits_per_weight(layers)})

    def save(self, model, tokenizer, folder, spec, outcome, template) -> QuantProduct:
        from engine.formats.packed import WEIGHTS_FILE, save_quantized  # on use: torch, numpy
        record = save_quantized(model, tokenizer, folder, outcome.details["layers"],
                                {"method": self.name}, outcome.details["transposed"],
                                rest_dtype=outcome.details.get("rest_dtype"))
        return QuantProduct(folder, "rtn-packed", round(outcome.details["bits_per_weight"], 3),
                            (folder / WEIGHTS_FILE).stat().st_size,
                            details={"quantized_layers": len(record["layers"])})


@register
class GGUFExport(GGUFExportInfo, QuantizeMethod):
    """A GGUF file at `gguf_type` (`engine.compression.quant.gguf_export`), quantized as it is
    written; the registered model is the file, measured as llama.cpp users would load it."""

    def check_model(self, spec, model, model_name: str) -> None:
        from engine.compression.quant.gguf_export import SUPPORTED_MODEL_TYPES  # on use: torch, numpy
        if model.config.model_type not in SUPPORTED_MODEL_TYPES:
            raise JobFailed(f"GGUF export of {model_name}: supports {', '.join(SUPPORTED_MODEL_TYPES)} "
                            f"models, not {model.config.model_type!r}")

    def apply(self, run: MethodRun) -> MethodOutcome:
        return MethodOutcome()          # quantized while the file is written

    def save(self, model, tokenizer, folder, spec, outcome, template) -> QuantProduct:
        from engine.compression.quant.gguf_export import export_gguf  # on use: torch, numpy
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{folder.name.removesuffix('.partial')}.gguf"    # the final folder's name
        written = export_gguf(model, tokenizer, path, spec.gguf_type, template)
        weights = sum(p.numel() for p in model.parameters())
        return QuantProduct(folder, f"gguf-{spec.gguf_type}", round(8 * written["bytes"] / weights, 3),
                            written["bytes"], gguf_file=path.name,
                            details={"tensors": written["tensors"], "quantized_tensors": written["quantized"]})
