"""Layer 5 (evaluation): what a suite does. `Suite` is the implementation base of suites: it
adds to a suite's declaration (`engine.catalog.SuiteInfo`, layer 3: name, metrics, settings,
spec validation) everything that needs the evaluation code: where its data comes from, how its
per-item records are produced (sampling or likelihoods), how the stored records aggregate into
metrics, and each item's contribution to a metric for paired comparisons. The runner, `api`,
the report, the CLI and the TUI ask the registry (`get_suite`) and never branch on a suite's
name.

The registry itself is the catalog's (`engine.catalog.suite_info`): registering an
implementation replaces its declaration under the same name.

This module imports neither torch nor numpy: the CLI and the TUI read the registry cheaply.
Suites import their heavy parts inside the methods that need them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.catalog.suite_info import (HIGHER, LOWER, NEITHER, TARGET, MetricSpec, SuiteInfo,  # noqa: F401 - re-exported
                                       find_metric, generation_suite_names, get_suite_info, load_plugins,
                                       register, suite_names, suites, unregister)
from engine.errors import JobFailed

if TYPE_CHECKING:                     # pragma: no cover - types only
    from engine.context import JobContext
    from engine.evaluation.data import SuiteData
    from engine.evaluation.paired import PairedDiff
    from engine.specs import EvalSpec


class Suite(SuiteInfo):
    """Base class of suite implementations; subclasses (of a declaration, and of this) implement
    the methods."""

    # -- data --------------------------------------------------------------------------------
    def read_path(self, path) -> tuple[list, str | None]:
        """(items, text) from a local file or folder in the data set's original format."""
        raise NotImplementedError

    def from_hub(self, dataset, source: str) -> tuple[list, str | None]:
        """(items, text) from the loaded hub data set."""
        raise NotImplementedError

    def select(self, items: list, spec: "EvalSpec", source: str) -> list:
        """Suite-specific selection before `max_prompts` (e.g. BOLD's domains and groups)."""
        return items

    def stratum(self, item: Any) -> str:
        """The stratum an item belongs to when `max_prompts` caps the selection."""
        return ""

    def load(self, spec: "EvalSpec", data: str | None = None) -> "SuiteData":
        from engine.evaluation.data_sources import load_suite_data  # on use: numpy
        return load_suite_data(self, spec.data if data is None else data, max_prompts=spec.max_prompts,
                               domains=spec.domains, groups=spec.groups,
                               prompts_per_group=spec.prompts_per_group, seed=spec.seed)

    def check_inputs(self, spec: "EvalSpec") -> None:
        """Read a local data file now so that bad input is refused before anything is queued
        (raises `DataError`); hub data is left to the job."""
        if spec.data not in ("auto", "hub"):
            self.load(spec)

    # -- running -----------------------------------------------------------------------------
    def run(self, ctx: "JobContext", spec: "EvalSpec", lm, run_id: int, data: "SuiteData",
            scorer) -> dict:
        """Produce and store the run's per-item records (resuming: skip stored keys); returns
        extra summary fields."""
        raise NotImplementedError

    def run_settings(self, spec: "EvalSpec", lm) -> dict:
        """Settings this suite resolves at run time (recorded with the run)."""
        return {}

    # -- aggregating and comparing -----------------------------------------------------------
    def aggregate(self, rows: list[dict], *, n_boot: int, confidence: float,
                  seed: int) -> tuple[list[dict], dict]:
        """The metric rows (for `Store.finish_run`) and a summary, from the stored rows."""
        raise NotImplementedError

    def per_item(self, metric: str, rows: list[dict], subset: str = "") -> dict[Any, float]:
        """{item key: the item's contribution to `metric`}, for paired comparisons."""
        raise ValueError(f"no per-item form of {self.name} metric {metric!r}")

    def paired(self, metric: str, rows_a: list[dict], rows_b: list[dict], *, subset: str = "",
               n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> "PairedDiff":
        """metric(run b) - metric(run a) over the items both runs evaluated, with a paired
        bootstrap CI and p-value. The default resamples the items' `per_item` values; suites
        whose metric is not a mean over items (perplexity, BOLD gaps) override it."""
        from engine.evaluation.paired import paired_bootstrap_diff  # on use: numpy
        a = self.per_item(metric, rows_a, subset)
        b = self.per_item(metric, rows_b, subset)
        common = sorted(set(a) & set(b))
        if not common:
            raise ValueError(f"the two {self.name} runs share no items{' in ' + subset if subset else ''}")
        spec = self.metric(metric)
        target = spec.target if spec is not None and spec.direction == TARGET else None
        return paired_bootstrap_diff([a[i] for i in common], [b[i] for i in common],
                                     n_boot=n_boot, confidence=confidence, seed=seed, target=target)

    def item_classes(self, rows: list[dict]) -> dict[Any, bool]:
        """{item key: whether the item is in `flip_class`}, for per-item flips."""
        return {}


def require_finite(values, what: str, n_items: int) -> None:
    """Fail the job (not the metrics) when the model's likelihoods are NaN or infinite."""
    import math

    bad = sum(1 for v in values if not math.isfinite(float(v)))
    if bad:
        raise JobFailed(f"the model gave non-finite {what} ({bad} of {len(values)} in a batch of "
                        f"{n_items}): its outputs are NaN or infinite; nothing was stored for them")


def get_suite(name: str) -> Suite:
    """The registered suite `name`; `SpecError` naming the known ones otherwise."""
    return get_suite_info(name)  # type: ignore[return-value]
