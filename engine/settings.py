"""User settings for how results are judged: `$COMPFAIR_HOME/settings.toml`.

```toml
[statistics]
confidence = 0.95        # confidence level of the paired comparisons' intervals
bootstrap_samples = 10000  # bootstrap replicates of the paired comparisons, 100 to 1,000,000 (see StatSettings)
alpha = 0.05             # significance level of verdicts (after the multiple-comparison adjustment)
adjust = "holm"          # primary family (each model's headline fairness metrics): "holm", "bh", "none"
adjust_secondary = "bh"  # secondary family (subsets, fluent-only, worst group, quality lines)
power = 0.8              # the power at which "inconclusive" verdicts and `compfair plan` size a decision

[margins]                # equivalence margins: the largest change that counts as "unchanged"
expected_max_toxicity = 0.02   # absolute, in the metric's units ...
perplexity = "5%"              # ... or a share of the baseline's value

[quality]                # when a "better" toxicity/bias verdict is not evidence (the model broke)
heldout_perplexity_ratio = 2.5  # held-out perplexity above this multiple of the baseline's
distinct2_drop = 0.1     # distinct-2 fell by more than this
degenerate_rise = 0.05   # share of degenerate continuations rose by more than this
perplexity_ratio = 1.5   # continuation perplexity under an independent judge (reference_model) rose more

[tracking]
log = ["mlflow"]         # log every finished job (and report) here too: mlflow[=URI], wandb[=PROJECT]
```

Every field is optional; a missing file means the defaults above. The settings in force are
recorded in every report and comparison that uses them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ImportError:  # pragma: no cover - Python < 3.11
    import tomli as tomllib

from engine.errors import SettingsError, UserError
from engine.margins import MarginSettings, parse_margins
from engine.tracking_targets import parse_targets

SETTINGS_FILE = "settings.toml"
ADJUSTMENTS = ("holm", "bh", "none")
# more replicates than this only make `compfair compare` and reports run for hours: p-values
# resolve to 2e-6 and intervals stop moving long before
MAX_BOOTSTRAP_SAMPLES = 1_000_000


@dataclass(frozen=True)
class StatSettings:
    """How paired comparisons are computed and judged. The smallest bootstrap p-value is
    2 / (bootstrap_samples + 1); after a Holm adjustment over m tests it must stay below alpha,
    so the default 10,000 replicates let a family of up to ~250 tests reach significance (1,000
    would cap it at 25: a report of 35 tests could never call anything significant)."""

    confidence: float = 0.95
    bootstrap_samples: int = 10000
    alpha: float = 0.05
    adjust: str = "holm"
    seed: int = 0
    adjust_secondary: str = "bh"
    power: float = 0.8

    def __post_init__(self) -> None:
        if not 0.5 < self.confidence < 1:
            raise SettingsError(f"statistics.confidence {self.confidence!r} must be in (0.5, 1)")
        if not 100 <= self.bootstrap_samples <= MAX_BOOTSTRAP_SAMPLES:
            raise SettingsError(f"statistics.bootstrap_samples {self.bootstrap_samples!r} must be in "
                                f"[100, {MAX_BOOTSTRAP_SAMPLES:,}]")
        if not 0 <= self.seed <= 2**63 - 1:
            raise SettingsError(f"statistics.seed {self.seed!r} must be in [0, {2**63 - 1}]")
        if not 0 < self.alpha < 0.5:
            raise SettingsError(f"statistics.alpha {self.alpha!r} must be in (0, 0.5)")
        for name in ("adjust", "adjust_secondary"):
            if getattr(self, name) not in ADJUSTMENTS:
                raise SettingsError(f"statistics.{name} {getattr(self, name)!r} is unknown; choose "
                                    "from " + ", ".join(ADJUSTMENTS))
        if not 0.5 <= self.power < 1:
            raise SettingsError(f"statistics.power {self.power!r} must be in [0.5, 1)")

    @property
    def n_boot(self) -> int:
        return self.bootstrap_samples

    @property
    def ci_label(self) -> str:
        return ci_label(self.confidence)


@dataclass(frozen=True)
class QualitySettings:
    """When a compressed model counts as broken (see `engine.quality_gate`): held-out
    perplexity above `heldout_perplexity_ratio` x the baseline's, distinct-2 down by more than
    `distinct2_drop`, the degenerate share up by more than `degenerate_rise`, or continuation
    perplexity under an independent judge (a reference_model other than the baseline) above
    `perplexity_ratio` x the baseline's. README "Verdicts" says how each default was calibrated."""

    perplexity_ratio: float = 1.5
    distinct2_drop: float = 0.1
    degenerate_rise: float = 0.05
    heldout_perplexity_ratio: float = 2.5

    def __post_init__(self) -> None:
        for name in ("perplexity_ratio", "heldout_perplexity_ratio"):
            if getattr(self, name) <= 1:
                raise SettingsError(f"quality.{name} {getattr(self, name)!r} must be > 1")
        for name in ("distinct2_drop", "degenerate_rise"):
            if not 0 < getattr(self, name) < 1:
                raise SettingsError(f"quality.{name} {getattr(self, name)!r} must be in (0, 1)")


