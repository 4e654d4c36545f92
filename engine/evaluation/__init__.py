"""Fairness evaluation: the `eval` job kind.

Modules, one job each:

- `data`: pure loaders for RealToxicityPrompts, BOLD, CrowS-Pairs and perplexity text (hub,
  local files, or the sets shipped in `data/prompts/`), with stratified, seeded capping.
  The readers of each format (files and hub rows) are in `dataset_readers`.
- `generation`: batched, length-sorted nucleus sampling with a KV cache whose every sample is
  a pure function of (model, prompt, settings, seed, item, sample index).
- `nucleus_sampling`: the top-p/temperature sampling step and each row's random stream;
  `reserved_cache`: the key/value cache the sampler grows in place.
- `scorers`: pluggable toxicity scorers (detoxify, alt-profanity-check, any HF classifier) and
  VADER sentiment, each named and versioned; chosen by name there, defined in
  `detoxify_scorer`, `hf_classifier_scorer`, `lexical_scorers` and `bilstm_scorer` on the
  protocol of `scorer_base`.
- `likelihood`: sentence log-likelihoods (CrowS-Pairs) and strided perplexity windows.
- `continuation_likelihood`: continuation NLLs under a reference model (the fluency pass).
- `window_divergence`: KL divergence and top-1 agreement with a baseline per perplexity window.
- `metrics`: pure numpy metric definitions with bootstrap confidence intervals.
- `aggregate`: stored per-sample rows -> the metric rows of a run.
- `pipeline`: the scoring-and-storing thread that overlaps generation.
- `runner`: `run_eval(ctx)`, called by the worker.

Importing this package is cheap; torch-heavy modules are imported by the runner."""
