"""Layer 3 (declarations; reads the catalog's metric specs): equivalence margins: how large a change still counts as "unchanged", per metric.

Each metric's default lives on its `MetricSpec` (`margin`, `margin_relative`); a home's
settings.toml `[margins]` and a study file's `[margins]` override them by metric name:

```toml
[margins]
expected_max_toxicity = 0.02   # absolute, in the metric's own units
perplexity = "5%"              # relative: a share of the baseline's value
```

README "Verdicts" lists every default with its reason."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from engine.catalog.suite_info import suites
from engine.errors import SettingsError


@dataclass(frozen=True)
class Margin:
    """An equivalence margin: `value` in the metric's units, or (relative) a share of the
    baseline's value."""

    value: float
    relative: bool = False

    def absolute(self, baseline: float | None) -> float | None:
        """The margin in the metric's units against `baseline` (None when a relative margin has
        no finite baseline to scale)."""
        if not self.relative:
            return self.value
        if baseline is None or not math.isfinite(baseline) or baseline == 0:
            return None
        return self.value * abs(baseline)

    def words(self) -> str:
        return f"+-{self.value:.0%}" if self.relative else f"+-{self.value:g}"

    def to_setting(self) -> float | str:
        return f"{self.value * 100:g}%" if self.relative else self.value


@dataclass(frozen=True)
class MarginSettings:
    """Per-metric margins that override the metrics' own defaults."""

    overrides: tuple[tuple[str, Margin], ...] = field(default_factory=tuple)

    def for_metric(self, spec) -> Margin | None:
        """The margin in force for `spec` (a `MetricSpec`): an override, else its default."""
        for name, margin in self.overrides:
            if name == spec.name:
                return margin
        if spec.margin is None:
            return None
        return Margin(spec.margin, spec.margin_relative)

    def merged(self, other: "MarginSettings") -> "MarginSettings":
        """These overrides with `other`'s on top."""
        names = {name for name, _ in other.overrides}
        return MarginSettings(tuple((n, m) for n, m in self.overrides if n not in names) + other.overrides)

    def to_dict(self) -> dict[str, float | str]:
        return {name: margin.to_setting() for name, margin in self.overrides}


def parse_margin(name: str, value: Any, where: str) -> Margin:
    """`0.02` (absolute) or `"5%"` (relative) -> a `Margin`; SettingsError naming the value
    otherwise."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            share = float(value.strip()[:-1]) / 100
        except ValueError:
            share = math.nan
        if not 0 < share < 10:
            raise SettingsError(f"{where}: margins.{name} {value!r} must be a positive percentage "
                                "such as \"5%\"")
        return Margin(share, relative=True)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise SettingsError(f"{where}: margins.{name} {value!r} must be a positive number "
                            "(absolute) or a percentage such as \"5%\" (relative)")
    return Margin(float(value))


def parse_margins(data: Mapping[str, Any], where: str) -> tuple[tuple[str, Margin], ...]:
    """A `[margins]` table -> overrides, each metric name checked against the suites' metrics."""
    known = sorted({m.name for s in suites() for m in s.metrics if m.paired})
    out = []
    for name, value in data.items():
        if name not in known:
            raise SettingsError(f"{where}: margins.{name} is not a metric with a paired test; "
                                f"known: {', '.join(known)}")
        out.append((name, parse_margin(name, value, where)))
    return tuple(out)
