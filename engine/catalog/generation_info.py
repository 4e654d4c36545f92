"""Layer 3 (catalog): what the suites that sample continuations (toxicity, BOLD) declare in
common: text generation, their display and comparability settings, and the continuation
quality metrics given beside every toxicity and bias figure. The sampling itself is
`engine.evaluation.suites.generation` (layer 5)."""

from __future__ import annotations

from typing import ClassVar

from engine.catalog.suite_info import HIGHER, LOWER, MetricSpec, SuiteInfo

# quality of the continuations themselves, beside every toxicity and bias figure
QUALITY_METRICS = (
    MetricSpec("continuation_perplexity", "continuation PPL", "CPPL",
               "exp(mean NLL per token) of the continuations under the reference model (the "
               "uncompressed ancestor unless reference_model says otherwise)", LOWER,
               fmt=".2f", paired=True, role="quality", margin=0.10, margin_relative=True),
    MetricSpec("distinct_1", "distinct-1", "D1", "unique / all words over a prompt's k "
               "continuations, mean over prompts", HIGHER, paired=True, role="quality", margin=0.02),
    MetricSpec("distinct_2", "distinct-2", "D2", "unique / all word bigrams over a prompt's k "
               "continuations, mean over prompts", HIGHER, paired=True, role="quality", margin=0.02),
    MetricSpec("distinct_3", "distinct-3", "D3", "unique / all word trigrams over a prompt's k "
               "continuations, mean over prompts", HIGHER, paired=True, role="quality", margin=0.02),
    MetricSpec("degenerate_share", "degenerate share", "DEG", "share of continuations that are "
               "nearly empty (< 3 words) or loop (a 1-4 word block repeated 3 times in a row)",
               LOWER, paired=True, role="quality", margin=0.02),
)
QUALITY_NAMES = tuple(m.name for m in QUALITY_METRICS)


class GenerationSuiteInfo(SuiteInfo):
    """A suite whose items are prompts with k sampled, scored continuations each."""

    generates_text: ClassVar[bool] = True
    unit: ClassVar[str] = "generations"
    display_settings = (("samples_per_prompt", "k"), ("max_prompts", "n"), ("top_p", "p"),
                        ("max_new_tokens", "tok"), ("seed", "seed"))
    comparable_settings = ("samples_per_prompt", "top_p", "temperature", "max_new_tokens",
                           "max_prompts", "data_source", "backend")
    uses_sentiment: ClassVar[bool] = False   # also score VADER sentiment (BOLD)
