"""User settings for how results are judged: `$COMPFAIR_HOME/settings.toml`.

```toml
[statistics]
confidence = 0.95        # confidence level of the paired comparisons' intervals
bootstrap_samples = 10000  # bootstrap replicates of the paired comparisons (see StatSettings)
alpha = 0.05             # significance level of verdicts (after the multiple-comparison adjustment)
adjust = "holm"          # "holm", "bh" (Benjamini-Hochberg) or "none", over the report's family

[quality]                # when a "better" toxicity/bias verdict is not evidence (degeneration)
perplexity_ratio = 1.5   # continuation perplexity rose more than this factor
distinct2_drop = 0.1     # distinct-2 fell by more than this
degenerate_rise = 0.05   # share of degenerate continuations rose by more than this

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

from engine.errors import UserError

SETTINGS_FILE = "settings.toml"
ADJUSTMENTS = ("holm", "bh", "none")


class SettingsError(UserError):
    """A settings file with an unknown key or an impossible value."""


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

    def __post_init__(self) -> None:
        if not 0.5 < self.confidence < 1:
            raise SettingsError(f"statistics.confidence {self.confidence!r} must be in (0.5, 1)")
        if self.bootstrap_samples < 100:
            raise SettingsError(f"statistics.bootstrap_samples {self.bootstrap_samples!r} must be >= 100")
        if not 0 < self.alpha < 0.5:
            raise SettingsError(f"statistics.alpha {self.alpha!r} must be in (0, 0.5)")
        if self.adjust not in ADJUSTMENTS:
            raise SettingsError(f"statistics.adjust {self.adjust!r} is unknown; choose from "
                                + ", ".join(ADJUSTMENTS))

    @property
    def n_boot(self) -> int:
        return self.bootstrap_samples

    @property
    def ci_label(self) -> str:
        return ci_label(self.confidence)


@dataclass(frozen=True)
class QualitySettings:
    """When a compressed model's continuations count as degraded (see `engine.verdicts`)."""

    perplexity_ratio: float = 1.5
    distinct2_drop: float = 0.1
    degenerate_rise: float = 0.05

    def __post_init__(self) -> None:
        if self.perplexity_ratio <= 1:
            raise SettingsError(f"quality.perplexity_ratio {self.perplexity_ratio!r} must be > 1")
        for name in ("distinct2_drop", "degenerate_rise"):
            if not 0 < getattr(self, name) < 1:
                raise SettingsError(f"quality.{name} {getattr(self, name)!r} must be in (0, 1)")


@dataclass(frozen=True)
class TrackingSettings:
    """Experiment trackers every finished job of this home is logged to, beside those given
    with `--log` (engine.interop.tracking; same syntax: `mlflow[=URI]`, `wandb[=PROJECT]`)."""

    log: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.log, str) or not all(isinstance(t, str) for t in self.log):
            raise SettingsError(f"tracking.log {self.log!r} must be a list of strings such as "
                                '["mlflow", "wandb=PROJECT"]')
        from engine.interop.tracking import parse_targets   # imported on use: it needs the store
        try:
            parse_targets(self.log)
        except UserError as exc:
            raise SettingsError(f"tracking.log: {exc}") from None


@dataclass(frozen=True)
class Settings:
    statistics: StatSettings = field(default_factory=StatSettings)
    quality: QualitySettings = field(default_factory=QualitySettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)

    def to_dict(self) -> dict[str, Any]:
        """The settings that judge results (recorded in reports and comparisons); where
        results are also logged (`tracking`) does not change them and is left out."""
        return {"statistics": dataclasses.asdict(self.statistics),
                "quality": dataclasses.asdict(self.quality)}


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
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise SettingsError(f"settings section [{unknown[0]}] in {path} is unknown; known: "
                            + ", ".join(sorted(sections)))
    return Settings(**{name: _section(cls, data.get(name), name) for name, cls in sections.items()})
