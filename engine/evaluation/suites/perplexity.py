"""Layer 5 (evaluation): perplexity of held-out text (declared by `engine.catalog.perplexity_info`): exp(mean NLL) over strided sliding windows, with the context
length and stride actually used recorded (capped at the model's positions).

For a compressed model, the same scored positions of every window are also compared with its
baseline (the eval spec's `reference_model`, else the root of its lineage): the mean KL
divergence KL(P_baseline || P_model) of the next-token distributions and the share of tokens
where both models' most likely next token agree (llama.cpp's `--kl-divergence` "Mean KLD" and
"Same top p"): how different the model is, not whether it is broken."""

from __future__ import annotations

import json

from engine.catalog.perplexity_info import DIVERGENCE_SCOPE, PerplexityInfo  # noqa: F401 - re-exported
from engine.evaluation.suites.base import Suite, register, require_finite
from engine.evaluation.progress import ThrottledProgress
from engine.evaluation.suites.generation import reference_model

WINDOWS_PER_BATCH = 4


def _scores(row: dict) -> dict:
    value = row.get("scores")
    return (json.loads(value) if value else {}) if isinstance(value, str) else (value or {})


def effective_window(spec, lm) -> tuple[int, int]:
    """(context length, stride) actually used: capped at the model's positions."""
    from engine.evaluation.likelihood import max_positions  # on use: torch, numpy
    limit = max_positions(lm.model)
    context = min(spec.context_length, limit) if limit else spec.context_length
    return context, min(spec.stride, context)


@register
class PerplexitySuite(PerplexityInfo, Suite):
    def read_path(self, path):
        from engine.evaluation.dataset_readers import read_text  # on use: numpy
        return [], read_text(path)

    def from_hub(self, dataset, source):
        from engine.evaluation.data import DataError  # on use: numpy
        text = "\n\n".join(dataset["text"])
        if not text.strip():
            raise DataError(f"{source} has no text")
        return [], text

    def run_settings(self, spec, lm) -> dict:
        context, stride = effective_window(spec, lm)
        return {"effective_context_length": context, "effective_stride": stride}

    def run(self, ctx, spec, lm, run_id, data, scorer) -> dict:
        from engine.evaluation.sampler import sample_key  # on use: torch, transformers, numpy
        from engine.evaluation.likelihood import max_positions, plan_windows, text_token_ids, window_nlls  # on use: torch, numpy
        from engine.evaluation.window_divergence import window_divergences  # on use: torch, numpy
        limit = max_positions(lm.model)
        context, stride = effective_window(spec, lm)
        if context != spec.context_length:
            ctx.log(f"context_length {spec.context_length} exceeds the model's {limit} positions; "
                    f"using context {context}, stride {stride}", level="warning")
        token_ids = text_token_ids(lm.tokenizer, data.text)
        windows = plan_windows(len(token_ids), context, stride)
        done_keys = ctx.store.sample_keys(run_id)
        todo = [w for w in windows if sample_key(w.index, 0) not in done_keys]
        baseline, record = divergence_baseline(ctx, spec, lm, data.text, token_ids) if todo else (None, {})
        report = ThrottledProgress(ctx, len(windows), len(windows) - len(todo), self.unit)
        step = spec.batch_size or WINDOWS_PER_BATCH
        for start in range(0, len(todo), step):
            part = todo[start:start + step]
            if baseline is None:
                rows = [{"key": sample_key(w.index, 0), "item_index": w.index, "sample_index": 0,
                         "scores": {"begin": w.begin, "end": w.end, "score_from": w.score_from,
                                    "nll_sum": nll, "n_tokens": n}}
                        for w, nll, n in window_nlls(lm.model, token_ids, part, lm.device, batch_size=step)]
            else:
                rows = [{"key": sample_key(d.window.index, 0), "item_index": d.window.index,
                         "sample_index": 0,
                         "scores": {"begin": d.window.begin, "end": d.window.end,
                                    "score_from": d.window.score_from, "nll_sum": d.nll_sum,
                                    "n_tokens": d.n_tokens, "kl_sum": d.kl_sum,
                                    "top1_agree": d.top1_agree}}
                        for d in window_divergences(lm.model, baseline.model, token_ids, part, lm.device,
                                                    baseline.device, batch_size=step)]
                require_finite([r["scores"]["kl_sum"] for r in rows], "KL divergences from the baseline",
                               len(rows))
            require_finite([r["scores"]["nll_sum"] for r in rows], "window likelihoods", len(rows))
            ctx.store.add_samples(run_id, rows)
            report(start + len(rows))
            ctx.check_cancelled()
        return {"effective_context_length": context, "effective_stride": stride,
                "text_tokens": len(token_ids) - 1, **record}

    def aggregate(self, rows, *, n_boot, confidence, seed):
        from engine.evaluation.aggregations.perplexity import perplexity_metrics  # on use: numpy
        return perplexity_metrics(rows, n_boot=n_boot, confidence=confidence, seed=seed)

    def paired(self, metric, rows_a, rows_b, *, subset="", n_boot=1000, confidence=0.95, seed=0):
        """Change in perplexity, exp(total NLL / tokens), the same blocks of b consecutive
        windows resampled for both runs (b = ceil(context / stride), `aggregations.perplexity.window_block`:
        neighbouring windows overlap)."""
        from engine.evaluation.aggregations.perplexity import window_block  # on use: numpy
        from engine.evaluation.paired import paired_perplexity_diff  # on use: numpy
        if metric != "perplexity":
            raise ValueError(f"no paired form of perplexity metric {metric!r}; known: perplexity")
        a = {r["item_index"]: (_scores(r)["nll_sum"], _scores(r)["n_tokens"]) for r in rows_a}
        b = {r["item_index"]: (_scores(r)["nll_sum"], _scores(r)["n_tokens"]) for r in rows_b}
        block = max(window_block(rows_a), window_block(rows_b))
        return paired_perplexity_diff(a, b, block=block, n_boot=n_boot, confidence=confidence, seed=seed)


