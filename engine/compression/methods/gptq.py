"""GPTQ (Frantar et al., 2023): weight-only quantization of the block linear layers with
Hessian-based error compensation on calibration text, block by block; bits 2/3/4/8, groups of
`group_size` inputs, symmetric or with a zero point, act-order off, dampening 0.01. Its codes,
scales and zero points are RTN's `QuantizedTensor`, so it is stored in (and reloaded from) the
RTN packed format. The computation is `engine.compression.gptq_solver`, which also says why it is
implemented from the paper rather than taken from llmcompressor or gptqmodel."""

from __future__ import annotations

from engine.catalog.quantize_info import GPTQInfo
from engine.compression.methods.base import MethodOutcome, MethodRun, register
from engine.compression.methods.quantize import RoundToNearest
from engine.errors import JobFailed, UnsupportedArchitecture


@register
class GPTQ(GPTQInfo, RoundToNearest):
    """GPTQ, saved like RTN (`RoundToNearest.save` records `method: gptq`)."""

    def check_model(self, spec, model, model_name: str) -> None:
        from engine.formats.architecture import block_linears, max_positions  # on use: torch
        try:
            block_linears(model)
        except UnsupportedArchitecture as exc:
            raise JobFailed(f"gptq quantization of {model_name}: {exc}") from None
        limit = max_positions(model)
        if limit is not None and spec.calibration_seq_len > limit:
            raise JobFailed(f"calibration_seq_len {spec.calibration_seq_len} is longer than "
                            f"{model_name} accepts ({limit} positions)")

    def apply(self, run: MethodRun) -> MethodOutcome:
        from engine.compression.gptq_solver import BLOCK_SIZE, PERCDAMP, gptq_quantize_model  # on use: torch
        from engine.compression.quant.apply import bits_per_weight  # on use: torch
        from engine.formats.rtn import QuantConfig  # on use: torch
        spec, reporter = run.spec, run.reporter

        def on_block(done: int, total: int) -> None:
            reporter.check_cancelled()
            reporter.progress(done, total, f"gptq {spec.bits}-bit: block {done}/{total}", phase="quantizing")

        config = QuantConfig(spec.bits, spec.group_size, spec.symmetric)
        layers, transposed = gptq_quantize_model(run.model, run.calibration, config,
                                                 device=run.device, on_block=on_block)
        return MethodOutcome(details={"layers": layers, "transposed": transposed,
                                      "bits_per_weight": bits_per_weight(layers),
                                      "block_size": BLOCK_SIZE, "percdamp": PERCDAMP, "act_order": False})
