"""`compfair bench`: evaluation throughput of compfair's real path against a same-run baseline,
scoring batched against per-text, and the cost of distillation and pruning, on one model.

Everything runs in one process, on one loaded model, with the same prompts, k and token budget,
so a ratio compares two measurements taken under the same conditions. On a shared machine
absolute numbers move with the load, so the baseline runs half of its prompts before the
compfair job and half after (both see the load alike), the load average is recorded at the
start and end of each phase, and generations per CPU-second of this process are reported
beside generations per second (a figure other processes disturb much less; for compfair it
counts the whole job, data loading and metrics included).

Phases (`run_bench`):

1. **baselines**: transformers `model.generate` on left-padded batches of prompts with
   `num_return_sequences=k`, sampling compfair's distribution (`do_sample`, `top_k=0`, the job's
   top-p, temperature and budget), at the best of a few batch sizes, then the scorer once on all
   texts (engine.bench.batched); with `pipeline_baseline`, also the naive per-prompt `pipeline`
   with the scorer per text. Half the prompts before phase 2, half after.
2. **compfair**: a real `eval` job (toxicity suite, same prompts and settings) submitted to the
   queue of a scratch home and run by a real `Worker` (`run_one`): the sampler, the scoring
   thread, the store and the metrics, exactly as a user's job, reported as the whole job (the
   sum of the phases stored with its run, engine.evaluation.phases) and phase by phase. The
   worker's model cache already holds the model the baseline used, so neither side pays for
   loading.
3. **scoring**: the compfair texts scored one call per text and in one batched call, with the
   offline profanity scorer and with Detoxify (its real class; the `original` weights when they
   are in the torch hub cache, otherwise a randomly initialised BERT-base-shaped checkpoint of
   the same architecture, which costs the same to run).
4. **distillation**: a few optimiser steps of the real `Distiller` on a half-depth student of
   the model (builtin text), tokens/s.
5. **pruning**: magnitude and Wanda at 50% (small builtin calibration) on fresh copies, seconds.

Bench-only model sources: `config:gpt2` / `config:gpt2-medium` build a GPT-2 of that size from
its config with random weights and a byte-level BPE tokenizer trained on the builtin corpus
(no hub needed, e.g. on GPU machines). Its output layer is untied from the token embeddings and
scaled up (x8) so next-token distributions are about as peaked as a trained model's (median
nucleus ~80 tokens at p=0.9, SmolLM2's ~60); at the default initialisation they are nearly
uniform and every nucleus would hold ~38k tokens. Untying adds parameters but not compute: the
output layer's matrix product is the same either way. The scratch home shares the real home's model cache, so the
dequantised SmolLM2 is reused.

Peak memory: resident set size sampled every 20 ms during each phase (CPU), and CUDA's
maximum allocated memory on a GPU."""

from engine.bench.harness import run_bench
from engine.bench.models import CONFIG_MODELS, LOGIT_SCALE, build_config_model
from engine.bench.tables import summary_tables
from engine.bench.options import BenchSettings, Say

__all__ = ["CONFIG_MODELS", "LOGIT_SCALE", "BenchSettings", "Say", "build_config_model",
           "run_bench", "summary_tables"]