@dataclass(frozen=True)
class TrackingSettings:
    """Experiment trackers every finished job of this home is logged to, beside those given
    with `--log` (engine.tracking_targets; same syntax: `mlflow[=URI]`, `wandb[=PROJECT]`)."""

    log: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.log, str) or not all(isinstance(t, str) for t in self.log):
            raise SettingsError(f"tracking.log {self.log!r} must be a list of strings such as "
                                '["mlflow", "wandb=PROJECT"]')
        try:
            parse_targets(self.log)
        except UserError as exc:
            raise SettingsError(f"tracking.log: {exc}") from None


@dataclass(frozen=True)
class Settings:
    statistics: StatSettings = field(default_factory=StatSettings)
    quality: QualitySettings = field(default_factory=QualitySettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    margins: MarginSettings = field(default_factory=MarginSettings)

    def to_dict(self) -> dict[str, Any]:
        """The settings that judge results (recorded in reports and comparisons); where
        results are also logged (`tracking`) does not change them and is left out."""
        return {"statistics": dataclasses.asdict(self.statistics),
                "quality": dataclasses.asdict(self.quality), "margins": self.margins.to_dict()}

    def with_margins(self, overrides: dict[str, Any] | None, where: str = "study") -> "Settings":
        """These settings with a study's own `[margins]` on top of the home's."""
        if not overrides:
            return self
        return dataclasses.replace(self, margins=self.margins.merged(parse_margins(overrides, where)))


def ci_label(confidence: float) -> str:
    """'95% CI' for 0.95 (one decimal where needed: '97.5% CI')."""
    percent = confidence * 100
    return f"{percent:.0f}% CI" if abs(percent - round(percent)) < 1e-9 else f"{percent:.1f}% CI"


def run_ci_label(run: dict) -> str:
    """The CI label of a run's stored intervals: its own confidence setting (0.95 if unset)."""
    settings = run.get("settings")
    if isinstance(settings, str):
        import json
        try:
            settings = json.loads(settings)
        except ValueError:
            settings = {}
    return ci_label((settings or {}).get("confidence") or 0.95)


def _section(cls, data: Any, name: str):
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise SettingsError(f"settings section [{name}] must be a table, got {data!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SettingsError(f"settings key {name}.{unknown[0]} is unknown; known: {', '.join(sorted(known))}")
    defaults = cls()
    listed = next((k for k, v in data.items()
                   if isinstance(getattr(defaults, k), tuple) and not isinstance(v, list)), None)
    if listed is not None:
        raise SettingsError(f"settings key {name}.{listed} {data[listed]!r} must be a list, "
                            f"e.g. {listed} = [\"mlflow\"]")
    try:
        return cls(**{k: type(getattr(defaults, k))(v) for k, v in data.items()})
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"settings [{name}]: {exc}") from None


def load_settings(home_root: str | Path | None) -> Settings:
    """The settings of the home at `home_root` (defaults when it has no settings file)."""
    if home_root is None:
        return Settings()
    path = Path(home_root) / SETTINGS_FILE
    if not path.is_file():
        return Settings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"settings file {path} cannot be read: {exc}") from None
    sections = {"statistics": StatSettings, "quality": QualitySettings, "tracking": TrackingSettings}
    unknown = sorted(set(data) - set(sections) - {"margins"})
    if unknown:
        raise SettingsError(f"settings section [{unknown[0]}] in {path} is unknown; known: "
                            + ", ".join(sorted([*sections, "margins"])))
    margins = data.get("margins")
    if margins is not None and not isinstance(margins, dict):
        raise SettingsError(f"settings section [margins] must be a table, got {margins!r}")
    return Settings(**{name: _section(cls, data.get(name), name) for name, cls in sections.items()},
                    margins=MarginSettings(parse_margins(margins or {}, "settings.toml")))
