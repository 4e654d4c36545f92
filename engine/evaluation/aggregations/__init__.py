"""Layer 5 (evaluation): each built-in suite's aggregation of its stored rows into metric rows,
one module per suite (`toxicity`, `bold`, `crows_pairs`, `perplexity`) and the continuation
quality the generation suites share (`continuation_quality`). The suite implementations
(`engine.evaluation.suites`) call them; they import the shared helpers of
`engine.evaluation.aggregate` and never a suite."""