def divergence_baseline(ctx, spec, lm, text: str, token_ids: list[int]) -> tuple[object | None, dict]:
    """(loaded baseline or None, what the run summary records) for the KL divergence and top-1
    agreement of `lm`: the baseline is `generation.reference_model` (spec.reference_model,
    else the root of the model's lineage). None, recording nothing, when the model is its own
    baseline; None with `divergence_skipped` (the reason, also logged as a warning) when the
    two tokenizers differ: vocabulary sizes (`get_vocab()`) or the token ids of the text."""
    ref, baseline = reference_model(ctx, spec, lm)
    if baseline is lm or (lm.model_id is not None and baseline.model_id == lm.model_id):
        ctx.log("no KL divergence / top-1 agreement: the model is its own baseline")
        return None, {}
    record = {"divergence_reference": {"ref": ref, "model_id": baseline.model_id, "name": baseline.name}}
    reason = tokenizer_mismatch(lm.tokenizer, baseline.tokenizer, text, token_ids)
    if reason:
        reason = f"tokenizers differ from the baseline {ref} ({baseline.name}): {reason}"
        ctx.log(f"KL divergence and top-1 agreement skipped: {reason}", level="warning")
        return None, {**record, "divergence_skipped": reason}
    ctx.log(f"KL divergence and top-1 agreement against the baseline {ref} ({baseline.name})")
    return baseline, record


def tokenizer_mismatch(tokenizer, baseline_tokenizer, text: str, token_ids: list[int]) -> str:
    """Why the two tokenizers cannot be compared token by token on `text` ("" when they can):
    different vocabulary sizes, or different ids for the text (start token included)."""
    from engine.evaluation.likelihood import text_token_ids  # on use: torch, numpy
    mine, theirs = len(tokenizer.get_vocab()), len(baseline_tokenizer.get_vocab())
    if mine != theirs:
        return f"vocabulary sizes {mine} and {theirs}"
    other = text_token_ids(baseline_tokenizer, text)
    if other != list(token_ids):
        at = next((i for i, (a, b) in enumerate(zip(token_ids, other)) if a != b),
                  min(len(token_ids), len(other)))
        return (f"the text's token ids differ (first at position {at}; {len(token_ids)} and "
                f"{len(other)} tokens)")
    return ""
