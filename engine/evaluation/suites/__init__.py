"""Layer 5 (evaluation): the suite implementations, one module per suite, each subclassing its
declaration in `engine.catalog` and registering a `Suite` (see `base`) in the catalog's registry
under the same name, so `get_suite(name)` returns the full suite.

Extra suites register themselves from modules named in $COMPFAIR_PLUGINS or from
`compfair.suites` entry points."""

from engine.evaluation.suites.base import (HIGHER, LOWER, NEITHER, TARGET, MetricSpec, Suite,
                                           find_metric, generation_suite_names, get_suite,
                                           load_plugins, register, suite_names, suites,
                                           unregister)
from engine.evaluation.suites import toxicity, bold, crows_pairs, perplexity  # noqa: F401,E402 - register
from engine.evaluation.suites import lm_eval  # noqa: F401,E402 - register (lm-eval itself loads in the job)

__all__ = ["HIGHER", "LOWER", "NEITHER", "TARGET", "MetricSpec", "Suite", "find_metric",
           "generation_suite_names", "get_suite", "load_plugins", "register", "suite_names", "suites", "unregister"]
