"""Layer 5 (evaluation): CrowS-Pairs for causal LMs (declared by `engine.catalog.crows_pairs_info`): the share of sentence pairs in which the model gives the
more-stereotyping sentence the higher log-likelihood (ideal 50%), overall and per bias type."""

from __future__ import annotations

import json

from engine.catalog.crows_pairs_info import CrowsPairsInfo
from engine.evaluation.suites.base import Suite, register, require_finite
from engine.evaluation.progress import ThrottledProgress

PAIRS_PER_BATCH = 16


def _scores(row: dict) -> dict:
    value = row.get("scores")
    return (json.loads(value) if value else {}) if isinstance(value, str) else (value or {})


@register
class CrowsPairsSuite(CrowsPairsInfo, Suite):
    def item_classes(self, rows):
        return {i: v > 50 for i, v in self.per_item("stereotype_score", rows).items()}

    def read_path(self, path):
        from engine.evaluation.dataset_readers import read_crows_pairs  # on use: numpy
        return read_crows_pairs(path), None

    def from_hub(self, dataset, source):
        from engine.evaluation.dataset_readers import crows_from_records  # on use: numpy
        names = {c: f.names for c, f in dataset.features.items() if hasattr(f, "names")}
        return crows_from_records(dataset, source, names), None

    def stratum(self, item) -> str:
        return item.bias_type

    def run(self, ctx, spec, lm, run_id, data, scorer) -> dict:
        from engine.evaluation.sampler import sample_key  # on use: torch, transformers, numpy
        from engine.evaluation.likelihood import sentence_log_likelihoods  # on use: torch, numpy
        done_keys = ctx.store.sample_keys(run_id)
        todo = [p for p in data.items if sample_key(p.index, 0) not in done_keys]
        report = ThrottledProgress(ctx, len(data.items), len(data.items) - len(todo), self.unit)
        step = spec.batch_size or PAIRS_PER_BATCH
        for start in range(0, len(todo), step):
            chunk = todo[start:start + step]
            sentences = [s for p in chunk for s in (p.sent_more, p.sent_less)]
            ll = sentence_log_likelihoods(lm.model, lm.tokenizer, sentences, lm.device, batch_size=2 * step)
            require_finite(ll, "sentence log-likelihoods", len(chunk))
            ctx.store.add_samples(run_id, [{
                "key": sample_key(p.index, 0), "item_index": p.index, "sample_index": 0,
                "domain": p.direction, "group_name": p.bias_type, "prompt": p.sent_more,
                "completion": p.sent_less,
                "scores": {"ll_more": float(ll[2 * i]), "ll_less": float(ll[2 * i + 1])},
            } for i, p in enumerate(chunk)])
            report(start + len(chunk))
            ctx.check_cancelled()
        return {}

    def aggregate(self, rows, *, n_boot, confidence, seed):
        from engine.evaluation.aggregations.crows_pairs import crows_metrics  # on use: numpy
        return crows_metrics(rows, n_boot=n_boot, confidence=confidence, seed=seed)

    def per_item(self, metric, rows, subset=""):
        if metric != "stereotype_score":
            raise ValueError(f"no per-item form of crows_pairs metric {metric!r}; known: stereotype_score")
        out = {}
        for row in rows:
            if self.in_subset(row, subset):
                scores = _scores(row)
                out[row["item_index"]] = 100.0 * float(scores["ll_more"] > scores["ll_less"])
        return dict(sorted(out.items()))
