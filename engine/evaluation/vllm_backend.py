"""Optional generation backend on vLLM (`EvalSpec.backend = "vllm"`), for CUDA machines
where vLLM is installed. Off by default; the stored samples have the same format and keys as
the transformers sampler's, so runs from either backend compare, resume and report alike.

What stays the same as the transformers sampler (`generation.Sampler`): the prompt token ids
(its `encode`: trailing whitespace stripped, special tokens added, long prompts keep their
end), the rows and their order, nucleus sampling with `top_p` and `temperature`, and
per-sample randomness: sample s of item i gets its own seed `row_seed(seed, i, s)`, so what a
sample generates does not depend on which other requests share vLLM's batch, and a resumed job
generates what an uninterrupted one would have. What differs: vLLM's kernels and random
streams, so a sample is not token-identical to the transformers backend's; the two are
compared as distributions (the run's settings record the backend, and `compfair compare`
flags runs whose settings differ).

vLLM schedules its own batches (continuous batching, paged KV cache); compfair hands it
`ROWS_PER_CALL` requests at a time so samples are stored, and cancellation checked, as the job
goes. The engine is kept across jobs on the same model folder and dtype, like loaded models."""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, Iterator, Mapping, Sequence

from engine.evaluation.sampler import (GeneratedBatch, Row, Sampler, StepCallback, plan_rows,
                                          sample_key)
from engine.errors import BackendUnavailable, first_line

log = logging.getLogger(__name__)

ROWS_PER_CALL = 4096
GPU_MEMORY_SHARE = 0.85
_engines: dict[tuple[str, str], Any] = {}


def row_seed(seed: int, item: int, sample: int) -> int:
    """The vLLM request seed of sample `sample` of item `item`: a 63-bit integer derived
    from (seed, item, sample) alone."""
    digest = hashlib.blake2b(f"{seed}:{item}:{sample}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def check_available(device: str) -> None:
    """Raise BackendUnavailable unless vLLM is importable and `device` can be a CUDA GPU."""
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(
            "backend 'vllm' needs the vllm package on a CUDA machine (pip install vllm); "
            f"it cannot be imported here: {first_line(exc)}") from exc
    import torch

    if device not in ("auto", "cuda") and not device.startswith("cuda:") or not torch.cuda.is_available():
        raise BackendUnavailable(f"backend 'vllm' needs a CUDA GPU; device is {device!r} and "
                                 f"CUDA is {'available' if torch.cuda.is_available() else 'not available'}")


def tensor_parallel_size(visible_gpus: int, attention_heads: int | None) -> int:
    """How many GPUs vLLM splits one model over: the most of the visible GPUs that divides the
    model's attention heads (vLLM's requirement), at least 1. A worker pinned to one device
    (`worker --devices ...`) sees one GPU and gets 1; an unpinned worker on an N-GPU box uses
    tensor parallelism over all N where the heads allow it."""
    heads = attention_heads or 1
    return max([d for d in range(1, max(1, visible_gpus) + 1) if heads % d == 0], default=1)


def _attention_heads(model_path: str) -> int | None:
    """The model's attention heads from its config (None when it cannot be read)."""
    try:
        from transformers import AutoConfig
        config = AutoConfig.from_pretrained(model_path)
    except Exception:  # noqa: BLE001 - vLLM reports an unreadable model itself
        return None
    return getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)


def engine_for(model_path: str, dtype: str, seed: int):
    """A vLLM engine for the model folder, kept for later jobs (one at a time: a new folder
    replaces the old engine, since each takes GPU_MEMORY_SHARE of the GPU); spread over the
    visible GPUs by tensor parallelism (`tensor_parallel_size`)."""
    key = (model_path, dtype)
    if key not in _engines:
        import torch
        from vllm import LLM

        _engines.clear()
        parallel = tensor_parallel_size(torch.cuda.device_count(), _attention_heads(model_path))
        log.info("starting vLLM on %s (%s) over %d GPU(s)", model_path, dtype, parallel)
        _engines[key] = LLM(model=model_path, tokenizer=model_path, dtype=dtype, seed=seed,
                            gpu_memory_utilization=GPU_MEMORY_SHARE,
                            tensor_parallel_size=parallel)
    return _engines[key]


def requests_for(rows: Sequence[Row], token_ids: Mapping[int, list[int]], *, top_p: float,
                 temperature: float, max_new_tokens: int, seed: int) -> list[tuple[dict, dict]]:
    """(prompt, sampling parameters) of each row, as plain dicts: the prompt is given as token
    ids, so vLLM sees exactly the tokens the transformers sampler would."""
    return [({"prompt_token_ids": list(token_ids[item])},
             {"n": 1, "top_p": top_p, "temperature": temperature,     # top-k left off: disabled
              "max_tokens": max_new_tokens, "seed": row_seed(seed, item, sample),
              "skip_special_tokens": True})
            for item, sample in rows]


def batch_from_outputs(rows: Sequence[Row], outputs: Sequence[Any], seconds: float) -> GeneratedBatch:
    """A GeneratedBatch from vLLM's RequestOutputs (same order as `rows`): each row's first
    completion's text, and its generated token count."""
    if len(outputs) != len(rows):
        raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(rows)} requests")
    texts = [out.outputs[0].text for out in outputs]
    new_tokens = sum(len(out.outputs[0].token_ids) for out in outputs)
    return GeneratedBatch(list(rows), texts, new_tokens, seconds)


class VllmSampler:
    """The `Sampler` interface (stream, count_missing, working_rows, peak_memory) on vLLM.

    `reference` is a transformers Sampler on the same tokenizer, used for prompt encoding and
    row planning only (so both backends agree on both)."""

    def __init__(self, reference: Sampler, model_path: str, dtype: str):
        self.reference, self.settings = reference, reference.settings
        self.model_path, self.dtype = model_path, dtype
        self.working_rows = ROWS_PER_CALL
        self.peak_memory = 0

    def count_missing(self, prompts: Mapping[int, str], done_keys: set[str]) -> int:
        return self.reference.count_missing(prompts, done_keys)

    def stream(self, prompts: Mapping[int, str], done_keys: set[str] = frozenset(),
               on_step: StepCallback | None = None) -> Iterator[GeneratedBatch]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        settings = self.settings
        llm = engine_for(self.model_path, self.dtype, settings.seed)
        token_ids = self.reference.encode(prompts)
        lengths = {item: len(ids) for item, ids in token_ids.items()}
        rows = [row for row in plan_rows(lengths, settings.samples_per_prompt)
                if sample_key(*row) not in done_keys]
        for start in range(0, len(rows), ROWS_PER_CALL):
            chunk = rows[start:start + ROWS_PER_CALL]
            requests = requests_for(chunk, token_ids, top_p=settings.top_p,
                                    temperature=settings.temperature,
                                    max_new_tokens=settings.max_new_tokens, seed=settings.seed)
            began = time.perf_counter()
            outputs = llm.generate([TokensPrompt(**prompt) for prompt, _ in requests],
                                   [SamplingParams(**params) for _, params in requests], use_tqdm=False)
            self._track_memory()
            if on_step is not None:
                on_step(len(chunk), settings.max_new_tokens, settings.max_new_tokens)
            yield batch_from_outputs(chunk, outputs, time.perf_counter() - began)

    def _track_memory(self) -> None:
        import torch

        if torch.cuda.is_available():
            self.peak_memory = max(self.peak_memory, torch.cuda.max_memory_allocated())
