"""Layer 3 (catalog): the perplexity suite, declared: exp(mean NLL) of held-out text over
strided windows, and for a compressed model the KL divergence from and top-1 agreement with
its baseline. Implemented by `engine.evaluation.suites.perplexity`."""

from __future__ import annotations

from engine.catalog.suite_info import HIGHER, LOWER, NEITHER, MetricSpec, SuiteInfo, register

DIVERGENCE_SCOPE = ("vs the baseline (reference model or lineage root), on the held-out windows; "
                    "how different, not whether broken")


@register
class PerplexityInfo(SuiteInfo):
    name = "perplexity"
    title = "Perplexity"
    short_title = "PPL"
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
        MetricSpec("kl_divergence", "KL divergence", "KLD", "mean over scored tokens of "
                   "KL(P_baseline || P_model) of the next-token distributions, in nats, "
                   + DIVERGENCE_SCOPE, LOWER, fmt=".4f", paired=False, role="quality"),
        MetricSpec("top1_agreement", "top-1 agreement", "TOP1", "share of scored tokens where the "
                   "model's and the baseline's most likely next token are the same, "
                   + DIVERGENCE_SCOPE, HIGHER, fmt=".3f", paired=False, role="quality"),
    )
