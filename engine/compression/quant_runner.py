"""The `quantize` job: load the model, quantize it with its registered method, write the
product at its real size (packed integers or a GGUF file), check that it loads back and what it
computes, and register it with its lineage, format, bits per weight and sizes."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from engine.formats.architecture import architecture_name
from engine.compression.methods import MethodRun, get_method
from engine.compression.model_writer import (model_folder, register_derived, verify_round_trip,
                                             write_atomically, load_saved, parent_storage_dtype)
from engine.compression.textdata import parse_source
from engine.context import JobContext
from engine.errors import JobFailed
from engine.model_loader import ModelSource, count_parameters, dequantise_gguf
from engine.specs import QuantizeSpec
from engine.compression.runner import _calibration, _model_name
from engine.store import loads


def _template(ctx: JobContext, loaded) -> Path | None:
    """The GGUF file the model descends from (its tokenizer's pre-tokenizer and chat template
    are copied into an exported GGUF), or None."""
    if loaded.source.gguf_file:
        return Path(loaded.source.load_path) / loaded.source.gguf_file
    for row in ctx.store.lineage(loaded.model_id) if loaded.model_id else []:
        gguf_file = (loads(row.get("extra"), {}) or {}).get("gguf_file")
        if gguf_file and row.get("path"):
            return Path(row["path"]) / gguf_file
    return None


def _load_product(ctx: JobContext, product, device: torch.device):
    """The product as the registry loads it (a GGUF file is dequantised once into the
    registry's cache, which later eval jobs reuse); JobFailed when it does not load."""
    try:
        folder = dequantise_gguf(ctx.home, str(product.folder), product.gguf_file) \
            if product.gguf_file else product.folder
        return load_saved(Path(folder)).to(device).eval()
    except Exception as exc:  # noqa: BLE001 - any load failure fails the job with its reason
        raise JobFailed(f"the quantized model at {product.folder} does not load back: "
                        f"{(str(exc).splitlines() or [type(exc).__name__])[0][:200]}") from exc


@torch.no_grad()
def _probe_logits(model) -> torch.Tensor:
    """Logits on a fixed probe sequence: how far the product moved from its parent."""
    ids = torch.arange(1, 17, device=next(model.parameters()).device)[None, :] % model.config.vocab_size
    return model(input_ids=ids, use_cache=False).logits.float()


def _logit_difference(parent_logits: torch.Tensor, product, where: Path) -> float:
    """Max |logit difference| between the parent and the product on the probe; JobFailed when
    the product computes non-finite logits."""
    got = _probe_logits(product)
    if not torch.isfinite(got).all():
        raise JobFailed(f"the quantized model at {where} computes non-finite logits")
    return float((parent_logits - got).abs().max())


def _keep_parent_precision(ctx: JobContext, parent_id: int | None, model, method, outcome):
    """For a packed product (rtn, gptq) of a half-precision parent: the tensors left
    unquantized (embeddings, norms) are stored in that precision, not float32, and rounded to
    it in memory too, so the reload check compares like with like. Returns the dtype or None."""
    if "layers" not in outcome.details:         # not a packed product (GGUF, library checkpoints)
        return None
    half = parent_storage_dtype(ctx, parent_id)
    if half is None:
        return None
    quantized = {f"{name}.weight" for name in outcome.details["layers"]}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name not in quantized and param.is_floating_point():
                param.data = param.data.to(half).to(param.dtype)
    outcome.details["rest_dtype"] = half
    return half


def run_quantize(ctx: JobContext) -> dict[str, Any]:
    """Quantize `spec.model` with its registered method; returns the registered model's id."""
    spec: QuantizeSpec = ctx.spec
    method = get_method(spec.method, spec.kind)
    loaded = ctx.load_model(spec.model, fresh=True)
    model, device = loaded.model, loaded.device
    name = _model_name(ctx, loaded)
    method.check_model(spec, model, name)
    params, nonzero_before = count_parameters(model)
    calibration = _calibration(ctx, spec, parse_source(spec.calibration_data), loaded) \
        if method.needs_calibration_text else None
    model.eval()
    parent_logits = _probe_logits(model)
    dense_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    started = time.time()
    outcome = method.apply(MethodRun(ctx, model, spec, device, calibration))
    quant_s = time.time() - started
    model.eval()
    saved_dtype = _keep_parent_precision(ctx, loaded.model_id, model, method, outcome)
    target = model_folder(ctx, spec.name or f"{name}-{method.name}-{method.name_suffix(spec)}")
    template = _template(ctx, loaded)
    products = []
    ctx.ensure_lease()                # a worker that lost the job writes no folder (fencing)
    write_atomically(target, lambda folder: products.append(
        method.save(model, loaded.tokenizer, folder, spec, outcome, template)), ctx.ensure_lease)
    product = dataclasses.replace(products[0], folder=target)
    if method.evaluate_reloaded:       # measured as the file: register what it computes
        model = _load_product(ctx, product, device)
    else:
        verify_round_trip(model, target, device)      # the packed file computes the same logits
    difference = _logit_difference(parent_logits, model, target)
    quantization = {"format": product.format, "bits_per_weight": product.bits_per_weight,
                    "weights_bytes": product.disk_bytes, "dense_bytes": dense_bytes,
                    "max_logit_difference_vs_parent": round(difference, 6), **product.details}
    ctx.log(f"{method.name} quantization done in {quant_s:.1f} s: {product.format}, "
            f"{product.bits_per_weight:.2f} bits/weight, {product.disk_bytes:,} bytes on disk")
    source = ModelSource(source=str(target / product.gguf_file) if product.gguf_file else str(target),
                         origin="derived", load_path=str(target), gguf_file=product.gguf_file)
    spec_params = {k: v for k, v in spec.to_dict().items() if k not in ("label", "device", "dtype")}
    extra = {"architecture": architecture_name(model), "quantize_wall_s": round(quant_s, 2),
             "quantization": quantization}
    if saved_dtype is not None:
        extra["saved_dtype"] = str(saved_dtype).replace("torch.", "")
    model_id = register_derived(ctx, model, loaded.tokenizer, source, device=device,
                                parent_id=loaded.model_id, method=spec.method, method_params=spec_params,
                                extra=extra)
    return {"model_id": model_id, "path": str(source.source), "method": spec.method,
            "parent_model_id": loaded.model_id, "params": params, "nonzero_before": nonzero_before,
            **quantization}
