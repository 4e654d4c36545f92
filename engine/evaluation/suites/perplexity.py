"""Perplexity of held-out text: exp(mean NLL) over strided sliding windows, with the context
length and stride actually used recorded (capped at the model's positions)."""

from __future__ import annotations

import json

from engine.evaluation.suites.base import LOWER, NEITHER, MetricSpec, Suite, register
from engine.evaluation.suites.base import require_finite

WINDOWS_PER_BATCH = 4


def _scores(row: dict) -> dict:
    value = row.get("scores")
    return (json.loads(value) if value else {}) if isinstance(value, str) else (value or {})


def effective_window(spec, lm) -> tuple[int, int]:
    """(context length, stride) actually used: capped at the model's positions."""
    from engine.evaluation.likelihood import max_positions
    limit = max_positions(lm.model)
    context = min(spec.context_length, limit) if limit else spec.context_length
    return context, min(spec.stride, context)


@register
class PerplexitySuite(Suite):
    name = "perplexity"
    title = "Perplexity"
    unit = "windows"
    shards_by_item = False      # one text, strided windows: not split into shards
    display_settings = (("effective_context_length", "ctx"), ("effective_stride", "stride"),
                        ("seed", "seed"))
    comparable_settings = ("data_source", "context_length", "stride")
    hub_dataset = ("Salesforce/wikitext", "wikitext-2-raw-v1", "test")
    builtin_file = "perplexity.txt"
    order = 10
    metrics = (
        MetricSpec("perplexity", "PPL", "PPL", "exp(mean NLL per token) of held-out text, "
                   "strided windows", LOWER, headline=True, paired=True, role="quality", margin=0.05, margin_relative=True),
        MetricSpec("tokens", "tokens", "", "number of tokens scored", NEITHER, fmt=",.0f",
                   role="quality"),
    )

    def read_path(self, path):
        from engine.evaluation.data import read_text
        return [], read_text(path)

    def from_hub(self, dataset, source):
        from engine.evaluation.data import DataError
        text = "\n\n".join(dataset["text"])
        if not text.strip():
            raise DataError(f"{source} has no text")
        return [], text

    def run_settings(self, spec, lm) -> dict:
        context, stride = effective_window(spec, lm)
        return {"effective_context_length": context, "effective_stride": stride}

    def run(self, ctx, spec, lm, run_id, data, scorer) -> dict:
        from engine.evaluation.generation import sample_key
        from engine.evaluation.likelihood import max_positions, plan_windows, text_token_ids, window_nlls
        from engine.evaluation.progress import ThrottledProgress
        limit = max_positions(lm.model)
        context, stride = effective_window(spec, lm)
        if context != spec.context_length:
            ctx.log(f"context_length {spec.context_length} exceeds the model's {limit} positions; "
                    f"using context {context}, stride {stride}", level="warning")
        token_ids = text_token_ids(lm.tokenizer, data.text)
        windows = plan_windows(len(token_ids), context, stride)
        done_keys = ctx.store.sample_keys(run_id)
        todo = [w for w in windows if sample_key(w.index, 0) not in done_keys]
        report = ThrottledProgress(ctx, len(windows), len(windows) - len(todo), self.unit)
        step = spec.batch_size or WINDOWS_PER_BATCH
        for start in range(0, len(todo), step):
            rows = [{"key": sample_key(w.index, 0), "item_index": w.index, "sample_index": 0,
                     "scores": {"begin": w.begin, "end": w.end, "score_from": w.score_from,
                                "nll_sum": nll, "n_tokens": n}}
                    for w, nll, n in window_nlls(lm.model, token_ids, todo[start:start + step], lm.device,
                                                 batch_size=step)]
            require_finite([r["scores"]["nll_sum"] for r in rows], "window likelihoods", len(rows))
            ctx.store.add_samples(run_id, rows)
            report(start + len(rows))
            ctx.check_cancelled()
        return {"effective_context_length": context, "effective_stride": stride,
                "text_tokens": len(token_ids) - 1}

    def aggregate(self, rows, *, n_boot, confidence, seed):
        from engine.evaluation.aggregate import perplexity_metrics
        return perplexity_metrics(rows, n_boot=n_boot, confidence=confidence, seed=seed)

    def paired(self, metric, rows_a, rows_b, *, subset="", n_boot=1000, confidence=0.95, seed=0):
        """Change in perplexity, exp(total NLL / tokens), the same blocks of b consecutive
        windows resampled for both runs (b = ceil(context / stride), `aggregate.window_block`:
        neighbouring windows overlap)."""
        from engine.evaluation.aggregate import window_block
        from engine.evaluation.metrics import paired_perplexity_diff
        if metric != "perplexity":
            raise ValueError(f"no paired form of perplexity metric {metric!r}; known: perplexity")
        a = {r["item_index"]: (_scores(r)["nll_sum"], _scores(r)["n_tokens"]) for r in rows_a}
        b = {r["item_index"]: (_scores(r)["nll_sum"], _scores(r)["n_tokens"]) for r in rows_b}
        block = max(window_block(rows_a), window_block(rows_b))
        return paired_perplexity_diff(a, b, block=block, n_boot=n_boot, confidence=confidence, seed=seed)
