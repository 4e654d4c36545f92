"""The benchmark's settings (`compfair bench` options) and the progress callback type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

Say = Callable[[str], None]      # where the benchmark reports what it is doing


@dataclass(frozen=True)
class BenchSettings:
    """What to benchmark and how much: the model, the eval workload (prompts x k x tokens,
    top-p, scorer, data), how the baseline is interleaved with the compfair jobs, and the size
    of the compression phases. Invalid values raise `ValueError`."""

    model: str = "smollm2"
    prompts: int = 32
    k: int = 8
    new_tokens: int = 20
    top_p: float = 0.9
    scorer: str = "profanity"
    data: str = "builtin"
    device: str = "auto"
    seed: int = 0
    baseline_prompts: int | None = None      # None: all prompts (the same set as compfair)
    repeat: int = 1                          # compfair jobs, interleaved with baseline parts
    pipeline_baseline: bool = False          # also the naive per-prompt pipeline baseline (slow)
    skip_compression: bool = False
    detoxify: bool = True
    detoxify_texts: int | None = None        # texts for the detoxify comparison (None: 64 on CPU)
    distill_steps: int = 3
    distill_batch: int = 4
    seq_len: int = 64
    calibration_samples: int = 8
    home: str | None = None                  # the home whose model cache is reused

    def __post_init__(self) -> None:
        for name in ("prompts", "k", "new_tokens", "distill_steps", "distill_batch",
                     "calibration_samples", "repeat"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seq_len < 8:
            raise ValueError(f"seq_len must be >= 8, got {self.seq_len}")
