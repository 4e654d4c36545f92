"""What a suite is: the one place that describes an evaluation suite to the rest of compfair.

A `Suite` owns everything suite-specific: the spec fields it reads and their validation, where
its data comes from, how its per-item records are produced (sampling or likelihoods), how the
stored records aggregate into metrics, each item's contribution to a metric for paired
comparisons, which settings mean something for display and comparability, and a `MetricSpec`
per metric (title, format, direction, headline or not). The runner, `api`, the report, the CLI
and the TUI ask the registry (`get_suite`) and never branch on a suite's name.

This module imports neither torch nor numpy: the CLI and the TUI read the registry cheaply.
Suites import their heavy parts inside the methods that need them."""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping

if TYPE_CHECKING:                     # pragma: no cover - types only
    from engine.context import JobContext
    from engine.evaluation.data import SuiteData
    from engine.evaluation.paired import PairedDiff
    from engine.specs import EvalSpec

log = logging.getLogger(__name__)

LOWER, HIGHER, TARGET, NEITHER = "lower", "higher", "target", "none"


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a suite.

    `direction`: "lower" or "higher" is better, "target" (closer to `target` is better, e.g.
    50 for CrowS-Pairs), or "none" (descriptive only). `headline`: shown in one-line listings
    and the report table. `paired`: the suite can compare two runs on it item by item.
    `role`: "fairness" (what the study is about) or "quality" (what compression cost).
    `margin`: the equivalence margin, the largest change that counts as "unchanged" (absolute,
    in the metric's own units; or, with `margin_relative`, a share of the baseline's value:
    0.05 = +-5%). None: no equivalence test (a comparison can be better, worse or inconclusive,
    never equivalent). Overridable in settings.toml `[margins]` and per study."""

    name: str
    title: str
    short: str = ""
    description: str = ""
    direction: str = NEITHER
    target: float | None = None
    fmt: str = ".3f"
    unit: str = ""
    headline: bool = False
    paired: bool = False
    role: str = "fairness"
    margin: float | None = None
    margin_relative: bool = False
    item_range: float = 1.0          # the widest one item's contribution can range (CrowS: 100)

    @property
    def higher_is_better(self) -> int | None:
        """The stored `metrics.higher_is_better` value: 1, 0 or None (target / descriptive)."""
        return {HIGHER: 1, LOWER: 0}.get(self.direction)

    def format(self, value: float | None) -> str:
        return "" if value is None else format(value, self.fmt)


class Suite:
    """Base class of suites; subclasses set the class attributes and implement the methods."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    generates_text: ClassVar[bool] = False     # samples continuations (and so has a scorer)
    unit: ClassVar[str] = "items"              # what progress counts
    # its data is a list of items that shards (engine.scale.shards) split into ranges
    shards_by_item: ClassVar[bool] = True
    # (setting key, short label) shown in listings for a run of this suite
    display_settings: ClassVar[tuple[tuple[str, str], ...]] = (("max_prompts", "n"), ("seed", "seed"))
    # settings whose difference makes two runs of this suite not comparable
    comparable_settings: ClassVar[tuple[str, ...]] = ("max_prompts", "data_source")
    metrics: ClassVar[tuple[MetricSpec, ...]] = ()
    # hub data set (name, config, split) and the built-in file under data/prompts
    hub_dataset: ClassVar[tuple[str, str | None, str] | None] = None
    builtin_file: ClassVar[str] = ""
    # the suite's place in the report table (quality suites first)
    order: ClassVar[int] = 50

    # -- spec --------------------------------------------------------------------------------
    def validate(self, spec: "EvalSpec") -> None:
        """Suite-specific checks of an eval spec (raise `SpecError`); the default has none."""

    # -- data --------------------------------------------------------------------------------
    def offline_requirement(self, data: str) -> str | None:
        """What loading `data` needs that this machine may lack ("" when nothing), for a suite
        whose `data` is not a data set (None: the generic check of engine.evaluation.data)."""
        return None

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
        from engine.evaluation.data_sources import load_suite_data
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

    def in_subset(self, row: dict, subset: str) -> bool:
        return subset == ""

    def per_item(self, metric: str, rows: list[dict], subset: str = "") -> dict[Any, float]:
        """{item key: the item's contribution to `metric`}, for paired comparisons."""
        raise ValueError(f"no per-item form of {self.name} metric {metric!r}")

    def paired(self, metric: str, rows_a: list[dict], rows_b: list[dict], *, subset: str = "",
               n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> "PairedDiff":
        """metric(run b) - metric(run a) over the items both runs evaluated, with a paired
        bootstrap CI and p-value. The default resamples the items' `per_item` values; suites
        whose metric is not a mean over items (perplexity, BOLD gaps) override it."""
        from engine.evaluation.paired import paired_bootstrap_diff
        a = self.per_item(metric, rows_a, subset)
        b = self.per_item(metric, rows_b, subset)
        common = sorted(set(a) & set(b))
        if not common:
            raise ValueError(f"the two {self.name} runs share no items{' in ' + subset if subset else ''}")
        spec = self.metric(metric)
        target = spec.target if spec is not None and spec.direction == TARGET else None
        return paired_bootstrap_diff([a[i] for i in common], [b[i] for i in common],
                                     n_boot=n_boot, confidence=confidence, seed=seed, target=target)

    def group_subsets(self, rows: list[dict]) -> list[str]:
        """The subsets whose changes the report searches for the worst group (e.g. CrowS bias
        types); none by default."""
        return []

    # metrics the report also gives over fluent continuations only (within the teacher's range)
    fluent_metrics: ClassVar[tuple[str, ...]] = ()
    # what an item's binary class is, for per-item flips ("" when the suite has none)
    flip_class: ClassVar[str] = ""

    def item_classes(self, rows: list[dict]) -> dict[Any, bool]:
        """{item key: whether the item is in `flip_class`}, for per-item flips."""
        return {}

    # -- reading -----------------------------------------------------------------------------
    def metric(self, name: str) -> MetricSpec | None:
        """The spec of metric `name` (a per-domain `x_gap` resolves like `x_gap`)."""
        for spec in self.metrics:
            if spec.name == name:
                return spec
        return None

    def headlines(self) -> tuple[MetricSpec, ...]:
        return tuple(m for m in self.metrics if m.headline)

    def settings_summary(self, settings: Mapping[str, Any]) -> str:
        return " ".join(f"{short}={settings[k]}" for k, short in self.display_settings
                        if settings.get(k) is not None)


def require_finite(values, what: str, n_items: int) -> None:
    """Fail the job (not the metrics) when the model's likelihoods are NaN or infinite."""
    import math

    from engine.errors import JobFailed
    bad = sum(1 for v in values if not math.isfinite(float(v)))
    if bad:
        raise JobFailed(f"the model gave non-finite {what} ({bad} of {len(values)} in a batch of "
                        f"{n_items}): its outputs are NaN or infinite; nothing was stored for them")


# -- the registry -----------------------------------------------------------------------------
_REGISTRY: dict[str, Suite] = {}
PLUGINS_ENV = "COMPFAIR_PLUGINS"
_plugins_loaded = False


def register(suite: Suite | type[Suite]) -> Suite:
    """Add a suite (an instance or a class, usable as a decorator) to the registry."""
    instance = suite() if isinstance(suite, type) else suite
    if not instance.name:
        raise ValueError("a suite needs a name")
    _REGISTRY[instance.name] = instance
    return suite  # type: ignore[return-value]


def unregister(name: str) -> None:
    """Remove suite `name` from the registry (a plugin's, or a test's, when it is done)."""
    _REGISTRY.pop(name, None)


def load_plugins() -> None:
    """Import the modules named in $COMPFAIR_PLUGINS (comma-separated) and the `compfair.suites`
    entry points, once: they register extra suites (in the CLI, the TUI and the worker alike)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for name in filter(None, (n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(","))):
        importlib.import_module(name)
    try:
        from importlib.metadata import entry_points
        for point in entry_points(group="compfair.suites"):
            point.load()
    except Exception:  # noqa: BLE001 - a broken third-party plugin must not stop compfair
        log.warning("a compfair.suites entry point failed to load", exc_info=True)


def get_suite(name: str) -> Suite:
    """The registered suite `name`; `SpecError` naming the known ones otherwise."""
    load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        from engine.specs import SpecError
        raise SpecError(f"suite {name!r} is unknown; choose from {', '.join(suite_names())}",
                        field="suite") from None


def suites() -> tuple[Suite, ...]:
    load_plugins()
    return tuple(_REGISTRY.values())


def suite_names() -> tuple[str, ...]:
    return tuple(s.name for s in suites())


def generation_suite_names() -> tuple[str, ...]:
    return tuple(s.name for s in suites() if s.generates_text)


def find_metric(name: str, suite: str | None = None) -> MetricSpec | None:
    """The spec of metric `name` (of `suite`, or of the first suite that has it)."""
    pool: Iterable[Suite] = [get_suite(suite)] if suite else suites()
    for s in pool:
        spec = s.metric(name)
        if spec is not None:
            return spec
    return None
