"""Quantization jobs on tiny GPT-2 and Llama models: RTN codes, packing and sizes, the packed
model reloading bit-identically, int8 close to its parent, a GGUF file that reads back with
gguf.GGUFReader and loads through the registry, and quantized products through the suites."""

from __future__ import annotations

import json
import math

import pytest
import torch

from engine import queue
from engine.formats.packed import pack, unpack
from engine.formats.rtn import QuantConfig, dequantize, quantize
from engine.specs import EvalSpec, QuantizeSpec, SpecError
from engine.worker import Worker


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_rtn_codes_scales_and_packing_by_definition(bits, symmetric):
    torch.manual_seed(bits)
    weight = torch.randn(6, 40)
    qt = quantize(weight, QuantConfig(bits, 16, symmetric))
    assert qt.codes.dtype == torch.uint8 and int(qt.codes.max()) < 2 ** bits
    assert qt.scales.shape == (6, 3)                       # groups of 16, 16, 8 inputs
    # each weight lands on its group's grid point nearest to it (RTN), within half a step
    restored = dequantize(qt)
    step = qt.scales.repeat_interleave(16, dim=1)[:, :40]
    inside = (weight - restored).abs() <= step / 2 + 1e-6
    if symmetric:          # values beyond the grid's top (qmax * scale) clip: allow those
        qmax = 2 ** (bits - 1) - 1
        inside |= weight.abs() >= qmax * step - 1e-6
    assert inside.all()
    # b-bit packing: ceil(n * b / 8) bytes, and back
    packed = pack(qt.codes, bits)
    assert packed.numel() == math.ceil(qt.codes.numel() * bits / 8)
    assert torch.equal(unpack(packed, bits, qt.codes.numel()).view_as(qt.codes), qt.codes)


def test_an_all_zero_group_stays_zero():
    weight = torch.zeros(2, 8)
    assert torch.equal(dequantize(quantize(weight, QuantConfig(4, 4, False))), weight)


def test_bad_quantize_requests_are_refused_naming_the_field():
    with pytest.raises(SpecError) as err:
        QuantizeSpec(bits=5)
    assert err.value.field == "bits"
    with pytest.raises(SpecError) as err:
        QuantizeSpec(method="gguf", gguf_type="q4_k")
    assert err.value.field == "gguf_type" and "q4_0" in str(err.value)
    with pytest.raises(SpecError) as err:
        QuantizeSpec(method="awq9")
    assert err.value.field == "method" and "rtn" in str(err.value)


def _logits(path: str, gguf_file: str | None = None) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    from engine.compression.model_writer import load_saved
    from pathlib import Path
    model = (AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf_file, dtype=torch.float32)
             if gguf_file else load_saved(Path(path))).eval()
    with torch.no_grad():
        return model(torch.arange(1, 25)[None, :] % model.config.vocab_size).logits


