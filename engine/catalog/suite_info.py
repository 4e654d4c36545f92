"""Layer 3 (catalog): what a suite is, declared: `MetricSpec`, the metric directions, and
`SuiteInfo`, the declarative part of a suite (its name, the spec fields it reads and their
validation, its data sets, which settings mean something for display and comparability, and a
`MetricSpec` per metric), with the suite registry (`get_suite_info`, `suite_names`, ...).

Each built-in suite is declared here (`toxicity_info`, `bold_info`, ...); its implementation
(`engine.evaluation.suites`, layer 5: data loading, running, aggregating, paired comparison)
subclasses the declaration and registers itself under the same name, so that once it is
imported the registry returns the full suite. Specs, margins, the CLI and the TUI read the
declarations without importing the evaluation code.

Extra suites register themselves from modules named in $COMPFAIR_PLUGINS or from
`compfair.suites` entry points (`load_plugins`).

Imports nothing from engine but `engine.errors` and the catalog; no torch, no numpy."""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping

from engine.catalog.registry import Registry

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


class SuiteInfo:
    """The declarative part of a suite; subclasses set the class attributes. The
    implementation (`engine.evaluation.suites.Suite`) adds loading, running and aggregating."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    # the suite in a column head that another suite's metric shares (`CPPL (tox)`; "": name)
    short_title: ClassVar[str] = ""
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
    # metrics the report also gives over fluent continuations only (within the teacher's range)
    fluent_metrics: ClassVar[tuple[str, ...]] = ()
    # what an item's binary class is, for per-item flips ("" when the suite has none)
    flip_class: ClassVar[str] = ""

    # -- spec --------------------------------------------------------------------------------
    def validate(self, spec: Any) -> None:
        """Suite-specific checks of an eval spec (raise `SpecError`); the default has none."""

    # -- data --------------------------------------------------------------------------------
    def offline_requirement(self, data: str) -> str | None:
        """What loading `data` needs that this machine may lack ("" when nothing), for a suite
        whose `data` is not a data set (None: the generic check of engine.evaluation.data)."""
        return None

    # -- stored rows -------------------------------------------------------------------------
    def in_subset(self, row: dict, subset: str) -> bool:
        return subset == ""

    def group_subsets(self, rows: list[dict]) -> list[str]:
        """The subsets whose changes the report searches for the worst group (e.g. CrowS bias
        types); none by default."""
        return []

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


# -- the registry -----------------------------------------------------------------------------
PLUGINS_ENV = "COMPFAIR_PLUGINS"
_plugins_loaded = False


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


def _check_suite(suite: SuiteInfo) -> None:
    if not suite.name:
        raise ValueError("a suite needs a name")


SUITES: Registry[SuiteInfo] = Registry("suite", "suite", check=_check_suite, plugins=load_plugins)


def register(suite: SuiteInfo | type[SuiteInfo]) -> Any:
    """Add a suite (an instance or a class, usable as a decorator) to the registry; a suite
    registered under the name of another (an implementation under its declaration's) replaces it."""
    return SUITES.register(suite)


def unregister(name: str) -> None:
    """Remove suite `name` from the registry (a plugin's, or a test's, when it is done)."""
    SUITES.unregister(name)


def get_suite_info(name: str) -> SuiteInfo:
    """The registered suite `name` (the implementation once `engine.evaluation.suites` is
    imported, else the declaration); `SpecError` naming the known ones otherwise."""
    return SUITES.lookup(name)


def suites() -> tuple[SuiteInfo, ...]:
    return SUITES.entries()


def suite_names() -> tuple[str, ...]:
    return SUITES.names()


def generation_suite_names() -> tuple[str, ...]:
    return tuple(s.name for s in suites() if s.generates_text)


def find_metric(name: str, suite: str | None = None) -> MetricSpec | None:
    """The spec of metric `name` (of `suite`, or of the first suite that has it)."""
    pool: Iterable[SuiteInfo] = [get_suite_info(suite)] if suite else suites()
    for s in pool:
        spec = s.metric(name)
        if spec is not None:
            return spec
    return None
