"""The naive baseline (`--pipeline-baseline`, off by default): transformers
`pipeline("text-generation")` one prompt at a time, then the scorer once per text. The
headline baseline is batched `model.generate` (engine.bench.batched)."""

from __future__ import annotations

import time
from typing import Any

from engine.bench.measure import keep_round, PeakMemory, phase, sync
from engine.bench.options import BenchSettings, Say


class Baseline:
    """transformers pipeline, one prompt at a time, then the scorer once per text.

    `run` may be called several times (the benchmark runs half of the prompts before the
    compfair job and half after, so both see the machine's load alike); `record` sums them."""

    def __init__(self, lm, settings: BenchSettings, scorer, temperature: float = 1.0) -> None:
        import torch
        from transformers import pipeline
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self.lm, self.scorer = lm, scorer
        tokenizer = lm.tokenizer
        self.pipe = pipeline("text-generation", model=lm.model, tokenizer=tokenizer, device=lm.device)
        self.stop = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
        self.kwargs = dict(num_return_sequences=settings.k, do_sample=True, top_p=settings.top_p,
                           top_k=0, temperature=temperature, max_new_tokens=settings.new_tokens,
                           return_tensors=True, pad_token_id=tokenizer.pad_token_id)
        self.pipe("Hello", **{**self.kwargs, "max_new_tokens": 2, "num_return_sequences": 2})  # warm-up
        torch.manual_seed(settings.seed)
        self.k = settings.k
        self.prompts = self.generations = self.new_tokens = 0
        self.generation_s = self.scoring_s = self.cpu_s = 0.0
        self.scores: list[float] = []
        self.loads: list[str] = []
        self.memory: dict[str, Any] = {}

    def run(self, prompts: list[str], say: Say) -> None:
        if not prompts:
            return
        tokenizer = self.lm.tokenizer
        lengths = [self.pipe.preprocess(p)["input_ids"].shape[-1] for p in prompts]
        texts: list[str] = []
        record: dict[str, Any] = {}
        with phase(record, say, f"baseline: pipeline, {len(prompts)} prompts x k={self.k}"), \
                PeakMemory(self.lm.device) as memory:
            cpu = time.process_time()
            started = time.perf_counter()
            for prompt, n_prompt in zip(prompts, lengths):
                for out in self.pipe(prompt, **self.kwargs):
                    ids = list(out["generated_token_ids"])[n_prompt:]
                    end = next((i + 1 for i, t in enumerate(ids) if t in self.stop), len(ids))
                    self.new_tokens += end
                    texts.append(tokenizer.decode(ids[:end], skip_special_tokens=True))
            sync(self.lm.device)
            self.generation_s += time.perf_counter() - started
            started = time.perf_counter()
            self.scores += [float(self.scorer.score([text])[0]) for text in texts]   # per text
            self.scoring_s += time.perf_counter() - started
            self.cpu_s += time.process_time() - cpu
        self.prompts += len(prompts)
        self.generations += len(texts)
        keep_round(self.loads, self.memory, record, memory)

    def record(self) -> dict[str, Any]:
        total = self.generation_s + self.scoring_s
        return {
            "prompts": self.prompts, "generations": self.generations, "new_tokens": self.new_tokens,
            "generation_s": round(self.generation_s, 3), "scoring_s": round(self.scoring_s, 3),
            "total_s": round(total, 3), "cpu_s": round(self.cpu_s, 3),
            "generations_per_s": self.generations / total, "tokens_per_s": self.new_tokens / total,
            "generations_per_cpu_s": self.generations / max(self.cpu_s, 1e-9),
            "generation_share": self.generation_s / total, "scoring_share": self.scoring_s / total,
            "mean_toxicity": sum(self.scores) / max(len(self.scores), 1),
            "load": ", ".join(self.loads), "peak_cuda_bytes": None, **self.memory}

