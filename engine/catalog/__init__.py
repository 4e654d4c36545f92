"""Layer 3 (catalog): the declarations of compfair's named things, below their
implementations: the suite registry (`suite_info` and one module per built-in suite) and the
compression method registry (`method_info`, `prune_info`, `quantize_info`), both built on
`registry.Registry`.

Specs, margins, the CLI and the TUI read these declarations; the implementations
(`engine.evaluation.suites`, `engine.compression.methods`, layer 5) subclass them and register
under the same names. Imports nothing from engine but `engine.errors` and the catalog itself
(no torch, no numpy)."""

from engine.catalog.registry import Registry
from engine.catalog.suite_info import (HIGHER, LOWER, NEITHER, TARGET, MetricSpec, SuiteInfo,
                                       find_metric, generation_suite_names, get_suite_info,
                                       load_plugins, suite_names, suites)
from engine.catalog import toxicity_info, bold_info, crows_pairs_info, perplexity_info  # noqa: F401,E402 - register
from engine.catalog import lm_eval_info  # noqa: F401,E402 - register
from engine.catalog.method_info import (MethodInfo, PruneMethodInfo, get_method_info, method_names,
                                        methods, parse_n_m)
from engine.catalog import prune_info, quantize_info  # noqa: F401,E402 - register

__all__ = ["HIGHER", "LOWER", "NEITHER", "TARGET", "MetricSpec", "MethodInfo", "PruneMethodInfo",
           "Registry", "SuiteInfo", "find_metric", "generation_suite_names", "get_method_info",
           "get_suite_info", "load_plugins", "method_names", "methods", "parse_n_m", "suite_names",
           "suites"]
