"""The headline baseline: what a user would write with transformers, `model.generate` on
left-padded batches of prompts with `num_return_sequences=k`, at its best batch size, then the
scorer on all texts in one batched call.

It samples the distribution compfair's sampler samples: `do_sample=True`, `top_k=0` (nucleus
only), the job's top-p, temperature and token budget, the sampler's end-of-sequence ids, and
nothing else (a fresh `GenerationConfig`, so a model's own generation defaults such as a
repetition penalty do not apply). It runs in the bench's process, so with the same torch
thread count as the compfair job."""

from __future__ import annotations

import time
from typing import Any

from engine.bench.measure import keep_round, PeakMemory, load_average, phase, sync
from engine.bench.options import BenchSettings, Say

# prompts per `generate` call tried by the batch-size search (each x k rows)
GENERATE_BATCHES = (1, 4, 8, 16)


def sampling_config(settings: BenchSettings, temperature: float, eos_ids: list[int], pad_id: int) -> dict:
    """The `generate` settings of the baseline: compfair's sampling distribution (see the
    module docstring). Returned as a dict (recorded in the bench result) and passed as a
    `GenerationConfig`."""
    return {"do_sample": True, "top_k": 0, "top_p": settings.top_p, "temperature": temperature,
            "max_new_tokens": settings.new_tokens, "num_return_sequences": settings.k,
            "eos_token_id": eos_ids, "pad_token_id": pad_id}


class BatchedGenerate:
    """transformers `model.generate` on batches of prompts at the best batch size found by
    `search`, then batched scoring. `run` may be called several times (parts interleaved with
    the compfair jobs); `record` sums them."""

    def __init__(self, lm, settings: BenchSettings, scorer, temperature: float) -> None:
        import torch
        from transformers import GenerationConfig
        from transformers.utils import logging as hf_logging

        from engine.evaluation.sampler import _eos_ids  # on use: torch, transformers, numpy

        hf_logging.set_verbosity_error()
        self.lm, self.scorer, self.k = lm, scorer, settings.k
        tokenizer = lm.tokenizer
        eos = _eos_ids(lm.model, tokenizer) or [0]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
        self.sampling = sampling_config(settings, temperature, eos, pad)
        self.config = GenerationConfig(**self.sampling)
        self.eos, self.pad = set(eos), pad
        self.batch_prompts = 1
        self.search_record: dict[str, float] = {}
        self.prompts = self.generations = self.new_tokens = 0
        self.generation_s = self.generation_cpu_s = self.scoring_s = self.scoring_cpu_s = 0.0
        self.loads: list[str] = []
        self.memory: dict[str, Any] = {}
        self.threads = torch.get_num_threads()
        self._generate(["Hello"], max_new_tokens=2)                       # warm-up
        torch.manual_seed(settings.seed)

    def _generate(self, prompts: list[str], max_new_tokens: int | None = None) -> tuple[list[str], int]:
        """Texts (k per prompt, new tokens only, cut at the first end-of-sequence) and their
        new-token count."""
        import torch
        tokenizer = self.lm.tokenizer
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        try:
            enc = tokenizer(prompts, return_tensors="pt", padding=True).to(self.lm.device)
        finally:
            tokenizer.padding_side = side
        config = self.config
        if max_new_tokens is not None:
            config = config.__class__(**{**self.sampling, "max_new_tokens": max_new_tokens})
        with torch.inference_mode():
            out = self.lm.model.generate(**enc, generation_config=config)
        texts, tokens = [], 0
        for ids in out[:, enc["input_ids"].shape[1]:].tolist():
            end = next((i + 1 for i, t in enumerate(ids) if t in self.eos), len(ids))
            tokens += end
            texts.append(tokenizer.decode(ids[:end], skip_special_tokens=True))
        return texts, tokens

    def search(self, prompts: list[str], say: Say) -> None:
        """Pick the batch size (prompts per call, from `GENERATE_BATCHES`) with the most
        generations per second on one batch of each size (the first prompts)."""
        sizes = [b for b in GENERATE_BATCHES if b <= len(prompts)] or [len(prompts)]
        say(f"baseline: generate batch-size search over {sizes} prompts per call x k={self.k}")
        for size in sizes:
            started = time.perf_counter()
            self._generate(prompts[:size])
            sync(self.lm.device)
            self.search_record[str(size)] = round(size * self.k / (time.perf_counter() - started), 3)
        self.batch_prompts = int(max(self.search_record, key=self.search_record.get))
        self.search_record["load"] = load_average()

    def run(self, prompts: list[str], say: Say) -> None:
        """Generate and score `prompts` at the chosen batch size, adding to the totals."""
        if not prompts:
            return
        record: dict[str, Any] = {}
        texts: list[str] = []
        with phase(record, say, f"baseline: generate, {len(prompts)} prompts x k={self.k}, "
                                f"{self.batch_prompts} prompts per call"), PeakMemory(self.lm.device) as memory:
            cpu, started = time.process_time(), time.perf_counter()
            for at in range(0, len(prompts), self.batch_prompts):
                batch_texts, tokens = self._generate(prompts[at:at + self.batch_prompts])
                texts += batch_texts
                self.new_tokens += tokens
            sync(self.lm.device)
            self.generation_s += time.perf_counter() - started
            self.generation_cpu_s += time.process_time() - cpu
            cpu, started = time.process_time(), time.perf_counter()
            self.scorer.score(texts)                                        # batched
            self.scoring_s += time.perf_counter() - started
            self.scoring_cpu_s += time.process_time() - cpu
        self.prompts += len(prompts)
        self.generations += len(texts)
        keep_round(self.loads, self.memory, record, memory)

    def record(self) -> dict[str, Any]:
        """The totals: generation alone and generation + batched scoring, per second and per
        CPU-second."""
        n = self.generations
        total, total_cpu = self.generation_s + self.scoring_s, self.generation_cpu_s + self.scoring_cpu_s
        return {
            "prompts": self.prompts, "generations": n, "new_tokens": self.new_tokens,
            "batch_prompts": self.batch_prompts, "search_generations_per_s": self.search_record,
            "sampling": {k: v for k, v in self.sampling.items() if k != "pad_token_id"},
            "torch_threads": self.threads,
            "generation_s": round(self.generation_s, 3), "generation_cpu_s": round(self.generation_cpu_s, 3),
            "scoring_s": round(self.scoring_s, 3), "scoring_cpu_s": round(self.scoring_cpu_s, 3),
            "total_s": round(total, 3), "cpu_s": round(total_cpu, 3),
            "generations_per_s": n / max(self.generation_s, 1e-9),
            "generations_per_cpu_s": n / max(self.generation_cpu_s, 1e-9),
            "tokens_per_s": self.new_tokens / max(self.generation_s, 1e-9),
            "with_scoring_generations_per_s": n / max(total, 1e-9),
            "with_scoring_generations_per_cpu_s": n / max(total_cpu, 1e-9),
            "load": ", ".join(self.loads), "peak_cuda_bytes": None, **self.memory}