def test_quantize_jobs_store_real_sizes_and_reload_through_the_registry(home, store, tiny_gpt2, tiny_llama):
    import gguf
    jobs = {"gpt2-int8": queue.submit(store, QuantizeSpec(model=str(tiny_gpt2), bits=8, group_size=32)),
            "llama-int4": queue.submit(store, QuantizeSpec(model=str(tiny_llama), bits=4, group_size=32,
                                                           symmetric=False)),
            "llama-q4_0": queue.submit(store, QuantizeSpec(model=str(tiny_llama), method="gguf", gguf_type="q4_0")),
            "gpt2-gguf": queue.submit(store, QuantizeSpec(model=str(tiny_gpt2), method="gguf"))}
    Worker(home, once=True, idle_exit_s=None).run()
    results = {k: queue.job(store, j) for k, j in jobs.items()}
    assert results["gpt2-gguf"]["status"] == "failed" and "supports llama" in results["gpt2-gguf"]["error"]
    for key in ("gpt2-int8", "llama-int4", "llama-q4_0"):
        assert results[key]["status"] == "done", results[key]["error"]
    out = {k: json.loads(results[k]["result"]) for k in ("gpt2-int8", "llama-int4", "llama-q4_0")}
    # bits per weight: codes plus a float16 scale per group of 32 (and an 8-bit zero point)
    assert out["gpt2-int8"]["bits_per_weight"] == pytest.approx(8 + 16 / 32)
    assert out["llama-int4"]["bits_per_weight"] == pytest.approx(4 + 24 / 32)
    for key, result in out.items():
        model = store.model(result["model_id"])
        assert model["method"] in ("rtn", "gguf") and model["parent_id"] == result["parent_model_id"]
        # stored at real size (embeddings, norms and biases stay in float32 in these tiny models)
        assert result["weights_bytes"] < result["dense_bytes"] / 2
        assert model["size_bytes"] < 0.6 * result["dense_bytes"]
        assert json.loads(model["extra"])["quantization"]["format"] == result["format"]
    # int8 stays close to its parent: small logit differences, perplexity-like CE ratio ~ 1
    parent, int8 = _logits(str(tiny_gpt2)), _logits(out["gpt2-int8"]["path"])
    assert float((parent - int8).abs().max()) < 0.02
    ids = torch.arange(1, 25)[None, :] % parent.shape[-1]
    ce = [torch.nn.functional.cross_entropy(lg[0, :-1], ids[0, 1:]).item() for lg in (parent, int8)]
    assert math.exp(ce[1]) / math.exp(ce[0]) == pytest.approx(1.0, abs=0.01)
    # the GGUF file is a real GGUF: gguf's reader sees Q4_0 tensors, and it loads via the registry
    gguf_path = out["llama-q4_0"]["path"]
    reader = gguf.GGUFReader(gguf_path)
    types = {t.tensor_type.name for t in reader.tensors}
    assert "Q4_0" in types and reader.fields["general.architecture"].parts[-1].tobytes() == b"llama"
    eval_job = queue.submit(store, EvalSpec(model=f"model:{out['llama-q4_0']['model_id']}", suite="toxicity",
                                            data="builtin", scorer="profanity", max_prompts=4,
                                            samples_per_prompt=2, max_new_tokens=4, bootstrap_samples=100))
    crows_job = queue.submit(store, EvalSpec(model=f"job:{jobs['llama-int4']}", suite="crows_pairs",
                                             data="builtin", max_prompts=4, bootstrap_samples=100))
    Worker(home, once=True, idle_exit_s=None).run()
    for job in (eval_job, crows_job):
        assert queue.job(store, job)["status"] == "done", queue.job(store, job)["error"]


def test_a_study_quantizes_and_reports_the_product(home, store, tiny_llama, tmp_path):
    from engine.report import build_report
    from engine.study import submit_study
    from engine.study_plan import load_study
    study = tmp_path / "q.toml"
    study.write_text(f'name = "q"\nteacher = "{tiny_llama}"\n\n[[quantize]]\nlabel = "int4"\nmethod = "rtn"\n'
                     f'bits = 4\ngroup_size = 32\n\n[[quantize]]\nlabel = "gguf"\nmethod = "gguf"\n'
                     f'gguf_type = ["q8_0", "q4_1"]\n\n[[eval]]\nsuite = "crows_pairs"\ndata = "builtin"\n'
                     f'max_prompts = 6\nbootstrap_samples = 100\n')
    plan = load_study(str(study))
    assert sorted(plan.models) == ["gguf(gguf_type=q4_1)", "gguf(gguf_type=q8_0)", "int4", "teacher"]
    submit_study(store, plan)
    Worker(home, once=True, idle_exit_s=None).run()
    report = build_report(store, "q", output_dir=tmp_path / "report")
    assert report.complete, report.problems
    rows = {row[0]: row for row in report.table_rows}
    assert rows["int4"][1] == "quantize" and set(rows) == set(plan.models)
    assert {s["model"] for s in report.significance} == {"int4", "gguf(gguf_type=q8_0)", "gguf(gguf_type=q4_1)"}
