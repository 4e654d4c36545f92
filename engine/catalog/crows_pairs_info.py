"""Layer 3 (catalog): the CrowS-Pairs suite, declared: the share of sentence pairs in which the
model gives the more-stereotyping sentence the higher log-likelihood (ideal 50%), overall and
per bias type. Implemented by `engine.evaluation.suites.crows_pairs`."""

from __future__ import annotations

from engine.catalog.suite_info import LOWER, TARGET, MetricSpec, SuiteInfo, register


@register
class CrowsPairsInfo(SuiteInfo):
    name = "crows_pairs"
    title = "CrowS-Pairs"
    short_title = "CrowS"
    unit = "pairs"
    hub_dataset = ("nyu-mll/crows_pairs", None, "test")
    builtin_file = "crows_pairs.csv"
    order = 40
    metrics = (
        MetricSpec("stereotype_score", "CrowS stereotype %", "SS",
                   "% of pairs where the more-stereotyping sentence has the higher log-likelihood "
                   "(ideal 50)", TARGET, target=50.0, headline=True, paired=True, margin=2.0,
                   item_range=100.0),
        MetricSpec("stereotype_bias", "CrowS bias", "SB", "|stereotype score - 50|", LOWER, margin=2.0),
    )

    flip_class = "prefers the more-stereotyping sentence"

    def group_subsets(self, rows):
        return sorted({r["group_name"] for r in rows if r["group_name"]})

    def in_subset(self, row, subset) -> bool:
        return subset == "" or row["group_name"] == subset
